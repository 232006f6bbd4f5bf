// SPDX-License-Identifier: GPL-2.0

//! The teardown engine: tracks guest address spaces, submits CREATE and DESTROY
//! requests to the host, parks page directories until the host acknowledges, and
//! validates every completion.
//!
//! It is independent of the transport: shared memory and the doorbell are reached
//! through [`SharedMemory`] and [`Doorbell`].

use core::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64,
    Ordering::{AcqRel, Acquire, Relaxed, Release as Publish},
};
use kernel::{
    c_str,
    irq::with_local_irqs_disabled,
    mm_hooks::{AddressSpace, MmHooks, PageDirectory, SpaceId},
    new_condvar, new_spinlock,
    prelude::*,
    rbtree::{RBTree, RBTreeNode, RBTreeNodeReservation},
    static_lock_class,
    sync::{
        lock::{spinlock::SpinLockBackend, Guard},
        Arc, CondVar, CondVarTimeoutResult, SpinLock,
    },
    time::{msecs_to_jiffies, Ktime},
    timer::{Timer, TimerHandler},
};

use crate::wire::{
    self, BadEntry, Completion, CqConsumer, Layout, LogProducer, Op, Release, Request,
    SharedMemory, SqProducer, Status, Why,
};

/// Notifies the host that submissions are waiting.
pub(crate) trait Doorbell: Send + Sync {
    /// Rings the host. May be called in atomic context.
    fn ring(&self);
}

/// `input` without leading and trailing ASCII whitespace (`<[u8]>::trim_ascii` needs a
/// newer Rust than the kernel's minimum).
pub(crate) fn trim(input: &[u8]) -> &[u8] {
    let start = input
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(input.len());
    let end = input
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &input[start..end]
}

/// How teardowns started now reach the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// No host involvement: new address spaces are not registered. The latency floor.
    Off = 0,
    /// One blocking host call per teardown, with interrupts off until the host acknowledges,
    /// like a non-preemptible hypercall.
    Sync = 1,
    /// Like `Sync`, but interrupts (and preemption) are allowed between bounded chunks of
    /// waiting, like a hypercall with continuations.
    Chunked = 2,
    /// Batched submission, deferred page-directory release on completion.
    Async = 3,
}

impl Mode {
    /// Every mode, in numeric order.
    pub(crate) const ALL: [Mode; 4] = [Mode::Off, Mode::Sync, Mode::Chunked, Mode::Async];

    /// Whether this kernel offers the mode: the blocking baselines can stall a vCPU
    /// on a dead host and exist only with `CONFIG_PVMM_SYNC_BASELINES`.
    pub(crate) fn available(self) -> bool {
        cfg!(CONFIG_PVMM_SYNC_BASELINES) || !matches!(self, Mode::Sync | Mode::Chunked)
    }

    /// The name used in debugfs.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Sync => "sync",
            Mode::Chunked => "chunked",
            Mode::Async => "async",
        }
    }

    /// Parses a name, ignoring surrounding whitespace.
    pub(crate) fn parse(input: &[u8]) -> Option<Mode> {
        let name = trim(input);
        Mode::ALL.into_iter().find(|m| m.name().as_bytes() == name)
    }

    fn from_raw(raw: u64) -> Mode {
        Mode::ALL
            .into_iter()
            .find(|m| *m as u64 == raw)
            .unwrap_or(Mode::Async)
    }
}

/// A run-time setting: its name, limits and default.
pub(crate) struct Tunable {
    pub(crate) name: &'static str,
    pub(crate) min: u64,
    pub(crate) max: u64,
    default: u64,
}

/// The settings, indexed by [`Knob`].
pub(crate) const TUNABLES: [Tunable; 9] = [
    Tunable {
        name: "mode",
        min: 0,
        max: 3,
        default: Mode::Async as u64,
    },
    Tunable {
        name: "batch",
        min: 1,
        max: wire::MAX_ENTRIES as u64,
        default: 16,
    },
    Tunable {
        name: "flush_us",
        min: 1,
        max: 1_000_000,
        default: 1000,
    },
    Tunable {
        name: "cap_spaces",
        min: 1,
        max: 1 << 20,
        default: 256,
    },
    Tunable {
        name: "cap_pages",
        min: 1,
        max: wire::MAX_PAGES,
        default: 1 << 20,
    },
    Tunable {
        name: "chunk_us",
        min: 1,
        max: 1_000_000,
        default: 100,
    },
    // Interrupts stay off for up to this long in `sync`: well below the hard-lockup
    // detector (10 s) and RCU stall warnings (21 s), which a dead host must not trip.
    Tunable {
        name: "sync_timeout_ms",
        min: 1,
        max: 1_000,
        default: 1_000,
    },
    Tunable {
        name: "throttle_timeout_ms",
        min: 1,
        max: 3_600_000,
        default: 30_000,
    },
    // Long enough for the slowest host the benchmarks model (a starved worker at
    // 100 ms of CPU per teardown), short against a throttle timeout.
    Tunable {
        name: "host_timeout_ms",
        min: 100,
        max: 3_600_000,
        default: 10_000,
    },
];

/// Index of a setting in [`TUNABLES`].
#[derive(Clone, Copy)]
pub(crate) enum Knob {
    /// [`Mode`] of teardowns started from now on.
    Mode = 0,
    /// Submissions per doorbell while the host is idle.
    Batch = 1,
    /// Longest delay of a doorbell for an incomplete batch, microseconds.
    FlushUs = 2,
    /// Cap on outstanding teardowns (address spaces).
    CapSpaces = 3,
    /// Cap on outstanding teardown work (pages).
    CapPages = 4,
    /// Longest interrupts-off stretch in `chunked` mode, microseconds.
    ChunkUs = 5,
    /// Longest synchronous wait for the host before giving up, milliseconds.
    SyncTimeoutMs = 6,
    /// Longest throttled wait of `pgd_alloc` before failing it, milliseconds.
    ThrottleTimeoutMs = 7,
    /// Time without an acknowledgement, with teardowns in flight, after which the host
    /// is taken for dead and creation is no longer throttled, milliseconds.
    HostTimeoutMs = 8,
}

