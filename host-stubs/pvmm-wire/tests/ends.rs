// SPDX-License-Identifier: GPL-2.0

//! What the guest's and host's ends add to the rings: `CqWatch` (lock-free
//! polling for sync waits), tags and epochs, the reset handshake,
//! `SqProducer::consumed` and `SqConsumer::pending_destroys`.

mod common;

use common::*;
use proptest::prelude::*;
use pvmm_wire::*;

// ---- Lock-free completion polling (sync waits) -------------------------------

#[test]
fn cq_holds_sees_only_unconsumed_matching_completions() {
    for start in [0, u32::MAX - 2] {
        let mut e = ends(4, 8, start, start);
        let reqs: Vec<_> = (0..3).map(destroy).collect();
        for r in &reqs {
            e.gsq.push(&e.m, r).unwrap();
        }
        e.gsq.publish(&e.m);
        let l = Layout::new(4, 8).unwrap();
        let r = reqs[2];
        assert!(
            !cq_holds(&e.m, &l, Op::Destroy, r.space, r.tag),
            "nothing completed yet"
        );
        e.serve();
        assert!(cq_holds(&e.m, &l, Op::Destroy, r.space, r.tag));
        assert!(
            !cq_holds(&e.m, &l, Op::Create, r.space, r.tag),
            "opcode must match"
        );
        assert!(
            !cq_holds(&e.m, &l, Op::Destroy, r.space, r.tag + 1),
            "tag must match"
        );
        assert!(
            !cq_holds(&e.m, &l, Op::Destroy, r.space + 1, r.tag),
            "space must match"
        );
        assert_eq!(e.drain().len(), 3);
        assert!(
            !cq_holds(&e.m, &l, Op::Destroy, r.space, r.tag),
            "consumed and released"
        );
    }
}

#[test]
fn cq_holds_rejects_impossible_tail() {
    let (m, l) = ring(4, 8);
    let c = Completion {
        op: Op::Destroy,
        status: Status::Ok,
        tag: 7,
        space: 9,
    };
    let w = c.encode();
    m.write_u64(l.cq_off as usize, w[0]);
    m.write_u64(l.cq_off as usize + 8, w[1]);
    m.write_u32(host_ctl::CQ_TAIL, 1);
    assert!(cq_holds(&m, &l, Op::Destroy, 9, 7));
    // A tail further ahead than the ring is long is a lie: nothing is read.
    m.write_u32(host_ctl::CQ_TAIL, 9);
    assert!(!cq_holds(&m, &l, Op::Destroy, 9, 7));
}

proptest! {
    #[test]
    fn cq_holds_never_panics(head: u32, tail: u32, words in proptest::collection::vec(any::<u64>(), 16)) {
        let (m, l) = ring(4, 8);
        for (i, w) in words.iter().enumerate() {
            m.write_u64(l.cq_off as usize + i * 8, *w);
        }
        m.write_u32(guest_ctl::CQ_HEAD, head);
        m.write_u32(host_ctl::CQ_TAIL, tail);
        let _ = cq_holds(&m, &l, Op::Destroy, 1, 0);
    }
}

#[test]
fn tags_carry_the_epoch() {
    assert_eq!(tag(3, 1), 0x0300_0001);
    assert_eq!(tag_epoch(tag(3, 1)), 3);
    // The sequence number wraps inside its 24 bits and never touches the epoch.
    assert_eq!(tag(3, 1 << TAG_SEQ_BITS), tag(3, 0));
    assert_eq!(tag_epoch(tag(0xff, u32::MAX)), 0xff);
}

#[test]
fn epochs_count_up_per_instance() {
    let (shm, _) = ring(8, 8);
    assert_eq!(guest_next_epoch(&shm), 1);
    assert_eq!(guest_next_epoch(&shm), 2);
    shm.write_u32(guest_ctl::EPOCH, 0xff);
    assert_eq!(guest_next_epoch(&shm), 0);
}

