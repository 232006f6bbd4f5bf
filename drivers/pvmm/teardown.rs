// SPDX-License-Identifier: GPL-2.0

//! The teardown engine: tracks guest address spaces, submits CREATE and DESTROY
//! requests to the host, parks page directories until the host acknowledges, and
//! validates every completion.
//!
//! It is independent of the transport: shared memory and the doorbell are reached
//! through [`SharedMemory`] and [`Doorbell`].

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use kernel::{
    mm_hooks::{AddressSpace, MmHooks, PageDirectory, SpaceId},
    new_condvar, new_spinlock,
    prelude::*,
    rbtree::{RBTree, RBTreeNode},
    sync::{CondVar, SpinLock},
    time::msecs_to_jiffies,
};

use crate::wire::{
    self, BadEntry, Completion, CqConsumer, Layout, Op, Request, SharedMemory, SqProducer, Status,
};

/// Notifies the host that submissions are waiting.
pub(crate) trait Doorbell: Send + Sync {
    /// Rings the host. May be called in atomic context.
    fn ring(&self);
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
    /// DESTROY requests submitted.
    spaces_destroyed,
    /// DESTROY completions accepted.
    spaces_acked,
    /// CREATE completions accepted.
    creates_acked,
    /// Page directories taken over at `pgd_free`.
    pgds_parked,
    /// Parked page directories released.
    pgds_released,
    /// Exits of address spaces created before the driver attached.
    untracked_exits,
    /// Entries written to the submission ring.
    submissions,
    /// Doorbells rung.
    doorbells,
    /// Doorbells not rung because the host was busy.
    doorbells_suppressed,
    /// Completion interrupts taken.
    irqs,
    /// Completions consumed.
    completions,
    /// Malformed, unknown or unexpected completions (ignored).
    bad_completions,
    /// Impossible ring indices from the host; the ring is abandoned.
    protocol_errors,
    /// Completions with a non-Ok status.
    host_errors,
    /// Page directories released without an acknowledgement at detach.
    forced_releases,
    /// Exits handled without the host because the ring was abandoned.
    fallback_exits,
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

/// What the engine knows about one address space.
struct Space {
    tag: u32,
    state: State,
    pages: u64,
    /// The page directory once `pgd_free` handed it over.
    pgd: Option<PageDirectory>,
    /// A request that did not fit in the ring yet.
    queued: Option<Op>,
}

struct Inner {
    sq: SqProducer,
    cq: CqConsumer,
    spaces: RBTree<SpaceId, Space>,
    outstanding: u64,
    outstanding_pages: u64,
    pending_pgds: u64,
    backlog: u64,
    /// The host broke the protocol; the ring is no longer used.
    broken: bool,
    /// Detaching: no new address spaces are tracked.
    closing: bool,
}

impl Inner {
    /// Stops tracking `id`, keeping the gauges consistent. Dropping the returned
    /// record releases its parked page directory, if any.
    fn untrack(&mut self, id: SpaceId) -> Option<Space> {
        let space = self.spaces.remove(&id)?;
        if space.state == State::Destroying {
            self.outstanding -= 1;
            self.outstanding_pages -= space.pages;
        }
        if space.pgd.is_some() {
            self.pending_pgds -= 1;
        }
        if space.queued.is_some() {
            self.backlog -= 1;
        }
        Some(space)
    }
}

/// Gauges, read under the engine lock.
pub(crate) struct Gauges {
    pub(crate) spaces_live: u64,
    pub(crate) outstanding: u64,
    pub(crate) outstanding_pages: u64,
    pub(crate) pgds_pending: u64,
    pub(crate) backlog: u64,
    pub(crate) broken: bool,
    pub(crate) closing: bool,
}

/// The teardown engine of one device.
///
/// # Locking
///
/// All ring and tracking state is in `inner`, a spinlock taken from the mm hooks
/// (process context, and atomic or RCU-callback context for `pgd_free`) and from
/// the threaded interrupt handler. It is never taken in hard interrupt context,
/// and nothing is allocated under it. The doorbell is rung after the lock is
/// dropped. `stats` and `next_tag` need no lock.
///
/// # Lifetime
///
/// Shared through an `Arc` by the hook registration and the interrupt handler;
/// both are torn down before the device is unmapped.
#[pin_data]
pub(crate) struct Teardown<M: SharedMemory, B: Doorbell> {
    shm: M,
    bell: B,
    #[pin]
    inner: SpinLock<Inner>,
    /// Notified whenever outstanding work completes.
    #[pin]
    progress: CondVar,
    next_tag: AtomicU32,
    pub(crate) stats: Stats,
}

/// Logs the first few occurrences of a problem, then every power of two.
fn should_log(count: u64) -> bool {
    count < 8 || count.is_power_of_two()
}

impl<M: SharedMemory + Send + Sync, B: Doorbell> Teardown<M, B> {
    /// Creates the engine, continuing the rings where an earlier instance stopped.
    pub(crate) fn new(shm: M, bell: B, layout: Layout) -> impl PinInit<Self, Error> {
        let sq = SqProducer::resume(layout, &shm);
        let cq = CqConsumer::resume(layout, &shm);
        try_pin_init!(Self {
            shm,
            bell,
            inner <- new_spinlock!(Inner {
                sq,
                cq,
                spaces: RBTree::new(),
                outstanding: 0,
                outstanding_pages: 0,
                pending_pgds: 0,
                backlog: 0,
                broken: false,
                closing: false,
            }, "pvmm_teardown"),
            progress <- new_condvar!("pvmm_progress"),
            next_tag: AtomicU32::new(1),
            stats: Stats::default(),
        }? Error)
    }

