// SPDX-License-Identifier: GPL-2.0

//! The destroy lane (`--lanes two`): a worker thread per guest that does the
//! costly work of its DESTROYs, at its own priority, so that the slot thread
//! keeps taking the submission ring and answers CREATEs at once.
//!
//! Jobs run in the order given. Finished completions come back through a
//! list and an eventfd that the serving loop polls beside the doorbells. A
//! reset discards the lane: queued jobs are dropped (their backing processes
//! killed), the running job sees its `stop`, and its result is ignored,
//! since every job carries the generation it was queued in.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use pvmm_wire::{Completion, Op, Request, Status};
use rustix::event::{eventfd, EventfdFlags};

use super::destroyer::Destroyer;
use crate::backing::Backing;
use crate::ivshmem;
use crate::priority::Priority;
use crate::stats::{thread_cpu_us, CpuMeter};

/// A validated DESTROY whose host object was removed, for the worker.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) req: Request,
    /// What the object held (`--work process`).
    pub(crate) backing: Option<Backing>,
    /// When the slot thread took the request, for `late-ack`.
    pub(crate) taken: Instant,
}

/// A finished job: its completion and when its request was taken.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Done {
    pub(crate) c: Completion,
    pub(crate) taken: Instant,
}

#[derive(Debug, Default)]
struct Queues {
    jobs: VecDeque<(u64, Job)>,
    /// Results of the current generation only (checked under this lock).
    done: VecDeque<Done>,
    /// Bumped by [`Lane::discard`], under this lock: work of an older
    /// generation is stale.
    generation: u64,
}

#[derive(Debug)]
struct Shared {
    queues: Mutex<Queues>,
    work: Condvar,
    /// A copy of `Queues::generation` the running job polls without the lock.
    generation: AtomicU64,
    stop: AtomicBool,
    /// Rung for every finished job.
    wake: OwnedFd,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queues> {
        // A panicking worker cannot leave the queues half-changed.
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The slot thread's end of the lane; dropping it stops and joins the worker.
#[derive(Debug)]
pub(crate) struct Lane {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// Jobs given and not yet taken back (queued, running or done).
    in_flight: usize,
}

impl Lane {
    /// Starts the worker thread, which gives itself `priority` and then
    /// runs `destroyer` on every job.
    pub(crate) fn start(
        name: &str,
        mut destroyer: Destroyer,
        priority: Priority,
    ) -> io::Result<Lane> {
        let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues::default()),
            work: Condvar::new(),
            generation: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            wake,
        });
        let s = Arc::clone(&shared);
        let who = name.to_owned();
        let thread = std::thread::Builder::new()
            .name(format!("pvmm-{name}-dw"))
            .spawn(move || {
                // The serving loop checked that this priority can be had.
                if let Err(e) = priority.apply() {
                    log::warn!("{who}: destroy worker keeps its priority: {e:#}");
                }
                worker(&s, &mut destroyer);
            })?;
        Ok(Lane {
            shared,
            thread: Some(thread),
            in_flight: 0,
        })
    }

    /// Queues a job behind the others.
    pub(crate) fn submit(&mut self, job: Job) {
        let mut q = self.shared.lock();
        let generation = q.generation;
        q.jobs.push_back((generation, job));
        drop(q);
        self.in_flight += 1;
        self.shared.work.notify_one();
    }

    /// The oldest finished job, if any.
    pub(crate) fn take_done(&mut self) -> Option<Done> {
        let done = self.shared.lock().done.pop_front();
        if done.is_some() {
            self.in_flight -= 1;
        }
        done
    }

    /// Forgets every job (a reset): the queued ones are dropped here, which
    /// kills their backing processes; the running one stops at its next
    /// check. Returns (jobs dropped unstarted, jobs in flight before).
    pub(crate) fn discard(&mut self) -> (usize, usize) {
        let mut q = self.shared.lock();
        q.generation += 1;
        self.shared
            .generation
            .store(q.generation, Ordering::Relaxed);
        let jobs = std::mem::take(&mut q.jobs);
        q.done.clear();
        drop(q);
        let unstarted = jobs.len();
        drop(jobs);
        (unstarted, std::mem::take(&mut self.in_flight))
    }

    /// DESTROYs given to the worker and not yet taken back.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Readable while finished jobs wait; [`ivshmem::drain`] resets it.
    pub(crate) fn wake_fd(&self) -> BorrowedFd<'_> {
        self.shared.wake.as_fd()
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Taking the lock orders the store before the worker's next check.
        drop(self.shared.lock());
        self.shared.work.notify_all();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("a destroy worker panicked");
            }
        }
    }
}

fn worker(s: &Shared, d: &mut Destroyer) {
    let mut cpu = CpuMeter(thread_cpu_us());
    loop {
        let (generation, job) = {
            let mut q = s.lock();
            loop {
                if s.stop.load(Ordering::Relaxed) {
                    return;
                }
                if let Some(j) = q.jobs.pop_front() {
                    break j;
                }
                q = s.work.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        let halt =
            || s.stop.load(Ordering::Relaxed) || s.generation.load(Ordering::Relaxed) != generation;
        let Job {
            req,
            backing,
            taken,
        } = job;
        d.destroy(&req, backing, &halt);
        // Before the completion is out, so that it is counted when seen.
        cpu.charge(d.counters());
        let c = Completion {
            op: Op::Destroy,
            status: Status::Ok,
            tag: req.tag,
            space: req.space,
        };
        let mut q = s.lock();
        if q.generation == generation {
            q.done.push_back(Done { c, taken });
            drop(q);
            if let Err(e) = ivshmem::notify(s.wake.as_fd()) {
                log::warn!("destroy worker cannot wake its slot: {e}");
            }
        }
    }
}
