// SPDX-License-Identifier: GPL-2.0

//! `--slot-cpu-share` with two slots: one guest floods its slot with the
//! costliest DESTROYs it can claim, the other times small ones. Both serving
//! threads share one CPU, as they do on a busy host.
//!
//! The bound on the small DESTROYs' latency is loose, for loaded machines;
//! `PVMM_TEST_SLOT_LATENCY_MS` overrides it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pvmm_host::budget::BURST_US;
use pvmm_host::ring::{Config, Next, RingHost};
use pvmm_host::shm::MappedShm;
use pvmm_host::stats::Counters;
use pvmm_wire::*;

/// Default bound on a small DESTROY's latency in the quiet slot.
const LATENCY_MS: u64 = 250;
/// The flooding slot's share of a CPU.
const SHARE: u32 = 25;
const RUN: Duration = Duration::from_millis(1500);

struct Slot {
    shm: Arc<MappedShm>,
    layout: Layout,
    counters: Arc<Counters>,
}

fn slot(stop: &Arc<AtomicBool>, cpu: Option<usize>) -> (Slot, std::thread::JoinHandle<()>) {
    let layout = Layout::new(8, 16).unwrap();
    let shm = Arc::new(MappedShm::create("pvmm-test", 64 << 10).unwrap());
    let counters = Arc::new(Counters::default());
    let cfg = Config {
        cost_us_per_mib: 20,
        cpu_share: SHARE,
        ..Config::default()
    };
    let mut host = RingHost::new("slot", layout, cfg, Arc::clone(&counters));
    host.init_shm(&*shm);
    let header = Header::read(&*shm).unwrap();
    guest_attach(&*shm, header.features);
    let (s, stop) = (Arc::clone(&shm), Arc::clone(stop));
    let t = std::thread::spawn(move || {
        if let Some(cpu) = cpu {
            let mut set = rustix::thread::CpuSet::new();
            set.set(cpu);
            let _ = rustix::thread::sched_setaffinity(None, &set);
        }
        let halt = || stop.load(Ordering::Relaxed);
        while !halt() {
            host.woken(&*s);
            host.process(&*s, &mut || {}, &halt);
            // Stands in for the doorbell poll of the serving loop.
            if host.next(&*s) != Next::Run {
                std::thread::sleep(Duration::from_micros(500));
            }
        }
    });
    (
        Slot {
            shm,
            layout,
            counters,
        },
        t,
    )
}

fn req(op: Op, space: u64, pages: u64) -> Request {
    Request {
        op,
        tag: 1,
        space,
        pages,
    }
}

