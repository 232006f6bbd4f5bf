// SPDX-License-Identifier: GPL-2.0

//! Requests into the submission ring, the backlog of those that must wait, and
//! notifying the host of them (the words are explained in `notify`).

use core::sync::atomic::Ordering::Relaxed;
use kernel::{
    mm_hooks::SpaceId,
    sync::{Arc, ArcBorrow},
    time::{msecs_to_jiffies, Ktime},
    timer::{Timer, TimerCallback},
};

use super::{Inner, InnerGuard, Teardown};
use crate::{
    notify::{Doorbell, Due, Pending},
    space::State,
    wire::{self, Op, SharedMemory},
};

/// How often completions are polled for while work is outstanding: rarely, since an
/// interrupt normally announces them.
const POLL_MS: u32 = 50;

impl<M: SharedMemory + Send + Sync + 'static, B: Doorbell + 'static> Teardown<M, B> {
    /// Whether the host owes work: a submission it has not taken, a CREATE a task
    /// waits for, or a DESTROY not acknowledged (in flight or in the backlog).
    pub(super) fn host_owes(&self, inner: &Inner) -> bool {
        inner.outstanding.spaces != 0
            || inner.creating != 0
            || !matches!(inner.sq.space(self.notifier.shm()), Ok(n) if n == self.layout.sq_entries)
    }

    /// Whether a DESTROY of `pages` may go into the ring now: it fits under the caps
    /// in flight, and leaves a quarter of the ring free for CREATEs, so that creation
    /// never waits for a slot behind teardowns.
    fn destroy_fits(&self, inner: &Inner, pages: u64) -> bool {
        let kept = self.layout.sq_entries / 4;
        inner.in_flight.fits(pages, self.settings)
            && matches!(inner.sq.space(self.notifier.shm()), Ok(free) if free > kept)
    }

    /// Accounts for a request that went into the ring; `owed` is whether the host
    /// owed work before.
    fn count_submission(&self, inner: &mut Inner, id: SpaceId, op: Op, owed: bool) {
        self.stats().submissions.fetch_add(1, Relaxed);
        if !owed {
            // The watchdog measures from when the host was given work (a DESTROY,
            // from when it was started).
            inner.last_progress = Ktime::ktime_get();
        }
        if op != Op::Destroy {
            return;
        }
        if let Some(space) = inner.spaces.get_mut(&id) {
            space.in_flight = true;
            space.sq_pos = inner.sq.index().wrapping_sub(1);
            inner.in_flight.take(space.pages);
        }
    }

    /// Writes the request `op` of `id` into the ring unless it must wait: behind
    /// queued requests, for room in flight, or for a free slot. Returns whether it was
    /// written.
    pub(super) fn submit(&self, inner: &mut Inner, id: SpaceId, op: Op) -> bool {
        if inner.broken {
            return false;
        }
        let Some(space) = inner.spaces.get(&id) else {
            return false;
        };
        // A CREATE, which a task waits for, needs only a free slot. A DESTROY waits in
        // the backlog behind queued requests, beyond the caps in flight, or where it
        // would take the slots kept for CREATEs; teardown itself goes on.
        let goes = match op {
            Op::Create => true,
            Op::Destroy => inner.backlog_len == 0 && self.destroy_fits(inner, space.pages),
        };
        if space.queued.is_some() || !goes {
            inner.enqueue(id, op);
            return false;
        }
        let owed = self.host_owes(inner);
        match inner.sq.push(self.notifier.shm(), &space.request(id, op)) {
            Ok(()) => {
                self.count_submission(inner, id, op, owed);
                true
            }
            Err(wire::Error::Full) => {
                inner.enqueue(id, op);
                false
            }
            Err(e) => {
                self.protocol_error(inner, e);
                false
            }
        }
    }

    /// Makes `n` written requests visible to the host. The notification decision is
    /// [`Self::notify`]'s, after the lock is dropped.
    pub(super) fn publish(&self, inner: &Inner, n: u32) {
        if n != 0 {
            // The wakeup flag is read again when deciding, closer to the doorbell.
            let _ = inner.sq.publish(self.notifier.shm());
        }
    }

    /// Notifies the host of `n` published requests: at once when a batch is full,
    /// otherwise by the flush deadline, whose timer keeps a reference from `this` while
    /// it is armed.
    fn notify(this: ArcBorrow<'_, Self>, n: u32) {
        if let Pending::Defer(us) = this.notifier.notify(this.settings, &this.stats, n) {
            Self::flush_within(this, us);
        }
    }

    /// Arms the flush deadline `us` microseconds from now, unless it fires sooner.
    fn flush_within(this: ArcBorrow<'_, Self>, us: u64) {
        let ms = u32::try_from(us.div_ceil(1000)).unwrap_or(u32::MAX);
        Timer::arm_within(this, msecs_to_jiffies(ms).max(1));
    }

