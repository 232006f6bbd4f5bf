// SPDX-License-Identifier: GPL-2.0

//! Completions: each is checked against what was asked and applied, and the freed
//! ring slots are given to the backlog. Runs in the interrupt thread, after
//! synchronous waits, and polled while detaching.

use core::sync::atomic::Ordering::{Relaxed, Release as Publish};
use kernel::{mm_hooks::SpaceId, prelude::*, time::Ktime};

use super::{Inner, Teardown};
use crate::{
    notify::Doorbell,
    space::{Space, State},
    stats::count_problem,
    sync::CQ_PASS,
    wire::{self, BadEntry, Completion, Op, SharedMemory, Status, Why},
};

/// How many driver instances back a completion's epoch may be for it to count as
/// stale rather than bogus: a reload that could not reset the host leaves them.
const STALE_EPOCHS: u32 = 8;

/// Cut passes in a row that are followed at once by another; after them, the poll.
const CUTS_KICKED: u32 = 4;

impl<M: SharedMemory + Send + Sync + 'static, B: Doorbell + 'static> Teardown<M, B> {
    /// Handles a DESTROY the host acknowledged (or never needed to see).
    pub(super) fn destroyed(&self, inner: &mut Inner, id: SpaceId) {
        let Some(space) = inner.spaces.get_mut(&id) else {
            return;
        };
        if let Some(w) = space.waiter.take() {
            w.store(true, Publish);
        }
        if core::mem::take(&mut space.in_flight) {
            inner.in_flight.give(space.pages);
        }
        if space.pgd.is_some() {
            if let Some(Space {
                tag,
                pgd: Some(pgd),
                ..
            }) = inner.untrack(id)
            {
                self.release(inner, id, tag, pgd, Why::Acked);
            }
        } else {
            space.state = State::Acked;
            inner.outstanding.give(space.pages);
        }
    }

    /// Applies one completion; returns whether it matched a request.
    fn complete(&self, inner: &mut Inner, c: Result<Completion, BadEntry>) -> bool {
        self.stats().completions.fetch_add(1, Relaxed);
        let bogus = |why: &dyn core::fmt::Display| {
            if count_problem(&self.stats().bad_completions) {
                pr_warn!("ignoring bogus completion: {why}\n");
            }
            false
        };
        let c = match c {
            Ok(c) => c,
            Err(e) => return bogus(&e),
        };
        let age = self.epoch.wrapping_sub(wire::tag_epoch(c.tag)) & 0xff;
        if (1..=STALE_EPOCHS).contains(&age) {
            // Posted for a recent driver instance that could not reset the host.
            if count_problem(&self.stats().stale_completions) {
                pr_info!(
                    "ignoring completion of an earlier instance (tag {:#x})\n",
                    c.tag
                );
            }
            return false;
        }
        if age != 0 {
            return bogus(&format_args!(
                "completion with tag {:#x} from no instance",
                c.tag
            ));
        }
        let expected = match inner.spaces.get(&c.space) {
            Some(s) if s.tag == c.tag => match c.op {
                // Once, and only for a CREATE that left the backlog.
                Op::Create => {
                    s.created.is_none()
                        && s.state != State::Acked
                        && !matches!(s.queued, Some((Op::Create, _)))
                }
                // Only after the CREATE's answer: the host takes them in order.
                Op::Destroy => {
                    s.created.is_some()
                        && s.state == State::Destroying
                        && s.in_flight
                        && inner.sq.consumed(self.notifier.shm(), s.sq_pos)
                }
            },
            _ => false,
        };
        if !expected {
            return bogus(&format_args!(
                "{:?} of space {:#x} tag {}",
                c.op, c.space, c.tag
            ));
        }
        if c.status != Status::Ok && count_problem(&self.stats().host_errors) {
            pr_warn!("host: {:?} of space {:#x}: {:?}\n", c.op, c.space, c.status);
        }
        match c.op {
            Op::Create => {
                if let Some(s) = inner.spaces.get_mut(&c.space) {
                    s.created = Some(c.status);
                }
                self.stats().creates_acked.fetch_add(1, Relaxed);
            }
            Op::Destroy => {
                // Only teardown counts as progress: a host that creates but never
                // destroys still owes what the caps bound.
                inner.last_progress = Ktime::ktime_get();
                if core::mem::take(&mut inner.host_dead) {
                    pr_info!("host acknowledges again; throttling resumes\n");
                }
                self.stats().spaces_acked.fetch_add(1, Relaxed);
                self.destroyed(inner, c.space);
            }
        }
        true
    }

