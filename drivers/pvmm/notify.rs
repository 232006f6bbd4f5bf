// SPDX-License-Identifier: GPL-2.0

//! Telling the host about submissions: the [`Doorbell`] and the batching of
//! notifications ([`Notifier`]). The flush deadline of an incomplete batch is the
//! `Teardown`'s timer, which calls [`Notifier::flush_if_due`]: the same timer is the
//! completion poll, and its earlier runs must not cut a batch short.
//!
//! The words of the path, in order: *submit* writes an entry into the submission
//! ring; *publish* makes written entries visible to the host (the ring's tail);
//! *notify* counts published entries into the current batch; *flush* hands the
//! batch to the host, ringing the doorbell unless the host says it is working
//! anyway; *ring* rings the doorbell whatever the host says.

use core::sync::atomic::{
    AtomicI64, AtomicU32,
    Ordering::{AcqRel, Relaxed, Release},
};
use kernel::time::Ktime;

use crate::{
    settings::{Setting, Settings},
    stats::Stats,
    wire::{self, SharedMemory},
};

/// Notifies the host that submissions are waiting.
///
/// # Locking
///
/// Implementations take no lock: rung from the hooks, the interrupt thread, the
/// flush timer (softirq) and with interrupts off.
pub(crate) trait Doorbell: Send + Sync {
    /// Rings the host. May be called in atomic context.
    fn ring(&self);
    /// Raises this guest's own completion interrupt, so that its handler runs again
    /// without waiting for the host. May be called in atomic context.
    fn kick(&self);
}

/// The transport side of the `Teardown`: shared memory, doorbell, and the decision
/// when to ring.
///
/// # Locking
///
/// Lock-free: everything here is atomics, shared-memory accesses and MMIO, so it is
/// used from the hooks, the interrupt thread and the flush-deadline timer (softirq)
/// alike, with or without the teardown lock held.
///
/// # Lifetime
///
/// A field of the `Teardown`.
pub(crate) struct Notifier<M: SharedMemory, B: Doorbell> {
    shm: M,
    bell: B,
    /// Submissions published since the last notification decision. A CPU adds its
    /// count with release ordering after publishing the ring tail; the CPU that takes
    /// the count (acquire) and rings therefore rings for entries the host can see.
    unnotified: AtomicU32,
    /// When the current batch must be flushed (`Ktime` nanoseconds): set by the
    /// submission that began it. A flush racing with a new batch's first submission
    /// may read the old deadline and flush the new batch early; that only makes a
    /// batch smaller.
    due_ns: AtomicI64,
    /// The host did not offer `HOST_NEED_WAKEUP`: ring for every batch.
    always_ring: bool,
}

/// What the flush-deadline timer found.
pub(crate) enum Due {
    /// No batch is waiting.
    Nothing,
    /// The batch's deadline had passed: it was flushed.
    Flushed,
    /// The batch may wait this many more microseconds.
    In(u64),
}

/// What to do with published submissions that do not fill a batch.
pub(crate) enum Pending {
    /// Flush them when the flush deadline (this many microseconds) passes.
    Defer(u64),
    /// Nothing: a batch was flushed, or nothing was published.
    Done,
}

impl<M: SharedMemory + Send + Sync, B: Doorbell> Notifier<M, B> {
    /// A notifier for the guest-accepted `features`.
    pub(crate) fn new(shm: M, bell: B, features: u32) -> Self {
        Notifier {
            shm,
            bell,
            unnotified: AtomicU32::new(0),
            due_ns: AtomicI64::new(0),
            always_ring: features & wire::FEATURE_NEED_WAKEUP == 0,
        }
    }

    /// The shared memory.
    pub(crate) fn shm(&self) -> &M {
        &self.shm
    }

    /// Hands the unnotified submissions to the host as one batch: rings unless the host
    /// says it is working anyway. Returns whether there were any.
    pub(crate) fn flush(&self, stats: &Stats) -> bool {
        if self.unnotified.swap(0, AcqRel) == 0 {
            return false;
        }
        stats.batches.fetch_add(1, Relaxed);
        if self.always_ring || wire::host_needs_wakeup(&self.shm) {
            stats.doorbells.fetch_add(1, Relaxed);
            self.bell.ring();
        } else {
            stats.doorbells_suppressed.fetch_add(1, Relaxed);
        }
        true
    }

    /// Rings now, as a hypercall would. The doorbell also covers every submission
    /// whose count it takes, so other CPUs' pending batches are flushed too.
    pub(crate) fn ring(&self, stats: &Stats) {
        self.unnotified.swap(0, AcqRel);
        stats.batches.fetch_add(1, Relaxed);
        stats.doorbells.fetch_add(1, Relaxed);
        self.bell.ring();
    }

    /// Tells the host of a published CREATE at once, as a task waits for it: rings
    /// unless the host says it is working anyway. The batch of teardowns is left as
    /// it is, so that their counters say how well teardowns are batched.
    pub(crate) fn notify_create(&self, stats: &Stats) {
        if self.always_ring || wire::host_needs_wakeup(&self.shm) {
            stats.create_doorbells.fetch_add(1, Relaxed);
            self.bell.ring();
        }
    }

    /// Flushes the batch if its deadline has passed (the flush-deadline timer; it is
    /// also the completion poll, which may run sooner).
    pub(crate) fn flush_if_due(&self, stats: &Stats) -> Due {
        if self.unnotified.load(Relaxed) == 0 {
            return Due::Nothing;
        }
        let left_ns = self.due_ns.load(Relaxed) - Ktime::ktime_get().to_ns();
        if left_ns > 0 {
            return Due::In(u64::try_from(left_ns).unwrap_or(0).div_ceil(1000));
        }
        if self.flush(stats) {
            Due::Flushed
        } else {
            Due::Nothing
        }
    }

    /// Raises the guest's own completion interrupt (see [`Doorbell::kick`]).
    pub(crate) fn kick(&self) {
        self.bell.kick();
    }

    /// Counts `n` newly published requests into the batch: flushes it when it is
    /// full, otherwise says how long it may wait. Called after the teardown lock is
    /// dropped.
    pub(crate) fn notify(&self, settings: &Settings, stats: &Stats, n: u32) -> Pending {
        if n == 0 {
            return Pending::Done;
        }
        let flush_us = settings.get(Setting::FlushUs);
        let before = self.unnotified.fetch_add(n, Release);
        if before == 0 {
            // This begins a batch: its deadline counts from now.
            let us = i64::try_from(flush_us).unwrap_or(i64::MAX / 1000);
            let due = Ktime::ktime_get()
                .to_ns()
                .saturating_add(us.saturating_mul(1000));
            self.due_ns.store(due, Relaxed);
        }
        if u64::from(before.saturating_add(n)) >= settings.get(Setting::Batch) {
            self.flush(stats);
            Pending::Done
        } else {
            Pending::Defer(flush_us)
        }
    }
}
