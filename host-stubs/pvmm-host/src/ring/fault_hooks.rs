// SPDX-License-Identifier: GPL-2.0

//! The `--fault` hooks that act on the rings (`break-ring`, `late-ack`,
//! `cq-flood`, `irq-storm`): `RingHost` methods that [`crate::fault`]'s
//! `Injector` drives.

use std::time::Instant;

use pvmm_wire::{guest_ctl, host_ctl, SharedMemory};

use super::{Batch, Ring, RingHost};
use crate::fault::{Break, Fault};

/// The hooks that act on the rings; `RingHost::process` calls them.
impl RingHost {
    /// `break-ring`, `break-ring-back`: once the request count is reached,
    /// publishes an index the guest must find impossible and interrupts.
    /// Our own indices stay right, so service goes on; a reset resumes the
    /// CQ at the tail published last, which is where the guest resumes.
    pub(crate) fn break_ring(&mut self, shm: &impl SharedMemory, irq: &mut dyn FnMut()) {
        match self.inject.take_break() {
            Some(Break::CqTail) => {
                let head = shm.load_acquire_u32(guest_ctl::CQ_HEAD);
                let tail = head.wrapping_add(self.layout.cq_entries + 1);
                shm.store_release_u32(host_ctl::CQ_TAIL, tail);
                self.cq_published = tail;
                self.cq_tail_broken = true;
            }
            Some(Break::SqHead) => {
                let tail = shm.load_acquire_u32(guest_ctl::SQ_TAIL);
                let head = tail.wrapping_sub(self.layout.sq_entries + 1);
                shm.store_release_u32(host_ctl::SQ_HEAD, head);
                self.sq_head_broken = true;
            }
            None => return,
        }
        irq();
        self.count(|c| &c.irqs_sent, 1);
        self.count(|c| &c.faults_broken, 1);
    }

    /// `late-ack`: queues the delayed completions whose time has come, in
    /// order, behind any held back for CQ space.
    pub(crate) fn post_due(&mut self, shm: &impl SharedMemory, b: &mut Batch) {
        if self.inject.held() == 0 {
            return;
        }
        // Into the overflow only while it has room: what is held back stays
        // within the intake bound, and the rest waits its turn here.
        let now = Instant::now();
        while self.overflow.len() < self.overflow_cap() {
            let Some(c) = self.inject.pop_due(now) else {
                break;
            };
            self.complete(shm, c, b);
        }
    }

    /// `cq-flood` and `irq-storm`, at the end of a round so that the round's
    /// real completions are out first. Neither counts as work in `b`: a
    /// round that did only this does not rewrite the stats file at 1 kHz.
    pub(crate) fn periodic_fault(
        &mut self,
        shm: &impl SharedMemory,
        irq: &mut dyn FnMut(),
        b: &mut Batch,
    ) {
        if !self.inject.tick(Instant::now()) {
            return;
        }
        match self.inject.fault() {
            Fault::CqFlood => self.flood(shm, irq, b),
            Fault::IrqStorm => {
                irq();
                self.count(|c| &c.faults_irqs, 1);
            }
            _ => {}
        }
    }

    /// Fills every free CQ slot with a completion that matches nothing,
    /// publishes them and interrupts the guest (whatever `GUEST_NEED_IRQ`
    /// says: the interrupt path is part of what is flooded). Skipped while
    /// real completions wait for space, so bogus ones only take the room the
    /// real ones left and never starve them.
    pub(crate) fn flood(&mut self, shm: &impl SharedMemory, irq: &mut dyn FnMut(), b: &mut Batch) {
        if !self.guest_ready || self.cq_stalled || !self.overflow.is_empty() {
            return;
        }
        let free = match self.cq.space(shm) {
            Ok(n) => n,
            Err(e) => {
                self.bad_index(shm, Ring::Completion, e, b);
                return;
            }
        };
        let mut n = 0;
        for _ in 0..free {
            let c = self.inject.bogus(|s| self.spaces.contains_key(&s));
            if self.cq.push(shm, &c).is_err() {
                // The guest moved its head meanwhile; the next round's check
                // reports an impossible one.
                break;
            }
            n += 1;
        }
        if n == 0 {
            return;
        }
        self.publish_cq(shm);
        irq();
        self.count(|c| &c.irqs_sent, 1);
        self.count(|c| &c.faults_bogus, n);
    }
}