impl Knob {
    /// Every setting, in [`TUNABLES`] order.
    pub(crate) const ALL: [Knob; 9] = [
        Knob::Mode,
        Knob::Batch,
        Knob::FlushUs,
        Knob::CapSpaces,
        Knob::CapPages,
        Knob::ChunkUs,
        Knob::SyncTimeoutMs,
        Knob::ThrottleTimeoutMs,
        Knob::HostTimeoutMs,
    ];

    /// Name, limits and default.
    pub(crate) fn info(self) -> &'static Tunable {
        &TUNABLES[self as usize]
    }
}

/// Current settings; each is read once per decision, so a change applies to what starts
/// after it.
pub(crate) struct Settings([AtomicU64; TUNABLES.len()]);

impl Settings {
    fn new() -> Self {
        Settings(TUNABLES.map(|t| AtomicU64::new(t.default)))
    }

    /// The value of `knob`.
    pub(crate) fn get(&self, knob: Knob) -> u64 {
        self.0[knob as usize].load(Relaxed)
    }

    /// Sets `knob`; `EINVAL` outside its limits.
    pub(crate) fn set(&self, knob: Knob, value: u64) -> Result {
        let t = knob.info();
        if !(t.min..=t.max).contains(&value)
            || (matches!(knob, Knob::Mode) && !Mode::from_raw(value).available())
        {
            return Err(EINVAL);
        }
        self.0[knob as usize].store(value, Relaxed);
        Ok(())
    }

    /// The teardown mode.
    pub(crate) fn mode(&self) -> Mode {
        Mode::from_raw(self.get(Knob::Mode))
    }
}

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// Event counters. Updated with relaxed atomics, so they can be read
        /// without the engine lock; each is monotonic.
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
    /// Doorbells rung.
    doorbells,
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
    /// Times the host was declared dead (no acknowledgement for `host_timeout_ms`).
    host_declared_dead,
    /// Completions with a non-Ok status.
    host_errors,
    /// Page directories released without any acknowledgement (logged).
    forced_releases,
    /// Exits handled without the host because the ring was stopped.
    fallback_exits,
    /// `pgd_alloc` calls that waited because outstanding work was at a cap.
    throttle_events,
    /// Total time `pgd_alloc` waited at a cap, microseconds.
    throttle_wait_us,
    /// Throttled `pgd_alloc` calls that failed after `throttle_timeout_ms`.
    throttle_timeouts,
    /// Teardowns started in mode `off` (nothing to do).
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
    /// Synchronous teardowns that went asynchronous (ring full, out of memory).
    sync_fallbacks,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Known to the host (or about to be).
    Live,
    /// DESTROY submitted or queued, not acknowledged.
    Destroying,
    /// The host is done with it; waiting for `pgd_free`.
    Acked,
}

/// A backlog entry's node: reserved when the space is created, so that queueing a
/// request never allocates under the engine lock.
type BacklogSlot = RBTreeNodeReservation<u64, SpaceId>;

/// What the engine knows about one address space.
struct Space {
    tag: u32,
    state: State,
    pages: u64,
    /// The page directory once `pgd_free` handed it over.
    pgd: Option<PageDirectory>,
    /// A request that did not fit in the ring yet, and its key in `Inner::backlog`.
    /// Exactly one of `queued` and `slot` is set.
    queued: Option<(Op, u64)>,
    slot: Option<BacklogSlot>,
    /// Set when the host acknowledges the DESTROY; a synchronous teardown polls it.
    waiter: Option<Arc<AtomicBool>>,
    /// The DESTROY is in the host's hands and holds credits.
    in_flight: bool,
    /// Submission ring index of the DESTROY once written; its completion is valid
    /// only after the host consumed it.
    sq_pos: u32,
    /// The host never heard of this space (its CREATE was still queued when it died).
    unsent: bool,
    /// The CREATE completion arrived; a second one is bogus.
    created: bool,
}

/// DESTROYs handed to the host and not yet acknowledged: what the caps bound.
#[derive(Default)]
struct Credits {
    spaces: u64,
    pages: u64,
    peak_spaces: u64,
    peak_pages: u64,
}

impl Credits {
    /// Whether a DESTROY of `pages` may go to the host now. With nothing in flight one
    /// always may, however large, so no teardown waits forever.
    fn fits(&self, pages: u64, settings: &Settings) -> bool {
        self.spaces == 0
            || (self.spaces < settings.get(Knob::CapSpaces)
                && self.pages.saturating_add(pages) <= settings.get(Knob::CapPages))
    }

    fn take(&mut self, pages: u64) {
        self.spaces += 1;
        self.pages += pages;
        self.peak_spaces = self.peak_spaces.max(self.spaces);
        self.peak_pages = self.peak_pages.max(self.pages);
    }

    fn give(&mut self, pages: u64) {
        self.spaces -= 1;
        self.pages -= pages;
    }
}

/// Ring and tracking state, behind [`Teardown::inner`].
struct Inner {
    sq: SqProducer,
    cq: CqConsumer,
    /// Every tracked address space.
    spaces: RBTree<SpaceId, Space>,
    /// Requests waiting for the ring or for credits, oldest first.
    backlog: RBTree<u64, SpaceId>,
    /// Key of the next backlog entry.
    backlog_next: u64,
    /// Entries in `backlog`.
    backlog_len: u64,
    /// Entries in `spaces`.
    spaces_live: u64,
    outstanding: u64,
    outstanding_pages: u64,
    peak_outstanding: u64,
    peak_outstanding_pages: u64,
    pending_pgds: u64,
    /// `pgd_alloc` calls waiting at a cap.
    throttled: u64,
    credits: Credits,
    /// The ring is not usable: the host broke the protocol, or a reset is under way.
    broken: bool,
    /// A reset request the host has not carried out yet.
    reset: Option<u32>,
    /// Detaching: no new address spaces are tracked.
    closing: bool,
    /// The release log, when the host audits releases.
    log: Option<LogProducer>,
    /// When the host last acknowledged something, or work went to an idle host.
    last_progress: Ktime,
    /// No acknowledgement for `host_timeout_ms` with DESTROYs in flight.
    host_dead: bool,
    /// Most DESTROYs the host said it held unanswered, sampled at each completion
    /// pass: what the credits bound, as the host sees it.
    peak_host_held: u32,
}

