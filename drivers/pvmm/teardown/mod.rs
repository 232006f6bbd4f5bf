// SPDX-License-Identifier: GPL-2.0

//! The teardown of guest address spaces on the host: tracks them, submits CREATE and
//! DESTROY requests, parks page directories until the host acknowledges, and
//! validates every completion.
//!
//! It is independent of the transport: shared memory and the doorbell are reached
//! through [`SharedMemory`] and [`Doorbell`]. One concept a file:
//!
//! - this file: [`Teardown`], its locked state and the release of page directories;
//! - `submit`: requests into the ring, the backlog, and notifying the host;
//! - `complete`: completions, checked and applied, and the interrupt;
//! - `create`: the wait of a new address space for its CREATE's acknowledgment;
//! - `reset`: protocol errors and the host reset that recovers from them;
//! - `detach`: the detach phases and their [`Deadline`];
//! - `hooks`: the mm hooks and the throttling of creation.

use core::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64,
    Ordering::{Relaxed, Release as Publish},
};
use kernel::{
    c_str,
    mm_hooks::{PageDirectory, SpaceId},
    new_condvar, new_spinlock,
    prelude::*,
    rbtree::RBTree,
    static_lock_class,
    sync::{
        lock::{spinlock::SpinLockBackend, Guard},
        CondVar, SpinLock,
    },
    time::Ktime,
    timer::Timer,
};

use crate::{
    notify::{Doorbell, Notifier},
    settings::Settings,
    space::{Space, State, Tally},
    stats::{count_problem, Gauges, Maxima, Stats},
    wire::{self, CqConsumer, Layout, LogProducer, Op, Release, SharedMemory, SqProducer, Why},
};

mod complete;
mod create;
mod detach;
mod hooks;
mod reset;
mod submit;

pub(crate) use detach::Deadline;

/// Ring and tracking state, behind [`Teardown::inner`].
///
/// # Locking
///
/// Every field is protected by the teardown lock, `Teardown::inner`; the notes say
/// which paths change a field.
struct Inner {
    /// The guest's end of the submission ring. Pushed to by the hooks and the
    /// completion pass, restarted by a reset.
    sq: SqProducer,
    /// The guest's end of the completion ring. Consumed by the completion pass.
    cq: CqConsumer,
    /// Every tracked address space. Inserted by `pgd_alloc`, removed by `pgd_free`,
    /// completions, a reset and detach.
    spaces: RBTree<SpaceId, Space>,
    /// Requests waiting for the ring or for room in flight, oldest first.
    backlog: RBTree<u64, SpaceId>,
    /// Key of the next backlog entry.
    backlog_next: u64,
    /// Entries in `backlog`.
    backlog_len: u64,
    /// Entries in `spaces`.
    spaces_live: u64,
    /// Every DESTROY started and not acknowledged, in flight or in the backlog: at a
    /// cap, creation is throttled.
    outstanding: Tally,
    /// Page directories parked in `spaces` until the host acknowledges.
    pgds_pending: u64,
    /// `pgd_alloc` calls waiting at a cap.
    throttled: u64,
    /// `pgd_alloc` calls waiting for the host to acknowledge their CREATE.
    creating: u64,
    /// DESTROYs handed to the host and not yet acknowledged: what the caps bound.
    in_flight: Tally,
    /// The ring is not usable: the host broke the protocol, or a reset is under way.
    broken: bool,
    /// A reset request the host has not carried out yet.
    reset: Option<u32>,
    /// New address spaces are tracked. Cleared once, by detach phase 1.
    hooks_active: bool,
    /// The release log, when the host audits releases.
    log: Option<LogProducer>,
    /// When the host last acknowledged something, or work went to an idle host.
    last_progress: Ktime,
    /// No acknowledgment for `host_timeout_ms` with DESTROYs in flight.
    host_dead: bool,
    /// Most DESTROYs the host said it held unanswered, sampled at each completion
    /// pass: what `in_flight` bounds, as the host sees it.
    peak_host_held: u32,
    /// A fatal signal cut a detach wait short: what the host never acknowledged is
    /// left unreleased rather than released early. Set by detach phases 2 and 3.
    detach_interrupted: bool,
}

