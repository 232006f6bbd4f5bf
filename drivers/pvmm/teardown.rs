// SPDX-License-Identifier: GPL-2.0

//! The teardown of guest address spaces on the host: tracks them, submits CREATE and
//! DESTROY requests, parks page directories until the host acknowledges, and
//! validates every completion.
//!
//! It is independent of the transport: shared memory and the doorbell are reached
//! through [`SharedMemory`] and [`Doorbell`].

use core::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64,
    Ordering::{Acquire, Relaxed, Release as Publish},
};
use kernel::{
    c_str,
    mm_hooks::{AddressSpace, MmHooks, PageDirectory, SpaceId},
    new_condvar, new_spinlock,
    prelude::*,
    rbtree::{RBTree, RBTreeNode},
    static_lock_class,
    sync::{
        lock::{spinlock::SpinLockBackend, Guard},
        Arc, ArcBorrow, CondVar, CondVarTimeoutResult, SpinLock,
    },
    time::{msecs_to_jiffies, Ktime},
    timer::{Timer, TimerCallback},
};

use crate::{
    notify::{Doorbell, Notifier, Pending},
    settings::{Mode, Setting, Settings},
    space::{Space, State, Tally},
    stats::{count_problem, Gauges, Maxima, Stats},
    sync::{self, Awaited, CQ_PASS},
    wire::{
        self, BadEntry, Completion, CqConsumer, Layout, LogProducer, Op, Release, SharedMemory,
        SqProducer, Status, Why,
    },
};

/// How many driver instances back a completion's epoch may be for it to count as
/// stale rather than bogus: a reload that could not reset the host leaves them.
const STALE_EPOCHS: u32 = 8;

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

    /// Stops tracking the space with the lowest id, if any is tracked.
    fn untrack_first(&mut self) -> Option<(SpaceId, Space)> {
        let id = self.spaces.keys().next().copied()?;
        self.untrack(id).map(|space| (id, space))
    }
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
/// debugfs files and, while it is armed, the flush-deadline timer; the hooks and the
/// interrupt are torn down before the device is unmapped, and the timer is cancelled
/// when detaching.
#[pin_data]
pub(crate) struct Teardown<M: SharedMemory + Send + Sync + 'static, B: Doorbell + 'static> {
    /// The flush deadline of an incomplete batch, armed by the hooks. No lock.
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
    /// Acknowledgments counted when the last interrupt was handled; one consumed by a
    /// synchronous waiter before the interrupt thread ran still answers that interrupt.
    /// Only the (oneshot) interrupt thread uses it.
    irq_acks: AtomicU64,
    /// No lock; the driver's are the module parameters.
    pub(crate) settings: &'static Settings,
}

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

