"""Tests for bench/report.py on small synthetic results.json files.

Run from the repository root:
    /usr/bin/python3 -m unittest discover -s bench -p 'test_*.py'
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
COSTS = [("1ms", 1000.0), ("10ms", 10000.0)]
PLOTS = ["max-vs-cost", "hist-2cpu-large", "outstanding"]


def lat(mx):
    return {"samples": 1000, "min": 3, "avg": 5.5, "p99": mx // 2, "p999": mx - 1,
            "max": mx, "overflow": 0}


def cell(boot, repeat, label, per_space, mode, probe, mx, role="measured"):
    return {"boot": boot, "repeat": repeat, "vcpus": 2, "shape": "large",
            "cost": {"label": label, "kind": "base", "base_us": int(per_space),
                     "per_mib_us": 0, "per_space_us": per_space},
            "mode": mode, "probe": probe, "role": role, "lat_us": lat(mx),
            "hist": [[3, 500], [4, 400], [mx, 1]],
            "forks_per_s": 1200.0, "teardowns": 5000, "doorbells_per_teardown": 0.25,
            "peak_outstanding": 40, "throttle_events": 3, "throttle_wait_us": 1500,
            "host_cpu_us_per_teardown": per_space}


# Per repeat and mode: the timerlat phase's (IRQ max, thread max).  Same-boot
# ratios to off: sync 2 and 1 (IRQ), 3 and 1 (thread); across boots they differ.
TIMERLAT = [{"off": (10, 30), "sync": (20, 90), "async": (10, 30), "chunked": (5, 5)},
            {"off": (40, 60), "sync": (40, 60), "async": (40, 60)}]


def timerlat_cells(boot, repeat, label, per_space, mode, lost=0):
    """A timerlat phase's two cells, as run.py writes them."""
    irq_max, thread_max = TIMERLAT[repeat][mode]
    thread = cell(boot, repeat, label, per_space, mode, "timerlat_thread", thread_max,
                  "timerlat")
    irq = cell(boot, repeat, label, per_space, mode, "timerlat_irq", irq_max, "timerlat")
    irq["lat_us"]["lost"] = lost
    return [thread, irq]


def results(async_factor=1.2, sync=(1000, 10000), default_peak=60, last_factor=1.05,
            failed=(), chunked=200, timerlat=False, lost=0):
    """2 costs × 2 repeats on 2 vCPUs, cyclictest too in repeat 0.

    Each boot: a warm-up `off` (max 4000, never judged), `off` first (max 20
    in repeat 0, 25 in repeat 1), sync, chunked (max chunked), async (async_factor × off)
    and `off` last (last_factor × off first). sync's max is sync[cost].
    Boots in failed ran nothing: their record says so. With timerlat, every
    boot has timerlat phases of off, sync and async (TIMERLAT), the IRQ cell of
    async in the last boot with lost samples lost.
    """
    cells, boots, boot = [], [], 0
    for ci, (label, per_space) in enumerate(COSTS):
        for repeat in (0, 1):
            boot += 1
            boots.append({"boot": boot, "run": "matrix", "repeat": repeat, "vcpus": 2,
                          "shape": "large", "cost": {"label": label, "per_space_us": per_space},
                          "rc": 0, "done_rc": 0, "ok": True, "errors": [], "missing": []})
            if boot in failed:
                boots[-1].update(rc=124, done_rc=None, ok=False, errors=["timed out"],
                                 missing=[{"mode": "off", "probe": "pvmm_latency",
                                           "role": "first"}])
                continue
            off = 20 + 5 * repeat
            cells.append(cell(boot, repeat, label, per_space, "off", "pvmm_latency", 4000,
                              "warmup"))
            maxes = {"off": off, "async": int(off * async_factor), "sync": sync[ci],
                     "chunked": chunked}
            for mode, mx in maxes.items():
                cells.append(cell(boot, repeat, label, per_space, mode, "pvmm_latency", mx,
                                  "first" if mode == "off" else "measured"))
                if repeat == 0:
                    cells.append(cell(boot, repeat, label, per_space, mode, "cyclictest", mx * 2,
                                      "crosscheck"))
                if timerlat and mode != "chunked":
                    cells += timerlat_cells(boot, repeat, label, per_space, mode,
                                            lost if (boot, mode) == (4, "async") else 0)
            cells.append(cell(boot, repeat, label, per_space, "off", "pvmm_latency",
                              int(off * last_factor), "last"))
    guest_off = [{"t_ms": t * 100, "outstanding": 10 * t, "pgds_pending": t, "spaces_live": 5,
                  "throttle_events": 0} for t in range(30)]
    guest_def = [{"t_ms": t * 100, "outstanding": min(default_peak, 10 * t), "pgds_pending": 0,
                  "spaces_live": 5, "throttle_events": t} for t in range(30)]
    host = [{"t_ms": t * 100, "live_objects": 8 * t, "destroys": t, "sq_pending": 0}
            for t in range(30)]
    series = [{"name": "credits-off", "caps": {"cap_spaces": 0, "cap_pages": 0},
               "host_worker": "SCHED_IDLE", "guest": guest_off, "host": host, "lat_us": lat(30)},
              {"name": "credits-default", "caps": {"cap_spaces": 64, "cap_pages": 65536},
               "host_worker": "SCHED_IDLE", "guest": guest_def, "host": host, "lat_us": lat(28)}]
    meta = {"commit": "abc1234", "dirty": True, "command": "make bench PRESET=test",
            "preset": "test", "kernel": "6.12.0-pvmm", "qemu": "7.2.0", "accel": "icount",
            "icount": "shift=0,sleep=on", "credits_accel": "tcg",
            "placement": {"vcpu_cpus": "1", "worker_cpus": "0", "worker_sched": "idle",
                          "worker_nice": 19},
            "host_cpu_model": "Test CPU", "host_cpus": 4, "started": "2025-01-01T00:00:00Z",
            "elapsed_s": 123.4, "cell_seconds": 5.0, "repeats": 2, "interval_us": 1000}
    return {"schema": 2, "meta": meta, "boots": boots, "cells": cells, "series": series}


