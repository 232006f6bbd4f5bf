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
//! When the script ends, the guest repairs its indices, re-announces
//! `GUEST_READY` and drains the CQ, and every consumed request must have had its
//! completion: exactly one completion per request, unless a reset discarded it.
//! A ring stopped on an impossible index discards nothing in this host, so the
//! oracle allows nothing for it. The oracle also checks that an SQ slot that
//! only the scripted guest's ring producer wrote reads back as that request.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;

use pvmm_wire::mem::MemShm;
use pvmm_wire::{
    guest_ctl, guest_request_reset, guest_reset_done, host_ctl, Completion, CqConsumer, Layout,
    LogProducer, Op, Release, Request, SharedMemory, SqProducer, Status, Why, CQE_SIZE,
    GUEST_NEED_IRQ, GUEST_READY, SQE_SIZE,
};

use crate::ring::{Config, RingHost};
use crate::stats::Counters;

/// Most host objects in a fuzz run, small so the limit is reached.
const MAX_OBJECTS: usize = 16;
/// Space ids the script uses: more than [`MAX_OBJECTS`], few enough to collide.
const SPACES: u8 = 24;

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

/// What the host did, as seen through [`Spy`]; panics when it breaks a rule.
#[derive(Debug)]
struct Oracle {
    layout: Layout,
    max_objects: usize,
    /// The host's objects as they must be: space id to creating tag.
    objects: HashMap<u64, u32>,
    /// Completions owed for consumed requests, oldest first.
    owed: Vec<Completion>,
    /// The SQ entry being read: slot and the words so far.
    reading: Option<(usize, Vec<u64>)>,
    /// CQ entries written since the last published tail: slot and words.
    written: Vec<(usize, Vec<u64>)>,
    /// The CQ tail the host published last.
    cq_tail: u32,
    /// The SQ head the host published last.
    sq_head: u32,
    /// Entries the host read since it published `sq_head`.
    read: u32,
    /// The host moved its SQ head past entries it did not read; only a reset
    /// may do that.
    skipped: bool,
    /// Written CQ entries were dropped unpublished; only a reset may do that.
    dropped: bool,
    /// Per SQ slot, what the scripted guest's producer wrote there, unless a
    /// raw write touched the slot since.
    guest_slots: Vec<Option<[u64; 4]>>,
    report: Report,
}

impl Oracle {
    fn new(layout: Layout, max_objects: usize) -> Oracle {
        Oracle {
            layout,
            max_objects,
            objects: HashMap::new(),
            owed: Vec::new(),
            reading: None,
            written: Vec::new(),
            cq_tail: 0,
            sq_head: 0,
            read: 0,
            skipped: false,
            dropped: false,
            guest_slots: vec![None; layout.sq_entries as usize],
            report: Report::default(),
        }
    }

    fn sq_slot(&self, off: usize) -> Option<(usize, usize)> {
        let rel = off.checked_sub(self.layout.sq_off as usize)?;
        let slot = rel / SQE_SIZE;
        (slot < self.layout.sq_entries as usize).then_some((slot, rel % SQE_SIZE / 8))
    }

    fn cq_slot(&self, off: usize) -> Option<(usize, usize)> {
        let rel = off.checked_sub(self.layout.cq_off as usize)?;
        let slot = rel / CQE_SIZE;
        (slot < self.layout.cq_entries as usize).then_some((slot, rel % CQE_SIZE / 8))
    }

    /// The guest's producer wrote `req` into `slot`.
    fn guest_wrote(&mut self, slot: usize, req: &Request) {
        self.guest_slots[slot] = Some(req.encode());
    }

    /// A raw guest write covered bytes `off..off + len`.
    fn raw_write(&mut self, off: usize, len: usize) {
        let sq = self.layout.sq_off as usize;
        let end = sq + self.layout.sq_entries as usize * SQE_SIZE;
        for at in (off..off + len).step_by(8) {
            if (sq..end).contains(&at) {
                self.guest_slots[(at - sq) / SQE_SIZE] = None;
            }
        }
    }

