# SPDX-License-Identifier: GPL-2.0
"""Tests for bench/run.py's parsing of what a guest boot prints.

Run: /usr/bin/python3 -m unittest discover -s bench -p 'test_*.py'
"""

import argparse
import csv
import tempfile
import unittest
from pathlib import Path

import run


def write_series(path, rows):
    names = ["ms", "slot", "destroys", "cpu_us", "live_objects", "sq_pending"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        for r in rows:
            w.writerow([r.get(n, 0) for n in names])


class BootParsing(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        out = Path(self.dir.name)
        args = argparse.Namespace(out=out, timeout=1, kernel=None, initrd=None)
        self.boot = run.Boot(args, 0, 2, "", {}, out / "console.log")
        run.SERIES_MS = 0    # no waiting for the host's next row in tests

    def tearDown(self):
        self.dir.cleanup()

    def test_phase_with_host_cpu(self):
        b = self.boot
        write_series(b.series, [{"ms": 100, "destroys": 5, "cpu_us": 1000}])
        b.line("PVMM-BENCH-BEGIN mode=sync probe=pvmm_latency")
        write_series(b.series, [{"ms": 100, "destroys": 5, "cpu_us": 1000},
                                {"ms": 200, "destroys": 9, "cpu_us": 41000}])
        b.line("PVMM-BENCH-END mode=sync probe=pvmm_latency rc=0")
        b.line("\r# PVMM-BENCH-RESULT mode=sync probe=pvmm_latency samples=10 min=3 "
               "avg=4.5 p99=9 p999=9 max=9 overflow=0 destroyed=4 doorbells=2 "
               "forks_per_s=1.5 drained=1")
        b.line("PVMM-BENCH-HIST mode=sync probe=pvmm_latency 3:4 9:1")
        b.line("PVMM-BENCH-HIST mode=sync probe=pvmm_latency 9:2 12:1")
        self.assertEqual(b.errors, [])
        cell = run.cell_of(b, "sync", "pvmm_latency", b.phases[("sync", "pvmm_latency")], {})
        self.assertEqual(cell["lat_us"]["max"], 9)
        self.assertEqual(cell["lat_us"]["avg"], 4.5)
        self.assertEqual(cell["hist"], [[3, 4], [9, 3], [12, 1]])
        self.assertEqual(cell["host_cpu_us_per_teardown"], 10000.0)
        self.assertEqual(cell["doorbells_per_teardown"], 0.5)
        self.assertTrue(cell["drained"])

    def test_no_teardowns_no_host_cpu(self):
        b = self.boot
        write_series(b.series, [{"ms": 100, "destroys": 5, "cpu_us": 1000}])
        b.line("PVMM-BENCH-BEGIN mode=off probe=pvmm_latency")
        write_series(b.series, [{"ms": 200, "destroys": 6, "cpu_us": 3000}])
        b.line("PVMM-BENCH-END mode=off probe=pvmm_latency rc=0")
        b.line("# PVMM-BENCH-RESULT mode=off probe=pvmm_latency max=7 destroyed=0 doorbells=0")
        cell = run.cell_of(b, "off", "pvmm_latency", b.phases[("off", "pvmm_latency")], {})
        self.assertIsNone(cell["host_cpu_us_per_teardown"])
        self.assertIsNone(cell["doorbells_per_teardown"])

    def test_errors_series_and_caps(self):
        b = self.boot
        b.line("PVMM-BENCH-CAPS cap_spaces=256 cap_pages=1048576")
        b.line("PVMM-BENCH-END mode=async probe=cyclictest rc=-10")
        b.line("PVMM-BENCH-ERROR /bin/cyclictest: No such file or directory")
        b.line("PVMM-BENCH-SERIES mode=async t_ms=250 outstanding=3 pgds_pending=2 "
               "spaces_live=9 throttle_events=0 draining=1")
        self.assertEqual(b.caps, {"cap_spaces": 256, "cap_pages": 1048576})
        self.assertEqual(len(b.errors), 2)
        self.assertEqual(b.guest_series["async"][0]["draining"], 1)
        self.assertEqual(b.guest_series["async"][0]["outstanding"], 3)

    def test_costs(self):
        c = run.cost_of("mib", 200, "large")
        self.assertEqual(c["per_space_us"], 200.0 * run.LARGE_MIB)
        self.assertEqual(run.cost_of("base", 50000, "small")["label"], "base 50 ms")

    def test_plan_counts(self):
        p = run.PRESETS["quick"]
        n = p["repeats"] * len(p["vcpus"]) * len(p["shapes"]) * len(p["costs"])
        self.assertEqual(len(run.plan(p)), n + 2)


if __name__ == "__main__":
    unittest.main()