#[test]
fn reset_handshake() {
    let (shm, layout) = ring(8, 8);
    let mut sq = SqProducer::resume(layout, &shm);
    let mut cq = CqConsumer::resume(layout, &shm);
    let mut host_sq = SqConsumer::new(layout);
    let mut host_cq = CqProducer::new(layout);
    for space in 1..=3 {
        sq.push(&shm, &req(Op::Create, space as u32, space, 0))
            .unwrap();
    }
    sq.publish(&shm);
    // The host takes one request and completes it; two stay unconsumed.
    assert_eq!(host_sq.pending(&shm), Ok(3));
    let r = host_sq.take(&shm).unwrap();
    host_sq.release(&shm);
    host_cq.push(&shm, &done(&r, Status::Ok)).unwrap();
    host_cq.publish(&shm);

    assert_eq!(host_reset_requested(&shm, 0), None);
    let seq = guest_request_reset(&shm);
    assert!(!guest_reset_done(&shm, seq));
    assert_eq!(host_reset_requested(&shm, 0), Some(seq));
    host_ack_reset(&shm, &mut host_sq, seq);
    assert_eq!(host_reset_requested(&shm, seq), None);
    assert!(guest_reset_done(&shm, seq));
    // Unconsumed submissions are gone and the guest skips the old completion.
    assert_eq!(host_sq.pending(&shm), Ok(0));
    assert_eq!(sq.space(&shm), Ok(8));
    cq.skip_all(&shm);
    assert_eq!(cq.pop(&shm), Ok(None));
    assert_eq!(host_cq.space(&shm), Ok(8));
}

#[test]
fn cq_watch_reads_each_entry_once_and_at_most_max() {
    let (m, l) = ring(4, 8);
    let mut host = CqProducer::new(l);
    let mut watch = CqWatch::new(Op::Destroy, 9, 7);
    for space in 1..=5 {
        host.push(&m, &done(&req(Op::Destroy, 7, space, 0), Status::Ok))
            .unwrap();
    }
    host.publish(&m);
    // Two reads per poll: entries 0..2, then 2..4; nothing matches yet.
    assert!(!watch.poll(&m, &l, 2));
    assert!(!watch.poll(&m, &l, 2));
    // The match is entry 8 (index 5), after the fifth.
    host.push(&m, &done(&req(Op::Destroy, 7, 9, 0), Status::Ok))
        .unwrap();
    host.publish(&m);
    assert!(!watch.poll(&m, &l, 1));
    assert!(watch.poll(&m, &l, 2));
    // Once the guest consumed past it, the watch starts over at the consumer.
    m.write_u32(guest_ctl::CQ_HEAD, 6);
    assert!(!watch.poll(&m, &l, 8));
}

#[test]
fn consumed_only_after_the_host_released_the_slot() {
    let (m, l) = ring(4, 8);
    // Start near the wrap of the free-running index.
    m.write_u32(guest_ctl::SQ_TAIL, u32::MAX - 1);
    m.write_u32(host_ctl::SQ_HEAD, u32::MAX - 1);
    let mut sq = SqProducer::resume(l, &m);
    let mut host = SqConsumer::resume(l, &m);
    let first = sq.index();
    sq.push(&m, &req(Op::Destroy, 1, 5, 0)).unwrap();
    sq.push(&m, &req(Op::Destroy, 2, 6, 0)).unwrap();
    sq.publish(&m);
    assert!(!sq.consumed(&m, first));
    host.take(&m).unwrap();
    // Popped but not released: not consumed yet, as far as the guest knows.
    assert!(!sq.consumed(&m, first));
    host.release(&m);
    assert!(sq.consumed(&m, first));
    assert!(!sq.consumed(&m, first.wrapping_add(1)));
    // An index never pushed is never consumed, whatever the host claims.
    m.write_u32(host_ctl::SQ_HEAD, first.wrapping_add(5));
    assert!(!sq.consumed(&m, first.wrapping_add(3)));
}

#[test]
fn pending_destroys_counts_only_destroys_not_yet_taken() {
    let (m, l) = ring(4, 8);
    let mut sq = SqProducer::resume(l, &m);
    let mut host = SqConsumer::new(l);
    for (op, space) in [(Op::Create, 5), (Op::Destroy, 5), (Op::Destroy, 6)] {
        sq.push(&m, &req(op, 1, space, 0)).unwrap();
    }
    sq.publish(&m);
    assert_eq!(host.pending_destroys(&m, host.pending(&m).unwrap()), 2);
    host.take(&m).unwrap();
    host.take(&m).unwrap();
    assert_eq!(host.pending_destroys(&m, host.pending(&m).unwrap()), 1);
    // It reads no more slots than the ring has, whatever the caller claims.
    assert!(host.pending_destroys(&m, u32::MAX) <= l.sq_entries);
}
