// SPDX-License-Identifier: GPL-2.0

//! The `NEED_WAKEUP` and `NEED_IRQ` handshakes, alone and across threads.

mod common;

use common::*;
use pvmm_wire::*;

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
                backlog.push_back(done(&sq.take(m).unwrap(), Status::Ok));
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
