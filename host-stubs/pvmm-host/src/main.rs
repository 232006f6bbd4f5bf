// SPDX-License-Identifier: GPL-2.0

//! `pvmm-host`: the host stub binary.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use pvmm_host::backing::{self, Model};
use pvmm_host::fault::Fault;
use pvmm_host::ivshmem::Server;
use pvmm_host::priority::{Policy, Priority};
use pvmm_host::ring::Config;
use pvmm_host::series::Series;
use pvmm_host::serve::{default_allow_uids, run_slot, serve, SlotConfig};
use pvmm_host::stats::{Counters, Snapshot};
use pvmm_wire::Layout;

/// pvmm host stub: serves QEMU ivshmem-doorbell guests and their pvmm rings.
///
/// Each --socket is one guest slot with its own shared memory, rings, host
/// objects and threads. Start QEMU with
/// `-chardev socket,path=SOCKET,id=ivs -device ivshmem-doorbell,chardev=ivs,vectors=1`.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// UNIX socket to serve QEMU's ivshmem protocol on (repeat for more guests).
    #[arg(long, required = true, value_name = "PATH")]
    socket: Vec<PathBuf>,
    /// Shared memory per guest in bytes (K/M/G suffixes allowed); a power of two.
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    shm_size: u64,
    /// Submission ring entries (power of two).
    #[arg(long, default_value_t = 256)]
    sq_entries: u32,
    /// Completion ring entries (power of two, at least --sq-entries).
    #[arg(long, default_value_t = 512)]
    cq_entries: u32,
    /// Interrupt vectors (eventfds) per peer.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    vectors: u32,
    /// Host work per guest address space: busy (a calibrated busy loop on the
    /// slot thread, --cost-*) or process (a real host process per space,
    /// populated to the DESTROY's size then killed; --backing-*).
    #[arg(long, value_enum, default_value_t = Work::Busy, value_name = "MODEL")]
    work: Work,
    /// --work process: percent of a DESTROY's page count the backing process
    /// populates (1 to 1000).
    #[arg(long, default_value_t = 100, value_name = "PERCENT",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    backing_scale_pct: u32,
    /// --work process: most MiB one backing process populates (0 to 65536).
    #[arg(long, default_value_t = 256, value_name = "MIB",
          value_parser = clap::value_parser!(u64).range(0..=65_536))]
    backing_max_mib: u64,
    /// Fixed cost of each DESTROY, microseconds of the slot thread's CPU time.
    #[arg(long, default_value_t = 0)]
    cost_base_us: u64,
    /// Cost of DESTROY per MiB of address space, microseconds of CPU time
    /// (--work busy only).
    #[arg(long, default_value_t = 20)]
    cost_us_per_mib: u64,
    /// Longest stretch of DESTROY work between preemption points, CPU microseconds.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    chunk_us: u64,
    /// Cap on one DESTROY's work, CPU microseconds (at least 1).
    #[arg(long, default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_destroy_us: u64,
    /// Memory of the largest guest served, MiB: a DESTROY claiming more
    /// pages than that is costed as this much (1 to 4194304).
    #[arg(long, default_value_t = 4096, value_name = "MIB",
          value_parser = clap::value_parser!(u64).range(1..=1 << 22))]
    guest_mem_mib: u64,
    /// Percent of one CPU each slot's serving thread may use on average (1 to
    /// 100; 100: no limit); an over-budget slot waits before its next round
    /// or chunk of DESTROY work, so one guest cannot starve the others.
    #[arg(long, default_value_t = 100, value_name = "PERCENT",
          value_parser = clap::value_parser!(u32).range(1..=100))]
    slot_cpu_share: u32,
    /// Most live host objects per guest; further CREATEs complete NoMemory.
    #[arg(long, default_value_t = 65_536)]
    max_objects: usize,
    /// Print counters every this many seconds (0: only at exit).
    #[arg(long, default_value_t = 0)]
    stats_interval: u64,
    /// Rewrite this file with `key value` counter lines after every batch.
    #[arg(long, value_name = "PATH")]
    stats_file: Option<PathBuf>,
    /// Longest idle sleep without a doorbell, milliseconds (safety net).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    idle_timeout_ms: u64,
    /// How each slot serves its guest: two (the slot thread takes the
    /// submission ring promptly and answers CREATEs; a destroy worker thread
    /// per guest does the DESTROYs' work; offers FEATURE_CREATE_LANE) or one
    /// (the slot thread serves every request in ring order).
    #[arg(long, value_enum, default_value_t = Lanes::Two, value_name = "N")]
    lanes: Lanes,
    /// With two lanes: most DESTROYs one guest's destroy worker may hold
    /// (queued, running, or finished and not yet posted), 1 to 1048576;
    /// at that many the slot thread stops taking the ring until the worker
    /// catches up. No effect with --lanes one.
    #[arg(long, default_value_t = 65_536, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1 << 20))]
    worker_queue: u32,
    /// Scheduling policy of the thread that does DESTROY work: the destroy
    /// worker with two lanes, the slot thread with one (idle: below every
    /// normal thread, the "low-priority host worker").
    #[arg(long, value_enum, default_value_t = Policy::Other, value_name = "POLICY")]
    worker_sched: Policy,
    /// Nice value of the thread that does DESTROY work, -20 to 19 (below
    /// the process's own value needs CAP_SYS_NICE).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-20..=19))]
    worker_nice: i32,
    /// With two lanes: scheduling policy of each slot thread, which answers
    /// CREATEs (the vCPUs' priority: leave it at other).
    #[arg(long, value_enum, default_value_t = Policy::Other, value_name = "POLICY")]
    slot_sched: Policy,
    /// With two lanes: nice value of each slot thread, -20 to 19.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-20..=19))]
    slot_nice: i32,
    /// Write a CSV time series of every slot's counters to this file.
    #[arg(long, value_name = "PATH")]
    series: Option<PathBuf>,
    /// Interval between --series samples, milliseconds.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    series_ms: u64,
    /// Misbehave on purpose, to test the guest's failure paths (every slot):
    /// none; never-ack (process requests, post no completion); late-ack:MS
    /// (post each completion MS ms, 1 to 600000, after its request was
    /// taken); cq-flood (also fill free CQ slots with completions that match
    /// nothing, at least every 1 ms); irq-storm (also interrupt the guest
    /// every 1 ms); dup-ack (post every completion twice); forged-ack (answer
    /// every CREATE with a DESTROY completion for it first); break-ring:N
    /// (after N requests, publish an impossible CQ tail once); break-ring-back:N
    /// (after N requests, publish an impossible SQ head until the guest
    /// resets); stall:MS (after the 16th DESTROY, serve nothing for MS ms,
    /// 1 to 600000; once); no-header (never write the header, so the device
    /// is not marked for pvmm); no-irq (publish completions, never
    /// interrupt); stop:N (after N requests, serve nothing at all); no-wakeup
    /// (do not offer FEATURE_NEED_WAKEUP).
    #[arg(long, default_value_t = Fault::None, value_name = "SPEC")]
    fault: Fault,
    /// Offer the release log and check every page directory the guest
    /// reports released against the DESTROY completions posted (a test aid;
    /// see premature_releases in the counters).
    #[arg(long)]
    audit_releases: bool,
    /// Release log entries with --audit-releases (power of two, at most 32768).
    #[arg(long, default_value_t = 4096, value_name = "N")]
    release_log_entries: u32,
    /// User id allowed to connect to the sockets (repeat for more; default:
    /// the stub's own and root). Checked with SO_PEERCRED; the sockets are
    /// mode 0600 as well.
    #[arg(long, value_name = "UID")]
    allow_uid: Vec<u32>,
}

