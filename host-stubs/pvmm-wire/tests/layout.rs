// SPDX-License-Identifier: GPL-2.0

//! The layout in shared memory: offsets, layouts and headers (round trips,
//! rejections, hostile windows).

mod common;

use common::*;
use proptest::prelude::*;
use pvmm_wire::*;

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
    assert_eq!(Release::decode([7, 3 << 32]), Err(BadEntry::Why(3)));
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

// ---- Offsets -----------------------------------------------------------------

/// Every field of the header and the control lines, in order, at the offset
/// Documentation/protocol.md gives it, 4 bytes each: the window must stay
/// byte-identical.
#[test]
fn offsets_are_the_contract() {
    let contract = [
        (
            header::FIELDS,
            "MAGIC@00 VERSION@04 FEATURES@08 SQ_ENTRIES@0c CQ_ENTRIES@10 SQ_OFF@14 \
             CQ_OFF@18 SIZE@1c HOST_PEER@20 LOG_OFF@24 LOG_ENTRIES@28",
        ),
        (
            guest_ctl::FIELDS,
            "SQ_TAIL@40 CQ_HEAD@44 FLAGS@48 FEATURES@4c EPOCH@50 RESET@54 LOG_TAIL@58",
        ),
        (
            host_ctl::FIELDS,
            "SQ_HEAD@80 CQ_TAIL@84 FLAGS@88 ERRORS@8c RESET_ACK@90 LOG_HEAD@94 DESTROYS_HELD@98",
        ),
    ];
    for (fields, want) in contract {
        let got: Vec<String> = fields
            .iter()
            .map(|(name, off, size)| {
                assert_eq!(*size, 4, "{name}");
                format!("{name}@{off:02x}")
            })
            .collect();
        assert_eq!(got.join(" "), want);
    }
    assert_eq!(
        (header::BASE, guest_ctl::BASE, host_ctl::BASE),
        (0, 0x40, 0x80)
    );
    // The constants the code uses are the table's.
    let used = [
        header::LOG_ENTRIES,
        guest_ctl::LOG_TAIL,
        host_ctl::DESTROYS_HELD,
    ];
    assert_eq!(used, [0x28, 0x58, 0x98]);
    // Entry sizes and the default ring offset.
    assert_eq!(
        (SQE_SIZE, CQE_SIZE, LOG_ENTRY_SIZE, SQ_OFF),
        (32, 16, 16, 0x100)
    );
}
