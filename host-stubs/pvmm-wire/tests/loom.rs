// SPDX-License-Identifier: GPL-2.0

//! Model checks of the two notification handshakes in `wire.rs` with loom.
//!
//! loom runs each model under every interleaving and every load result the C++
//! memory model allows, including a load that passes an earlier store to
//! another location, so it proves what `tests/handshake.rs` can only sample.
//! The models call `wire.rs`'s own ring ends over [`LoomShm`], a window of
//! loom atomics that behaves like `pvmm_wire::mem::MemShm`.
//!
//! Run with (a target directory of its own keeps the normal build's cache):
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test --release -p pvmm-wire --test loom
//! ```

#![cfg(loom)]

use loom::sync::atomic::{fence, AtomicU32, Ordering};
use loom::sync::Arc;
use loom::thread;
use pvmm_wire::*;

/// A [`SharedMemory`] over loom atomics, access for access like `MemShm`:
/// plain 32-bit loads and stores with the ordering the method names, 64-bit
/// accesses as two relaxed 32-bit ones (low word first), little-endian, and
/// out-of-range or misaligned accesses read zero and drop writes.
struct LoomShm {
    words: Vec<AtomicU32>,
}

impl LoomShm {
    fn zeroed(bytes: usize) -> LoomShm {
        LoomShm {
            words: (0..bytes.div_ceil(8) * 2)
                .map(|_| AtomicU32::new(0))
                .collect(),
        }
    }

    fn word(&self, off: usize, align: usize) -> Option<&AtomicU32> {
        if off % align != 0 {
            return None;
        }
        self.words.get(off / 4)
    }

    fn pair(&self, off: usize) -> Option<(&AtomicU32, &AtomicU32)> {
        Some((self.word(off, 8)?, self.words.get(off / 4 + 1)?))
    }
}

impl SharedMemory for LoomShm {
    fn size(&self) -> usize {
        self.words.len() * 4
    }

    fn read_u32(&self, off: usize) -> u32 {
        self.word(off, 4)
            .map_or(0, |w| u32::from_le(w.load(Ordering::Relaxed)))
    }

    fn write_u32(&self, off: usize, val: u32) {
        if let Some(w) = self.word(off, 4) {
            w.store(val.to_le(), Ordering::Relaxed)
        }
    }

    fn read_u64(&self, off: usize) -> u64 {
        self.pair(off).map_or(0, |(lo, hi)| {
            let lo = u32::from_le(lo.load(Ordering::Relaxed));
            let hi = u32::from_le(hi.load(Ordering::Relaxed));
            u64::from(lo) | u64::from(hi) << 32
        })
    }

    fn write_u64(&self, off: usize, val: u64) {
        if let Some((lo, hi)) = self.pair(off) {
            lo.store((val as u32).to_le(), Ordering::Relaxed);
            hi.store(((val >> 32) as u32).to_le(), Ordering::Relaxed);
        }
    }

    fn load_acquire_u32(&self, off: usize) -> u32 {
        self.word(off, 4)
            .map_or(0, |w| u32::from_le(w.load(Ordering::Acquire)))
    }

    fn store_release_u32(&self, off: usize, val: u32) {
        if let Some(w) = self.word(off, 4) {
            w.store(val.to_le(), Ordering::Release)
        }
    }

    fn fence(&self) {
        fence(Ordering::SeqCst)
    }
}

/// One-entry rings: the smallest window, so the models stay small.
fn layout() -> Layout {
    Layout::new(1, 1).unwrap()
}

const REQ: Request = Request {
    op: Op::Destroy,
    tag: 0x0100_0007,
    space: 0x000f_0000_0001,
    pages: 0x1_0000_0003,
};

const DONE: Completion = Completion {
    op: Op::Destroy,
    status: Status::Ok,
    tag: 0x0100_0007,
    space: 0x000f_0000_0001,
};

/// Submissions: the guest publishes an entry and then checks `HOST_NEED_WAKEUP`
/// (`SqProducer::publish`, which calls `host_needs_wakeup`), while the host,
/// having found the ring empty, goes idle (`SqConsumer::set_need_wakeup`).
/// Either the guest rings or the host sees the entry, and an entry the host
/// sees is the one the guest wrote.
#[test]
fn no_lost_doorbell() {
    loom::model(|| {
        let l = layout();
        let m = Arc::new(LoomShm::zeroed(l.size as usize));
        let gm = Arc::clone(&m);
        let guest = thread::spawn(move || {
            let mut sq = SqProducer::new(l);
            sq.push(&*gm, &REQ).unwrap();
            sq.publish(&*gm)
        });
        let mut sq = SqConsumer::new(l);
        let arrived = sq.set_need_wakeup(&*m, true);
        if arrived {
            // Polls again instead of sleeping; the entry is complete.
            assert_eq!(sq.pending(&*m), Ok(1));
            assert_eq!(sq.pop(&*m), Ok(REQ));
        }
        let rang = guest.join().unwrap();
        assert!(
            rang || arrived,
            "lost doorbell: the host sleeps on an entry"
        );
    });
}

/// Completions: the host publishes a completion and then checks
/// `GUEST_NEED_IRQ` (`CqProducer::publish`), while the guest, having drained
/// the ring, arms the interrupt (`CqConsumer::set_need_irq`). Either the host
/// interrupts or the guest sees the completion, and a completion the guest
/// sees is the one the host wrote.
#[test]
fn no_lost_interrupt() {
    loom::model(|| {
        let l = layout();
        let m = Arc::new(LoomShm::zeroed(l.size as usize));
        let hm = Arc::clone(&m);
        let host = thread::spawn(move || {
            let mut cq = CqProducer::new(l);
            cq.push(&*hm, &DONE).unwrap();
            cq.publish(&*hm)
        });
        let mut cq = CqConsumer::new(l);
        let arrived = cq.set_need_irq(&*m, true);
        if arrived {
            assert_eq!(cq.pop(&*m), Ok(Some(Ok(DONE))));
        }
        let irq = host.join().unwrap();
        assert!(
            irq || arrived,
            "lost interrupt: the guest sleeps on a completion"
        );
    });
}
