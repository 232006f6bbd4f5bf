#!/usr/bin/python3
"""Turn a pvmm benchmark run into a readable report with plots.

    /usr/bin/python3 bench/report.py RESULTS_DIR [--flat-ratio 2.0] [--grow-ratio 2.0]

Reads RESULTS_DIR/results.json (schema 1, written by `make bench`) and writes
RESULTS_DIR/report.md and the plots (.png and .svg) next to it: what ran on
which platform, latency per (vCPUs, shape, host cost, mode), a cross-check
against cyclictest, and a met/missed verdict per goal with its numbers. Old or
partial files are fine: missing values print "–", goals without data are "not
measured", plots without data are skipped. Needs only the standard library and
Debian's python3-matplotlib.
"""
import argparse
import json
import math
import os
import statistics
import sys

import matplotlib

matplotlib.use("Agg")  # build hosts have no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

MODES = ("off", "sync", "chunked", "async")
# The same colour for a mode in every plot, so figures compare at a glance.
MODE_COLOURS = {"off": "0.4", "sync": "tab:red", "chunked": "tab:orange", "async": "tab:blue"}
SERIES_COLOURS = {"credits-off": "tab:red", "credits-default": "tab:blue"}
PROBE = "pvmm_latency"  # tables and goals use this probe; cyclictest cross-checks it
GROWTH = 2.0  # claim 2: credits-off must at least double from first to last third
CAP_SLACK = 0.1  # claim 2: overshoot of the cap allowed to teardowns already under way
AGREE = 2.0  # cross-check: the typical max ratio of the two probes stays within 1/2..2
DASH = "–"


# ---- tolerant access and formatting ---------------------------------------

def get(obj, *path):
    """obj[p0][p1]..., or None wherever something along the path is missing."""
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def num(v):
    """v if it is a usable number, else None (bools and strings are not)."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool)
    return v if ok and math.isfinite(v) else None


def nums(values):
    return [v for v in map(num, values) if v is not None]


def median(values):
    vals = nums(values)
    return statistics.median(vals) if vals else None


def div(a, b):
    a, b = num(a), num(b)
    return a / b if a is not None and b else None


def fmt(v, digits=1):
    v = num(v)
    if v is None:
        return DASH
    return str(int(v)) if float(v).is_integer() else f"{v:.{digits}f}"


def fmt_ratio(v):
    return DASH if num(v) is None else f"{v:.2f}"


def fmt_range(values):
    """'median [min–max]' across repeats."""
    vals = nums(values)
    return f"{fmt(median(vals))} [{fmt(min(vals))}–{fmt(max(vals))}]" if vals else DASH


def skey(v):
    """Sort key that never fails: numbers, then strings, then missing values."""
    if num(v) is not None:
        return (0, v, "")
    return (1, 0, str(v)) if v is not None else (2, 0, "")


def md_table(headers, rows, empty):
    if not rows:
        return f"_{empty}_\n"
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(x).replace("|", "\\|") for x in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# ---- grouping cells --------------------------------------------------------

def lat(cell, field):
    return get(cell, "lat_us", field)


def field_median(cells, field):
    return median(get(c, field) for c in cells)


def point(c):
    """(vcpus, shape, cost label): one point of the matrix, all modes."""
    return (get(c, "vcpus"), get(c, "shape"), get(c, "cost", "label"))


def base_key(c):
    # The `off` cell of the same boot is the baseline for a cell's ratios.
    return (get(c, "boot"), get(c, "repeat"), get(c, "probe")) + point(c)


class Run:
    """The cells of a results file, indexed for the tables, goals and plots."""

    def __init__(self, cells):
        self.cells = [c for c in cells if isinstance(c, dict)]
        self.groups = {}  # (vcpus, shape, label, mode, probe) -> repeats
        self.costs = {}   # (vcpus, shape, label) -> per-space host cost, µs
        for c in self.cells:
            key = point(c) + (c.get("mode"), c.get("probe"))
            self.groups.setdefault(key, []).append(c)
            if num(get(c, "cost", "per_space_us")) is not None:
                self.costs[point(c)] = get(c, "cost", "per_space_us")
        self.base = {base_key(c): c for c in self.cells if c.get("mode") == "off"}

    def order(self, key):
        """Sort by vcpus, shape, per-space cost, mode (off, sync, chunked, async)."""
        vcpus, shape, label, mode = (tuple(key) + (None,) * 4)[:4]
        rank = MODES.index(mode) if mode in MODES else len(MODES)
        return (skey(vcpus), skey(shape), skey(self.costs.get(key[:3])), skey(label),
                rank, skey(mode), *map(skey, key[4:]))

    def probe_keys(self, n):
        """Sorted distinct first-n parts of the pvmm_latency group keys."""
        return sorted({k[:n] for k in self.groups if k[4] == PROBE}, key=self.order)

    def repeats(self, pt, mode):
        return self.groups.get(pt + (mode, PROBE), [])

    def median_lat(self, pt, mode, field="max"):
        return median(lat(c, field) for c in self.repeats(pt, mode))

    def ratio(self, group, field):
        """Median over repeats of field / off's field from the same boot."""
        return median(div(lat(c, field), lat(self.base.get(base_key(c)), field)) for c in group)


