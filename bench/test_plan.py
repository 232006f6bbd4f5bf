# SPDX-License-Identifier: GPL-2.0
"""Tests for bench/plan.py: presets, phase order and rotation.

Run: /usr/bin/python3 -m unittest discover -s bench -p 'test_*.py'
"""
import unittest

import plan


class PhaseOrder(unittest.TestCase):
    def test_off_first_and_last_after_a_warmup(self):
        for rot in range(4):
            order = plan.phase_order(["sync", "chunked", "async"], rot)
            self.assertEqual(order[:2], ["off", "off"])
            self.assertEqual(order[-1], "off")
            self.assertEqual(plan.roles(order)[0], plan.WARMUP)
            self.assertEqual(plan.roles(order)[1], plan.FIRST)
            self.assertEqual(plan.roles(order)[-1], plan.LAST)
            self.assertEqual(sorted(order[2:-1]), ["async", "chunked", "sync"])

    def test_rotation_from_boot_to_boot(self):
        modes = ["sync", "chunked", "async"]
        firsts = [plan.phase_order(modes, r)[2] for r in range(3)]
        self.assertEqual(firsts, ["sync", "chunked", "async"])
        self.assertEqual(plan.phase_order(modes, 3), plan.phase_order(modes, 0))

    def test_plan_rotates_repeats_of_a_point(self):
        p = plan.PRESETS["quick"]
        matrix = [b for b in plan.plan(p) if b["run"] == "matrix"]
        for cost in {b["cost"]["label"] for b in matrix}:
            orders = [tuple(b["order"]) for b in matrix if b["cost"]["label"] == cost]
            self.assertEqual(len(orders), p["repeats"])
            self.assertEqual(len(set(orders)), len(p["modes"]))

    def test_plan_counts(self):
        for name, p in plan.PRESETS.items():
            n = p["repeats"] * len(p["vcpus"]) * len(p["shapes"]) * len(p["costs"])
            self.assertEqual(len(plan.plan(p)), n + 2, name)

    def test_statistics_and_costs_of_presets(self):
        self.assertGreaterEqual(plan.PRESETS["quick"]["repeats"], 5)
        self.assertGreaterEqual(plan.PRESETS["full"]["repeats"], 5)
        full = sorted(us for kind, us in plan.PRESETS["full"]["costs"] if kind == "base")
        self.assertEqual(full, [100, 1000, 10000, 50000])
        self.assertGreaterEqual(len(plan.PRESETS["quick"]["costs"]), 2)

    def test_overrides_of_a_preset(self):
        p = plan.preset("full", seconds=3, repeats=2)
        self.assertEqual((p["seconds"], p["repeats"]), (3, 2))
        self.assertEqual(p["costs"], plan.PRESETS["full"]["costs"])
        self.assertEqual(plan.PRESETS["full"]["seconds"], 1)  # the preset is untouched
        self.assertEqual(len(plan.plan(p)), 2 * 2 * 4 + 2)
        self.assertEqual(plan.preset("quick"), plan.PRESETS["quick"])
        for bad in ({"seconds": 0}, {"seconds": 3601}, {"repeats": 0}):
            with self.subTest(**bad), self.assertRaises(ValueError):
                plan.preset("quick", **bad)

    def test_expected_phases(self):
        b = {"run": "matrix", "order": plan.phase_order(["sync", "async"], 1),
             "cyclictest": ["off", "async"]}
        got = [(mode, probe, role) for _, mode, probe, role in plan.expected(b)]
        self.assertEqual(got, [
            ("off", "pvmm_latency", "warmup"), ("off", "cyclictest", "crosscheck"),
            ("off", "pvmm_latency", "first"), ("async", "pvmm_latency", "measured"),
            ("async", "cyclictest", "crosscheck"), ("sync", "pvmm_latency", "measured"),
            ("off", "pvmm_latency", "last")])
        self.assertEqual([s for s, *_ in plan.expected(b)], list(range(7)))

    def test_timerlat_after_cyclictest_once_per_mode(self):
        b = {"run": "matrix", "order": plan.phase_order(["sync", "async"], 1),
             "cyclictest": ["off", "async"], "timerlat": ["off", "sync"]}
        got = [(mode, probe, role) for _, mode, probe, role in plan.expected(b)]
        self.assertEqual(got, [
            ("off", "pvmm_latency", "warmup"), ("off", "cyclictest", "crosscheck"),
            ("off", "timerlat", "timerlat"), ("off", "pvmm_latency", "first"),
            ("async", "pvmm_latency", "measured"), ("async", "cyclictest", "crosscheck"),
            ("sync", "pvmm_latency", "measured"), ("sync", "timerlat", "timerlat"),
            ("off", "pvmm_latency", "last")])
        self.assertEqual([s for s, *_ in plan.expected(b)], list(range(9)))

    def test_timerlat_repeats(self):
        # smoke: every repeat; quick and full: the first only (their time budgets).
        want = {"smoke": plan.PRESETS["smoke"]["repeats"], "quick": 1, "full": 1}
        for name, p in plan.PRESETS.items():
            self.assertEqual(p["timerlat"], ["off", "sync", "async"], name)
            for b in plan.plan(p):
                on = b["run"] == "matrix" and b["repeat"] < want[name]
                self.assertEqual(b["timerlat"], p["timerlat"] if on else [], (name, b))
                got = [m for _, m, probe, _ in plan.expected(b) if probe == "timerlat"]
                # Once per mode, in the order the boot runs them (rotated).
                self.assertEqual(sorted(got), ["async", "off", "sync"] if on else [], name)

    def test_costs(self):
        c = plan.cost_of("mib", 200, "large")
        self.assertEqual(c["per_space_us"], 200.0 * plan.LARGE_MIB)
        self.assertEqual(plan.cost_of("base", 50000, "small")["label"], "base 50 ms")


if __name__ == "__main__":
    unittest.main()
