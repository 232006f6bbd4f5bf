#!/usr/bin/env python3
"""Summarise a pvmm demo run: guest counters before/after the storm, the
storm's own report, and the host stub's counters.  Reads the guest console
on stdin and the host stats file named on the command line."""
import sys


def parse(lines):
    stats = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 2:
            stats[parts[0]] = parts[1]
    return stats


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
        print("\n== host stub counters ==")
        for k, v in host.items():
            print(f"  {k:22} {v}")
    except OSError as e:
        print(f"\n(no host stats: {e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
