// SPDX-License-Identifier: GPL-2.0

//! The host side of one guest's rings: request handling, completion posting,
//! notification handshakes. No I/O here, so tests and the fuzzer drive it over
//! an in-memory window.
//!
//! [`RingHost`] is split by concern: taking submissions (`intake.rs`), the host
//! objects (`objects.rs`), the costly work of destroying them (`destroyer.rs`),
//! done inline or on a worker thread (`lane.rs`, `--lanes two`), posting
//! completions (`completions.rs`) and the reset handshake (`reset.rs`); the
//! release audit and the fault hooks are beside their state, in `crate::audit`
//! and `crate::fault`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pvmm_wire::{
    host_ctl, Completion, CqProducer, Layout, LogConsumer, SharedMemory, SqConsumer, FEATURES_ALL,
    FEATURE_CREATE_LANE, FEATURE_NEED_WAKEUP, FEATURE_RELEASE_LOG,
};

use crate::audit::AckedSet;
use crate::fault::{Fault, Injector};
use crate::ratelimit::RateLimit;
use crate::stats::Counters;

mod completions;
mod destroyer;
mod fault_hooks;
mod intake;
mod lane;
mod objects;
mod reset;
mod waiting;

use destroyer::Destroyer;
use lane::Lane;
pub use objects::Config;
use objects::Space;

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

/// One of the two rings the host serves, named in the log when an impossible
/// index stops it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ring {
    Submission,
    Completion,
}

impl Ring {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Ring::Submission => "submission",
            Ring::Completion => "completion",
        }
    }
}

/// Host side of one guest's rings and its address-space objects.
///
/// Everything read from shared memory is treated as hostile: the ring ends
/// validate indices and entries, and this type survives whatever they report.
/// An impossible index stops that ring until the guest re-announces
/// `GUEST_READY` (clears it, then sets it again).
#[derive(Debug)]
pub struct RingHost {
    pub(crate) name: String,
    pub(crate) layout: Layout,
    cfg: Config,
    counters: Arc<Counters>,
    sq: SqConsumer,
    pub(crate) cq: CqProducer,
    /// Completions that did not fit into the CQ yet, oldest first.
    pub(crate) overflow: VecDeque<Completion>,
    /// Pushed but not yet published completions.
    unpublished: u32,
    /// The CQ tail last stored into shared memory: where a reset resumes,
    /// since the guest takes the published tail as its new head.
    pub(crate) cq_published: u32,
    /// The last `guest_ctl::RESET` value carried out; 0 on a fresh window,
    /// whose control lines `init_header` zeroed.
    reset_acked: u32,
    sq_stalled: bool,
    pub(crate) cq_stalled: bool,
    /// `break-ring-back` published an impossible SQ head: keep it there
    /// (publish no head) until the guest resets or re-announces.
    pub(crate) sq_head_broken: bool,
    /// DESTROYs taken and not yet answered by a published completion.
    destroys_held: u32,
    /// DESTROY completions pushed and not yet published.
    unpublished_destroys: u32,
    /// `break-ring` published an impossible CQ tail: keep it there (publish
    /// no completion) until the guest resets or re-announces, so that the
    /// guest sees it whenever it looks.
    pub(crate) cq_tail_broken: bool,
    /// `GUEST_READY` as last seen, to catch a re-announcement.
    pub(crate) guest_ready: bool,
    /// Mirrored into `host_ctl::ERRORS`.
    errors: u32,
    pub(crate) spaces: HashMap<u64, Space>,
    /// Does DESTROY work inline (one lane), and paces the slot thread
    /// (`--slot-cpu-share`).
    destroyer: Destroyer,
    /// `--lanes two`: the worker that does DESTROY work instead.
    lane: Option<Lane>,
    pub(crate) limit: RateLimit,
    /// Separate from `limit`: re-announcing `GUEST_READY` is cheap for a guest,
    /// and must neither flood the log nor crowd out the warnings.
    pub(crate) info_limit: RateLimit,
    /// `--fault` state; inert with [`Fault::None`].
    pub(crate) inject: Injector,
    /// Resets carried out for this guest, for the release audit.
    pub(crate) resets_done: u64,
    /// `--audit-releases`: the release log and the DESTROYs acknowledged;
    /// `None` without a log, or once its index went wrong.
    pub(crate) audit: Option<(LogConsumer, AckedSet)>,
    /// `forged-ack`: forged DESTROY completions not yet pushed. A lie is no
    /// acknowledgement, so the audit does not count them as one; the first
    /// DESTROY completion for a key is the forged one (it precedes the
    /// CREATE's, which precedes the real DESTROY's).
    forged: HashSet<(u64, u32)>,
    /// `--audit-releases`: the DESTROYs waiting in the SQ, indexed.
    waiting: waiting::Waiting,
}

