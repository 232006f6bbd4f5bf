// SPDX-License-Identifier: GPL-2.0

//! Tests of the wire format against a safe in-memory window.

use std::sync::atomic::AtomicU32;

use proptest::prelude::*;
use pvmm_wire::mem::MemShm;
use pvmm_wire::*;

fn shm(bytes: usize) -> MemShm<Vec<AtomicU32>> {
    MemShm::zeroed(bytes)
}

/// A window with a fresh header for `sq`/`cq` entries.
fn ring(sq: u32, cq: u32) -> (MemShm<Vec<AtomicU32>>, Layout) {
    let layout = Layout::new(sq, cq).unwrap();
    let m = shm(layout.size as usize);
    layout.init_header(&m, FEATURES_ALL, 0);
    (m, layout)
}

fn req(op: Op, tag: u32, space: u64, pages: u64) -> Request {
    Request {
        op,
        tag,
        space,
        pages,
    }
}

fn destroy(i: u32) -> Request {
    req(Op::Destroy, i, u64::from(i) + 1, u64::from(i) * 3)
}

fn done(r: &Request, status: Status) -> Completion {
    Completion {
        op: r.op,
        status,
        tag: r.tag,
        space: r.space,
    }
}

// ---- Layout ----------------------------------------------------------------

#[test]
fn layout_new_default_offsets() {
    let l = Layout::new(256, 512).unwrap();
    assert_eq!(l.sq_off as usize, SQ_OFF);
    assert_eq!(l.cq_off as usize, SQ_OFF + 256 * SQE_SIZE);
    assert_eq!(l.size as usize, l.cq_off as usize + 512 * CQE_SIZE);
    assert_eq!(l.validate(l.size as usize), Ok(()));
    assert_eq!(l.validate(1 << 20), Ok(()));
    let l = Layout::new(1, 1).unwrap();
    assert_eq!(l.cq_off % CACHELINE as u32, 0);
    assert_eq!(l.validate(l.size as usize), Ok(()));
    assert!(Layout::new(MAX_ENTRIES, MAX_ENTRIES).is_ok());
}

#[test]
fn layout_new_rejects_bad_sizes() {
    for (sq, cq) in [
        (0, 0),
        (0, 4),
        (4, 0),
        (3, 4),
        (4, 6),
        (8, 4),
        (MAX_ENTRIES * 2, MAX_ENTRIES * 2),
        (4, MAX_ENTRIES * 2),
        (u32::MAX, u32::MAX),
        (1 << 31, 1 << 31),
    ] {
        assert_eq!(Layout::new(sq, cq), Err(Error::BadLayout), "{sq}/{cq}");
    }
}

#[test]
fn layout_validate_window_too_small() {
    let l = Layout::new(16, 32).unwrap();
    assert_eq!(l.validate(l.size as usize - 1), Err(Error::BadLayout));
    assert_eq!(l.validate(0), Err(Error::BadLayout));
}