# ---- report sections ------------------------------------------------------

def header(meta):
    def m(key):
        return get(meta, key) or DASH
    dirty = " (dirty)" if get(meta, "dirty") else ""
    # `qemu-system-x86_64 --version` says "QEMU emulator version 7.2.x (...)".
    qemu = str(m("qemu")).replace("QEMU emulator version ", "")
    return (
        "# pvmm benchmark report\n\n"
        f"- Command: `{m('command')}`, preset {m('preset')}\n"
        f"- Commit {m('commit')}{dirty}, started {m('started')}, "
        f"elapsed {fmt(get(meta, 'elapsed_s'))} s\n"
        f"- Per cell {fmt(get(meta, 'cell_seconds'))} s, {fmt(get(meta, 'repeats'))} repeats, "
        f"probe period {fmt(get(meta, 'interval_us'))} µs\n"
        f"- **Platform:** accel {m('accel')} · QEMU {qemu} · guest kernel {m('kernel')} · "
        f"host CPU {m('host_cpu_model')} × {fmt(get(meta, 'host_cpus'))}\n\n"
        "> Under TCG (software emulation) absolute latencies are not hardware figures; "
        "only ratios between cells of the same run count.\n"
    )


def main_table(run):
    heads = ["vCPUs", "shape", "host cost", "mode", "max µs median [min–max]", "max/off",
             "p99.9 µs", "p99 µs", "avg µs", "min µs", "forks/s", "doorbells/teardown",
             "peak outstanding", "throttle events", "throttle wait ms", "host CPU µs/teardown"]
    rows = []
    for key in run.probe_keys(4):
        g = run.repeats(key[:3], key[3])
        rows.append([fmt(key[0]), key[1] or DASH, key[2] or DASH, key[3] or DASH,
                     fmt_range(lat(c, "max") for c in g), fmt_ratio(run.ratio(g, "max")),
                     *(fmt(median(lat(c, f) for c in g)) for f in ("p999", "p99", "avg", "min")),
                     fmt(field_median(g, "forks_per_s")),
                     fmt(field_median(g, "doorbells_per_teardown"), 2),
                     fmt(field_median(g, "peak_outstanding")),
                     fmt(field_median(g, "throttle_events")),
                     fmt(div(field_median(g, "throttle_wait_us"), 1000), 2),
                     fmt(field_median(g, "host_cpu_us_per_teardown"))])
    return ("## Latency (probe pvmm_latency)\n\nMedians across repeats; max/off is the median "
            "of each repeat's ratio to `off` from the same boot.\n\n"
            + md_table(heads, rows, "No pvmm_latency cells."))


