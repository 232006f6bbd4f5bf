// SPDX-License-Identifier: GPL-2.0

//! `--slot-cpu-share`: a token bucket of worker CPU time per slot, so that a
//! guest that floods its slot (with costly DESTROYs, or with cheap requests,
//! bad entries and doorbells) gets at most its share of a CPU, however much
//! work it asks for, and leaves the rest to the other slots and to the vCPUs.
//! Like a cgroup's `cpu.max`, for one thread. What is charged is the slot
//! thread's own CPU time, all of it, not a model of what the work costs.

use std::time::{Duration, Instant};

use crate::stats::thread_cpu_us;

/// CPU microseconds a slot may spend at once after being idle.
pub const BURST_US: u64 = 50_000;

/// CPU time a slot may spend, refilled with wall-clock time.
#[derive(Debug)]
pub struct CpuBudget {
    /// Percent of one CPU; 100 means no limit (a thread cannot use more).
    share: u32,
    /// Microseconds of CPU time available; negative after an overdraft.
    tokens: i64,
    last: Instant,
    /// The calling thread's CPU time when it was last charged; `None` until
    /// the first charge, so CPU spent before the slot ran is not charged.
    cpu_mark: Option<u64>,
}

impl CpuBudget {
    /// A full bucket for `share` percent of one CPU (clamped to 1..=100).
    pub fn new(share: u32) -> CpuBudget {
        CpuBudget {
            share: share.clamp(1, 100),
            tokens: BURST_US as i64,
            last: Instant::now(),
            cpu_mark: None,
        }
    }

    /// Whether this budget limits anything.
    pub fn unlimited(&self) -> bool {
        self.share >= 100
    }

    fn refill(&mut self, now: Instant) {
        let wall = now.saturating_duration_since(self.last).as_micros();
        self.last = now;
        let earned = wall.saturating_mul(u128::from(self.share)) / 100;
        let tokens = i128::from(self.tokens).saturating_add(earned as i128);
        self.tokens = tokens.min(i128::from(BURST_US)) as i64;
    }

    /// Takes `us` CPU microseconds just spent.
    pub fn charge(&mut self, now: Instant, us: u64) {
        if self.unlimited() {
            return;
        }
        self.refill(now);
        self.tokens = self
            .tokens
            .saturating_sub(i64::try_from(us).unwrap_or(i64::MAX));
    }

    /// Charges the CPU time the calling thread used since its last charge:
    /// the whole serving loop, between rounds as well as in them. The first
    /// call only sets the mark.
    pub fn charge_thread(&mut self, now: Instant) {
        if self.unlimited() {
            return;
        }
        let cpu = thread_cpu_us();
        if let Some(mark) = self.cpu_mark.replace(cpu) {
            self.charge(now, cpu.saturating_sub(mark));
        }
    }

    /// How long to wait before spending more CPU, if the budget is overdrawn.
    pub fn wait(&mut self, now: Instant) -> Option<Duration> {
        if self.unlimited() {
            return None;
        }
        self.refill(now);
        if self.tokens > 0 {
            return None;
        }
        // Until one token is back: debt * 100 / share microseconds of wall time.
        let debt = self.tokens.unsigned_abs() + 1;
        Some(Duration::from_micros(
            debt.saturating_mul(100) / u64::from(self.share),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_share_never_waits() {
        let mut b = CpuBudget::new(100);
        let t = Instant::now();
        b.charge(t, 10_000_000);
        assert_eq!(b.wait(t), None);
        assert!(b.unlimited());
    }

    #[test]
    fn overdraft_is_paid_back_at_the_share() {
        let mut b = CpuBudget::new(25);
        let t = b.last;
        assert_eq!(b.wait(t), None, "starts with a burst");
        b.charge(t, BURST_US + 10_000);
        // 10 ms of debt (and one token) at 25 %: about 40 ms of wall time.
        let w = b.wait(t).unwrap();
        assert!(
            (Duration::from_millis(40)..Duration::from_millis(41)).contains(&w),
            "{w:?}"
        );
        assert_eq!(b.wait(t + Duration::from_millis(41)), None);
        // Idle time refills the bucket up to the burst only.
        let later = t + Duration::from_secs(100);
        b.charge(later, BURST_US);
        assert!(b.wait(later).is_some());
    }

    #[test]
    fn the_thread_pays_for_its_cpu_time() {
        let mut b = CpuBudget::new(10);
        let t = b.last;
        b.charge_thread(t);
        assert_eq!(b.tokens, BURST_US as i64, "the first call only marks");
        let start = thread_cpu_us();
        while thread_cpu_us() - start < 2 * BURST_US {
            std::hint::black_box(start);
        }
        b.charge_thread(t);
        assert!(b.tokens <= -(BURST_US as i64), "{} tokens left", b.tokens);
        assert!(b.wait(t).is_some());
    }

    #[test]
    fn share_is_clamped() {
        assert!(CpuBudget::new(0).wait(Instant::now()).is_none());
        assert!(CpuBudget::new(250).unlimited());
    }
}