#[test]
fn a_flooding_slot_gets_its_share_and_the_other_stays_fast() {
    let bound = std::env::var("PVMM_TEST_SLOT_LATENCY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(LATENCY_MS);
    // Both serving threads on one CPU, if the affinity can be set.
    let cpu = rustix::thread::sched_getaffinity(None)
        .ok()
        .and_then(|set| (0..rustix::thread::CpuSet::MAX_CPU).find(|&c| set.is_set(c)));
    let stop = Arc::new(AtomicBool::new(false));
    let (a, ta) = slot(&stop, cpu);
    let (b, tb) = slot(&stop, cpu);
    let start = Instant::now();

    // Guest A: CREATE, then DESTROY claiming 2^40 pages, as fast as it can.
    let flood = {
        let stop = Arc::clone(&stop);
        let (shm, layout) = (Arc::clone(&a.shm), a.layout);
        std::thread::spawn(move || {
            let mut sq = SqProducer::resume(layout, &*shm);
            let mut cq = CqConsumer::resume(layout, &*shm);
            let mut space = 1;
            while !stop.load(Ordering::Relaxed) {
                while sq.space(&*shm).unwrap() >= 2 {
                    sq.push(&*shm, &req(Op::Create, space, 0)).unwrap();
                    sq.push(&*shm, &req(Op::Destroy, space, MAX_PAGES)).unwrap();
                    space += 1;
                }
                sq.publish(&*shm);
                while let Some(c) = cq.pop(&*shm).unwrap() {
                    assert_eq!(c.unwrap().status, Status::Ok);
                }
                cq.release(&*shm);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };

    // Guest B: one small DESTROY at a time, timed until its completion.
    let mut sq = SqProducer::resume(b.layout, &*b.shm);
    let mut cq = CqConsumer::resume(b.layout, &*b.shm);
    let mut lat = Vec::new();
    let mut space = 1;
    while start.elapsed() < RUN {
        sq.push(&*b.shm, &req(Op::Create, space, 0)).unwrap();
        sq.push(&*b.shm, &req(Op::Destroy, space, 256)).unwrap();
        let t = Instant::now();
        sq.publish(&*b.shm);
        let mut done = false;
        while !done {
            match cq.pop(&*b.shm).unwrap() {
                Some(c) => done = c.unwrap().op == Op::Destroy,
                None => std::thread::sleep(Duration::from_micros(100)),
            }
            assert!(t.elapsed() < Duration::from_secs(10), "slot B stuck");
        }
        cq.release(&*b.shm);
        lat.push(t.elapsed());
        space += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let wall = start.elapsed();
    for t in [flood, ta, tb] {
        t.join().unwrap();
    }

    let sa = a.counters.snapshot();
    lat.sort();
    let worst = *lat.last().unwrap();
    eprintln!(
        "slot A: {} destroys, {} us work, {} us throttled in {wall:?}; \
         slot B: {} destroys, median {:?}, worst {worst:?}",
        sa.destroys,
        sa.work_us,
        sa.throttled_us,
        lat.len(),
        lat[lat.len() / 2]
    );
    assert!(sa.destroys >= 2, "slot A made progress");
    // At most the burst plus the share of the wall time, with slack for
    // the chunk in progress and clock granularity.
    let allowed = BURST_US + wall.as_micros() as u64 * u64::from(SHARE) / 100;
    // Held back, unless a busy machine gave it less CPU than its share anyway.
    assert!(
        sa.throttled_us > 0 || sa.work_us < allowed * 9 / 10,
        "slot A used {} us of its {allowed} us without being held back",
        sa.work_us
    );
    assert!(
        sa.work_us <= allowed + allowed / 5 + 20_000,
        "slot A used {} us of CPU, its share is {allowed} us",
        sa.work_us
    );
    assert!(lat.len() >= 10, "slot B got {} rounds", lat.len());
    assert!(
        worst <= Duration::from_millis(bound),
        "a small DESTROY in slot B took {worst:?} (bound {bound} ms)"
    );
}

/// A guest that asks for no costly work at all: CREATEs, DESTROYs of
/// nothing, zero-cost DESTROYs and malformed entries, with the slot woken
/// over and over as a doorbell flood would wake it. The slot thread's whole
/// CPU time still stays within its share.
#[test]
fn a_guest_flooding_cheap_requests_and_doorbells_gets_its_share() {
    let stop = Arc::new(AtomicBool::new(false));
    let layout = Layout::new(64, 64).unwrap();
    let shm = Arc::new(MappedShm::create("pvmm-test", 64 << 10).unwrap());
    let counters = Arc::new(Counters::default());
    let cfg = Config {
        cpu_share: SHARE,
        ..Config::default()
    };
    let mut host = RingHost::new("slot", layout, cfg, Arc::clone(&counters));
    host.init_shm(&*shm);
    guest_attach(&*shm, Header::read(&*shm).unwrap().features);
    let (s, halt) = (Arc::clone(&shm), Arc::clone(&stop));
    let slot = std::thread::spawn(move || {
        let halt = || halt.load(Ordering::Relaxed);
        let (t0, cpu0) = (Instant::now(), pvmm_host::stats::thread_cpu_us());
        while !halt() {
            // Every poll returns at once: a doorbell is always pending.
            host.woken(&*s);
            host.process(&*s, &mut || {}, &halt);
            let _ = host.next(&*s);
        }
        (t0.elapsed(), pvmm_host::stats::thread_cpu_us() - cpu0)
    });
    let flood = {
        let (shm, stop) = (Arc::clone(&shm), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut sq = SqProducer::resume(layout, &*shm);
            let mut cq = CqConsumer::resume(layout, &*shm);
            let mut space = 1;
            while !stop.load(Ordering::Relaxed) {
                while sq.space(&*shm).unwrap() >= 4 {
                    sq.push(&*shm, &req(Op::Create, space, 0)).unwrap();
                    sq.push(&*shm, &req(Op::Destroy, space, 0)).unwrap();
                    sq.push(&*shm, &req(Op::Destroy, space, 0)).unwrap();
                    // A CREATE with pages is malformed.
                    sq.push(&*shm, &req(Op::Create, space, 1)).unwrap();
                    space += 1;
                }
                sq.publish(&*shm);
                while let Ok(Some(_)) = cq.pop(&*shm) {}
                cq.release(&*shm);
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    std::thread::sleep(RUN);
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    let (wall, cpu) = slot.join().unwrap();
    let s = counters.snapshot();
    eprintln!(
        "cheap flood: {} creates, {} bad entries, {cpu} us CPU in {wall:?}, {} us throttled",
        s.creates, s.bad_entries, s.throttled_us
    );
    assert!(s.creates > 0 && s.bad_entries > 0, "the flood got through");
    let allowed = BURST_US + wall.as_micros() as u64 * u64::from(SHARE) / 100;
    assert!(
        cpu <= allowed + allowed / 5 + 20_000,
        "the slot thread used {cpu} us of CPU, its share is {allowed} us"
    );
}