    /// Notifies the host of `n` published requests now: for requests moved out of the
    /// backlog, one batch that needs no deadline, since the host has just been busy.
    pub(super) fn notify_now(&self, n: u32) {
        if let Pending::Defer(_) = self.notifier.notify(self.settings, &self.stats, n) {
            self.notifier.flush(&self.stats);
        }
    }

    /// Publishes `n` written requests, drops the teardown lock and notifies the host.
    /// With work outstanding, makes sure the poll runs.
    pub(super) fn publish_and_notify(this: ArcBorrow<'_, Self>, guard: InnerGuard<'_>, n: u32) {
        this.publish(&guard, n);
        this.note_busy(&guard);
        drop(guard);
        Self::notify(this, n);
        Self::poll_while_busy(this);
    }

    /// Makes sure the poll runs while work is outstanding.
    pub(super) fn poll_while_busy(this: ArcBorrow<'_, Self>) {
        if this.busy.load(Relaxed) {
            Timer::arm_within(this, msecs_to_jiffies(POLL_MS));
        }
    }

    /// Moves queued requests into the ring, oldest first, while it has room and the
    /// oldest fits the caps in flight. Returns how many. Bounded by the ring size.
    pub(super) fn submit_backlog(&self, inner: &mut Inner) -> u32 {
        let mut wrote = 0;
        while !inner.broken {
            let Some(id) = inner.backlog.cursor_front().map(|c| *c.current().1) else {
                break;
            };
            let Some((space, (op, _))) =
                inner.spaces.get(&id).and_then(|s| s.queued.map(|q| (s, q)))
            else {
                // A node without its record would be a driver bug; drop it.
                let _ = inner.backlog.cursor_front().map(|c| c.remove_current());
                inner.backlog_len -= 1;
                continue;
            };
            // FIFO: a DESTROY beyond the caps holds up those behind it, so that
            // none is overtaken for ever.
            if op == Op::Destroy && !self.destroy_fits(inner, space.pages) {
                break;
            }
            let owed = self.host_owes(inner);
            match inner.sq.push(self.notifier.shm(), &space.request(id, op)) {
                Ok(()) => {}
                Err(wire::Error::Full) => break,
                Err(e) => {
                    self.protocol_error(inner, e);
                    break;
                }
            }
            inner.dequeue(id);
            self.count_submission(inner, id, op, owed);
            wrote += 1;
            if op == Op::Create && inner.spaces.get(&id).map(|s| s.state) == Some(State::Destroying)
            {
                // Its DESTROY was started while the CREATE waited here: it follows.
                inner.enqueue(id, Op::Destroy);
            }
        }
        wrote
    }

    /// Starts the host teardown of a live space. Returns whether a request was
    /// written to the ring. A DESTROY never overtakes its CREATE, and never cancels
    /// it: the host sees both.
    pub(super) fn start_destroy(&self, inner: &mut Inner, id: SpaceId, pages: u64) -> bool {
        if !self.host_owes(inner) {
            inner.last_progress = Ktime::ktime_get();
        }
        let Some(space) = inner.spaces.get_mut(&id) else {
            return false;
        };
        space.pages = pages;
        space.state = State::Destroying;
        let create_queued = matches!(space.queued, Some((Op::Create, _)));
        inner.outstanding.take(pages);
        self.stats().spaces_destroyed.fetch_add(1, Relaxed);
        if create_queued {
            // Follows the CREATE out of the backlog (`submit_backlog`).
            return false;
        }
        self.submit(inner, id, Op::Destroy)
    }
}

impl<M: SharedMemory + Send + Sync + 'static, B: Doorbell + 'static> TimerCallback
    for Teardown<M, B>
{
    /// Flushes the incomplete batch once its deadline has passed. While work is
    /// outstanding it is also the poll: completions that no interrupt announced (a
    /// host that stopped after refilling a ring the guest had to leave) get one, raised
    /// by the guest itself, since the teardown lock is not taken here.
    fn run(this: Arc<Self>) {
        match this.notifier.flush_if_due(&this.stats) {
            Due::Flushed => {
                this.stats.deadline_flushes.fetch_add(1, Relaxed);
            }
            // The poll ran first: the batch keeps its own deadline.
            Due::In(us) => Self::flush_within(this.as_arc_borrow(), us),
            Due::Nothing => {}
        }
        if !this.busy.load(Relaxed) {
            return;
        }
        if wire::guest_cq_waiting(this.notifier.shm()) {
            this.stats.completion_polls.fetch_add(1, Relaxed);
            this.notifier.kick();
        }
        Self::poll_while_busy(this.as_arc_borrow());
    }
}

kernel::impl_has_timer! {
    impl{M: SharedMemory + Send + Sync + 'static, B: Doorbell + 'static}
        HasTimer<Self> for Teardown<M, B> { self.deadline }
}