fn elapsed_us(since: Ktime) -> u64 {
    u64::try_from((Ktime::ktime_get() - since).to_ns() / 1000).unwrap_or(0)
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
                in_flight: Tally::default(),
                broken: false,
                reset: None,
                hooks_active: true,
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
    }

    /// Stops the ring after the host broke the protocol with `err`, and asks for a
    /// reset.
    fn protocol_error(&self, inner: &mut Inner, err: wire::Error) {
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
    fn request_reset(&self, inner: &mut Inner) {
        inner.broken = true;
        if self.features & wire::FEATURE_RESET != 0 && inner.reset.is_none() {
            inner.reset = Some(wire::guest_request_reset(self.notifier.shm()));
            // Rare enough to ring under the lock; the host may be idle.
            self.notifier.ring(&self.stats);
        }
    }

    /// Finishes a reset once the host acknowledged it: the host holds nothing of ours,
    /// so every parked page directory is released and every record dropped. Returns
    /// whether the reset is done (or none was pending).
    fn poll_reset(&self, inner: &mut Inner) -> bool {
        let shm = self.notifier.shm();
        let Some(seq) = inner.reset else {
            return true;
        };
        if !wire::guest_reset_done(shm, seq) {
            return false;
        }
        inner.reset = None;
        self.stats().resets.fetch_add(1, Relaxed);
        let mut released = 0u64;
        while let Some((id, mut space)) = inner.untrack_first() {
            if let Some(w) = space.waiter.take() {
                w.store(true, Publish);
            }
            if let Some(pgd) = space.pgd.take() {
                self.release(inner, id, space.tag, pgd, Why::Reset);
                released += 1;
            }
        }
        self.stats().reset_releases.fetch_add(released, Relaxed);
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

    /// Releases a page directory, counts it, and reports it to an auditing host.
    fn release(&self, inner: &mut Inner, id: SpaceId, tag: u32, pgd: PageDirectory, why: Why) {
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
        drop(pgd);
        self.stats().pgds_released.fetch_add(1, Relaxed);
    }

    /// Releases the page directory of `id` without an acknowledgment, counted.
    /// Returns whether the caller should log it (at a limited rate).
    fn release_forced(&self, inner: &mut Inner, id: SpaceId, tag: u32, pgd: PageDirectory) -> bool {
        let log = count_problem(&self.stats().forced_releases);
        self.release(inner, id, tag, pgd, Why::Forced);
        log
    }

    /// Accounts for a request that went into the ring.
    fn count_submission(&self, inner: &mut Inner, id: SpaceId, op: Op) {
        self.stats().submissions.fetch_add(1, Relaxed);
        if op != Op::Destroy {
            return;
        }
        if let Some(space) = inner.spaces.get_mut(&id) {
            if inner.in_flight.spaces == 0 {
                // The watchdog measures from when the host was given work.
                inner.last_progress = Ktime::ktime_get();
            }
            space.in_flight = true;
            space.sq_pos = inner.sq.index().wrapping_sub(1);
            inner.in_flight.take(space.pages);
        }
    }

    /// Writes the request `op` of `id` into the ring unless it must wait: behind
    /// queued requests, for room in flight, or for a free slot. Returns whether it was
    /// written.
    fn submit(&self, inner: &mut Inner, id: SpaceId, op: Op) -> bool {
        if inner.broken {
            return false;
        }
        let Some(space) = inner.spaces.get(&id) else {
            return false;
        };
        // Beyond the caps in flight a DESTROY waits in the backlog; teardown itself
        // goes on.
        let fits = op == Op::Create || inner.in_flight.fits(space.pages, self.settings);
        if space.queued.is_some() || inner.backlog_len != 0 || !fits {
            inner.enqueue(id, op);
            return false;
        }
        match inner.sq.push(self.notifier.shm(), &space.request(id, op)) {
            Ok(()) => {
                self.count_submission(inner, id, op);
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
    fn publish(&self, inner: &Inner, n: u32) {
        if n != 0 {
            // The wakeup flag is read again when deciding, closer to the doorbell.
            let _ = inner.sq.publish(self.notifier.shm());
        }
    }

    /// Notifies the host of `n` published requests: at once when a batch is full,
    /// otherwise by the flush deadline, whose timer keeps a reference from `this` while
    /// it is armed.
    fn notify(this: ArcBorrow<'_, Self>, n: u32) {
        if let Pending::Defer(us) = this.notifier.notify(this.settings, &this.stats, n) {
            let ms = u32::try_from(us.div_ceil(1000)).unwrap_or(u32::MAX);
            Timer::arm_within(this, msecs_to_jiffies(ms).max(1));
        }
    }

    /// Notifies the host of `n` published requests now: for requests moved out of the
    /// backlog, one batch that needs no deadline, since the host has just been busy.
    fn notify_now(&self, n: u32) {
        if let Pending::Defer(_) = self.notifier.notify(self.settings, &self.stats, n) {
            self.notifier.flush(&self.stats);
        }
    }

    /// Publishes `n` written requests, drops the teardown lock and notifies the host.
    fn publish_and_notify(this: ArcBorrow<'_, Self>, guard: InnerGuard<'_>, n: u32) {
        this.publish(&guard, n);
        drop(guard);
        Self::notify(this, n);
    }

    /// Moves queued requests into the ring, oldest first, while it has room and the
    /// oldest fits the caps in flight. Returns how many. Bounded by the ring size.
    fn submit_backlog(&self, inner: &mut Inner) -> u32 {
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
            // FIFO: a DESTROY beyond the caps holds up those behind it, so that
            // none is overtaken for ever.
            if op == Op::Destroy && !inner.in_flight.fits(space.pages, self.settings) {
                break;
            }
            match inner.sq.push(self.notifier.shm(), &space.request(id, op)) {
                Ok(()) => {}
                Err(wire::Error::Full) => break,
                Err(e) => {
                    self.protocol_error(inner, e);
                    break;
                }
            }
            inner.dequeue(id);
            self.count_submission(inner, id, op);
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
            inner.in_flight.give(space.pages);
        }
        if space.pgd.is_some() {
            if let Some(Space {
                tag,
                pgd: Some(pgd),
                ..
            }) = inner.untrack(id)
            {
                self.release(inner, id, tag, pgd, Why::Acked);
            }
        } else {
            space.state = State::Acked;
            inner.outstanding.give(space.pages);
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
        inner.outstanding.take(pages);
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
            if count_problem(&self.stats().bad_completions) {
                pr_warn!("ignoring bogus completion: {why}\n");
            }
            false
        };
        let c = match c {
            Ok(c) => c,
            Err(e) => return bogus(&e),
        };
        let age = self.epoch.wrapping_sub(wire::tag_epoch(c.tag)) & 0xff;
        if (1..=STALE_EPOCHS).contains(&age) {
            // Posted for a recent driver instance that could not reset the host.
            if count_problem(&self.stats().stale_completions) {
                pr_info!(
                    "ignoring completion of an earlier instance (tag {:#x})\n",
                    c.tag
                );
            }
            return false;
        }
        if age != 0 {
            return bogus(&format_args!(
                "completion with tag {:#x} from no instance",
                c.tag
            ));
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
                        && inner.sq.consumed(self.notifier.shm(), s.sq_pos)
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
        if c.status != Status::Ok && count_problem(&self.stats().host_errors) {
            pr_warn!("host: {:?} of space {:#x}: {:?}\n", c.op, c.space, c.status);
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
    /// The teardown lock is held for at most [`CQ_PASS`] entries at a time, so a host
    /// that keeps the ring full cannot keep the hooks out, and for at most
    /// `cq_entries` entries per call in all: whatever a hostile host adds beyond that
    /// waits for the next interrupt, which it asks for by re-arming.
    pub(crate) fn process_completions(&self) {
        let shm = self.notifier.shm();
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
            let n = self.submit_backlog(inner);
            self.publish(inner, n);
            if more && budget == 0 {
                // Leave the rest for the interrupt the host raises when it adds more.
                let _ = inner.cq.set_need_irq(shm, true);
            }
            drop(guard);
            self.notify_now(n);
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
    /// acknowledged, counted and logged, and leaves the ring.
    pub(crate) fn finish(&self) {
        self.process_completions();
        Timer::cancel_sync(self);
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let mut forced = 0u64;
        while let Some((id, space)) = inner.untrack_first() {
            if let Space {
                tag,
                pgd: Some(pgd),
                ..
            } = space
            {
                self.release_forced(inner, id, tag, pgd);
                forced += 1;
            }
        }
        drop(guard);
        wire::guest_detach(self.notifier.shm());
        if forced != 0 {
            pr_warn!("released {forced} page directories the host never acknowledged\n");
        }
    }

    /// Whether the host has taken every submission and gone idle, so that every
    /// completion it will post (CREATEs included) is in the ring already. A host that
    /// never goes idle keeps the drain waiting until its deadline.
    fn host_settled(&self, inner: &Inner) -> bool {
        let shm = self.notifier.shm();
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
        let limit_ms = i64::try_from(self.settings.get(Setting::HostTimeoutMs)).unwrap_or(i64::MAX);
        if inner.in_flight.spaces == 0
            || (Ktime::ktime_get() - inner.last_progress).to_ms() < limit_ms
        {
            return false;
        }
        inner.host_dead = true;
        if count_problem(&self.stats().host_declared_dead) {
            pr_err!(
                "host acknowledged nothing for {limit_ms} ms with {} teardowns in flight; \
                 no longer throttling\n",
                inner.in_flight.spaces
            );
        }
        self.progress.notify_all();
        true
    }

    /// Waits at the cap before a new address space is created. Fails with `EINTR` when
    /// killed and `ENOMEM` when the host makes no room within `throttle_timeout_ms`.
    /// A host taken for dead ([`Self::host_is_dead`]) throttles nothing.
    fn throttle(&self, guard: &mut InnerGuard<'_>) -> Result {
        let pass = |this: &Self, inner: &mut Inner| {
            !inner.outstanding.at_cap(this.settings)
                || !inner.hooks_active
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
            .get(Setting::ThrottleTimeoutMs)
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
}

impl<M: SharedMemory + Send + Sync + 'static, B: Doorbell + 'static> MmHooks for Teardown<M, B> {
    fn pgd_alloc(this: ArcBorrow<'_, Self>, space: &AddressSpace) -> Result {
        if this.settings.mode() == Mode::Off {
            this.stats().spaces_untracked.fetch_add(1, Relaxed);
            return Ok(());
        }
        let id = space.id();
        let record = Space::new(wire::tag(this.epoch, this.next_seq.fetch_add(1, Relaxed)))?;
        let node = RBTreeNode::new(id, record, GFP_KERNEL)?;
        let mut guard = this.inner.lock();
        this.throttle(&mut guard)?;
        let inner = &mut *guard;
        if !inner.hooks_active || inner.broken {
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
        this.stats().spaces_created.fetch_add(1, Relaxed);
        let n = u32::from(this.submit(inner, id, Op::Create));
        Self::publish_and_notify(this, guard, n);
        Ok(())
    }

    fn exit_mmap(this: ArcBorrow<'_, Self>, space: &AddressSpace) {
        let id = space.id();
        let pages = space.rss_pages();
        let mode = this.settings.mode();
        let blocking = matches!(mode, Mode::Sync | Mode::Chunked);
        // A blocking teardown's flag, allocated before the lock, under which nothing is
        // allocated. Without it the teardown goes asynchronous.
        let waiter = if blocking {
            Arc::new(AtomicBool::new(false), GFP_KERNEL).ok()
        } else {
            None
        };
        let mut guard = this.inner.lock();
        let inner = &mut *guard;
        let Some(s) = inner.spaces.get_mut(&id) else {
            drop(guard);
            let c = if mode == Mode::Off {
                &this.stats().teardowns_off
            } else {
                &this.stats().untracked_exits
            };
            c.fetch_add(1, Relaxed);
            return;
        };
        if s.state != State::Live {
            return;
        }
        if inner.broken {
            // The host is being reset, which forgets this space too; its page
            // directory waits for that like any other.
            s.state = State::Destroying;
            s.pages = pages;
            inner.outstanding.add(pages);
            drop(guard);
            this.stats().fallback_exits.fetch_add(1, Relaxed);
            return;
        }
        let c = match mode {
            Mode::Sync => &this.stats().teardowns_sync,
            Mode::Chunked => &this.stats().teardowns_chunked,
            // A space registered before the switch to `off` still has a host object,
            // which is destroyed as in `async`.
            Mode::Off => &this.stats().teardowns_off,
            Mode::Async => &this.stats().teardowns_async,
        };
        c.fetch_add(1, Relaxed);
        let tag = s.tag;
        match &waiter {
            Some(w) => s.waiter = Some(w.clone()),
            None if blocking => {
                this.stats().sync_fallbacks.fetch_add(1, Relaxed);
            }
            None => {}
        }
        let n = u32::from(this.start_destroy(inner, id, pages));
        let Some(waiter) = waiter else {
            return Self::publish_and_notify(this, guard, n);
        };
        // The blocking call rings itself, and must not spin under the lock.
        this.publish(inner, n);
        drop(guard);
        if n == 0 {
            // Queued behind a full ring (or nothing to do): completes asynchronously.
            if !waiter.load(Acquire) {
                this.stats().sync_fallbacks.fetch_add(1, Relaxed);
            }
            return;
        }
        sync::wait_for_ack(
            &this.notifier,
            &this.stats,
            &this.maxima,
            this.settings,
            &this.layout,
            Awaited {
                waiter: &waiter,
                id,
                tag,
            },
            mode,
        );
        // Consume the acknowledgment now rather than at the next interrupt.
        this.process_completions();
    }

    fn pgd_free(this: ArcBorrow<'_, Self>, pgd: PageDirectory) {
        let id = pgd.id();
        let mut guard = this.inner.lock();
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
                if let Some(s) = inner.spaces.get_mut(&id) {
                    s.state = State::Destroying;
                    // A live space's pages are 0: only exits set them.
                    inner.outstanding.add(s.pages);
                }
            } else {
                // Freed without exit_mmap (fork or exec failed after pgd_alloc): the
                // host still has its object, so destroy it now.
                n = u32::from(this.start_destroy(inner, id, 0));
            }
            state = inner.spaces.get(&id).map_or(State::Acked, |s| s.state);
        }
        match (state, inner.spaces.get_mut(&id)) {
            (State::Destroying, Some(s)) if inner.reset.is_some() || !inner.broken => {
                s.pgd = Some(pgd);
                inner.pgds_pending += 1;
                this.stats().pgds_parked.fetch_add(1, Relaxed);
            }
            (State::Destroying, Some(_)) => {
                // A stopped ring that no reset can restart: nothing will ever
                // acknowledge this space.
                let tag = inner.untrack(id).map_or(0, |s| s.tag);
                if this.release_forced(inner, id, tag, pgd) {
                    pr_warn!("released a page directory the host never acknowledged\n");
                }
                this.stats().pgds_returned.fetch_add(1, Relaxed);
            }
            _ => {
                // The host is already done (or never heard of it): release now.
                match inner.untrack(id) {
                    Some(Space {
                        tag, unsent: false, ..
                    }) => this.release(inner, id, tag, pgd, Why::Acked),
                    _ => {
                        drop(pgd);
                        this.stats().pgds_released.fetch_add(1, Relaxed);
                    }
                }
                this.stats().pgds_returned.fetch_add(1, Relaxed);
            }
        }
        Self::publish_and_notify(this, guard, n);
    }
}

impl<M: SharedMemory + Send + Sync + 'static, B: Doorbell + 'static> TimerCallback
    for Teardown<M, B>
{
    /// The flush deadline passed: flushes the incomplete batch.
    fn run(this: Arc<Self>) {
        if this.notifier.flush(&this.stats) {
            this.stats.deadline_flushes.fetch_add(1, Relaxed);
        }
    }
}

kernel::impl_has_timer! {
    impl{M: SharedMemory + Send + Sync + 'static, B: Doorbell + 'static}
        HasTimer<Self> for Teardown<M, B> { self.deadline }
}
