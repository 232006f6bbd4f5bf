// SPDX-License-Identifier: GPL-2.0

//! The `--fault` kinds that break the protocol outright: duplicated and
//! forged acknowledgements, impossible ring indices, a stalled host.

mod common;

use std::time::{Duration, Instant};

use common::{req, Rig};
use pvmm_host::fault::{Fault, STALL_AT};
use pvmm_host::ring::Next;
use pvmm_wire::*;

/// The guest's recovery: request a reset, let the host run, skip the CQ.
fn reset(r: &mut Rig) {
    let seq = guest_request_reset(&r.shm);
    r.process();
    assert!(guest_reset_done(&r.shm, seq));
    r.cq.skip_all(&r.shm);
    r.sq = SqProducer::resume(r.layout, &r.shm);
}

#[test]
fn dup_ack_posts_every_completion_twice() {
    let mut r = Rig::with_fault(Fault::DupAck);
    r.submit(&[req(Op::Create, 1, 7, 0), req(Op::Destroy, 1, 7, 0)]);
    r.process();
    let c: Vec<_> = r.ok_completions().iter().map(|c| (c.op, c.tag)).collect();
    assert_eq!(
        c,
        [
            (Op::Create, 1),
            (Op::Create, 1),
            (Op::Destroy, 1),
            (Op::Destroy, 1)
        ]
    );
    let s = r.counters.snapshot();
    assert_eq!((s.faults_duplicated, s.completions), (2, 4));
    assert_eq!((s.creates, s.destroys), (1, 1), "the work is done once");
}

#[test]
fn forged_ack_answers_a_create_with_a_destroy_first() {
    let mut r = Rig::with_fault(Fault::ForgedAck);
    r.submit(&[req(Op::Create, 5, 7, 0)]);
    r.process();
    let c = r.ok_completions();
    assert_eq!(c.len(), 2);
    assert_eq!(
        (c[0].op, c[0].status, c[0].tag, c[0].space),
        (Op::Destroy, Status::Ok, 5, 7)
    );
    assert_eq!((c[1].op, c[1].tag, c[1].space), (Op::Create, 5, 7));
    assert_eq!(r.host.live_objects(), 1, "nothing was destroyed");
    // A DESTROY is answered as usual.
    r.submit(&[req(Op::Destroy, 5, 7, 0)]);
    r.process();
    assert_eq!(r.ok_completions().len(), 1);
    assert_eq!(r.counters.snapshot().faults_forged, 1);
}

#[test]
fn break_ring_publishes_an_impossible_tail_once() {
    let mut r = Rig::with_fault(Fault::BreakRing(2));
    r.submit(&[req(Op::Create, 1, 7, 0)]);
    r.process();
    assert_eq!(r.ok_completions().len(), 1, "not yet");
    let irqs = r.irqs;
    r.submit(&[req(Op::Create, 2, 8, 0)]);
    r.process();
    assert!(r.irqs > irqs, "the broken index comes with an interrupt");
    let head = r.shm.read_u32(guest_ctl::CQ_HEAD);
    assert_eq!(
        r.shm.read_u32(host_ctl::CQ_TAIL),
        head.wrapping_add(r.layout.cq_entries + 1)
    );
    assert!(matches!(r.cq.pop(&r.shm), Err(Error::BadIndex { .. })));
    assert_eq!(r.counters.snapshot().faults_broken, 1);
    // The guest recovers by resetting; everything works again after it.
    reset(&mut r);
    assert!(!r.host.stalled());
    assert!(r.completions().is_empty());
    r.submit(&[req(Op::Create, 3, 9, 0), req(Op::Create, 4, 10, 0)]);
    r.process();
    let c = r.ok_completions();
    assert_eq!((c.len(), c[0].tag, c[1].tag), (2, 3, 4));
    assert_eq!(r.counters.snapshot().faults_broken, 1, "once");
}

#[test]
fn break_ring_keeps_the_broken_tail_until_reset() {
    let mut r = Rig::with_fault(Fault::BreakRing(1));
    r.submit(&[req(Op::Create, 1, 7, 0)]);
    r.process();
    // The impossible tail stays, round after round, whenever the guest looks.
    for tag in 2..4 {
        assert!(r.cq.pop(&r.shm).is_err());
        r.submit(&[req(Op::Create, tag, 6 + u64::from(tag), 0)]);
        r.process();
    }
    assert!(r.cq.pop(&r.shm).is_err());
    assert_eq!(r.counters.snapshot().faults_broken, 1);
    // The reset restarts the CQ where the guest skips to, and service goes on.
    reset(&mut r);
    r.submit(&[req(Op::Create, 4, 20, 0)]);
    r.process();
    let c = r.ok_completions();
    assert_eq!(c.iter().map(|c| c.tag).collect::<Vec<_>>(), [4]);
}