    /// Current gauges.
    pub(crate) fn gauges(&self) -> Gauges {
        let inner = self.inner.lock();
        Gauges {
            spaces_live: inner.spaces.iter().count() as u64,
            outstanding: inner.outstanding,
            outstanding_pages: inner.outstanding_pages,
            pgds_pending: inner.pending_pgds,
            backlog: inner.backlog,
            broken: inner.broken,
            closing: inner.closing,
        }
    }

    fn protocol_error(&self, inner: &mut Inner, err: wire::Error) {
        let n = self.stats.protocol_errors.fetch_add(1, Relaxed);
        if !inner.broken {
            pr_err!("host broke the ring protocol ({err}); ring abandoned\n");
        } else if should_log(n) {
            pr_err!("host protocol error ({err})\n");
        }
        inner.broken = true;
    }

    /// Writes one request into the ring, or queues it when the ring is full.
    /// Returns whether anything was written.
    fn submit(&self, inner: &mut Inner, id: SpaceId, op: Op) -> bool {
        if inner.broken {
            return false;
        }
        let Some(space) = inner.spaces.get_mut(&id) else {
            return false;
        };
        let req = Request {
            op,
            tag: space.tag,
            space: id,
            pages: if op == Op::Destroy { space.pages } else { 0 },
        };
        if space.queued.is_some() || inner.backlog != 0 {
            // Keep order behind earlier queued requests.
            if space.queued.is_none() {
                space.queued = Some(op);
                inner.backlog += 1;
            }
            return false;
        }
        match inner.sq.push(&self.shm, &req) {
            Ok(()) => {
                self.stats.submissions.fetch_add(1, Relaxed);
                true
            }
            Err(wire::Error::Full) => {
                space.queued = Some(op);
                inner.backlog += 1;
                false
            }
            Err(e) => {
                self.protocol_error(inner, e);
                false
            }
        }
    }

    /// Makes written requests visible and rings the host if it asked for it.
    /// Called after the lock is dropped would be too late to read the flag
    /// consistently, so it returns whether to ring instead.
    fn publish(&self, inner: &Inner) -> bool {
        let wake = inner.sq.publish(&self.shm);
        if !wake {
            self.stats.doorbells_suppressed.fetch_add(1, Relaxed);
        }
        wake
    }

    fn ring(&self) {
        self.stats.doorbells.fetch_add(1, Relaxed);
        self.bell.ring();
    }

