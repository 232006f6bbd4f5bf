"""scripts/check-console.py on made-up consoles: a whole one passes, and
each way a console can lose or hide something fails it."""

import importlib.util
import pathlib
import unittest

_path = pathlib.Path(__file__).resolve().parents[1] / "check-console.py"
_spec = importlib.util.spec_from_file_location("check_console", _path)
cc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cc)


def program(name, results, rc=0, totals=True):
    out = [f"PVMM-TEST-BEGIN {name}", "TAP version 13", f"1..{len(results)}"]
    out += results
    if totals:
        skips = sum("# SKIP" in r for r in results)
        fails = sum(r.startswith("not ok") for r in results)
        out.append(
            f"# Totals: pass:{len(results) - skips - fails} fail:{fails} xfail:0 "
            f"xpass:0 skip:{skips} error:0"
        )
    out.append(f"PVMM-TEST-END {name} rc={rc}")
    return out


def console(programs=None, plan=None, dmesg=("pvmm: bound",), taint=0, extra=()):
    programs = programs if programs is not None else [
        program("pvmm_a", ["ok 1 a.one", "ok 2 a.two"]),
        program("pvmm_b", ["ok 1 b.one"]),
    ]
    plan = plan if plan is not None else ["pvmm_a", "pvmm_b"]
    lines = ["Linux version 6.12", "PVMM-GUEST-BEGIN job=check", "PVMM-PLAN " + " ".join(plan)]
    for p in programs:
        lines += p
    lines += list(extra)
    if dmesg is not None:
        lines += ["PVMM-DMESG-BEGIN", *dmesg, "PVMM-DMESG-END"]
    if taint is not None:
        lines.append(f"PVMM-TAINT {taint}")
    lines.append("PVMM-GUEST-END")
    return lines


def failures(lines, expect="pass", **kw):
    return [x for x in cc.check(lines, "g", expect, **kw) if x.startswith("not ok")]


class Whole(unittest.TestCase):
    def test_whole_console_passes(self):
        out = cc.check(console(), "g", "pass")
        self.assertEqual([x for x in out if not x.startswith("ok - ")], [])
        self.assertIn("ok - guest g: pvmm_a: 1 a.one", out)

    def test_allowed_skip_is_a_skip(self):
        c = console([program("pvmm_a", ["ok 1 a.mode # SKIP pvmm is a module"])], ["pvmm_a"])
        out = cc.check(c, "g", "pass")
        self.assertIn("# skip - guest g: pvmm_a: 1 a.mode # SKIP pvmm is a module", out)
        self.assertEqual(failures(c), [])

    def test_skip_guest(self):
        progs = [["PVMM-TEST-BEGIN pvmm_a", "1..0 # SKIP no device", "PVMM-TEST-END pvmm_a rc=4"]]
        self.assertEqual(failures(console(progs, ["pvmm_a"]), "skip"), [])
        progs[0][-1] = "PVMM-TEST-END pvmm_a rc=0"
        self.assertTrue(failures(console(progs, ["pvmm_a"]), "skip"))


class Lost(unittest.TestCase):
    def test_lost_result_line(self):
        c = console()
        c.remove("ok 2 a.two")
        self.assertTrue(any("TAP output whole" in x for x in failures(c)))

    def test_result_split_by_a_kernel_message(self):
        c = console()
        i = c.index("ok 2 a.two")
        # A kernel message without its newline yet, then the result.
        c[i] = "pvmm: host is slowok 2 a.two"
        self.assertTrue(any("TAP output whole" in x for x in failures(c)))

    def test_lost_totals(self):
        c = console([program("pvmm_a", ["ok 1 a.one"], totals=False)], ["pvmm_a"])
        self.assertTrue(failures(c))

    def test_planned_program_missing(self):
        c = console(plan=["pvmm_a", "pvmm_b", "pvmm_c"])
        self.assertTrue(any("every planned program" in x for x in failures(c)))

    def test_programs_out_of_order_or_twice(self):
        a = program("pvmm_a", ["ok 1 a.one"])
        self.assertTrue(failures(console([a, a], ["pvmm_a"])))
        b = program("pvmm_b", ["ok 1 b.one"])
        self.assertTrue(failures(console([b, a], ["pvmm_a", "pvmm_b"])))

    def test_plan_split_by_a_kernel_message(self):
        # A module load's message once landed in the middle of the line.
        c = console(plan=["pvmm_apvmm:", "loading", "out-of-tree", "pvmm_b"])
        self.assertEqual(
            failures(c),
            ["not ok - guest g: the run list (PVMM-PLAN) is whole (garbled: pvmm_apvmm:)"],
        )

    def test_no_plan_or_empty_plan(self):
        c = [x for x in console() if not x.startswith("PVMM-PLAN")]
        self.assertTrue(failures(c))
        self.assertTrue(failures(console([], [])))

    def test_program_without_end(self):
        c = console()
        c.remove("PVMM-TEST-END pvmm_b rc=0")
        self.assertTrue(any("PVMM-TEST-END seen" in x for x in failures(c)))

    def test_exit_status(self):
        c = console([program("pvmm_a", ["ok 1 a.one"], rc=1)], ["pvmm_a"])
        self.assertTrue(any("exit status 1" in x for x in failures(c)))

    def test_unexpected_skip(self):
        c = console([program("pvmm_a", ["ok 1 a.one # SKIP no device"])], ["pvmm_a"])
        self.assertTrue(any("a skip where every test must run" in x for x in failures(c)))


class Kernel(unittest.TestCase):
    def test_warning_in_kernel_log(self):
        c = console(dmesg=["WARNING: CPU: 1 PID: 9 at mm/x.c:1 f+0x1/0x2"])
        self.assertTrue(any("BUG/WARNING" in x for x in failures(c)))

    def test_taint(self):
        self.assertEqual(failures(console(taint=4096 | 262144)), [])
        out = failures(console(taint=4096 | 512))
        self.assertTrue(any("taint 4608 [WO]" in x for x in out), out)

    def test_kernel_log_and_taint_required(self):
        self.assertTrue(any("kernel log" in x for x in failures(console(dmesg=None))))
        self.assertTrue(any("kernel log" in x for x in failures(console(dmesg=[]))))
        self.assertTrue(any("taint" in x for x in failures(console(taint=None))))
        c = console()
        c.remove("PVMM-DMESG-END")
        self.assertTrue(failures(c))

    def test_tap_lines_in_kernel_log_are_not_results(self):
        c = console(dmesg=["ok 9 not.a.test", "PVMM-TEST-BEGIN pvmm_x"])
        self.assertEqual(failures(c), [])

    def test_kunit(self):
        good = "PVMM-KUNIT suite=rust_doctests_kernel passed=117 failed=0 planned=117"
        self.assertEqual(failures(console(extra=[good]), kunit=True), [])
        self.assertTrue(failures(console(), kunit=True))
        short = good.replace("passed=117", "passed=116")
        self.assertTrue(failures(console(extra=[short]), kunit=True))
        failed = good.replace("failed=0", "failed=1")
        self.assertTrue(failures(console(extra=[failed]), kunit=True))

    def test_kmemleak(self):
        self.assertTrue(failures(console(), kmemleak=True))
        self.assertEqual(failures(console(extra=["PVMM-KMEMLEAK leaks=0"]), kmemleak=True), [])
        self.assertTrue(failures(console(extra=["PVMM-KMEMLEAK leaks=2"])))


if __name__ == "__main__":
    unittest.main()
