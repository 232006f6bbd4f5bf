// SPDX-License-Identifier: GPL-2.0

//! The host side of one guest's rings: request handling, completion posting,
//! notification handshakes. No I/O here, so tests and the fuzzer drive it over
//! an in-memory window.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pvmm_wire::{
    guest_ctl, host_ack_reset, host_ctl, host_reset_requested, BadEntry, Completion, CqProducer,
    Error, Layout, LogConsumer, Op, Request, SharedMemory, SqConsumer, Status, Why, FEATURES_ALL,
    FEATURE_IRQ_SUPPRESS, FEATURE_RELEASE_LOG, GUEST_READY,
};

use crate::audit::AckedSet;
use crate::budget::CpuBudget;
use crate::fault::{Break, Fault, Injector, Intercept};
use crate::stats::{thread_cpu_us, Counters};

/// Tunables of request processing. Costs are CPU time of the thread that
/// processes the rings, not wall-clock time.
#[derive(Clone, Debug)]
pub struct Config {
    /// Fixed cost of every DESTROY, CPU microseconds.
    pub cost_base_us: u64,
    /// Cost per MiB of address space destroyed, CPU microseconds.
    pub cost_us_per_mib: u64,
    /// Longest stretch of work without a preemption point, CPU microseconds.
    pub chunk_us: u64,
    /// Cap on one DESTROY's work in CPU microseconds: the size is the
    /// guest's claim.
    pub max_destroy_us: u64,
    /// Most pages a guest can have (`--guest-mem-mib` * 256): a larger
    /// DESTROY `pages` claim is clamped to this before it is costed.
    pub guest_pages: u64,
    /// Percent of one CPU a slot's DESTROY work may use (`--slot-cpu-share`;
    /// 100: no limit).
    pub cpu_share: u32,
    /// Most host objects one guest may hold; CREATE beyond gets `NoMemory`.
    pub max_objects: usize,
    /// ivshmem peer id of the host, written into the header.
    pub host_peer: u32,
    /// Misbehaviour to inject (`--fault`); [`Fault::None`] for a correct host.
    pub fault: Fault,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            cost_base_us: 0,
            cost_us_per_mib: 20,
            chunk_us: 500,
            max_destroy_us: 10_000_000,
            guest_pages: 4096 * 256,
            cpu_share: 100,
            max_objects: 65_536,
            host_peer: 0,
            fault: Fault::None,
        }
    }
}

impl Config {
    /// Modelled cost of destroying `pages` 4 KiB pages (clamped to
    /// `guest_pages`), CPU microseconds, and whether `max_destroy_us` capped it.
    pub fn destroy_cost_us(&self, pages: u64) -> (u64, bool) {
        let pages = pages.min(self.guest_pages);
        // pages * 4 KiB / 1 MiB = pages / 256, in u128 so nothing overflows.
        let us = u128::from(self.cost_base_us)
            + u128::from(self.cost_us_per_mib) * u128::from(pages) / 256;
        let us = u64::try_from(us).unwrap_or(u64::MAX);
        if us > self.max_destroy_us {
            (self.max_destroy_us, true)
        } else {
            (us, false)
        }
    }
}

/// What the serving loop should do after a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Work is pending: process again right away.
    Run,
    /// Idle: sleep until a doorbell (or the safety-net timeout).
    WaitDoorbell,
    /// Completions wait for CQ slots; the guest does not ring for those, so poll soon.
    PollSoon,
}

/// What one [`RingHost::process`] call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Submission entries consumed (valid or not).
    pub requests: u32,
    /// Completions published.
    pub published: u32,
    /// Malformed entries or impossible indices met.
    pub errors: u32,
    /// Reset requests carried out.
    pub resets: u32,
}

impl Batch {
    /// Whether anything visible happened.
    pub fn did_work(&self) -> bool {
        self.requests + self.published + self.errors + self.resets != 0
    }
}

/// The host object of one guest address space.
#[derive(Debug)]
struct Space {
    tag: u32,
    created: Instant,
    /// Stands for the host-side structures (page tables, task object).
    _obj: Box<[u64; 32]>,
}

/// One of the two rings the host serves, named in the log when an impossible
/// index stops it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ring {
    Submission,
    Completion,
}

impl Ring {
    fn name(self) -> &'static str {
        match self {
            Ring::Submission => "submission",
            Ring::Completion => "completion",
        }
    }
}

/// Limits warnings to a burst per second, so a hostile guest cannot flood the log.
#[derive(Debug)]
struct RateLimit {
    window: Instant,
    used: u32,
    suppressed: u64,
}

impl RateLimit {
    const BURST: u32 = 10;

