// SPDX-License-Identifier: GPL-2.0

//! The host objects of a guest's address spaces, and the cost of destroying
//! one: modelled and spent as real CPU time (`--work busy`), or real host
//! address spaces ([`crate::backing`], `--work process`).

use std::time::{Duration, Instant};

use pvmm_wire::{Completion, Op, Request, Status};

use super::RingHost;
use crate::backing::{Backing, Model};
use crate::fault::Fault;
use crate::ratelimit::warn_limited;
use crate::stats::thread_cpu_us;

/// Tunables of request processing. Costs are CPU time of the thread that
/// processes the rings, not wall-clock time.
#[derive(Clone, Debug)]
pub struct Config {
    /// Fixed cost of every DESTROY, CPU microseconds.
    pub cost_base_us: u64,
    /// Cost per MiB of address space destroyed, CPU microseconds.
    pub cost_us_per_mib: u64,
    /// Longest stretch of work without a preemption point, CPU microseconds.
    pub chunk_us: u64,
    /// Cap on one DESTROY's work in CPU microseconds: the size is the
    /// guest's claim.
    pub max_destroy_us: u64,
    /// Most pages a guest can have (`--guest-mem-mib` * 256): a larger
    /// DESTROY `pages` claim is clamped to this before it is costed.
    pub guest_pages: u64,
    /// Percent of one CPU a slot's DESTROY work may use (`--slot-cpu-share`;
    /// 100: no limit).
    pub cpu_share: u32,
    /// Most host objects one guest may hold; CREATE beyond gets `NoMemory`.
    pub max_objects: usize,
    /// ivshmem peer id of the host, written into the header.
    pub host_peer: u32,
    /// Misbehaviour to inject (`--fault`); [`Fault::None`] for a correct host.
    pub fault: Fault,
    /// `--work process`: back every space by a host process; `None`: the
    /// busy loop alone (`--work busy`).
    pub backing: Option<Model>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            cost_base_us: 0,
            cost_us_per_mib: 20,
            chunk_us: 500,
            max_destroy_us: 10_000_000,
            guest_pages: 4096 * 256,
            cpu_share: 100,
            max_objects: 65_536,
            host_peer: 0,
            fault: Fault::None,
            backing: None,
        }
    }
}

impl Config {
    /// Whether handling `req` takes long: a DESTROY with a cost, or any
    /// request with a backing process to spawn or kill.
    pub fn costly(&self, req: &Request) -> bool {
        self.backing.is_some() || (req.op == Op::Destroy && self.destroy_cost_us(req.pages).0 > 0)
    }

    /// Modelled cost of destroying `pages` 4 KiB pages (clamped to
    /// `guest_pages`), CPU microseconds, and whether `max_destroy_us` capped it.
    /// With a backing process the per-MiB cost is real, so only the base is.
    pub fn destroy_cost_us(&self, pages: u64) -> (u64, bool) {
        let pages = pages.min(self.guest_pages);
        let per_mib = if self.backing.is_some() {
            0
        } else {
            self.cost_us_per_mib
        };
        // pages * 4 KiB / 1 MiB = pages / 256, in u128 so nothing overflows.
        let us = u128::from(self.cost_base_us) + u128::from(per_mib) * u128::from(pages) / 256;
        let us = u64::try_from(us).unwrap_or(u64::MAX);
        if us > self.max_destroy_us {
            (self.max_destroy_us, true)
        } else {
            (us, false)
        }
    }
}
/// The host object of one guest address space.
#[derive(Debug)]
pub(crate) struct Space {
    pub(crate) tag: u32,
    pub(crate) created: Instant,
    /// Stands for the host-side structures (page tables, task object).
    _obj: Box<[u64; 32]>,
    /// `--work process`: the host address space; dropping it kills the process.
    backing: Option<Backing>,
}

