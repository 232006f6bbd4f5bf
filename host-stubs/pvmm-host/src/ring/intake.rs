// SPDX-License-Identifier: GPL-2.0

//! Taking submissions: the intake bound, one request at a time, the `sq_pending`
//! gauge, malformed entries, and a ring stopped by an impossible index until the
//! guest re-announces `GUEST_READY`.

use std::sync::atomic::Ordering;
use std::time::Instant;

use pvmm_wire::{guest_ctl, host_ctl, BadEntry, Completion, Error, Op, SharedMemory, GUEST_READY};

use super::lane::{Job, Lane};
use super::{Batch, Ring, RingHost};
use crate::fault::Intercept;
use crate::ratelimit::{info_limited, warn_limited};

impl RingHost {
    /// Most completions held back before the host stops taking submissions.
    pub(crate) fn overflow_cap(&self) -> usize {
        self.layout.cq_entries as usize
    }

    /// Most DESTROYs the worker may hold (`--worker-queue`); at least one,
    /// since a bound of 0 would stop the ring for good.
    pub(crate) fn worker_queue_cap(&self) -> usize {
        self.cfg.worker_queue.max(1)
    }

    /// Whether held-back completions (CQ overflow, or `late-ack`'s queue),
    /// or the DESTROYs the worker holds, are at their bound, so no more
    /// submissions are taken for now. The worker's bound is its own, not
    /// the CQ's: a CREATE must not wait for a starved worker while the
    /// host can afford to queue its DESTROYs. A guest within its credits
    /// never comes near either.
    pub(crate) fn intake_blocked(&self) -> bool {
        self.overflow.len() >= self.overflow_cap()
            || self.inject.backlog_full()
            || self.lane_in_flight() >= self.worker_queue_cap()
    }

    /// Sets the `sq_pending` gauge from the guest's SQ tail and our head: 0
    /// while the submission ring is stopped or its tail is impossible (that
    /// is counted when the next round reads it).
    /// Also tells the guest how many DESTROYs the host holds unanswered
    /// (`host_ctl::DESTROYS_HELD`): taken, and with `--audit-releases` (a test
    /// mode) also those waiting in the ring, which only the guest's credits
    /// bound. Without it no SQ entry is read outside `pop`.
    pub(crate) fn sample_sq_pending(&mut self, shm: &impl SharedMemory) {
        let n = if self.sq_stalled {
            0
        } else {
            self.sq.pending(shm).unwrap_or(0)
        };
        self.counters
            .sq_pending
            .store(u64::from(n), Ordering::Relaxed);
        let waiting = if self.audit.is_some() {
            self.waiting.count(shm, &self.sq, n)
        } else {
            0
        };
        shm.write_u32(
            host_ctl::DESTROYS_HELD,
            self.destroys_held.saturating_add(waiting),
        );
    }

    pub(crate) fn take_one(
        &mut self,
        shm: &impl SharedMemory,
        irq: &mut dyn FnMut(),
        stop: &dyn Fn() -> bool,
        b: &mut Batch,
    ) {
        b.requests += 1;
        match self.sq.take(shm) {
            Err(bad) => {
                self.bad_entry(bad, b);
                self.inject.taken(None, Instant::now());
            }
            Ok(req) => {
                if req.op == Op::Destroy {
                    self.destroys_held = self.destroys_held.saturating_add(1);
                }
                if self.cfg.costly(&req) {
                    // Hand back slots and finished completions before a long
                    // stretch, and show the backlog it leaves waiting.
                    self.release_sq(shm);
                    self.post_due(shm, b);
                    self.collect_lane(shm, b);
                    self.publish(shm, irq, b);
                    self.sample_sq_pending(shm);
                }
                let taken = Instant::now();
                match (req.op, self.lane.is_some()) {
                    // Two lanes: the DESTROY is checked and its object
                    // removed here, in ring order; the worker does the rest.
                    (Op::Destroy, true) => match self.take_object(&req) {
                        Ok(backing) => self.give_to_lane(Job {
                            req,
                            backing,
                            taken,
                        }),
                        Err(status) => {
                            let c = Completion {
                                op: req.op,
                                status,
                                tag: req.tag,
                                space: req.space,
                            };
                            self.finish(shm, c, taken, b);
                        }
                    },
                    _ => {
                        let c = self.handle(&req, stop);
                        self.finish(shm, c, taken, b);
                    }
                }
                if self.inject.taken(Some(req.op), Instant::now()) {
                    self.count(|c| &c.faults_stalls, 1);
                    log::info!(
                        "{}: --fault {}: serving nothing now",
                        self.name,
                        self.fault()
                    );
                }
            }
        }
    }

