// SPDX-License-Identifier: GPL-2.0

//! Two lanes (`--lanes two`): CREATEs answered at once on the slot thread
//! while a worker thread does the DESTROYs' work; the worker's queue under
//! reset, disconnect and the fault modes; and the same answers as one lane.

mod common;

use std::time::{Duration, Instant};

use common::{req, Rig};
use proptest::prelude::*;
use pvmm_host::fault::Fault;
use pvmm_host::priority::Priority;
use pvmm_host::ring::{Config, Next};
use pvmm_wire::*;

/// A DESTROY of `MIB` MiB costs a second of CPU; one of 0 pages nothing.
const SLOW: u64 = 256;

fn lanes(fault: Fault) -> Rig {
    Rig::with(Layout::new(4, 8).unwrap(), lanes_config(fault))
}

fn lanes_config(fault: Fault) -> Config {
    Config {
        cost_us_per_mib: 1_000_000,
        chunk_us: 1_000,
        fault,
        destroy_worker: Some(Priority::default()),
        ..Config::default()
    }
}

/// Creates spaces `ids` (tag = id), four at a time, consuming the answers.
fn create_all(r: &mut Rig, ids: std::ops::RangeInclusive<u64>) {
    let ids: Vec<u64> = ids.collect();
    for chunk in ids.chunks(4) {
        let reqs: Vec<_> = chunk
            .iter()
            .map(|&i| req(Op::Create, i as u32, i, 0))
            .collect();
        r.submit(&reqs);
        assert_eq!(gather(r, reqs.len()).len(), reqs.len());
    }
}

fn destroy(id: u64, pages: u64) -> Request {
    req(Op::Destroy, id as u32, id, pages)
}

/// Rounds until `n` completions came (or 10 s passed), as the serving loop
/// would run them when the worker's eventfd wakes it.
fn gather(r: &mut Rig, n: usize) -> Vec<Completion> {
    gather_for(r, n, Duration::from_secs(10))
}

fn gather_for(r: &mut Rig, n: usize, wait: Duration) -> Vec<Completion> {
    let end = Instant::now() + wait;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < end {
        r.process();
        out.extend(r.ok_completions());
        std::thread::sleep(Duration::from_millis(1));
    }
    out
}

fn held(r: &Rig) -> u32 {
    r.shm.read_u32(host_ctl::DESTROYS_HELD)
}

#[test]
fn two_lanes_offer_the_create_lane() {
    let r = lanes(Fault::None);
    assert!(r.host.two_lanes());
    let offered = Header::read(&r.shm).unwrap().features;
    assert_ne!(offered & FEATURE_CREATE_LANE, 0);
    let one = Rig::new();
    assert!(!one.host.two_lanes());
    let offered = Header::read(&one.shm).unwrap().features;
    assert_eq!(offered & FEATURE_CREATE_LANE, 0);
}

#[test]
fn a_create_after_a_slow_destroy_is_answered_first() {
    create_first(lanes(Fault::None));
}

/// A guest that does not know the feature (an older driver) is served the
/// same way.
#[test]
fn an_older_guest_is_served_in_two_lanes_too() {
    let r = lanes(Fault::None);
    let offered = Header::read(&r.shm).unwrap().features;
    guest_attach(&r.shm, offered & !FEATURE_CREATE_LANE);
    assert_eq!(r.shm.read_u32(guest_ctl::FEATURES) & FEATURE_CREATE_LANE, 0);
    create_first(r);
}

fn create_first(mut r: Rig) {
    r.submit(&[req(Op::Create, 1, 7, 0)]);
    assert_eq!(gather(&mut r, 1).len(), 1);
    let t0 = Instant::now();
    r.submit(&[req(Op::Destroy, 1, 7, SLOW), req(Op::Create, 2, 8, 0)]);
    r.process();
    let c = r.ok_completions();
    assert_eq!(
        c.iter().map(|c| (c.op, c.tag)).collect::<Vec<_>>(),
        [(Op::Create, 2)],
        "only the CREATE is answered in the first round"
    );
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!((r.host.lane_in_flight(), held(&r)), (1, 1));
    let c = gather(&mut r, 1);
    assert_eq!(
        c.iter()
            .map(|c| (c.op, c.status, c.tag))
            .collect::<Vec<_>>(),
        [(Op::Destroy, Status::Ok, 1)]
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "the work was done"
    );
    assert_eq!((r.host.lane_in_flight(), held(&r)), (0, 0));
    let s = r.counters.snapshot();
    assert_eq!((s.creates, s.destroys, s.live_objects), (2, 1, 1));
    assert!(s.cpu_us >= 1_000_000, "the worker's CPU time: {s:?}");
}

