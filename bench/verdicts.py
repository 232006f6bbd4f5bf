"""The goals of a pvmm benchmark run: a met/missed verdict per claim, with
the numbers behind it, as the "Goals" section of the report."""
from cells import DASH, div, fmt, fmt_ratio, get, md_table, num, nums

GROWTH = 2.0  # claim 2: credits-off must at least double from first to last third
CAP_SLACK = 0.1  # claim 2: overshoot of the cap allowed to teardowns already under way


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
