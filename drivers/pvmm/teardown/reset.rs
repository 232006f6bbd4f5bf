// SPDX-License-Identifier: GPL-2.0

//! Protocol errors and the host reset that recovers from them: the ring stops until
//! the host has forgotten everything of this guest, which releases every parked page
//! directory; the spaces still in use then get their host objects again.

use core::sync::atomic::Ordering::Relaxed;
use kernel::{prelude::*, time::Ktime};

use super::{queue, Inner, Teardown, Untracked};
use crate::{
    notify::Doorbell,
    space::State,
    stats::count_problem,
    wire::{self, Op, SharedMemory, SqProducer, Why},
};
use kernel::rbtree::RBTree;

impl Inner {
    /// The host forgot every object of this guest while its spaces are in use. Every
    /// queued request is void; the host's part of every teardown is done, so a parked
    /// page directory is released (its record is returned) and an exit waiting for
    /// `pgd_free` is acknowledged; every live space is queued to be created again.
    /// Returns the released records and how many spaces are created again.
    fn forget_on_host(&mut self) -> (Untracked, u64) {
        let mut voided = core::mem::take(&mut self.backlog);
        while let Some(cursor) = voided.cursor_front() {
            let id = *cursor.current().1;
            let (_, node) = cursor.remove_current();
            if let Some(s) = self.spaces.get_mut(&id) {
                s.queued = None;
                s.slot = Some(node.into_reservation());
            }
        }
        self.backlog_len = 0;
        self.in_flight.spaces = 0;
        self.in_flight.pages = 0;
        let mut released = RBTree::new();
        let mut cursor = self.spaces.cursor_front();
        while let Some(mut c) = cursor {
            let (_, s) = c.current_mut();
            s.in_flight = false;
            let (state, parked, pages) = (s.state, s.pgd.is_some(), s.pages);
            if state == State::Destroying {
                self.outstanding.give(pages);
                if parked {
                    let (next, node) = c.remove_current();
                    self.spaces_live -= 1;
                    self.pgds_pending -= 1;
                    released.insert(node);
                    cursor = next;
                    continue;
                }
                let s = c.current_mut().1;
                s.state = State::Acked;
                s.forgotten = true;
            }
            cursor = c.move_next();
        }
        let mut recreate = 0;
        for (id, s) in self.spaces.iter_mut() {
            if s.state == State::Live {
                s.created = None;
                queue(
                    &mut self.backlog,
                    &mut self.backlog_next,
                    s,
                    *id,
                    Op::Create,
                );
                recreate += 1;
            }
        }
        self.backlog_len = recreate;
        let gone = Untracked {
            spaces: released,
            backlog: RBTree::new(),
        };
        (gone, recreate)
    }
}

impl<M: SharedMemory + Send + Sync + 'static, B: Doorbell + 'static> Teardown<M, B> {
    /// Stops the ring after the host broke the protocol with `err`, and asks for a
    /// reset.
    pub(super) fn protocol_error(&self, inner: &mut Inner, err: wire::Error) {
        if count_problem(&self.stats().protocol_errors) {
            pr_err!("host broke the ring protocol ({err}); ring stopped\n");
        }
        if !inner.broken {
            self.request_reset(inner);
        }
        // Throttled creators must not wait for a ring that is not used.
        self.progress.notify_all();
    }

    /// Asks the host to forget everything of this guest, if it can, and stops using
    /// the ring until it has. The interrupt thread and the detach path poll for the
    /// answer.
    pub(super) fn request_reset(&self, inner: &mut Inner) {
        inner.broken = true;
        if self.features & wire::FEATURE_RESET != 0 && inner.reset.is_none() {
            inner.reset = Some(wire::guest_request_reset(self.notifier.shm()));
            // Rare enough to ring under the lock; the host may be idle.
            self.notifier.ring(&self.stats);
        }
    }

    /// Finishes a reset once the host acknowledged it: the host holds nothing of ours,
    /// so the records of parked page directories are moved to `gone` for the caller to
    /// release ([`Self::reset_released`]) once it dropped the lock, and the live spaces
    /// are queued to be created again ([`Inner::forget_on_host`]). While detaching,
    /// every record goes.
    /// Returns whether the reset is done (or none was pending).
    pub(super) fn poll_reset(&self, inner: &mut Inner, gone: &mut Option<Untracked>) -> bool {
        let shm = self.notifier.shm();
        let Some(seq) = inner.reset else {
            return true;
        };
        if !wire::guest_reset_done(shm, seq) {
            return false;
        }
        inner.reset = None;
        self.stats().resets.fetch_add(1, Relaxed);
        *gone = Some(if inner.hooks_active {
            let (released, recreate) = inner.forget_on_host();
            self.stats().spaces_recreated.fetch_add(recreate, Relaxed);
            released
        } else {
            // Detaching: nothing is created again.
            inner.untrack_all()
        });
        inner.cq.skip_all(shm);
        inner.sq = SqProducer::resume(self.layout, shm);
        inner.broken = !matches!(inner.sq.space(shm), Ok(n) if n == self.layout.sq_entries);
        inner.host_dead = false;
        inner.last_progress = Ktime::ktime_get();
        if inner.broken {
            pr_err!("host acknowledged a reset but left the ring unusable\n");
        }
        true
    }

    /// Releases what a finished reset untracked, without the teardown lock, and wakes
    /// throttled creators.
    pub(super) fn reset_released(&self, gone: Untracked) {
        let (released, live) = self.release_untracked(gone, Why::Reset, false);
        self.stats().reset_releases.fetch_add(released, Relaxed);
        pr_info!("host reset; released {released} page directories it had forgotten\n");
        if live != 0 {
            // Only when detaching: the hooks go next, and the kernel frees these
            // spaces' page directories itself when they end.
            pr_info!("{live} live address spaces go on without pvmm; the host forgot them\n");
        }
        self.progress.notify_all();
    }
}