#[test]
fn layout_validate_rejects_inconsistent() {
    let good = Layout::new(16, 32).unwrap();
    let big = 1 << 20;
    let bad = [
        // SQ overlapping the control lines.
        Layout {
            sq_off: 0x80,
            ..good
        },
        Layout { sq_off: 0, ..good },
        // CQ overlapping the header (ahead of the SQ).
        Layout { cq_off: 0, ..good },
        Layout {
            cq_off: 0x40,
            ..good
        },
        // Misaligned rings.
        Layout {
            sq_off: 0x108,
            ..good
        },
        Layout {
            cq_off: good.cq_off + 16,
            size: good.size + 64,
            ..good
        },
        // Rings overlapping each other.
        Layout {
            cq_off: good.cq_off - 64,
            ..good
        },
        Layout {
            sq_off: good.sq_off + 64,
            ..good
        },
        // Size not covering a ring.
        Layout {
            size: good.size - 16,
            ..good
        },
        Layout {
            size: good.cq_off,
            ..good
        },
        // Bad entry counts.
        Layout {
            sq_entries: 0,
            ..good
        },
        Layout {
            sq_entries: 12,
            ..good
        },
        Layout {
            cq_entries: 8,
            ..good
        },
        Layout {
            sq_entries: u32::MAX,
            cq_entries: u32::MAX,
            ..good
        },
        // Offsets near the top of the address range.
        Layout {
            sq_off: u32::MAX - 63,
            size: u32::MAX,
            ..good
        },
        Layout {
            cq_off: u32::MAX - 63,
            size: u32::MAX,
            ..good
        },
    ];
    for l in bad {
        assert_eq!(l.validate(big), Err(Error::BadLayout), "{l:?}");
    }
    // CQ before the SQ is fine when neither overlaps anything.
    let swapped = Layout {
        sq_entries: 16,
        cq_entries: 32,
        cq_off: 0x100,
        sq_off: 0x100 + 32 * CQE_SIZE as u32,
        log_entries: 0,
        log_off: 0,
        size: 0x100 + 32 * CQE_SIZE as u32 + 16 * SQE_SIZE as u32,
    };
    assert_eq!(swapped.validate(big), Ok(()));
    // A release log must not overlap either ring.
    let logged = good.with_release_log(8).unwrap();
    assert_eq!(logged.validate(big), Ok(()));
    for l in [
        Layout {
            log_off: good.cq_off,
            ..logged
        },
        Layout {
            log_off: good.sq_off + 64,
            ..logged
        },
        Layout {
            log_entries: 3,
            ..logged
        },
        Layout {
            log_off: logged.log_off + 8,
            ..logged
        },
        Layout {
            size: logged.size - 1,
            ..logged
        },
    ] {
        assert_eq!(l.validate(big), Err(Error::BadLayout), "{l:?}");
    }
}

#[test]
fn release_log_round_trip() {
    let layout = Layout::new(8, 8).unwrap().with_release_log(4).unwrap();
    let shm = shm(layout.size as usize);
    layout.init_header(&shm, FEATURES_ALL, 0);
    assert_eq!(Header::read(&shm).unwrap().features, FEATURES_ALL);
    let mut log = LogProducer::resume(layout, &shm);
    let mut host = LogConsumer::new(layout);
    let recs = [Why::Acked, Why::Reset, Why::Forced, Why::Acked].map(|why| Release {
        space: 7,
        tag: tag(1, 2),
        why,
    });
    for r in &recs {
        log.push(&shm, r).unwrap();
    }
    assert_eq!(log.push(&shm, &recs[0]), Err(Error::Full));
    for r in &recs {
        assert_eq!(host.pop(&shm), Ok(Some(Ok(*r))));
    }
    assert_eq!(host.pop(&shm), Ok(None));
    host.release(&shm);
    log.push(&shm, &recs[0]).unwrap();
    // A tail beyond the log is refused.
    shm.write_u32(guest_ctl::LOG_TAIL, 100);
    assert!(matches!(host.pop(&shm), Err(Error::BadIndex { .. })));
    assert_eq!(Release::decode([7, 3 << 32]), Err(BadEntry::Reserved));
    assert_eq!(Release::decode([0, 0]), Err(BadEntry::Space(0)));
}

proptest! {
    #[test]
    fn layout_validate_never_panics(
        sq_entries: u32, cq_entries: u32, sq_off: u32, cq_off: u32, size: u32, window: usize,
    ) {
        let l = Layout { sq_entries, cq_entries, sq_off, cq_off, log_entries: 0, log_off: 0, size };
        if l.validate(window).is_ok() {
            // A valid layout keeps both rings inside the window and apart.
            let sq_end = sq_off as usize + sq_entries as usize * SQE_SIZE;
            let cq_end = cq_off as usize + cq_entries as usize * CQE_SIZE;
            prop_assert!(sq_end <= window && cq_end <= window);
            prop_assert!(sq_end <= cq_off as usize || cq_end <= sq_off as usize);
            prop_assert!(sq_off as usize >= host_ctl::BASE + CACHELINE);
            prop_assert!(cq_off as usize >= host_ctl::BASE + CACHELINE);
        }
    }

    #[test]
    fn layout_new_is_valid(sq_log in 0u32..=15, extra in 0u32..=15) {
        let cq_log = (sq_log + extra).min(15);
        let l = Layout::new(1 << sq_log, 1 << cq_log).unwrap();
        prop_assert_eq!(l.validate(l.size as usize), Ok(()));
    }
}

