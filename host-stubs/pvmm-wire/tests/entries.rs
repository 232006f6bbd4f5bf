// SPDX-License-Identifier: GPL-2.0

//! Entry encodings: round trips, canonical decoding, every bad entry, and the
//! codes' numbers and names.

mod common;

use common::*;
use proptest::prelude::*;
use pvmm_wire::*;

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
    assert_eq!(Op::try_from(1), Ok(Op::Create));
    assert_eq!(Op::try_from(2), Ok(Op::Destroy));
    for raw in [0, 3, 0x100, u16::MAX] {
        assert_eq!(Op::try_from(raw), Err(BadEntry::Opcode(raw)));
    }
    for s in [
        Status::Ok,
        Status::UnknownSpace,
        Status::Exists,
        Status::NoMemory,
        Status::StaleTag,
    ] {
        assert_eq!(Status::try_from(s as u16), Ok(s));
    }
    assert_eq!(Status::try_from(5), Err(BadEntry::Status(5)));
    assert_eq!(Status::try_from(u16::MAX), Err(BadEntry::Status(u16::MAX)));
}

#[test]
fn op_and_status_names() {
    // The names of Documentation/protocol.md, and back.
    let ops = [(Op::Create, "CREATE"), (Op::Destroy, "DESTROY")];
    for (op, name) in ops {
        assert_eq!(op.to_string(), name);
        assert_eq!(name.parse::<Op>(), Ok(op));
    }
    let statuses = [
        (Status::Ok, "OK"),
        (Status::UnknownSpace, "UNKNOWN_SPACE"),
        (Status::Exists, "EXISTS"),
        (Status::NoMemory, "NO_MEMORY"),
        (Status::StaleTag, "STALE_TAG"),
    ];
    for (status, name) in statuses {
        assert_eq!(status.to_string(), name);
        assert_eq!(name.parse::<Status>(), Ok(status));
    }
    for bad in ["", "create", "Destroy", "OK ", "STALE"] {
        assert_eq!(bad.parse::<Op>(), Err(UnknownName));
        assert_eq!(bad.parse::<Status>(), Err(UnknownName));
    }
    assert!(!UnknownName.to_string().is_empty());
}

#[test]
fn why_codes_and_names() {
    // The codes and names of the release log in Documentation/protocol.md.
    let whys = [
        (Why::Acked, 0, "Acked"),
        (Why::Reset, 1, "Reset"),
        (Why::Forced, 2, "Forced"),
    ];
    for (why, raw, name) in whys {
        assert_eq!(Why::try_from(raw), Ok(why));
        assert_eq!(why.to_string(), name);
        assert_eq!(name.parse::<Why>(), Ok(why));
    }
    for raw in [3, 0x100, u32::MAX] {
        assert_eq!(Why::try_from(raw), Err(BadEntry::Why(raw)));
    }
    assert_eq!("ACKED".parse::<Why>(), Err(UnknownName));
    assert!(BadEntry::Why(7).to_string().contains('7'));
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
