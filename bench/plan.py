# SPDX-License-Identifier: GPL-2.0
"""What `make bench` boots: the presets, and per boot its phases in order.

Every matrix boot runs a warm-up phase of `off` (its figures are kept but
never judged: the first phase after boot is slow in any mode), then `off`,
the other modes in an order rotated from repeat to repeat, and `off` again.
The two `off` phases bracket the rest: their ratio is the boot's noise floor.
After the first phase of a mode, a boot may measure the same storm once more
with cyclictest (the cross-check) and then with the kernel's timerlat tracer,
each in the first repeats only when the preset says so.
"""

# (kind, microseconds): "base" is the fixed cost of every DESTROY, "mib" the
# cost per MiB of address space (the host stub's two cost knobs).
PRESETS = {
    # A few minutes: checks the pipeline end to end, proves nothing.
    "smoke": {
        "costs": [("base", 1000), ("base", 10000)],
        "vcpus": [1],
        "shapes": ["large"],
        "modes": ["sync", "async"],
        "repeats": 1,
        "seconds": 1,
        "cyclictest": ["off", "sync", "async"],
        "timerlat": ["off", "sync", "async"],
        "credits_seconds": 10,
    },
    "quick": {
        "costs": [("base", 1000), ("base", 10000)],
        "vcpus": [1],
        "shapes": ["large"],
        "modes": ["sync", "async"],
        "repeats": 5,
        "seconds": 1,
        "cyclictest": [],  # full has the cross-check: it would add a third
        "timerlat": ["off", "sync", "async"],
        "timerlat_repeats": 1,  # 3 phases in 2 boots: quick stays within 15 minutes
        "credits_seconds": 20,
    },
    "full": {
        "costs": [("base", 100), ("base", 1000), ("base", 10000), ("base", 50000)],
        "vcpus": [1, 2],
        "shapes": ["large"],
        "modes": ["sync", "chunked", "async"],
        "repeats": 5,
        # 1 s phases and one timerlat boot per point keep full within 90
        # minutes: 2 s phases and two timerlat boots took 129.5.
        "seconds": 1,
        "cyclictest": ["off", "sync", "async"],
        "cyclictest_repeats": 1,
        "timerlat": ["off", "sync", "async"],
        "timerlat_repeats": 1,
        "credits_seconds": 60,
    },
}
LARGE_MIB = 32  # the smallest "large" space: more teardowns per phase
# The range pvmm-bench accepts for PVMM_BENCH_SECONDS.
SECONDS_RANGE = (1, 3600)

# The roles of a boot's pvmm_latency phases, by position.
WARMUP, FIRST, LAST, MEASURED = "warmup", "first", "last", "measured"
# The roles of the extra phases after a mode's first: cyclictest, timerlat.
CROSSCHECK, TIMERLAT = "crosscheck", "timerlat"


def preset(name, seconds=None, repeats=None):
    """Preset name, with a run's overrides of its phase length and repeats.

    Longer phases give p99.9 from more samples (5 per second at a 200 µs
    period) and more repeats a firmer median, at the cost of wall time;
    fewer repeats give a faster look. Everything else stays the preset's.
    """
    p = dict(PRESETS[name])
    if seconds is not None:
        lo, hi = SECONDS_RANGE
        if not lo <= seconds <= hi:
            raise ValueError(f"seconds per phase must be {lo} to {hi}, not {seconds}")
        p["seconds"] = seconds
    if repeats is not None:
        if repeats < 1:
            raise ValueError(f"repeats must be at least 1, not {repeats}")
        p["repeats"] = repeats
    return p


def shape_mib(shape):
    return LARGE_MIB if shape == "large" else 1


def cost_of(kind, us, shape):
    """The cost record of a cell: its knobs and its modelled cost per space."""
    base, per_mib = (us, 0) if kind == "base" else (0, us)
    label = f"base {us / 1000:g} ms" if kind == "base" else f"{us / 1000:g} ms/MiB"
    return {"label": label, "kind": kind, "base_us": base, "per_mib_us": per_mib,
            "per_space_us": float(base + per_mib * shape_mib(shape))}


def rotated(modes, rotation):
    """modes rotated left by rotation: each repeat starts with another mode."""
    if not modes:
        return []
    k = rotation % len(modes)
    return list(modes[k:]) + list(modes[:k])


def phase_order(modes, rotation):
    """The pvmm_latency phases of one boot: warm-up, off, the rest, off."""
    return ["off", "off"] + rotated(modes, rotation) + ["off"]


def roles(order):
    """The role of each phase of phase_order(): warm-up, first, ..., last."""
    n = len(order)
    return [WARMUP if i == 0 else FIRST if i == 1 else LAST if i == n - 1 else MEASURED
            for i in range(n)]


def extra_modes(p, probe, rep):
    """The modes whose first phase probe follows in repeat rep: the preset's
    list in its first `<probe>_repeats` repeats (all by default), else none."""
    return list(p.get(probe, [])) if rep < p.get(f"{probe}_repeats", p["repeats"]) else []


def plan(p):
    """Every boot of a preset: a dict per boot, matrix first, then credits."""
    boots = []
    for rep in range(p["repeats"]):
        for vcpus in p["vcpus"]:
            for shape in p["shapes"]:
                for kind, us in p["costs"]:
                    boots.append({"run": "matrix", "repeat": rep, "vcpus": vcpus,
                                  "shape": shape, "cost": cost_of(kind, us, shape),
                                  "order": phase_order(p["modes"], rep),
                                  "cyclictest": extra_modes(p, "cyclictest", rep),
                                  "timerlat": extra_modes(p, "timerlat", rep)})
    for name in ("credits-off", "credits-default"):
        boots.append({"run": name, "repeat": 0, "vcpus": 2, "shape": "small",
                      "cost": cost_of("base", 5000, "small"), "order": ["async"],
                      "cyclictest": [], "timerlat": []})
    return boots


def expected(boot):
    """[(seq, mode, probe, role)] a boot must print, in order of printing:
    each pvmm_latency phase, and after the first of a mode its cyclictest
    phase, then its timerlat phase, if the boot lists the mode for them."""
    out, seen = [], set()
    order = boot["order"]
    matrix = boot["run"] == "matrix"
    for mode, role in zip(order, roles(order)):
        out.append((len(out), mode, "pvmm_latency", role if matrix else MEASURED))
        if mode in seen:
            continue
        seen.add(mode)
        for probe, extra in (("cyclictest", CROSSCHECK), ("timerlat", TIMERLAT)):
            if mode in boot.get(probe, []):
                out.append((len(out), mode, probe, extra))
    return out
