#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""The host half of `make bench`: boot guests over the matrix, collect.

Every guest boot is one (host cost, vCPUs, storm shape, repeat) point; inside
it, pvmm-bench (selftests/pvmm/pvmm_bench.c) runs the same storm once per
mode, with the latency probe and, for some modes, cyclictest.  So every mode
is compared against `off` from the same boot, never across boots.  Two more
boots run a sustained storm against a host stub whose worker runs at the
lowest host priority, with and without credits, and record outstanding
work over time: the trap of the design's source paper.

The guest frames each phase with PVMM-BENCH-BEGIN/END lines; at each the
host stub's own counters are read from its --series CSV, which gives the
host CPU time per teardown of that phase.

Usage (scripts/bench.sh builds everything first and calls this):
  bench/run.py --build KERNEL_BUILD_DIR --initrd INITRAMFS --out DIR [--preset quick|full]
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
MODES = ["off", "sync", "chunked", "async"]

# (kind, microseconds): "base" is the fixed cost of every DESTROY, "mib" the
# cost per MiB of address space (the host stub's two cost knobs).
PRESETS = {
    # A couple of minutes: checks the pipeline end to end, proves nothing.
    "smoke": {
        "costs": [("base", 1000), ("base", 30000)],
        "vcpus": [2],
        "shapes": ["large"],
        "repeats": 1,
        "seconds": 2,
        "cyclictest": ["off", "sync", "async"],
        "credits_seconds": 10,
    },
    "quick": {
        "costs": [("base", 100), ("base", 1000), ("base", 10000), ("base", 50000)],
        "vcpus": [1, 2],
        "shapes": ["large"],
        "repeats": 2,
        "seconds": 3,
        "cyclictest": ["off", "sync", "async"],
        "cyclictest_repeats": 1,
        "credits_seconds": 25,
    },
    "full": {
        "costs": [("base", 100), ("base", 1000), ("base", 10000), ("base", 50000),
                  ("mib", 200), ("mib", 800)],
        "vcpus": [1, 2],
        "shapes": ["large", "small"],
        "repeats": 3,
        "seconds": 5,
        "cyclictest": ["off", "sync", "async"],
        "credits_seconds": 60,
    },
}
LARGE_MIB = 32  # the smallest "large" space: more teardowns per phase under TCG
INTERVAL_US = 200
# The credits runs: many small spaces against a host that needs 5 ms of CPU
# for each, on a worker at SCHED_IDLE.  The ring bounds what can pile up: with
# the default 256 entries it holds at most about 128 DESTROYs (each space also
# has its CREATE there), fewer than the default cap_spaces, so the caps would
# never engage.  The largest ring holds more than a run's storm creates, so
# that the caps are the only bound being tested.
CREDITS_HOST = ("--cost-base-us 5000 --worker-sched idle "
                "--sq-entries 16384 --cq-entries 32768 --shm-size 2M")
SERIES_MS = 100


def shape_mib(shape):
    return LARGE_MIB if shape == "large" else 1


def cost_of(kind, us, shape):
    """The cost record of a cell: its knobs and its modelled cost per space."""
    base, per_mib = (us, 0) if kind == "base" else (0, us)
    label = f"base {us / 1000:g} ms" if kind == "base" else f"{us / 1000:g} ms/MiB"
    return {"label": label, "kind": kind, "base_us": base, "per_mib_us": per_mib,
            "per_space_us": float(base + per_mib * shape_mib(shape))}


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
    """One guest boot running pvmm-bench, and what it printed."""

    def __init__(self, args, index, vcpus, host_args, env, log):
        self.args, self.index, self.vcpus = args, index, vcpus
        self.host_args, self.env, self.log = host_args, env, log
        self.series = args.out / f"host-series-{index}.csv"
        self.phases = {}    # (mode, probe) -> dict
        self.guest_series = {}
        self.caps = {}
        self.errors = []

    def run(self):
        kernel_args = " ".join(f"pvmm.env.{k}={v}" for k, v in self.env.items())
        env = dict(os.environ, SMP=str(self.vcpus), TIMEOUT=str(self.args.timeout),
                   HOST_ARGS=f"{self.host_args} --series {self.series} "
                             f"--series-ms {SERIES_MS}",
                   KERNEL_ARGS=kernel_args, LOG=str(self.log))
        cmd = [str(TOP / "scripts/run-guest.sh"), str(self.args.kernel),
               str(self.args.initrd), "bench"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace")
        for raw in proc.stdout:
            self.line(raw.rstrip("\r\n"))
        rc = proc.wait()
        if rc:
            self.errors.append(f"run-guest.sh exited {rc}")
        return rc == 0 and not self.errors

    def phase(self, m):
        return self.phases.setdefault((m["mode"], m["probe"]),
                                      {"hist": {}, "result": None})

    def line(self, line):
        i = line.find("PVMM-BENCH-")
        if i < 0:
            return
        tag, _, rest = line[i:].partition(" ")
        m = kv(rest)
        if tag == "PVMM-BENCH-BEGIN":
            self.phase(m)["host_begin"] = host_row(self.series)
        elif tag == "PVMM-BENCH-END":
            # The guest has drained; let the host's next row include that.
            time.sleep(2.5 * SERIES_MS / 1000)
            self.phase(m)["host_end"] = host_row(self.series)
            if m.get("rc"):
                self.errors.append(f"{m['mode']}/{m['probe']}: rc={m['rc']}")
        elif tag == "PVMM-BENCH-RESULT":
            self.phase(m)["result"] = m
        elif tag == "PVMM-BENCH-HIST":
            hist = self.phase(m)["hist"]
            for us, n in re.findall(r" (\d+):(\d+)", rest):
                hist[int(us)] = hist.get(int(us), 0) + int(n)
        elif tag == "PVMM-BENCH-SERIES":
            self.guest_series.setdefault(m["mode"], []).append(
                {k: m[k] for k in ("t_ms", "outstanding", "pgds_pending",
                                   "spaces_live", "throttle_events", "draining")})
        elif tag == "PVMM-BENCH-CAPS":
            self.caps = m
        elif tag == "PVMM-BENCH-ERROR":
            self.errors.append(rest)


def lat_of(r):
    return {k: r.get(k2) for k, k2 in (("samples", "samples"), ("min", "min"),
            ("avg", "avg"), ("p99", "p99"), ("p999", "p999"), ("max", "max"),
            ("overflow", "overflow"))}


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
                sync_timeouts=r.get("sync_timeouts"))


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
        "accel": "kvm" if os.environ.get("KVM") == "1" else "tcg",
        "host_cpu_model": model, "host_cpus": os.cpu_count(),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
        "interval_us": INTERVAL_US,
    }


