// SPDX-License-Identifier: GPL-2.0

//! The two notification handshakes raced on two threads, round after round.
//!
//! Each round lines both sides up on a spin barrier and then runs the two halves
//! of one handshake at the same moment: a producer publishing an entry and
//! checking the peer's wakeup flag, against a consumer setting that flag and
//! re-reading the producer's index. One of them must see the other's store,
//! or a notification is lost.
//!
//! This is the store-buffering pattern: without the full fences in `wire/`,
//! x86 lets each load pass the store before it, and both sides read the old
//! value. [`MemShm`] stores are plain stores, so a missing fence shows up here
//! (and `tests/loom.rs` proves the fences sufficient under the C++ memory
//! model). The round count is bounded in time so the test stays short.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use pvmm_wire::mem::MemShm;
use pvmm_wire::*;

/// Most rounds per handshake.
const ROUNDS: u32 = 100_000;
/// Time limit per handshake, for slow or busy machines.
const LIMIT: Duration = Duration::from_secs(1);

/// A two-party spin barrier that starts both sides within nanoseconds of each
/// other, which a sleeping barrier does not.
struct Spin {
    arrived: AtomicU32,
}

impl Spin {
    fn new() -> Spin {
        Spin {
            arrived: AtomicU32::new(0),
        }
    }

    /// Waits until both sides called this for the `n`th time (from 1).
    fn wait(&self, n: u32) {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        let mut spins = 0u32;
        while self.arrived.load(Ordering::SeqCst) < 2 * n {
            spins += 1;
            if spins % 1024 == 0 {
                // Two cores shared with other work: let the peer run.
                thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

fn window() -> (Arc<MemShm<Vec<AtomicU32>>>, Layout) {
    let l = Layout::new(8, 16).unwrap();
    let m = MemShm::zeroed(l.size as usize);
    l.init_header(&m, FEATURES_ALL, 0);
    (Arc::new(m), l)
}

fn entry(i: u32) -> Request {
    Request {
        op: Op::Destroy,
        tag: i,
        space: u64::from(i) + 1,
        pages: 1,
    }
}

/// Races a handshake for up to [`ROUNDS`] rounds or [`LIMIT`] and returns the
/// number of rounds. `producer(i)` and `consumer(i)` each return whether they
/// saw the other side; `tidy(i)` runs on the consumer's thread after both
/// finished round `i` and before the next one starts.
fn race(
    mut producer: impl FnMut(u32) -> bool + Send + 'static,
    mut consumer: impl FnMut(u32) -> bool,
    mut tidy: impl FnMut(u32),
) -> u32 {
    let spin = Arc::new(Spin::new());
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicBool::new(false));
    let (ps, pstop, pseen) = (Arc::clone(&spin), Arc::clone(&stop), Arc::clone(&seen));
    let t = thread::spawn(move || {
        let mut i = 0;
        loop {
            ps.wait(3 * i + 1);
            if pstop.load(Ordering::SeqCst) {
                break;
            }
            pseen.store(producer(i), Ordering::SeqCst);
            ps.wait(3 * i + 2);
            ps.wait(3 * i + 3);
            i += 1;
        }
    });
    let start = Instant::now();
    let mut i = 0;
    while i < ROUNDS && start.elapsed() < LIMIT {
        spin.wait(3 * i + 1);
        let saw = consumer(i);
        spin.wait(3 * i + 2);
        let producer_saw = seen.load(Ordering::SeqCst);
        assert!(
            saw || producer_saw,
            "round {i}: neither side saw the other: a lost notification"
        );
        tidy(i);
        spin.wait(3 * i + 3);
        i += 1;
    }
    stop.store(true, Ordering::SeqCst);
    spin.wait(3 * i + 1);
    t.join().unwrap();
    i
}

/// Both handshakes, one after the other: run in parallel they would share the
/// two cores four ways and rarely line up.
#[test]
fn handshakes_race() {
    let sq = need_wakeup_races_publish();
    let cq = need_irq_races_publish();
    eprintln!("raced {sq} submission and {cq} completion rounds");
}

/// Guest publishes an SQ entry and checks `HOST_NEED_WAKEUP`; the host goes idle.
fn need_wakeup_races_publish() -> u32 {
    let (m, l) = window();
    let gm = Arc::clone(&m);
    let mut gsq = SqProducer::resume(l, &*gm);
    let hsq = RefCell::new(SqConsumer::new(l));
    let rounds = race(
        move |i| {
            gsq.push(&*gm, &entry(i)).unwrap();
            gsq.publish(&*gm)
        },
        |_| hsq.borrow().set_need_wakeup(&*m, true),
        |i| {
            // Busy again, and the entry is taken: the next round starts clean.
            let mut hsq = hsq.borrow_mut();
            hsq.set_need_wakeup(&*m, false);
            assert_eq!(hsq.pending(&*m), Ok(1));
            assert_eq!(hsq.take(&*m), Ok(entry(i)));
            hsq.release(&*m);
        },
    );
    assert!(rounds > 0);
    rounds
}

/// Host publishes a completion and checks `GUEST_NEED_IRQ`; the guest arms it.
fn need_irq_races_publish() -> u32 {
    let (m, l) = window();
    let hm = Arc::clone(&m);
    let mut hcq = CqProducer::new(l);
    let gcq = RefCell::new(CqConsumer::resume(l, &*m));
    let done = |i| Completion {
        op: Op::Destroy,
        status: Status::Ok,
        tag: i,
        space: u64::from(i) + 1,
    };
    let rounds = race(
        move |i| {
            hcq.push(&*hm, &done(i)).unwrap();
            hcq.publish(&*hm)
        },
        |_| gcq.borrow().set_need_irq(&*m, true),
        |i| {
            let mut gcq = gcq.borrow_mut();
            gcq.set_need_irq(&*m, false);
            assert_eq!(gcq.pop(&*m), Ok(Some(Ok(done(i)))));
            assert_eq!(gcq.pop(&*m), Ok(None));
            gcq.release(&*m);
        },
    );
    assert!(rounds > 0);
    rounds
}