impl Inner {
    /// Queues the request `op` of `id` behind the others.
    fn enqueue(&mut self, id: SpaceId, op: Op) {
        let Some(space) = self.spaces.get_mut(&id) else {
            return;
        };
        // By the invariant on `Space::slot` this only fails if already queued.
        let Some(slot) = space.slot.take() else {
            return;
        };
        let key = self.backlog_next;
        self.backlog_next += 1;
        space.queued = Some((op, key));
        self.backlog.insert(slot.into_node(key, id));
        self.backlog_len += 1;
    }

    /// Takes the request of `id` out of the backlog, if one is queued.
    fn dequeue(&mut self, id: SpaceId) -> Option<Op> {
        let space = self.spaces.get_mut(&id)?;
        let (op, key) = space.queued.take()?;
        if let Some(node) = self.backlog.remove_node(&key) {
            space.slot = Some(node.into_reservation());
        }
        self.backlog_len -= 1;
        Some(op)
    }

    /// Stops tracking `id`, keeping the gauges consistent. Dropping the returned
    /// record releases its parked page directory, if any.
    fn untrack(&mut self, id: SpaceId) -> Option<Space> {
        self.dequeue(id);
        let space = self.spaces.remove(&id)?;
        self.spaces_live -= 1;
        if space.state == State::Destroying {
            self.outstanding -= 1;
            self.outstanding_pages -= space.pages;
        }
        if space.pgd.is_some() {
            self.pending_pgds -= 1;
        }
        if space.in_flight {
            self.credits.give(space.pages);
        }
        Some(space)
    }

    fn over_cap(&self, settings: &Settings) -> bool {
        self.outstanding >= settings.get(Knob::CapSpaces)
            || self.outstanding_pages >= settings.get(Knob::CapPages)
    }
}

/// Longest synchronous stretches since the last [`Teardown::reset_peaks`], microseconds.
/// Updated with relaxed `fetch_max` outside the engine lock.
#[derive(Default)]
pub(crate) struct Maxima {
    /// Longest synchronous wait for the host.
    pub(crate) sync_wait_max_us: AtomicU64,
    /// Longest stretch with interrupts off in a synchronous wait.
    pub(crate) irq_off_max_us: AtomicU64,
}

/// Gauges, read under the engine lock.
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
    pub(crate) closing: bool,
    pub(crate) peak_host_held: u32,
}

