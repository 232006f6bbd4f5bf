#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""Compare a pvmm benchmark run against a reference run.

    /usr/bin/python3 bench/compare.py REFERENCE_DIR RUN_DIR [--flat-ratio 1.5] [--grow-ratio 2.0]

Reads results.json from both directories (Documentation/bench-reference and
$PVMM_CACHE/bench/latest, say) and prints Markdown: the platform and commit
of each, a warning when the platforms differ, each run's verdict per claim,
and per point and mode each run's same-boot ratios to `off` (max and p99.9)
and noise floors. Only ratios are compared: absolute latencies of different
boots, let alone of different runs, say nothing. Both runs are judged anew by
this tree's rules, so a verdict may differ from the one in an older report.md.
Only cells of the pvmm_latency probe, which the claims are judged on, are
compared: those of cyclictest and timerlat (timerlat_thread, timerlat_irq)
are skipped as the files are read.

Exit status 0 when both files parse, whatever they hold; 2 when one cannot
be read. Needs only the standard library.
"""
import argparse
import json
import os
import sys

import verdicts
from cells import DASH, PROBE, Run, fmt, fmt_range, fmt_ratio, get, md_table

# What makes two runs' ratios comparable at all: the emulator and the host.
PLATFORM = (("qemu", "QEMU version"), ("accel", "accelerator"), ("icount", "icount setting"),
            ("host_cpu_model", "host CPU model"), ("host_cpus", "host CPU count"))
# What changes the matrix or the host's side of it, but not the platform.
SETTINGS = (("preset", "preset"), ("cell_seconds", "seconds per phase"),
            ("repeats", "repeats"), ("host_work", "host work"), ("placement", "placement"),
            ("credits_accel", "credits accelerator"))


class Unreadable(Exception):
    pass


def dicts(v):
    return [x for x in v if isinstance(x, dict)] if isinstance(v, list) else []


class Results:
    """One run: its meta, its cells indexed as report.py does, its series."""

    def __init__(self, path, data):
        self.path = path
        self.meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
        self.boots = dicts(data.get("boots"))
        # The claims' probe only: the others are reported, never compared.
        self.cells = [c for c in dicts(data.get("cells")) if c.get("probe") == PROBE]
        self.series = dicts(data.get("series"))
        self.run = Run(self.cells, self.boots)


def load(path):
    """A run directory (or its results.json) as Results; Unreadable if not."""
    file = path if os.path.isfile(path) else os.path.join(path, "results.json")
    try:
        with open(file, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:  # JSON and UTF-8 errors are ValueErrors
        raise Unreadable(f"{file}: {e}") from e
    if not isinstance(data, dict):
        raise Unreadable(f"{file}: not a results object")
    return Results(path, data)


def qemu(meta):
    # `qemu-system-x86_64 --version` says "QEMU emulator version 7.2.x (...)".
    v = get(meta, "qemu")
    return str(v).replace("QEMU emulator version ", "") if v else None


def value(meta, key):
    return qemu(meta) if key == "qemu" else get(meta, key)


def describe(name, res):
    m = res.meta
    dirty = " (dirty)" if get(m, "dirty") else ""
    icount = f" (-icount {m['icount']})" if get(m, "icount") else ""
    place = get(m, "placement") if isinstance(get(m, "placement"), dict) else {}
    where = ", ".join(f"{k} {v}" for k, v in place.items() if v is not None) or DASH
    return (f"- **{name}** (`{res.path}`): commit {get(m, 'commit') or DASH}{dirty}, "
            f"preset {get(m, 'preset') or DASH}, started {get(m, 'started') or DASH}; "
            f"accel {get(m, 'accel') or DASH}{icount} · QEMU {qemu(m) or DASH} · "
            f"host CPU {get(m, 'host_cpu_model') or DASH} × {fmt(get(m, 'host_cpus'))} · "
            f"guest kernel {get(m, 'kernel') or DASH} · host work "
            f"{get(m, 'host_work') or DASH} · placement {where}\n")


def platform_notes(ref, new):
    """(warnings, notes) on what differs between the two runs' setups."""
    differ, unknown = [], []
    for key, what in PLATFORM:
        a, b = value(ref.meta, key), value(new.meta, key)
        if a != b:
            differ.append(f"{what}: {a if a is not None else DASH} vs "
                          f"{b if b is not None else DASH}")
        elif a is None and key != "icount":  # no icount is right under tcg
            unknown.append(what)
    warnings = []
    if differ:
        warnings.append("the platforms differ (" + "; ".join(differ) + "): ratios depend "
                        "on the emulator and the host, so this comparison is weak")
    if unknown:
        warnings.append("unknown in both runs: " + ", ".join(unknown)
                        + "; whether the platforms match cannot be told")
    notes = [what for key, what in SETTINGS if value(ref.meta, key) != value(new.meta, key)]
    return warnings, notes


