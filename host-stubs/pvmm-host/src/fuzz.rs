// SPDX-License-Identifier: GPL-2.0

//! The fuzz body: a hostile guest, scripted by arbitrary bytes, against the
//! host's ring processing. `tests/ring.rs` runs it on random input; a
//! cargo-fuzz target can call it as is.

use std::sync::Arc;

use pvmm_wire::mem::MemShm;
use pvmm_wire::{
    guest_ctl, host_ctl, CqConsumer, Layout, Op, Request, SharedMemory, SqProducer, GUEST_READY,
};

use crate::ring::{Config, RingHost};
use crate::stats::Counters;

/// Most host objects in a fuzz run, small so the limit is reached.
const MAX_OBJECTS: usize = 16;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | u64::from(self.u32()) << 32
    }
}

/// Runs one script. Panics only if the host breaks one of its own invariants.
///
/// The window starts with a valid header. Each input byte then picks a step:
/// raw writes anywhere in the window (header and host line included, as a
/// guest can do), control-word writes, well-formed guest submissions and
/// completion reads, `GUEST_READY` toggles, and host processing rounds.
pub fn run(data: &[u8]) {
    let layout = Layout::new(4, 8).expect("static layout");
    let words = (layout.size as usize).div_ceil(8);
    let shm = MemShm::zeroed(layout.size as usize);
    let counters = Arc::new(Counters::default());
    let cfg = Config {
        cost_base_us: 0,
        cost_us_per_mib: 0,
        max_objects: MAX_OBJECTS,
        ..Config::default()
    };
    let mut host = RingHost::new("fuzz", layout, cfg, Arc::clone(&counters));
    host.init_shm(&shm);
    let mut input = Input(data);
    let ctl = [
        guest_ctl::SQ_TAIL,
        guest_ctl::CQ_HEAD,
        guest_ctl::FLAGS,
        guest_ctl::FEATURES,
        host_ctl::SQ_HEAD,
        host_ctl::CQ_TAIL,
        host_ctl::FLAGS,
        host_ctl::ERRORS,
    ];

    while !input.0.is_empty() {
        match input.byte() % 8 {
            0 => {
                let at = input.byte() as usize % words * 8;
                shm.write_u64(at, input.u64());
            }
            1 => {
                let at = ctl[input.byte() as usize % ctl.len()];
                shm.write_u32(at, input.u32());
            }
            2 => {
                let mut sq = SqProducer::resume(layout, &shm);
                for _ in 0..input.byte() % 6 {
                    let op = if input.byte() & 1 == 0 {
                        Op::Create
                    } else {
                        Op::Destroy
                    };
                    let req = Request {
                        op,
                        tag: input.byte().into(),
                        space: u64::from(input.byte() % 24) + 1,
                        pages: if op == Op::Create {
                            0
                        } else {
                            input.u32().into()
                        },
                    };
                    if sq.push(&shm, &req).is_err() {
                        break;
                    }
                }
                sq.publish(&shm);
            }
            3 => {
                let mut cq = CqConsumer::resume(layout, &shm);
                for _ in 0..input.byte() % 12 {
                    if !matches!(cq.pop(&shm), Ok(Some(_))) {
                        break;
                    }
                }
                cq.release(&shm);
                cq.set_need_irq(&shm, input.byte() & 1 == 0);
            }
            4 | 7 => step(&mut host, &shm, &counters),
            5 => {
                let flags = shm.read_u32(guest_ctl::FLAGS) ^ GUEST_READY;
                shm.write_u32(guest_ctl::FLAGS, flags);
            }
            _ => {
                let start = input.byte() as usize % words;
                for w in start..(start + input.byte() as usize % 16).min(words) {
                    shm.write_u64(w * 8, input.u64());
                }
            }
        }
    }
    for _ in 0..3 {
        step(&mut host, &shm, &counters);
    }
}

fn step(host: &mut RingHost, shm: &impl SharedMemory, counters: &Counters) {
    let mut irqs = 0u32;
    let before = host.live_objects();
    let b = host.process(shm, &mut || irqs += 1, &|| false);
    let _ = host.next(shm);
    host.woken(shm);
    let layout = host.layout();
    assert!(host.live_objects() <= MAX_OBJECTS);
    assert!(host.live_objects() <= before + b.requests as usize);
    assert!(host.overflow_len() <= (layout.cq_entries + layout.sq_entries) as usize);
    assert!(irqs <= 1 + b.requests, "at most one interrupt per publish");
    let snap = counters.snapshot();
    assert_eq!(snap.live_objects, host.live_objects() as u64);
    assert!(snap.sq_pending <= u64::from(layout.sq_entries));
    assert_eq!(
        shm.read_u32(host_ctl::ERRORS),
        (snap.bad_entries + snap.bad_indices) as u32
    );
}
