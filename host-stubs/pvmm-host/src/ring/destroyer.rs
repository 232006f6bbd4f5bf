// SPDX-License-Identifier: GPL-2.0

//! The costly half of a DESTROY: the modelled CPU work (`--work busy`) and
//! the teardown of the backing process (`--work process`), paid for from a
//! CPU budget (`--slot-cpu-share`). The slot thread runs it inline with one
//! lane; with two, a [`super::lane`] worker thread owns its own copy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pvmm_wire::Request;

use super::objects::Config;
use crate::backing::Backing;
use crate::budget::CpuBudget;
use crate::ratelimit::{warn_limited, RateLimit};
use crate::stats::{thread_cpu_us, Counters};

/// What one thread needs to do DESTROY work: the tunables, a CPU budget of
/// its own and scratch memory to burn it on.
#[derive(Debug)]
pub(crate) struct Destroyer {
    pub(crate) name: String,
    cfg: Config,
    counters: Arc<Counters>,
    budget: CpuBudget,
    scratch: Vec<u64>,
    pub(crate) limit: RateLimit,
    /// On a worker thread: its priority, which the backing processes take
    /// for their teardown (the slot thread spawned them, at its own).
    pub(crate) priority: Option<crate::priority::Priority>,
}

impl Destroyer {
    pub(crate) fn new(name: &str, cfg: &Config, counters: &Arc<Counters>) -> Destroyer {
        Destroyer {
            name: name.to_owned(),
            cfg: cfg.clone(),
            counters: Arc::clone(counters),
            budget: CpuBudget::new(cfg.cpu_share),
            scratch: vec![0x9e37_79b9_7f4a_7c15; 512],
            limit: RateLimit::new(),
            priority: None,
        }
    }

    /// The slot's counters, for the worker's CPU time.
    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    fn count(&self, f: impl Fn(&Counters) -> &AtomicU64, n: u64) {
        f(&self.counters).fetch_add(n, Ordering::Relaxed);
    }

    /// Does the work of destroying a validated request's object, whose host
    /// object the caller already removed (`backing` is what it held).
    pub(crate) fn destroy(
        &mut self,
        req: &Request,
        backing: Option<Backing>,
        stop: &dyn Fn() -> bool,
    ) {
        let (us, capped) = self.cfg.destroy_cost_us(req.pages);
        if capped {
            self.count(|c| &c.work_capped, 1);
        }
        let done = self.work(us, stop);
        self.count(|c| &c.work_us, done);
        if let Some(b) = backing {
            self.destroy_backing(b, req.pages.min(self.cfg.guest_pages), stop);
        }
        self.count(|c| &c.destroys, 1);
    }

    /// Has a backing process populate what the guest's space had (scaled and
    /// capped by the model), then kills it. Waits for the CPU budget first and
    /// charges the wall-clock time to it: the work runs in the child and the
    /// kernel, at the priority of the thread doing the DESTROY.
    fn destroy_backing(&mut self, mut b: Backing, guest_pages: u64, stop: &dyn Fn() -> bool) {
        if let Some(p) = self.priority {
            b.run_at(p);
        }
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
    /// Before each chunk it waits while the CPU budget is overdrawn.
    ///
    /// Time the thread spends preempted or waiting for a CPU does not count, so
    /// a low-priority thread on a busy host takes longer in wall-clock time:
    /// that is what the cost models. A thread that gets no CPU cannot run at
    /// all; once it does, it sees `stop` within one chunk. Returns the CPU
    /// microseconds used: at least `us` unless stopped.
    pub(crate) fn work(&mut self, us: u64, stop: &dyn Fn() -> bool) -> u64 {
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

    /// Charges the CPU time the calling thread spent since the last charge,
    /// then sleeps while the CPU budget is overdrawn, in steps short enough
    /// to notice `stop`; counts the wait in `throttled_us`. Returns whether
    /// `stop` ended the wait.
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
        self.count(|c| &c.throttled_us, micros(t0.elapsed()));
        stopped
    }
}

pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destroyer(chunk_us: u64) -> Destroyer {
        let cfg = Config {
            chunk_us,
            ..Config::default()
        };
        Destroyer::new("test", &cfg, &Arc::new(Counters::default()))
    }

    #[test]
    fn work_consumes_thread_cpu_time() {
        let mut d = destroyer(500);
        let before = thread_cpu_us();
        let done = d.work(20_000, &|| false);
        let spent = thread_cpu_us() - before;
        assert!(done >= 20_000, "reported {done} us");
        assert!(spent >= 20_000, "the thread spent {spent} us of CPU");
        assert!(spent >= done);
    }

    #[test]
    fn work_stops_between_chunks() {
        let mut d = destroyer(1_000);
        let done = d.work(10_000_000, &|| true);
        assert!((1_000..1_000_000).contains(&done), "worked {done} us");
        assert_eq!(d.work(0, &|| false), 0);
    }
}
