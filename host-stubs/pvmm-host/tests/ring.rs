// SPDX-License-Identifier: GPL-2.0

//! The host's ring processing against a scripted guest (the shared test rig):
//! the normal path, hostile entries and indices, injected faults, and the fuzz
//! body on random input.

use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use pvmm_host::fault::{Fault, PERIOD};
use pvmm_host::fuzz;
use pvmm_host::ring::{Config, RingHost};
use pvmm_host::stats::Counters;
use pvmm_wire::mem::MemShm;
use pvmm_wire::*;

mod common;
use common::{req, Rig};

type Shm = MemShm<Vec<AtomicU32>>;

fn ok(c: Vec<Result<Completion, BadEntry>>) -> Vec<Completion> {
    c.into_iter().map(Result::unwrap).collect()
}

#[test]
fn create_then_destroy_completes_both() {
    let mut r = Rig::new();
    r.submit(&[req(Op::Create, 1, 7, 0), req(Op::Destroy, 1, 7, 512)]);
    r.process();
    let c: Vec<_> = r.completions().into_iter().map(Result::unwrap).collect();
    assert_eq!(c.len(), 2);
    assert_eq!(
        (c[0].op, c[0].status, c[0].tag),
        (Op::Create, Status::Ok, 1)
    );
    assert_eq!(
        (c[1].op, c[1].status, c[1].space),
        (Op::Destroy, Status::Ok, 7)
    );
    assert_eq!(r.host.live_objects(), 0);
    assert!(r.irqs >= 1, "the guest asked for an interrupt");
    let s = r.counters.snapshot();
    assert_eq!((s.creates, s.destroys, s.bad_entries), (1, 1, 0));
}

#[test]
fn destroy_of_unknown_space_is_refused_not_fatal() {
    let mut r = Rig::new();
    r.submit(&[req(Op::Destroy, 3, 99, 1)]);
    r.process();
    let c = r.completions();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].unwrap().status, Status::UnknownSpace);
    assert_eq!(r.counters.snapshot().unknown_space, 1);
}

#[test]
fn malformed_entry_is_counted_and_skipped() {
    let mut r = Rig::new();
    // A raw entry with an unknown opcode, then a valid CREATE behind it.
    let base = r.layout.sq_off as usize;
    r.shm.write_u64(base, 0x7777);
    r.shm.write_u64(base + 8, 5);
    r.shm.store_release_u32(guest_ctl::SQ_TAIL, 1);
    r.sq = SqProducer::resume(r.layout, &r.shm);
    r.submit(&[req(Op::Create, 2, 5, 0)]);
    r.process();
    let c = r.completions();
    assert_eq!(c.len(), 1, "the bad entry gets no completion");
    assert_eq!(c[0].unwrap().op, Op::Create);
    assert_eq!(r.counters.snapshot().bad_entries, 1);
    assert_eq!(r.shm.read_u32(host_ctl::ERRORS), 1);
}

#[test]
fn impossible_tail_stops_the_ring_until_ready_again() {
    let mut r = Rig::new();
    r.shm.store_release_u32(guest_ctl::SQ_TAIL, 1000);
    r.process();
    assert!(r.host.stalled());
    assert_eq!(r.counters.snapshot().bad_indices, 1);
    // Still stopped: nothing is consumed however often it runs.
    r.process();
    assert_eq!(r.shm.read_u32(host_ctl::SQ_HEAD), 0);
    // The guest fixes its index and re-announces GUEST_READY.
    r.shm.store_release_u32(guest_ctl::SQ_TAIL, 0);
    r.shm.store_release_u32(guest_ctl::FLAGS, 0);
    r.process();
    r.shm
        .store_release_u32(guest_ctl::FLAGS, GUEST_READY | GUEST_NEED_IRQ);
    r.process();
    assert!(!r.host.stalled());
    r.submit(&[req(Op::Create, 1, 1, 0)]);
    r.process();
    assert_eq!(r.completions().len(), 1);
    assert_eq!(r.counters.snapshot().resumes, 1);
}