def claims(res, flat, grow):
    """[(claim, verdict with its note)], judged as report.py does."""
    judged = [("1a — async stays at the floor", verdicts.claim_1a(res.run, flat)),
              ("1b — sync grows with host cost", verdicts.claim_1b(res.run, grow)),
              ("2 — bounded with a low-priority host", verdicts.claim_2(res.series))]
    out = []
    for title, (_, items, _, _) in judged:
        v, note = verdicts.overall(items, strict=True)
        out.append((title, v + note))
    return out


def claims_table(ref, new, flat, grow):
    rows = [[title, a, b, "yes" if a == b else "**no**"]
            for (title, a), (_, b) in zip(claims(ref, flat, grow), claims(new, flat, grow))]
    return md_table(["claim", "reference", "new run", "same"], rows, "No claims.")


def merged(ref, new):
    # Both runs' cells indexed together, only to list and order the points of
    # either: boot numbers collide, so no ratio is taken from it.
    return Run(ref.cells + new.cells, ref.boots + new.boots)


def point_table(ref, new, both, flat):
    rows = []
    for pt in both.points():
        rows.append([fmt(pt[0]), pt[1] or DASH, pt[2] or DASH,
                     *(fmt_range(r.run.floors(pt, f), fmt_ratio)
                       for f in ("max", "p999") for r in (ref, new)),
                     verdicts.point_1a(ref.run, pt, flat), verdicts.point_1a(new.run, pt, flat)])
    heads = ["vCPUs", "shape", "host cost", "floor max, ref", "floor max, new",
             "floor p99.9, ref", "floor p99.9, new", "claim 1a, ref", "claim 1a, new"]
    return md_table(heads, rows, "No points in either run.")


def mode_table(ref, new, both):
    rows = []
    for key in both.probe_keys(4):
        pt, mode = key[:3], key[3]
        if mode == "off":
            continue  # its ratio to itself is 1 by definition
        cols = [verdicts.boots_of(r.run, pt, mode) for r in (ref, new)]
        for field in ("max", "p999"):
            cols += [fmt_range(r.run.ratios(r.run.repeats(pt, mode), field), fmt_ratio)
                     for r in (ref, new)]
        rows.append([fmt(pt[0]), pt[1] or DASH, pt[2] or DASH, mode or DASH, *cols])
    heads = ["vCPUs", "shape", "host cost", "mode", "boots, ref", "boots, new",
             "max/off, ref", "max/off, new", "p99.9/off, ref", "p99.9/off, new"]
    return md_table(heads, rows, "No mode besides off in either run.")


def compare(ref, new, flat=verdicts.FLAT, grow=verdicts.GROW):
    """The comparison as Markdown, and its warnings for stderr."""
    warnings, notes = platform_notes(ref, new)
    both = merged(ref, new)
    text = ["# pvmm benchmark: a run against the reference\n",
            describe("reference", ref) + describe("new run", new)]
    text += [f"> **Warning:** {w}.\n" for w in warnings]
    if notes:
        text.append("Settings that differ: " + ", ".join(notes) + ". Points that only one "
                    "run measured show – for the other.\n")
    text += ["Only ratios within one boot are compared (each mode against the first `off` "
             "of its boot, median [min–max] over boots), never absolute latencies: runs "
             "are different boots, and under TCG latencies are not hardware figures. A "
             "ratio inside its run's floor (the spread of a boot's first and last `off`) "
             "says nothing. Both runs are judged by this tree's rules "
             f"(--flat-ratio {flat:g}, --grow-ratio {grow:g}).\n",
             "## Claims\n", claims_table(ref, new, flat, grow),
             "## Noise floor and claim 1a per point\n", point_table(ref, new, both, flat),
             "## Ratios to `off` per point and mode\n", mode_table(ref, new, both)]
    return "\n".join(text), warnings


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("reference", help="the reference run's directory, with results.json")
    ap.add_argument("run", help="the new run's directory, with results.json")
    ap.add_argument("--flat-ratio", type=float, default=verdicts.FLAT,
                    help=f"claim 1a's bound, as report.py (default {verdicts.FLAT:g})")
    ap.add_argument("--grow-ratio", type=float, default=verdicts.GROW,
                    help=f"claim 1b's growth, as report.py (default {verdicts.GROW:g})")
    args = ap.parse_args()
    try:
        ref, new = load(args.reference), load(args.run)
    except Unreadable as e:
        print(f"compare: {e}", file=sys.stderr)
        return 2
    text, warnings = compare(ref, new, args.flat_ratio, args.grow_ratio)
    print(text)
    for w in warnings:
        print(f"compare: warning: {w}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
