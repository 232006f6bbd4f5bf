// SPDX-License-Identifier: GPL-2.0

//! The blocking baselines' host call: ring, then wait for the acknowledgment with
//! interrupts off, in one stretch (`sync`) or in bounded chunks (`chunked`).
//!
//! The wait never takes the teardown lock (on `PREEMPT_RT` a sleeping lock): it polls
//! the completion ring read-only and the request's own flag.

use core::sync::atomic::{AtomicBool, Ordering::Acquire, Ordering::Relaxed};
use kernel::{irq::with_local_irqs_disabled, mm_hooks::SpaceId, prelude::*, time::Ktime};

use crate::{
    notify::{Doorbell, Notifier},
    settings::{Mode, Setting, Settings},
    stats::{count_problem, Maxima, Stats},
    wire::{self, Layout, Op, SharedMemory},
};

/// Most completions read at a time: under one hold of the teardown lock, or per poll of
/// a synchronous wait.
pub(crate) const CQ_PASS: u32 = 32;

/// What a synchronous teardown waits for: its `waiter` flag, set when the `Teardown`
/// consumes the acknowledgment, or the acknowledgment itself, the DESTROY completion
/// of `id` tagged `tag`, still in the ring. A plain value.
pub(crate) struct Awaited<'a> {
    pub(crate) waiter: &'a AtomicBool,
    pub(crate) id: SpaceId,
    pub(crate) tag: u32,
}

/// A synchronous teardown's host call: rings the host and spins until what is
/// [`Awaited`] happens, with
/// interrupts off from the doorbell on, as a hypercall would; in `chunked` mode for at
/// most `chunk_us` at a time, as a hypercall with continuations would. Accounts for
/// the time waited, measured before interrupts were on again. The caller has
/// published the request and dropped the teardown lock.
pub(crate) fn wait_for_ack<M: SharedMemory + Send + Sync, B: Doorbell>(
    io: &Notifier<M, B>,
    stats: &Stats,
    maxima: &Maxima,
    settings: &Settings,
    layout: &Layout,
    awaited: Awaited<'_>,
    mode: Mode,
) {
    let Awaited { waiter, id, tag } = awaited;
    let chunk_ns = match mode {
        Mode::Chunked => {
            i64::try_from(settings.get(Setting::ChunkUs).saturating_mul(1000)).unwrap_or(i64::MAX)
        }
        _ => i64::MAX,
    };
    let timeout_ns = i64::try_from(
        settings
            .get(Setting::SyncTimeoutMs)
            .saturating_mul(1_000_000),
    )
    .unwrap_or(i64::MAX);
    let shm = io.shm();
    let start = Ktime::ktime_get();
    let mut first = true;
    let mut watch = wire::CqWatch::new(Op::Destroy, id, tag);
    // When the wait ended: the acknowledgment was seen, or the wait gave up.
    let end = loop {
        let (done, off_ns, end) = with_local_irqs_disabled(|| {
            let t0 = Ktime::ktime_get();
            if core::mem::take(&mut first) {
                io.ring(stats);
            }
            loop {
                // A bounded read per poll: a host that floods the ring must
                // not stretch the time between clock reads.
                let acked = waiter.load(Acquire) || watch.poll(shm, layout, CQ_PASS);
                let now = Ktime::ktime_get();
                // Measured before interrupts are on again: afterwards the
                // interrupt threads may run first.
                let off_ns = (now - t0).to_ns();
                if acked || off_ns >= chunk_ns || (now - start).to_ns() >= timeout_ns {
                    break (acked, off_ns, now);
                }
                core::hint::spin_loop();
            }
        });
        // Interrupts are on again here: pending ones have just been taken.
        let off_us = u64::try_from(off_ns / 1000).unwrap_or(0);
        maxima.irq_off_max_us.fetch_max(off_us, Relaxed);
        stats.irq_off_stretches.fetch_add(1, Relaxed);
        if off_us >= 1000 {
            stats.irq_off_long.fetch_add(1, Relaxed);
        }
        if done {
            break end;
        }
        // Between chunks, as a hypercall continuation would: let other tasks
        // run (a no-op where the kernel preempts anyway).
        kernel::task::cond_resched();
        if (end - start).to_ns() >= timeout_ns {
            stats.sync_timeouts.fetch_add(1, Relaxed);
            // A host this slow or dead would stall every exit: stop blocking.
            if settings.set(Setting::Mode, Mode::Async as u64).is_ok()
                && count_problem(&stats.mode_degraded)
            {
                pr_warn!("host did not acknowledge space {id:#x} in time; switched to async\n");
            }
            break end;
        }
    };
    let us = u64::try_from((end - start).to_ns() / 1000).unwrap_or(0);
    stats.sync_wait_us.fetch_add(us, Relaxed);
    maxima.sync_wait_max_us.fetch_max(us, Relaxed);
}
