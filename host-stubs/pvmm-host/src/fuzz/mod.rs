// SPDX-License-Identifier: GPL-2.0

//! The fuzz body: a hostile guest, scripted by arbitrary bytes, against the
//! host's ring processing, with an oracle that checks every completion.
//!
//! `tests/ring.rs` runs it on random input; `examples/fuzz.rs` (`make fuzz`)
//! runs it millions of times.
//!
//! The stub itself never calls this module. It is public, not
//! `#[cfg(test)]`, because integration tests and examples are crates of
//! their own that link the library as built without `cfg(test)` and see
//! only its public items; hiding it would take a cargo feature that
//! `cargo test` and `make fuzz` would both have to remember to enable.
//! Unused in the binary, it is left out of it at link time.
//!
//! # The oracle
//!
//! The host sees the window through [`Spy`], which shows every access it makes
//! to the [`Oracle`]. The oracle does not re-implement the host; it watches:
//!
//! - the SQ entries the host reads: each well-formed one is a request the host
//!   consumed, and the oracle works out its expected completion, status
//!   included, from a model of the host's objects (CREATE reclaims a stale
//!   object or is refused beyond `max_objects`, DESTROY needs the creating tag);
//! - the CQ entries the host writes, and the CQ tails it publishes: every
//!   published completion must be the expected completion of a consumed request
//!   not completed yet, so none appears twice and none matches nothing;
//! - the SQ heads it publishes: each round hands back exactly the entries it
//!   read;
//! - the reset acknowledgements it stores: a reset drops the host's objects and
//!   every completion still owed, and only a reset may drop a written but
//!   unpublished completion or move the SQ head past unread entries.
//!
//! - the host's reads: it never reads a field it owns (the header, its own
//!   control line), which the guest may have rewritten since the host
//!   stored it; the host keeps its own copy of all of those.
//!
//! When the script ends, the guest repairs its indices, re-announces
//! `GUEST_READY` and drains the CQ, and every consumed request must have had its
//! completion: exactly one completion per request, unless a reset discarded it.
//! A ring stopped on an impossible index discards nothing in this host, so the
//! oracle allows nothing for it. The oracle also checks that an SQ slot that
//! only the scripted guest's ring producer wrote reads back as that request.
//!
//! # Faults and memories
//!
//! [`run_with`] runs a script against a host that injects a `--fault`
//! ([`Options`]), over in-process memory or over a sealed memfd mapping
//! (`MappedShm`, what the stub serves guests with). A fault that breaks the
//! protocol on purpose turns the completion rules off (published
//! completions must still be whole and well-formed, but may match nothing,
//! repeat, be late or missing, and indices may be impossible); the object
//! model, the read rules, the bounds and the counters still hold.
//! [`run_any`], which `make fuzz` runs, takes the options from the script's
//! first byte.
//!
//! With two lanes ([`Options::lanes`]) DESTROYs are done on the worker
//! thread, which never touches the window: their completions come when it
//! hands them back, in a later round, so a replay of such a script may take
//! another path, and the end of a script waits for the worker. The worker's
//! queue is bounded at [`WORKER_QUEUE`], between the CQ's size and
//! [`MAX_OBJECTS`], so that a script can reach that bound too.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pvmm_wire::mem::MemShm;
use pvmm_wire::{
    guest_ctl, guest_request_reset, guest_reset_done, host_ctl, CqConsumer, Layout, LogProducer,
    Op, Release, Request, SharedMemory, SqProducer, Why, GUEST_NEED_IRQ, GUEST_READY,
};

use crate::fault::Fault;
use crate::priority::Priority;
use crate::ring::{Config, RingHost};
use crate::shm::MappedShm;
use crate::stats::Counters;

mod oracle;
use oracle::{Oracle, Spy};

/// Most host objects in a fuzz run, small so the limit is reached.
const MAX_OBJECTS: usize = 16;
/// Space ids the script uses: more than [`MAX_OBJECTS`], few enough to collide.
const SPACES: u8 = 24;
/// The worker's bound with two lanes: above the CQ's 8 entries, so that it,
/// not the CQ, stops the intake, and below [`MAX_OBJECTS`], so it can be reached.
const WORKER_QUEUE: usize = 12;

/// What one run did, for a fuzzer's statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Well-formed requests the host consumed.
    pub consumed: u64,
    /// Of those, requests the scripted guest's producer had written.
    pub submitted: u64,
    /// Completions published, each matched to a request.
    pub completed: u64,
    /// Expected completions a reset discarded.
    pub discarded: u64,
    /// Reset acknowledgements.
    pub resets: u64,
    /// Script steps run.
    pub steps: u64,
    /// Under a `--fault`: completions published that matched no request
    /// owed (bogus, duplicated, forged).
    pub unmatched: u64,
}