impl RingHost {
    /// Handles one validated request; this is where the host work happens.
    pub fn handle(&mut self, req: &Request, stop: &dyn Fn() -> bool) -> Completion {
        let status = match req.op {
            Op::Create => self.create(req, stop),
            Op::Destroy => self.destroy(req, stop),
        };
        Completion {
            op: req.op,
            status,
            tag: req.tag,
            space: req.space,
        }
    }

    fn create(&mut self, req: &Request, stop: &dyn Fn() -> bool) -> Status {
        if let Some(old) = self.spaces.remove(&req.space) {
            // The guest reuses an id only after that pgd was freed, which it does
            // only after our DESTROY completion: an object still here is stale.
            self.count(|c| &c.stale_reclaimed, 1);
            log::debug!(
                "{}: space {:#x} re-created; reclaiming stale object (tag {}, age {:?})",
                self.name,
                req.space,
                old.tag,
                old.created.elapsed()
            );
        } else if self.spaces.len() >= self.cfg.max_objects {
            self.count(|c| &c.no_memory, 1);
            return Status::NoMemory;
        }
        let backing = match self.cfg.backing.clone() {
            None => None,
            Some(model) => match self.spawn_backing(&model, stop) {
                Some(b) => Some(b),
                None => return Status::NoMemory,
            },
        };
        let mut obj = Box::new([0u64; 32]);
        obj[0] = req.space;
        obj[1] = u64::from(req.tag);
        self.spaces.insert(
            req.space,
            Space {
                tag: req.tag,
                created: Instant::now(),
                _obj: obj,
                backing,
            },
        );
        self.count(|c| &c.creates, 1);
        Status::Ok
    }

    fn destroy(&mut self, req: &Request, stop: &dyn Fn() -> bool) -> Status {
        match self.spaces.get(&req.space) {
            None => {
                self.count(|c| &c.unknown_space, 1);
                return Status::UnknownSpace;
            }
            // Not the request that created this object: a late DESTROY of an
            // earlier user of the id (or an earlier driver instance, whose
            // epoch is in the tag). Destroying would free the live one.
            Some(s) if s.tag != req.tag => {
                self.count(|c| &c.stale_tags, 1);
                return Status::StaleTag;
            }
            Some(_) => {}
        }
        if req.pages > self.cfg.guest_pages {
            // More than the guest has: only a broken or hostile guest says so.
            self.count(|c| &c.pages_clamped, 1);
        }
        let (us, capped) = self.cfg.destroy_cost_us(req.pages);
        if capped {
            self.count(|c| &c.work_capped, 1);
        }
        let done = self.work(us, stop);
        self.count(|c| &c.work_us, done);
        let backing = self.spaces.remove(&req.space).and_then(|s| s.backing);
        if let Some(b) = backing {
            self.destroy_backing(b, req.pages.min(self.cfg.guest_pages), stop);
        }
        self.count(|c| &c.destroys, 1);
        Status::Ok
    }

    /// Starts the host address space of a CREATE; `None` (counted) if it
    /// cannot, and the CREATE fails.
    fn spawn_backing(&mut self, model: &Model, stop: &dyn Fn() -> bool) -> Option<Backing> {
        let t0 = Instant::now();
        match Backing::spawn(model, stop) {
            Ok(b) => {
                self.count(|c| &c.backing_spawned, 1);
                self.count(|c| &c.backing_spawn_us, micros(t0.elapsed()));
                Some(b)
            }
            Err(e) => {
                self.count(|c| &c.backing_failed, 1);
                warn_limited!(self, "cannot start a backing process: {e}");
                None
            }
        }
    }

