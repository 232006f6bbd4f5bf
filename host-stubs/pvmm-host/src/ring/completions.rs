// SPDX-License-Identifier: GPL-2.0

//! Posting completions: into the CQ, or held back while it is full, published
//! with an interrupt if the guest asked for one.

use pvmm_wire::{guest_ctl, Completion, Error, Op, SharedMemory, FEATURE_IRQ_SUPPRESS};

use super::{Batch, Ring, RingHost};
use crate::fault::Fault;

impl RingHost {
    /// Publishes the pushed completions; returns whether the guest wants an
    /// interrupt.
    pub(crate) fn publish_cq(&mut self, shm: &impl SharedMemory) -> bool {
        let wants = self.cq.publish(shm);
        self.cq_published = self.cq.index();
        // Answered now (saturating: dup-ack and forged-ack answer more).
        self.destroys_held = self
            .destroys_held
            .saturating_sub(std::mem::take(&mut self.unpublished_destroys));
        if let Some((_, acked)) = &mut self.audit {
            let evicted = acked.published();
            self.count(|c| &c.audit_evicted, evicted);
        }
        wants
    }

    /// Pushes a real completion into the CQ, noting a DESTROY for the audit.
    pub(crate) fn push_cq(&mut self, shm: &impl SharedMemory, c: &Completion) -> Result<(), Error> {
        self.cq.push(shm, c)?;
        self.unpublished += 1;
        if c.op == Op::Destroy {
            self.unpublished_destroys += 1;
        }
        let lie = c.op == Op::Destroy && self.forged.remove(&(c.space, c.tag));
        if let (Some((_, acked)), Op::Destroy, false) = (&mut self.audit, c.op, lie) {
            acked.pushed((c.space, c.tag));
        }
        Ok(())
    }

    pub(crate) fn complete(&mut self, shm: &impl SharedMemory, c: Completion, b: &mut Batch) {
        if self.overflow.is_empty() && !self.cq_stalled {
            match self.push_cq(shm, &c) {
                Ok(()) => return,
                Err(Error::Full) => {}
                Err(e) => self.bad_index(shm, Ring::Completion, e, b),
            }
        }
        self.count(|c| &c.cq_overflow, 1);
        self.overflow.push_back(c);
    }

    pub(crate) fn flush_overflow(&mut self, shm: &impl SharedMemory, b: &mut Batch) {
        while !self.cq_stalled {
            let Some(&c) = self.overflow.front() else {
                break;
            };
            match self.push_cq(shm, &c) {
                Ok(()) => {
                    self.overflow.pop_front();
                }
                Err(Error::Full) => break,
                Err(e) => self.bad_index(shm, Ring::Completion, e, b),
            }
        }
    }

    pub(crate) fn publish(
        &mut self,
        shm: &impl SharedMemory,
        irq: &mut dyn FnMut(),
        b: &mut Batch,
    ) {
        if self.unpublished == 0 || self.cq_tail_broken {
            return;
        }
        let wants = self.publish_cq(shm);
        let n = std::mem::take(&mut self.unpublished);
        b.published += n;
        self.count(|c| &c.completions, u64::from(n));
        // A guest that did not accept IRQ suppression gets every interrupt.
        let honours = shm.read_u32(guest_ctl::FEATURES) & FEATURE_IRQ_SUPPRESS != 0;
        if self.inject.fault() == Fault::NoIrq {
            self.count(|c| &c.irqs_suppressed, 1);
        } else if wants || !honours {
            irq();
            self.count(|c| &c.irqs_sent, 1);
        } else {
            self.count(|c| &c.irqs_suppressed, 1);
        }
    }
}
