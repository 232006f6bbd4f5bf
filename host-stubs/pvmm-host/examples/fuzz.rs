// SPDX-License-Identifier: GPL-2.0

//! A long run of the fuzz body (`pvmm_host::fuzz::run_any`) on random
//! scripts, on every core: `make fuzz`. Each script's first byte picks the
//! host's `--fault` mode (none in 2 of 12) and whether the window is a sealed
//! memfd mapping (a quarter) or in-process memory.
//!
//! This is random testing, not coverage-guided fuzzing: the engine builds on
//! stable Rust with no tools beyond cargo. Each execution is one script of
//! random bytes from a per-thread xorshift generator, whose step bytes pick
//! every kind of step with equal weight. The oracle inside the fuzz body does
//! the checking; this program counts executions and keeps the inputs that
//! panicked, so that `--replay` can rerun one.

use std::fs;
use std::io::Write;
use std::panic;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use pvmm_host::fuzz::{self, Report};

/// Runs the pvmm-host fuzz body on random scripts.
#[derive(Parser, Debug)]
struct Args {
    /// Executions in all.
    #[arg(long, default_value_t = 10_000_000)]
    execs: u64,
    /// Worker threads (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
    /// Seed of the generators (default: from the clock); printed, so a run
    /// can be repeated.
    #[arg(long)]
    seed: Option<u64>,
    /// Longest script in bytes; lengths are uniform up to it.
    #[arg(long, default_value_t = 512)]
    max_len: usize,
    /// Where inputs that panicked are written.
    #[arg(long, default_value = "fuzz-crashes")]
    crash_dir: PathBuf,
    /// Stop after this many panicking inputs.
    #[arg(long, default_value_t = 10)]
    max_crashes: u64,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 10)]
    every: u64,
    /// Instead of fuzzing, run these inputs once each and let panics through.
    #[arg(long, num_args = 1..)]
    replay: Vec<PathBuf>,
    /// Run even if built without overflow checks (not with `--profile fuzz`),
    /// where arithmetic that wraps goes unnoticed.
    #[arg(long)]
    allow_wrapping: bool,
}

/// Whether this build panics on arithmetic overflow.
fn overflow_checked() -> bool {
    let hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let max = std::hint::black_box(u32::MAX);
    let checked = panic::catch_unwind(|| max + std::hint::black_box(1)).is_err();
    panic::set_hook(hook);
    checked
}

/// xorshift64*: fast, and good enough to pick script bytes.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so nearby seeds give unrelated streams.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let r = self.next().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }
}

#[derive(Default)]
struct Shared {
    execs: AtomicU64,
    crashes: AtomicU64,
    stop: AtomicBool,
    totals: Mutex<Report>,
}

fn add(a: &mut Report, b: &Report) {
    a.consumed += b.consumed;
    a.submitted += b.submitted;
    a.completed += b.completed;
    a.discarded += b.discarded;
    a.resets += b.resets;
    a.steps += b.steps;
    a.unmatched += b.unmatched;
}

fn save(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let path = dir.join(name);
    fs::File::create(&path)?.write_all(data)?;
    Ok(path)
}

fn worker(id: usize, args: &Args, seed: u64, share: &Shared, quota: u64) {
    let mut rng = Rng::new(seed ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut buf = vec![0u8; args.max_len];
    let mut sum = Report::default();
    for n in 0..quota {
        if share.stop.load(Ordering::Relaxed) {
            break;
        }
        let len = (rng.next() % (args.max_len as u64 + 1)) as usize;
        let data = &mut buf[..len];
        rng.fill(data);
        match panic::catch_unwind(|| fuzz::run_any(data)) {
            Ok(r) => add(&mut sum, &r),
            Err(_) => {
                let name = format!("crash-{seed:016x}-{id}-{n}.bin");
                match save(&args.crash_dir, &name, data) {
                    Ok(p) => eprintln!("fuzz: input saved to {}", p.display()),
                    Err(e) => eprintln!("fuzz: cannot save {name}: {e}"),
                }
                if share.crashes.fetch_add(1, Ordering::Relaxed) + 1 >= args.max_crashes {
                    share.stop.store(true, Ordering::Relaxed);
                }
            }
        }
        share.execs.fetch_add(1, Ordering::Relaxed);
    }
    add(&mut share.totals.lock().unwrap(), &sum);
}

fn replay(files: &[PathBuf]) -> std::io::Result<()> {
    for f in files {
        let data = fs::read(f)?;
        println!("{}: {} bytes", f.display(), data.len());
        println!("{:?}", fuzz::run_any(&data));
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    if !overflow_checked() && !args.allow_wrapping {
        eprintln!(
            "fuzz: built without overflow checks; build with --profile fuzz (make fuzz), \
             or pass --allow-wrapping"
        );
        std::process::exit(2);
    }
    if !args.replay.is_empty() {
        return replay(&args.replay);
    }
    let threads = args
        .threads
        .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    println!(
        "fuzz: {} executions on {threads} threads, seed {seed:#x}, scripts up to {} bytes",
        args.execs, args.max_len
    );
    let share = Arc::new(Shared::default());
    let start = Instant::now();
    thread::scope(|s| {
        for id in 0..threads {
            let quota =
                args.execs / threads as u64 + u64::from((id as u64) < args.execs % threads as u64);
            let (args, share) = (&args, &*share);
            s.spawn(move || worker(id, args, seed, share, quota));
        }
        // Progress until the workers are done.
        let every = Duration::from_secs(args.every.max(1));
        let mut last = (Instant::now(), 0u64);
        loop {
            let done = share.execs.load(Ordering::Relaxed);
            if done >= args.execs || share.stop.load(Ordering::Relaxed) {
                break;
            }
            thread::sleep(Duration::from_millis(200));
            if last.0.elapsed() >= every {
                let now = share.execs.load(Ordering::Relaxed);
                let rate = (now - last.1) as f64 / last.0.elapsed().as_secs_f64();
                println!(
                    "fuzz: {now} executions, {rate:.0}/s, {} crashes, {:.0} s",
                    share.crashes.load(Ordering::Relaxed),
                    start.elapsed().as_secs_f64()
                );
                last = (Instant::now(), now);
            }
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let execs = share.execs.load(Ordering::Relaxed);
    let crashes = share.crashes.load(Ordering::Relaxed);
    let t = *share.totals.lock().unwrap();
    println!(
        "fuzz: oracle checked {} requests consumed ({} from the guest's producer), \
         {} completions matched, {} discarded by {} resets, over {} script steps; \
         {} completions under faults matched nothing",
        t.consumed, t.submitted, t.completed, t.discarded, t.resets, t.steps, t.unmatched
    );
    println!(
        "fuzz: {execs} executions in {secs:.1} s ({:.0}/s), {crashes} crashes",
        execs as f64 / secs
    );
    if crashes > 0 {
        let dir = fs::canonicalize(&args.crash_dir).unwrap_or_else(|_| args.crash_dir.clone());
        eprintln!(
            "fuzz: replay in host-stubs with: cargo run --profile fuzz -p pvmm-host --example fuzz -- --replay {}/crash-*.bin",
            dir.display()
        );
        std::process::exit(1);
    }
    Ok(())
}
