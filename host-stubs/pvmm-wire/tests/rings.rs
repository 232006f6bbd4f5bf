// SPDX-License-Identifier: GPL-2.0

//! The rings end to end: full rings, wraparound past `u32` overflow, hostile
//! indices on either side, garbage entries consumed.

mod common;

use std::sync::atomic::AtomicU32;

use common::*;
use proptest::prelude::*;
use pvmm_wire::mem::MemShm;
use pvmm_wire::*;

#[test]
fn round_trip_through_rings() {
    let mut e = ends(8, 16, 0, 0);
    let reqs: Vec<_> = (0..5).map(destroy).collect();
    for r in &reqs {
        e.gsq.push(&e.m, r).unwrap();
    }
    assert_eq!(e.hsq.pending(&e.m), Ok(0), "not visible before publish");
    e.gsq.publish(&e.m);
    assert_eq!(e.hsq.pending(&e.m), Ok(5));
    assert_eq!(e.serve(), 5);
    let got = e.drain();
    assert_eq!(
        got,
        reqs.iter().map(|r| done(r, Status::Ok)).collect::<Vec<_>>()
    );
    assert_eq!(e.gsq.space(&e.m), Ok(8));
    assert_eq!(e.hcq.space(&e.m), Ok(16));
    assert_eq!(e.gsq.index(), 5);
    assert_eq!(e.hsq.index(), 5);
    assert_eq!(e.hcq.index(), 5);
    assert_eq!(gcq_index(&e), 5);
}

#[test]
fn full_rings() {
    let mut e = ends(4, 4, 0, 0);
    for i in 0..4 {
        e.gsq.push(&e.m, &destroy(i)).unwrap();
    }
    assert_eq!(e.gsq.push(&e.m, &destroy(9)), Err(Error::Full));
    assert_eq!(e.gsq.space(&e.m), Ok(0));
    e.gsq.publish(&e.m);
    assert_eq!(e.hsq.pending(&e.m), Ok(4));
    // Consumed but not released: still full for the guest.
    let r = e.hsq.take(&e.m).unwrap();
    assert_eq!(e.gsq.push(&e.m, &destroy(9)), Err(Error::Full));
    e.hsq.release(&e.m);
    assert_eq!(e.gsq.space(&e.m), Ok(1));

    for _ in 0..4 {
        e.hcq.push(&e.m, &done(&r, Status::Ok)).unwrap();
    }
    assert_eq!(e.hcq.push(&e.m, &done(&r, Status::Ok)), Err(Error::Full));
    e.hcq.publish(&e.m);
    assert_eq!(e.drain().len(), 4);
    assert_eq!(e.hcq.space(&e.m), Ok(4));
}

#[test]
fn wraparound_over_u32_overflow() {
    for start in [u32::MAX - 20, u32::MAX - 3, u32::MAX, 0x7fff_fffe] {
        let mut e = ends(8, 16, start, start.wrapping_sub(5));
        let mut sent = Vec::new();
        let mut got = Vec::new();
        for round in 0..10u32 {
            let burst = (0..(round % 8 + 1)).map(|k| destroy(round * 10 + k));
            let (s, g) = e.exchange(burst);
            sent.extend(s);
            got.extend(g);
        }
        assert_eq!(got, sent);
        assert_eq!(e.gsq.index(), start.wrapping_add(sent.len() as u32));
        assert_eq!(
            e.m.read_u32(host_ctl::SQ_HEAD),
            start.wrapping_add(sent.len() as u32)
        );
        assert_eq!(
            e.m.read_u32(guest_ctl::CQ_HEAD),
            start.wrapping_sub(5).wrapping_add(sent.len() as u32)
        );
    }
}

#[test]
fn hostile_guest_sq_tail() {
    let e = ends(8, 16, u32::MAX - 2, 0);
    let head = u32::MAX - 2;
    for tail in [
        head.wrapping_add(9),
        head.wrapping_sub(1),
        head.wrapping_add(0x8000_0000),
        head ^ 0xffff_0000,
    ] {
        e.m.write_u32(guest_ctl::SQ_TAIL, tail);
        assert_eq!(
            e.hsq.pending(&e.m),
            Err(Error::BadIndex {
                ours: head,
                theirs: tail
            }),
            "{tail:#x}"
        );
    }
    e.m.write_u32(guest_ctl::SQ_TAIL, head.wrapping_add(8));
    assert_eq!(e.hsq.pending(&e.m), Ok(8));
}

#[test]
fn hostile_guest_cq_head() {
    let mut e = ends(8, 16, 0, 3);
    for head in [4u32, 3u32.wrapping_sub(17), 0x8000_0003, 100] {
        e.m.write_u32(guest_ctl::CQ_HEAD, head);
        assert_eq!(
            e.hcq.space(&e.m),
            Err(Error::BadIndex {
                ours: 3,
                theirs: head
            })
        );
        let c = done(&destroy(1), Status::Ok);
        assert!(matches!(e.hcq.push(&e.m, &c), Err(Error::BadIndex { .. })));
    }
    assert_eq!(e.hcq.index(), 3, "failed pushes must not advance");
}

