#!/usr/bin/python3
"""Turn a pvmm benchmark run into a readable report with plots.

    /usr/bin/python3 bench/report.py RESULTS_DIR [--flat-ratio 1.5] [--grow-ratio 2.0]

Reads RESULTS_DIR/results.json (schema 1 or 2, written by `make bench`) and writes
RESULTS_DIR/report.md and the plots (.png and .svg) next to it: what ran on
which platform, latency per (vCPUs, shape, host cost, mode), a cross-check
against cyclictest, interrupt and thread latency from the timerlat tracer
(reported, not judged), and a met/missed verdict per goal with its numbers. Old or
partial files are fine: missing values print "–", goals without data are "not
measured", plots without data are skipped. Needs only the standard library and
Debian's python3-matplotlib.
"""
import argparse
import json
import os
import sys

import plots
import timerlat
import verdicts
from cells import (DASH, PROBE, Run, div, field_median, fmt, fmt_range, fmt_ratio, get, lat,
                   md_table, median, num, point)
from verdicts import FLAT, GROW

AGREE = 2.0  # cross-check: the typical max ratio of the two probes stays within 1/2..2


# ---- report sections ------------------------------------------------------

def header(meta):
    def m(key):
        return get(meta, key) or DASH
    def place(key):
        v = get(meta, "placement", key)
        return DASH if v is None else v
    dirty = " (dirty)" if get(meta, "dirty") else ""
    set_by_args = get(meta, "overrides") if isinstance(get(meta, "overrides"), dict) else {}
    over = ", ".join(f"--{k} {v}" for k, v in set_by_args.items())
    over = f" (overridden: {over})" if over else ""
    icount = f" (-icount {meta['icount']})" if get(meta, "icount") else ""
    # `qemu-system-x86_64 --version` says "QEMU emulator version 7.2.x (...)".
    qemu = str(m("qemu")).replace("QEMU emulator version ", "")
    return (
        "# pvmm benchmark report\n\n"
        f"- Command: `{m('command')}`, preset {m('preset')}{over}\n"
        f"- Commit {m('commit')}{dirty}, started {m('started')}, "
        f"elapsed {fmt(get(meta, 'elapsed_s'))} s\n"
        f"- Per cell {fmt(get(meta, 'cell_seconds'))} s, {fmt(get(meta, 'repeats'))} repeats, "
        f"probe period {fmt(get(meta, 'interval_us'))} µs\n"
        f"- **Platform:** accel {m('accel')}{icount} · QEMU {qemu} · guest kernel "
        f"{m('kernel')} · host CPU {m('host_cpu_model')} × {fmt(get(meta, 'host_cpus'))}\n"
        f"- Placement: vCPUs on CPUs {place('vcpu_cpus')}, host worker on CPUs "
        f"{place('worker_cpus')} at {place('worker_sched')}, nice {place('worker_nice')}; "
        f"credits boots under {m('credits_accel')}\n\n"
        "> Under TCG (software emulation) absolute latencies are not hardware figures; "
        "only ratios between phases of the same boot count. Under icount the guest "
        "clock follows guest instructions: a host-side wait shows as the instructions "
        "the vCPU runs meanwhile, so `sync` figures compare within a boot only.\n"
    )


def main_table(run):
    heads = ["vCPUs", "shape", "host cost", "mode", "boots", "max µs median [min–max]",
             "max/off [min–max]", "p99.9 µs", "p99.9/off [min–max]", "floor max [min–max]",
             "p99 µs", "avg µs", "min µs", "forks/s", "doorbells/teardown",
             "peak outstanding", "throttle events", "throttle wait ms",
             "host CPU µs/teardown"]
    rows = []
    for key in run.probe_keys(4):
        g = run.repeats(key[:3], key[3])
        rows.append([fmt(key[0]), key[1] or DASH, key[2] or DASH, key[3] or DASH,
                     len(g), fmt_range(lat(c, "max") for c in g),
                     fmt_range(run.ratios(g, "max"), fmt_ratio),
                     fmt(median(lat(c, "p999") for c in g)),
                     fmt_range(run.ratios(g, "p999"), fmt_ratio),
                     fmt_range(run.floors(key[:3], "max"), fmt_ratio),
                     *(fmt(median(lat(c, f) for c in g)) for f in ("p99", "avg", "min")),
                     fmt(field_median(g, "forks_per_s")),
                     fmt(field_median(g, "doorbells_per_teardown"), 2),
                     fmt(field_median(g, "peak_outstanding")),
                     fmt(field_median(g, "throttle_events")),
                     fmt(div(field_median(g, "throttle_wait_us"), 1000), 2),
                     fmt(field_median(g, "host_cpu_us_per_teardown"))])
    return ("## Latency (probe pvmm_latency)\n\nMedians across boots, each boot after its "
            "warm-up phase. x/off is each boot's ratio to its first `off` phase; the floor "
            "is each boot's spread between its first and last `off` (max/min, ≥ 1): a "
            "ratio inside it says nothing. The `off` rows are the first `off` phases.\n\n"
            + md_table(heads, rows, "No pvmm_latency cells."))


