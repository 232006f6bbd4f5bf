// SPDX-License-Identifier: GPL-2.0

//! The host objects of a guest's address spaces: CREATE makes one (with a
//! backing process under `--work process`), DESTROY checks and removes it;
//! the costly work of a DESTROY is [`super::destroyer`]'s.

use std::time::Instant;

use pvmm_wire::{Completion, Op, Request, Status};

use super::destroyer::micros;
use super::RingHost;
use crate::backing::{Backing, Model};
use crate::fault::Fault;
use crate::priority::Priority;
use crate::ratelimit::warn_limited;

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
    /// `--lanes two`: DESTROY work runs on a worker thread at this priority
    /// while the slot thread answers CREATEs; `None` (`--lanes one`): all
    /// requests in ring order on the slot thread.
    pub destroy_worker: Option<Priority>,
    /// `--worker-queue`: most DESTROYs the worker may hold (queued, running,
    /// or finished and not taken back) before the slot thread stops taking
    /// the ring. The host's own protection, far above what credits allow.
    pub worker_queue: usize,
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
            destroy_worker: None,
            worker_queue: 65_536,
        }
    }
}

impl Config {
    /// Whether handling `req` on the slot thread takes long: a DESTROY with
    /// a cost (unless a worker takes it), or any request with a backing
    /// process to spawn or kill.
    pub fn costly(&self, req: &Request) -> bool {
        match req.op {
            Op::Create => self.backing.is_some(),
            Op::Destroy => {
                self.destroy_worker.is_none()
                    && (self.backing.is_some() || self.destroy_cost_us(req.pages).0 > 0)
            }
        }
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
        match self.take_object(req) {
            Ok(backing) => {
                self.destroyer.destroy(req, backing, stop);
                Status::Ok
            }
            Err(status) => status,
        }
    }

    /// The cheap half of a DESTROY: checks it against the host object and
    /// removes that; the object's backing process, if any, is left to
    /// [`super::destroyer::Destroyer::destroy`]. An error is the DESTROY's
    /// status, and the object stays.
    pub(crate) fn take_object(&mut self, req: &Request) -> Result<Option<Backing>, Status> {
        match self.spaces.get(&req.space) {
            None => {
                self.count(|c| &c.unknown_space, 1);
                return Err(Status::UnknownSpace);
            }
            // Not the request that created this object: a late DESTROY of an
            // earlier user of the id (or an earlier driver instance, whose
            // epoch is in the tag). Destroying would free the live one.
            Some(s) if s.tag != req.tag => {
                self.count(|c| &c.stale_tags, 1);
                return Err(Status::StaleTag);
            }
            Some(_) => {}
        }
        if req.pages > self.cfg.guest_pages {
            // More than the guest has: only a broken or hostile guest says so.
            self.count(|c| &c.pages_clamped, 1);
        }
        Ok(self.spaces.remove(&req.space).and_then(|s| s.backing))
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
}