def row(text, prefix):
    return [x.strip() for x in next(ln for ln in text.splitlines()
                                    if ln.startswith(prefix)).split("|")]


def section(text, title):
    """A report section from its heading to the next one."""
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end + 1]


def verdict(text, claim):
    """The verdict word on a claim's heading line."""
    m = re.search(rf"^### {re.escape(claim)} .*: \*\*([a-z ]+)\*\*", text, re.M)
    return m.group(1) if m else None


class ReportTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def run_report(self, data, **kw):
        with open(os.path.join(self.dir, "results.json"), "w") as f:
            json.dump(data, f)
        with open(report.build_report(self.dir, **kw), encoding="utf-8") as f:
            return f.read()

    def test_header_and_table_rows(self):
        text = self.run_report(results())
        self.assertIn("make bench PRESET=test", text)
        self.assertIn("abc1234 (dirty)", text)
        self.assertIn("accel icount (-icount shift=0,sleep=on) · QEMU 7.2.0 · guest kernel "
                      "6.12.0-pvmm · host CPU Test CPU × 4", text)
        self.assertIn("vCPUs on CPUs 1, host worker on CPUs 0 at idle, nice 19", text)
        self.assertNotIn("overridden", text)
        rows = [ln for ln in text.splitlines() if ln.startswith("| 2 | large |")]
        modes = [ln.split("|")[4].strip() for ln in rows[:8]]
        self.assertEqual(modes, ["off", "sync", "chunked", "async"] * 2)  # cost, then mode order
        self.assertIn("| 2 | large | 10ms | sync | 2 | 10000 [10000–10000] | ", text)

    def test_header_names_overrides(self):
        data = results()
        data["meta"]["overrides"] = {"seconds": 4}
        self.assertIn("preset test (overridden: --seconds 4)", self.run_report(data))

    def test_ratio_against_same_boot_off(self):
        # async/off per boot: 24/20 and 30/25, both 1.20; off first, not last, not warm-up
        text = self.run_report(results())
        r = row(text, "| 2 | large | 1ms | async |")
        self.assertEqual(r[7], "1.20 [1.20–1.20]")
        self.assertEqual(row(text, "| 2 | large | 1ms | off |")[6], "22.5 [20–25]")
        self.assertEqual(r[18], "1.50")  # throttle wait in ms

    def test_floor_per_point(self):
        # off last = 1.05 × off first: 21/20 and 26/25
        text = self.run_report(results())
        self.assertEqual(row(text, "| 2 | large | 10ms | async |")[10], "1.04 [1.04–1.05]")
        self.assertIn("floor", text)

    def test_crosscheck(self):
        text = self.run_report(results())
        self.assertIn("| 2 | large | 1ms | off | 0 | 20 | 40 | 0.50 |", text)
        self.assertNotIn("| 2 | large | 1ms | off | 1 |", text)  # repeat 1 has no cyclictest

    def test_goals_met(self):
        text = self.run_report(results())
        for claim in ("Claim 1a", "Claim 1b", "Claim 2"):
            self.assertEqual(verdict(text, claim), "met", claim)

    def test_goals_missed(self):
        text = self.run_report(results(async_factor=5, sync=(1000, 1000), default_peak=100))
        for claim in ("Claim 1a", "Claim 1b", "Claim 2"):
            self.assertEqual(verdict(text, claim), "missed", claim)
        self.assertIn("| 5.00 [5.00–5.00] |", text)  # the async/off ratio behind the miss

    def test_below_the_floor_is_never_met(self):
        # No mode's ratio exceeds the floor (off last 60 × off first): nothing to see.
        text = self.run_report(results(async_factor=1.2, sync=(25, 30), last_factor=60))
        self.assertEqual(verdict(text, "Claim 1a"), "below the floor")
        self.assertEqual(verdict(text, "Claim 1b"), "below the floor")
        # One point above the floor, one below: met, and the other point is named.
        text = self.run_report(results(async_factor=1, sync=(21, 10000), chunked=21))
        self.assertEqual(verdict(text, "Claim 1a"), "met")
        self.assertIn("1 of 2 items below the floor", text)
        self.assertIn("| below the floor |", text)

    def test_floor_widens_the_bound(self):
        self.assertEqual(verdict(self.run_report(results(async_factor=2)), "Claim 1a"),
                         "missed")
        text = self.run_report(results(async_factor=2, last_factor=3))
        self.assertEqual(verdict(text, "Claim 1a"), "met")

    def test_failed_boot_and_missing_point(self):
        # Boot 2 failed: its point still has boot 1, but shows 1/2 boots.
        text = self.run_report(results(failed=(2,)))
        self.assertIn("| 2 | matrix | 2 | 1ms | 1 | 124 | – | off/pvmm_latency (first) | "
                      "timed out |", text)
        self.assertIn("| 2 | large | 1ms | 1/2 |", text)
        # Both boots of 10ms failed: the point is missing and the claims not met.
        text = self.run_report(results(failed=(3, 4)))
        self.assertIn("| 2 | large | 10ms | 0/2 |", text)
        self.assertEqual(verdict(text, "Claim 1a"), "not measured")
        self.assertEqual(verdict(text, "Claim 1b"), "not measured")

    def test_warmup_never_counts(self):
        text = self.run_report(results())
        self.assertNotIn("4000", text)

    def test_thresholds_are_options(self):
        text = self.run_report(results(async_factor=1.2), flat=1.1)
        self.assertEqual(verdict(text, "Claim 1a"), "missed")

    def test_plots_in_both_formats(self):
        text = self.run_report(results())
        for name in PLOTS:
            for ext in ("png", "svg"):
                path = os.path.join(self.dir, f"{name}.{ext}")
                self.assertTrue(os.path.getsize(path) > 0, path)
            self.assertIn(f"![{name}]({name}.png)", text)

    def test_timerlat_same_boot_ratio(self):
        tl = section(self.run_report(results(timerlat=True)), "Interrupt latency (timerlat)")
        self.assertIn("reported, not judged", tl)
        # IRQ max 20/10 and 40/40, thread 90/30 and 60/60: per boot, against its own off.
        r = row(tl, "| 2 | large | 1ms | sync |")
        self.assertEqual(r[5:16], ["2", "30 [20–40]", "29 [19–39]", "75 [60–90]",
                                   "74 [59–89]", "1000", "1000", "0", "1.50 [1.00–2.00]",
                                   "2.00 [1.00–3.00]", ""])
        self.assertEqual(row(tl, "| 2 | large | 10ms | off |")[13:15], ["–", "–"])
        self.assertNotIn("Samples lost", tl)

    def test_timerlat_single_repeat_has_no_range(self):
        data = results(timerlat=True)
        data["cells"] = [c for c in data["cells"] if c["repeat"] == 0]
        tl = section(self.run_report(data), "Interrupt latency (timerlat)")
        self.assertEqual(row(tl, "| 2 | large | 1ms | sync |")[5:15],
                         ["1", "20", "19", "90", "89", "1000", "1000", "0", "2.00", "3.00"])

    def test_timerlat_lost_samples_show(self):
        text = self.run_report(results(timerlat=True, lost=7))
        tl = section(text, "Interrupt latency (timerlat)")
        self.assertEqual(row(tl, "| 2 | large | 10ms | async |")[12], "**7**")
        self.assertIn("**Samples lost**", tl)
        self.assertIn("2 vCPUs, large, 10ms, async: 7", tl)
        self.assertIn("7 timerlat samples lost", section(text, "Problems"))

    def test_no_timerlat_phases(self):
        text = self.run_report(results())
        self.assertIn("No timerlat phases in this run.",
                      section(text, "Interrupt latency (timerlat)"))
        self.assertIn("timerlat-*: skipped", text)

    def test_timerlat_never_enters_tables_or_verdicts(self):
        # Everything but the timerlat section and the plots' list is the same
        # with and without timerlat cells: main table, cross-check, goals, floors.
        def rest(text):
            return text.replace(section(text, "Interrupt latency (timerlat)"), "").replace(
                section(text, "Plots"), "")
        for kw in ({}, {"async_factor": 5, "sync": (1000, 1000)}):
            with self.subTest(**kw):
                data = results(timerlat=True, **kw)
                # And a point only timerlat measured: it must not become a point.
                for c in timerlat_cells(9, 0, "1ms", 1000.0, "chunked"):
                    data["cells"].append(dict(c, vcpus=1))
                self.assertEqual(rest(self.run_report(data)),
                                 rest(self.run_report(results(**kw))))

    def test_timerlat_plot(self):
        text = self.run_report(results(timerlat=True))
        for ext in ("png", "svg"):
            path = os.path.join(self.dir, f"timerlat-2cpu-large.{ext}")
            self.assertTrue(os.path.getsize(path) > 0, path)
        self.assertIn("![timerlat-2cpu-large](timerlat-2cpu-large.png)", text)
        # The highest cost, the first repeat: the title says which.
        data = results(timerlat=True)
        run = report.Run(data["cells"], data["boots"])
        with mock.patch.object(report.plots, "save") as save:
            report.plots.plot_timerlat(run, {}, self.dir, (2, "large"))
        report.plots.plt.close("all")
        self.assertIn("host cost 10ms, repeat 1", save.call_args.args[3])

    def test_missing_and_null_fields(self):
        sparse = [
            {},
            {"schema": 1, "meta": None, "cells": [], "series": []},
            {"cells": None, "series": None},
            {"meta": {"dirty": None}, "cells": [
                None, {}, {"mode": "async", "probe": "pvmm_latency", "lat_us": None, "cost": None,
                           "hist": None},
                {"vcpus": 1, "shape": "small", "mode": "off", "probe": "pvmm_latency",
                 "cost": {"label": "0", "per_space_us": 0}, "lat_us": {"max": 0},
                 "hist": [[1, None], [], "x", [2, 3]], "forks_per_s": None},
                {"vcpus": 1, "shape": "small", "mode": "sync", "probe": "cyclictest",
                 "cost": {"label": "0", "per_space_us": 0}, "lat_us": {"max": None}},
            ], "series": [None, {"name": "credits-off", "guest": None, "host": [{}]},
                          {"name": "credits-default", "caps": None,
                           "guest": [{"t_ms": 0, "outstanding": None}]}]},
        ]
        for data in sparse:
            with self.subTest(data=data):
                text = self.run_report(data)
                self.assertIn("# pvmm benchmark report", text)
                for claim in ("Claim 1a", "Claim 1b", "Claim 2"):
                    self.assertEqual(verdict(text, claim), "not measured", claim)

    def test_empty_lists_skip_plots(self):
        text = self.run_report({"schema": 1, "meta": {}, "cells": [], "series": []})
        self.assertIn("max-vs-cost: skipped", text)
        self.assertIn("outstanding: skipped", text)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "max-vs-cost.png")))

    def test_cli(self):
        with open(os.path.join(self.dir, "results.json"), "w") as f:
            json.dump(results(), f)
        script = os.path.join(HERE, "report.py")
        done = subprocess.run([script, self.dir, "--flat-ratio", "3"], capture_output=True)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertTrue(os.path.exists(os.path.join(self.dir, "report.md")))
        with tempfile.TemporaryDirectory() as empty:
            done = subprocess.run([script, empty], capture_output=True, text=True)
        self.assertEqual(done.returncode, 1)
        self.assertIn("results.json", done.stderr)


if __name__ == "__main__":
    unittest.main()
