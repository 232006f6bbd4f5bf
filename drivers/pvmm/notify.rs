// SPDX-License-Identifier: GPL-2.0

//! Telling the host about submissions: the [`Doorbell`], the batching of
//! notifications and the flush deadline ([`Notifier`], [`notify`]).

use core::sync::atomic::{
    AtomicU32,
    Ordering::{AcqRel, Relaxed, Release},
};
use kernel::{
    time::msecs_to_jiffies,
    timer::{Timer, TimerHandler},
};

use crate::{
    settings::{Knob, Settings},
    stats::{Maxima, Stats},
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
}

/// The transport side of the engine: shared memory, doorbell, counters, and the
/// decision when to ring.
///
/// # Locking
///
/// Lock-free: everything here is atomics, shared-memory accesses and MMIO, so it is
/// used from the hooks, the interrupt thread and the flush-deadline timer (softirq)
/// alike, with or without the engine lock held.
///
/// # Lifetime
///
/// Owned by the engine's flush-deadline timer, which is shut down when the engine is
/// dropped.
pub(crate) struct Notifier<M: SharedMemory, B: Doorbell> {
    shm: M,
    bell: B,
    /// Submissions published since the last notification decision. A CPU adds its
    /// count with release ordering after publishing the ring tail; the CPU that takes
    /// the count (acquire) and rings therefore rings for entries the host can see.
    unnotified: AtomicU32,
    /// The host did not offer `HOST_NEED_WAKEUP`: ring for every batch.
    always_ring: bool,
    stats: Stats,
    maxima: Maxima,
}

impl<M: SharedMemory + Send + Sync, B: Doorbell> Notifier<M, B> {
    /// A notifier for the guest-accepted `features`, with counters at zero.
    pub(crate) fn new(shm: M, bell: B, features: u32) -> Self {
        Notifier {
            shm,
            bell,
            unnotified: AtomicU32::new(0),
            always_ring: features & wire::FEATURE_NEED_WAKEUP == 0,
            stats: Stats::default(),
            maxima: Maxima::default(),
        }
    }

    /// The shared memory.
    pub(crate) fn shm(&self) -> &M {
        &self.shm
    }

    /// Event counters.
    pub(crate) fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Longest synchronous stretches.
    pub(crate) fn maxima(&self) -> &Maxima {
        &self.maxima
    }

    /// Hands the unnotified submissions to the host as one batch: rings unless the host
    /// says it is working anyway.
    pub(crate) fn flush(&self) -> bool {
        if self.unnotified.swap(0, AcqRel) == 0 {
            return false;
        }
        self.stats.batches.fetch_add(1, Relaxed);
        if self.always_ring || wire::host_needs_wakeup(&self.shm) {
            self.stats.doorbells.fetch_add(1, Relaxed);
            self.bell.ring();
        } else {
            self.stats.doorbells_suppressed.fetch_add(1, Relaxed);
        }
        true
    }

    /// Rings now, as a hypercall would. The doorbell also covers every submission
    /// whose count it takes, so other CPUs' pending batches are handed over too.
    pub(crate) fn ring_now(&self) {
        self.unnotified.swap(0, AcqRel);
        self.stats.batches.fetch_add(1, Relaxed);
        self.stats.doorbells.fetch_add(1, Relaxed);
        self.bell.ring();
    }
}

impl<M: SharedMemory + Send + Sync, B: Doorbell> TimerHandler for Notifier<M, B> {
    fn expired(&self) {
        if self.flush() {
            self.stats.deadline_flushes.fetch_add(1, Relaxed);
        }
    }
}

/// Notifies the host of `n` published requests: at once when a batch is full,
/// otherwise by the flush deadline `deadline`. Called after the engine lock is dropped.
pub(crate) fn notify<M, B>(deadline: &Timer<Notifier<M, B>>, settings: &Settings, n: u32)
where
    M: SharedMemory + Send + Sync + 'static,
    B: Doorbell + 'static,
{
    if n == 0 {
        return;
    }
    let io = deadline.handler();
    let pending = io.unnotified.fetch_add(n, Release).saturating_add(n);
    if u64::from(pending) >= settings.get(Knob::Batch) {
        io.flush();
    } else {
        let us = settings.get(Knob::FlushUs);
        let ms = u32::try_from(us.div_ceil(1000)).unwrap_or(u32::MAX);
        deadline.arm_within(msecs_to_jiffies(ms).max(1));
    }
}