// ---- Header ----------------------------------------------------------------

#[test]
fn header_round_trip() {
    let l = Layout::new(64, 128).unwrap();
    let m = shm(1 << 16);
    // Dirty control lines must be cleared by init_header.
    for off in (guest_ctl::BASE..host_ctl::BASE + CACHELINE).step_by(4) {
        m.write_u32(off, 0xdead_beef);
    }
    l.init_header(&m, FEATURES_ALL | 0xff00, 7);
    let h = Header::read(&m).unwrap();
    assert_eq!(
        h,
        Header {
            layout: l,
            // No release log in this layout, so its feature is not offered.
            features: FEATURES_ALL & !FEATURE_RELEASE_LOG,
            host_peer: 7
        }
    );
    assert_eq!(m.read_u32(header::MAGIC), MAGIC);
    assert_eq!(m.read_u32(header::VERSION), VERSION);
    for off in (guest_ctl::BASE..host_ctl::BASE + CACHELINE).step_by(4) {
        assert_eq!(m.read_u32(off), 0, "{off:#x}");
    }
}

#[test]
fn header_masks_unknown_bits() {
    let (m, l) = ring(4, 4);
    m.write_u32(header::FEATURES, 0xffff_ffff);
    m.write_u32(header::HOST_PEER, 0x1234_5678);
    let h = Header::read(&m).unwrap();
    assert_eq!(h.features, FEATURES_ALL & !FEATURE_RELEASE_LOG);
    assert_eq!(h.host_peer, 0x5678);
    assert_eq!(h.layout, l);
}

#[test]
fn header_rejections() {
    let fresh = || ring(16, 32);

    let (m, _) = fresh();
    m.write_u32(header::MAGIC, 0);
    assert_eq!(Header::read(&m), Err(Error::BadMagic(0)));
    let (m, _) = fresh();
    m.write_u32(header::MAGIC, MAGIC.swap_bytes());
    assert_eq!(Header::read(&m), Err(Error::BadMagic(MAGIC.swap_bytes())));

    for v in [0, 2, u32::MAX] {
        let (m, _) = fresh();
        m.write_u32(header::VERSION, v);
        assert_eq!(Header::read(&m), Err(Error::BadVersion(v)));
    }

    for (field, val) in [
        (header::SQ_ENTRIES, 0),
        (header::SQ_ENTRIES, 3),
        (header::SQ_ENTRIES, 64),
        (header::CQ_ENTRIES, 8),
        (header::CQ_ENTRIES, MAX_ENTRIES * 2),
        (header::SQ_OFF, 0),
        (header::SQ_OFF, 0x104),
        (header::CQ_OFF, 0x100),
        (header::CQ_OFF, 0),
        (header::CQ_OFF, u32::MAX),
        (header::SIZE, 0),
        (header::SIZE, u32::MAX),
    ] {
        let (m, _) = fresh();
        m.write_u32(field, val);
        assert_eq!(Header::read(&m), Err(Error::BadLayout), "{field:#x}={val}");
    }

    // A zeroed or too small window.
    assert_eq!(Header::read(&shm(4096)), Err(Error::BadMagic(0)));
    let l = Layout::new(16, 32).unwrap();
    let small = shm(l.size as usize - 8);
    l.init_header(&small, 0, 0);
    assert_eq!(Header::read(&small), Err(Error::BadLayout));
}

