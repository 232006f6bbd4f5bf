"""The cells of a pvmm benchmark results.json, read tolerantly and formatted.

Shared by report.py, verdicts.py and plots.py. Old or partial files are fine:
whatever is missing reads as None and prints as "–".
"""
import math
import statistics

MODES = ("off", "sync", "chunked", "async")
PROBE = "pvmm_latency"  # tables and goals use this probe; cyclictest cross-checks it
# A timerlat phase's two cells: its thread's latency and its hrtimer IRQ's.
TIMERLAT_THREAD, TIMERLAT_IRQ = "timerlat_thread", "timerlat_irq"
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


def fmt_range(values, f=fmt):
    """'median [min–max]' across repeats."""
    vals = nums(values)
    return f"{f(median(vals))} [{f(min(vals))}–{f(max(vals))}]" if vals else DASH


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


def spread(a, b):
    """How far two figures of the same mode differ, as a factor >= 1."""
    lo, hi = sorted((num(a), num(b)), key=lambda v: -1 if v is None else v)
    return hi / lo if lo and hi is not None else None


class Run:
    """The cells of a results file, indexed for the tables, goals and plots.

    A boot's warm-up phase is never judged; its last `off` phase is not a
    baseline but the other end of the boot's noise floor."""

    def __init__(self, cells, boots=()):
        self.cells = [c for c in cells if isinstance(c, dict) and c.get("role") != "warmup"]
        self.groups = {}   # (vcpus, shape, label, mode, probe) -> repeats
        self.costs = {}    # (vcpus, shape, label) -> per-space host cost, µs
        self.last = {}     # base_key -> the boot's last `off` cell
        self.planned = {}  # (vcpus, shape, label) -> matrix boots planned
        # A point whose boots all failed has no cells but must still show.
        for b in boots or []:
            if isinstance(b, dict) and b.get("run") == "matrix":
                self.planned[point(b)] = self.planned.get(point(b), 0) + 1
                self.note_cost(b)
        for c in self.cells:
            if c.get("role") == "last":
                self.last[base_key(c)] = c
                continue
            key = point(c) + (c.get("mode"), c.get("probe"))
            self.groups.setdefault(key, []).append(c)
            self.note_cost(c)
        self.base = {base_key(c): c for c in self.cells
                     if c.get("mode") == "off" and c.get("role") != "last"}

    def note_cost(self, c):
        if num(get(c, "cost", "per_space_us")) is not None:
            self.costs[point(c)] = get(c, "cost", "per_space_us")

    def points(self):
        """Every matrix point, measured or only planned, sorted."""
        return sorted(set(self.probe_keys(3)) | set(self.planned), key=self.order)

    def order(self, key):
        """Sort by vcpus, shape, per-space cost, mode (off, sync, chunked, async)."""
        vcpus, shape, label, mode = (tuple(key) + (None,) * 4)[:4]
        rank = MODES.index(mode) if mode in MODES else len(MODES)
        return (skey(vcpus), skey(shape), skey(self.costs.get(key[:3])), skey(label),
                rank, skey(mode), *map(skey, key[4:]))

    def probe_keys(self, n, probes=(PROBE,)):
        """Sorted distinct first-n parts of the group keys of probes."""
        return sorted({k[:n] for k in self.groups if k[4] in probes}, key=self.order)

    def repeats(self, pt, mode, probe=PROBE):
        return self.groups.get(pt + (mode, probe), [])

    def median_lat(self, pt, mode, field="max"):
        return median(lat(c, field) for c in self.repeats(pt, mode))

    def ratios(self, group, field):
        """Per boot: field / the field of `off` first in the same boot."""
        return nums(div(lat(c, field), lat(self.base.get(base_key(c)), field)) for c in group)

    def ratio(self, group, field):
        """Median over repeats of field / off's field from the same boot."""
        return median(self.ratios(group, field))

    def floors(self, pt, field):
        """Per boot of a point: the spread of its first and last `off`."""
        return nums(spread(lat(c, field), lat(self.last.get(base_key(c)), field))
                    for c in self.repeats(pt, "off"))