    /// Has a backing process populate what the guest's space had (scaled and
    /// capped by the model), then kills it. Waits for the CPU budget first and
    /// charges the wall-clock time to it: the work runs in the child and the
    /// kernel, at the priority the child inherited from the slot thread.
    fn destroy_backing(&mut self, b: Backing, guest_pages: u64, stop: &dyn Fn() -> bool) {
        let pages = self
            .cfg
            .backing
            .as_ref()
            .map_or(0, |m| m.host_pages(guest_pages));
        if self.throttle(stop) {
            return;
        }
        match b.destroy(pages, stop) {
            Ok(d) => {
                self.count(|c| &c.backing_pages, d.pages);
                self.count(|c| &c.backing_populate_us, micros(d.populate));
                self.count(|c| &c.backing_exit_us, micros(d.exit));
                self.budget
                    .charge(Instant::now(), micros(d.populate + d.exit));
            }
            Err(e) => {
                self.count(|c| &c.backing_failed, 1);
                warn_limited!(self, "backing process failed to populate: {e}");
            }
        }
    }

    /// Burns `us` microseconds of the calling thread's own CPU time
    /// (`CLOCK_THREAD_CPUTIME_ID`) on real memory work, in chunks of at most
    /// `chunk_us` CPU microseconds, yielding and checking `stop` between chunks.
    /// Before each chunk it waits while the slot's CPU budget is overdrawn.
    ///
    /// Time the thread spends preempted or waiting for a CPU does not count, so
    /// a low-priority thread on a busy host takes longer in wall-clock time:
    /// that is what the cost models. A thread that gets no CPU cannot run at
    /// all; once it does, it sees `stop` within one chunk. Returns the CPU
    /// microseconds used: at least `us` unless stopped.
    fn work(&mut self, us: u64, stop: &dyn Fn() -> bool) -> u64 {
        if us == 0 {
            return 0;
        }
        let start = thread_cpu_us();
        let chunk = self.cfg.chunk_us.max(1);
        let mut x = self.scratch[0] | 1;
        let mut used = 0;
        while used < us {
            if self.throttle(stop) {
                break;
            }
            let end = us.min(used.saturating_add(chunk));
            while used < end {
                for w in self.scratch.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *w = w.wrapping_add(x);
                }
                // The thread CPU clock is a system call: read it once a pass.
                used = thread_cpu_us().saturating_sub(start);
            }
            std::hint::black_box(&self.scratch);
            if stop() {
                break;
            }
            std::thread::yield_now();
        }
        self.scratch[0] = x;
        used
    }

    /// Charges the CPU time spent since the last charge, then sleeps while
    /// the CPU budget is overdrawn, in steps short enough to notice `stop`;
    /// counts the wait in `throttled_us`. Returns whether `stop` ended the
    /// wait.
    pub(crate) fn throttle(&mut self, stop: &dyn Fn() -> bool) -> bool {
        self.budget.charge_thread(Instant::now());
        let Some(mut wait) = self.budget.wait(Instant::now()) else {
            return false;
        };
        let t0 = Instant::now();
        let stopped = loop {
            if stop() {
                break true;
            }
            std::thread::sleep(wait.min(Duration::from_millis(10)));
            match self.budget.wait(Instant::now()) {
                Some(w) => wait = w,
                None => break false,
            }
        };
        let waited = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.count(|c| &c.throttled_us, waited);
        stopped
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pvmm_wire::Layout;

    use super::*;
    use crate::stats::Counters;

    fn host(chunk_us: u64) -> RingHost {
        let cfg = Config {
            chunk_us,
            ..Config::default()
        };
        let layout = Layout::new(4, 8).unwrap();
        RingHost::new("test", layout, cfg, Arc::new(Counters::default()))
    }

    #[test]
    fn work_consumes_thread_cpu_time() {
        let mut h = host(500);
        let before = thread_cpu_us();
        let done = h.work(20_000, &|| false);
        let spent = thread_cpu_us() - before;
        assert!(done >= 20_000, "reported {done} us");
        assert!(spent >= 20_000, "the thread spent {spent} us of CPU");
        assert!(spent >= done);
    }

    #[test]
    fn work_stops_between_chunks() {
        let mut h = host(1_000);
        let done = h.work(10_000_000, &|| true);
        assert!((1_000..1_000_000).contains(&done), "worked {done} us");
        assert_eq!(h.work(0, &|| false), 0);
    }
}