#[test]
fn init_header_hides_old_magic_until_done() {
    // Re-initialising a live window must not leave the old magic visible
    // next to new fields: init_header clears it first and sets it last.
    let l = Layout::new(4, 8).unwrap();
    let m = shm(4096);
    l.init_header(&m, FEATURES_ALL, 0);
    let l2 = Layout::new(8, 8).unwrap();
    l2.init_header(&m, 0, 1);
    assert_eq!(Header::read(&m).unwrap().layout, l2);
}

proptest! {
    #[test]
    fn header_read_never_panics(words in proptest::collection::vec(any::<u32>(), 9), window in 0usize..4096) {
        let m = shm(window);
        for (i, w) in words.iter().enumerate() {
            m.write_u32(i * 4, *w);
        }
        if let Ok(h) = Header::read(&m) {
            prop_assert!(h.layout.validate(m.size()).is_ok());
        }
    }
}

// ---- Entries -----------------------------------------------------------------

fn any_op() -> impl Strategy<Value = Op> {
    prop_oneof![Just(Op::Create), Just(Op::Destroy)]
}

fn any_status() -> impl Strategy<Value = Status> {
    prop_oneof![
        Just(Status::Ok),
        Just(Status::UnknownSpace),
        Just(Status::Exists),
        Just(Status::NoMemory)
    ]
}

fn any_request() -> impl Strategy<Value = Request> {
    (any_op(), any::<u32>(), 1..=MAX_SPACE, 0..=MAX_PAGES).prop_map(|(op, tag, space, pages)| {
        req(op, tag, space, if op == Op::Create { 0 } else { pages })
    })
}

proptest! {
    #[test]
    fn request_round_trip(r in any_request()) {
        let w = r.encode();
        prop_assert_eq!(w[3], 0);
        prop_assert_eq!(Request::decode(w), Ok(r));
    }

    #[test]
    fn completion_round_trip(op in any_op(), status in any_status(), tag: u32, space in 1..=MAX_SPACE) {
        let c = Completion { op, status, tag, space };
        prop_assert_eq!(Completion::decode(c.encode()), Ok(c));
    }

    #[test]
    fn request_decode_is_canonical(w: [u64; 4]) {
        // Whatever decodes re-encodes to the same words: nothing is silently dropped.
        if let Ok(r) = Request::decode(w) {
            prop_assert_eq!(r.encode(), w);
        }
    }

    #[test]
    fn completion_decode_is_canonical(w: [u64; 2]) {
        if let Ok(c) = Completion::decode(w) {
            prop_assert_eq!(c.encode(), w);
        }
    }
}

#[test]
fn op_and_status_codes() {
    assert_eq!(Op::from_raw(1), Some(Op::Create));
    assert_eq!(Op::from_raw(2), Some(Op::Destroy));
    for raw in [0, 3, 0x100, u16::MAX] {
        assert_eq!(Op::from_raw(raw), None);
    }
    for s in [
        Status::Ok,
        Status::UnknownSpace,
        Status::Exists,
        Status::NoMemory,
        Status::StaleTag,
    ] {
        assert_eq!(Status::from_raw(s as u16), Some(s));
    }
    assert_eq!(Status::from_raw(5), None);
    assert_eq!(Status::from_raw(u16::MAX), None);
}

