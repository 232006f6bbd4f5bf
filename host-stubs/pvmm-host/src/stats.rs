// SPDX-License-Identifier: GPL-2.0

//! Host counters, their text forms and the live stats file.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Live counters of one guest connection slot (one socket), shared
        /// between its serving thread and the stats reporters.
        #[derive(Debug, Default)]
        pub struct Counters {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A plain copy of [`Counters`].
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Snapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Counters {
            /// Copies every counter (each one atomically, not all together).
            pub fn snapshot(&self) -> Snapshot {
                Snapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl Snapshot {
            /// Counter names in output order.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($name),)*];

            /// `(name, value)` pairs in output order.
            pub fn pairs(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name),)*]
            }

            /// Field-wise sum, saturating.
            pub fn add(&self, o: &Snapshot) -> Snapshot {
                Snapshot { $($name: self.$name.saturating_add(o.$name),)* }
            }
        }
    };
}

counters! {
    /// CREATE requests completed Ok.
    creates,
    /// DESTROY requests completed Ok.
    destroys,
    /// DESTROY requests for a space the host did not have.
    unknown_space,
    /// CREATE of an id whose old object was still there (reclaimed).
    stale_reclaimed,
    /// CREATE refused because `--max-objects` objects were live.
    no_memory,
    /// Host objects alive now (a gauge).
    live_objects,
    /// Submission entries the guest has published that the host has not taken yet (a gauge, sampled each round).
    sq_pending,
    /// Completions published to the completion ring.
    completions,
    /// Completions that found the ring full and waited in the host queue.
    cq_overflow,
    /// Completions dropped because the guest went away before taking them.
    dropped_completions,
    /// Doorbells received (eventfd counts summed).
    doorbells,
    /// Interrupts sent to the guest.
    irqs_sent,
    /// Publishes that needed no interrupt (the guest had not asked for one).
    irqs_suppressed,
    /// Malformed submission entries rejected.
    bad_entries,
    /// Impossible ring indices seen (each stops that ring until GUEST_READY is re-announced).
    bad_indices,
    /// Rings resumed after the guest re-announced GUEST_READY.
    resumes,
    /// DESTROY requests whose modelled cost hit `--max-destroy-us`.
    work_capped,
    /// Microseconds of DESTROY work done, in CPU time of the serving thread.
    work_us,
    /// CPU time of the serving thread, microseconds.
    cpu_us,
    /// Guests connected so far.
    connects,
    /// Connections refused because a guest was already connected.
    refused,
    /// `--fault never-ack`: completions processed but never posted.
    faults_withheld,
    /// `--fault late-ack`: completions held back for the delay.
    faults_delayed,
    /// `--fault cq-flood`: bogus completions posted (matching no request).
    faults_bogus,
    /// `--fault irq-storm`: interrupts sent without new completions.
    faults_irqs,
    /// DESTROY requests whose tag was not the one the space was created with
    /// (answered StaleTag, object kept).
    stale_tags,
    /// Host objects dropped without a DESTROY: the guest disconnected or reset.
    objects_dropped,
    /// Reset requests carried out (guest_ctl::RESET acknowledged).
    resets,
    /// DESTROY requests whose page count exceeded `--guest-mem-mib` (clamped).
    pages_clamped,
    /// Wall-clock microseconds the slot waited for `--slot-cpu-share`.
    throttled_us,
    /// `--audit-releases`: well-formed release log entries read.
    releases_audited,
    /// `--audit-releases`: pgds released without a DESTROY completion the host
    /// published (Acked), or after a reset the host never acknowledged (Reset).
    premature_releases,
    /// `--audit-releases`: pgds released after a reset.
    released_after_reset,
    /// `--audit-releases`: pgds the guest released without any acknowledgement.
    released_forced,
    /// `--audit-releases`: acknowledged DESTROYs forgotten to stay within the
    /// audit's memory bound (a later release of one counts as premature).
    audit_evicted,
    /// `--fault dup-ack`: completions posted a second time.
    faults_duplicated,
    /// `--fault forged-ack`: DESTROY completions forged for CREATEs.
    faults_forged,
    /// `--fault break-ring`, `break-ring-back`: impossible indices published.
    faults_broken,
    /// `--fault stall`: stalls begun.
    faults_stalls,
    /// Connections refused because the peer's user id is not in `--allow-uid`.
    denied,
    /// `--work process`: backing processes spawned for CREATEs.
    backing_spawned,
    /// `--work process`: backing processes that failed to start (the CREATE
    /// completed NoMemory) or to populate.
    backing_failed,
    /// `--work process`: pages backing processes populated before their DESTROY.
    backing_pages,
    /// `--work process`: wall-clock microseconds spawning backing processes.
    backing_spawn_us,
    /// `--work process`: wall-clock microseconds backing processes spent populating.
    backing_populate_us,
    /// `--work process`: wall-clock microseconds from SIGKILL to reaped.
    backing_exit_us,
}