#[test]
fn a_bad_destroy_is_answered_on_the_slot_thread() {
    let mut r = lanes(Fault::None);
    r.submit(&[req(Op::Create, 1, 7, 0)]);
    gather(&mut r, 1);
    r.submit(&[req(Op::Destroy, 9, 7, SLOW), req(Op::Destroy, 1, 5, SLOW)]);
    r.process();
    let c = r.ok_completions();
    let got: Vec<_> = c.iter().map(|c| c.status).collect();
    assert_eq!(got, [Status::StaleTag, Status::UnknownSpace]);
    assert_eq!((r.host.lane_in_flight(), r.host.live_objects()), (0, 1));
}

/// A guest that does not consume: the worker's completions stay on its side
/// once the held-back ones reach their bound, and come when there is room.
#[test]
fn finished_destroys_wait_for_room() {
    let mut r = lanes(Fault::None);
    let cq = r.layout.cq_entries as usize;
    for first in [1u64, 5, 9, 13] {
        let n = if first == 13 { 2 } else { 4 };
        let reqs: Vec<_> = (first..first + n)
            .map(|i| req(Op::Create, 1, i, 0))
            .collect();
        r.submit(&reqs);
        r.process();
    }
    assert_eq!(r.host.overflow_len(), 14 - cq);
    let destroys: Vec<_> = (1..=4).map(|i| req(Op::Destroy, 1, i, 0)).collect();
    r.submit(&destroys);
    r.process();
    let t0 = Instant::now();
    while r.counters.snapshot().destroys < 4 && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(10));
    r.process();
    assert_eq!(r.host.overflow_len(), cq, "held back up to the bound");
    assert_eq!(r.host.lane_in_flight(), 2, "the rest wait with the worker");
    let c = gather(&mut r, 18);
    let destroyed = c.iter().filter(|c| c.op == Op::Destroy).count();
    assert_eq!((c.len(), destroyed), (18, 4));
}

/// The worker's bound is its own, not the CQ's: with more DESTROYs on a
/// busy worker than the CQ has entries, a CREATE behind them in the ring is
/// still taken and answered at once.
#[test]
fn a_create_behind_more_destroys_than_the_cq_holds_is_answered() {
    let mut r = lanes(Fault::None);
    let cq = r.layout.cq_entries as usize;
    create_all(&mut r, 1..=11);
    // The first keeps the worker busy for 10 s; the rest queue behind it.
    r.submit(&[
        destroy(1, 10 * SLOW),
        destroy(2, 0),
        destroy(3, 0),
        destroy(4, 0),
    ]);
    r.process();
    r.submit(&(5..=8).map(|i| destroy(i, 0)).collect::<Vec<_>>());
    r.process();
    assert_eq!(r.host.lane_in_flight(), cq);
    let t0 = Instant::now();
    r.submit(&[
        destroy(9, 0),
        destroy(10, 0),
        destroy(11, 0),
        req(Op::Create, 12, 12, 0),
    ]);
    r.process();
    let c = r.ok_completions();
    assert_eq!(
        c.iter().map(|c| (c.op, c.tag)).collect::<Vec<_>>(),
        [(Op::Create, 12)],
        "the CREATE waited for the worker"
    );
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!((r.host.lane_in_flight(), held(&r)), (11, 11));
    assert_eq!(r.counters.snapshot().sq_pending, 0);
}

