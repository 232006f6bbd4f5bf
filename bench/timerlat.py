# SPDX-License-Identifier: GPL-2.0
"""The timerlat section of a pvmm benchmark report.

A timerlat phase measures the same storm with the kernel's timerlat tracer
and gives two cells (bench/run.py): timerlat_irq, how late the hrtimer's
interrupt handler ran, and timerlat_thread, how late the timerlat kthread it
woke began to run, from the same samples. Per point and mode the section
gives both, and each boot's ratio to the `off` timerlat phase of the same
boot, never of another. The figures are reported, not judged: no claim, no
floor and no other table reads these cells.
"""
from cells import (DASH, TIMERLAT_IRQ, TIMERLAT_THREAD, fmt, fmt_range, fmt_ratio, get,
                   lat, md_table, median, num, nums)

PROBES = (TIMERLAT_IRQ, TIMERLAT_THREAD)


def spread(values, f=fmt):
    """The median, and its [min–max] when there is more than one value."""
    vals = nums(values)
    if len(vals) > 1:
        return fmt_range(vals, f)
    return f(vals[0]) if vals else DASH


def lost(run, pt, mode):
    """Samples the tracer lost at a point and mode, summed over boots (a boot
    counts once even if both of its cells report them); None if unknown."""
    per_boot = {}
    for probe in PROBES:
        for c in run.repeats(pt, mode, probe):
            v = num(lat(c, "lost"))
            if v is not None:
                k = (get(c, "boot"), get(c, "repeat"))
                per_boot[k] = max(per_boot.get(k, 0), v)
    return sum(per_boot.values()) if per_boot else None


def section(run):
    rows, lossy = [], []
    for key in run.probe_keys(4, PROBES):
        pt, mode = key[:3], key[3]
        irq, thread = (run.repeats(pt, mode, p) for p in PROBES)
        n = lost(run, pt, mode)
        if n:
            lossy.append(f"{fmt(pt[0])} vCPUs, {pt[1] or DASH}, {pt[2] or DASH}, "
                         f"{mode or DASH}: {fmt(n)}")
        # x/off pairs each cell with the `off` cell of its own boot (Run.ratios).
        ratios = [DASH if mode == "off" else spread(run.ratios(g, "max"), fmt_ratio)
                  for g in (irq, thread)]
        rows.append([fmt(pt[0]), pt[1] or DASH, pt[2] or DASH, mode or DASH,
                     len({(get(c, "boot"), get(c, "repeat")) for c in irq + thread}),
                     *(spread(lat(c, f) for c in g)
                       for g in (irq, thread) for f in ("max", "p999")),
                     *(fmt(median(lat(c, "samples") for c in g)) for g in (irq, thread)),
                     f"**{fmt(n)}**" if n else fmt(n), *ratios])
    heads = ["vCPUs", "shape", "host cost", "mode", "boots", "IRQ max µs", "IRQ p99.9 µs",
             "thread max µs", "thread p99.9 µs", "IRQ samples", "thread samples", "lost",
             "IRQ max/off", "thread max/off"]
    note = ("\n**Samples lost** by the tracer, so missing from the figures: "
            + "; ".join(lossy) + ".\n") if lossy else ""
    return ("## Interrupt latency (timerlat)\n\nThe kernel's timerlat tracer, run beside "
            "the same storm once after the first phase of each mode listed. Each sample "
            "is one hrtimer: IRQ is how late its interrupt handler ran, thread how late "
            "the timerlat thread it woke began to run. Medians over boots, [min–max] when "
            "there is more than one; x/off is each boot's ratio to the `off` timerlat phase "
            "of the same boot. Latencies are whole microseconds, rounded down: an IRQ "
            "max of 0 is under 1 µs, and a ratio to it shows as –. These figures are reported, not judged: the claims are "
            "judged on the pvmm_latency probe.\n\n"
            + md_table(heads, rows, "No timerlat phases in this run.") + note)