/// How a run is set up besides its script ([`run_any`] takes it from the
/// script's first byte).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// The `--fault` the host injects.
    pub fault: Fault,
    /// Over a sealed memfd mapping ([`MappedShm`], as the stub serves a
    /// guest) instead of in-process memory.
    pub mapped: bool,
    /// Two lanes (`--lanes two`): DESTROY work on a worker thread.
    pub lanes: bool,
}

impl Options {
    /// Options from one byte: every `--fault` mode (none on 2 in 12), with
    /// short times and small counts so that they act within a script; a
    /// memfd mapping for a quarter of the values, two lanes for half.
    pub fn from_byte(b: u8) -> Options {
        let ms = Duration::from_millis(1);
        let n = u64::from(b / 12 % 8) + 1;
        let fault = match b % 12 {
            1 => Fault::NeverAck,
            2 => Fault::LateAck(ms),
            3 => Fault::CqFlood,
            4 => Fault::IrqStorm,
            5 => Fault::DupAck,
            6 => Fault::ForgedAck,
            7 => Fault::BreakRing(n),
            8 => Fault::BreakRingBack(n),
            9 => Fault::Stall(ms),
            10 => Fault::NoHeader,
            _ => Fault::None,
        };
        Options {
            fault,
            mapped: b >= 192,
            lanes: b & 0x10 != 0,
        }
    }

    /// Whether the host keeps the protocol: then the oracle checks every
    /// completion (see the module docs).
    fn strict(&self) -> bool {
        matches!(self.fault, Fault::None | Fault::NoHeader)
    }
}

/// The host's configuration in a fuzz run: a small object limit, and the cost
/// model on with costs of a few microseconds, so that the paths around costly
/// DESTROYs (early release and publish, chunked work, `stop`) run while a run
/// stays well under a millisecond.
pub fn config() -> Config {
    Config {
        cost_base_us: 1,
        cost_us_per_mib: 1,
        chunk_us: 2,
        max_destroy_us: 8,
        max_objects: MAX_OBJECTS,
        worker_queue: WORKER_QUEUE,
        ..Config::default()
    }
}

/// The window layout of a fuzz run: tiny rings, so they fill and wrap, and a
/// release log, so the audit runs too.
pub fn layout() -> Layout {
    Layout::new(4, 8)
        .and_then(|l| l.with_release_log(4))
        .expect("static layout")
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | u64::from(self.u32()) << 32
    }
}

/// One fuzz run: the window, the host, the oracle.
struct Run<S: SharedMemory> {
    shm: S,
    layout: Layout,
    host: RingHost,
    counters: Arc<Counters>,
    oracle: RefCell<Oracle>,
}

impl<S: SharedMemory> Run<S> {
    /// A host round as the serving loop runs it; then the invariants.
    fn step(&mut self) {
        self.step_with(u32::MAX, 0);
    }

    /// A host round with `stop` true from its `stop_after`th poll on, in
    /// which the guest requests a reset at the `reset_at`th poll (0: never).
    /// The host polls `stop` between requests and between work chunks, so
    /// this is how a guest acting while the host is mid-round is modelled.
    fn step_with(&mut self, stop_after: u32, reset_at: u32) {
        let spy = Spy {
            shm: &self.shm,
            oracle: &self.oracle,
        };
        let mut irqs = 0u32;
        let polls = Cell::new(0u32);
        let shm = &self.shm;
        let stop = || {
            let n = polls.get().saturating_add(1);
            polls.set(n);
            if n == reset_at {
                guest_request_reset(shm);
            }
            n > stop_after
        };
        let before = self.host.live_objects();
        let b = self.host.process(&spy, &mut || irqs += 1, &stop);
        let _ = self.host.next(&spy);
        self.host.woken(&spy);
        let oracle = self.oracle.borrow();
        oracle.after_round();
        let layout = self.host.layout();
        let live = self.host.live_objects();
        assert!(live <= MAX_OBJECTS);
        assert_eq!(
            live,
            oracle.objects.len(),
            "host objects differ from the model"
        );
        if b.resets == 0 {
            assert!(live <= before + b.requests as usize);
        }
        // dup-ack and forged-ack push two completions for one request.
        let over = usize::from(!oracle.strict);
        assert!(self.host.overflow_len() <= layout.cq_entries as usize + over);
        assert!(self.host.lane_in_flight() <= WORKER_QUEUE);
        let snap = self.counters.snapshot();
        if oracle.strict {
            assert!(
                irqs <= 1 + b.requests + b.resets,
                "at most one interrupt per publish or reset"
            );
            assert_eq!(
                snap.completions, oracle.report.completed,
                "completions counted"
            );
        }
        assert_eq!(snap.live_objects, live as u64);
        assert_eq!(snap.resets, oracle.report.resets, "resets counted");
        assert!(snap.sq_pending <= u64::from(layout.sq_entries));
        // A `stall` round writes nothing, so what the guest wrote stays.
        if !matches!(self.host.fault(), Fault::Stall(_)) {
            assert_eq!(
                self.shm.read_u32(host_ctl::ERRORS),
                (snap.bad_entries + snap.bad_indices) as u32
            );
        }
    }