def crosscheck_table(run):
    pairs = {}  # (vcpus, shape, label, mode, repeat) -> {probe: cell}
    for c in run.cells:
        if c.get("role") == "last":
            continue  # the first `off` of a boot is the one paired
        pairs.setdefault(point(c) + (c.get("mode"), c.get("repeat")), {})[c.get("probe")] = c
    rows, ratios = [], []
    for key in sorted(pairs, key=run.order):
        p = pairs[key]
        if PROBE in p and "cyclictest" in p:
            a, b = lat(p[PROBE], "max"), lat(p["cyclictest"], "max")
            r = div(a, b)
            if r is not None:
                ratios.append(r)
            rows.append([fmt(key[0]), key[1] or DASH, key[2] or DASH, key[3] or DASH,
                         fmt(key[4]), fmt(a), fmt(b), fmt_ratio(r)])
    heads = ["vCPUs", "shape", "host cost", "mode", "repeat", "pvmm_latency max µs",
             "cyclictest max µs", "pvmm_latency / cyclictest"]
    # The two probes run one after the other, each beside its own part of the
    # storm, so single maxima differ by chance; the typical ratio must not.
    if ratios:
        m = median(ratios)
        inside = sum(1 / AGREE <= r <= AGREE for r in ratios)
        ok = 1 / AGREE <= m <= AGREE
        verdict = (f"Median ratio {m:.2f} over {len(ratios)} cells; {inside} of {len(ratios)} "
                   f"within {1 / AGREE:g}–{AGREE:g}. Rule: the median ratio within "
                   f"{1 / AGREE:g}–{AGREE:g}: **{'met' if ok else 'missed'}**.\n\n")
    else:
        verdict = ""
    return "## Cross-check against cyclictest\n\n" + verdict + md_table(
        heads, rows, "No cell was measured with both probes.")



# ---- entry point --------------------------------------------------------------

def boots_table(boots):
    """Every boot that failed or lacks a phase, with its exit statuses."""
    rows = []
    for b in boots:
        if not isinstance(b, dict) or (b.get("ok") and not b.get("missing")):
            continue
        missing = ", ".join(f"{get(m, 'mode')}/{get(m, 'probe')} ({get(m, 'role')})"
                            for m in b.get("missing") or [] if isinstance(m, dict))
        rows.append([fmt(b.get("boot")), b.get("run") or DASH, fmt(b.get("vcpus")),
                     get(b, "cost", "label") or DASH, fmt(b.get("repeat")),
                     fmt(b.get("rc")), fmt(b.get("done_rc")), missing or "none",
                     "; ".join(str(e) for e in b.get("errors") or []) or DASH])
    n = sum(isinstance(b, dict) for b in boots)
    return (f"## Boots\n\n{n} boots ran; those that failed or lack a phase follow, with "
            "run-guest.sh's exit status and pvmm-bench's (`PVMM-BENCH-DONE rc=`, – when "
            "it never finished). Their missing phases are missing from the tables and "
            "never count as met.\n\n"
            + md_table(["boot", "run", "vCPUs", "host cost", "repeat", "exit status",
                        "pvmm-bench rc", "missing phases", "errors"], rows,
                       "None: every boot finished and delivered every phase."))


def problems(cells):
    """Cells whose boot reported errors, that did not drain, or lost forks."""
    rows = []
    for c in cells:
        if not isinstance(c, dict):
            continue
        why = list(c.get("errors") or [])
        if c.get("drained") is False:
            why.append("did not drain")
        if num(c.get("fork_failed")):
            why.append(f"{c['fork_failed']} forks failed")
        if num(get(c, "lat_us", "lost")):
            why.append(f"{fmt(get(c, 'lat_us', 'lost'))} timerlat samples lost")
        if num(c.get("sync_timeouts")):
            why.append(f"{c['sync_timeouts']} synchronous waits timed out "
                       "(pvmm switched to async: no baseline)")
        if why:
            rows.append([c.get("boot", "–"), c.get("vcpus", "–"), c.get("shape", "–"),
                         get(c, "cost", "label") or "–", c.get("mode", "–"),
                         c.get("role", "–"), c.get("probe", "–"),
                         "; ".join(str(w) for w in why)])
    return "## Problems\n\n" + md_table(
        ["boot", "vCPUs", "shape", "host cost", "mode", "role", "probe", "what"], rows,
        "None: every phase ran, drained, and forked without failures.")


def build_report(results_dir, flat=FLAT, grow=GROW):
    """Write report.md and the plots into results_dir; returns report.md's path."""
    with open(os.path.join(results_dir, "results.json"), encoding="utf-8") as f:
        data = json.load(f)
    data = data if isinstance(data, dict) else {}
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    boots = [b for b in data.get("boots") or [] if isinstance(b, dict)]
    run = Run(data.get("cells") or [], boots)
    series = [s for s in data.get("series") or [] if isinstance(s, dict)]
    done = plots.draw_all(run, series, meta, results_dir)
    text = "\n".join([header(meta), main_table(run), crosscheck_table(run),
                      timerlat.section(run), verdicts.goals(run, series, flat, grow),
                      boots_table(boots),
                      problems(data.get("cells") or []),
                      plots.plot_section(done)])
    path = os.path.join(results_dir, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results_dir", help="holds results.json; the report is written there too")
    ap.add_argument("--flat-ratio", type=float, default=FLAT,
                    help="claim 1a: largest allowed async/off ratio, max and p99.9, unless "
                         f"the noise floor is larger (default {FLAT:g})")
    ap.add_argument("--grow-ratio", type=float, default=GROW,
                    help="claim 1b: smallest required growth of sync max latency "
                         f"(default {GROW:g})")
    args = ap.parse_args()
    try:
        print(build_report(args.results_dir, args.flat_ratio, args.grow_ratio))
    except (OSError, json.JSONDecodeError) as e:
        print(f"report: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
