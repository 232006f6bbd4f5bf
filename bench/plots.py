"""The plots of a pvmm benchmark report, as PNG and SVG, and the report's
section that links them. Plots without data are skipped, with the reason."""
import os

import matplotlib

from cells import (DASH, MODES, TIMERLAT_IRQ, TIMERLAT_THREAD, fmt, get, lat, median, num,
                   nums, skey)

matplotlib.use("Agg")  # build hosts have no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

# The same colour for a mode in every plot, so figures compare at a glance.
MODE_COLOURS = {"off": "0.4", "sync": "tab:red", "chunked": "tab:orange", "async": "tab:blue"}
SERIES_COLOURS = {"credits-off": "tab:red", "credits-default": "tab:blue"}


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


def plot_timerlat(run, meta, out_dir, vs):
    """One point's timerlat phases, a panel per mode, IRQ and thread latency
    overlaid: at the highest host cost, from the first repeat measured."""
    name = f"timerlat-{vs[0] if num(vs[0]) is not None else 'unknown'}cpu-{vs[1] or 'unknown'}"
    # The thread in the mode's colour, the IRQ dashed black over it.
    probes = (("thread", TIMERLAT_THREAD, None, "-"), ("IRQ", TIMERLAT_IRQ, "black", "--"))
    pts = [k for k in run.probe_keys(3, (TIMERLAT_IRQ, TIMERLAT_THREAD)) if k[:2] == vs]
    pt = ([k for k in pts if k in run.costs] or pts)[-1]  # sorted by cost: the highest
    cells = [c for _, probe, _, _ in probes for m in MODES for c in run.repeats(pt, m, probe)]
    first = min((c.get("repeat") for c in cells), key=skey)
    panels = {}
    for mode in MODES:
        bins = {label: summed_bins(c for c in run.repeats(pt, mode, probe)
                                   if c.get("repeat") == first)
                for label, probe, _, _ in probes}
        if any(bins.values()):
            panels[mode] = bins
    if not panels:
        return name, "no histogram bins"
    fig, axes = plt.subplots(1, len(panels), figsize=(1 + 4.2 * len(panels), 4.2),
                             squeeze=False, sharex=True, sharey=True)
    for ax, (mode, bins) in zip(axes[0], panels.items()):
        for label, probe, colour, style in probes:
            if bins[label]:
                edges, heights = stairs_from_sparse(bins[label])
                over = sum(nums(lat(c, "overflow") for c in run.repeats(pt, mode, probe)
                                if c.get("repeat") == first))
                # Baseline 0.5, as in plot_hist: empty bins touch the log axis.
                ax.stairs([max(h, 0.5) for h in heights], edges, baseline=0.5,
                          color=colour or MODE_COLOURS[mode], linestyle=style,
                          label=label + (f" ({fmt(over)} beyond histogram)" if over else ""))
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.5)
        # Linear up to 10 µs, where off and async live and IRQ latency is
        # often 0; logarithmic beyond, where sync's waits are.
        ax.set_xscale("symlog", linthresh=10)
        ax.set(title=mode, xlabel="latency (µs, 1 µs bins; log beyond 10)")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("samples")
    rep = f", repeat {fmt(first + 1)}" if num(first) is not None else ""
    save(fig, out_dir, name, f"timerlat IRQ and thread latency, {fmt(vs[0])} vCPUs, "
         f"{vs[1] or DASH} spaces, host cost {pt[2] or DASH}{rep}", meta)
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


def draw_all(run, series, meta, out_dir):
    """Draw every plot; returns [(name, reason skipped or None)]."""
    done = [("max-vs-cost", plot_max_vs_cost(run, meta, out_dir))]
    panels = run.probe_keys(2)  # one histogram per (vcpus, shape)
    done += ([plot_hist(run, meta, out_dir, vs) for vs in panels]
             or [("hist-*", "no pvmm_latency cells")])
    tl = run.probe_keys(2, (TIMERLAT_IRQ, TIMERLAT_THREAD))  # one per (vcpus, shape)
    done += ([plot_timerlat(run, meta, out_dir, vs) for vs in tl]
             or [("timerlat-*", "no timerlat cells")])
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
