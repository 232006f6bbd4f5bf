// SPDX-License-Identifier: GPL-2.0

//! Host behaviour a guest relies on beyond the plain request path: tag
//! checks, objects dropped with the guest, the reset handshake, the cost
//! clamp and the release audit.

mod common;

use std::cell::Cell;

use common::{req, Rig};
use pvmm_host::ring::{Config, Next};
use pvmm_wire::*;

#[test]
fn destroy_with_another_tag_is_stale_and_keeps_the_object() {
    let mut r = Rig::new();
    let old = tag(1, 5);
    let new = tag(2, 5);
    r.submit(&[req(Op::Create, new, 7, 0), req(Op::Destroy, old, 7, 0)]);
    r.process();
    let c = r.ok_completions();
    assert_eq!(
        (c[1].op, c[1].status, c[1].tag),
        (Op::Destroy, Status::StaleTag, old)
    );
    assert_eq!(r.host.live_objects(), 1, "the live object is kept");
    r.submit(&[req(Op::Destroy, new, 7, 0)]);
    r.process();
    assert_eq!(r.ok_completions()[0].status, Status::Ok);
    let s = r.counters.snapshot();
    assert_eq!((s.stale_tags, s.destroys, s.live_objects), (1, 1, 0));
}

#[test]
fn objects_are_dropped_when_the_guest_goes_away() {
    let mut r = Rig::new();
    r.submit(&[req(Op::Create, 1, 7, 0), req(Op::Create, 2, 8, 0)]);
    r.process();
    assert_eq!(r.host.live_objects(), 2);
    let Rig { host, counters, .. } = r;
    host.disconnect();
    let s = counters.snapshot();
    assert_eq!((s.objects_dropped, s.live_objects), (2, 0));
}

/// The guest's half of the handshake: request, ring (here: a round), check.
fn reset(r: &mut Rig) -> u32 {
    let seq = guest_request_reset(&r.shm);
    r.process();
    assert!(guest_reset_done(&r.shm, seq), "reset {seq} acknowledged");
    r.cq.skip_all(&r.shm);
    seq
}

#[test]
fn reset_forgets_objects_and_held_completions() {
    let mut r = Rig::new();
    let cq = r.layout.cq_entries;
    // Fill the CQ and hold more back; leave submissions in the SQ.
    for i in 0..3 {
        let reqs: Vec<_> = (0..4)
            .map(|j| req(Op::Create, 1, 1 + i * 4 + j, 0))
            .collect();
        r.submit(&reqs);
        r.process();
    }
    assert_eq!(r.host.overflow_len(), 12 - cq as usize);
    r.submit(&[req(Op::Create, 1, 100, 0), req(Op::Create, 1, 101, 0)]);
    let irqs = r.irqs;
    // Ring stays as the guest left it until the reset round.
    reset(&mut r);
    assert!(r.irqs > irqs, "the acknowledgement interrupts");
    assert_eq!(r.host.live_objects(), 0);
    assert_eq!(r.host.overflow_len(), 0);
    assert_eq!(
        r.shm.read_u32(host_ctl::SQ_HEAD),
        r.shm.read_u32(guest_ctl::SQ_TAIL),
        "unconsumed submissions are discarded"
    );
    assert!(
        r.completions().is_empty(),
        "nothing held back comes out later"
    );
    let s = r.counters.snapshot();
    assert_eq!((s.resets, s.objects_dropped, s.creates), (1, 12, 12));
    assert_eq!(s.dropped_completions, 12 - u64::from(cq));
    // Service goes on; a DESTROY of a forgotten space is unknown now.
    r.submit(&[req(Op::Destroy, 1, 1, 0), req(Op::Create, 2, 1, 0)]);
    r.process();
    let c = r.ok_completions();
    assert_eq!(
        (c[0].status, c[1].status),
        (Status::UnknownSpace, Status::Ok)
    );
    // The same value again is no new request; the next one is.
    r.process();
    assert_eq!(r.counters.snapshot().resets, 1);
    reset(&mut r);
    assert_eq!(r.counters.snapshot().resets, 2);
}