#[test]
fn break_ring_back_publishes_an_impossible_head_until_reset() {
    let mut r = Rig::with_fault(Fault::BreakRingBack(1));
    r.submit(&[req(Op::Create, 1, 7, 0)]);
    r.process();
    assert_eq!(r.ok_completions().len(), 1, "the request itself is served");
    for _ in 0..2 {
        assert!(
            matches!(r.sq.space(&r.shm), Err(Error::BadIndex { .. })),
            "the guest sees an SQ head behind the ring"
        );
        r.process();
    }
    assert_eq!(r.counters.snapshot().faults_broken, 1);
    reset(&mut r);
    assert_eq!(r.sq.space(&r.shm), Ok(r.layout.sq_entries));
    r.submit(&[req(Op::Create, 2, 8, 0)]);
    r.process();
    assert_eq!(r.ok_completions()[0].tag, 2);
    assert_eq!(r.sq.space(&r.shm), Ok(r.layout.sq_entries));
}

/// Has the host take `STALL_AT - 1` DESTROYs, all served: the next one stalls.
fn destroys_before_the_stall(r: &mut Rig) {
    for i in 1..STALL_AT {
        let space = 1000 + i;
        r.submit(&[
            req(Op::Create, i as u32, space, 0),
            req(Op::Destroy, i as u32, space, 0),
        ]);
        r.process();
        assert_eq!(r.ok_completions().len(), 2, "served before the stall");
    }
}

#[test]
fn stall_serves_nothing_for_a_while_after_the_16th_destroy() {
    let d = Duration::from_millis(60);
    let mut r = Rig::with_fault(Fault::Stall(d));
    destroys_before_the_stall(&mut r);
    let head = r.shm.read_u32(host_ctl::SQ_HEAD);
    let irqs = r.irqs;
    r.submit(&[
        req(Op::Create, 1, 7, 0),
        req(Op::Destroy, 1, 7, 0),
        req(Op::Create, 2, 8, 0),
    ]);
    let t0 = Instant::now();
    r.process();
    assert!(r.completions().is_empty(), "not even the finished ones");
    assert_eq!(r.irqs, irqs);
    assert_eq!(
        r.shm.read_u32(host_ctl::SQ_HEAD),
        head + 2,
        "nothing after the DESTROY"
    );
    // A reset request waits too, and the host sleeps rather than spins.
    let seq = guest_request_reset(&r.shm);
    r.process();
    assert!(!guest_reset_done(&r.shm, seq));
    assert_eq!(r.host.next(&r.shm), Next::WaitDoorbell);
    assert!(r.host.fault_due_in().unwrap() <= d);
    let s = r.counters.snapshot();
    let served = 2 * (STALL_AT - 1);
    assert_eq!((s.faults_stalls, s.completions), (1, served));

    std::thread::sleep(r.host.fault_due_in().unwrap());
    r.process();
    assert!(t0.elapsed() >= d);
    assert!(guest_reset_done(&r.shm, seq), "served again");
    r.cq.skip_all(&r.shm);
    // Once only: the next DESTROY is served at once.
    r.submit(&[req(Op::Create, 3, 9, 0), req(Op::Destroy, 3, 9, 0)]);
    r.process();
    assert_eq!(r.ok_completions().len(), 2);
    assert_eq!(r.counters.snapshot().faults_stalls, 1);
    assert_eq!(r.host.fault_due_in(), None);
}

#[test]
fn stall_then_completions_come_out() {
    let d = Duration::from_millis(20);
    let mut r = Rig::with_fault(Fault::Stall(d));
    destroys_before_the_stall(&mut r);
    r.submit(&[req(Op::Create, 1, 7, 0), req(Op::Destroy, 1, 7, 0)]);
    r.process();
    assert!(r.completions().is_empty());
    std::thread::sleep(r.host.fault_due_in().unwrap());
    r.process();
    let c: Vec<_> = r.ok_completions().iter().map(|c| c.op).collect();
    assert_eq!(c, [Op::Create, Op::Destroy]);
}

#[test]
fn destroys_held_counts_what_the_host_has_not_answered() {
    let held = |r: &Rig| r.shm.read_u32(host_ctl::DESTROYS_HELD);
    // A host that answers: nothing held after a round.
    let mut r = Rig::new();
    r.submit(&[req(Op::Create, 1, 7, 0), req(Op::Destroy, 1, 7, 0)]);
    r.process();
    assert_eq!(held(&r), 0);
    // One that never answers holds every DESTROY it took.
    let mut r = Rig::with_fault(Fault::NeverAck);
    r.submit(&[
        req(Op::Create, 1, 7, 0),
        req(Op::Destroy, 1, 7, 0),
        req(Op::Create, 2, 8, 0),
        req(Op::Destroy, 2, 8, 0),
    ]);
    r.process();
    assert_eq!(held(&r), 2);
    r.submit(&[req(Op::Create, 3, 9, 0), req(Op::Destroy, 3, 9, 0)]);
    assert_eq!(held(&r), 2, "not taken yet");
    r.process();
    assert_eq!(held(&r), 3);
    // A reset forgets them.
    reset(&mut r);
    r.process();
    assert_eq!(held(&r), 0);
}