def crosscheck_table(run):
    pairs = {}  # (vcpus, shape, label, mode, repeat) -> {probe: cell}
    for c in run.cells:
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


def both(checks):
    """One item's verdict: all conditions must hold; a failed one is a miss even
    when another could not be measured."""
    if False in checks:
        return "missed"
    return "not measured" if None in checks else "met"


def overall(verdicts, strict):
    """A claim's verdict from its items' verdicts. Any miss is a miss. A strict
    claim needs every item; otherwise unmeasured items are counted, not hidden."""
    if "missed" in verdicts:
        return "missed", ""
    gaps = verdicts.count("not measured")
    if "met" not in verdicts or (strict and gaps):
        return "not measured", ""
    return "met", (f" ({gaps} of {len(verdicts)} items not measured)" if gaps else "")


def at_least(a, factor, b):
    return None if num(a) is None or num(b) is None else a >= factor * b


def claim_1a(run, flat):
    rows, verdicts = [], []
    for pt in run.probe_keys(3):
        r = run.ratio(run.repeats(pt, "async"), "max")
        v = "not measured" if r is None else ("met" if r <= flat else "missed")
        verdicts.append(v)
        rows.append([fmt(pt[0]), pt[1] or DASH, pt[2] or DASH,
                     fmt(run.median_lat(pt, "async")), fmt(run.median_lat(pt, "off")),
                     fmt_ratio(r), fmt_ratio(run.ratio(run.repeats(pt, "async"), "p999")), v])
    heads = ["vCPUs", "shape", "host cost", "async max µs", "off max µs", "async/off max",
             "async/off p99.9", "verdict"]
    return (f"async max / off max (median of same-boot ratios) ≤ {flat:g} at every point.",
            verdicts, heads, rows)


def claim_1b(run, grow):
    rows, verdicts = [], []
    for vs in run.probe_keys(2):
        costed = [k[:3] for k in run.probe_keys(4) if k[:2] == vs and k[3] == "sync"
                  and k[:3] in run.costs]
        lo, hi = (costed[0], costed[-1]) if len(costed) >= 2 else (None, None)
        s_lo = run.median_lat(lo, "sync") if lo else None
        s_hi = run.median_lat(hi, "sync") if hi else None
        o_hi = run.median_lat(hi, "off") if hi else None
        v = both([at_least(s_hi, grow, s_lo), at_least(s_hi, grow, o_hi)])
        verdicts.append(v)
        rows.append([fmt(vs[0]), vs[1] or DASH, lo[2] if lo else DASH, hi[2] if hi else DASH,
                     fmt(s_lo), fmt(s_hi), fmt(o_hi), fmt_ratio(div(s_hi, s_lo)),
                     fmt_ratio(div(s_hi, o_hi)), v])
    heads = ["vCPUs", "shape", "lowest cost", "highest cost", "sync max µs (lowest)",
             "sync max µs (highest)", "off max µs (highest)", "sync high/low",
             "sync/off (highest)", "verdict"]
    return (f"median sync max at the highest cost ≥ {grow:g} × that at the lowest cost, "
            f"and ≥ {grow:g} × off at the highest cost.", verdicts, heads, rows)


def samples(s, side, field):
    return nums(get(x, field) for x in get(s, side) or [])


def storm_samples(s, field):
    """Guest samples taken while the storm ran, not while it drained."""
    return nums(get(x, field) for x in get(s, "guest") or []
                if isinstance(x, dict) and x.get("draining") != 1)