    /// The host read a word of SQ slot `slot`.
    fn sq_read(&mut self, slot: usize, word: usize, val: u64) {
        let mut entry = match self.reading.take() {
            None if word == 0 => Vec::new(),
            Some((s, w)) if s == slot && w.len() == word => w,
            // Only the opcode word of the last one: a peek at a waiting entry
            // (`SqConsumer::pending_destroys`), which reads nothing else.
            Some((_, w)) if word == 0 && w.len() == 1 => Vec::new(),
            r => panic!("host read SQ slot {slot} word {word} while reading {r:?}"),
        };
        entry.push(val);
        if entry.len() < 4 {
            self.reading = Some((slot, entry));
            return;
        }
        let w = [entry[0], entry[1], entry[2], entry[3]];
        self.read += 1;
        if let Some(g) = self.guest_slots[slot] {
            assert_eq!(w, g, "SQ slot {slot} reads other than the guest wrote");
        }
        let Ok(req) = Request::decode(w) else {
            // Malformed: consumed without a completion.
            return;
        };
        self.report.consumed += 1;
        if self.guest_slots[slot].is_some() {
            self.report.submitted += 1;
        }
        let status = self.handle(&req);
        self.owed.push(Completion {
            op: req.op,
            status,
            tag: req.tag,
            space: req.space,
        });
    }

    /// What the host must answer, in the order it takes requests.
    fn handle(&mut self, req: &Request) -> Status {
        match req.op {
            Op::Create => {
                if self.objects.remove(&req.space).is_none()
                    && self.objects.len() >= self.max_objects
                {
                    return Status::NoMemory;
                }
                self.objects.insert(req.space, req.tag);
                Status::Ok
            }
            Op::Destroy => match self.objects.get(&req.space) {
                None => Status::UnknownSpace,
                Some(&t) if t != req.tag => Status::StaleTag,
                Some(_) => {
                    self.objects.remove(&req.space);
                    Status::Ok
                }
            },
        }
    }

    /// The host stored `head` as its published SQ head: past exactly the
    /// entries it read, unless a reset acknowledgement follows.
    fn sq_release(&mut self, head: u32) {
        if head.wrapping_sub(self.sq_head) != self.read {
            self.skipped = true;
        }
        self.sq_head = head;
        self.read = 0;
    }

    /// The host wrote a word of CQ slot `slot`.
    fn cq_write(&mut self, slot: usize, word: usize, val: u64) {
        match self.written.last_mut() {
            Some((s, w)) if *s == slot && w.len() == 1 && word == 1 => w.push(val),
            _ if word == 0 => self.written.push((slot, vec![val])),
            last => panic!("host wrote CQ slot {slot} word {word} after {last:?}"),
        }
    }

    /// The host stored `tail` as its published CQ tail.
    fn cq_publish(&mut self, tail: u32) {
        let n = tail.wrapping_sub(self.cq_tail) as usize;
        assert!(
            n <= self.written.len(),
            "host published {n} completions but wrote {}",
            self.written.len()
        );
        let mask = self.layout.cq_entries as usize - 1;
        for (k, (slot, w)) in self.written.drain(..).enumerate() {
            if k >= n {
                // Written and never published: forgotten.
                self.dropped = true;
                continue;
            }
            assert_eq!(
                slot,
                (self.cq_tail as usize + k) & mask,
                "CQ slot out of order"
            );
            assert_eq!(w.len(), 2, "host published a half-written completion");
            let c = Completion::decode([w[0], w[1]])
                .unwrap_or_else(|e| panic!("host published a malformed completion: {e}"));
            let Some(i) = self.owed.iter().position(|o| *o == c) else {
                panic!("completion {c:?} matches no request; owed {:?}", self.owed);
            };
            self.owed.remove(i);
            self.report.completed += 1;
        }
        self.cq_tail = tail;
    }

    /// The host acknowledged a reset: it holds nothing of the guest's now.
    fn reset_acked(&mut self) {
        self.report.resets += 1;
        self.report.discarded += self.owed.len() as u64;
        self.owed.clear();
        self.objects.clear();
        self.dropped = false;
        self.skipped = false;
    }