/// The transport side of the engine: shared memory, doorbell, counters, and the
/// decision when to ring.
///
/// # Locking
///
/// Lock-free: everything here is atomics, shared-memory accesses and MMIO, so it is
/// used from the hooks, the interrupt thread and the flush-deadline timer (softirq)
/// alike, with or without the engine lock held.
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
    /// Hands the unnotified submissions to the host as one batch: rings unless the host
    /// says it is working anyway.
    fn flush(&self) -> bool {
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
    fn ring_now(&self) {
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

/// The teardown engine of one device.
///
/// # Locking
///
/// All ring and tracking state is in `inner`, a spinlock taken from the mm hooks
/// (process context, and atomic or RCU-callback context for `pgd_free`) and from
/// the threaded interrupt handler. It is never taken in hard interrupt context, with
/// interrupts off, or from the timer, and nothing is allocated under it. Doorbells
/// are rung after the lock is dropped. `progress` is notified whenever outstanding
/// work completes; throttled `pgd_alloc` calls wait on it. `settings` and the
/// [`Notifier`] need no lock.
///
/// # Lifetime
///
/// Shared through an `Arc` by the hook registration, the interrupt handler and the
/// debugfs files; the hooks and the interrupt are torn down before the device is
/// unmapped, and the deadline timer is shut down when the engine is dropped.
#[pin_data]
pub(crate) struct Teardown<M: SharedMemory + Send + Sync + 'static, B: Doorbell + 'static> {
    #[pin]
    deadline: Timer<Notifier<M, B>>,
    layout: Layout,
    #[pin]
    inner: SpinLock<Inner>,
    #[pin]
    progress: CondVar,
    /// This driver instance's epoch, the top byte of its tags.
    epoch: u32,
    /// Sequence number of the next tag.
    next_seq: AtomicU32,
    /// Features the guest accepted.
    features: u32,
    /// Acknowledgements counted when the last interrupt was handled; one consumed by a
    /// synchronous waiter before the interrupt thread ran still answers that interrupt.
    irq_acks: AtomicU64,
    pub(crate) settings: Settings,
}

/// Most completions consumed under one hold of the engine lock.
const CQ_PASS: u32 = 32;

/// Logs the first few occurrences of a problem, then every power of two.
fn should_log(count: u64) -> bool {
    count < 8 || count.is_power_of_two()
}

/// A point in wall time, `ms` after `start` (6.12's `Ktime` has no addition).
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

fn elapsed_us(since: Ktime) -> u64 {
    u64::try_from((Ktime::ktime_get() - since).to_ns() / 1000).unwrap_or(0)
}

impl<M: SharedMemory + Send + Sync + 'static, B: Doorbell + 'static> Teardown<M, B> {
    /// Creates the engine, continuing the rings where an earlier instance stopped.
    pub(crate) fn new(shm: M, bell: B, layout: Layout, features: u32) -> impl PinInit<Self, Error> {
        let sq = SqProducer::resume(layout, &shm);
        let cq = CqConsumer::resume(layout, &shm);
        let epoch = wire::guest_next_epoch(&shm);
        let log = (features & wire::FEATURE_RELEASE_LOG != 0)
            .then(|| wire::LogProducer::resume(layout, &shm));
        let notifier = Notifier {
            shm,
            bell,
            unnotified: AtomicU32::new(0),
            always_ring: features & wire::FEATURE_NEED_WAKEUP == 0,
            stats: Stats::default(),
            maxima: Maxima::default(),
        };
        try_pin_init!(Self {
            deadline <- Timer::new(notifier, c_str!("pvmm_flush"), static_lock_class!()),
            layout,
            inner <- new_spinlock!(Inner {
                sq,
                cq,
                spaces: RBTree::new(),
                backlog: RBTree::new(),
                backlog_next: 0,
                backlog_len: 0,
                spaces_live: 0,
                outstanding: 0,
                outstanding_pages: 0,
                peak_outstanding: 0,
                peak_outstanding_pages: 0,
                pending_pgds: 0,
                throttled: 0,
                credits: Credits::default(),
                broken: false,
                reset: None,
                closing: false,
                log,
                last_progress: Ktime::ktime_get(),
                host_dead: false,
                peak_host_held: 0,
            }, "pvmm_teardown"),
            progress <- new_condvar!("pvmm_progress"),
            epoch,
            next_seq: AtomicU32::new(1),
            features,
            irq_acks: AtomicU64::new(0),
            settings: Settings::new(),
        }? Error)
    }

    fn io(&self) -> &Notifier<M, B> {
        self.deadline.handler()
    }

    /// Event counters.
    pub(crate) fn stats(&self) -> &Stats {
        &self.io().stats
    }

    /// Longest synchronous stretches since the last reset.
    pub(crate) fn maxima(&self) -> &Maxima {
        &self.io().maxima
    }

    /// Current gauges.
    pub(crate) fn gauges(&self) -> Gauges {
        let inner = self.inner.lock();
        Gauges {
            spaces_live: inner.spaces_live,
            outstanding: inner.outstanding,
            outstanding_pages: inner.outstanding_pages,
            peak_outstanding: inner.peak_outstanding,
            peak_outstanding_pages: inner.peak_outstanding_pages,
            in_flight: inner.credits.spaces,
            in_flight_pages: inner.credits.pages,
            peak_in_flight: inner.credits.peak_spaces,
            peak_in_flight_pages: inner.credits.peak_pages,
            pgds_pending: inner.pending_pgds,
            backlog: inner.backlog_len,
            throttled: inner.throttled,
            broken: inner.broken,
            resetting: inner.reset.is_some(),
            host_dead: inner.host_dead,
            closing: inner.closing,
            peak_host_held: inner.peak_host_held,
        }
    }

    /// Restarts the peak gauges from the current values and the maxima from zero.
    pub(crate) fn reset_peaks(&self) {
        let mut inner = self.inner.lock();
        inner.peak_outstanding = inner.outstanding;
        inner.peak_outstanding_pages = inner.outstanding_pages;
        inner.credits.peak_spaces = inner.credits.spaces;
        inner.credits.peak_pages = inner.credits.pages;
        inner.peak_host_held = 0;
        drop(inner);
        self.maxima().sync_wait_max_us.store(0, Relaxed);
        self.maxima().irq_off_max_us.store(0, Relaxed);
    }

    fn protocol_error(&self, inner: &mut Inner, err: wire::Error) {
        let n = self.stats().protocol_errors.fetch_add(1, Relaxed);
        if should_log(n) {
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
    fn request_reset(&self, inner: &mut Inner) {
        inner.broken = true;
        if self.features & wire::FEATURE_RESET != 0 && inner.reset.is_none() {
            inner.reset = Some(wire::guest_request_reset(&self.io().shm));
            // Rare enough to ring under the lock; the host may be idle.
            self.io().ring_now();
        }
    }

    /// Finishes a reset once the host acknowledged it: the host holds nothing of ours,
    /// so every parked page directory is released and every record dropped. Returns
    /// whether the reset is done (or none was pending).
    fn poll_reset(&self, inner: &mut Inner) -> bool {
        let shm = &self.io().shm;
        let Some(seq) = inner.reset else {
            return true;
        };
        if !wire::guest_reset_done(shm, seq) {
            return false;
        }
        inner.reset = None;
        self.stats().resets.fetch_add(1, Relaxed);
        let mut released = 0u64;
        loop {
            // Not `while let`: its temporary would borrow the tree for the whole body.
            let Some(id) = inner.spaces.keys().next().copied() else {
                break;
            };
            if let Some(mut space) = inner.untrack(id) {
                if let Some(w) = space.waiter.take() {
                    w.store(true, Publish);
                }
                if let Some(pgd) = space.pgd.take() {
                    self.release(inner, id, space.tag, pgd, Why::Reset);
                    released += 1;
                }
            }
        }
        self.stats().reset_releases.fetch_add(released, Relaxed);
        self.stats().pgds_released.fetch_add(released, Relaxed);
        inner.cq.skip_all(shm);
        inner.sq = SqProducer::resume(self.layout, shm);
        inner.broken = !matches!(inner.sq.space(shm), Ok(n) if n == self.layout.sq_entries);
        inner.host_dead = false;
        inner.last_progress = Ktime::ktime_get();
        if inner.broken {
            pr_err!("host acknowledged a reset but left the ring unusable\n");
        } else {
            pr_info!("host reset; released {released} page directories it had forgotten\n");
        }
        self.progress.notify_all();
        true
    }

    /// Releases a page directory, and reports it to an auditing host. The caller
    /// counts it.
    fn release(&self, inner: &mut Inner, id: SpaceId, tag: u32, pgd: PageDirectory, why: Why) {
        if let Some(log) = inner.log.as_mut() {
            let r = Release {
                space: id,
                tag,
                why,
            };
            if log.push(&self.io().shm, &r).is_err() {
                self.stats().release_log_dropped.fetch_add(1, Relaxed);
            }
        }
        drop(pgd);
    }

    /// Releases the page directory of `id` without an acknowledgement: counted, and
    /// logged at a limited rate by the caller.
    fn release_forced(&self, inner: &mut Inner, id: SpaceId, tag: u32, pgd: PageDirectory) {
        self.stats().forced_releases.fetch_add(1, Relaxed);
        self.release(inner, id, tag, pgd, Why::Forced);
    }

    fn request(space: &Space, id: SpaceId, op: Op) -> Request {
        Request {
            op,
            tag: space.tag,
            space: id,
            pages: if op == Op::Destroy { space.pages } else { 0 },
        }
    }

    /// Accounts for a request that went into the ring.
    fn submitted(&self, inner: &mut Inner, id: SpaceId, op: Op) {
        self.stats().submissions.fetch_add(1, Relaxed);
        if op != Op::Destroy {
            return;
        }
        if let Some(space) = inner.spaces.get_mut(&id) {
            if inner.credits.spaces == 0 {
                // The watchdog measures from when the host was given work.
                inner.last_progress = Ktime::ktime_get();
            }
            space.in_flight = true;
            space.sq_pos = inner.sq.index().wrapping_sub(1);
            inner.credits.take(space.pages);
        }
    }

    /// Writes the request `op` of `id` into the ring unless it must wait: behind
    /// queued requests, for credits, or for a free slot. Returns whether it was written.
    fn submit(&self, inner: &mut Inner, id: SpaceId, op: Op) -> bool {
        if inner.broken {
            return false;
        }
        let Some(space) = inner.spaces.get(&id) else {
            return false;
        };
        // Beyond the credits a DESTROY waits in the backlog; teardown itself goes on.
        let fits = op == Op::Create || inner.credits.fits(space.pages, &self.settings);
        if space.queued.is_some() || inner.backlog_len != 0 || !fits {
            inner.enqueue(id, op);
            return false;
        }
        match inner.sq.push(&self.io().shm, &Self::request(space, id, op)) {
            Ok(()) => {
                self.submitted(inner, id, op);
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
    fn publish(&self, inner: &Inner, n: u32) -> u32 {
        if n != 0 {
            // The wakeup flag is read again when deciding, closer to the doorbell.
            let _ = inner.sq.publish(&self.io().shm);
        }
        n
    }

    /// Notifies the host of `n` published requests: at once when a batch is full,
    /// otherwise by the flush deadline.
    fn notify(&self, n: u32) {
        if n == 0 {
            return;
        }
        let io = self.io();
        let pending = io.unnotified.fetch_add(n, Publish).saturating_add(n);
        if u64::from(pending) >= self.settings.get(Knob::Batch) {
            io.flush();
        } else {
            let us = self.settings.get(Knob::FlushUs);
            let ms = u32::try_from(us.div_ceil(1000)).unwrap_or(u32::MAX);
            self.deadline.arm_within(msecs_to_jiffies(ms).max(1));
        }
    }

    /// Moves queued requests into the ring, oldest first, while it has room and the
    /// oldest fits the credits. Returns how many. Bounded by the ring size.
    fn flush_backlog(&self, inner: &mut Inner) -> u32 {
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
            // FIFO: a DESTROY beyond the credits holds up those behind it, so that
            // none is overtaken for ever.
            if op == Op::Destroy && !inner.credits.fits(space.pages, &self.settings) {
                break;
            }
            match inner.sq.push(&self.io().shm, &Self::request(space, id, op)) {
                Ok(()) => {}
                Err(wire::Error::Full) => break,
                Err(e) => {
                    self.protocol_error(inner, e);
                    break;
                }
            }
            inner.dequeue(id);
            self.submitted(inner, id, op);
            wrote += 1;
        }
        wrote
    }

    /// Handles a DESTROY the host acknowledged (or never needed to see).
    fn destroyed(&self, inner: &mut Inner, id: SpaceId) {
        let Some(space) = inner.spaces.get_mut(&id) else {
            return;
        };
        if let Some(w) = space.waiter.take() {
            w.store(true, Publish);
        }
        if core::mem::take(&mut space.in_flight) {
            inner.credits.give(space.pages);
        }
        if space.pgd.is_some() {
            if let Some(Space {
                tag,
                pgd: Some(pgd),
                ..
            }) = inner.untrack(id)
            {
                self.release(inner, id, tag, pgd, Why::Acked);
                self.stats().pgds_released.fetch_add(1, Relaxed);
            }
        } else {
            space.state = State::Acked;
            let pages = space.pages;
            inner.outstanding -= 1;
            inner.outstanding_pages -= pages;
        }
    }

    /// Starts the host teardown of a live space. Returns whether a request was
    /// written to the ring.
    fn start_destroy(&self, inner: &mut Inner, id: SpaceId, pages: u64) -> bool {
        let Some(space) = inner.spaces.get_mut(&id) else {
            return false;
        };
        space.pages = pages;
        space.state = State::Destroying;
        let cancel = matches!(space.queued, Some((Op::Create, _)));
        if cancel {
            space.unsent = true;
            inner.dequeue(id);
        }
        inner.outstanding += 1;
        inner.outstanding_pages += pages;
        inner.peak_outstanding = inner.peak_outstanding.max(inner.outstanding);
        inner.peak_outstanding_pages = inner.peak_outstanding_pages.max(inner.outstanding_pages);
        self.stats().spaces_destroyed.fetch_add(1, Relaxed);
        if cancel {
            // The CREATE never reached the host: nothing to destroy there.
            self.stats().spaces_acked.fetch_add(1, Relaxed);
            self.destroyed(inner, id);
            return false;
        }
        self.submit(inner, id, Op::Destroy)
    }

    /// Applies one completion; returns whether it matched a request.
    fn complete(&self, inner: &mut Inner, c: Result<Completion, BadEntry>) -> bool {
        self.stats().completions.fetch_add(1, Relaxed);
        let bogus = |why: &dyn core::fmt::Display| {
            let n = self.stats().bad_completions.fetch_add(1, Relaxed);
            if should_log(n) {
                pr_warn!("ignoring bogus completion: {why}\n");
            }
            false
        };
        let c = match c {
            Ok(c) => c,
            Err(e) => return bogus(&e),
        };
        if wire::tag_epoch(c.tag) != self.epoch {
            // Posted for an earlier driver instance that could not reset the host.
            let n = self.stats().stale_completions.fetch_add(1, Relaxed);
            if should_log(n) {
                pr_info!(
                    "ignoring completion of an earlier instance (tag {:#x})\n",
                    c.tag
                );
            }
            return false;
        }
        let expected = match inner.spaces.get(&c.space) {
            Some(s) if s.tag == c.tag => match c.op {
                // Once, and only for a CREATE that left the backlog.
                Op::Create => {
                    !s.created
                        && s.state != State::Acked
                        && !s.unsent
                        && !matches!(s.queued, Some((Op::Create, _)))
                }
                Op::Destroy => {
                    s.state == State::Destroying
                        && s.in_flight
                        && inner.sq.consumed(&self.io().shm, s.sq_pos)
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
        inner.last_progress = Ktime::ktime_get();
        if core::mem::take(&mut inner.host_dead) {
            pr_info!("host acknowledges again; throttling resumes\n");
        }
        if c.status != Status::Ok {
            let n = self.stats().host_errors.fetch_add(1, Relaxed);
            if should_log(n) {
                pr_warn!("host: {:?} of space {:#x}: {:?}\n", c.op, c.space, c.status);
            }
        }
        match c.op {
            Op::Create => {
                if let Some(s) = inner.spaces.get_mut(&c.space) {
                    s.created = true;
                }
                self.stats().creates_acked.fetch_add(1, Relaxed);
            }
            Op::Destroy => {
                self.stats().spaces_acked.fetch_add(1, Relaxed);
                self.destroyed(inner, c.space);
            }
        }
        true
    }

    /// Consumes completions and moves queued requests into the freed slots. Called
    /// from the interrupt thread, after synchronous waits, and polled while detaching.
    ///
    /// The engine lock is held for at most [`CQ_PASS`] entries at a time, so a host
    /// that keeps the ring full cannot keep the hooks out, and for at most
    /// `cq_entries` entries per call in all: whatever a hostile host adds beyond that
    /// waits for the next interrupt, which it asks for by re-arming.
    pub(crate) fn process_completions(&self) {
        let shm = &self.io().shm;
        let mut budget = self.layout.cq_entries;
        let mut valid = false;
        loop {
            let mut guard = self.inner.lock();
            let inner = &mut *guard;
            if !self.poll_reset(inner) || inner.broken {
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
                        // Re-arm, and look again if completions raced with it.
                        if !inner.cq.set_need_irq(shm, true) {
                            break;
                        }
                    }
                    Err(e) => self.protocol_error(inner, e),
                }
            }
            if more {
                inner.cq.release(shm);
            }
            let n = self.flush_backlog(inner);
            let n = self.publish(inner, n);
            if more && budget == 0 {
                // Leave the rest for the interrupt the host raises when it adds more.
                let _ = inner.cq.set_need_irq(shm, true);
            }
            drop(guard);
            self.notify(n);
            if !more || budget == 0 {
                if more {
                    self.stats().completion_passes_cut.fetch_add(1, Relaxed);
                }
                break;
            }
        }
        if valid {
            self.progress.notify_all();
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

    /// Detach phase 1: stops tracking new address spaces and wakes throttled creators.
    pub(crate) fn close(&self) {
        self.inner.lock().closing = true;
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
            self.io().flush();
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
            inner.broken || (inner.outstanding == 0 && this.host_settled(inner))
        })
    }

    /// Detach phase 3: asks the host to forget every object of this guest, and waits
    /// until `deadline` for it to do so. The host's acknowledgement releases every
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
    /// acknowledged, counted and logged, and leaves the ring.
    pub(crate) fn finish(&self) {
        self.process_completions();
        self.deadline.cancel_sync();
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let mut forced = 0u64;
        loop {
            // Not `while let`: its temporary would borrow the tree for the whole body.
            let Some(id) = inner.spaces.keys().next().copied() else {
                break;
            };
            if let Some(Space {
                tag,
                pgd: Some(pgd),
                ..
            }) = inner.untrack(id)
            {
                self.release_forced(inner, id, tag, pgd);
                forced += 1;
            }
        }
        drop(guard);
        self.stats().pgds_released.fetch_add(forced, Relaxed);
        wire::guest_detach(&self.io().shm);
        if forced != 0 {
            pr_warn!("released {forced} page directories the host never acknowledged\n");
        }
    }

    /// Whether the host has taken every submission and gone idle, so that every
    /// completion it will post (CREATEs included) is in the ring already. A host that
    /// never goes idle keeps the drain waiting until its deadline.
    fn host_settled(&self, inner: &Inner) -> bool {
        let shm = &self.io().shm;
        let taken = inner
            .sq
            .space(shm)
            .map_or(true, |free| free == self.layout.sq_entries);
        taken && wire::host_needs_wakeup(shm)
    }

    /// Whether the host has acknowledged nothing for `host_timeout_ms` while it holds
    /// DESTROYs. Such a host is reported once and no longer throttles creation: its
    /// parked page directories stay parked (one page per exited process) until it
    /// answers or the driver detaches, because a host that is only slow may still
    /// read them.
    fn host_is_dead(&self, inner: &mut Inner) -> bool {
        if inner.host_dead {
            return true;
        }
        let limit_ms = i64::try_from(self.settings.get(Knob::HostTimeoutMs)).unwrap_or(i64::MAX);
        if inner.credits.spaces == 0
            || (Ktime::ktime_get() - inner.last_progress).to_ms() < limit_ms
        {
            return false;
        }
        inner.host_dead = true;
        let n = self.stats().host_declared_dead.fetch_add(1, Relaxed);
        if should_log(n) {
            pr_err!(
                "host acknowledged nothing for {limit_ms} ms with {} teardowns in flight; \
                 no longer throttling\n",
                inner.credits.spaces
            );
        }
        self.progress.notify_all();
        true
    }

    /// Waits at the cap before a new address space is created. Fails with `EINTR` when
    /// killed and `ENOMEM` when the host makes no room within `throttle_timeout_ms`.
    /// A host taken for dead ([`Self::host_is_dead`]) throttles nothing.
    fn throttle(&self, guard: &mut Guard<'_, Inner, SpinLockBackend>) -> Result {
        let pass = |this: &Self, inner: &mut Inner| {
            !inner.over_cap(&this.settings)
                || inner.closing
                || inner.broken
                || this.host_is_dead(inner)
        };
        if pass(self, guard) {
            return Ok(());
        }
        self.stats().throttle_events.fetch_add(1, Relaxed);
        let start = Ktime::ktime_get();
        let limit_us = self
            .settings
            .get(Knob::ThrottleTimeoutMs)
            .saturating_mul(1000);
        guard.throttled += 1;
        let result = loop {
            if pass(self, guard) {
                break Ok(());
            }
            let waited = elapsed_us(start);
            if waited >= limit_us {
                self.stats().throttle_timeouts.fetch_add(1, Relaxed);
                break Err(ENOMEM);
            }
            let left_ms = u32::try_from((limit_us - waited).div_ceil(1000)).unwrap_or(u32::MAX);
            // Bounded steps: completions are also polled by the interrupt thread.
            let step = msecs_to_jiffies(left_ms.min(100));
            if let CondVarTimeoutResult::Signal { .. } =
                self.progress.wait_killable_timeout(guard, step)
            {
                break Err(EINTR);
            }
        };
        guard.throttled -= 1;
        self.stats()
            .throttle_wait_us
            .fetch_add(elapsed_us(start), Relaxed);
        result
    }

    /// Rings the host and spins until `waiter` is set or the completion is in the ring,
    /// with interrupts off from the doorbell on, for at most `chunk_ns` at a time, as a
    /// hypercall (with continuations) would. Returns when the wait ended (the
    /// acknowledgement was seen or the wait gave up), read before interrupts were on
    /// again.
    fn spin_for_ack(&self, waiter: &AtomicBool, id: SpaceId, tag: u32, chunk_ns: i64) -> Ktime {
        let start = Ktime::ktime_get();
        let timeout_ns = i64::try_from(
            self.settings
                .get(Knob::SyncTimeoutMs)
                .saturating_mul(1_000_000),
        )
        .unwrap_or(i64::MAX);
        let shm = &self.io().shm;
        let mut first = true;
        let mut watch = wire::CqWatch::new(Op::Destroy, id, tag);
        loop {
            let (done, off_ns, end) = with_local_irqs_disabled(|| {
                let t0 = Ktime::ktime_get();
                if core::mem::take(&mut first) {
                    self.io().ring_now();
                }
                loop {
                    // A bounded read per poll: a host that floods the ring must
                    // not stretch the time between clock reads.
                    let acked = waiter.load(Acquire) || watch.poll(shm, &self.layout, CQ_PASS);
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
            self.maxima().irq_off_max_us.fetch_max(off_us, Relaxed);
            self.stats().irq_off_stretches.fetch_add(1, Relaxed);
            if off_us >= 1000 {
                self.stats().irq_off_long.fetch_add(1, Relaxed);
            }
            if done {
                return end;
            }
            // Between chunks, as a hypercall continuation would: let other tasks
            // run (a no-op where the kernel preempts anyway).
            kernel::task::cond_resched();
            if (end - start).to_ns() >= timeout_ns {
                self.stats().sync_timeouts.fetch_add(1, Relaxed);
                // A host this slow or dead would stall every exit: stop blocking.
                if self.settings.set(Knob::Mode, Mode::Async as u64).is_ok() {
                    let n = self.stats().mode_degraded.fetch_add(1, Relaxed);
                    if should_log(n) {
                        pr_warn!(
                            "host did not acknowledge space {id:#x} in time; switched to async\n"
                        );
                    }
                }
                return end;
            }
        }
    }

    /// A teardown in `sync` or `chunked` mode: one blocking host call.
    fn destroy_sync(&self, id: SpaceId, pages: u64, mode: Mode) {
        let Ok(waiter) = Arc::new(AtomicBool::new(false), GFP_KERNEL) else {
            self.stats().sync_fallbacks.fetch_add(1, Relaxed);
            return self.destroy_async(id, pages);
        };
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let Some(space) = inner.spaces.get_mut(&id) else {
            return;
        };
        space.waiter = Some(waiter.clone());
        let tag = space.tag;
        let wrote = self.start_destroy(inner, id, pages);
        let n = self.publish(inner, u32::from(wrote));
        drop(guard);
        if n == 0 {
            // Queued behind a full ring (or nothing to do): completes asynchronously.
            if !waiter.load(Acquire) {
                self.stats().sync_fallbacks.fetch_add(1, Relaxed);
            }
            return;
        }
        let chunk_ns = match mode {
            Mode::Chunked => i64::try_from(self.settings.get(Knob::ChunkUs).saturating_mul(1000))
                .unwrap_or(i64::MAX),
            _ => i64::MAX,
        };
        let start = Ktime::ktime_get();
        let end = self.spin_for_ack(&waiter, id, tag, chunk_ns);
        let us = u64::try_from((end - start).to_ns() / 1000).unwrap_or(0);
        self.stats().sync_wait_us.fetch_add(us, Relaxed);
        self.maxima().sync_wait_max_us.fetch_max(us, Relaxed);
        // Consume the acknowledgement now rather than at the next interrupt.
        self.process_completions();
    }

    /// A teardown in `async` mode: submit and go on.
    fn destroy_async(&self, id: SpaceId, pages: u64) {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let wrote = self.start_destroy(inner, id, pages);
        let n = self.publish(inner, u32::from(wrote));
        drop(guard);
        self.notify(n);
    }
}

impl<M: SharedMemory + Send + Sync + 'static, B: Doorbell + 'static> MmHooks for Teardown<M, B> {
    fn pgd_alloc(&self, space: &AddressSpace) -> Result {
        if self.settings.mode() == Mode::Off {
            self.stats().spaces_untracked.fetch_add(1, Relaxed);
            return Ok(());
        }
        let id = space.id();
        let record = Space {
            tag: wire::tag(self.epoch, self.next_seq.fetch_add(1, Relaxed)),
            state: State::Live,
            pages: 0,
            pgd: None,
            queued: None,
            slot: Some(BacklogSlot::new(GFP_KERNEL)?),
            waiter: None,
            in_flight: false,
            sq_pos: 0,
            unsent: false,
            created: false,
        };
        let node = RBTreeNode::new(id, record, GFP_KERNEL)?;
        let mut guard = self.inner.lock();
        self.throttle(&mut guard)?;
        let inner = &mut *guard;
        if inner.closing || inner.broken {
            return Ok(());
        }
        if let Some(old) = inner.spaces.get(&id) {
            // Ids are unique while tracked, so this is a driver bug; recover.
            pr_warn!(
                "replacing stale record of space {id:#x} (tag {})\n",
                old.tag
            );
            drop(inner.untrack(id));
        }
        inner.spaces.insert(node);
        inner.spaces_live += 1;
        self.stats().spaces_created.fetch_add(1, Relaxed);
        let wrote = self.submit(inner, id, Op::Create);
        let n = self.publish(inner, u32::from(wrote));
        drop(guard);
        self.notify(n);
        Ok(())
    }

    fn exit_mmap(&self, space: &AddressSpace) {
        let id = space.id();
        let pages = space.rss_pages();
        let mode = self.settings.mode();
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        match inner.spaces.get(&id).map(|s| s.state) {
            Some(State::Live) => {}
            Some(_) => return,
            None => {
                drop(guard);
                let c = if mode == Mode::Off {
                    &self.stats().teardowns_off
                } else {
                    &self.stats().untracked_exits
                };
                c.fetch_add(1, Relaxed);
                return;
            }
        }
        if inner.broken {
            // The host is being reset, which forgets this space too; its page
            // directory waits for that like any other.
            if let Some(s) = inner.spaces.get_mut(&id) {
                s.state = State::Destroying;
                s.pages = pages;
            }
            inner.outstanding += 1;
            inner.outstanding_pages += pages;
            drop(guard);
            self.stats().fallback_exits.fetch_add(1, Relaxed);
            return;
        }
        drop(guard);
        match mode {
            Mode::Sync | Mode::Chunked => {
                let c = if mode == Mode::Sync {
                    &self.stats().teardowns_sync
                } else {
                    &self.stats().teardowns_chunked
                };
                c.fetch_add(1, Relaxed);
                self.destroy_sync(id, pages, mode);
            }
            // A space registered before the switch to `off` still has a host object.
            Mode::Async | Mode::Off => {
                self.stats().teardowns_async.fetch_add(1, Relaxed);
                self.destroy_async(id, pages);
            }
        }
    }

    fn pgd_free(&self, pgd: PageDirectory) {
        let id = pgd.id();
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let Some(mut state) = inner.spaces.get(&id).map(|s| s.state) else {
            // Not tracked: nothing on the host refers to it.
            return drop(pgd);
        };
        let mut n = 0;
        if state == State::Live {
            if inner.broken {
                // Freed without exit_mmap while the ring is stopped: wait for the
                // reset, which forgets the host's object.
                inner.outstanding += 1;
                if let Some(s) = inner.spaces.get_mut(&id) {
                    s.state = State::Destroying;
                }
            } else {
                // Freed without exit_mmap (fork or exec failed after pgd_alloc): the
                // host still has its object, so destroy it now.
                let wrote = self.start_destroy(inner, id, 0);
                n = self.publish(inner, u32::from(wrote));
            }
            state = inner.spaces.get(&id).map_or(State::Acked, |s| s.state);
        }
        match (state, inner.spaces.get_mut(&id)) {
            (State::Destroying, Some(s)) if inner.reset.is_some() || !inner.broken => {
                s.pgd = Some(pgd);
                inner.pending_pgds += 1;
                self.stats().pgds_parked.fetch_add(1, Relaxed);
            }
            (State::Destroying, Some(_)) => {
                // A stopped ring that no reset can restart: nothing will ever
                // acknowledge this space.
                let tag = inner.untrack(id).map_or(0, |s| s.tag);
                self.release_forced(inner, id, tag, pgd);
                self.stats().pgds_returned.fetch_add(1, Relaxed);
                self.stats().pgds_released.fetch_add(1, Relaxed);
                let c = self.stats().forced_releases.load(Relaxed);
                if should_log(c - 1) {
                    pr_warn!("released a page directory the host never acknowledged\n");
                }
            }
            _ => {
                // The host is already done (or never heard of it): release now.
                match inner.untrack(id) {
                    Some(Space { unsent: true, .. }) | None => drop(pgd),
                    Some(Space { tag, .. }) => self.release(inner, id, tag, pgd, Why::Acked),
                }
                self.stats().pgds_returned.fetch_add(1, Relaxed);
                self.stats().pgds_released.fetch_add(1, Relaxed);
            }
        }
        drop(guard);
        self.notify(n);
    }
}