    /// Moves queued requests into the ring while it has room.
    fn flush_backlog(&self, inner: &mut Inner) -> bool {
        if inner.backlog == 0 || inner.broken {
            return false;
        }
        let Inner {
            sq,
            spaces,
            backlog,
            ..
        } = inner;
        let mut wrote = false;
        let mut result = Ok(());
        for (id, space) in spaces.iter_mut() {
            let Some(op) = space.queued else { continue };
            let req = Request {
                op,
                tag: space.tag,
                space: *id,
                pages: if op == Op::Destroy { space.pages } else { 0 },
            };
            if let Err(e) = sq.push(&self.shm, &req) {
                result = Err(e);
                break;
            }
            space.queued = None;
            *backlog -= 1;
            wrote = true;
            self.stats.submissions.fetch_add(1, Relaxed);
        }
        match result {
            Ok(()) | Err(wire::Error::Full) => {}
            Err(e) => self.protocol_error(inner, e),
        }
        wrote
    }

    /// Handles a DESTROY the host acknowledged (or never needed to see).
    fn destroyed(&self, inner: &mut Inner, id: SpaceId) {
        let Some(space) = inner.spaces.get_mut(&id) else {
            return;
        };
        if space.pgd.is_some() {
            // Dropping the record releases the parked page directory.
            drop(inner.untrack(id));
            self.stats.pgds_released.fetch_add(1, Relaxed);
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
        let cancel = space.queued == Some(Op::Create);
        if cancel {
            space.queued = None;
            inner.backlog -= 1;
        }
        inner.outstanding += 1;
        inner.outstanding_pages += pages;
        self.stats.spaces_destroyed.fetch_add(1, Relaxed);
        if cancel {
            // The CREATE never reached the host: nothing to destroy there.
            self.stats.spaces_acked.fetch_add(1, Relaxed);
            self.destroyed(inner, id);
            return false;
        }
        self.submit(inner, id, Op::Destroy)
    }

    fn complete(&self, inner: &mut Inner, c: Result<Completion, BadEntry>) {
        self.stats.completions.fetch_add(1, Relaxed);
        let bogus = |why: &dyn core::fmt::Display| {
            let n = self.stats.bad_completions.fetch_add(1, Relaxed);
            if should_log(n) {
                pr_warn!("ignoring bogus completion: {why}\n");
            }
        };
        let c = match c {
            Ok(c) => c,
            Err(e) => return bogus(&e),
        };
        let expected = match inner.spaces.get(&c.space) {
            Some(s) if s.tag == c.tag => match c.op {
                Op::Create => s.state != State::Acked,
                Op::Destroy => s.state == State::Destroying && s.queued.is_none(),
            },
            _ => false,
        };
        if !expected {
            return bogus(&format_args!(
                "{:?} of space {:#x} tag {}",
                c.op, c.space, c.tag
            ));
        }
        if c.status != Status::Ok {
            let n = self.stats.host_errors.fetch_add(1, Relaxed);
            if should_log(n) {
                pr_warn!("host: {:?} of space {:#x}: {:?}\n", c.op, c.space, c.status);
            }
        }
        match c.op {
            Op::Create => {
                self.stats.creates_acked.fetch_add(1, Relaxed);
            }
            Op::Destroy => {
                self.stats.spaces_acked.fetch_add(1, Relaxed);
                self.destroyed(inner, c.space);
            }
        }
    }

    /// Consumes all completions. Called from the interrupt thread, and polled
    /// while detaching.
    pub(crate) fn process_completions(&self) {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let mut progressed = false;
        while !inner.broken {
            match inner.cq.pop(&self.shm) {
                Ok(Some(c)) => {
                    self.complete(inner, c);
                    progressed = true;
                }
                Ok(None) => {
                    inner.cq.release(&self.shm);
                    // Re-arm, and look again if completions raced with it.
                    if !inner.cq.set_need_irq(&self.shm, true) {
                        break;
                    }
                }
                Err(e) => self.protocol_error(inner, e),
            }
        }
        let wake = self.flush_backlog(inner) && self.publish(inner);
        drop(guard);
        if wake {
            self.ring();
        }
        if progressed {
            self.progress.notify_all();
        }
    }

    /// Interrupt entry point.
    pub(crate) fn interrupt(&self) {
        self.stats.irqs.fetch_add(1, Relaxed);
        self.process_completions();
    }

    /// Stops tracking new address spaces and waits up to `timeout_ms` for the
    /// host to acknowledge everything outstanding. Page directories still parked
    /// afterwards are released anyway: the hooks are gone and the driver is
    /// leaving, so keeping them would leak them.
    ///
    /// Must be called after the hooks are unregistered.
    pub(crate) fn drain(&self, timeout_ms: u32) {
        const STEP_MS: u32 = 20;
        self.inner.lock().closing = true;
        let mut waited = 0;
        loop {
            self.process_completions();
            let mut inner = self.inner.lock();
            if inner.outstanding == 0 || inner.broken || waited >= timeout_ms {
                break;
            }
            // Polls as well as waits, so a lost interrupt cannot stall the drain.
            let _ = self
                .progress
                .wait_interruptible_timeout(&mut inner, msecs_to_jiffies(STEP_MS));
            waited += STEP_MS;
        }
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let mut forced = 0u64;
        loop {
            let Some(id) = inner.spaces.keys().next().copied() else {
                break;
            };
            if let Some(space) = inner.untrack(id) {
                if space.pgd.is_some() {
                    forced += 1;
                }
            }
        }
        drop(guard);
        wire::guest_detach(&self.shm);
        if forced != 0 {
            self.stats.forced_releases.fetch_add(forced, Relaxed);
            self.stats.pgds_released.fetch_add(forced, Relaxed);
            pr_warn!("released {forced} page directories the host never acknowledged\n");
        }
    }
}

impl<M: SharedMemory + Send + Sync, B: Doorbell> MmHooks for Teardown<M, B> {
    fn pgd_alloc(&self, space: &AddressSpace) -> Result {
        let id = space.id();
        let record = Space {
            tag: self.next_tag.fetch_add(1, Relaxed),
            state: State::Live,
            pages: 0,
            pgd: None,
            queued: None,
        };
        let node = RBTreeNode::new(id, record, GFP_KERNEL)?;
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        if inner.closing || inner.broken {
            return Ok(());
        }
        if let Some(old) = inner.spaces.get(&id) {
            // Ids are unique while tracked, so this is a driver bug; recover.
            pr_warn!("replacing stale record of space {id:#x} (tag {})\n", old.tag);
            drop(inner.untrack(id));
        }
        inner.spaces.insert(node);
        self.stats.spaces_created.fetch_add(1, Relaxed);
        let wake = self.submit(inner, id, Op::Create) && self.publish(inner);
        drop(guard);
        if wake {
            self.ring();
        }
        Ok(())
    }