/// `--lanes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Lanes {
    #[value(name = "one")]
    One,
    #[value(name = "two")]
    Two,
}

/// `--work`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Work {
    Busy,
    Process,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, shift) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        None => (s, 0),
        Some((i, _)) => {
            let shift = match s[i..].to_ascii_lowercase().as_str() {
                "k" | "kib" => 10,
                "m" | "mib" => 20,
                "g" | "gib" => 30,
                other => return Err(format!("unknown size suffix {other:?}")),
            };
            (&s[..i], shift)
        }
    };
    let n: u64 = num.trim().parse().map_err(|e| format!("{e}"))?;
    n.checked_shl(shift)
        .filter(|v| v >> shift == n)
        .ok_or_else(|| "size too large".to_owned())
}

fn main() {
    // A backing process (--work process) is this binary re-executed.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(backing::CHILD_ARG) {
        backing::child_main(&argv[2..]);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match run(Args::parse()) {
        Ok(()) => {}
        Err(e) => {
            log::error!("{e:#}");
            std::process::exit(1);
        }
    }
}

fn run(args: Args) -> Result<()> {
    // Time zero of the --series file.
    let started = Instant::now();
    let layout = Layout::new(args.sq_entries, args.cq_entries).map_err(|_| {
        anyhow::anyhow!(
            "bad ring sizes: entries must be powers of two up to {}, with cq >= sq",
            pvmm_wire::MAX_ENTRIES
        )
    })?;
    let layout = if args.audit_releases {
        layout
            .with_release_log(args.release_log_entries)
            .map_err(|_| {
                anyhow::anyhow!(
                    "bad --release-log-entries: a power of two up to {}",
                    pvmm_wire::MAX_ENTRIES
                )
            })?
    } else {
        layout
    };
    let shm_size = args.shm_size;
    if !shm_size.is_power_of_two() || !(4096..=1 << 40).contains(&shm_size) {
        bail!("--shm-size must be a power of two between 4 KiB and 1 TiB");
    }
    if u64::from(layout.size) > shm_size {
        bail!(
            "rings and release log need {} bytes but --shm-size is {shm_size}",
            layout.size
        );
    }

    let worker = Priority {
        policy: args.worker_sched,
        nice: args.worker_nice,
    };
    let slot = Priority {
        policy: args.slot_sched,
        nice: args.slot_nice,
    };
    let (slot, destroy_worker) = match args.lanes {
        Lanes::Two => (slot, Some(worker)),
        Lanes::One if slot != Priority::default() => {
            bail!("--slot-sched/--slot-nice need --lanes two; with one, use --worker-*")
        }
        Lanes::One => (worker, None),
    };

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while shutting down exits at once.
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&stop))
            .context("signal handler")?;
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("signal handler")?;
    }

    let counters: Arc<Vec<Arc<Counters>>> = Arc::new(
        args.socket
            .iter()
            .map(|_| Arc::new(Counters::default()))
            .collect(),
    );
    let ring = Config {
        cost_base_us: args.cost_base_us,
        cost_us_per_mib: args.cost_us_per_mib,
        chunk_us: args.chunk_us,
        max_destroy_us: args.max_destroy_us,
        guest_pages: args.guest_mem_mib * 256,
        cpu_share: args.slot_cpu_share,
        max_objects: args.max_objects,
        host_peer: 0,
        fault: args.fault,
        backing: (args.work == Work::Process)
            .then(|| Model::this_exe(args.backing_scale_pct, args.backing_max_mib)),
        destroy_worker,
        worker_queue: args.worker_queue as usize,
    };

    // Bind everything first, so a bad path fails before any guest is served.
    let mut servers = Vec::new();
    for path in &args.socket {
        let server = Server::bind(path, args.vectors, 0, 1)
            .with_context(|| format!("cannot serve on {}", path.display()))?;
        servers.push(server);
    }
    // Only then truncate the series file: a second stub refused its sockets
    // must not wipe the series of the one that serves them.
    let mut series = args
        .series
        .as_deref()
        .map(|p| Series::create(p).with_context(|| format!("cannot create {}", p.display())))
        .transpose()?;

    let allow_uids = if args.allow_uid.is_empty() {
        default_allow_uids()
    } else {
        args.allow_uid.clone()
    };
    let mut threads = Vec::new();
    for (index, server) in servers.into_iter().enumerate() {
        let cfg = SlotConfig {
            index,
            shm_size: shm_size as usize,
            layout,
            ring: ring.clone(),
            idle_timeout: Duration::from_millis(args.idle_timeout_ms),
            poll_soon: Duration::from_millis(1),
            counters: Arc::clone(&counters[index]),
            all_counters: Arc::clone(&counters),
            stats_file: args.stats_file.clone(),
            priority: slot,
            allow_uids: allow_uids.clone(),
        };
        let stop = Arc::clone(&stop);
        let t = std::thread::Builder::new()
            .name(format!("pvmm-slot{index}"))
            // One slot failing (or panicking) stops the process: its socket
            // is no longer served.
            .spawn(move || run_slot(&format!("slot{index}"), &stop, || serve(server, cfg, &stop)))
            .context("spawn")?;
        threads.push(t);
    }

    let interval = Duration::from_secs(args.stats_interval);
    let mut last = Instant::now();
    let series_every = Duration::from_millis(args.series_ms);
    let mut series_due = started + series_every;
    while !stop.load(Ordering::Relaxed) {
        // Wake up for the next sample, and at least every 50 ms for `stop`.
        let mut nap = Duration::from_millis(50);
        if series.is_some() {
            nap = nap.min(series_due.saturating_duration_since(Instant::now()));
        }
        std::thread::sleep(nap);
        if series.is_some() && Instant::now() >= series_due {
            write_series(&mut series, started, &counters);
            // Keep to the grid; after a stall, skip the samples it missed.
            series_due += series_every;
            if series_due <= Instant::now() {
                series_due = Instant::now() + series_every;
            }
        }
        if !interval.is_zero() && last.elapsed() >= interval {
            last = Instant::now();
            log::info!("stats: {}", Snapshot::total(counters.iter()).line());
        }
    }
    log::info!("shutting down");

    let mut failed = None;
    for t in threads {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed = Some(e),
            Err(_) => failed = Some(anyhow::anyhow!("a slot thread panicked")),
        }
    }
    // Final rows, with what the slots counted while they stopped.
    write_series(&mut series, started, &counters);
    if counters.len() > 1 {
        for (i, c) in counters.iter().enumerate() {
            log::info!("stats slot{i}: {}", c.snapshot().line());
        }
    }
    log::info!("stats: {}", Snapshot::total(counters.iter()).line());
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Appends one row per slot to the series file, if any. A failed write is
/// logged and ends the series (the rest of the stub goes on).
fn write_series(series: &mut Option<Series>, started: Instant, counters: &[Arc<Counters>]) {
    let Some(s) = series else {
        return;
    };
    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let snaps: Vec<Snapshot> = counters.iter().map(|c| c.snapshot()).collect();
    if let Err(e) = s.write_rows(ms, &snaps) {
        log::warn!("cannot write the --series file, no more samples: {e}");
        *series = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses the command line of one slot with `more` options added.
    fn parse(more: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(["pvmm-host", "--socket", "/tmp/s"].iter().chain(more))
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("2MiB"), Ok(2 << 20));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("1T").is_err());
        assert!(parse_size("x").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }

    #[test]
    fn worker_and_series_options() {
        let a = parse(&[]).unwrap();
        assert_eq!((a.worker_sched, a.worker_nice), (Policy::Other, 0));
        assert_eq!((a.series, a.series_ms), (None, 100));
        let a = parse(&["--worker-sched", "idle", "--worker-nice", "-5"]).unwrap();
        assert_eq!((a.worker_sched, a.worker_nice), (Policy::Idle, -5));
        assert_eq!(parse(&[]).unwrap().lanes, Lanes::Two);
        let a = parse(&[
            "--lanes",
            "one",
            "--slot-sched",
            "batch",
            "--slot-nice",
            "3",
        ])
        .unwrap();
        assert_eq!(
            (a.lanes, a.slot_sched, a.slot_nice),
            (Lanes::One, Policy::Batch, 3)
        );
        let a = parse(&["--series", "/tmp/x.csv", "--series-ms", "10"]).unwrap();
        assert_eq!(a.series, Some(PathBuf::from("/tmp/x.csv")));
        assert_eq!(a.series_ms, 10);
        for bad in [
            &["--worker-sched", "fifo"][..],
            &["--worker-nice", "20"],
            &["--worker-nice", "-21"],
            &["--slot-nice", "20"],
            &["--lanes", "three"],
            &["--series-ms", "9"],
            &["--series-ms", "60001"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn worker_queue_option() {
        assert_eq!(parse(&[]).unwrap().worker_queue, 65_536);
        for (arg, n) in [("1", 1), ("1048576", 1 << 20)] {
            assert_eq!(parse(&["--worker-queue", arg]).unwrap().worker_queue, n);
        }
        let a = parse(&["--lanes", "one", "--worker-queue", "8"]).unwrap();
        assert_eq!((a.lanes, a.worker_queue), (Lanes::One, 8));
        for bad in ["0", "1048577", "-1", "x"] {
            assert!(parse(&["--worker-queue", bad]).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn fault_option() {
        assert_eq!(parse(&[]).unwrap().fault, Fault::None);
        let a = parse(&["--fault", "late-ack:250"]).unwrap();
        assert_eq!(a.fault, Fault::LateAck(Duration::from_millis(250)));
        assert_eq!(
            parse(&["--fault", "cq-flood"]).unwrap().fault,
            Fault::CqFlood
        );
        assert_eq!(
            parse(&["--fault", "break-ring:100"]).unwrap().fault,
            Fault::BreakRing(100)
        );
        assert_eq!(
            parse(&["--fault", "stall:2000"]).unwrap().fault,
            Fault::Stall(Duration::from_secs(2))
        );
        for bad in [
            "late-ack:0",
            "late-ack:x",
            "bogus",
            "break-ring:0",
            "stall:0",
        ] {
            assert!(parse(&["--fault", bad]).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn cost_and_budget_options() {
        let a = parse(&[]).unwrap();
        assert_eq!((a.max_destroy_us, a.guest_mem_mib), (10_000_000, 4096));
        assert_eq!(a.slot_cpu_share, 100);
        let a = parse(&["--guest-mem-mib", "1024", "--slot-cpu-share", "25"]).unwrap();
        assert_eq!((a.guest_mem_mib, a.slot_cpu_share), (1024, 25));
        for bad in [
            &["--max-destroy-us", "0"][..],
            &["--guest-mem-mib", "0"],
            &["--guest-mem-mib", "4194305"],
            &["--slot-cpu-share", "0"],
            &["--slot-cpu-share", "101"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn work_options() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.work, Work::Busy);
        assert_eq!((a.backing_scale_pct, a.backing_max_mib), (100, 256));
        let a = parse(&["--work", "process", "--backing-scale-pct", "50"]).unwrap();
        assert_eq!((a.work, a.backing_scale_pct), (Work::Process, 50));
        let a = parse(&["--backing-max-mib", "0"]).unwrap();
        assert_eq!(a.backing_max_mib, 0);
        for bad in [
            &["--work", "idle"][..],
            &["--backing-scale-pct", "0"],
            &["--backing-scale-pct", "1001"],
            &["--backing-max-mib", "65537"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn audit_options() {
        let a = parse(&[]).unwrap();
        assert_eq!((a.audit_releases, a.release_log_entries), (false, 4096));
        let a = parse(&["--audit-releases", "--release-log-entries", "64"]).unwrap();
        assert_eq!((a.audit_releases, a.release_log_entries), (true, 64));
    }

    #[test]
    fn allow_uid_option() {
        assert!(parse(&[]).unwrap().allow_uid.is_empty());
        let a = parse(&["--allow-uid", "1000", "--allow-uid", "0"]).unwrap();
        assert_eq!(a.allow_uid, [1000, 0]);
        assert!(parse(&["--allow-uid", "-1"]).is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