    /// Consumes completions and moves queued requests into the freed slots. Called
    /// from the interrupt thread, after synchronous waits, and polled while detaching.
    ///
    /// The teardown lock is held for at most [`CQ_PASS`] entries at a time, so a host
    /// that keeps the ring full cannot keep the hooks out, and for at most
    /// `cq_entries` entries per call in all. Whatever is left then gets another pass
    /// through an interrupt the guest raises itself: at once for the first few cuts in
    /// a row, afterwards at the poll, so that a host that keeps the ring full cannot
    /// keep the interrupt thread running either.
    pub(crate) fn process_completions(&self) {
        let shm = self.notifier.shm();
        let mut budget = self.layout.cq_entries;
        let mut valid = false;
        let mut left = false;
        let mut gone = None;
        loop {
            let mut guard = self.inner.lock();
            let inner = &mut *guard;
            if !self.poll_reset(inner, &mut gone) || inner.broken {
                break;
            }
            inner.peak_host_held = inner.peak_host_held.max(wire::host_destroys_held(shm));
            // No interrupts while we are consuming anyway; re-armed when empty.
            let _ = inner.cq.set_need_irq(shm, false);
            let mut more = false;
            let mut pass = 0;
            while !inner.broken {
                if pass == CQ_PASS || budget == 0 {
                    more = true;
                    break;
                }
                match inner.cq.pop(shm) {
                    Ok(Some(c)) => {
                        valid |= self.complete(inner, c);
                        pass += 1;
                        budget -= 1;
                    }
                    Ok(None) => {
                        inner.cq.release(shm);
                        // Re-arm, and look again if completions raced with it. Each
                        // look counts as an entry, so that a host that moves its tail
                        // back and forth cannot keep this loop going.
                        if !inner.cq.set_need_irq(shm, true) {
                            break;
                        }
                        pass += 1;
                        budget -= 1;
                    }
                    Err(e) => self.protocol_error(inner, e),
                }
            }
            if more {
                inner.cq.release(shm);
            }
            let n = self.submit_backlog(inner);
            self.publish(inner, n);
            if more && budget == 0 {
                // The host interrupts only for what it publishes from now on: what
                // is there already needs a pass of our own.
                left = inner.cq.set_need_irq(shm, true);
            }
            self.note_busy(inner);
            drop(guard);
            self.notify_now(n);
            if !more || budget == 0 {
                if more {
                    self.stats().completion_passes_cut.fetch_add(1, Relaxed);
                }
                break;
            }
        }
        if let Some(gone) = gone {
            self.reset_released(gone);
        }
        if valid {
            self.progress.notify_all();
        }
        if !left {
            self.cuts.store(0, Relaxed);
        } else if self.cuts.fetch_add(1, Relaxed) < CUTS_KICKED {
            self.stats().completion_polls.fetch_add(1, Relaxed);
            self.notifier.kick();
        }
    }

    /// Interrupt entry point. Returns whether a valid completion arrived since the
    /// previous interrupt, so that the interrupt core can tell a storm of empty ones.
    pub(crate) fn interrupt(&self) -> bool {
        self.stats().irqs.fetch_add(1, Relaxed);
        self.process_completions();
        let acks =
            self.stats().creates_acked.load(Relaxed) + self.stats().spaces_acked.load(Relaxed);
        self.irq_acks.swap(acks, Relaxed) != acks
    }
}