    /// The guest's producer submits up to `n` well-formed requests.
    fn submit(&mut self, input: &mut Input, n: u8) {
        let mut sq = SqProducer::resume(self.layout, &self.shm);
        for _ in 0..n {
            let op = if input.byte() & 1 == 0 {
                Op::Create
            } else {
                Op::Destroy
            };
            let req = Request {
                op,
                tag: (input.byte() % 4).into(),
                space: u64::from(input.byte() % SPACES) + 1,
                pages: if op == Op::Create {
                    0
                } else {
                    input.u32().into()
                },
            };
            let at = sq.index();
            if sq.push(&self.shm, &req).is_err() {
                break;
            }
            let slot = (at & (self.layout.sq_entries - 1)) as usize;
            self.oracle.borrow_mut().guest_wrote(slot, &req);
        }
        sq.publish(&self.shm);
    }

    fn raw_u64(&mut self, at: usize, val: u64) {
        self.shm.write_u64(at, val);
        self.oracle.borrow_mut().raw_write(at, 8);
    }

    /// The end of a script: the guest stops submitting, puts its indices where
    /// the host's are, re-announces `GUEST_READY` and drains the CQ until the
    /// host holds nothing back. Then every consumed request has had its
    /// completion.
    fn drain(&mut self) {
        let sq_head = self.oracle.borrow().sq_head;
        self.shm.store_release_u32(guest_ctl::SQ_TAIL, sq_head);
        self.shm.store_release_u32(guest_ctl::FLAGS, 0);
        self.step();
        self.shm
            .store_release_u32(guest_ctl::FLAGS, GUEST_READY | GUEST_NEED_IRQ);
        // With two lanes, until the worker has handed everything back too
        // (under a fault it may never be taken back: a broken CQ).
        let strict = self.oracle.borrow().strict;
        let end = Instant::now() + Duration::from_secs(10);
        let mut rounds = 0;
        while rounds < 4 || (strict && self.host.lane_in_flight() > 0 && Instant::now() < end) {
            let cq_tail = self.oracle.borrow().cq_tail;
            self.shm.store_release_u32(guest_ctl::CQ_HEAD, cq_tail);
            self.step();
            if rounds >= 4 {
                std::thread::sleep(Duration::from_micros(100));
            }
            rounds += 1;
        }
        let o = self.oracle.borrow();
        if !o.strict {
            // Withheld, late, stalled or stuck behind a broken ring: owed.
            return;
        }
        assert_eq!(self.host.overflow_len(), 0, "completions still held back");
        assert!(!self.host.stalled(), "a ring is still stopped");
        assert!(
            o.owed.is_empty(),
            "consumed requests never completed: {:?}",
            o.owed
        );
    }
}

/// Runs one script. Panics only if the host breaks one of its own invariants
/// or the oracle's rules (see the module docs).
///
/// The window starts with a valid header. Each input byte then picks a step:
/// raw writes anywhere in the window (header and host line included, as a
/// guest can do), control-word writes, well-formed guest submissions and
/// completion reads, release log entries, `GUEST_READY` toggles, reset
/// requests, and host rounds (some told to stop early).
pub fn run(data: &[u8]) -> Report {
    run_with(data, Options::default())
}

/// [`run`] with the [`Options`] its first byte picks ([`Options::from_byte`])
/// and the rest as the script: what `make fuzz` runs, so that a saved input
/// replays alone. (`late-ack`, `stall`, `cq-flood` and `irq-storm` depend on
/// the clock, so a replay of those may take another path.)
pub fn run_any(data: &[u8]) -> Report {
    let (b, script) = data.split_first().map_or((0, data), |(b, r)| (*b, r));
    run_with(script, Options::from_byte(b))
}

