#!/usr/bin/env python3
"""Summarise a pvmm demo run: guest counters before/after the storm, the
storm's own report, the host stub's counters, and a latency table (off, sync
and async beside a storm, after a warm-up phase).  Reads the guest console
on stdin and the host stats file named on the command line."""
import re
import sys


def parse(lines):
    stats = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 2:
            stats[parts[0]] = parts[1]
    return stats


def latency(console):
    """The latency phases pvmm_bench printed, the first (the warm-up) left out."""
    rows = []
    for line in console:
        i = line.find("PVMM-BENCH-RESULT ")
        if i >= 0:
            rows.append(dict(re.findall(r"(\w+)=(\S+)", line[i:])))
    return rows[1:]


def latency_table(rows, cost):
    print(f"\n== wakeup latency beside a storm, host cost {cost} (guest µs, icount) ==")
    if not rows:
        print("  (no latency phases finished)")
        return
    print(f"  {'mode':8} {'max':>8} {'p99.9':>8} {'avg':>8} {'forks/s':>8}")
    for r in rows:
        print(f"  {r.get('mode', '?'):8} {r.get('max', '?'):>8} {r.get('p999', '?'):>8} "
              f"{r.get('avg', '?'):>8} {r.get('forks_per_s', '?'):>8}")


def main():
    console = sys.stdin.read().splitlines()
    section, before, after, storm = None, [], [], []
    for line in console:
        if line.startswith("PVMM-DEMO-STATS-BEFORE"):
            section = before
        elif line.startswith("PVMM-DEMO-STATS-AFTER"):
            section = after
        elif line.startswith("PVMM-GUEST-END"):
            section = None
        elif section is not None:
            section.append(line)
        if line.startswith("#") and section is before:
            storm.append(line)
    b, a = parse(before), parse(after)
    if not a:
        print("demo: the guest printed no pvmm stats; console follows")
        print("\n".join(console[-40:]))
        return 1

    def delta(k):
        try:
            return int(a[k]) - int(b.get(k, 0))
        except (KeyError, ValueError):
            return None

    print("== teardown storm (guest) ==")
    for line in storm:
        print(line)
    print("\n== guest counters: change over the storm ==")
    for k in ("spaces_created", "spaces_destroyed", "spaces_acked",
              "pgds_parked", "pgds_returned", "pgds_released", "submissions",
              "doorbells",
              "doorbells_suppressed", "irqs", "completions",
              "bad_completions", "protocol_errors", "untracked_exits"):
        print(f"  {k:22} {delta(k)}")
    print("\n== guest gauges after the storm ==")
    for k in ("pgds_pending", "outstanding", "outstanding_pages",
              "spaces_live", "backlog"):
        print(f"  {k:22} {a.get(k)}")
    d = delta("spaces_destroyed")
    if d:
        print(f"\n  doorbells per teardown  {delta('doorbells') / d:.3f}")
    try:
        with open(sys.argv[1]) as f:
            host = parse(f.read().splitlines())
        print("\n== host stub counters (the whole run, latency phases too) ==")
        for k, v in host.items():
            print(f"  {k:22} {v}")
    except OSError as e:
        print(f"\n(no host stats: {e})")
    latency_table(latency(console), sys.argv[2] if len(sys.argv) > 2 else "?")
    return 0


if __name__ == "__main__":
    sys.exit(main())