impl Inner {
    /// Queues the request `op` of `id` behind the others.
    fn enqueue(&mut self, id: SpaceId, op: Op) {
        let Some(space) = self.spaces.get_mut(&id) else {
            return;
        };
        if queue(&mut self.backlog, &mut self.backlog_next, space, id, op) {
            self.backlog_len += 1;
        }
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
            self.outstanding.give(space.pages);
        }
        if space.pgd.is_some() {
            self.pgds_pending -= 1;
        }
        if space.in_flight {
            self.in_flight.give(space.pages);
        }
        Some(space)
    }

    /// Stops tracking every space at once, keeping the gauges consistent. The records
    /// are moved out, to be released after the lock is dropped.
    fn untrack_all(&mut self) -> Untracked {
        for s in self.spaces.values() {
            if s.state == State::Destroying {
                self.outstanding.give(s.pages);
            }
            if s.in_flight {
                self.in_flight.give(s.pages);
            }
        }
        self.spaces_live = 0;
        self.pgds_pending = 0;
        self.backlog_len = 0;
        Untracked {
            spaces: core::mem::take(&mut self.spaces),
            backlog: core::mem::take(&mut self.backlog),
        }
    }
}

/// Queues the request `op` of `space`, whose id is `id`, at the end of `backlog`,
/// whose next key is `next`. Returns whether it was queued: by the invariant on
/// `Space::slot`, it is unless already queued.
fn queue(
    backlog: &mut RBTree<u64, SpaceId>,
    next: &mut u64,
    space: &mut Space,
    id: SpaceId,
    op: Op,
) -> bool {
    let Some(slot) = space.slot.take() else {
        return false;
    };
    space.queued = Some((op, *next));
    backlog.insert(slot.into_node(*next, id));
    *next += 1;
    true
}

/// Records no longer tracked, moved out of [`Inner`] under the lock so that their
/// page directories are released after it is dropped: `pgd_free` spins on that lock
/// with preemption off.
///
/// A plain value owned by the thread that untracked them; no lock.
struct Untracked {
    spaces: RBTree<SpaceId, Space>,
    /// The backlog nodes of those records, freed with them.
    backlog: RBTree<u64, SpaceId>,
}

/// The teardown of one device's address spaces on its host.
///
/// # Locking
///
/// All ring and tracking state is in `inner`, a spinlock taken from the mm hooks
/// (process context, and atomic or RCU-callback context for `pgd_free`) and from
/// the threaded interrupt handler. It is never taken in hard interrupt context, with
/// interrupts off, or from the timer, and nothing is allocated under it. Doorbells
/// are rung after the lock is dropped. `progress` is notified whenever outstanding
/// work completes; throttled `pgd_alloc` calls wait on it. Every other field needs
/// no lock, as its note says.
///
/// # Lifetime
///
/// Shared through an `Arc` by the hook registration, the interrupt handler, the
/// debugfs files and, while it is armed, the timer (the flush deadline and, while
/// work is outstanding, the poll); the hooks and the interrupt are torn down before
/// the device is unmapped, and the timer is cancelled when detaching.
#[pin_data]
pub(crate) struct Teardown<M: SharedMemory + Send + Sync + 'static, B: Doorbell + 'static> {
    /// The flush deadline of an incomplete batch, armed by the hooks, and the poll
    /// while work is outstanding, armed by the hooks and by itself. No lock.
    #[pin]
    deadline: Timer<Self>,
    /// Shared memory, doorbell and batching. No lock.
    notifier: Notifier<M, B>,
    /// Event counters. No lock (atomics).
    stats: Stats,
    /// Longest synchronous stretches. No lock (atomics).
    maxima: Maxima,
    /// Fixed at attach. No lock.
    layout: Layout,
    /// The teardown lock and the state it protects.
    #[pin]
    inner: SpinLock<Inner>,
    /// Waited on with `inner` held.
    #[pin]
    progress: CondVar,
    /// This driver instance's epoch, the top byte of its tags. Fixed at attach.
    epoch: u32,
    /// Sequence number of the next tag. No lock.
    next_seq: AtomicU32,
    /// Features the guest accepted. Fixed at attach.
    features: u32,
    /// Work is outstanding, so the flush timer also polls for completions that no
    /// interrupt announced. Written with `inner` held, read without.
    busy: AtomicBool,
    /// Completion passes cut in a row; a few are followed at once by another pass,
    /// the rest wait for the poll. No lock (a hint).
    cuts: AtomicU32,
    /// Acknowledgments counted when the last interrupt was handled; one consumed by a
    /// synchronous waiter before the interrupt thread ran still answers that interrupt.
    /// Only the (oneshot) interrupt thread uses it.
    irq_acks: AtomicU64,
    /// No lock; the driver's are the module parameters.
    pub(crate) settings: &'static Settings,
}