#[test]
fn sq_pending_shows_what_the_host_left_in_the_ring() {
    let mut r = Rig::new();
    r.submit(&[req(Op::Create, 1, 1, 0), req(Op::Create, 2, 2, 0)]);
    // A host told to stop takes nothing, and the gauge shows both entries.
    r.host.process(&r.shm, &mut || {}, &|| true);
    assert_eq!(r.counters.snapshot().sq_pending, 2);
    r.process();
    assert_eq!(r.counters.snapshot().sq_pending, 0);
    assert_eq!(r.completions().len(), 2);
    // A ring stopped by an impossible index shows 0, not the guest's claim.
    r.shm.store_release_u32(guest_ctl::SQ_TAIL, 1000);
    r.process();
    assert!(r.host.stalled());
    assert_eq!(r.counters.snapshot().sq_pending, 0);
}

#[test]
fn object_limit_answers_no_memory() {
    let layout = Layout::new(4, 8).unwrap();
    let shm: Shm = MemShm::zeroed(layout.size as usize);
    let cfg = Config {
        max_objects: 1,
        ..Config::default()
    };
    let mut host = RingHost::new("limit", layout, cfg, Arc::new(Counters::default()));
    host.init_shm(&shm);
    let a = host.handle(&req(Op::Create, 1, 1, 0), &|| false);
    let b = host.handle(&req(Op::Create, 1, 2, 0), &|| false);
    assert_eq!((a.status, b.status), (Status::Ok, Status::NoMemory));
}

#[test]
fn no_fault_needs_no_timed_rounds() {
    let r = Rig::new();
    assert_eq!(r.host.fault(), Fault::None);
    assert_eq!(r.host.fault_due_in(), None);
}

#[test]
fn never_ack_processes_but_acknowledges_no_destroy() {
    let creates = |r: &mut Rig| -> Vec<u32> {
        ok(r.completions())
            .into_iter()
            .map(|c| {
                assert_eq!(c.op, Op::Create, "a DESTROY acknowledged");
                c.tag
            })
            .collect()
    };
    let mut r = Rig::with_fault(Fault::NeverAck);
    r.submit(&[req(Op::Create, 1, 7, 0), req(Op::Destroy, 1, 7, 512)]);
    r.process();
    assert_eq!(creates(&mut r), [1]);
    // More than the SQ holds, over two rounds: the ring keeps draining.
    r.submit(&[
        req(Op::Create, 2, 8, 0),
        req(Op::Create, 3, 9, 0),
        req(Op::Create, 4, 10, 0),
        req(Op::Destroy, 2, 8, 0),
    ]);
    r.process();
    assert_eq!(creates(&mut r), [2, 3, 4]);
    assert_eq!(r.shm.read_u32(host_ctl::SQ_HEAD), 6);
    assert_eq!(
        r.host.live_objects(),
        2,
        "objects are created and destroyed"
    );
    let s = r.counters.snapshot();
    assert_eq!((s.creates, s.destroys), (4, 2));
    assert_eq!((s.faults_withheld, s.completions), (2, 4));
    assert_eq!(r.host.fault_due_in(), None, "nothing to wake up for");
}

/// A guest that does not consume its CQ: late completions wait in the
/// `late-ack` queue rather than pile up beyond the intake bound.
#[test]
fn late_ack_holds_back_no_more_than_the_cq_bound() {
    // Requests are taken for 5 ms before the first completion falls due.
    let mut r = Rig::with_fault(Fault::LateAck(Duration::from_millis(5)));
    let mut space = 1;
    for _ in 0..30 {
        let free = r.sq.space(&r.shm).unwrap();
        let reqs: Vec<Request> = (0..free)
            .map(|_| {
                space += 1;
                // DESTROYs: `late-ack` holds back only those.
                req(Op::Destroy, 1, space, 0)
            })
            .collect();
        r.submit(&reqs);
        std::thread::sleep(Duration::from_millis(1));
        r.process();
        assert!(r.host.overflow_len() <= 8, "{} held", r.host.overflow_len());
    }
    assert_eq!(r.host.overflow_len(), 8, "the CQ and the overflow are full");
    // Once the guest takes its completions, every one arrives, in order.
    let mut got = Vec::new();
    while got.len() < space as usize - 1 {
        std::thread::sleep(Duration::from_millis(5));
        r.process();
        got.extend(ok(r.completions()).into_iter().map(|c| c.space));
    }
    assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
}