impl RingHost {
    /// Host state for a fresh window laid out as `layout`. Call
    /// [`Self::init_shm`] on the window before the guest sees it.
    pub fn new(name: &str, layout: Layout, cfg: Config, counters: Arc<Counters>) -> RingHost {
        let inject = Injector::new(cfg.fault);
        let destroyer = Destroyer::new(name, &cfg, &counters);
        let lane = cfg.destroy_worker.and_then(|p| {
            let mut worker = Destroyer::new(name, &cfg, &counters);
            worker.priority = Some(p);
            Lane::start(name, worker, p)
                .map_err(|e| log::error!("{name}: no destroy worker, one lane: {e}"))
                .ok()
        });
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
            destroyer,
            lane,
            limit: RateLimit::new(),
            info_limit: RateLimit::new(),
            inject,
            resets_done: 0,
            audit,
            forged: HashSet::new(),
            waiting: waiting::Waiting::default(),
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
        if self.cfg.fault == Fault::NoWakeup {
            features &= !FEATURE_NEED_WAKEUP;
        }
        if self.lane.is_none() {
            features &= !FEATURE_CREATE_LANE;
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

    /// Whether DESTROY work runs on a worker thread (`--lanes two`).
    pub fn two_lanes(&self) -> bool {
        self.lane.is_some()
    }

    /// DESTROYs the worker holds: queued, running, or finished and not yet
    /// taken back by [`Self::process`].
    pub fn lane_in_flight(&self) -> usize {
        self.lane.as_ref().map_or(0, Lane::in_flight)
    }

    /// With two lanes: readable when the worker finished a DESTROY, so the
    /// serving loop polls it beside the doorbells. Drain it with
    /// [`crate::ivshmem::drain`] before the round.
    pub fn lane_fd(&self) -> Option<BorrowedFd<'_>> {
        self.lane.as_ref().map(Lane::wake_fd)
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

    pub(crate) fn count(&self, f: impl Fn(&Counters) -> &AtomicU64, n: u64) {
        f(&self.counters).fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn note_error(&mut self, b: &mut Batch) {
        self.errors = self.errors.wrapping_add(1);
        b.errors += 1;
    }

    /// One round: picks up a `GUEST_READY` re-announcement and a reset
    /// request, moves held-back completions into the CQ, consumes every
    /// submission pending at the start (checking for a reset before each),
    /// publishes completions, interrupts the guest if it asked, and audits
    /// the release log if there is one. With two lanes it also takes back,
    /// before publishing, the DESTROYs the worker finished.
    ///
    /// `irq` raises the guest's interrupt; `stop` is polled between work chunks.
    pub fn process(
        &mut self,
        shm: &impl SharedMemory,
        irq: &mut dyn FnMut(),
        stop: &dyn Fn() -> bool,
    ) -> Batch {
        let mut b = Batch::default();
        // --slot-cpu-share: pay for the loop since the last round (doorbells
        // included), and wait out an overdraft before spending more.
        if self.destroyer.throttle(stop) || self.inject.stalled(Instant::now()) {
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
            self.collect_lane(shm, &mut b);
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
                let _ = self.set_idle(shm, true);
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
        if self.set_idle(shm, true) || self.reset_pending(shm) {
            self.set_idle(shm, false);
            return Next::Run;
        }
        if cq_waiting {
            Next::PollSoon
        } else {
            Next::WaitDoorbell
        }
    }

    /// Says whether the host is idle (`HOST_NEED_WAKEUP`); returns whether
    /// submissions raced with going idle. `no-wakeup` never sets the flag:
    /// the guest rings for every batch.
    pub(crate) fn set_idle(&self, shm: &impl SharedMemory, idle: bool) -> bool {
        if self.inject.fault() == Fault::NoWakeup {
            return false;
        }
        self.sq.set_need_wakeup(shm, idle)
    }

    /// Called after waking up: the host is busy again.
    pub fn woken(&mut self, shm: &impl SharedMemory) {
        if !self.stalled() {
            self.set_idle(shm, false);
        }
    }

    /// The guest went away: its objects are freed with this value and counted
    /// in `objects_dropped`; held-back completions (`late-ack`'s, and those
    /// of the DESTROYs the worker held) are counted as dropped. The worker
    /// is stopped and joined.
    pub fn disconnect(mut self) {
        let (unstarted, lane) = self.lane.as_mut().map_or((0, 0), Lane::discard);
        self.count(|c| &c.objects_dropped, unstarted as u64);
        let held = self.overflow.len() + self.inject.held() + lane;
        self.count(|c| &c.dropped_completions, held as u64);
        self.count(|c| &c.objects_dropped, self.spaces.len() as u64);
        self.counters.live_objects.store(0, Ordering::Relaxed);
        self.counters.sq_pending.store(0, Ordering::Relaxed);
    }
}
