# SPDX-License-Identifier: GPL-2.0
"""Tests for bench/run.py's parsing of what a guest boot prints.

Run: /usr/bin/python3 -m unittest discover -s bench -p 'test_*.py'
"""

import argparse
import csv
import sys
import tempfile
import unittest
from pathlib import Path
from unittest import mock

import plan
import run


def write_series(path, rows):
    names = ["ms", "slot", "destroys", "cpu_us", "live_objects", "sq_pending"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        for r in rows:
            w.writerow([r.get(n, 0) for n in names])


def phase(boot, mode, probe="pvmm_latency"):
    return next(p for p in boot.phases if (p["mode"], p["probe"]) == (mode, probe))


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
        cell = run.cell_of(b, "sync", "pvmm_latency", phase(b, "sync"), {})
        self.assertEqual(cell["lat_us"]["max"], 9)
        self.assertEqual(cell["lat_us"]["avg"], 4.5)
        self.assertEqual(cell["hist"], [[3, 4], [9, 3], [12, 1]])
        self.assertEqual(cell["host_cpu_us_per_teardown"], 10000.0)
        self.assertEqual(cell["doorbells_per_teardown"], 0.5)
        self.assertEqual(cell["phase_rc"], 0)
        self.assertTrue(cell["drained"])

    def test_no_teardowns_no_host_cpu(self):
        b = self.boot
        write_series(b.series, [{"ms": 100, "destroys": 5, "cpu_us": 1000}])
        b.line("PVMM-BENCH-BEGIN mode=off probe=pvmm_latency")
        write_series(b.series, [{"ms": 200, "destroys": 6, "cpu_us": 3000}])
        b.line("PVMM-BENCH-END mode=off probe=pvmm_latency rc=0")
        b.line("# PVMM-BENCH-RESULT mode=off probe=pvmm_latency max=7 destroyed=0 doorbells=0")
        cell = run.cell_of(b, "off", "pvmm_latency", phase(b, "off"), {})
        self.assertIsNone(cell["host_cpu_us_per_teardown"])
        self.assertIsNone(cell["doorbells_per_teardown"])

    def test_errors_series_and_caps(self):
        b = self.boot
        b.line("PVMM-BENCH-CAPS cap_spaces=256 cap_pages=1048576")
        b.line("PVMM-BENCH-BEGIN mode=async probe=cyclictest")
        b.line("PVMM-BENCH-END mode=async probe=cyclictest rc=-10")
        b.line("PVMM-BENCH-ERROR /bin/cyclictest: No such file or directory")
        b.line("PVMM-BENCH-SERIES mode=async t_ms=250 outstanding=3 pgds_pending=2 "
               "spaces_live=9 throttle_events=0 draining=1")
        self.assertEqual(b.caps, {"cap_spaces": 256, "cap_pages": 1048576})
        self.assertEqual(len(b.errors), 2)
        self.assertEqual(b.phases[0]["rc"], -10)
        self.assertEqual(b.guest_series["async"][0]["draining"], 1)
        self.assertEqual(b.guest_series["async"][0]["outstanding"], 3)

    def test_done_rc_is_parsed(self):
        b = self.boot
        b.rc = 0
        self.assertFalse(b.ok())  # no PVMM-BENCH-DONE yet: not finished
        b.line("PVMM-BENCH-DONE rc=0")
        self.assertEqual(b.done_rc, 0)
        self.assertTrue(b.ok())
        b.line("PVMM-BENCH-DONE rc=1")
        self.assertEqual(b.done_rc, 1)
        self.assertFalse(b.ok())

    def test_same_mode_twice_stays_apart(self):
        b = self.boot
        for mx in (9, 5):
            b.line("PVMM-BENCH-BEGIN mode=off probe=pvmm_latency")
            b.line("PVMM-BENCH-END mode=off probe=pvmm_latency rc=0")
            b.line(f"# PVMM-BENCH-RESULT mode=off probe=pvmm_latency max={mx}")
        self.assertEqual([p["result"]["max"] for p in b.phases], [9, 5])

    def test_output_outside_its_phase_is_an_error(self):
        b = self.boot
        b.line("PVMM-BENCH-BEGIN mode=off probe=pvmm_latency")
        b.line("# PVMM-BENCH-RESULT mode=sync probe=pvmm_latency max=1")
        self.assertIsNone(b.phases[0]["result"])
        self.assertEqual(len(b.errors), 1)

    def test_missing_phases_are_recorded(self):
        b = self.boot
        want = plan.expected({"run": "matrix", "order": plan.phase_order(["sync"], 0),
                              "cyclictest": [], "repeat": 0})
        # The guest died in its third phase (sync): sync and the last off are missing.
        for mode in ("off", "off", "sync"):
            b.line(f"PVMM-BENCH-BEGIN mode={mode} probe=pvmm_latency")
            if mode == "off":
                b.line(f"# PVMM-BENCH-RESULT mode={mode} probe=pvmm_latency max=4")
        b.rc = 1
        rec = run.boot_record(3, {"run": "matrix", "repeat": 0, "vcpus": 1, "shape": "large",
                                  "cost": plan.cost_of("base", 1000, "large"),
                                  "order": ["off", "off", "sync", "off"]}, b, want)
        self.assertEqual([(m["mode"], m["role"]) for m in rec["missing"]],
                         [("sync", "measured"), ("off", "last")])
        self.assertEqual((rec["rc"], rec["done_rc"], rec["ok"]), (1, None, False))

    def timerlat_phase(self, mode="off", irq=True):
        b = self.boot
        b.line(f"PVMM-BENCH-BEGIN mode={mode} probe=timerlat")
        b.line(f"PVMM-BENCH-END mode={mode} probe=timerlat rc=0")
        b.line(f"# PVMM-BENCH-RESULT mode={mode} probe=timerlat samples=5000 min=2 avg=3.5 "
               "p99=8 p999=11 max=14 overflow=0 procs=4 ms=1000 forks_per_s=15.5 "
               "destroyed=20 doorbells=10 drained=1")
        b.line(f"PVMM-BENCH-HIST mode={mode} probe=timerlat 3:120 4:800")
        b.line(f"PVMM-BENCH-HIST mode={mode} probe=timerlat 4:1 14:1")
        if irq:
            b.line(f"PVMM-BENCH-RESULT mode={mode} probe=timerlat ctx=irq samples=5001 min=1 "
                   "avg=1.5 p99=3 p999=4 max=6 overflow=0 lost=2")
            b.line(f"PVMM-BENCH-HIST mode={mode} probe=timerlat ctx=irq 1:4000 2:900")
            b.line(f"# PVMM-BENCH-HIST mode={mode} probe=timerlat ctx=irq 2:1 6:1")

    def test_timerlat_phase_gives_two_cells(self):
        b = self.boot
        self.timerlat_phase("sync")
        self.assertEqual(b.errors, [])
        thread, irq = run.cells_of(b, "sync", "timerlat", phase(b, "sync", "timerlat"),
                                   {"role": "timerlat"})
        self.assertEqual((thread["probe"], irq["probe"]), ("timerlat_thread", "timerlat_irq"))
        self.assertEqual((thread["lat_us"]["max"], thread["lat_us"]["p999"]), (14, 11))
        self.assertEqual(thread["hist"], [[3, 120], [4, 801], [14, 1]])
        self.assertEqual((irq["lat_us"]["max"], irq["lat_us"]["samples"]), (6, 5001))
        self.assertEqual(irq["lat_us"]["lost"], 2)
        self.assertEqual(irq["hist"], [[1, 4000], [2, 901], [6, 1]])
        # The IRQ cell repeats the phase's other figures from the thread's result.
        for c in (thread, irq):
            self.assertEqual((c["forks_per_s"], c["doorbells_per_teardown"], c["role"],
                              c["mode"], c["drained"]), (15.5, 0.5, "timerlat", "sync", True))

    def test_timerlat_without_its_irq_result_is_missing(self):
        b = self.boot
        bp = {"run": "matrix", "repeat": 0, "vcpus": 1, "shape": "large",
              "cost": plan.cost_of("base", 1000, "large"), "order": ["off", "off", "off"],
              "cyclictest": [], "timerlat": ["off"]}
        want = plan.expected(bp)
        b.line("PVMM-BENCH-BEGIN mode=off probe=pvmm_latency")
        b.line("# PVMM-BENCH-RESULT mode=off probe=pvmm_latency max=4")
        self.timerlat_phase("off", irq=False)
        for _ in range(2):
            b.line("PVMM-BENCH-BEGIN mode=off probe=pvmm_latency")
            b.line("# PVMM-BENCH-RESULT mode=off probe=pvmm_latency max=4")
        rec = run.boot_record(0, bp, b, want)
        self.assertEqual([(m["mode"], m["probe"], m["role"]) for m in rec["missing"]],
                         [("off", "timerlat", "timerlat")])
        # What it did deliver is still a cell: the thread's.
        cells = run.cells_of(b, "off", "timerlat", b.phases[1], {})
        self.assertEqual([c["probe"] for c in cells], ["timerlat_thread"])

    def test_irq_output_outside_its_phase_is_an_error(self):
        b = self.boot
        b.line("PVMM-BENCH-BEGIN mode=off probe=pvmm_latency")
        b.line("PVMM-BENCH-RESULT mode=off probe=timerlat ctx=irq max=6")
        b.line("PVMM-BENCH-HIST mode=off probe=timerlat ctx=irq 1:4")
        b.line("PVMM-BENCH-RESULT mode=off probe=pvmm_latency ctx=irq max=6")
        self.assertEqual(len(b.errors), 3)
        self.assertEqual((b.phases[0]["result"], b.phases[0]["irq"]), (None, None))
        self.assertEqual((b.phases[0]["hist"], b.phases[0]["irq_hist"]), ({}, {}))

    def test_boot_env_names_the_timerlat_modes(self):
        p = plan.PRESETS["quick"]
        envs = [run.boot_env(p, b)["PVMM_BENCH_TIMERLAT"] for b in plan.plan(p)]
        self.assertEqual(envs[0], "off,sync,async")
        self.assertEqual(envs[-1], "none")  # a credits boot

    def test_placement_is_recorded_and_passed(self):
        args = argparse.Namespace(vcpu_cpus="1", worker_cpus="0", worker_sched="idle",
                                  worker_nice=19, work="process")
        self.assertEqual(run.placement(args), {"vcpu_cpus": "1", "worker_cpus": "0",
                                               "worker_sched": "idle", "worker_nice": 19})
        self.assertEqual(run.worker_args(args), "--work process --worker-sched idle --worker-nice 19")

    def test_overrides_reach_the_guest(self):
        argv = ["run.py", "--build", "b", "--initrd", "i", "--out", "o", "--preset", "quick"]
        with mock.patch.object(sys, "argv", argv + ["--seconds", "4", "--repeats", "2"]):
            args = run.options()
        self.assertEqual((args.plan["seconds"], args.plan["repeats"]), (4, 2))
        boots = plan.plan(args.plan)
        self.assertEqual(len(boots), 2 * 2 + 2)
        self.assertEqual(run.boot_env(args.plan, boots[0])["PVMM_BENCH_SECONDS"], 4)
        for bad in (["--seconds", "0"], ["--repeats", "0"]):
            with self.subTest(bad=bad), mock.patch.object(sys, "argv", argv + bad), \
                    mock.patch("sys.stderr"), self.assertRaises(SystemExit):
                run.options()

    def test_boot_env_names_the_order(self):
        p = plan.PRESETS["quick"]
        b = plan.plan(p)[1]
        env = run.boot_env(p, b)
        self.assertEqual(env["PVMM_BENCH_MODES"], ",".join(b["order"]))
        self.assertEqual(env["PVMM_BENCH_WARMUP_S"], 0)


if __name__ == "__main__":
    unittest.main()
