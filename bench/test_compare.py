# SPDX-License-Identifier: GPL-2.0
"""Tests for bench/compare.py on the synthetic results of test_report.py.

Run from the repository root:
    /usr/bin/python3 -m unittest discover -s bench -p 'test_*.py'
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402
from test_report import results, row  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def claim(text, number):
    """(reference, new run, same) of a claim's row."""
    return tuple(row(text, f"| {number} — ")[2:5])


class CompareTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.ref = os.path.join(self.tmp.name, "ref")
        self.new = os.path.join(self.tmp.name, "new")

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, path, data):
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "results.json"), "w", encoding="utf-8") as f:
            f.write(data if isinstance(data, str) else json.dumps(data))

    def compare(self, ref, new):
        self.write(self.ref, ref)
        self.write(self.new, new)
        return compare.compare(compare.load(self.ref), compare.load(self.new))

    def test_same_run(self):
        text, warnings = self.compare(results(), results())
        self.assertEqual(warnings, [])
        self.assertNotIn("Warning", text)
        for n in ("1a", "1b", "2"):
            self.assertEqual(claim(text, n), ("met", "met", "yes"))
        # async/off per boot 24/20 and 30/25; the floor 21/20 and 26/25
        r = row(text, "| 2 | large | 1ms | async |")
        self.assertEqual(r[5:11], ["2/2", "2/2", "1.20 [1.20–1.20]", "1.20 [1.20–1.20]",
                                   "1.21 [1.21–1.21]", "1.21 [1.21–1.21]"])
        p = row(text, "| 2 | large | 10ms | 1.04")
        self.assertEqual(p[4:6], ["1.04 [1.04–1.05]"] * 2)
        self.assertEqual(p[8:10], ["met", "met"])
        self.assertNotIn("| off |", text)  # off against itself is always 1

    def test_rows_in_order(self):
        text, _ = self.compare(results(), results())
        rows = [ln.split("|")[3:5] for ln in text.splitlines() if ln.startswith("| 2 | large |")
                and len(ln.split("|")) == 12]
        self.assertEqual([[c.strip() for c in r] for r in rows],
                         [[c, m] for c in ("1ms", "10ms") for m in ("sync", "chunked", "async")])

    def test_commits_and_platforms_stated(self):
        new = results()
        new["meta"]["commit"] = "def5678"
        text, _ = self.compare(results(), new)
        self.assertIn("commit abc1234 (dirty)", text)
        self.assertIn("commit def5678 (dirty)", text)
        self.assertEqual(text.count("accel icount (-icount shift=0,sleep=on) · QEMU 7.2.0 · "
                                    "host CPU Test CPU × 4"), 2)

    def test_platform_differs(self):
        changes = {"qemu": ("QEMU emulator version 8.2.2", "QEMU version: 7.2.0 vs 8.2.2"),
                   "accel": ("tcg", "accelerator: icount vs tcg"),
                   "icount": ("shift=auto", "icount setting: shift=0,sleep=on vs shift=auto"),
                   "host_cpu_model": ("Other CPU", "host CPU model: Test CPU vs Other CPU"),
                   "host_cpus": (2, "host CPU count: 4 vs 2")}
        for key, (value, says) in changes.items():
            with self.subTest(key=key):
                new = results()
                new["meta"][key] = value
                text, warnings = self.compare(results(), new)
                self.assertIn("the platforms differ", text)
                self.assertIn(says, text)
                self.assertEqual(len(warnings), 1)
                self.assertIn(says, warnings[0])

    def test_other_settings_are_not_the_platform(self):
        new = results()
        new["meta"].update(preset="full", commit="def5678", started="2025-02-02T00:00:00Z")
        text, warnings = self.compare(results(), new)
        self.assertEqual(warnings, [])
        self.assertIn("Settings that differ: preset.", text)
        new["meta"].update(cell_seconds=4)
        text, warnings = self.compare(results(), new)
        self.assertIn("Settings that differ: preset, seconds per phase.", text)

    def test_unknown_platform(self):
        text, warnings = self.compare({"meta": {}}, {})
        self.assertIn("whether the platforms match cannot be told", text)
        self.assertNotIn("icount setting", text)  # none is right under tcg
        self.assertEqual(len(warnings), 1)

    def test_verdict_changes(self):
        text, _ = self.compare(results(), results(async_factor=5, sync=(1000, 1000)))
        self.assertEqual(claim(text, "1a"), ("met", "missed", "**no**"))
        self.assertEqual(claim(text, "1b"), ("met", "missed", "**no**"))
        self.assertEqual(claim(text, "2"), ("met", "met", "yes"))
        r = row(text, "| 2 | large | 1ms | async |")
        self.assertEqual(r[7:9], ["1.20 [1.20–1.20]", "5.00 [5.00–5.00]"])

    def test_ratios_never_latencies(self):
        # sync's max is 10000 µs at 10ms and the warm-up's 4000: neither may show.
        text, _ = self.compare(results(), results())
        self.assertNotIn("10000", text)
        self.assertNotIn("4000", text)
        self.assertNotIn("µs", text)
        self.assertEqual(row(text, "| 2 | large | 10ms | sync |")[7], "450.00 [400.00–500.00]")

    def test_timerlat_cells_are_skipped(self):
        plain, _ = self.compare(results(), results())
        text, _ = self.compare(results(timerlat=True), results(timerlat=True, lost=3))
        self.assertEqual(text, plain)

    def test_points_of_one_run(self):
        # The new run's 10ms boots failed: the point stays, with – for the new run.
        text, _ = self.compare(results(), results(failed=(3, 4)))
        r = row(text, "| 2 | large | 10ms | async |")
        self.assertEqual(r[5:11], ["2/2", "0/2", "1.20 [1.20–1.20]", "–",
                                   "1.21 [1.21–1.21]", "–"])
        self.assertEqual(row(text, "| 2 | large | 10ms | 1.04")[8:10], ["met", "not measured"])
        self.assertEqual(claim(text, "1a")[1], "not measured (1 of 2 items not measured)")

    def test_sparse_input(self):
        for data in ({}, {"meta": None, "cells": None, "series": None, "boots": None},
                     {"cells": [None, {}, {"mode": "async", "probe": "pvmm_latency"}]},
                     {"meta": [], "cells": 5, "boots": "x", "series": {"name": "credits-off"}}):
            with self.subTest(data=data):
                text, _ = self.compare(data, results())
                ref, new, _ = claim(text, "1a")
                self.assertTrue(ref.startswith("not measured"), ref)
                self.assertEqual(new, "met")

    def run_cli(self, *args):
        return subprocess.run([os.path.join(HERE, "compare.py"), *args], capture_output=True,
                              text=True)

    def test_cli(self):
        self.write(self.ref, results())
        new = results()
        new["meta"]["host_cpus"] = 8
        self.write(self.new, new)
        done = self.run_cli(self.ref, self.new)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("| 1a — async stays at the floor | met | met | yes |", done.stdout)
        self.assertIn("warning: the platforms differ (host CPU count: 4 vs 8)", done.stderr)
        # The results file itself will do, as in the run directory.
        done = self.run_cli(os.path.join(self.ref, "results.json"), self.new)
        self.assertEqual(done.returncode, 0, done.stderr)

    def test_cli_unreadable(self):
        self.write(self.ref, results())
        bad = {"missing": None, "not JSON": "{", "not an object": "[1, 2]",
               "not UTF-8": None}
        for what, data in bad.items():
            with self.subTest(what=what):
                path = os.path.join(self.tmp.name, what.replace(" ", "-"))
                if data is not None:
                    self.write(path, data)
                elif what == "not UTF-8":
                    os.makedirs(path)
                    with open(os.path.join(path, "results.json"), "wb") as f:
                        f.write(b'{"meta": "\xff"}')
                for args in ((self.ref, path), (path, self.ref)):
                    done = self.run_cli(*args)
                    self.assertEqual(done.returncode, 2, what)
                    self.assertIn(os.path.join(path, "results.json"), done.stderr)
                    self.assertEqual(done.stdout, "")


if __name__ == "__main__":
    unittest.main()