#[test]
fn late_ack_posts_after_the_delay_in_order() {
    let delay = Duration::from_millis(60);
    let mut r = Rig::with_fault(Fault::LateAck(delay));
    let first = Instant::now();
    r.submit(&[
        req(Op::Create, 1, 7, 0),
        req(Op::Create, 2, 8, 0),
        req(Op::Destroy, 1, 7, 0),
    ]);
    r.process();
    // CREATEs are answered at once: the guest waits for them.
    let created: Vec<_> = ok(r.completions()).iter().map(|c| (c.op, c.tag)).collect();
    assert_eq!(created, [(Op::Create, 1), (Op::Create, 2)]);
    assert!(r.host.fault_due_in().unwrap() <= delay);
    // Requests are still taken while the first ones wait.
    std::thread::sleep(Duration::from_millis(10));
    r.submit(&[req(Op::Destroy, 2, 8, 0)]);
    r.process();
    assert_eq!(r.shm.read_u32(host_ctl::SQ_HEAD), 4);
    assert_eq!(r.host.delayed_len(), 2);
    assert_eq!(r.counters.snapshot().faults_delayed, 2);

    // The guest's view: sleep as the serving loop would, then run a round.
    let mut got = Vec::new();
    while got.len() < 2 {
        std::thread::sleep(r.host.fault_due_in().expect("completions are due"));
        r.process();
        let now = ok(r.completions());
        if !now.is_empty() {
            assert!(first.elapsed() >= delay, "posted early");
        }
        got.extend(now);
    }
    let order: Vec<_> = got.iter().map(|c| (c.op, c.tag)).collect();
    assert_eq!(order, [(Op::Destroy, 1), (Op::Destroy, 2)]);
    assert!(got.iter().all(|c| c.status == Status::Ok));
    assert!(r.irqs >= 1);
    assert_eq!(r.counters.snapshot().completions, 4);
    assert_eq!(r.host.fault_due_in(), None);

    // What is still held when the guest goes away is dropped, and counted.
    r.submit(&[req(Op::Create, 3, 9, 0), req(Op::Destroy, 3, 9, 0)]);
    r.process();
    let Rig { host, counters, .. } = r;
    host.disconnect();
    assert_eq!(counters.snapshot().dropped_completions, 1);
}

/// Whether `c` could answer none of the requests the flood test submits.
fn is_bogus(c: &Completion) -> bool {
    c.space > MAX_SPACE >> 1 && c.status == Status::Ok
}

#[test]
fn cq_flood_fills_free_slots_behind_real_completions() {
    let mut r = Rig::with_fault(Fault::CqFlood);
    let cq = r.layout.cq_entries as usize;
    r.submit(&[req(Op::Create, 1, 7, 0), req(Op::Create, 2, 8, 0)]);
    r.process();
    let c = ok(r.completions());
    assert_eq!(c.len(), cq, "every free slot is used");
    assert_eq!((c[0].tag, c[0].space), (1, 7), "real completions first");
    assert_eq!((c[1].tag, c[1].space), (2, 8));
    assert!(c[2..].iter().all(is_bogus), "{c:?}");
    let s = r.counters.snapshot();
    assert_eq!((s.completions, s.faults_bogus), (2, cq as u64 - 2));
    assert!(r.irqs >= 2, "the flood interrupts besides the real publish");
    assert!(r.host.fault_due_in().unwrap() <= PERIOD);

    // The guest does not consume: the ring fills up with bogus entries, and
    // the next real completion waits for room instead of being lost.
    r.process();
    r.submit(&[req(Op::Destroy, 1, 7, 0)]);
    r.process();
    assert_eq!(r.host.overflow_len(), 1);
    let bogus_before = r.counters.snapshot().faults_bogus;
    let c = ok(r.completions());
    assert_eq!(c.len(), cq);
    assert!(c.iter().all(is_bogus));
    // Room again: the held-back real completion goes in before any new flood.
    r.process();
    let c = ok(r.completions());
    assert_eq!(c.len(), cq);
    assert_eq!((c[0].op, c[0].tag, c[0].space), (Op::Destroy, 1, 7));
    assert!(c[1..].iter().all(is_bogus));
    let s = r.counters.snapshot();
    assert_eq!(s.faults_bogus, bogus_before + cq as u64 - 1);
    assert_eq!((s.completions, s.destroys, s.cq_overflow), (3, 1, 1));

    // A guest that is not ready gets no flood.
    guest_detach(&r.shm);
    r.process();
    assert!(r.completions().is_empty());
}