#[test]
fn reset_is_seen_between_costly_destroys() {
    let cfg = Config {
        cost_base_us: 20_000,
        cost_us_per_mib: 0,
        ..Config::default()
    };
    let mut r = Rig::with(Layout::new(8, 8).unwrap(), cfg);
    let creates: Vec<_> = (1..=4).map(|s| req(Op::Create, 1, s, 0)).collect();
    r.submit(&creates);
    r.process();
    r.completions();
    let destroys: Vec<_> = (1..=4).map(|s| req(Op::Destroy, 1, s, 0)).collect();
    r.submit(&destroys);
    // The guest asks for a reset while the first DESTROY is being worked on
    // (`stop` is polled between chunks of work).
    let asked = Cell::new(None);
    let shm = &r.shm;
    let stop = || {
        if asked.get().is_none() {
            asked.set(Some(guest_request_reset(shm)));
        }
        false
    };
    r.host.process(&r.shm, &mut || {}, &stop);
    let seq = asked.get().expect("work was chunked");
    assert!(guest_reset_done(&r.shm, seq));
    let s = r.counters.snapshot();
    assert_eq!(s.destroys, 1, "the backlog is discarded, not worked off");
    assert_eq!((s.resets, s.objects_dropped), (1, 3));
    assert_eq!(
        r.shm.read_u32(host_ctl::SQ_HEAD),
        r.shm.read_u32(guest_ctl::SQ_TAIL)
    );
}

#[test]
fn reset_unstalls_both_rings() {
    let mut r = Rig::new();
    // An impossible CQ head stalls the completion ring...
    r.shm.store_release_u32(guest_ctl::CQ_HEAD, 1000);
    r.submit(&[req(Op::Create, 1, 7, 0)]);
    r.process();
    assert!(r.host.stalled());
    // ...and an impossible SQ tail the submission ring.
    r.shm.store_release_u32(guest_ctl::SQ_TAIL, 5000);
    r.process();
    assert_eq!(r.counters.snapshot().bad_indices, 2);
    // No GUEST_READY toggle: the reset alone restarts both.
    reset(&mut r);
    assert!(!r.host.stalled());
    r.sq = SqProducer::resume(r.layout, &r.shm);
    r.submit(&[req(Op::Create, 2, 8, 0)]);
    r.process();
    let c = r.ok_completions();
    assert_eq!((c.len(), c[0].tag, c[0].space), (1, 2, 8));
}

/// The window as the host sees it, with the guest racing it: any read of
/// the host's CQ tail returns garbage (the guest rewrote it right after the
/// host's store). Counts the host's 64-bit reads.
struct Racing<'a> {
    shm: &'a pvmm_host::shm::MappedShm,
    reads: Cell<u64>,
}

impl<'a> Racing<'a> {
    fn new(shm: &'a pvmm_host::shm::MappedShm) -> Self {
        Racing {
            shm,
            reads: Cell::new(0),
        }
    }
}

impl SharedMemory for Racing<'_> {
    fn size(&self) -> usize {
        self.shm.size()
    }
    fn read_u32(&self, off: usize) -> u32 {
        self.load_acquire_u32(off)
    }
    fn write_u32(&self, off: usize, val: u32) {
        self.shm.write_u32(off, val)
    }
    fn read_u64(&self, off: usize) -> u64 {
        self.reads.set(self.reads.get() + 1);
        self.shm.read_u64(off)
    }
    fn write_u64(&self, off: usize, val: u64) {
        self.shm.write_u64(off, val)
    }
    fn load_acquire_u32(&self, off: usize) -> u32 {
        match off {
            host_ctl::CQ_TAIL => 1000,
            _ => self.shm.load_acquire_u32(off),
        }
    }
    fn store_release_u32(&self, off: usize, val: u32) {
        self.shm.store_release_u32(off, val)
    }
    fn fence(&self) {
        self.shm.fence()
    }
}

