# SPDX-License-Identifier: GPL-2.0
"""Tests for scripts/demo-report.py's latency table.

Run: /usr/bin/python3 -m unittest discover -s scripts/tests
"""
import contextlib
import importlib.util
import io
import os
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SPEC = importlib.util.spec_from_file_location("demo_report",
                                              os.path.join(HERE, "..", "demo-report.py"))
demo = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(demo)


def result(mode, mx):
    return (f"\r# PVMM-BENCH-RESULT mode={mode} probe=pvmm_latency samples=9 min=2 "
            f"avg=2.5 p99=3 p999={mx - 1} max={mx} forks_per_s=15.0")


class LatencyTable(unittest.TestCase):
    def test_warmup_left_out(self):
        console = ["PVMM-BENCH-BEGIN mode=off probe=pvmm_latency", result("off", 4000),
                   result("off", 5), "noise", result("sync", 900), result("async", 6)]
        rows = demo.latency(console)
        self.assertEqual([(r["mode"], r["max"]) for r in rows],
                         [("off", "5"), ("sync", "900"), ("async", "6")])
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            demo.latency_table(rows, "2.0 ms")
        self.assertIn("host cost 2.0 ms", out.getvalue())
        self.assertIn("  sync          900      899", out.getvalue())
        self.assertNotIn("4000", out.getvalue())

    def test_no_phases(self):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            demo.latency_table(demo.latency(["PVMM-GUEST-END"]), "2.0 ms")
        self.assertIn("no latency phases finished", out.getvalue())


if __name__ == "__main__":
    unittest.main()