impl Snapshot {
    /// One `key=value ...` line.
    pub fn line(&self) -> String {
        let mut s = String::new();
        for (i, (k, v)) in self.pairs().into_iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            let _ = write!(s, "{sep}{k}={v}");
        }
        s
    }

    /// `key value` lines, the stats-file form.
    pub fn file_text(&self) -> String {
        let mut s = String::new();
        for (k, v) in self.pairs() {
            let _ = writeln!(s, "{k} {v}");
        }
        s
    }

    /// Sum over several slots.
    pub fn total<'a>(all: impl IntoIterator<Item = &'a Arc<Counters>>) -> Snapshot {
        all.into_iter()
            .fold(Snapshot::default(), |acc, c| acc.add(&c.snapshot()))
    }
}

/// Where the live stats go: the sum over all slots, rewritten atomically and
/// at most every [`StatsFile::MIN_INTERVAL`], so a guest that keeps the slot
/// busy cannot turn it into a stream of file system operations.
#[derive(Debug)]
pub struct StatsFile {
    path: PathBuf,
    dir: PathBuf,
    last: Option<Instant>,
    dirty: bool,
}

impl StatsFile {
    /// Shortest time between two rewrites of a changed file.
    pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

    /// A writer for `path`; nothing is written yet.
    pub fn new(path: &Path) -> StatsFile {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        StatsFile {
            path: path.to_owned(),
            dir,
            last: None,
            dirty: false,
        }
    }

    /// Notes that the counters changed; [`Self::write_due`] writes them later.
    pub fn mark(&mut self) {
        self.dirty = true;
    }

    /// How long until a changed file is due (zero: now); `None` if unchanged.
    pub fn due_in(&self, now: Instant) -> Option<Duration> {
        if !self.dirty {
            return None;
        }
        Some(self.last.map_or(Duration::ZERO, |t| {
            (t + Self::MIN_INTERVAL).saturating_duration_since(now)
        }))
    }

    /// Writes `snap()` if the counters changed and the interval has passed.
    pub fn write_due(&mut self, snap: impl FnOnce() -> Snapshot) -> io::Result<()> {
        match self.due_in(Instant::now()) {
            Some(d) if d.is_zero() => self.write(&snap()),
            _ => Ok(()),
        }
    }