/// [`run`] with a `--fault` and the memory of your choice.
pub fn run_with(data: &[u8], opts: Options) -> Report {
    let size = layout().size as usize;
    if opts.mapped {
        let shm = MappedShm::create("pvmm-fuzz", size).expect("memfd for the fuzz window");
        run_on(data, opts, shm)
    } else {
        run_on(data, opts, MemShm::zeroed(size))
    }
}

fn run_on<S: SharedMemory>(data: &[u8], opts: Options, shm: S) -> Report {
    let layout = layout();
    let words = (layout.size as usize).div_ceil(8);
    let cfg = Config {
        fault: opts.fault,
        destroy_worker: opts.lanes.then(Priority::default),
        ..config()
    };
    let counters = Arc::new(Counters::default());
    let host = RingHost::new("fuzz", layout, cfg.clone(), Arc::clone(&counters));
    host.init_shm(&shm);
    let mut r = Run {
        shm,
        layout,
        host,
        counters,
        oracle: RefCell::new(Oracle::new(layout, cfg.max_objects, opts.strict())),
    };
    let mut input = Input(data);
    let ctl = [
        guest_ctl::SQ_TAIL,
        guest_ctl::CQ_HEAD,
        guest_ctl::FLAGS,
        guest_ctl::FEATURES,
        guest_ctl::EPOCH,
        guest_ctl::RESET,
        guest_ctl::LOG_TAIL,
        host_ctl::SQ_HEAD,
        host_ctl::CQ_TAIL,
        host_ctl::FLAGS,
        host_ctl::ERRORS,
        host_ctl::RESET_ACK,
        host_ctl::LOG_HEAD,
    ];

    while !input.0.is_empty() {
        r.oracle.borrow_mut().report.steps += 1;
        // Weights out of 32: mostly submissions, completion reads and host
        // rounds, so that requests get through; enough raw writes to break
        // the rings now and then; a reset about once in 32 steps.
        match input.byte() % 32 {
            0 | 1 => {
                let at = input.byte() as usize % words * 8;
                let val = input.u64();
                r.raw_u64(at, val);
            }
            2 | 3 => {
                let at = ctl[input.byte() as usize % ctl.len()];
                r.shm.write_u32(at, input.u32());
            }
            4..=10 | 30 | 31 => {
                let n = input.byte() % 6;
                r.submit(&mut input, n);
            }
            11..=14 => {
                let mut cq = CqConsumer::resume(layout, &r.shm);
                for _ in 0..input.byte() % 12 {
                    if !matches!(cq.pop(&r.shm), Ok(Some(_))) {
                        break;
                    }
                }
                cq.release(&r.shm);
                cq.set_need_irq(&r.shm, input.byte() & 1 == 0);
            }
            15..=22 => r.step(),
            23 => {
                let flags = r.shm.read_u32(guest_ctl::FLAGS) ^ GUEST_READY;
                r.shm.write_u32(guest_ctl::FLAGS, flags);
            }
            24 => {
                let start = input.byte() as usize % words;
                for w in start..(start + input.byte() as usize % 16).min(words) {
                    let val = input.u64();
                    r.raw_u64(w * 8, val);
                }
            }
            25 => {
                // The guest asks for a reset and rings; once it sees the
                // acknowledgement it skips what the host published before.
                let seq = guest_request_reset(&r.shm);
                if input.byte() & 1 == 0 {
                    r.step();
                }
                if guest_reset_done(&r.shm, seq) {
                    CqConsumer::resume(layout, &r.shm).skip_all(&r.shm);
                }
            }
            26 | 27 => {
                // A round told to stop after a few polls, or in which the
                // guest asks for a reset.
                let b = input.byte();
                if b & 0x80 == 0 {
                    r.step_with(u32::from(b % 4), 0);
                } else {
                    r.step_with(u32::MAX, u32::from(b % 4) + 1);
                }
            }
            _ => {
                // The guest logs a release.
                let why = match input.byte() % 3 {
                    0 => Why::Acked,
                    1 => Why::Reset,
                    _ => Why::Forced,
                };
                let rel = Release {
                    space: u64::from(input.byte() % SPACES) + 1,
                    tag: (input.byte() % 4).into(),
                    why,
                };
                let _ = LogProducer::resume(layout, &r.shm).push(&r.shm, &rel);
            }
        }
    }
    for _ in 0..3 {
        r.step();
    }
    r.drain();
    r.oracle.into_inner().report
}