/// `Teardown::inner`, locked.
type InnerGuard<'a> = Guard<'a, Inner, SpinLockBackend>;

impl<M: SharedMemory + Send + Sync + 'static, B: Doorbell + 'static> Teardown<M, B> {
    /// Creates the teardown of a device, continuing the rings where an earlier
    /// instance stopped.
    pub(crate) fn new(
        shm: M,
        bell: B,
        layout: Layout,
        features: u32,
        settings: &'static Settings,
    ) -> impl PinInit<Self, Error> {
        let sq = SqProducer::resume(layout, &shm);
        let cq = CqConsumer::resume(layout, &shm);
        let epoch = wire::guest_next_epoch(&shm);
        let log = (features & wire::FEATURE_RELEASE_LOG != 0)
            .then(|| wire::LogProducer::resume(layout, &shm));
        let notifier = Notifier::new(shm, bell, features);
        try_pin_init!(Self {
            deadline <- Timer::new(c_str!("pvmm_flush"), static_lock_class!()),
            notifier,
            stats: Stats::default(),
            maxima: Maxima::default(),
            layout,
            inner <- new_spinlock!(Inner {
                sq,
                cq,
                spaces: RBTree::new(),
                backlog: RBTree::new(),
                backlog_next: 0,
                backlog_len: 0,
                spaces_live: 0,
                outstanding: Tally::default(),
                pgds_pending: 0,
                throttled: 0,
                creating: 0,
                in_flight: Tally::default(),
                broken: false,
                reset: None,
                hooks_active: true,
                log,
                last_progress: Ktime::ktime_get(),
                host_dead: false,
                peak_host_held: 0,
                detach_interrupted: false,
            }, "pvmm_teardown"),
            progress <- new_condvar!("pvmm_progress"),
            epoch,
            next_seq: AtomicU32::new(1),
            features,
            busy: AtomicBool::new(false),
            cuts: AtomicU32::new(0),
            irq_acks: AtomicU64::new(0),
            settings,
        }? Error)
    }

    /// Event counters.
    pub(crate) fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Longest synchronous stretches since the last reset.
    pub(crate) fn maxima(&self) -> &Maxima {
        &self.maxima
    }