    fn exit_mmap(&self, space: &AddressSpace) {
        let id = space.id();
        let pages = space.rss_pages();
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        match inner.spaces.get(&id).map(|s| s.state) {
            Some(State::Live) => {}
            Some(_) => return,
            None => {
                drop(guard);
                self.stats.untracked_exits.fetch_add(1, Relaxed);
                return;
            }
        }
        if inner.broken {
            drop(inner.untrack(id));
            drop(guard);
            self.stats.fallback_exits.fetch_add(1, Relaxed);
            return;
        }
        let wake = self.start_destroy(inner, id, pages) && self.publish(inner);
        drop(guard);
        if wake {
            self.ring();
        }
    }

    fn pgd_free(&self, pgd: PageDirectory) -> Option<PageDirectory> {
        let id = pgd.id();
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let Some(mut state) = inner.spaces.get(&id).map(|s| s.state) else {
            return Some(pgd);
        };
        let mut wake = false;
        if inner.broken {
            drop(inner.untrack(id));
            drop(guard);
            return Some(pgd);
        }
        if state == State::Live {
            // Freed without exit_mmap (fork or exec failed after pgd_alloc): the
            // host still has its object, so destroy it now.
            wake = self.start_destroy(inner, id, 0) && self.publish(inner);
            state = inner.spaces.get(&id).map_or(State::Acked, |s| s.state);
        }
        let kept = match (state, inner.spaces.get_mut(&id)) {
            (State::Destroying, Some(s)) => {
                s.pgd = Some(pgd);
                inner.pending_pgds += 1;
                None
            }
            _ => {
                // The host is already done: release right away.
                drop(inner.untrack(id));
                self.stats.pgds_released.fetch_add(1, Relaxed);
                Some(pgd)
            }
        };
        drop(guard);
        self.stats.pgds_parked.fetch_add(1, Relaxed);
        if wake {
            self.ring();
        }
        kept
    }
}