#[test]
fn request_bad_entries() {
    let ok = req(Op::Destroy, 9, 5, 100).encode();
    assert!(Request::decode(ok).is_ok());
    let with = |i: usize, v: u64| {
        let mut w = ok;
        w[i] = v;
        w
    };
    let cases = [
        (with(0, 0), BadEntry::Opcode(0)),
        (with(0, 3), BadEntry::Opcode(3)),
        (with(0, 0xffff | 9 << 32), BadEntry::Opcode(0xffff)),
        (with(0, 2 | 1 << 16), BadEntry::Reserved),
        (with(0, 2 | 0x8000 << 16), BadEntry::Reserved),
        (with(3, 1), BadEntry::Reserved),
        (with(3, u64::MAX), BadEntry::Reserved),
        (with(1, 0), BadEntry::Space(0)),
        (with(1, MAX_SPACE + 1), BadEntry::Space(MAX_SPACE + 1)),
        (with(1, u64::MAX), BadEntry::Space(u64::MAX)),
        (with(2, MAX_PAGES + 1), BadEntry::Pages(MAX_PAGES + 1)),
        (with(2, u64::MAX), BadEntry::Pages(u64::MAX)),
        (
            req(Op::Create, 1, 5, 0).encode().tap(|w| w[2] = 1),
            BadEntry::Pages(1),
        ),
    ];
    for (w, want) in cases {
        assert_eq!(Request::decode(w), Err(want), "{w:x?}");
    }
    // Limits themselves are fine.
    assert!(Request::decode(with(1, MAX_SPACE)).is_ok());
    assert!(Request::decode(with(1, 1)).is_ok());
    assert!(Request::decode(with(2, MAX_PAGES)).is_ok());
    assert!(Request::decode(with(2, 0)).is_ok());
}

trait Tap: Sized {
    fn tap(self, f: impl FnOnce(&mut Self)) -> Self;
}

impl<T> Tap for T {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}

#[test]
fn completion_bad_entries() {
    let ok = done(&req(Op::Destroy, 3, 5, 0), Status::Ok).encode();
    assert!(Completion::decode(ok).is_ok());
    let op_status = |op: u64, st: u64| [5, 3 | op << 32 | st << 48];
    let cases = [
        ([0, ok[1]], BadEntry::Space(0)),
        ([MAX_SPACE + 1, ok[1]], BadEntry::Space(MAX_SPACE + 1)),
        (op_status(0, 0), BadEntry::Opcode(0)),
        (op_status(7, 0), BadEntry::Opcode(7)),
        (op_status(1, 5), BadEntry::Status(5)),
        (op_status(2, 0xffff), BadEntry::Status(0xffff)),
    ];
    for (w, want) in cases {
        assert_eq!(Completion::decode(w), Err(want), "{w:x?}");
    }
}

#[test]
fn display_strings() {
    // Logs carry these; they must say what was wrong.
    assert!(Error::BadIndex { ours: 1, theirs: 9 }
        .to_string()
        .contains('9'));
    assert!(Error::BadMagic(5).to_string().contains("magic"));
    assert!(BadEntry::Opcode(7).to_string().contains('7'));
    assert!(BadEntry::Pages(7).to_string().contains('7'));
    for e in [Error::BadVersion(2), Error::BadLayout, Error::Full] {
        assert!(!e.to_string().is_empty());
    }
    for e in [BadEntry::Status(1), BadEntry::Reserved, BadEntry::Space(0)] {
        assert!(!e.to_string().is_empty());
    }
}

// ---- Rings -----------------------------------------------------------------

/// Guest and host ends of both rings, starting at `sq`/`cq` free-running indices.
struct Ends {
    m: MemShm<Vec<AtomicU32>>,
    gsq: SqProducer,
    gcq: CqConsumer,
    hsq: SqConsumer,
    hcq: CqProducer,
}

/// The guest's completion consumer index, published: the driver keeps no other.
fn gcq_index(e: &Ends) -> u32 {
    e.gcq.release(&e.m);
    e.m.read_u32(guest_ctl::CQ_HEAD)
}

/// Whether the completion ring holds the completion watched for: one full poll.
fn cq_holds(m: &impl SharedMemory, l: &Layout, op: Op, space: u64, tag: u32) -> bool {
    CqWatch::new(op, space, tag).poll(m, l, l.cq_entries)
}

fn ends(sq: u32, cq: u32, at_sq: u32, at_cq: u32) -> Ends {
    let (m, l) = ring(sq, cq);
    // Both sides agree on the published indices, as after a long run.
    m.write_u32(guest_ctl::SQ_TAIL, at_sq);
    m.write_u32(host_ctl::SQ_HEAD, at_sq);
    m.write_u32(guest_ctl::CQ_HEAD, at_cq);
    m.write_u32(host_ctl::CQ_TAIL, at_cq);
    Ends {
        gsq: SqProducer::resume(l, &m),
        gcq: CqConsumer::resume(l, &m),
        hsq: SqConsumer::resume(l, &m),
        hcq: CqProducer::resume(l, &m),
        m,
    }
}