    /// Current gauges.
    pub(crate) fn gauges(&self) -> Gauges {
        let inner = self.inner.lock();
        Gauges {
            spaces_live: inner.spaces_live,
            outstanding: inner.outstanding.spaces,
            outstanding_pages: inner.outstanding.pages,
            peak_outstanding: inner.outstanding.peak_spaces,
            peak_outstanding_pages: inner.outstanding.peak_pages,
            in_flight: inner.in_flight.spaces,
            in_flight_pages: inner.in_flight.pages,
            peak_in_flight: inner.in_flight.peak_spaces,
            peak_in_flight_pages: inner.in_flight.peak_pages,
            pgds_pending: inner.pgds_pending,
            backlog: inner.backlog_len,
            throttled: inner.throttled,
            broken: inner.broken,
            resetting: inner.reset.is_some(),
            host_dead: inner.host_dead,
            hooks_active: inner.hooks_active,
            peak_host_held: inner.peak_host_held,
            host_rejected: wire::host_rejected(self.notifier.shm()),
        }
    }

    /// Restarts the peak gauges from the current values and the maxima from zero.
    pub(crate) fn reset_peaks(&self) {
        let mut inner = self.inner.lock();
        inner.outstanding.reset_peaks();
        inner.in_flight.reset_peaks();
        inner.peak_host_held = 0;
        drop(inner);
        self.maxima().sync_wait_max_us.store(0, Relaxed);
        self.maxima().irq_off_max_us.store(0, Relaxed);
        self.maxima().create_wait_max_us.store(0, Relaxed);
    }

    /// Notes whether work is outstanding, for the poll; with `inner` held.
    fn note_busy(&self, inner: &Inner) {
        self.busy.store(inner.outstanding.spaces != 0, Relaxed);
    }

    /// Reports a release to an auditing host.
    fn log_release(&self, inner: &mut Inner, id: SpaceId, tag: u32, why: Why) {
        if let Some(log) = inner.log.as_mut() {
            let r = Release {
                space: id,
                tag,
                why,
            };
            if log.push(self.notifier.shm(), &r).is_err() {
                self.stats().release_log_dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Releases a page directory, counts it, and reports it to an auditing host.
    fn release(&self, inner: &mut Inner, id: SpaceId, tag: u32, pgd: PageDirectory, why: Why) {
        self.log_release(inner, id, tag, why);
        drop(pgd);
        self.stats().pgds_released.fetch_add(1, Relaxed);
    }

    /// Releases the parked page directories of `gone` as `why`, or leaks them, and
    /// wakes their synchronous waiters. The teardown lock is taken only to report each
    /// release to an auditing host. Returns how many page directories there were, and
    /// how many of the spaces still have an object on the host (live, CREATE sent).
    fn release_untracked(&self, gone: Untracked, why: Why, leak: bool) -> (u64, u64) {
        let Untracked {
            mut spaces,
            backlog,
        } = gone;
        drop(backlog);
        let (mut pgds, mut live) = (0, 0);
        while let Some(cursor) = spaces.cursor_front() {
            let (_, node) = cursor.remove_current();
            let (id, mut space) = node.to_key_value();
            if let Some(w) = space.waiter.take() {
                w.store(true, Publish);
            }
            if space.state == State::Live && !matches!(space.queued, Some((Op::Create, _))) {
                live += 1;
            }
            let Some(pgd) = space.pgd.take() else {
                continue;
            };
            pgds += 1;
            if leak {
                // Freed early it could still be read by the host: lost instead.
                core::mem::forget(pgd);
                self.stats().pgds_leaked.fetch_add(1, Relaxed);
                continue;
            }
            if self.features & wire::FEATURE_RELEASE_LOG != 0 {
                self.log_release(&mut self.inner.lock(), id, space.tag, why);
            }
            drop(pgd);
            self.stats().pgds_released.fetch_add(1, Relaxed);
        }
        (pgds, live)
    }

    /// Releases the page directory of `id` without an acknowledgment, counted.
    /// Returns whether the caller should log it (at a limited rate).
    fn release_forced(&self, inner: &mut Inner, id: SpaceId, tag: u32, pgd: PageDirectory) -> bool {
        let log = count_problem(&self.stats().forced_releases);
        self.release(inner, id, tag, pgd, Why::Forced);
        log
    }
}