    /// Checks made after every host round.
    fn after_round(&self) {
        assert!(
            !self.dropped,
            "host dropped written completions without a reset"
        );
        // An opcode word alone is a peek (`pending_destroys`), not a partial read.
        assert!(
            self.reading.as_ref().is_none_or(|(_, w)| w.len() == 1),
            "host read part of an SQ entry"
        );
        assert!(
            !self.skipped,
            "host moved its SQ head past entries it never read, without a reset"
        );
        assert_eq!(self.read, 0, "host read SQ entries it did not release");
    }
}

/// The window as the host sees it: every access goes through to the real one
/// and is shown to the [`Oracle`].
struct Spy<'a, S: SharedMemory> {
    shm: &'a S,
    oracle: &'a RefCell<Oracle>,
}

impl<S: SharedMemory> Spy<'_, S> {
    fn stored(&self, off: usize, val: u32) {
        let mut o = self.oracle.borrow_mut();
        match off {
            host_ctl::CQ_TAIL => o.cq_publish(val),
            host_ctl::SQ_HEAD => o.sq_release(val),
            host_ctl::RESET_ACK => o.reset_acked(),
            _ => {}
        }
    }
}

impl<S: SharedMemory> SharedMemory for Spy<'_, S> {
    fn size(&self) -> usize {
        self.shm.size()
    }

    fn read_u32(&self, off: usize) -> u32 {
        self.shm.read_u32(off)
    }

    fn write_u32(&self, off: usize, val: u32) {
        self.shm.write_u32(off, val);
        self.stored(off, val);
    }

    fn read_u64(&self, off: usize) -> u64 {
        let val = self.shm.read_u64(off);
        let mut o = self.oracle.borrow_mut();
        if let Some((slot, word)) = o.sq_slot(off) {
            o.sq_read(slot, word, val);
        }
        val
    }

    fn write_u64(&self, off: usize, val: u64) {
        self.shm.write_u64(off, val);
        let mut o = self.oracle.borrow_mut();
        if let Some((slot, word)) = o.cq_slot(off) {
            o.cq_write(slot, word, val);
        }
    }

    fn load_acquire_u32(&self, off: usize) -> u32 {
        self.shm.load_acquire_u32(off)
    }

    fn store_release_u32(&self, off: usize, val: u32) {
        self.shm.store_release_u32(off, val);
        self.stored(off, val);
    }

    fn fence(&self) {
        self.shm.fence()
    }
}

/// One fuzz run: the window, the host, the oracle.
struct Run {
    shm: MemShm<Vec<std::sync::atomic::AtomicU32>>,
    layout: Layout,
    host: RingHost,
    counters: Arc<Counters>,
    oracle: RefCell<Oracle>,
}

impl Run {
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
        assert!(self.host.overflow_len() <= layout.cq_entries as usize);
        assert!(
            irqs <= 1 + b.requests + b.resets,
            "at most one interrupt per publish or reset"
        );
        let snap = self.counters.snapshot();
        assert_eq!(snap.live_objects, live as u64);
        assert_eq!(
            snap.completions, oracle.report.completed,
            "completions counted"
        );
        assert_eq!(snap.resets, oracle.report.resets, "resets counted");
        assert!(snap.sq_pending <= u64::from(layout.sq_entries));
        assert_eq!(
            self.shm.read_u32(host_ctl::ERRORS),
            (snap.bad_entries + snap.bad_indices) as u32
        );
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
        for _ in 0..4 {
            let cq_tail = self.oracle.borrow().cq_tail;
            self.shm.store_release_u32(guest_ctl::CQ_HEAD, cq_tail);
            self.step();
        }
        assert_eq!(self.host.overflow_len(), 0, "completions still held back");
        assert!(!self.host.stalled(), "a ring is still stopped");
        let o = self.oracle.borrow();
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
    let layout = layout();
    let words = (layout.size as usize).div_ceil(8);
    let cfg = config();
    let counters = Arc::new(Counters::default());
    let host = RingHost::new("fuzz", layout, cfg.clone(), Arc::clone(&counters));
    let shm = MemShm::zeroed(layout.size as usize);
    host.init_shm(&shm);
    let mut r = Run {
        shm,
        layout,
        host,
        counters,
        oracle: RefCell::new(Oracle::new(layout, cfg.max_objects)),
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