#[test]
fn irq_storm_interrupts_without_completions() {
    let mut r = Rig::with_fault(Fault::IrqStorm);
    for _ in 0..3 {
        let due = r.host.fault_due_in().unwrap();
        assert!(due <= PERIOD);
        std::thread::sleep(due);
        r.process();
    }
    assert_eq!(r.irqs, 3);
    assert!(r.completions().is_empty());
    let s = r.counters.snapshot();
    assert_eq!((s.faults_irqs, s.irqs_sent, s.completions), (3, 0, 0));
    // Normal service goes on beside the storm.
    r.submit(&[req(Op::Create, 1, 7, 0)]);
    r.process();
    assert_eq!(ok(r.completions())[0].tag, 1);
}

#[test]
fn fuzz_body_survives_simple_scripts() {
    fuzz::run(&[]);
    fuzz::run(&[2, 3, 0, 1, 2, 7, 7, 7]);
    fuzz::run(&[0xff; 64]);
}

/// Three CREATEs, as the fuzz script encodes a submission step.
const THREE_CREATES: [u8; 11] = [4, 3, 0, 1, 1, 0, 1, 2, 0, 1, 3];

#[test]
fn fuzz_oracle_matches_every_completion() {
    // Submit, one round: three requests consumed and completed.
    let mut script = THREE_CREATES.to_vec();
    script.push(15);
    let r = fuzz::run(&script);
    assert_eq!(
        (r.consumed, r.submitted, r.completed, r.discarded, r.resets),
        (3, 3, 3, 0, 0)
    );
}

#[test]
fn fuzz_oracle_discards_at_a_reset() {
    // Submit, then a round in which the guest asks for a reset after the
    // host took the second request: whatever was consumed is either
    // completed before the acknowledgement or discarded by it.
    let mut script = THREE_CREATES.to_vec();
    script.extend([26, 0x81]);
    let r = fuzz::run(&script);
    assert_eq!(r.resets, 1);
    assert!(r.consumed <= 3);
    assert_eq!(r.completed + r.discarded, r.consumed);
    // The same between rounds: a reset before the host took anything.
    let mut script = THREE_CREATES.to_vec();
    script.extend([25, 1, 15]);
    let r = fuzz::run(&script);
    assert_eq!((r.consumed, r.resets), (0, 1));
}

/// Every `--fault` mode and both kinds of memory, on the same scripts: the
/// host keeps its invariants whatever it injects, and its reads stay off
/// its own fields.
#[test]
fn fuzz_body_runs_every_fault_on_both_memories() {
    let mut faults = std::collections::HashSet::new();
    let mut script = THREE_CREATES.to_vec();
    // Rounds, DESTROYs of the three, a reset, more rounds.
    script.extend([15, 5, 3, 1, 0, 1, 9, 0, 0, 0, 15, 16, 25, 0, 17]);
    script.extend(THREE_CREATES);
    script.extend([18, 19, 20]);
    for b in 0..=255u8 {
        let opts = fuzz::Options::from_byte(b);
        faults.insert(std::mem::discriminant(&opts.fault));
        let r = fuzz::run_any(&[&[b][..], &script].concat());
        assert!(r.consumed >= 3, "{opts:?}: {r:?}");
    }
    assert_eq!(faults.len(), 11, "every --fault mode");
    let mapped = fuzz::Options {
        mapped: true,
        ..Default::default()
    };
    let r = fuzz::run_with(&script, mapped);
    assert_eq!(r, fuzz::run(&script), "the same over a memfd");
    assert_eq!((r.completed, r.unmatched), (r.consumed - r.discarded, 0));
    let dup = fuzz::Options {
        fault: Fault::DupAck,
        mapped: true,
        ..Default::default()
    };
    assert!(fuzz::run_with(&script, dup).unmatched > 0);
    // Two lanes: the same requests consumed, each answered or discarded.
    let lanes = fuzz::Options {
        lanes: true,
        ..Default::default()
    };
    let two = fuzz::run_with(&script, lanes);
    assert_eq!(two.consumed, r.consumed);
    assert_eq!(
        (two.completed, two.unmatched),
        (two.consumed - two.discarded, 0)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever a guest writes, the host neither panics nor breaks its own
    /// invariants, and answers every request it takes exactly once.
    #[test]
    fn fuzz_body_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzz::run(&data);
    }

    /// The same with the first byte picking a `--fault` and the memory.
    #[test]
    fn fuzz_body_never_panics_under_faults(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzz::run_any(&data);
    }
}