    fn give_to_lane(&mut self, job: Job) {
        if let Some(lane) = &mut self.lane {
            lane.submit(job);
        }
    }

    /// Takes back the DESTROYs the worker finished and posts them, as many
    /// as the held-back completions have room for: the rest wait on the
    /// worker's side, within `--worker-queue`. One at a time, since
    /// `dup-ack` and `forged-ack` post two completions for one.
    pub(crate) fn collect_lane(&mut self, shm: &impl SharedMemory, b: &mut Batch) {
        while self.overflow.len() < self.overflow_cap() {
            let Some(d) = self.lane.as_mut().and_then(Lane::take_done) else {
                break;
            };
            self.finish(shm, d.c, d.taken, b);
        }
    }

    /// Posts a finished request's completion, through the fault injector.
    fn finish(&mut self, shm: &impl SharedMemory, c: Completion, taken: Instant, b: &mut Batch) {
        match self.inject.intercept(c, taken) {
            Intercept::Post(c) => self.complete(shm, c, b),
            Intercept::Withheld => self.count(|c| &c.faults_withheld, 1),
            Intercept::Delayed => self.count(|c| &c.faults_delayed, 1),
            Intercept::Twice(c) => {
                self.complete(shm, c, b);
                self.complete(shm, c, b);
                self.count(|c| &c.faults_duplicated, 1);
            }
            Intercept::Forged(forged, c) => {
                self.forged.insert((forged.space, forged.tag));
                self.complete(shm, forged, b);
                self.complete(shm, c, b);
                self.count(|c| &c.faults_forged, 1);
            }
        }
    }

    /// Hands consumed SQ slots back, unless `break-ring-back` keeps its
    /// impossible head published.
    pub(crate) fn release_sq(&self, shm: &impl SharedMemory) {
        if !self.sq_head_broken {
            self.sq.release(shm);
        }
    }

    pub(crate) fn bad_entry(&mut self, bad: BadEntry, b: &mut Batch) {
        self.count(|c| &c.bad_entries, 1);
        self.note_error(b);
        let at = self.sq.index().wrapping_sub(1);
        warn_limited!(self, "bad submission entry at index {at}: {bad}");
    }

    pub(crate) fn bad_index(
        &mut self,
        shm: &impl SharedMemory,
        ring: Ring,
        e: Error,
        b: &mut Batch,
    ) {
        self.count(|c| &c.bad_indices, 1);
        self.note_error(b);
        match ring {
            Ring::Submission => self.sq_stalled = true,
            Ring::Completion => self.cq_stalled = true,
        }
        warn_limited!(
            self,
            "{} ring stopped: {e}; waiting for the guest to re-announce GUEST_READY",
            ring.name()
        );
        // Make sure the guest's re-announcing doorbell is not suppressed.
        let _ = self.set_idle(shm, true);
    }

    pub(crate) fn check_ready(&mut self, shm: &impl SharedMemory) {
        let ready = shm.load_acquire_u32(guest_ctl::FLAGS) & GUEST_READY != 0;
        if ready && !self.guest_ready {
            self.sq_head_broken = false;
            self.cq_tail_broken = false;
        }
        if ready && !self.guest_ready && self.stalled() {
            self.sq_stalled = false;
            self.cq_stalled = false;
            self.count(|c| &c.resumes, 1);
            info_limited!(
                self,
                "guest re-announced GUEST_READY; resuming at sq_head={} cq_tail={}",
                self.sq.index(),
                self.cq.index()
            );
        }
        self.guest_ready = ready;
    }
}