def plan(p):
    boots = []
    for rep in range(p["repeats"]):
        for vcpus in p["vcpus"]:
            for shape in p["shapes"]:
                for kind, us in p["costs"]:
                    boots.append(("matrix", rep, vcpus, shape, kind, us))
    boots += [("credits-off", 0, 2, "small", "base", 5000),
              ("credits-default", 0, 2, "small", "base", 5000)]
    return boots


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", type=Path, required=True,
                    help="kernel build directory (scripts/kernel.sh m prints it)")
    ap.add_argument("--initrd", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    ap.add_argument("--command", default=" ".join(sys.argv))
    ap.add_argument("--timeout", type=int, default=900,
                    help="seconds one guest boot may take")
    args = ap.parse_args()
    args.kernel = args.build / "arch/x86/boot/bzImage"
    p = PRESETS[args.preset]
    args.out.mkdir(parents=True, exist_ok=True)
    res = {"schema": 1, "meta": meta(args, args.build),
           "cells": [], "series": []}
    res["meta"].update(cell_seconds=p["seconds"], repeats=p["repeats"])
    boots = plan(p)
    start = time.monotonic()
    failed = 0
    for n, (kind_run, rep, vcpus, shape, kind, us) in enumerate(boots):
        cost = cost_of(kind, us, shape)
        elapsed = time.monotonic() - start
        eta = f", about {elapsed / n * (len(boots) - n) / 60:.0f} min left" if n else ""
        print(f"[bench] {n + 1}/{len(boots)}: {kind_run}, {cost['label']}, {vcpus} vCPU, "
              f"{shape}, repeat {rep + 1}; {elapsed / 60:.1f} min so far{eta}",
              file=sys.stderr, flush=True)
        env = {"PVMM_BENCH_SHAPE": shape, "PVMM_BENCH_MIB": LARGE_MIB,
               "PVMM_BENCH_INTERVAL_US": INTERVAL_US}
        host = f"--cost-base-us {cost['base_us']} --cost-us-per-mib {cost['per_mib_us']}"
        if kind_run == "matrix":
            ct = p["cyclictest"] if rep < p.get("cyclictest_repeats", p["repeats"]) else []
            env.update(PVMM_BENCH_SECONDS=p["seconds"],
                       PVMM_BENCH_CYCLICTEST=",".join(ct) or "none")
        else:
            env.update(PVMM_BENCH_SECONDS=p["credits_seconds"], PVMM_BENCH_MODES="async",
                       PVMM_BENCH_CYCLICTEST="none", PVMM_BENCH_SERIES_MS=250,
                       PVMM_BENCH_CAPS="max" if kind_run == "credits-off" else "default")
            host = CREDITS_HOST
        boot = Boot(args, n, vcpus, host, env, args.out / f"console-{n}.log")
        ok = boot.run()
        if not ok:
            failed += 1
            print(f"[bench] boot {n}: {'; '.join(boot.errors) or 'failed'} "
                  f"(console: {boot.log})", file=sys.stderr)
        extra = {"repeat": rep, "vcpus": vcpus, "shape": shape, "cost": cost,
                 "errors": boot.errors}
        if kind_run == "matrix":
            for (mode, probe), ph in sorted(boot.phases.items()):
                res["cells"].append(cell_of(boot, mode, probe, ph, extra))
        else:
            ph = boot.phases.get(("async", "pvmm_latency"), {"result": None, "hist": {}})
            rows = host_rows(boot.series)
            t0 = (ph.get("host_begin") or {}).get("ms", 0)
            t1 = (ph.get("host_end") or {}).get("ms", 1 << 62)
            res["series"].append({
                "name": kind_run, "host_worker": "SCHED_IDLE", "host_args": host,
                "caps": boot.caps,
                "guest": boot.guest_series.get("async", []),
                "host": [{"t_ms": r["ms"] - t0, "live_objects": r["live_objects"],
                          "destroys": r["destroys"], "sq_pending": r.get("sq_pending", 0)}
                         for r in rows if r.get("slot", 0) == 0 and t0 <= r["ms"] <= t1],
                "lat_us": lat_of(ph["result"]) if ph["result"] else None,
                "cell": cell_of(boot, "async", "pvmm_latency", ph, extra),
            })
        # Written after every boot: an interrupted run keeps what it measured.
        res["meta"]["elapsed_s"] = round(time.monotonic() - start, 1)
        (args.out / "results.json").write_text(json.dumps(res, indent=1))
    print(f"[bench] {len(boots)} boots, {failed} failed, "
          f"{(time.monotonic() - start) / 60:.1f} min; results in {args.out}",
          file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