#[test]
fn reset_resumes_the_cq_from_the_hosts_own_tail() {
    let mut r = Rig::new();
    r.submit(&[req(Op::Create, 1, 7, 0)]);
    r.process();
    assert_eq!(r.ok_completions().len(), 1);
    let seq = guest_request_reset(&r.shm);
    r.host.process(&Racing::new(&r.shm), &mut || {}, &|| false);
    assert!(guest_reset_done(&r.shm, seq));
    r.cq.skip_all(&r.shm);
    r.submit(&[req(Op::Create, 2, 8, 0)]);
    r.process();
    let c = r.completions();
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(r.shm.load_acquire_u32(host_ctl::CQ_TAIL), 2);
    assert_eq!(r.counters.snapshot().bad_indices, 0);
}

#[test]
fn reset_wakes_an_idle_host() {
    let mut r = Rig::new();
    r.process();
    assert_eq!(r.host.next(&r.shm), Next::WaitDoorbell);
    // Stored without a doorbell: the host's idle check still sees it.
    guest_request_reset(&r.shm);
    assert_eq!(r.host.next(&r.shm), Next::Run);
}

#[test]
fn destroy_pages_beyond_guest_memory_are_clamped() {
    let cfg = Config {
        cost_us_per_mib: 20,
        guest_pages: 256,
        ..Config::default()
    };
    assert_eq!(cfg.destroy_cost_us(MAX_PAGES), (20, false));
    assert_eq!(
        Config::default().destroy_cost_us(MAX_PAGES),
        (4096 * 20, false)
    );
    let mut r = Rig::with(Layout::new(4, 8).unwrap(), cfg);
    r.submit(&[
        req(Op::Create, 1, 7, 0),
        req(Op::Destroy, 1, 7, MAX_PAGES),
        req(Op::Create, 2, 8, 0),
        req(Op::Destroy, 2, 8, 256),
    ]);
    let t = std::time::Instant::now();
    r.process();
    assert!(
        t.elapsed().as_secs() < 1,
        "2^40 pages cost {:?}",
        t.elapsed()
    );
    assert_eq!(r.ok_completions().len(), 4);
    let s = r.counters.snapshot();
    assert_eq!((s.destroys, s.pages_clamped, s.work_capped), (2, 1, 0));
}

fn audited(max_objects: usize) -> (Rig, LogProducer) {
    let layout = Layout::new(4, 8).unwrap().with_release_log(16).unwrap();
    let cfg = Config {
        cost_us_per_mib: 0,
        max_objects,
        ..Config::default()
    };
    let r = Rig::with(layout, cfg);
    let h = Header::read(&r.shm).unwrap();
    assert_ne!(h.features & FEATURE_RELEASE_LOG, 0, "offered with a log");
    let log = LogProducer::resume(layout, &r.shm);
    (r, log)
}

fn release(log: &mut LogProducer, r: &Rig, space: u64, tag: u32, why: Why) {
    log.push(&r.shm, &Release { space, tag, why }).unwrap();
}

#[test]
fn release_log_is_offered_only_when_auditing() {
    let r = Rig::new();
    assert_eq!(r.layout.log_entries, 0);
    let h = Header::read(&r.shm).unwrap();
    assert_eq!(r.shm.read_u32(header::FEATURES) & FEATURE_RELEASE_LOG, 0);
    assert_eq!(h.features & FEATURE_RESET, FEATURE_RESET);
}