/// `--worker-queue`: once the worker holds that many DESTROYs, the slot
/// thread takes nothing more, CREATEs included, until it hands some back.
#[test]
fn the_worker_queue_bound_stops_the_intake() {
    let mut r = Rig::with(
        Layout::new(4, 8).unwrap(),
        Config {
            worker_queue: 6,
            ..lanes_config(Fault::None)
        },
    );
    create_all(&mut r, 1..=8);
    r.submit(&[
        destroy(1, SLOW),
        destroy(2, 0),
        destroy(3, 0),
        destroy(4, 0),
    ]);
    r.process();
    r.submit(&[
        destroy(5, 0),
        destroy(6, 0),
        destroy(7, 0),
        req(Op::Create, 9, 9, 0),
    ]);
    r.process();
    assert!(r.ok_completions().is_empty(), "taken past the bound");
    assert_eq!((r.host.lane_in_flight(), held(&r)), (6, 6));
    assert_eq!(r.counters.snapshot().sq_pending, 2);
    // The serving loop sleeps until the worker's eventfd rings.
    assert_eq!(r.host.next(&r.shm), Next::WaitDoorbell);
    // Once the worker is done with the slow one, the rest are taken.
    let c = gather(&mut r, 8);
    let creates = c.iter().filter(|c| c.op == Op::Create).count();
    assert_eq!((c.len(), creates), (8, 1));
    assert_eq!((r.host.lane_in_flight(), held(&r)), (0, 0));
    assert_eq!(r.counters.snapshot().sq_pending, 0);
}

/// One lane has no worker, so `--worker-queue` bounds nothing.
#[test]
fn one_lane_ignores_the_worker_queue() {
    let mut r = Rig::with(
        Layout::new(4, 8).unwrap(),
        Config {
            worker_queue: 1,
            ..Config::default()
        },
    );
    create_all(&mut r, 1..=4);
    r.submit(&(1..=4).map(|i| destroy(i, 0)).collect::<Vec<_>>());
    r.process();
    assert_eq!(r.ok_completions().len(), 4);
}

/// `dup-ack` posts two completions for each DESTROY the worker hands back:
/// they are taken back one at a time, so the held-back completions stay at
/// their bound (plus the second of the last pair), not twice that.
#[test]
fn dup_acked_destroys_keep_to_the_overflow_bound() {
    let mut r = Rig::with(Layout::new(8, 8).unwrap(), lanes_config(Fault::DupAck));
    let cq = r.layout.cq_entries as usize;
    for first in [1u64, 5] {
        let reqs: Vec<_> = (first..first + 4)
            .map(|i| req(Op::Create, i as u32, i, 0))
            .collect();
        r.submit(&reqs);
        r.process();
        assert_eq!(r.ok_completions().len(), 8);
    }
    // Four more fill the CQ with their pairs; the guest leaves them there.
    r.submit(
        &(101..=104)
            .map(|i| req(Op::Create, 1, i, 0))
            .collect::<Vec<_>>(),
    );
    r.process();
    assert_eq!(r.host.overflow_len(), 0);
    // 20 ms of work each: none is done before the round ends.
    r.submit(&(1..=8).map(|i| destroy(i, 5)).collect::<Vec<_>>());
    r.process();
    let t0 = Instant::now();
    while r.counters.snapshot().destroys < 8 && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(10));
    r.process();
    assert_eq!((r.host.overflow_len(), r.host.lane_in_flight()), (cq, 4));
    let c = gather(&mut r, 24);
    let destroyed = c.iter().filter(|c| c.op == Op::Destroy).count();
    assert_eq!((c.len(), destroyed), (24, 16));
}

#[test]
fn reset_discards_the_worker_queue() {
    let mut r = lanes(Fault::None);
    let creates: Vec<_> = (1..=4)
        .map(|i| req(Op::Create, i, u64::from(i), 0))
        .collect();
    r.submit(&creates);
    assert_eq!(gather(&mut r, 4).len(), 4);
    let destroys: Vec<_> = (1..=4)
        .map(|i| req(Op::Destroy, i, u64::from(i), 10 * SLOW))
        .collect();
    r.submit(&destroys);
    r.process();
    assert_eq!((r.host.lane_in_flight(), held(&r)), (4, 4));
    let t0 = Instant::now();
    let seq = guest_request_reset(&r.shm);
    r.process();
    assert!(guest_reset_done(&r.shm, seq));
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    r.cq.skip_all(&r.shm);
    assert_eq!((r.host.lane_in_flight(), held(&r)), (0, 0));
    let s = r.counters.snapshot();
    // The jobs not started yet (the worker may not have begun the first).
    assert!((3..=4).contains(&s.objects_dropped), "{s:?}");
    assert_eq!(s.dropped_completions, 4);
    // Nothing of the old generation comes back; the new one is served.
    r.submit(&[req(Op::Create, 5, 1, 0), req(Op::Destroy, 5, 1, 0)]);
    let c = gather(&mut r, 2);
    std::thread::sleep(Duration::from_millis(50));
    r.process();
    assert!(r.completions().is_empty(), "an old DESTROY came back");
    let got: Vec<_> = c.iter().map(|c| (c.op, c.tag)).collect();
    assert_eq!(got, [(Op::Create, 5), (Op::Destroy, 5)]);
}