impl Ends {
    /// The host takes every pending request and completes it.
    fn serve(&mut self) -> usize {
        let n = self.hsq.pending(&self.m).unwrap();
        for _ in 0..n {
            let r = self.hsq.pop(&self.m).unwrap();
            self.hcq.push(&self.m, &done(&r, Status::Ok)).unwrap();
        }
        self.hsq.release(&self.m);
        self.hcq.publish(&self.m);
        n as usize
    }

    fn drain(&mut self) -> Vec<Completion> {
        let mut out = Vec::new();
        while let Some(c) = self.gcq.pop(&self.m).unwrap() {
            out.push(c.unwrap());
        }
        self.gcq.release(&self.m);
        out
    }
}

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
    let r = e.hsq.pop(&e.m).unwrap();
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
            for k in 0..(round % 8 + 1) {
                let r = destroy(round * 10 + k);
                e.gsq.push(&e.m, &r).unwrap();
                sent.push(done(&r, Status::Ok));
            }
            e.gsq.publish(&e.m);
            e.serve();
            got.extend(e.drain());
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
        assert_eq!(e.hsq.pop(&e.m), Err(BadEntry::Opcode(0xffff)));
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
            for k in 0..*n {
                let r = req(Op::Destroy, i as u32, u64::from(k) + 1, u64::from(k));
                e.gsq.push(&e.m, &r).unwrap();
                sent.push(done(&r, Status::Ok));
            }
            e.gsq.publish(&e.m);
            e.serve();
            got.extend(e.drain());
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
                let _ = hsq.pop(&m);
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

// ---- Notification handshakes -----------------------------------------------

#[test]
fn need_wakeup_handshake() {
    let mut e = ends(8, 8, 0, 0);
    // Host busy: no doorbell wanted.
    e.gsq.push(&e.m, &destroy(0)).unwrap();
    assert!(!e.gsq.publish(&e.m));
    // Host going idle with work pending: it must poll again, not sleep.
    assert!(e.hsq.set_need_wakeup(&e.m, true));
    assert_eq!(
        e.m.read_u32(host_ctl::FLAGS) & HOST_NEED_WAKEUP,
        HOST_NEED_WAKEUP
    );
    assert!(!e.hsq.set_need_wakeup(&e.m, false));
    assert_eq!(e.m.read_u32(host_ctl::FLAGS), 0);
    e.serve();
    // Idle with nothing pending: sleep, and the next publish asks for a doorbell.
    assert!(!e.hsq.set_need_wakeup(&e.m, true));
    e.gsq.push(&e.m, &destroy(1)).unwrap();
    assert!(e.gsq.publish(&e.m));
    // Woken: flag cleared, further publishes need no doorbell.
    assert!(!e.hsq.set_need_wakeup(&e.m, false));
    assert!(!e.gsq.publish(&e.m));
}

#[test]
fn need_irq_handshake() {
    let mut e = ends(8, 8, 0, 0);
    let c = done(&destroy(0), Status::Ok);
    // Guest not waiting: no interrupt.
    e.hcq.push(&e.m, &c).unwrap();
    assert!(!e.hcq.publish(&e.m));
    // Arming with a completion already there: poll instead of sleeping.
    assert!(e.gcq.set_need_irq(&e.m, true));
    assert_eq!(e.drain().len(), 1);
    // Armed and empty: sleep, and the host's next publish interrupts.
    assert!(!e.gcq.set_need_irq(&e.m, true));
    assert_eq!(
        e.m.read_u32(guest_ctl::FLAGS) & GUEST_NEED_IRQ,
        GUEST_NEED_IRQ
    );
    e.hcq.push(&e.m, &c).unwrap();
    assert!(e.hcq.publish(&e.m));
    // Disarming keeps other guest flags.
    e.m.write_u32(guest_ctl::FLAGS, GUEST_READY | GUEST_NEED_IRQ);
    assert!(!e.gcq.set_need_irq(&e.m, false));
    assert_eq!(e.m.read_u32(guest_ctl::FLAGS), GUEST_READY);
    assert!(!e.hcq.publish(&e.m));
}

