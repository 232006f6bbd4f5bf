// SPDX-License-Identifier: GPL-2.0

//! Detaching, in the phases `PvmmDevice`'s `Drop` runs them: close, drain, reset
//! the host, and, after the hooks are gone, finish; all within a [`Deadline`].

use core::sync::atomic::Ordering::Relaxed;
use kernel::{
    prelude::*,
    sync::CondVarTimeoutResult,
    time::{msecs_to_jiffies, Ktime},
    timer::Timer,
};

use super::{Inner, Teardown};
use crate::{
    notify::Doorbell,
    wire::{self, SharedMemory, Why},
};

/// A point in wall time, `ms` after `start` (6.12's `Ktime` has no addition).
///
/// A plain value: no lock, no lifetime of its own.
#[derive(Clone, Copy)]
pub(crate) struct Deadline {
    start: Ktime,
    ms: i64,
}

impl Deadline {
    /// `ms` milliseconds from now.
    pub(crate) fn after_ms(ms: u32) -> Self {
        Deadline {
            start: Ktime::ktime_get(),
            ms: i64::from(ms),
        }
    }

    /// Milliseconds left, negative once passed.
    fn left_ms(&self) -> i64 {
        self.ms - (Ktime::ktime_get() - self.start).to_ms()
    }

    /// This deadline, or `ms` from now if that is later.
    pub(crate) fn at_least_ms(self, ms: u32) -> Self {
        if self.left_ms() >= i64::from(ms) {
            self
        } else {
            Deadline::after_ms(ms)
        }
    }
}

impl<M: SharedMemory + Send + Sync + 'static, B: Doorbell + 'static> Teardown<M, B> {
    /// Tells the host that the guest is attached, with the accepted features, and
    /// wants completion interrupts. Withdrawn by [`Self::finish`].
    pub(crate) fn announce(&self) {
        wire::guest_attach(self.notifier.shm(), self.features);
    }

    /// Detach phase 1: stops tracking new address spaces and wakes throttled creators.
    pub(crate) fn close(&self) {
        self.inner.lock().hooks_active = false;
        self.progress.notify_all();
    }

    /// Polls completions and waits, until `done` holds, `deadline` passes, or a fatal
    /// signal arrives. Returns whether `done` held.
    ///
    /// The deadline is wall time, however often completions wake the wait. It polls as
    /// well as waits, so a lost interrupt cannot stall it.
    fn wait_for(&self, deadline: Deadline, done: impl Fn(&Self, &Inner) -> bool) -> bool {
        const STEP_MS: i64 = 20;
        loop {
            self.process_completions();
            self.notifier.flush(&self.stats);
            let mut inner = self.inner.lock();
            if done(self, &inner) {
                return true;
            }
            let left_ms = deadline.left_ms();
            if left_ms <= 0 {
                return false;
            }
            let step = msecs_to_jiffies(u32::try_from(left_ms.min(STEP_MS)).unwrap_or(1));
            if let CondVarTimeoutResult::Signal { .. } =
                self.progress.wait_killable_timeout(&mut inner, step)
            {
                inner.detach_interrupted = true;
                drop(inner);
                self.stats().drain_interrupted.fetch_add(1, Relaxed);
                pr_warn!("detach interrupted by a fatal signal\n");
                return false;
            }
        }
    }

    /// Detach phase 2, with the hooks still registered: waits until `deadline` for the
    /// host to acknowledge every outstanding teardown and to take every submission.
    /// Page directories freed meanwhile are parked as usual. Returns whether the host
    /// settled.
    pub(crate) fn drain(&self, deadline: Deadline) -> bool {
        self.close();
        self.wait_for(deadline, |this, inner| {
            // A stopped ring waits for its reset in phase 3 instead.
            inner.broken || (inner.outstanding.spaces == 0 && this.host_settled(inner))
        })
    }

    /// Detach phase 3: asks the host to forget every object of this guest, and waits
    /// until `deadline` for it to do so. The host's acknowledgment releases every
    /// parked page directory. Returns whether the host acknowledged.
    pub(crate) fn reset_host(&self, deadline: Deadline) -> bool {
        if self.features & wire::FEATURE_RESET == 0 {
            return false;
        }
        {
            let mut inner = self.inner.lock();
            // A reset already under way (after a protocol error) serves as well.
            if inner.reset.is_none() {
                self.request_reset(&mut inner);
            }
        }
        self.wait_for(deadline, |_, inner| inner.reset.is_none())
    }

    /// Detach phase 5, after the hooks are unregistered: releases what the host never
    /// acknowledged, counted and logged (or, after a detach a fatal signal cut short,
    /// leaves it unreleased), says how many address spaces the host still holds, and
    /// leaves the ring.
    pub(crate) fn finish(&self) {
        self.process_completions();
        Timer::cancel_sync(self);
        let (gone, leak) = {
            let mut inner = self.inner.lock();
            (inner.untrack_all(), inner.detach_interrupted)
        };
        let (pgds, live) = self.release_untracked(gone, Why::Forced, leak);
        wire::guest_detach(self.notifier.shm());
        if pgds != 0 && leak {
            pr_warn!(
                "detach interrupted: {pgds} unacknowledged page directories left unreleased\n"
            );
        } else if pgds != 0 {
            self.stats().forced_releases.fetch_add(pgds, Relaxed);
            pr_warn!("released {pgds} page directories the host never acknowledged\n");
        }
        if live != 0 {
            // Without a reset nothing tells the host to forget them.
            self.stats().spaces_abandoned.fetch_add(live, Relaxed);
            pr_warn!(
                "left {live} live address spaces on the host, which {}\n",
                if self.features & wire::FEATURE_RESET == 0 {
                    "cannot reset"
                } else {
                    "did not reset"
                }
            );
        }
    }

    /// Whether the host has taken every submission and gone idle, so that every
    /// completion it will post (CREATEs included) is in the ring already. A host that
    /// never goes idle keeps the drain waiting until its deadline. One that did not
    /// offer `FEATURE_NEED_WAKEUP` never says it is idle: taking everything must do.
    fn host_settled(&self, inner: &Inner) -> bool {
        let shm = self.notifier.shm();
        let taken = inner
            .sq
            .space(shm)
            .map_or(true, |free| free == self.layout.sq_entries);
        taken && (self.features & wire::FEATURE_NEED_WAKEUP == 0 || wire::host_needs_wakeup(shm))
    }
}