#[test]
fn audit_counts_releases_the_host_never_acknowledged() {
    let (mut r, mut log) = audited(64);
    r.submit(&[req(Op::Create, 1, 7, 0), req(Op::Destroy, 1, 7, 0)]);
    r.process();
    assert_eq!(r.completions().len(), 2);
    // Acknowledged: fine. Never acknowledged: premature.
    release(&mut log, &r, 7, 1, Why::Acked);
    release(&mut log, &r, 8, 2, Why::Acked);
    // Forced releases are admitted, not premature.
    release(&mut log, &r, 9, 3, Why::Forced);
    // After a reset that never happened: premature.
    release(&mut log, &r, 10, 4, Why::Reset);
    r.process();
    let s = r.counters.snapshot();
    assert_eq!(s.releases_audited, 4);
    assert_eq!(
        (
            s.premature_releases,
            s.released_forced,
            s.released_after_reset
        ),
        (2, 1, 1)
    );
    assert_eq!(r.shm.read_u32(host_ctl::LOG_HEAD), 4, "slots handed back");

    // After a real reset, Reset releases are legitimate; a second release
    // of an acknowledged space is not.
    reset(&mut r);
    release(&mut log, &r, 11, 5, Why::Reset);
    release(&mut log, &r, 7, 1, Why::Acked);
    r.process();
    let s = r.counters.snapshot();
    assert_eq!((s.premature_releases, s.released_after_reset), (3, 2));

    // Hostile log input: a bad entry is counted and skipped...
    let slot = r.layout.log_off as usize + 6 * LOG_ENTRY_SIZE;
    r.shm.write_u64(slot, 7);
    r.shm.write_u64(slot + 8, 9 << 32);
    r.shm.store_release_u32(guest_ctl::LOG_TAIL, 7);
    r.process();
    assert_eq!(r.counters.snapshot().bad_entries, 1);
    // ...an impossible index ends the audit, and service goes on.
    r.shm.store_release_u32(guest_ctl::LOG_TAIL, 1000);
    r.process();
    r.process();
    let s = r.counters.snapshot();
    assert_eq!((s.bad_indices, s.releases_audited), (1, 6));
    r.submit(&[req(Op::Create, 6, 12, 0)]);
    r.process();
    assert_eq!(r.ok_completions().len(), 1);
}

#[test]
fn audit_memory_is_bounded() {
    // max_objects 1: at most 2 acknowledgements remembered.
    let (mut r, mut log) = audited(1);
    for s in 1..=3 {
        r.submit(&[req(Op::Create, 1, s, 0), req(Op::Destroy, 1, s, 0)]);
        r.process();
        r.completions();
    }
    assert_eq!(r.counters.snapshot().audit_evicted, 1);
    for s in 1..=3 {
        release(&mut log, &r, s, 1, Why::Acked);
    }
    r.process();
    let s = r.counters.snapshot();
    assert_eq!((s.releases_audited, s.premature_releases), (3, 1));
}

#[test]
fn audit_ignores_acks_a_reset_discarded() {
    let (mut r, mut log) = audited(64);
    r.submit(&[req(Op::Create, 1, 7, 0)]);
    r.process();
    // The guest does not consume: the DESTROY ack waits for CQ space.
    for k in 0..2 {
        let fill: Vec<_> = (0..4)
            .map(|i| req(Op::Create, 2, 20 + k * 4 + i, 0))
            .collect();
        r.submit(&fill);
        r.process();
    }
    r.submit(&[req(Op::Destroy, 1, 7, 0)]);
    r.process();
    assert_eq!(r.host.overflow_len(), 2, "the DESTROY ack is held back");
    reset(&mut r);
    // The guest never saw that acknowledgement.
    release(&mut log, &r, 7, 1, Why::Acked);
    r.process();
    assert_eq!(r.counters.snapshot().premature_releases, 1);
}

/// `--audit-releases` tells the guest how many DESTROYs wait in the ring,
/// before every costly one: each waiting entry is peeked at once, not once
/// per DESTROY (which made a round over a full ring quadratic).
#[test]
fn counting_waiting_destroys_reads_each_entry_once() {
    const N: u32 = 256;
    let layout = Layout::new(N, N).unwrap().with_release_log(16).unwrap();
    let cfg = Config {
        cost_base_us: 1,
        ..Config::default()
    };
    let mut r = Rig::with(layout, cfg);
    let reqs: Vec<Request> = (1..=u64::from(N))
        .map(|s| req(Op::Destroy, 1, s, 0))
        .collect();
    r.submit(&reqs);
    let seen = Racing::new(&r.shm);
    r.host.process(&seen, &mut || {}, &|| false);
    assert_eq!(r.counters.snapshot().unknown_space, u64::from(N));
    // Four words to take each entry, one to peek at it, and the log.
    let reads = seen.reads.get();
    assert!(reads <= u64::from(6 * N), "{reads} reads for {N} entries");
}
