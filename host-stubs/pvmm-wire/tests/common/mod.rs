// SPDX-License-Identifier: GPL-2.0

//! Helpers the wire-format tests share: a safe in-memory window, entries, and
//! both ends of both rings.

#![allow(dead_code)]

use std::sync::atomic::AtomicU32;

use pvmm_wire::mem::MemShm;
use pvmm_wire::*;

pub(crate) fn shm(bytes: usize) -> MemShm<Vec<AtomicU32>> {
    MemShm::zeroed(bytes)
}

/// A window with a fresh header for `sq`/`cq` entries.
pub(crate) fn ring(sq: u32, cq: u32) -> (MemShm<Vec<AtomicU32>>, Layout) {
    let layout = Layout::new(sq, cq).unwrap();
    let m = shm(layout.size as usize);
    layout.init_header(&m, FEATURES_ALL, 0);
    (m, layout)
}

pub(crate) fn req(op: Op, tag: u32, space: u64, pages: u64) -> Request {
    Request {
        op,
        tag,
        space,
        pages,
    }
}

pub(crate) fn destroy(i: u32) -> Request {
    req(Op::Destroy, i, u64::from(i) + 1, u64::from(i) * 3)
}

pub(crate) fn done(r: &Request, status: Status) -> Completion {
    Completion {
        op: r.op,
        status,
        tag: r.tag,
        space: r.space,
    }
}

/// Guest and host ends of both rings, starting at `sq`/`cq` free-running indices.
pub(crate) struct Ends {
    pub(crate) m: MemShm<Vec<AtomicU32>>,
    pub(crate) gsq: SqProducer,
    pub(crate) gcq: CqConsumer,
    pub(crate) hsq: SqConsumer,
    pub(crate) hcq: CqProducer,
}

/// The guest's completion consumer index, published: the driver keeps no other.
pub(crate) fn gcq_index(e: &Ends) -> u32 {
    e.gcq.release(&e.m);
    e.m.read_u32(guest_ctl::CQ_HEAD)
}

/// Whether the completion ring holds the completion watched for: one full poll.
pub(crate) fn cq_holds(m: &impl SharedMemory, l: &Layout, op: Op, space: u64, tag: u32) -> bool {
    CqWatch::new(op, space, tag).poll(m, l, l.cq_entries)
}

pub(crate) fn ends(sq: u32, cq: u32, at_sq: u32, at_cq: u32) -> Ends {
    let (m, l) = ring(sq, cq);
    // Both sides agree on the published indices, as after a long run.
    m.write_u32(guest_ctl::SQ_TAIL, at_sq);
    m.write_u32(host_ctl::SQ_HEAD, at_sq);
    m.write_u32(guest_ctl::CQ_HEAD, at_cq);
    m.write_u32(host_ctl::CQ_TAIL, at_cq);
    Ends {
        gsq: SqProducer::resume(l, &m),
        gcq: CqConsumer::resume(l, &m),
        hsq: SqConsumer::resume(l, &m),
        hcq: CqProducer::resume(l, &m),
        m,
    }
}

impl Ends {
    /// The host takes every pending request and completes it.
    pub(crate) fn serve(&mut self) -> usize {
        let n = self.hsq.pending(&self.m).unwrap();
        for _ in 0..n {
            let r = self.hsq.take(&self.m).unwrap();
            self.hcq.push(&self.m, &done(&r, Status::Ok)).unwrap();
        }
        self.hsq.release(&self.m);
        self.hcq.publish(&self.m);
        n as usize
    }

    pub(crate) fn drain(&mut self) -> Vec<Completion> {
        let mut out = Vec::new();
        while let Some(c) = self.gcq.pop(&self.m).unwrap() {
            out.push(c.unwrap());
        }
        self.gcq.release(&self.m);
        out
    }

    /// One exchange: the guest pushes `reqs` and publishes, the host serves, the
    /// guest drains. Returns the completions expected and those drained.
    pub(crate) fn exchange(
        &mut self,
        reqs: impl IntoIterator<Item = Request>,
    ) -> (Vec<Completion>, Vec<Completion>) {
        let mut sent = Vec::new();
        for r in reqs {
            self.gsq.push(&self.m, &r).unwrap();
            sent.push(done(&r, Status::Ok));
        }
        self.gsq.publish(&self.m);
        self.serve();
        (sent, self.drain())
    }
}
