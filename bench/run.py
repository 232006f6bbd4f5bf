#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""The host half of `make bench`: boot guests over the matrix, collect.

Every matrix boot is one (host cost, vCPUs, storm shape, repeat) point;
inside it, pvmm-bench (selftests/pvmm/pvmm_bench.c) runs the same storm once
per phase, in the order bench/plan.py gives: a warm-up phase, `off`, the
other modes rotated from repeat to repeat, and `off` again, with the latency
probe, and for some modes once more with cyclictest and once more with the
kernel's timerlat tracer.  So every mode is compared against `off` from the
same boot, never across boots, and the two `off` phases give the boot's
noise floor.  A timerlat phase prints two results: the thread latency (how
late the timerlat kthread woke) as the other probes do, and the IRQ latency
(how late the hrtimer's handler ran) on lines marked ctx=irq; it becomes two
cells, of probes timerlat_thread and timerlat_irq.  Two more boots run a
sustained storm against a host stub whose worker runs at the lowest host
priority, with and without credits, and record outstanding work over time:
the trap of the design's source paper.

The guest frames each phase with PVMM-BENCH-BEGIN/END lines; at each the
host stub's own counters are read from its --series CSV, which gives the
host CPU time per teardown of that phase.  Every boot, failed or not, is
recorded in results.json with its exit status, pvmm-bench's own
(PVMM-BENCH-DONE rc=) and the phases it did not deliver.

Usage (scripts/bench.sh builds everything first and calls this):
  bench/run.py --build KERNEL_BUILD_DIR --initrd INITRAMFS --out DIR [--preset quick|full]
      [--accel icount|tcg] [--work process|busy] [--vcpu-cpus LIST] [--worker-cpus LIST]
      [--worker-sched other|batch|idle] [--worker-nice N]
"""

import argparse
import csv
import datetime
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from plan import LARGE_MIB, PRESETS, expected, plan, preset  # noqa: E402

INTERVAL_US = 200
# The guest clock: icount (single-threaded TCG, guest time follows guest
# instructions) unless --accel says otherwise; Documentation/benchmark.md
# says why these settings.
ICOUNT = "shift=0,sleep=on"
# The credits runs: many small spaces against a host that needs 5 ms of CPU
# for each, on a destroy worker at SCHED_IDLE, with the default ring: at
# default settings the caps, not the ring, are the bound (a DESTROY never
# takes the quarter of the ring kept for CREATEs, and the host's worker
# holds what it took outside the ring).  They run under multi-threaded TCG
# whatever --accel says: their trap needs the vCPUs to keep every host core
# busy, which one icount thread cannot.
CREDITS_HOST = "--cost-base-us 5000 --worker-sched idle"
CREDITS_ACCEL = "tcg"
SERIES_MS = 100


def kv(line):
    """`a=1 b=x` pairs of a marker line, numbers as numbers."""
    out = {}
    for k, v in re.findall(r"(\w+)=(\S+)", line):
        try:
            out[k] = int(v)
        except ValueError:
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


def host_row(path):
    """The newest row of the host stub's series CSV, or None."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        return None
    return {k: int(v) for k, v in rows[-1].items()} if rows else None


def host_rows(path):
    try:
        with open(path, newline="") as f:
            return [{k: int(v) for k, v in r.items()} for r in csv.DictReader(f)]
    except FileNotFoundError:
        return []


class Boot:
    """One guest boot running pvmm-bench, and what it printed.

    Phases are kept in the order the guest began them: a mode may run more
    than once in a boot (`off` first and last)."""

    def __init__(self, args, index, vcpus, host_args, env, log, accel="icount"):
        self.args, self.index, self.vcpus = args, index, vcpus
        self.host_args, self.env, self.log, self.accel = host_args, env, log, accel
        self.series = args.out / f"host-series-{index}.csv"
        # In order: {"mode", "probe", "hist", "result", ...}; a timerlat
        # phase's IRQ part in "irq" and "irq_hist".
        self.phases = []
        self.guest_series = {}
        self.caps = {}
        self.errors = []
        self.rc = None       # run-guest.sh's exit status
        self.done_rc = None  # pvmm-bench's, from PVMM-BENCH-DONE

    def run(self):
        kernel_args = " ".join(f"pvmm.env.{k}={v}" for k, v in self.env.items())
        env = dict(os.environ, SMP=str(self.vcpus), TIMEOUT=str(self.args.timeout),
                   HOST_ARGS=f"{self.host_args} --series {self.series} "
                             f"--series-ms {SERIES_MS}",
                   KERNEL_ARGS=kernel_args, LOG=str(self.log), ACCEL=self.accel,
                   ICOUNT=ICOUNT, QEMU_CPUS=getattr(self.args, "vcpu_cpus", None) or "",
                   HOST_CPUS=getattr(self.args, "worker_cpus", None) or "")
        cmd = [str(TOP / "scripts/run-guest.sh"), str(self.args.kernel),
               str(self.args.initrd), "bench"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace")
        for raw in proc.stdout:
            self.line(raw.rstrip("\r\n"))
        self.rc = proc.wait()
        if self.rc:
            self.errors.append(f"run-guest.sh exited {self.rc}")
        if self.done_rc is None:
            self.errors.append("no PVMM-BENCH-DONE: pvmm-bench did not finish")
        elif self.done_rc:
            self.errors.append(f"pvmm-bench exited {self.done_rc}")
        return self.ok()

    def ok(self):
        return self.rc == 0 and self.done_rc == 0 and not self.errors

    def current(self, m):
        """The phase a RESULT/HIST line belongs to: the last one begun, if it
        is of the same mode and probe."""
        ph = self.phases[-1] if self.phases else None
        if ph and (ph["mode"], ph["probe"]) == (m.get("mode"), m.get("probe")):
            return ph
        self.errors.append(f"{m.get('mode')}/{m.get('probe')}: output outside its phase")
        return None

    def part(self, m):
        """The keys of the result and histogram a RESULT/HIST line fills:
        without ctx the phase's own, with ctx=irq a timerlat phase's IRQ part;
        None, and an error, for any other ctx."""
        ctx = m.get("ctx")
        if ctx is None:
            return "result", "hist"
        if ctx == "irq" and m.get("probe") == "timerlat":
            return "irq", "irq_hist"
        self.errors.append(f"{m.get('mode')}/{m.get('probe')}: unknown ctx={ctx}")
        return None

    def line(self, line):
        i = line.find("PVMM-BENCH-")
        if i < 0:
            return
        tag, _, rest = line[i:].partition(" ")
        m = kv(rest)
        if tag == "PVMM-BENCH-BEGIN":
            self.phases.append({"mode": m.get("mode"), "probe": m.get("probe"), "hist": {},
                                "result": None, "irq": None, "irq_hist": {}, "rc": None,
                                "host_begin": host_row(self.series)})
        elif tag == "PVMM-BENCH-END":
            ph = self.current(m)
            # The guest has drained; let the host's next row include that.
            time.sleep(2.5 * SERIES_MS / 1000)
            if ph is not None:
                ph["host_end"] = host_row(self.series)
                ph["rc"] = m.get("rc")
            if m.get("rc"):
                self.errors.append(f"{m['mode']}/{m['probe']}: rc={m['rc']}")
        elif tag == "PVMM-BENCH-RESULT":
            ph, part = self.current(m), self.part(m)
            if ph is not None and part:
                ph[part[0]] = m
        elif tag == "PVMM-BENCH-HIST":
            ph, part = self.current(m), self.part(m)
            hist = ph[part[1]] if ph is not None and part else None
            for us, n in re.findall(r" (\d+):(\d+)", rest) if hist is not None else []:
                hist[int(us)] = hist.get(int(us), 0) + int(n)
        elif tag == "PVMM-BENCH-SERIES":
            self.guest_series.setdefault(m["mode"], []).append(
                {k: m[k] for k in ("t_ms", "outstanding", "pgds_pending",
                                   "spaces_live", "throttle_events", "draining")})
        elif tag == "PVMM-BENCH-CAPS":
            self.caps = m
        elif tag == "PVMM-BENCH-DONE":
            self.done_rc = m.get("rc")
        elif tag == "PVMM-BENCH-ERROR":
            self.errors.append(rest)

    def matched(self, want):
        """[(seq, mode, probe, role, phase or None)] for the expected phases:
        a phase the guest did not print, or printed out of order, is None."""
        out = []
        for seq, mode, probe, role in want:
            ph = self.phases[seq] if seq < len(self.phases) else None
            if ph is not None and (ph["mode"], ph["probe"]) != (mode, probe):
                ph = None
            out.append((seq, mode, probe, role, ph))
        return out


def lat_of(r):
    return {k: r.get(k2) for k, k2 in (("samples", "samples"), ("min", "min"),
            ("avg", "avg"), ("p99", "p99"), ("p999", "p999"), ("max", "max"),
            ("overflow", "overflow"))}


def complete(probe, ph):
    """Did the phase deliver every result its probe prints?"""
    return (ph is not None and ph["result"] is not None
            and (probe != "timerlat" or ph.get("irq") is not None))


def cell_of(boot, mode, probe, ph, extra):
    r = ph["result"] or {}
    hb, he = ph.get("host_begin"), ph.get("host_end")
    destroyed = r.get("destroyed")
    host_cpu = None
    if destroyed and hb and he and he["destroys"] > hb["destroys"]:
        host_cpu = (he["cpu_us"] - hb["cpu_us"]) / (he["destroys"] - hb["destroys"])
    return dict(extra, boot=boot.index, mode=mode, probe=probe, lat_us=lat_of(r),
                hist=sorted([us, n] for us, n in ph["hist"].items()),
                forks_per_s=r.get("forks_per_s"), teardowns=destroyed,
                doorbells_per_teardown=(r["doorbells"] / destroyed
                                        if destroyed else None),
                peak_outstanding=r.get("peak_outstanding"),
                throttle_events=r.get("throttle_events"),
                throttle_wait_us=r.get("throttle_wait_us"),
                host_cpu_us_per_teardown=host_cpu,
                drained=bool(r.get("drained")), fork_failed=r.get("fork_failed"),
                sync_timeouts=r.get("sync_timeouts"), phase_rc=ph.get("rc"))


def cells_of(boot, mode, probe, ph, extra):
    """The cells of one phase: one per result it delivered.  A timerlat
    phase gives two, timerlat_thread and timerlat_irq; the IRQ cell has the
    IRQ result's latency, lost samples and histogram, and repeats the
    phase's other fields (forks, teardowns, host CPU) from the thread's."""
    if probe != "timerlat":
        return [cell_of(boot, mode, probe, ph, extra)] if ph["result"] is not None else []
    out = []
    thread = cell_of(boot, mode, "timerlat_thread", ph, extra)
    thread["lat_us"]["lost"] = (ph["result"] or {}).get("lost")
    if ph["result"] is not None:
        out.append(thread)
    if ph.get("irq") is not None:
        out.append(dict(thread, probe="timerlat_irq",
                        lat_us=dict(lat_of(ph["irq"]), lost=ph["irq"].get("lost")),
                        hist=sorted([us, n] for us, n in ph["irq_hist"].items())))
    return out


def meta(args, build):
    def out(*cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True,
                                  cwd=TOP).stdout.strip()
        except OSError:
            return ""
    model = ""
    qemu = (out("qemu-system-x86_64", "--version").splitlines() or [""])[0]
    kver = build / "pvmm-kernel-version"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "commit": out("git", "rev-parse", "HEAD"),
        "dirty": bool(out("git", "status", "--porcelain", "--untracked-files=no")),
        "command": args.command, "preset": args.preset,
        "kernel": kver.read_text().strip() if kver.exists() else "",
        "qemu": qemu,
        "accel": args.accel, "icount": ICOUNT if args.accel == "icount" else None,
        "credits_accel": CREDITS_ACCEL,
        "host_work": args.work,
        "placement": placement(args),
        "host_cpu_model": model, "host_cpus": os.cpu_count(),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
        "interval_us": INTERVAL_US,
    }


def placement(args):
    """Where the vCPUs and the host worker run, as the options set it."""
    return {"vcpu_cpus": args.vcpu_cpus, "worker_cpus": args.worker_cpus,
            "worker_sched": args.worker_sched, "worker_nice": args.worker_nice}


def worker_args(args):
    """The matrix host's own options: its work model and its worker's place."""
    return (f"--work {args.work} --worker-sched {args.worker_sched} "
            f"--worker-nice {args.worker_nice}")


def boot_env(p, b):
    """pvmm-bench's environment for boot b of preset p."""
    env = {"PVMM_BENCH_SHAPE": b["shape"], "PVMM_BENCH_MIB": LARGE_MIB,
           "PVMM_BENCH_INTERVAL_US": INTERVAL_US, "PVMM_BENCH_MODES": ",".join(b["order"]),
           "PVMM_BENCH_CYCLICTEST": ",".join(b["cyclictest"]) or "none",
           "PVMM_BENCH_TIMERLAT": ",".join(b.get("timerlat", [])) or "none"}
    if b["run"] == "matrix":
        # The warm-up phase replaces the unmeasured warm-up storm.
        env.update(PVMM_BENCH_SECONDS=p["seconds"], PVMM_BENCH_WARMUP_S=0)
    else:
        env.update(PVMM_BENCH_SECONDS=p["credits_seconds"], PVMM_BENCH_SERIES_MS=250,
                   PVMM_BENCH_CAPS="max" if b["run"] == "credits-off" else "default")
    return env


def boot_record(n, b, boot, want):
    """A boot's entry in results.json: what ran, how it ended, what is missing."""
    missing = [{"seq": seq, "mode": mode, "probe": probe, "role": role}
               for seq, mode, probe, role, ph in boot.matched(want)
               if not complete(probe, ph)]
    return {"boot": n, "run": b["run"], "repeat": b["repeat"], "vcpus": b["vcpus"],
            "shape": b["shape"], "cost": b["cost"], "order": b["order"],
            "accel": boot.accel, "rc": boot.rc, "done_rc": boot.done_rc,
            "ok": boot.ok(), "errors": boot.errors, "missing": missing,
            "console": boot.log.name}


def credits_series(b, boot, host, extra):
    ph = next((x for x in boot.phases if (x["mode"], x["probe"]) == ("async", "pvmm_latency")),
              {"result": None, "hist": {}})
    rows = host_rows(boot.series)
    t0 = (ph.get("host_begin") or {}).get("ms", 0)
    t1 = (ph.get("host_end") or {}).get("ms", 1 << 62)
    return {
        "name": b["run"], "host_worker": "SCHED_IDLE", "host_args": host, "caps": boot.caps,
        "accel": boot.accel, "guest": boot.guest_series.get("async", []),
        "host": [{"t_ms": r["ms"] - t0, "live_objects": r["live_objects"],
                  "destroys": r["destroys"], "sq_pending": r.get("sq_pending", 0)}
                 for r in rows if r.get("slot", 0) == 0 and t0 <= r["ms"] <= t1],
        "lat_us": lat_of(ph["result"]) if ph["result"] else None,
        "cell": cell_of(boot, "async", "pvmm_latency", ph, extra),
    }


def options():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", type=Path, required=True,
                    help="kernel build directory (scripts/kernel.sh m prints it)")
    ap.add_argument("--initrd", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    ap.add_argument("--seconds", type=int, metavar="N",
                    help="seconds of guest time per phase instead of the preset's "
                    "(longer phases: p99.9 from more samples)")
    ap.add_argument("--repeats", type=int, metavar="N",
                    help="boots per point instead of the preset's")
    ap.add_argument("--command", default=" ".join(sys.argv))
    ap.add_argument("--timeout", type=int, default=900,
                    help="seconds one guest boot may take")
    ap.add_argument("--accel", choices=["icount", "tcg"], default="icount",
                    help="the matrix's guest clock: icount (default) or multi-threaded tcg")
    ap.add_argument("--work", choices=["process", "busy"], default="process",
                    help="the matrix host's work per address space: process (a real "
                    "host process created and torn down, the default) or busy (a "
                    "calibrated busy loop only)")
    ap.add_argument("--vcpu-cpus", metavar="LIST",
                    help="host CPUs for QEMU and its vCPU threads (taskset list)")
    ap.add_argument("--worker-cpus", metavar="LIST",
                    help="host CPUs for the host stub and its worker (taskset list)")
    ap.add_argument("--worker-sched", choices=["other", "batch", "idle"], default="other",
                    help="the matrix's host worker policy (default other)")
    ap.add_argument("--worker-nice", type=int, default=0, choices=range(-20, 20),
                    metavar="N", help="the matrix's host worker nice value (default 0)")
    args = ap.parse_args()
    try:
        args.plan = preset(args.preset, args.seconds, args.repeats)
    except ValueError as e:
        ap.error(str(e))
    return args


def main():
    args = options()
    args.kernel = args.build / "arch/x86/boot/bzImage"
    p = args.plan
    args.out.mkdir(parents=True, exist_ok=True)
    res = {"schema": 2, "meta": meta(args, args.build), "boots": [], "cells": [],
           "series": []}
    # What the run used, and what of it the command line set.
    res["meta"].update(cell_seconds=p["seconds"], repeats=p["repeats"],
                       overrides={k: getattr(args, k) for k in ("seconds", "repeats")
                                  if getattr(args, k) is not None})
    boots = plan(p)
    start = time.monotonic()
    failed = 0
    for n, b in enumerate(boots):
        elapsed = time.monotonic() - start
        eta = f", about {elapsed / n * (len(boots) - n) / 60:.0f} min left" if n else ""
        print(f"[bench] {n + 1}/{len(boots)}: {b['run']}, {b['cost']['label']}, "
              f"{b['vcpus']} vCPU, {b['shape']}, repeat {b['repeat'] + 1}, "
              f"{' '.join(b['order'])}; {elapsed / 60:.1f} min so far{eta}",
              file=sys.stderr, flush=True)
        if b["run"] == "matrix":
            host, accel = (f"--cost-base-us {b['cost']['base_us']} --cost-us-per-mib "
                           f"{b['cost']['per_mib_us']} {worker_args(args)}"), args.accel
        else:
            host, accel = CREDITS_HOST, CREDITS_ACCEL
        boot = Boot(args, n, b["vcpus"], host, boot_env(p, b),
                    args.out / f"console-{n}.log", accel)
        if not boot.run():
            failed += 1
            print(f"[bench] boot {n}: {'; '.join(boot.errors) or 'failed'} "
                  f"(console: {boot.log})", file=sys.stderr)
        want = expected(b)
        res["boots"].append(boot_record(n, b, boot, want))
        extra = {"repeat": b["repeat"], "vcpus": b["vcpus"], "shape": b["shape"],
                 "cost": b["cost"], "errors": boot.errors, "accel": accel}
        if b["run"] == "matrix":
            for seq, mode, probe, role, ph in boot.matched(want):
                if ph is not None:
                    res["cells"] += cells_of(boot, mode, probe, ph,
                                             dict(extra, seq=seq, role=role))
        else:
            res["series"].append(credits_series(b, boot, host, extra))
        # Written after every boot: an interrupted run keeps what it measured.
        res["meta"]["elapsed_s"] = round(time.monotonic() - start, 1)
        (args.out / "results.json").write_text(json.dumps(res, indent=1))
    print(f"[bench] {len(boots)} boots, {failed} failed, "
          f"{(time.monotonic() - start) / 60:.1f} min; results in {args.out}",
          file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