#[test]
fn hostile_host_indices() {
    let mut e = ends(8, 16, 10, 20);
    e.m.write_u32(host_ctl::SQ_HEAD, 11);
    assert_eq!(
        e.gsq.push(&e.m, &destroy(0)),
        Err(Error::BadIndex {
            ours: 10,
            theirs: 11
        })
    );
    e.m.write_u32(host_ctl::SQ_HEAD, 1);
    assert!(matches!(e.gsq.space(&e.m), Err(Error::BadIndex { .. })));
    e.m.write_u32(host_ctl::CQ_TAIL, 20 + 17);
    assert_eq!(
        e.gcq.pop(&e.m),
        Err(Error::BadIndex {
            ours: 20,
            theirs: 37
        })
    );
    e.m.write_u32(host_ctl::CQ_TAIL, 19);
    assert!(matches!(e.gcq.pop(&e.m), Err(Error::BadIndex { .. })));
    assert_eq!(gcq_index(&e), 20);
    // A garbage completion is consumed and reported.
    e.m.write_u32(host_ctl::CQ_TAIL, 21);
    assert_eq!(e.gcq.pop(&e.m), Ok(Some(Err(BadEntry::Space(0)))));
    assert_eq!(gcq_index(&e), 21);
}

#[test]
fn garbage_sq_entries_are_consumed() {
    let mut e = ends(4, 4, 0, 0);
    let l = Layout::new(4, 4).unwrap();
    for slot in 0..3 {
        for w in 0..4 {
            e.m.write_u64(l.sq_off as usize + slot * SQE_SIZE + w * 8, u64::MAX);
        }
    }
    e.m.write_u32(guest_ctl::SQ_TAIL, 3);
    assert_eq!(e.hsq.pending(&e.m), Ok(3));
    for _ in 0..3 {
        assert_eq!(e.hsq.take(&e.m), Err(BadEntry::Opcode(0xffff)));
    }
    e.hsq.release(&e.m);
    assert_eq!(e.m.read_u32(host_ctl::SQ_HEAD), 3);
    assert_eq!(e.hsq.pending(&e.m), Ok(0));
}

proptest! {
    #[test]
    fn pending_accepts_exactly_the_possible_tails(head: u32, tail: u32, log in 0u32..=15) {
        let (m, l) = ring(1 << log, 1 << log);
        m.write_u32(host_ctl::SQ_HEAD, head);
        let c = SqConsumer::resume(l, &m);
        m.write_u32(guest_ctl::SQ_TAIL, tail);
        let d = tail.wrapping_sub(head);
        match c.pending(&m) {
            Ok(n) => prop_assert!(n == d && d <= l.sq_entries),
            Err(e) => {
                prop_assert!(d > l.sq_entries);
                prop_assert_eq!(e, Error::BadIndex { ours: head, theirs: tail });
            }
        }
    }

    #[test]
    fn cq_space_accepts_exactly_the_possible_heads(tail: u32, head: u32, log in 0u32..=15) {
        let (m, l) = ring(1, 1 << log);
        m.write_u32(host_ctl::CQ_TAIL, tail);
        let p = CqProducer::resume(l, &m);
        m.write_u32(guest_ctl::CQ_HEAD, head);
        let used = tail.wrapping_sub(head);
        match p.space(&m) {
            Ok(n) => prop_assert!(used <= l.cq_entries && n == l.cq_entries - used),
            Err(_) => prop_assert!(used > l.cq_entries),
        }
    }

    #[test]
    fn rings_keep_order_anywhere(start: u32, bursts in proptest::collection::vec(0u32..=8, 1..20)) {
        let mut e = ends(8, 8, start, start);
        let mut sent = Vec::new();
        let mut got = Vec::new();
        for (i, n) in bursts.iter().enumerate() {
            let burst = (0..*n).map(|k| req(Op::Destroy, i as u32, u64::from(k) + 1, u64::from(k)));
            let (s, g) = e.exchange(burst);
            sent.extend(s);
            got.extend(g);
        }
        prop_assert_eq!(got, sent);
    }

    #[test]
    fn hostile_window_never_panics(
        words in proptest::collection::vec(any::<u32>(), 0..160),
    ) {
        // Everything in the window is garbage; the ends hold their own layout.
        let l = Layout::new(4, 8).unwrap();
        let m = MemShm::new(words.into_iter().map(AtomicU32::new).collect::<Vec<_>>());
        let mut hsq = SqConsumer::resume(l, &m);
        let mut hcq = CqProducer::resume(l, &m);
        let mut gsq = SqProducer::resume(l, &m);
        let mut gcq = CqConsumer::resume(l, &m);
        if let Ok(n) = hsq.pending(&m) {
            for _ in 0..n {
                let _ = hsq.take(&m);
            }
        }
        let _ = hcq.push(&m, &done(&destroy(1), Status::Ok));
        let _ = gsq.push(&m, &destroy(1));
        for _ in 0..10 {
            let _ = gcq.pop(&m);
        }
        hsq.release(&m);
        hcq.publish(&m);
        gsq.publish(&m);
        gcq.release(&m);
        let _ = hsq.set_need_wakeup(&m, true);
        let _ = gcq.set_need_irq(&m, true);
    }
}
