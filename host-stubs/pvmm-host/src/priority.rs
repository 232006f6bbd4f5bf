// SPDX-License-Identifier: GPL-2.0

//! Scheduling of a slot's serving thread: a normal Linux policy and a nice
//! value, which the thread applies to itself, so the rest of the process keeps
//! its own. `--worker-sched idle` models a host worker below the vCPUs'
//! priority (Lackorzynski, RTLWS 2012).

use std::fmt;
use std::io;

use anyhow::{bail, Context, Result};
use thread_priority::{
    NormalThreadSchedulePolicy as Normal, ThreadPriority, ThreadPriorityOsValue,
    ThreadSchedulePolicy,
};

/// A normal (not real-time) Linux scheduling policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Policy {
    /// SCHED_OTHER: the default time-sharing policy.
    #[default]
    Other,
    /// SCHED_BATCH: time-sharing, treated as CPU-bound (no wake-up preference).
    Batch,
    /// SCHED_IDLE: runs only when nothing else wants the CPU (below nice 19).
    Idle,
}

impl Policy {
    /// The spelling of the command line.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Other => "other",
            Policy::Batch => "batch",
            Policy::Idle => "idle",
        }
    }

    fn to_thread_priority(self) -> ThreadSchedulePolicy {
        ThreadSchedulePolicy::Normal(match self {
            Policy::Other => Normal::Other,
            Policy::Batch => Normal::Batch,
            Policy::Idle => Normal::Idle,
        })
    }

    fn from_thread_priority(p: ThreadSchedulePolicy) -> Option<Policy> {
        match p {
            ThreadSchedulePolicy::Normal(Normal::Other) => Some(Policy::Other),
            ThreadSchedulePolicy::Normal(Normal::Batch) => Some(Policy::Batch),
            ThreadSchedulePolicy::Normal(Normal::Idle) => Some(Policy::Idle),
            _ => None,
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A thread's scheduling policy and nice value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Priority {
    /// Scheduling policy.
    pub policy: Policy,
    /// Nice value, -20 to 19 (ignored by the scheduler under `idle`).
    pub nice: i32,
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sched {} nice {}", self.policy, self.nice)
    }
}

fn os_error(e: thread_priority::Error) -> anyhow::Error {
    match e {
        thread_priority::Error::OS(errno) => io::Error::from_raw_os_error(errno).into(),
        other => anyhow::anyhow!("{other}"),
    }
}

/// The calling thread's policy (`None` for a real-time one) and nice value.
pub fn current() -> Result<(Option<Policy>, i32)> {
    let policy = thread_priority::thread_schedule_policy()
        .map_err(os_error)
        .context("cannot read the thread's scheduling policy")?;
    let nice = rustix::process::getpriority_process(None)
        .context("cannot read the thread's nice value")?;
    Ok((Policy::from_thread_priority(policy), nice))
}

impl Priority {
    /// Applies this to the calling thread only (on Linux, policy and nice
    /// value are per thread), then reads it back. Fails with the OS's reason,
    /// for example EPERM for a negative nice value without `CAP_SYS_NICE`.
    pub fn apply(&self) -> Result<()> {
        if current()?.0 != Some(self.policy) {
            let native = thread_priority::thread_native_id();
            let os0 = ThreadPriority::Os(ThreadPriorityOsValue::default());
            let set = thread_priority::set_thread_priority_and_policy(
                native,
                os0,
                self.policy.to_thread_priority(),
            );
            // The crate also resets the nice value to 0 after switching policy,
            // which a thread of a process started niced may not do; the nice
            // value is set below anyway, so only the policy must have worked.
            if let Err(e) = set {
                if current()?.0 != Some(self.policy) {
                    return Err(os_error(e))
                        .with_context(|| format!("cannot set scheduling policy {}", self.policy));
                }
            }
        }
        if current()?.1 != self.nice {
            rustix::process::setpriority_process(None, self.nice).with_context(|| {
                format!(
                    "cannot set nice value {} (lowering it needs CAP_SYS_NICE or RLIMIT_NICE)",
                    self.nice
                )
            })?;
        }
        let (policy, nice) = current()?;
        if policy != Some(self.policy) || nice != self.nice {
            bail!("asked for {self}, got policy {policy:?} nice {nice}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies `policy` with the inherited nice value plus `raise` (raising
    /// needs no privilege) on a new thread; returns what it read back there.
    fn on_new_thread(policy: Policy, raise: i32) -> (ThreadSchedulePolicy, i32, i32) {
        std::thread::spawn(move || {
            let inherited = rustix::process::getpriority_process(None).unwrap();
            let want = Priority {
                policy,
                nice: (inherited + raise).min(19),
            };
            want.apply().unwrap();
            // Read back through the crate (pthread_getschedparam) and getpriority.
            let got = thread_priority::thread_schedule_policy().unwrap();
            let nice = rustix::process::getpriority_process(None).unwrap();
            (got, nice, want.nice)
        })
        .join()
        .unwrap()
    }

    #[test]
    fn idle_applies_to_its_own_thread_only() {
        let before = current().unwrap();
        let (policy, nice, want) = on_new_thread(Policy::Idle, 0);
        assert_eq!(policy, ThreadSchedulePolicy::Normal(Normal::Idle));
        assert_eq!(nice, want);
        assert_eq!(
            current().unwrap(),
            before,
            "the spawning thread is untouched"
        );
    }

    #[test]
    fn batch_with_a_higher_nice_value() {
        let (policy, nice, want) = on_new_thread(Policy::Batch, 2);
        assert_eq!(policy, ThreadSchedulePolicy::Normal(Normal::Batch));
        assert_eq!(nice, want);
    }

    #[test]
    fn names_parse() {
        use clap::ValueEnum;
        for p in [Policy::Other, Policy::Batch, Policy::Idle] {
            assert_eq!(Policy::from_str(p.name(), false), Ok(p));
        }
        assert!(Policy::from_str("fifo", false).is_err());
    }
}
