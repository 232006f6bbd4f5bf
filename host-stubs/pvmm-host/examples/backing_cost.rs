// SPDX-License-Identifier: GPL-2.0

//! What real host work (`--work process`) costs on this machine: CREATE
//! (spawning a backing process until it runs) and DESTROY per MiB, split
//! into populating the pages and the exit that frees them, for a few sizes.
//! Prints a Markdown table of medians, wall-clock and CPU time (the CPU
//! columns hold on a loaded machine, where wall-clock time does not); run it with
//! `nice -n 10 cargo run --release --example backing_cost`.
//!
//! The backing processes are this example re-executed, as the stub
//! re-executes itself.

use std::time::{Duration, Instant};

use clap::Parser;
use pvmm_host::backing::{self, Backing, Model};

/// Measures CREATE and DESTROY of backing processes.
#[derive(Parser, Debug)]
struct Args {
    /// Sizes to destroy, MiB.
    #[arg(long, value_delimiter = ',', default_value = "0,4,16,64,256,1024")]
    mib: Vec<u64>,
    /// Rounds per size (at least 1).
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(backing::CHILD_ARG) {
        backing::child_main(&argv[2..]);
    }
    let args = Args::parse();
    let model = Model::this_exe(100, u64::MAX >> 8);
    let never = || false;
    println!(
        "| MiB | CREATE ms | its CPU ms | populate ms | its CPU ms | exit ms | its CPU ms \
         | populate CPU µs/MiB | exit CPU µs/MiB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &mib in &args.mib {
        let mut rows: Vec<[Duration; 6]> = Vec::new();
        for _ in 0..args.rounds {
            let t0 = Instant::now();
            let mut b = Backing::spawn(&model, &never).expect("spawn a backing process");
            let spawn = t0.elapsed();
            let p = b.populate(mib * 256, &never).expect("populate");
            let e = b.kill().expect("kill");
            let total = e.total_cpu.expect("/proc/PID/schedstat");
            rows.push([
                spawn,
                // The child's start: exec, loading, runtime set-up.
                p.child_cpu.saturating_sub(p.cpu),
                p.wall,
                p.cpu,
                e.wall,
                total.saturating_sub(p.child_cpu),
            ]);
        }
        let m: Vec<Duration> = (0..6).map(|i| median(rows.iter().map(|r| r[i]))).collect();
        let per_mib = |d: Duration| match mib {
            0 => String::new(),
            _ => format!("{:.0}", d.as_secs_f64() * 1e6 / mib as f64),
        };
        let cells: Vec<String> = m.iter().map(|d| format!("{:.2}", ms(*d))).collect();
        println!(
            "| {mib} | {} | {} | {} |",
            cells.join(" | "),
            per_mib(m[3]),
            per_mib(m[5])
        );
    }
}

fn median(v: impl Iterator<Item = Duration>) -> Duration {
    let mut v: Vec<Duration> = v.collect();
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