    fn new() -> RateLimit {
        RateLimit {
            window: Instant::now(),
            used: 0,
            suppressed: 0,
        }
    }

    /// Whether to log now; reports how many were dropped before.
    fn allow(&mut self) -> Option<u64> {
        if self.window.elapsed() >= Duration::from_secs(1) {
            self.window = Instant::now();
            self.used = 0;
        }
        if self.used < Self::BURST {
            self.used += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// Logs at `$level` through the rate limiter `$self.$limit`, first saying how
/// many messages it suppressed since the last one it let through.
macro_rules! log_limited {
    ($self:ident, $limit:ident, $level:expr, $($arg:tt)+) => {
        if let Some(dropped) = $self.$limit.allow() {
            if dropped > 0 {
                log::log!($level, "{}: {} similar messages suppressed", $self.name, dropped);
            }
            log::log!($level, "{}: {}", $self.name, format_args!($($arg)+));
        }
    };
}

macro_rules! warn_limited {
    ($self:ident, $($arg:tt)+) => {
        log_limited!($self, limit, log::Level::Warn, $($arg)+)
    };
}

macro_rules! info_limited {
    ($self:ident, $($arg:tt)+) => {
        log_limited!($self, info_limit, log::Level::Info, $($arg)+)
    };
}

/// Host side of one guest's rings and its address-space objects.
///
/// Everything read from shared memory is treated as hostile: the ring ends
/// validate indices and entries, and this type survives whatever they report.
/// An impossible index stops that ring until the guest re-announces
/// `GUEST_READY` (clears it, then sets it again).
#[derive(Debug)]
pub struct RingHost {
    name: String,
    layout: Layout,
    cfg: Config,
    counters: Arc<Counters>,
    sq: SqConsumer,
    cq: CqProducer,
    /// Completions that did not fit into the CQ yet, oldest first.
    overflow: VecDeque<Completion>,
    /// Pushed but not yet published completions.
    unpublished: u32,
    /// The CQ tail last stored into shared memory: where a reset resumes,
    /// since the guest takes the published tail as its new head.
    cq_published: u32,
    /// The last `guest_ctl::RESET` value carried out; 0 on a fresh window,
    /// whose control lines `init_header` zeroed.
    reset_acked: u32,
    sq_stalled: bool,
    cq_stalled: bool,
    /// `break-ring-back` published an impossible SQ head: keep it there
    /// (publish no head) until the guest resets or re-announces.
    sq_head_broken: bool,
    /// DESTROYs taken and not yet answered by a published completion.
    destroys_held: u32,
    /// DESTROY completions pushed and not yet published.
    unpublished_destroys: u32,
    /// `break-ring` published an impossible CQ tail: keep it there (publish
    /// no completion) until the guest resets or re-announces, so that the
    /// guest sees it whenever it looks.
    cq_tail_broken: bool,
    /// `GUEST_READY` as last seen, to catch a re-announcement.
    guest_ready: bool,
    /// Mirrored into `host_ctl::ERRORS`.
    errors: u32,
    spaces: HashMap<u64, Space>,
    scratch: Vec<u64>,
    limit: RateLimit,
    /// Separate from `limit`: re-announcing `GUEST_READY` is cheap for a guest,
    /// and must neither flood the log nor crowd out the warnings.
    info_limit: RateLimit,
    /// `--fault` state; inert with [`Fault::None`].
    inject: Injector,
    /// `--slot-cpu-share`: what DESTROY work may spend.
    budget: CpuBudget,
    /// Resets carried out for this guest, for the release audit.
    resets_done: u64,
    /// `--audit-releases`: the release log and the DESTROYs acknowledged;
    /// `None` without a log, or once its index went wrong.
    audit: Option<(LogConsumer, AckedSet)>,
    /// `forged-ack`: forged DESTROY completions not yet pushed. A lie is no
    /// acknowledgement, so the audit does not count them as one; the first
    /// DESTROY completion for a key is the forged one (it precedes the
    /// CREATE's, which precedes the real DESTROY's).
    forged: HashSet<(u64, u32)>,
}

impl RingHost {
    /// Host state for a fresh window laid out as `layout`. Call
    /// [`Self::init_shm`] on the window before the guest sees it.
    pub fn new(name: &str, layout: Layout, cfg: Config, counters: Arc<Counters>) -> RingHost {
        let inject = Injector::new(cfg.fault);
        let budget = CpuBudget::new(cfg.cpu_share);
        let audit = (layout.log_entries != 0).then(|| {
            (
                LogConsumer::new(layout),
                AckedSet::new(cfg.max_objects.saturating_mul(2)),
            )
        });
        RingHost {
            name: name.to_owned(),
            layout,
            cfg,
            counters,
            sq: SqConsumer::new(layout),
            cq: CqProducer::new(layout),
            overflow: VecDeque::new(),
            unpublished: 0,
            cq_published: 0,
            reset_acked: 0,
            sq_stalled: false,
            cq_stalled: false,
            sq_head_broken: false,
            cq_tail_broken: false,
            destroys_held: 0,
            unpublished_destroys: 0,
            guest_ready: false,
            errors: 0,
            spaces: HashMap::new(),
            scratch: vec![0x9e37_79b9_7f4a_7c15; 512],
            limit: RateLimit::new(),
            info_limit: RateLimit::new(),
            inject,
            budget,
            resets_done: 0,
            audit,
            forged: HashSet::new(),
        }
    }

    /// Writes the header and zeroed control lines. The release log is
    /// offered only if the layout has one (`--audit-releases`). With the
    /// `no-header` fault the window stays as it is (zeroed).
    pub fn init_shm(&self, shm: &impl SharedMemory) {
        if self.cfg.fault == Fault::NoHeader {
            return;
        }
        let mut features = FEATURES_ALL;
        if self.layout.log_entries == 0 {
            features &= !FEATURE_RELEASE_LOG;
        }
        self.layout.init_header(shm, features, self.cfg.host_peer);
    }

    /// The layout this host serves (its own copy; the header in shared memory
    /// is never read back, since the guest could rewrite it).
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Live host objects.
    pub fn live_objects(&self) -> usize {
        self.spaces.len()
    }

    /// Completions waiting for CQ slots.
    pub fn overflow_len(&self) -> usize {
        self.overflow.len()
    }

    /// Whether a ring is stopped after an impossible index.
    pub fn stalled(&self) -> bool {
        self.sq_stalled || self.cq_stalled
    }

    /// The fault this host injects.
    pub fn fault(&self) -> Fault {
        self.inject.fault()
    }

    /// Completions `late-ack` holds until their time.
    pub fn delayed_len(&self) -> usize {
        self.inject.held()
    }

    /// How soon the injected fault needs a round (a `late-ack` completion
    /// falls due, the 1 ms tick of `cq-flood` and `irq-storm`), whatever
    /// [`Self::next`] says; `None` without a timed fault.
    pub fn fault_due_in(&self) -> Option<Duration> {
        self.inject.due_in(Instant::now())
    }

    /// Most completions held back before the host stops taking submissions.
    fn overflow_cap(&self) -> usize {
        self.layout.cq_entries as usize
    }

    /// Whether held-back completions (CQ overflow, or `late-ack`'s queue)
    /// are at their bound, so no more submissions are taken for now.
    fn intake_blocked(&self) -> bool {
        self.overflow.len() >= self.overflow_cap() || self.inject.backlog_full()
    }

    fn count(&self, f: impl Fn(&Counters) -> &std::sync::atomic::AtomicU64, n: u64) {
        f(&self.counters).fetch_add(n, Ordering::Relaxed);
    }

    fn note_error(&mut self, b: &mut Batch) {
        self.errors = self.errors.wrapping_add(1);
        b.errors += 1;
    }

    /// One round: picks up a `GUEST_READY` re-announcement and a reset
    /// request, moves held-back completions into the CQ, consumes every
    /// submission pending at the start (checking for a reset before each),
    /// publishes completions, interrupts the guest if it asked, and audits
    /// the release log if there is one.
    ///
    /// `irq` raises the guest's interrupt; `stop` is polled between work chunks.
    pub fn process(
        &mut self,
        shm: &impl SharedMemory,
        irq: &mut dyn FnMut(),
        stop: &dyn Fn() -> bool,
    ) -> Batch {
        let mut b = Batch::default();
        if self.inject.stalled(Instant::now()) {
            return b;
        }
        self.check_ready(shm);
        self.check_reset(shm, irq, &mut b);
        self.flush_overflow(shm, &mut b);
        self.post_due(shm, &mut b);
        if !self.sq_stalled {
            match self.sq.pending(shm) {
                Err(e) => self.bad_index(shm, Ring::Submission, e, &mut b),
                Ok(n) => {
                    for _ in 0..n {
                        // A reset must not wait behind a backlog of costly
                        // DESTROYs: it discards them anyway.
                        if self.check_reset(shm, irq, &mut b)
                            || self.intake_blocked()
                            || stop()
                            || self.inject.stalled(Instant::now())
                        {
                            break;
                        }
                        self.take_one(shm, irq, stop, &mut b);
                    }
                }
            }
            self.release_sq(shm);
        }
        // A `stall` that began this round holds back its completions too.
        if !self.inject.stalled(Instant::now()) {
            self.publish(shm, irq, &mut b);
            self.periodic_fault(shm, irq, &mut b);
            self.break_ring(shm, irq);
        }
        self.audit_releases(shm, &mut b);
        shm.write_u32(host_ctl::ERRORS, self.errors);
        self.counters
            .live_objects
            .store(self.spaces.len() as u64, Ordering::Relaxed);
        self.sample_sq_pending(shm);
        b
    }

    /// Sets the `sq_pending` gauge from the guest's SQ tail and our head: 0
    /// while the submission ring is stopped or its tail is impossible (that
    /// is counted when the next round reads it).
    /// Also tells the guest how many DESTROYs the host holds unanswered
    /// (`host_ctl::DESTROYS_HELD`): taken, and with `--audit-releases` (a test
    /// mode) also those waiting in the ring, which only the guest's credits
    /// bound. Without it no SQ entry is read outside `pop`.
    fn sample_sq_pending(&self, shm: &impl SharedMemory) {
        let n = if self.sq_stalled {
            0
        } else {
            self.sq.pending(shm).unwrap_or(0)
        };
        self.counters
            .sq_pending
            .store(u64::from(n), Ordering::Relaxed);
        let waiting = if self.audit.is_some() {
            self.sq.pending_destroys(shm, n)
        } else {
            0
        };
        shm.write_u32(
            host_ctl::DESTROYS_HELD,
            self.destroys_held.saturating_add(waiting),
        );
    }

    fn take_one(
        &mut self,
        shm: &impl SharedMemory,
        irq: &mut dyn FnMut(),
        stop: &dyn Fn() -> bool,
        b: &mut Batch,
    ) {
        b.requests += 1;
        match self.sq.take(shm) {
            Err(bad) => {
                self.bad_entry(bad, b);
                self.inject.taken(None, Instant::now());
            }
            Ok(req) => {
                if req.op == Op::Destroy {
                    self.destroys_held = self.destroys_held.saturating_add(1);
                }
                if req.op == Op::Destroy && self.cfg.destroy_cost_us(req.pages).0 > 0 {
                    // Hand back slots and finished completions before a long
                    // stretch, and show the backlog it leaves waiting.
                    self.release_sq(shm);
                    self.post_due(shm, b);
                    self.publish(shm, irq, b);
                    self.sample_sq_pending(shm);
                }
                let taken = Instant::now();
                let c = self.handle(&req, stop);
                match self.inject.intercept(c, taken) {
                    Intercept::Post(c) => self.complete(shm, c, b),
                    Intercept::Withheld => self.count(|c| &c.faults_withheld, 1),
                    Intercept::Delayed => self.count(|c| &c.faults_delayed, 1),
                    Intercept::Twice(c) => {
                        self.complete(shm, c, b);
                        self.complete(shm, c, b);
                        self.count(|c| &c.faults_duplicated, 1);
                    }
                    Intercept::Forged(forged, c) => {
                        self.forged.insert((forged.space, forged.tag));
                        self.complete(shm, forged, b);
                        self.complete(shm, c, b);
                        self.count(|c| &c.faults_forged, 1);
                    }
                }
                if self.inject.taken(Some(req.op), Instant::now()) {
                    self.count(|c| &c.faults_stalls, 1);
                    log::info!(
                        "{}: --fault {}: serving nothing now",
                        self.name,
                        self.fault()
                    );
                }
            }
        }
    }

    /// Hands consumed SQ slots back, unless `break-ring-back` keeps its
    /// impossible head published.
    fn release_sq(&self, shm: &impl SharedMemory) {
        if !self.sq_head_broken {
            self.sq.release(shm);
        }
    }

    /// `break-ring`, `break-ring-back`: once the request count is reached,
    /// publishes an index the guest must find impossible and interrupts.
    /// Our own indices stay right, so service goes on; a reset resumes the
    /// CQ at the tail published last, which is where the guest resumes.
    fn break_ring(&mut self, shm: &impl SharedMemory, irq: &mut dyn FnMut()) {
        match self.inject.take_break() {
            Some(Break::CqTail) => {
                let head = shm.load_acquire_u32(guest_ctl::CQ_HEAD);
                let tail = head.wrapping_add(self.layout.cq_entries + 1);
                shm.store_release_u32(host_ctl::CQ_TAIL, tail);
                self.cq_published = tail;
                self.cq_tail_broken = true;
            }
            Some(Break::SqHead) => {
                let tail = shm.load_acquire_u32(guest_ctl::SQ_TAIL);
                let head = tail.wrapping_sub(self.layout.sq_entries + 1);
                shm.store_release_u32(host_ctl::SQ_HEAD, head);
                self.sq_head_broken = true;
            }
            None => return,
        }
        irq();
        self.count(|c| &c.irqs_sent, 1);
        self.count(|c| &c.faults_broken, 1);
    }

    /// `late-ack`: queues the delayed completions whose time has come, in
    /// order, behind any held back for CQ space.
    fn post_due(&mut self, shm: &impl SharedMemory, b: &mut Batch) {
        if self.inject.held() == 0 {
            return;
        }
        let now = Instant::now();
        while let Some(c) = self.inject.pop_due(now) {
            self.complete(shm, c, b);
        }
    }

    /// `cq-flood` and `irq-storm`, at the end of a round so that the round's
    /// real completions are out first. Neither counts as work in `b`: a
    /// round that did only this does not rewrite the stats file at 1 kHz.
    fn periodic_fault(&mut self, shm: &impl SharedMemory, irq: &mut dyn FnMut(), b: &mut Batch) {
        if !self.inject.tick(Instant::now()) {
            return;
        }
        match self.inject.fault() {
            Fault::CqFlood => self.flood(shm, irq, b),
            Fault::IrqStorm => {
                irq();
                self.count(|c| &c.faults_irqs, 1);
            }
            _ => {}
        }
    }

    /// Fills every free CQ slot with a completion that matches nothing,
    /// publishes them and interrupts the guest (whatever `GUEST_NEED_IRQ`
    /// says: the interrupt path is part of what is flooded). Skipped while
    /// real completions wait for space, so bogus ones only take the room the
    /// real ones left and never starve them.
    fn flood(&mut self, shm: &impl SharedMemory, irq: &mut dyn FnMut(), b: &mut Batch) {
        if !self.guest_ready || self.cq_stalled || !self.overflow.is_empty() {
            return;
        }
        let free = match self.cq.space(shm) {
            Ok(n) => n,
            Err(e) => {
                self.bad_index(shm, Ring::Completion, e, b);
                return;
            }
        };
        let mut n = 0;
        for _ in 0..free {
            let c = self.inject.bogus(|s| self.spaces.contains_key(&s));
            if self.cq.push(shm, &c).is_err() {
                // The guest moved its head meanwhile; the next round's check
                // reports an impossible one.
                break;
            }
            n += 1;
        }
        if n == 0 {
            return;
        }
        self.publish_cq(shm);
        irq();
        self.count(|c| &c.irqs_sent, 1);
        self.count(|c| &c.faults_bogus, n);
    }

    /// Publishes the pushed completions; returns whether the guest wants an
    /// interrupt.
    fn publish_cq(&mut self, shm: &impl SharedMemory) -> bool {
        let wants = self.cq.publish(shm);
        self.cq_published = self.cq.index();
        // Answered now (saturating: dup-ack and forged-ack answer more).
        self.destroys_held = self
            .destroys_held
            .saturating_sub(std::mem::take(&mut self.unpublished_destroys));
        if let Some((_, acked)) = &mut self.audit {
            let evicted = acked.published();
            self.count(|c| &c.audit_evicted, evicted);
        }
        wants
    }

    /// Pushes a real completion into the CQ, noting a DESTROY for the audit.
    fn push_cq(&mut self, shm: &impl SharedMemory, c: &Completion) -> Result<(), Error> {
        self.cq.push(shm, c)?;
        self.unpublished += 1;
        if c.op == Op::Destroy {
            self.unpublished_destroys += 1;
        }
        let lie = c.op == Op::Destroy && self.forged.remove(&(c.space, c.tag));
        if let (Some((_, acked)), Op::Destroy, false) = (&mut self.audit, c.op, lie) {
            acked.pushed((c.space, c.tag));
        }
        Ok(())
    }

    /// `--audit-releases`: reads every release the guest logged since the
    /// last round and counts those the host never acknowledged. A bad entry
    /// is counted and skipped; an impossible index ends the audit for this
    /// guest (the host cannot tell which entries are real).
    fn audit_releases(&mut self, shm: &impl SharedMemory, b: &mut Batch) {
        let Some((log, _)) = &mut self.audit else {
            return;
        };
        let mut n = self.layout.log_entries;
        let mut taken = Vec::new();
        let mut broken = None;
        while n > 0 {
            match log.pop(shm) {
                Ok(Some(r)) => taken.push(r),
                Ok(None) => break,
                Err(e) => {
                    broken = Some(e);
                    break;
                }
            }
            n -= 1;
        }
        log.release(shm);
        for r in taken {
            match r {
                Ok(r) => self.audit_one(r.space, r.tag, r.why),
                Err(bad) => {
                    self.count(|c| &c.bad_entries, 1);
                    self.note_error(b);
                    warn_limited!(self, "bad release log entry: {bad}");
                }
            }
        }
        if let Some(e) = broken {
            self.audit = None;
            self.count(|c| &c.bad_indices, 1);
            self.note_error(b);
            warn_limited!(
                self,
                "release log index impossible: {e}; audit stopped for this guest"
            );
        }
    }

    fn audit_one(&mut self, space: u64, tag: u32, why: Why) {
        let Some((_, acked)) = &mut self.audit else {
            return;
        };
        let was_acked = acked.take((space, tag));
        self.count(|c| &c.releases_audited, 1);
        let premature = match why {
            Why::Acked => !was_acked,
            Why::Reset => {
                self.count(|c| &c.released_after_reset, 1);
                self.resets_done == 0
            }
            Why::Forced => {
                self.count(|c| &c.released_forced, 1);
                false
            }
        };
        if premature {
            self.count(|c| &c.premature_releases, 1);
            warn_limited!(
                self,
                "guest released the pgd of space {space:#x} (tag {tag:#x}, {why:?}) \
                 without an acknowledgement from this host"
            );
        }
    }

    /// Whether the guest asked for a reset not carried out yet.
    fn reset_pending(&self, shm: &impl SharedMemory) -> bool {
        host_reset_requested(shm, self.reset_acked).is_some()
    }

    /// The reset handshake: if the guest published a new `guest_ctl::RESET`,
    /// forgets every object and every completion of this guest, unstalls both
    /// rings, moves the SQ head past every unconsumed submission, acknowledges
    /// and interrupts. Returns whether it did.
    fn check_reset(
        &mut self,
        shm: &impl SharedMemory,
        irq: &mut dyn FnMut(),
        b: &mut Batch,
    ) -> bool {
        let Some(seq) = host_reset_requested(shm, self.reset_acked) else {
            return false;
        };
        let objects = self.spaces.len();
        self.spaces.clear();
        let held = self.overflow.len() + self.inject.clear() + self.unpublished as usize;
        self.overflow.clear();
        self.unpublished = 0;
        self.unpublished_destroys = 0;
        self.destroys_held = 0;
        self.forged.clear();
        if let Some((_, acked)) = &mut self.audit {
            acked.drop_unpublished();
        }
        self.resets_done += 1;
        // Entries pushed after the last publish are forgotten: the guest's
        // new head is the tail it can see. Restore that tail first, in case
        // the guest wrote over our line.
        shm.store_release_u32(host_ctl::CQ_TAIL, self.cq_published);
        self.cq = CqProducer::resume(self.layout, shm);
        self.sq_stalled = false;
        self.cq_stalled = false;
        // host_ack_reset publishes a real SQ head again.
        self.sq_head_broken = false;
        self.cq_tail_broken = false;
        host_ack_reset(shm, &mut self.sq, seq);
        self.reset_acked = seq;
        self.count(|c| &c.resets, 1);
        self.count(|c| &c.objects_dropped, objects as u64);
        self.count(|c| &c.dropped_completions, held as u64);
        self.counters.live_objects.store(0, Ordering::Relaxed);
        irq();
        self.count(|c| &c.irqs_sent, 1);
        b.resets += 1;
        info_limited!(
            self,
            "guest reset {seq}: dropped {objects} objects and {held} completions; sq_head={} cq_tail={}",
            self.sq.index(),
            self.cq.index()
        );
        true
    }

    fn bad_entry(&mut self, bad: BadEntry, b: &mut Batch) {
        self.count(|c| &c.bad_entries, 1);
        self.note_error(b);
        let at = self.sq.index().wrapping_sub(1);
        warn_limited!(self, "bad submission entry at index {at}: {bad}");
    }

    fn bad_index(&mut self, shm: &impl SharedMemory, ring: Ring, e: Error, b: &mut Batch) {
        self.count(|c| &c.bad_indices, 1);
        self.note_error(b);
        match ring {
            Ring::Submission => self.sq_stalled = true,
            Ring::Completion => self.cq_stalled = true,
        }
        warn_limited!(
            self,
            "{} ring stopped: {e}; waiting for the guest to re-announce GUEST_READY",
            ring.name()
        );
        // Make sure the guest's re-announcing doorbell is not suppressed.
        let _ = self.sq.set_need_wakeup(shm, true);
    }

    fn check_ready(&mut self, shm: &impl SharedMemory) {
        let ready = shm.load_acquire_u32(guest_ctl::FLAGS) & GUEST_READY != 0;
        if ready && !self.guest_ready {
            self.sq_head_broken = false;
            self.cq_tail_broken = false;
        }
        if ready && !self.guest_ready && self.stalled() {
            self.sq_stalled = false;
            self.cq_stalled = false;
            self.count(|c| &c.resumes, 1);
            info_limited!(
                self,
                "guest re-announced GUEST_READY; resuming at sq_head={} cq_tail={}",
                self.sq.index(),
                self.cq.index()
            );
        }
        self.guest_ready = ready;
    }

    /// Handles one validated request; this is where the host work happens.
    pub fn handle(&mut self, req: &Request, stop: &dyn Fn() -> bool) -> Completion {
        let status = match req.op {
            Op::Create => self.create(req),
            Op::Destroy => self.destroy(req, stop),
        };
        Completion {
            op: req.op,
            status,
            tag: req.tag,
            space: req.space,
        }
    }

    fn create(&mut self, req: &Request) -> Status {
        if let Some(old) = self.spaces.remove(&req.space) {
            // The guest reuses an id only after that pgd was freed, which it does
            // only after our DESTROY completion: an object still here is stale.
            self.count(|c| &c.stale_reclaimed, 1);
            log::debug!(
                "{}: space {:#x} re-created; reclaiming stale object (tag {}, age {:?})",
                self.name,
                req.space,
                old.tag,
                old.created.elapsed()
            );
        } else if self.spaces.len() >= self.cfg.max_objects {
            self.count(|c| &c.no_memory, 1);
            return Status::NoMemory;
        }
        let mut obj = Box::new([0u64; 32]);
        obj[0] = req.space;
        obj[1] = u64::from(req.tag);
        self.spaces.insert(
            req.space,
            Space {
                tag: req.tag,
                created: Instant::now(),
                _obj: obj,
            },
        );
        self.count(|c| &c.creates, 1);
        Status::Ok
    }

    fn destroy(&mut self, req: &Request, stop: &dyn Fn() -> bool) -> Status {
        match self.spaces.get(&req.space) {
            None => {
                self.count(|c| &c.unknown_space, 1);
                return Status::UnknownSpace;
            }
            // Not the request that created this object: a late DESTROY of an
            // earlier user of the id (or an earlier driver instance, whose
            // epoch is in the tag). Destroying would free the live one.
            Some(s) if s.tag != req.tag => {
                self.count(|c| &c.stale_tags, 1);
                return Status::StaleTag;
            }
            Some(_) => {}
        }
        if req.pages > self.cfg.guest_pages {
            // More than the guest has: only a broken or hostile guest says so.
            self.count(|c| &c.pages_clamped, 1);
        }
        let (us, capped) = self.cfg.destroy_cost_us(req.pages);
        if capped {
            self.count(|c| &c.work_capped, 1);
        }
        let done = self.work(us, stop);
        self.count(|c| &c.work_us, done);
        self.spaces.remove(&req.space);
        self.count(|c| &c.destroys, 1);
        Status::Ok
    }

    /// Burns `us` microseconds of the calling thread's own CPU time
    /// (`CLOCK_THREAD_CPUTIME_ID`) on real memory work, in chunks of at most
    /// `chunk_us` CPU microseconds, yielding and checking `stop` between chunks.
    /// Before each chunk it waits while the slot's CPU budget is overdrawn.
    ///
    /// Time the thread spends preempted or waiting for a CPU does not count, so
    /// a low-priority thread on a busy host takes longer in wall-clock time:
    /// that is what the cost models. A thread that gets no CPU cannot run at
    /// all; once it does, it sees `stop` within one chunk. Returns the CPU
    /// microseconds used: at least `us` unless stopped.
    fn work(&mut self, us: u64, stop: &dyn Fn() -> bool) -> u64 {
        if us == 0 {
            return 0;
        }
        let start = thread_cpu_us();
        let chunk = self.cfg.chunk_us.max(1);
        let mut x = self.scratch[0] | 1;
        let mut used = 0;
        while used < us {
            if self.throttle(stop) {
                break;
            }
            let before = used;
            let end = us.min(used.saturating_add(chunk));
            while used < end {
                for w in self.scratch.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *w = w.wrapping_add(x);
                }
                // The thread CPU clock is a system call: read it once a pass.
                used = thread_cpu_us().saturating_sub(start);
            }
            std::hint::black_box(&self.scratch);
            self.budget.charge(Instant::now(), used - before);
            if stop() {
                break;
            }
            std::thread::yield_now();
        }
        self.scratch[0] = x;
        used
    }

    /// Sleeps while the CPU budget is overdrawn, in steps short enough to
    /// notice `stop`; counts the wait in `throttled_us`. Returns whether
    /// `stop` ended the wait.
    fn throttle(&mut self, stop: &dyn Fn() -> bool) -> bool {
        let Some(mut wait) = self.budget.wait(Instant::now()) else {
            return false;
        };
        let t0 = Instant::now();
        let stopped = loop {
            if stop() {
                break true;
            }
            std::thread::sleep(wait.min(Duration::from_millis(10)));
            match self.budget.wait(Instant::now()) {
                Some(w) => wait = w,
                None => break false,
            }
        };
        let waited = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.count(|c| &c.throttled_us, waited);
        stopped
    }

    fn complete(&mut self, shm: &impl SharedMemory, c: Completion, b: &mut Batch) {
        if self.overflow.is_empty() && !self.cq_stalled {
            match self.push_cq(shm, &c) {
                Ok(()) => return,
                Err(Error::Full) => {}
                Err(e) => self.bad_index(shm, Ring::Completion, e, b),
            }
        }
        self.count(|c| &c.cq_overflow, 1);
        self.overflow.push_back(c);
    }

    fn flush_overflow(&mut self, shm: &impl SharedMemory, b: &mut Batch) {
        while !self.cq_stalled {
            let Some(&c) = self.overflow.front() else {
                break;
            };
            match self.push_cq(shm, &c) {
                Ok(()) => {
                    self.overflow.pop_front();
                }
                Err(Error::Full) => break,
                Err(e) => self.bad_index(shm, Ring::Completion, e, b),
            }
        }
    }

    fn publish(&mut self, shm: &impl SharedMemory, irq: &mut dyn FnMut(), b: &mut Batch) {
        if self.unpublished == 0 || self.cq_tail_broken {
            return;
        }
        let wants = self.publish_cq(shm);
        let n = std::mem::take(&mut self.unpublished);
        b.published += n;
        self.count(|c| &c.completions, u64::from(n));
        // A guest that did not accept IRQ suppression gets every interrupt.
        let honours = shm.read_u32(guest_ctl::FEATURES) & FEATURE_IRQ_SUPPRESS != 0;
        if wants || !honours {
            irq();
            self.count(|c| &c.irqs_sent, 1);
        } else {
            self.count(|c| &c.irqs_suppressed, 1);
        }
    }

    /// Decides how to wait after a batch. Going idle sets `HOST_NEED_WAKEUP`
    /// and re-checks the submission ring, so no doorbell is lost.
    pub fn next(&mut self, shm: &impl SharedMemory) -> Next {
        // `stall`: no handshakes either; fault_due_in() wakes the loop.
        if self.inject.stalled(Instant::now()) {
            return Next::WaitDoorbell;
        }
        let cq_waiting = !self.overflow.is_empty() && !self.cq_stalled;
        if self.sq_stalled || self.intake_blocked() {
            if self.stalled() {
                let _ = self.sq.set_need_wakeup(shm, true);
            }
            if self.reset_pending(shm) {
                return Next::Run;
            }
            return if cq_waiting {
                Next::PollSoon
            } else {
                Next::WaitDoorbell
            };
        }
        // A reset request is re-checked after the flag's fence too, in case
        // the guest stored it without ringing while we were busy.
        if self.sq.set_need_wakeup(shm, true) || self.reset_pending(shm) {
            self.sq.set_need_wakeup(shm, false);
            return Next::Run;
        }
        if cq_waiting {
            Next::PollSoon
        } else {
            Next::WaitDoorbell
        }
    }

    /// Called after waking up: the host is busy again.
    pub fn woken(&mut self, shm: &impl SharedMemory) {
        if !self.stalled() {
            self.sq.set_need_wakeup(shm, false);
        }
    }

    /// The guest went away: its objects are freed with this value and counted
    /// in `objects_dropped`; held-back completions (`late-ack`'s included) are
    /// counted as dropped.
    pub fn disconnect(self) {
        let held = self.overflow.len() + self.inject.held();
        self.count(|c| &c.dropped_completions, held as u64);
        self.count(|c| &c.objects_dropped, self.spaces.len() as u64);
        self.counters.live_objects.store(0, Ordering::Relaxed);
        self.counters.sq_pending.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(chunk_us: u64) -> RingHost {
        let cfg = Config {
            chunk_us,
            ..Config::default()
        };
        let layout = Layout::new(4, 8).unwrap();
        RingHost::new("test", layout, cfg, Arc::new(Counters::default()))
    }

    #[test]
    fn work_consumes_thread_cpu_time() {
        let mut h = host(500);
        let before = thread_cpu_us();
        let done = h.work(20_000, &|| false);
        let spent = thread_cpu_us() - before;
        assert!(done >= 20_000, "reported {done} us");
        assert!(spent >= 20_000, "the thread spent {spent} us of CPU");
        assert!(spent >= done);
    }

    #[test]
    fn work_stops_between_chunks() {
        let mut h = host(1_000);
        let done = h.work(10_000_000, &|| true);
        assert!((1_000..1_000_000).contains(&done), "worked {done} us");
        assert_eq!(h.work(0, &|| false), 0);
    }
}