def claim_2(series):
    by = {s.get("name"): s for s in series}
    cap = num(get(by.get("credits-default"), "caps", "cap_spaces"))
    rows, verdicts = [], []
    for name in ("credits-off", "credits-default"):
        s, out = by.get(name), storm_samples(by.get(name), "outstanding")
        peak = max(out) if out else None
        third = len(out) // 3
        first, last = (max(out[:third]), max(out[-third:])) if third else (None, None)
        if name == "credits-off":
            grows = None if first is None else last > GROWTH * first
            v = both([grows, None if peak is None or cap is None else peak > cap])
            rule = f"max first third {fmt(first)}, last third {fmt(last)}; peak > cap {fmt(cap)}"
        else:
            own = num(get(s, "caps", "cap_spaces"))
            v = both([None if peak is None or own is None else peak <= own * (1 + CAP_SLACK)])
            rule = f"peak ≤ cap_spaces {fmt(own)} + {CAP_SLACK:.0%}"
        live = samples(s, "host", "live_objects")
        verdicts.append(v)
        rows.append([name, fmt(get(s, "caps", "cap_spaces")), get(s, "host_worker") or DASH,
                     fmt(peak), fmt(out[-1] if out else None), fmt(max(live) if live else None),
                     fmt(live[-1] if live else None), fmt(get(s, "lat_us", "max")), rule, v])
    heads = ["series", "cap_spaces", "host worker", "peak outstanding", "final outstanding",
             "peak host live", "final host live", "latency max µs", "rule", "verdict"]
    return (f"while the storm runs, credits-off: max outstanding over the last third of "
            f"samples > {GROWTH:g} × that over the first third, and the peak > "
            f"credits-default's cap_spaces; credits-default: peak outstanding ≤ its "
            f"cap_spaces + {CAP_SLACK:.0%} (teardown never waits, so spaces alive when the "
            "cap is reached still exit past it).", verdicts, heads, rows)


def goals(run, series, flat, grow):
    out = ["## Goals\n"]
    claims = [("Claim 1a — async stays at the floor", claim_1a(run, flat)),
              ("Claim 1b — sync grows with host cost", claim_1b(run, grow)),
              ("Claim 2 — bounded with a low-priority host", claim_2(series))]
    for title, (rule, verdicts, heads, rows) in claims:
        # Claim 2 needs both of its series; 1a and 1b range over matrix points,
        # of which a partial run may lack some.
        v, note = overall(verdicts, strict=title.startswith("Claim 2"))
        out.append(f"### {title}: **{v}**{note}\n\nRule: {rule}\n\n"
                   + md_table(heads, rows, "No data."))
    return "\n".join(out)


# ---- plots ------------------------------------------------------------------

def save(fig, out_dir, name, title, meta):
    """Title, platform footnote, then the figure as PNG and SVG."""
    fig.suptitle(title)
    fig.text(0.5, 0.01, f"accel {get(meta, 'accel') or DASH} · host "
             f"{get(meta, 'host_cpu_model') or DASH} × {fmt(get(meta, 'host_cpus'))} CPUs · "
             f"commit {get(meta, 'commit') or DASH}", ha="center", fontsize=8, color="0.3")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    for ext in ("png", "svg"):
        # No timestamp in the SVG, so the same data gives the same file.
        fig.savefig(os.path.join(out_dir, f"{name}.{ext}"), dpi=110,
                    metadata={"Date": None} if ext == "svg" else None)
    plt.close(fig)


def log_axis(ax, axis, values):
    """Log scale, or symlog when a zero would otherwise vanish from the plot."""
    pos = [v for v in values if v > 0]
    setter = ax.set_xscale if axis == "x" else ax.set_yscale
    if len(pos) == len(values):
        setter("log")
    else:
        setter("symlog", linthresh=min(pos or [1]))


def cost_points(run, vs, mode):
    """[(cost ms, median max, min max, max max)] over the costs of one panel."""
    pts = []
    for pt in (k for k in run.probe_keys(3) if k[:2] == vs and k in run.costs):
        maxes = nums(lat(c, "max") for c in run.repeats(pt, mode))
        if maxes:
            pts.append((run.costs[pt] / 1000, median(maxes), min(maxes), max(maxes)))
    return pts


