// SPDX-License-Identifier: GPL-2.0

//! What the driver counts: event counters ([`Stats`]), the longest synchronous
//! stretches ([`Maxima`]) and a snapshot of the teardown state's gauges ([`Gauges`]).

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Logs the first few occurrences of a problem, then every power of two.
pub(crate) fn should_log(count: u64) -> bool {
    count < 8 || count.is_power_of_two()
}

/// Counts one occurrence of a problem in `counter`; returns whether to log it
/// ([`should_log`] of the count before).
pub(crate) fn count_problem(counter: &AtomicU64) -> bool {
    should_log(counter.fetch_add(1, Relaxed))
}

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// Event counters.
        ///
        /// # Locking
        ///
        /// Relaxed atomics, so they can be updated and read without the teardown
        /// lock; each is monotonic.
        ///
        /// # Lifetime
        ///
        /// A field of the device's `Teardown`, lent to the [`crate::notify::Notifier`]
        /// and the synchronous wait by reference; they restart with the driver
        /// instance.
        #[derive(Default)]
        pub(crate) struct Stats {
            $($(#[doc = $doc])* pub(crate) $name: AtomicU64,)*
        }

        impl Stats {
            /// Calls `f` with the name and value of every counter.
            pub(crate) fn for_each(&self, mut f: impl FnMut(&'static str, u64)) {
                $(f(stringify!($name), self.$name.load(Relaxed));)*
            }
        }
    };
}

counters! {
    /// CREATE requests submitted.
    spaces_created,
    /// Address spaces created while the mode was `off` (never registered).
    spaces_untracked,
    /// DESTROY requests submitted.
    spaces_destroyed,
    /// DESTROY completions accepted.
    spaces_acked,
    /// CREATE completions accepted.
    creates_acked,
    /// `pgd_alloc` calls that waited for their CREATE to be acknowledged.
    creates_waited,
    /// Total time `pgd_alloc` waited for CREATEs, microseconds.
    create_wait_us,
    /// CREATEs the host refused (a non-Ok status): the fork or exec failed.
    creates_refused,
    /// CREATE (or reset) waits that ended without an acknowledgment:
    /// `create_timeout_ms` passed, or the host was taken for dead (logged). The fork
    /// or exec failed.
    create_timeouts,
    /// `pgd_alloc` calls that waited for a reset under way to finish.
    reset_waits,
    /// Live address spaces whose CREATE was sent again after a reset.
    spaces_recreated,
    /// Address spaces created while no host could create them (the ring stopped for
    /// good, or the host taken for dead): never registered.
    spaces_hostless,
    /// Page directories kept at `pgd_free` until the host acknowledges.
    pgds_parked,
    /// Page directories released, parked or not.
    pgds_released,
    /// Of those, the ones released within `pgd_free`: the host was done already.
    pgds_returned,
    /// Exits of address spaces created before the driver attached.
    untracked_exits,
    /// Entries written to the submission ring.
    submissions,
    /// Groups of submissions handed to the host with one notification decision.
    batches,
    /// Doorbells rung, but for CREATEs.
    doorbells,
    /// Doorbells rung for a CREATE that a task waits for (never batched).
    create_doorbells,
    /// Batches that needed no doorbell because the host was busy.
    doorbells_suppressed,
    /// Batches handed over by the flush deadline rather than by size.
    deadline_flushes,
    /// Completion interrupts taken.
    irqs,
    /// Completions consumed.
    completions,
    /// Malformed, unknown or unexpected completions (ignored).
    bad_completions,
    /// Impossible ring indices from the host; each stops the ring until a reset.
    protocol_errors,
    /// Completions tagged by an earlier driver instance (ignored).
    stale_completions,
    /// Resets the host carried out (at detach, or after a protocol error).
    resets,
    /// Page directories released because the host acknowledged a reset.
    reset_releases,
    /// Release log entries dropped because the host did not keep up.
    release_log_dropped,
    /// Times the host was declared dead (no acknowledgment for `host_timeout_ms`).
    host_declared_dead,
    /// Completions with a non-Ok status.
    host_errors,
    /// Page directories released without any acknowledgment (logged).
    forced_releases,
    /// Page directories left unreleased at a detach that a fatal signal cut short:
    /// the host never acknowledged them, and might still read them (logged).
    pgds_leaked,
    /// Live address spaces left on a host that did not reset at detach (logged).
    spaces_abandoned,
    /// Exits handled without the host because the ring was stopped.
    fallback_exits,
    /// `pgd_alloc` calls that waited because outstanding work was at a cap.
    throttle_events,
    /// Total time `pgd_alloc` waited at a cap, microseconds.
    throttle_wait_us,
    /// Throttled `pgd_alloc` calls that failed after `throttle_timeout_ms`.
    throttle_timeouts,
    /// Exits in mode `off`: nothing to do, unless the space was registered before the
    /// switch, when its host object is destroyed as in `async`.
    teardowns_off,
    /// Teardowns started in mode `sync`.
    teardowns_sync,
    /// Teardowns started in mode `chunked`.
    teardowns_chunked,
    /// Teardowns started in mode `async`.
    teardowns_async,
    /// Total time spent in synchronous waits for the host, microseconds.
    sync_wait_us,
    /// Interrupts-off stretches in synchronous waits.
    irq_off_stretches,
    /// Of those, the ones of 1 ms or more.
    irq_off_long,
    /// Synchronous waits that gave up after `sync_timeout_ms`.
    sync_timeouts,
    /// Switches from a blocking mode to `async` after a synchronous wait gave up.
    mode_degraded,
    /// Detaches that stopped waiting for the host because of a fatal signal.
    drain_interrupted,
    /// Completion passes cut short to let the hooks in, with entries left.
    completion_passes_cut,
    /// Completion interrupts the guest raised itself: after a cut pass, or when the
    /// poll found completions that no interrupt announced.
    completion_polls,
    /// Synchronous teardowns that went asynchronous (ring full, out of memory).
    sync_fallbacks,
}

/// Longest waits for the host since the last reset of the peaks, microseconds.
///
/// # Locking
///
/// Updated with relaxed `fetch_max` outside the teardown lock.
#[derive(Default)]
pub(crate) struct Maxima {
    /// Longest synchronous wait for the host.
    pub(crate) sync_wait_max_us: AtomicU64,
    /// Longest stretch with interrupts off in a synchronous wait.
    pub(crate) irq_off_max_us: AtomicU64,
    /// Longest wait of `pgd_alloc` for its CREATE. Not synchronous (it sleeps), but
    /// what a fork or exec pays for the host.
    pub(crate) create_wait_max_us: AtomicU64,
}

/// Gauges: a snapshot of the teardown state.
///
/// # Locking
///
/// Taken under the teardown lock in one go, so the values agree with each other; the
/// snapshot itself is a plain value.
pub(crate) struct Gauges {
    pub(crate) spaces_live: u64,
    pub(crate) outstanding: u64,
    pub(crate) outstanding_pages: u64,
    pub(crate) peak_outstanding: u64,
    pub(crate) peak_outstanding_pages: u64,
    pub(crate) in_flight: u64,
    pub(crate) in_flight_pages: u64,
    pub(crate) peak_in_flight: u64,
    pub(crate) peak_in_flight_pages: u64,
    pub(crate) pgds_pending: u64,
    pub(crate) backlog: u64,
    pub(crate) throttled: u64,
    pub(crate) broken: bool,
    pub(crate) resetting: bool,
    pub(crate) host_dead: bool,
    pub(crate) hooks_active: bool,
    pub(crate) peak_host_held: u32,
    /// What the host says it rejected of ours; informational, like `peak_host_held`.
    pub(crate) host_rejected: u32,
}
