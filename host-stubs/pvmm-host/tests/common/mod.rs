// SPDX-License-Identifier: GPL-2.0

//! A scripted guest for the integration tests, over a real sealed memfd
//! window (`MappedShm`), which can also be shared between threads.

#![allow(dead_code)]

use std::sync::Arc;

use pvmm_host::fault::Fault;
use pvmm_host::ring::{Config, RingHost};
use pvmm_host::shm::MappedShm;
use pvmm_host::stats::Counters;
use pvmm_wire::*;

pub struct Rig {
    pub shm: MappedShm,
    pub layout: Layout,
    pub host: RingHost,
    pub counters: Arc<Counters>,
    pub sq: SqProducer,
    pub cq: CqConsumer,
    pub irqs: u32,
}

/// The window size every rig uses: room for the rings and a release log.
pub const WINDOW: usize = 64 << 10;

impl Rig {
    pub fn new() -> Rig {
        Rig::with_fault(Fault::None)
    }

    pub fn with_fault(fault: Fault) -> Rig {
        Rig::with(
            Layout::new(4, 8).unwrap(),
            Config {
                cost_us_per_mib: 0,
                fault,
                ..Config::default()
            },
        )
    }

    pub fn with(layout: Layout, cfg: Config) -> Rig {
        let shm = MappedShm::create("pvmm-test", WINDOW).unwrap();
        let counters = Arc::new(Counters::default());
        let host = RingHost::new("test", layout, cfg, Arc::clone(&counters));
        host.init_shm(&shm);
        let header = Header::read(&shm).unwrap();
        guest_attach(&shm, header.features);
        Rig {
            sq: SqProducer::resume(layout, &shm),
            cq: CqConsumer::resume(layout, &shm),
            shm,
            layout,
            host,
            counters,
            irqs: 0,
        }
    }

    pub fn submit(&mut self, reqs: &[Request]) {
        for r in reqs {
            self.sq.push(&self.shm, r).unwrap();
        }
        self.sq.publish(&self.shm);
    }

    pub fn process(&mut self) {
        let mut irqs = 0;
        self.host.process(&self.shm, &mut || irqs += 1, &|| false);
        self.irqs += irqs;
    }

    pub fn completions(&mut self) -> Vec<Result<Completion, BadEntry>> {
        let mut out = Vec::new();
        while let Some(c) = self.cq.pop(&self.shm).unwrap() {
            out.push(c);
        }
        self.cq.release(&self.shm);
        out
    }

    pub fn ok_completions(&mut self) -> Vec<Completion> {
        self.completions().into_iter().map(Result::unwrap).collect()
    }
}

pub fn req(op: Op, tag: u32, space: u64, pages: u64) -> Request {
    Request {
        op,
        tag,
        space,
        pages,
    }
}
