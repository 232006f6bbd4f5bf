// SPDX-License-Identifier: GPL-2.0

//! Protocol errors and the host reset that recovers from them: the ring stops until
//! the host has forgotten everything of this guest, which releases every parked page
//! directory.

use core::sync::atomic::Ordering::Relaxed;
use kernel::{prelude::*, time::Ktime};

use super::{Inner, Teardown, Untracked};
use crate::{
    notify::Doorbell,
    stats::count_problem,
    wire::{self, SharedMemory, SqProducer, Why},
};

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
    /// so every record is dropped, moved to `gone` for the caller to release every
    /// parked page directory ([`Self::reset_released`]) once it dropped the lock.
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
        *gone = Some(inner.untrack_all());
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
        let (released, _) = self.release_untracked(gone, Why::Reset, false);
        self.stats().reset_releases.fetch_add(released, Relaxed);
        pr_info!("host reset; released {released} page directories it had forgotten\n");
        self.progress.notify_all();
    }
}