def plot_max_vs_cost(run, meta, out_dir):
    panels = {vs: {m: cost_points(run, vs, m) for m in MODES} for vs in run.probe_keys(2)}
    panels = {vs: p for vs, p in panels.items() if any(p.values())}
    if not panels:
        return "no cells with both a host cost and a max latency"
    cols, rows = min(3, len(panels)), -(-len(panels) // 3)
    fig, axes = plt.subplots(rows, cols, figsize=(max(8, 5 * cols), 3.8 * rows + 0.6),
                             squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (vs, by_mode) in zip(axes.flat, panels.items()):
        for mode, pts in by_mode.items():
            if pts:
                x, y, lo, hi = zip(*pts)
                err = [[m - a for m, a in zip(y, lo)], [b - m for m, b in zip(y, hi)]]
                ax.errorbar(x, y, yerr=err, marker="o", capsize=3,
                            color=MODE_COLOURS[mode], label=mode)
        every = [p for pts in by_mode.values() for p in pts]
        log_axis(ax, "x", [p[0] for p in every])
        log_axis(ax, "y", [p[2] for p in every])
        ax.set(title=f"{fmt(vs[0])} vCPUs, {vs[1] or DASH} spaces",
               xlabel="host cost per address space (ms)", ylabel="max wakeup latency (µs)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    save(fig, out_dir, "max-vs-cost",
         "Max latency vs host teardown cost (median, min–max over repeats)", meta)
    return None


def stairs_from_sparse(bins):
    """Edges and heights for ax.stairs from sparse 1 µs bins {us: count};
    gaps become zero-height steps instead of being bridged."""
    edges, heights = [], []
    for us in sorted(bins):
        if edges and edges[-1] != us:
            heights.append(0)
        if not edges or edges[-1] != us:
            edges.append(us)
        heights.append(bins[us])
        edges.append(us + 1)
    return edges, heights


def summed_bins(cells):
    bins = {}
    for c in cells:
        for b in c.get("hist") or []:
            us, n = (b + [None, None])[:2] if isinstance(b, list) else (None, None)
            if num(us) is not None and num(n) is not None and n > 0:
                bins[us] = bins.get(us, 0) + n
    return bins


def plot_hist(run, meta, out_dir, vs):
    name = f"hist-{vs[0] if num(vs[0]) is not None else 'unknown'}cpu-{vs[1] or 'unknown'}"
    costed = [k for k in run.probe_keys(3) if k[:2] == vs and k in run.costs]
    if not costed:
        return name, "no host cost known"
    pt = costed[-1]  # probe_keys sorts by cost, so this is the highest
    per_mode = {m: summed_bins(run.repeats(pt, m)) for m in MODES}
    if not any(per_mode.values()):
        return name, "no histogram bins"
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for mode, bins in per_mode.items():
        if bins:
            edges, heights = stairs_from_sparse(bins)
            over = sum(nums(lat(c, "overflow") for c in run.repeats(pt, mode)))
            label = mode + (f" ({fmt(over)} beyond histogram)" if over else "")
            # Baseline 0.5 sits below a count of 1 on the log axis: empty bins touch the axis.
            ax.stairs([max(h, 0.5) for h in heights], edges, baseline=0.5,
                      color=MODE_COLOURS[mode], label=label)
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.5)
    ax.set(xlabel="wakeup latency (µs, 1 µs bins)", ylabel="samples (summed over repeats)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    save(fig, out_dir, name, f"Latency histogram, {fmt(vs[0])} vCPUs, {vs[1] or DASH} spaces, "
         f"host cost {pt[2] or DASH}", meta)
    return name, None


def plot_outstanding(series, meta, out_dir):
    # A colour per series; a line style per gauge.  The host's own pile-up is
    # what it has not even taken from the ring yet (sq_pending): a starved
    # worker reaches neither the CREATEs nor the DESTROYs queued there.
    lines = []
    for i, s in enumerate(series):
        name, colour = s.get("name") or DASH, SERIES_COLOURS.get(s.get("name"), f"C{i + 2}")
        for side, field, style in (("guest", "outstanding", "-"), ("guest", "pgds_pending", "-."),
                                   ("host", "sq_pending", ":")):
            pts = [(num(get(x, "t_ms")), num(get(x, field))) for x in get(s, side) or []]
            pts = [(t / 1000, v) for t, v in pts if t is not None and v is not None]
            if pts:
                lines.append((f"{name}: {side} {field}", colour, style, *zip(*pts)))
    if not lines:
        return "no time series"
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for label, colour, style, t, v in lines:
        ax.plot(t, v, style, color=colour, label=label)
    # Both series are judged against the default run's cap.
    by = {s.get("name"): s for s in series}
    caps = [get(s, "caps", "cap_spaces") for s in [by.get("credits-default")] + series]
    cap = next((c for c in caps if num(c) and c > 0), None)
    if cap is not None:
        ax.axhline(cap, linestyle="--", color="black", label=f"cap_spaces = {fmt(cap)}")
    ax.set(xlabel="time (s)", ylabel="address spaces (sq_pending: ring entries)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, out_dir, "outstanding", "Outstanding teardowns: credits off vs default", meta)
    return None


def plots(run, series, meta, out_dir):
    """Draw every plot; returns [(name, reason skipped or None)]."""
    done = [("max-vs-cost", plot_max_vs_cost(run, meta, out_dir))]
    panels = run.probe_keys(2)  # one histogram per (vcpus, shape)
    done += ([plot_hist(run, meta, out_dir, vs) for vs in panels]
             or [("hist-*", "no pvmm_latency cells")])
    done.append(("outstanding", plot_outstanding(series, meta, out_dir)))
    return done


def plot_section(done):
    lines = ["## Plots\n"]
    for name, skipped in done:
        if skipped:
            lines.append(f"- {name}: skipped — {skipped}\n")
        else:
            lines.append(f"- [{name}.png]({name}.png) · [{name}.svg]({name}.svg)\n\n"
                         f"  ![{name}]({name}.png)\n")
    return "\n".join(lines)


# ---- entry point --------------------------------------------------------------

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
        if num(c.get("sync_timeouts")):
            why.append(f"{c['sync_timeouts']} synchronous waits timed out "
                       "(pvmm switched to async: no baseline)")
        if why:
            rows.append([c.get("boot", "–"), c.get("vcpus", "–"), c.get("shape", "–"),
                         get(c, "cost", "label") or "–", c.get("mode", "–"),
                         c.get("probe", "–"), "; ".join(str(w) for w in why)])
    return "## Problems\n\n" + md_table(
        ["boot", "vCPUs", "shape", "host cost", "mode", "probe", "what"], rows,
        "None: every phase ran, drained, and forked without failures.")


def build_report(results_dir, flat=2.0, grow=2.0):
    """Write report.md and the plots into results_dir; returns report.md's path."""
    with open(os.path.join(results_dir, "results.json"), encoding="utf-8") as f:
        data = json.load(f)
    data = data if isinstance(data, dict) else {}
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    run = Run(data.get("cells") or [])
    series = [s for s in data.get("series") or [] if isinstance(s, dict)]
    done = plots(run, series, meta, results_dir)
    text = "\n".join([header(meta), main_table(run), crosscheck_table(run),
                      goals(run, series, flat, grow), problems(data.get("cells") or []),
                      plot_section(done)])
    path = os.path.join(results_dir, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results_dir", help="holds results.json; the report is written there too")
    ap.add_argument("--flat-ratio", type=float, default=2.0,
                    help="claim 1a: largest allowed async/off max-latency ratio (default 2.0)")
    ap.add_argument("--grow-ratio", type=float, default=2.0,
                    help="claim 1b: smallest required growth of sync max latency (default 2.0)")
    args = ap.parse_args()
    try:
        print(build_report(args.results_dir, args.flat_ratio, args.grow_ratio))
    except (OSError, json.JSONDecodeError) as e:
        print(f"report: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
