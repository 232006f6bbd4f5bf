// SPDX-License-Identifier: GPL-2.0

//! Creation: a new address space is used only once the host has acknowledged its
//! CREATE. `pgd_alloc` waits for that, and for a reset under way, killably and
//! bounded; a fork or exec whose CREATE the host refused or never answered fails.

use core::sync::atomic::Ordering::Relaxed;
use kernel::{
    mm_hooks::SpaceId,
    prelude::*,
    sync::CondVarTimeoutResult,
    time::{msecs_to_jiffies, Ktime},
};

use super::{Inner, InnerGuard, Teardown};
use crate::{
    notify::Doorbell,
    settings::Setting,
    stats::count_problem,
    wire::{Op, SharedMemory, Status},
};

/// Longest step of a wait for the host, after which the waiter looks for completions
/// itself: a host that does not interrupt is still heard, and the wait ends on time.
const STEP_MS: u32 = 20;

/// Why a wait for the host ended before its condition held.
enum Unmet {
    /// `create_timeout_ms` passed.
    TimedOut,
    /// A fatal signal.
    Killed,
}

/// What the host made of a CREATE.
enum Created {
    /// Acknowledged.
    Yes,
    /// Refused: it holds no object.
    Refused,
    /// Taken for dead before it answered.
    HostDead,
    /// A reset made it forget the space, which then runs without the host.
    Forgotten,
}

impl<M: SharedMemory + Send + Sync + 'static, B: Doorbell + 'static> Teardown<M, B> {
    /// Waits until `done` gives a value, killably and at most `create_timeout_ms`.
    fn wait_host<'a, T>(
        &'a self,
        mut guard: InnerGuard<'a>,
        mut done: impl FnMut(&Self, &mut Inner) -> Option<T>,
    ) -> (InnerGuard<'a>, Result<T, Unmet>) {
        let start = Ktime::ktime_get();
        let limit_us = self
            .settings
            .get(Setting::CreateTimeoutMs)
            .saturating_mul(1000);
        let mut step = 1;
        loop {
            if let Some(v) = done(self, &mut guard) {
                return (guard, Ok(v));
            }
            if elapsed_us(start) >= limit_us {
                return (guard, Err(Unmet::TimedOut));
            }
            match self.progress.wait_killable_timeout(&mut guard, step) {
                CondVarTimeoutResult::Signal { .. } => return (guard, Err(Unmet::Killed)),
                CondVarTimeoutResult::Woken { .. } => {}
                CondVarTimeoutResult::Timeout => {
                    // Nothing announced progress: look for it ourselves.
                    drop(guard);
                    self.process_completions();
                    guard = self.inner.lock();
                    step = (step * 2).min(msecs_to_jiffies(STEP_MS).max(1));
                }
            }
        }
    }

    /// Waits while a reset the host will carry out is under way, so that a new space
    /// gets its host object instead of running without one. Fails with `ENOMEM` after
    /// `create_timeout_ms` and with `EINTR` when killed.
    pub(super) fn await_reset<'a>(&'a self, guard: InnerGuard<'a>) -> Result<InnerGuard<'a>> {
        let waiting = |inner: &Inner| inner.broken && inner.reset.is_some();
        if !waiting(&guard) {
            return Ok(guard);
        }
        self.stats().reset_waits.fetch_add(1, Relaxed);
        match self.wait_host(guard, |_, inner| (!waiting(inner)).then_some(())) {
            (guard, Ok(())) => Ok(guard),
            (_, Err(Unmet::TimedOut)) => {
                if count_problem(&self.stats().create_timeouts) {
                    pr_warn!("host did not finish its reset in time; fork or exec fails\n");
                }
                Err(ENOMEM)
            }
            (_, Err(Unmet::Killed)) => Err(EINTR),
        }
    }

    /// Waits until the host has acknowledged the CREATE of `id`, which the caller has
    /// submitted and notified. Fails with `ENOMEM` if the host refused it or did not
    /// answer within `create_timeout_ms` (or was taken for dead meanwhile), and with
    /// `EINTR` when killed; the space is then no longer live, and a DESTROY follows
    /// its CREATE if the host may have seen it.
    pub(super) fn await_creation(&self, id: SpaceId) -> Result {
        let start = Ktime::ktime_get();
        let mut guard = self.inner.lock();
        // Owed work: a host that leaves it unanswered is taken for dead.
        guard.creating += 1;
        let (mut guard, outcome) = self.wait_host(guard, |this, inner| {
            let Some(created) = inner.spaces.get(&id).map(|s| s.created) else {
                return Some(Created::Forgotten);
            };
            match created {
                Some(Status::Ok) => Some(Created::Yes),
                Some(_) => Some(Created::Refused),
                None if this.host_is_dead(inner) => Some(Created::HostDead),
                None => None,
            }
        });
        guard.creating -= 1;
        let waited = elapsed_us(start);
        self.stats().creates_waited.fetch_add(1, Relaxed);
        self.stats().create_wait_us.fetch_add(waited, Relaxed);
        self.maxima().create_wait_max_us.fetch_max(waited, Relaxed);
        let inner = &mut *guard;
        let (result, n) = match outcome {
            Ok(Created::Yes | Created::Forgotten) => (Ok(()), 0),
            Ok(Created::Refused) => {
                // Nothing on the host to destroy.
                drop(inner.untrack(id));
                self.stats().creates_refused.fetch_add(1, Relaxed);
                (Err(ENOMEM), 0)
            }
            Ok(Created::HostDead) | Err(Unmet::TimedOut) => {
                if count_problem(&self.stats().create_timeouts) {
                    pr_warn!(
                        "host did not create address space {id:#x} in time; fork or exec fails\n"
                    );
                }
                (Err(ENOMEM), self.abandon_creation(inner, id))
            }
            Err(Unmet::Killed) => (Err(EINTR), self.abandon_creation(inner, id)),
        };
        self.publish(inner, n);
        self.note_busy(inner);
        drop(guard);
        self.notify_now(n);
        result
    }

    /// Gives up on a space whose CREATE was not acknowledged. Still in the backlog,
    /// the host never saw it and it is forgotten; otherwise the host may create the
    /// object yet, so its DESTROY follows (its page directory then waits for that).
    /// Returns how many requests were written to the ring.
    fn abandon_creation(&self, inner: &mut Inner, id: SpaceId) -> u32 {
        let unsent = inner
            .spaces
            .get(&id)
            .is_some_and(|s| matches!(s.queued, Some((Op::Create, _))));
        if unsent {
            drop(inner.untrack(id));
            return 0;
        }
        u32::from(self.start_destroy(inner, id, 0))
    }
}

/// Microseconds since `since`.
pub(super) fn elapsed_us(since: Ktime) -> u64 {
    u64::try_from((Ktime::ktime_get() - since).to_ns() / 1000).unwrap_or(0)
}