    /// Writes `snap` now: to a temporary file with an unpredictable name,
    /// created exclusively in the same directory, then renamed over the stats
    /// file, so a reader always sees a complete file and a link planted in the
    /// directory is never followed.
    pub fn write(&mut self, snap: &Snapshot) -> io::Result<()> {
        self.last = Some(Instant::now());
        self.dirty = false;
        let mut f = tempfile::Builder::new()
            .prefix(".pvmm-stats.")
            .tempfile_in(&self.dir)?;
        f.write_all(snap.file_text().as_bytes())?;
        f.persist(&self.path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Thread CPU time of the calling thread in microseconds.
pub fn thread_cpu_us() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    (t.tv_sec as u64).saturating_mul(1_000_000) + (t.tv_nsec as u64) / 1000
}

/// Adds the calling thread's CPU time to `cpu_us` as it goes, so that a
/// slot's threads (its serving thread and its destroy workers) sum there.
/// Holds the thread CPU time charged so far; start it at 0 to charge the
/// thread's whole life, or at [`thread_cpu_us`] to charge from now.
#[derive(Debug)]
pub struct CpuMeter(pub u64);

impl CpuMeter {
    /// Charges the CPU time used since the last call.
    pub fn charge(&mut self, c: &Counters) {
        let now = thread_cpu_us();
        c.cpu_us
            .fetch_add(now.saturating_sub(self.0), Ordering::Relaxed);
        self.0 = now.max(self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses the stats-file form back.
    fn parse_file_text(text: &str) -> Vec<(String, u64)> {
        text.lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((k.to_owned(), v.trim().parse().ok()?))
            })
            .collect()
    }

    #[test]
    fn forms() {
        let c = Counters::default();
        c.creates.store(3, Ordering::Relaxed);
        c.work_us.store(7, Ordering::Relaxed);
        let s = c.snapshot();
        assert!(s.line().starts_with("creates=3 destroys=0 "));
        assert!(s.line().contains(" work_us=7 "));
        let parsed = parse_file_text(&s.file_text());
        assert_eq!(parsed.len(), Snapshot::NAMES.len());
        assert_eq!(parsed[0], ("creates".to_owned(), 3));
        let both = Snapshot::total([&Arc::new(c), &Arc::new(Counters::default())]);
        assert_eq!(both.creates, 3);
    }

    #[test]
    fn file_is_replaced() {
        let dir = std::env::temp_dir().join(format!("pvmm-stats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stats");
        // A link at the old, predictable temporary name must stay untouched.
        let bait = dir.join("bait");
        std::fs::write(&bait, "keep\n").unwrap();
        let old_tmp = dir.join(format!("stats.tmp.{}.0", std::process::id()));
        std::os::unix::fs::symlink(&bait, &old_tmp).unwrap();
        let mut f = StatsFile::new(&path);
        let mut s = Snapshot::default();
        f.write(&s).unwrap();
        s.doorbells = 5;
        f.write(&s).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("doorbells 5\n"));
        assert_eq!(std::fs::read_to_string(&bait).unwrap(), "keep\n");
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let tmp = old_tmp.file_name().unwrap().to_str().unwrap();
        assert_eq!(names, ["bait", "stats", tmp], "no temporary files left");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rewrites_are_rate_limited() {
        let dir = std::env::temp_dir().join(format!("pvmm-stats-rl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stats");
        let mut f = StatsFile::new(&path);
        let now = Instant::now();
        assert_eq!(f.due_in(now), None, "nothing changed");
        f.mark();
        assert_eq!(
            f.due_in(now),
            Some(Duration::ZERO),
            "the first write is due at once"
        );
        let mut s = Snapshot::default();
        f.write_due(|| s).unwrap();
        assert!(path.exists());
        assert_eq!(f.due_in(Instant::now()), None);
        s.creates = 1;
        f.mark();
        let wait = f.due_in(Instant::now()).unwrap();
        assert!(!wait.is_zero() && wait <= StatsFile::MIN_INTERVAL);
        f.write_due(|| s).unwrap();
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("creates 0\n"));
        std::thread::sleep(wait);
        f.write_due(|| s).unwrap();
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("creates 1\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cpu_clock_moves() {
        let a = thread_cpu_us();
        let t = std::time::Instant::now();
        while t.elapsed().as_millis() < 5 {
            std::hint::black_box(0u64);
        }
        assert!(thread_cpu_us() > a);
    }
}
