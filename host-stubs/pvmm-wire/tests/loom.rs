// SPDX-License-Identifier: GPL-2.0

//! Model checks of the two notification handshakes of `drivers/pvmm/wire/` with loom.
//!
//! loom runs each model under every interleaving and every load result the C++
//! memory model allows, including a load that passes an earlier store to
//! another location, so it proves what `tests/handshake.rs` can only sample.
//! The models call the protocol's own ring ends over `pvmm_wire::mem::MemShm`,
//! which this configuration builds over loom's atomics.
//!
//! Run with (a target directory of its own keeps the normal build's cache):
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test --release -p pvmm-wire --test loom
//! ```

#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use pvmm_wire::mem::MemShm;
use pvmm_wire::*;

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
        let m = Arc::new(MemShm::zeroed(l.size as usize));
        let gm = Arc::clone(&m);
        let guest = thread::spawn(move || {
            let mut sq = SqProducer::resume(l, &*gm);
            sq.push(&*gm, &REQ).unwrap();
            sq.publish(&*gm)
        });
        let mut sq = SqConsumer::new(l);
        let arrived = sq.set_need_wakeup(&*m, true);
        if arrived {
            // Polls again instead of sleeping; the entry is complete.
            assert_eq!(sq.pending(&*m), Ok(1));
            assert_eq!(sq.take(&*m), Ok(REQ));
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
        let m = Arc::new(MemShm::zeroed(l.size as usize));
        let hm = Arc::clone(&m);
        let host = thread::spawn(move || {
            let mut cq = CqProducer::new(l);
            cq.push(&*hm, &DONE).unwrap();
            cq.publish(&*hm)
        });
        let mut cq = CqConsumer::resume(l, &*m);
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
