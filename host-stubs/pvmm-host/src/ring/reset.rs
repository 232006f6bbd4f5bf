// SPDX-License-Identifier: GPL-2.0

//! The reset handshake: the guest asks the host to forget everything of it.

use std::sync::atomic::Ordering;

use pvmm_wire::{host_ack_reset, host_ctl, host_reset_requested, CqProducer, SharedMemory};

use super::{Batch, RingHost};
use crate::ratelimit::info_limited;

impl RingHost {
    /// Whether the guest asked for a reset not carried out yet.
    pub(crate) fn reset_pending(&self, shm: &impl SharedMemory) -> bool {
        host_reset_requested(shm, self.reset_acked).is_some()
    }

    /// The reset handshake: if the guest published a new `guest_ctl::RESET`,
    /// forgets every object and every completion of this guest (the DESTROYs
    /// the worker holds too), unstalls both
    /// rings, moves the SQ head past every unconsumed submission, acknowledges
    /// and interrupts. Returns whether it did.
    pub(crate) fn check_reset(
        &mut self,
        shm: &impl SharedMemory,
        irq: &mut dyn FnMut(),
        b: &mut Batch,
    ) -> bool {
        let Some(seq) = host_reset_requested(shm, self.reset_acked) else {
            return false;
        };
        // The worker's queue first: the jobs' objects are dropped with it.
        let (unstarted, lane) = self.lane.as_mut().map_or((0, 0), |l| l.discard());
        let objects = self.spaces.len() + unstarted;
        self.spaces.clear();
        let held = self.overflow.len() + self.inject.clear() + self.unpublished as usize + lane;
        self.overflow.clear();
        self.unpublished = 0;
        self.unpublished_destroys = 0;
        self.destroys_held = 0;
        self.forged.clear();
        if let Some((_, acked)) = &mut self.audit {
            acked.drop_unpublished();
        }
        self.resets_done += 1;
        // Entries pushed after the last publish are forgotten: the guest's
        // new head is the tail it can see. Restore that tail, in case the
        // guest wrote over our line, and resume from our own count: what the
        // line holds after the store is the guest's to change.
        shm.store_release_u32(host_ctl::CQ_TAIL, self.cq_published);
        self.cq = CqProducer::resume_at(self.layout, self.cq_published);
        self.sq_stalled = false;
        self.cq_stalled = false;
        // host_ack_reset publishes a real SQ head again.
        self.sq_head_broken = false;
        self.cq_tail_broken = false;
        host_ack_reset(shm, &mut self.sq, seq);
        self.reset_acked = seq;
        self.count(|c| &c.resets, 1);
        self.count(|c| &c.objects_dropped, objects as u64);
        self.count(|c| &c.dropped_completions, held as u64);
        self.counters.live_objects.store(0, Ordering::Relaxed);
        irq();
        self.count(|c| &c.irqs_sent, 1);
        b.resets += 1;
        info_limited!(
            self,
            "guest reset {seq}: dropped {objects} objects and {held} completions; sq_head={} cq_tail={}",
            self.sq.index(),
            self.cq.index()
        );
        true
    }
}