#[test]
fn disconnect_stops_and_joins_the_worker() {
    let mut r = lanes(Fault::None);
    r.submit(&[req(Op::Create, 1, 7, 0), req(Op::Create, 2, 8, 0)]);
    gather(&mut r, 2);
    r.submit(&[
        req(Op::Destroy, 1, 7, 100 * SLOW),
        req(Op::Destroy, 2, 8, SLOW),
    ]);
    r.process();
    // Let the worker start the first one.
    std::thread::sleep(Duration::from_millis(50));
    let t0 = Instant::now();
    let Rig { host, counters, .. } = r;
    host.disconnect();
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    let s = counters.snapshot();
    assert_eq!((s.objects_dropped, s.dropped_completions), (1, 2));
    // Joined: the stopped job's accounting is done before disconnect returns.
    assert_eq!(s.destroys, 1, "{s:?}");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(counters.snapshot(), s, "the worker still runs");
}

#[test]
fn late_ack_delays_destroys_from_the_worker() {
    let d = Duration::from_millis(150);
    let mut r = lanes(Fault::LateAck(d));
    r.submit(&[req(Op::Create, 1, 7, 0)]);
    assert_eq!(gather(&mut r, 1).len(), 1);
    let t0 = Instant::now();
    r.submit(&[req(Op::Destroy, 1, 7, 0)]);
    let c = gather(&mut r, 1);
    assert_eq!(c[0].op, Op::Destroy);
    assert!(t0.elapsed() >= d, "{:?}", t0.elapsed());
}

#[test]
fn stop_stops_answering_the_worker_too() {
    let mut r = lanes(Fault::Stop(2));
    r.submit(&[req(Op::Create, 1, 7, 0), req(Op::Destroy, 1, 7, 0)]);
    r.process();
    std::thread::sleep(Duration::from_millis(100));
    r.submit(&[req(Op::Create, 2, 8, 0)]);
    // As with one lane, nothing is published once the count is reached:
    // not the CREATE's answer, not what the worker finished.
    assert!(gather_for(&mut r, 1, Duration::from_millis(300)).is_empty());
    let s = r.counters.snapshot();
    assert_eq!((s.creates, s.destroys), (1, 1), "the third is not taken");
    assert_eq!(r.shm.read_u32(host_ctl::SQ_HEAD), 2);
}

/// One host of each kind over the same requests, in batches.
fn answers(two: bool, batches: &[Vec<Request>]) -> Vec<Vec<(u8, u32, u64, u8)>> {
    let mut r = if two {
        lanes(Fault::None)
    } else {
        Rig::with(Layout::new(4, 8).unwrap(), Config::default())
    };
    let mut out = Vec::new();
    for batch in batches {
        r.submit(batch);
        let mut got: Vec<_> = gather(&mut r, batch.len())
            .iter()
            .map(|c| (c.op as u8, c.tag, c.space, c.status as u8))
            .collect();
        got.sort_unstable();
        out.push(got);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Whatever the requests, two lanes give the answers one lane gives (in
    /// another order within a batch): the DESTROY is checked in ring order.
    #[test]
    fn two_lanes_answer_as_one(
        batches in proptest::collection::vec(
            proptest::collection::vec((any::<bool>(), 1u32..4, 1u64..4), 1..=4),
            1..8,
        )
    ) {
        let batches: Vec<Vec<Request>> = batches
            .iter()
            .map(|b| b.iter().map(|&(create, tag, space)| {
                let op = if create { Op::Create } else { Op::Destroy };
                req(op, tag, space, 0)
            }).collect())
            .collect();
        prop_assert_eq!(answers(true, &batches), answers(false, &batches));
    }
}