/// Guest and host on two threads with real sleeping: a lost doorbell or a lost
/// interrupt shows up as a timeout.
#[test]
fn no_lost_notifications_across_threads() {
    use std::sync::mpsc::{channel, RecvTimeoutError};
    use std::sync::Arc;
    use std::time::Duration;

    const N: u32 = 20_000;
    let l = Layout::new(8, 16).unwrap();
    let m = Arc::new(shm(l.size as usize));
    l.init_header(&*m, FEATURES_ALL, 0);
    let (bell_tx, bell_rx) = channel::<()>();
    let (irq_tx, irq_rx) = channel::<()>();
    let wait = Duration::from_secs(10);

    let hm = Arc::clone(&m);
    let host = std::thread::spawn(move || {
        let m = &*hm;
        let mut sq = SqConsumer::new(l);
        let mut cq = CqProducer::new(l);
        let mut backlog = std::collections::VecDeque::new();
        let mut served = 0;
        while served < N {
            let n = sq.pending(m).unwrap();
            for _ in 0..n {
                backlog.push_back(done(&sq.pop(m).unwrap(), Status::Ok));
            }
            sq.release(m);
            let mut pushed = false;
            while let Some(c) = backlog.front() {
                match cq.push(m, c) {
                    Ok(()) => {
                        backlog.pop_front();
                        pushed = true;
                        served += 1;
                    }
                    Err(Error::Full) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            if pushed && cq.publish(m) {
                let _ = irq_tx.send(());
            }
            if n == 0 && !pushed {
                if sq.set_need_wakeup(m, true) {
                    sq.set_need_wakeup(m, false);
                    continue;
                }
                // With a backlog the guest's CQ release is what we wait for;
                // it rings the doorbell only for SQ entries, so poll.
                let r = bell_rx.recv_timeout(if backlog.is_empty() {
                    wait
                } else {
                    Duration::from_micros(50)
                });
                if backlog.is_empty() {
                    assert_ne!(r, Err(RecvTimeoutError::Timeout), "lost doorbell");
                }
                sq.set_need_wakeup(m, false);
            }
        }
    });

    let mut gsq = SqProducer::resume(l, &*m);
    let mut gcq = CqConsumer::resume(l, &*m);
    let mut sent = 0;
    let mut got = 0;
    while got < N {
        let mut pushed = false;
        while sent < N && gsq.push(&*m, &destroy(sent)).is_ok() {
            sent += 1;
            pushed = true;
        }
        if pushed && gsq.publish(&*m) {
            bell_tx.send(()).unwrap();
        }
        let mut popped = false;
        while let Some(c) = gcq.pop(&*m).unwrap() {
            assert_eq!(c.unwrap().tag, got);
            got += 1;
            popped = true;
        }
        gcq.release(&*m);
        if !popped && !gcq.set_need_irq(&*m, true) {
            assert!(irq_rx.recv_timeout(wait).is_ok(), "lost interrupt at {got}");
        }
        gcq.set_need_irq(&*m, false);
    }
    host.join().unwrap();
}

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
    let r = host_sq.pop(&shm).unwrap();
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
    host.pop(&m).unwrap();
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
    host.pop(&m).unwrap();
    host.pop(&m).unwrap();
    assert_eq!(host.pending_destroys(&m, host.pending(&m).unwrap()), 1);
    // It reads no more slots than the ring has, whatever the caller claims.
    assert!(host.pending_destroys(&m, u32::MAX) <= l.sq_entries);
}
