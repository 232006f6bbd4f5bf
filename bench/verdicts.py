"""The goals of a pvmm benchmark run: a met/missed verdict per claim, with
the numbers behind it, as the "Goals" section of the report."""
from cells import DASH, div, fmt, fmt_range, fmt_ratio, get, md_table, num, nums

FLAT = 1.5  # claim 1a: async/off allowed, unless the point's noise floor is larger
GROW = 2.0  # claim 1b: growth of sync/off required from the lowest to the highest cost
GROWTH = 2.0  # claim 2: credits-off must at least double from first to last third
CAP_SLACK = 0.1  # claim 2: overshoot of the cap allowed to teardowns already under way
BELOW = "below the floor"
OTHERS = ("sync", "chunked", "async")


def both(checks):
    """One item's verdict: all conditions must hold; a failed one is a miss even
    when another could not be measured."""
    if False in checks:
        return "missed"
    return "not measured" if None in checks else "met"


def overall(verdicts, strict):
    """A claim's verdict from its items' verdicts. Any miss is a miss. A strict
    claim needs every item; otherwise unmeasured items are counted, not hidden.
    Items below the floor are never met: a claim with no met item is not met."""
    if "missed" in verdicts:
        return "missed", ""
    gaps = verdicts.count("not measured")
    below = verdicts.count(BELOW)
    if strict and gaps:
        return "not measured", f" ({gaps} of {len(verdicts)} items not measured)"
    if "met" not in verdicts:
        return (BELOW if below else "not measured"), ""
    notes = [f"{n} of {len(verdicts)} items {what}" for n, what in
             ((gaps, "not measured"), (below, BELOW)) if n]
    return "met", (f" ({'; '.join(notes)})" if notes else "")


def at_least(a, factor, b):
    return None if num(a) is None or num(b) is None else a >= factor * b


def beyond(run, pt, mode, field="max"):
    """Does mode's median same-boot ratio to `off` lie beyond the point's
    noise floor (the largest spread of its boots' two `off` phases)? None
    when either is unknown."""
    r, floors = run.ratio(run.repeats(pt, mode), field), run.floors(pt, field)
    return None if r is None or not floors else r > max(floors)


def boots_of(run, pt, mode):
    n = len(run.ratios(run.repeats(pt, mode), "max"))
    planned = run.planned.get(pt)
    return f"{n}/{planned}" if planned else str(n)


def point_1a(run, pt, flat):
    """async at one point: met, missed, below the floor or not measured."""
    g = run.repeats(pt, "async")
    checks = []
    for field in ("max", "p999"):
        r, floors = run.ratio(g, field), run.floors(pt, field)
        checks.append(None if r is None or not floors else r <= max(flat, max(floors)))
    if None in checks:
        return "not measured"
    if not any(beyond(run, pt, m) for m in OTHERS):
        return BELOW
    return both(checks)


def claim_1a(run, flat):
    rows, verdicts = [], []
    for pt in run.points():
        v = point_1a(run, pt, flat)
        verdicts.append(v)
        g = run.repeats(pt, "async")
        rows.append([fmt(pt[0]), pt[1] or DASH, pt[2] or DASH, boots_of(run, pt, "async"),
                     fmt(run.median_lat(pt, "async")), fmt(run.median_lat(pt, "off")),
                     fmt_range(run.ratios(g, "max"), fmt_ratio),
                     fmt_range(run.ratios(g, "p999"), fmt_ratio),
                     fmt_range(run.floors(pt, "max"), fmt_ratio),
                     fmt_range(run.floors(pt, "p999"), fmt_ratio),
                     fmt_ratio(run.ratio(run.repeats(pt, "sync"), "max")), v])
    heads = ["vCPUs", "shape", "host cost", "boots", "async max µs", "off max µs",
             "async/off max", "async/off p99.9", "floor max", "floor p99.9",
             "sync/off max", "verdict"]
    return (f"at every point, the median over boots of async/off (`off` first in the same "
            f"boot) ≤ the larger of {flat:g} and the point's noise floor (the largest "
            "spread of a boot's first and last `off`), for max and for p99.9. A point "
            "where no mode's median ratio lies beyond the floor is "
            f"\"{BELOW}\": the host cost cannot be seen there, so it proves nothing. "
            "Ratios are medians [min–max] over boots.", verdicts, heads, rows)


def claim_1b(run, grow):
    rows, verdicts = [], []
    for vs in sorted({pt[:2] for pt in run.points()}, key=run.order):
        pts = [pt for pt in run.points() if pt[:2] == vs]
        costed = [pt for pt in pts if pt in run.costs and run.repeats(pt, "sync")]
        lo, hi = (costed[0], costed[-1]) if len(costed) >= 2 else (None, None)
        r_lo = run.ratio(run.repeats(lo, "sync"), "max") if lo else None
        r_hi = run.ratio(run.repeats(hi, "sync"), "max") if hi else None
        seen = beyond(run, hi, "sync") if hi else None
        if len(costed) < len(pts) or None in (r_lo, r_hi, seen):
            v = "not measured"
        elif not seen:
            v = BELOW
        else:
            v = both([at_least(r_hi, grow, r_lo), at_least(r_hi, grow, 1.0)])
        verdicts.append(v)
        steps = " → ".join(f"{pt[2]}: {fmt_ratio(run.ratio(run.repeats(pt, 'sync'), 'max'))}"
                           for pt in pts)
        rows.append([fmt(vs[0]), vs[1] or DASH, steps, fmt_ratio(div(r_hi, r_lo)),
                     fmt_range(run.floors(hi, "max"), fmt_ratio) if hi else DASH, v])
    heads = ["vCPUs", "shape", "sync/off max by host cost (medians over boots)",
             "highest/lowest", "floor max at the highest cost", "verdict"]
    return (f"the median same-boot ratio sync/off at the highest cost ≥ {grow:g} × that at "
            f"the lowest cost, and ≥ {grow:g} and beyond the noise floor at the highest "
            "cost. Each figure is a ratio within one boot; only ratios are compared "
            "across costs, never latencies of different boots.", verdicts, heads, rows)


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
        # Every claim needs all of its items: a missing point never counts as met.
        v, note = overall(verdicts, strict=True)
        out.append(f"### {title}: **{v}**{note}\n\nRule: {rule}\n\n"
                   + md_table(heads, rows, "No data."))
    return "\n".join(out)
