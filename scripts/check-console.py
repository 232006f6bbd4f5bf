#!/usr/bin/env python3
"""Check one guest's console for make check (scripts/check-lib.sh).

The guest init (scripts/guest/init) prints, between markers: the run list
(PVMM-PLAN), each test program's TAP output (PVMM-TEST-BEGIN/END), the
KUnit suites that ran at boot, the kmemleak count, the whole kernel log
(PVMM-DMESG-BEGIN/END) and the taint value (PVMM-TAINT).  A line lost or
split on the shared console must fail the guest, never pass it by going
unseen: every planned program must appear once, in order, with a BEGIN and
an END, as many results as its TAP plan announces, and totals that agree.

One result line per check on stdout, as check-lib.sh's result() prints
them ("ok - NAME", "not ok - NAME"), and "# skip - NAME" for a skip.

usage: check-console.py CONSOLE NAME pass|skip [--kunit] [--kmemleak]
"""

import argparse
import re
import sys

# Skips a guest that must pass may report: the module kernel has no
# boot-time mode to check.  Any other skip there is a failure, so that a
# driver that fails to bind cannot pass by skipping everything.
SKIP_OK = "pvmm is a module"

# The kernel's taint letters, by bit (kernel/panic.c, taint_flags).
TAINT_LETTERS = "PFSRMBUDAWCIOELKXTN"
# Taints a guest of make check may carry: O, an out-of-tree module
# (pvmm.ko), and N, a KUnit test ran (the kernel crate's doctests).
TAINT_ALLOWED = (1 << TAINT_LETTERS.index("O")) | (1 << TAINT_LETTERS.index("N"))

KERNEL_TROUBLE = re.compile(r"Kernel panic|BUG:|WARNING:|Oops")
TEST_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
TAP_PLAN = re.compile(r"^1\.\.(\d+)")
TOTALS = re.compile(
    r"^# Totals: pass:(\d+) fail:(\d+) xfail:(\d+) xpass:(\d+) skip:(\d+) error:(\d+)"
)


class Report:
    """The result lines of one guest, in the order they were found."""

    def __init__(self, name):
        self.name = name
        self.lines = []

    def result(self, what, ok):
        self.lines.append(f"{'ok' if ok else 'not ok'} - {self.name}: {what}")

    def skip(self, what):
        self.lines.append(f"# skip - {self.name}: {what}")


class Program:
    """One test program's section of the console."""

    def __init__(self, name):
        self.name = name
        self.plan = None
        self.results = []
        self.totals = None
        self.rc = None


def sections(lines):
    """Split the console into the run list, the programs, the kernel log
    and the other marker lines.  Lines inside the kernel log are never
    read as TAP."""
    plans, programs, dmesg, marks = [], [], None, []
    current = None
    in_dmesg = False
    for line in lines:
        if in_dmesg:
            if line == "PVMM-DMESG-END":
                in_dmesg = False
            else:
                dmesg.append(line)
            continue
        if line == "PVMM-DMESG-BEGIN":
            in_dmesg = True
            dmesg = dmesg if dmesg is not None else []
        elif line.startswith("PVMM-PLAN"):
            plans.append(line[len("PVMM-PLAN"):].split())
        elif line.startswith("PVMM-TEST-BEGIN "):
            current = Program(line.split()[1])
            programs.append(current)
        elif line.startswith("PVMM-TEST-END ") and current is not None:
            m = re.match(r"PVMM-TEST-END (\S+) rc=(\d+)$", line)
            if m and m.group(1) == current.name:
                current.rc = int(m.group(2))
            current = None
        elif line.startswith("PVMM-"):
            marks.append(line)
        elif current is not None:
            if current.plan is None and (m := TAP_PLAN.match(line)):
                current.plan = int(m.group(1))
            elif line.startswith("ok ") or line.startswith("not ok "):
                current.results.append(line)
            elif m := TOTALS.match(line):
                current.totals = sum(int(g) for g in m.groups())
    return plans, programs, dmesg, marks, in_dmesg


def check_program(rep, prog, expect):
    """The results of one program, and whether its output is whole."""
    t = prog.name
    for line in prog.results:
        ok = line.startswith("ok ")
        text = line[3:] if ok else line[7:]
        if ok and "# SKIP" in line:
            if expect == "pass" and SKIP_OK not in line:
                rep.result(f"{t}: {text} (a skip where every test must run)", False)
            else:
                rep.skip(f"{t}: {text}")
        elif expect == "pass" or not ok:
            rep.result(f"{t}: {text}", ok)
    if prog.rc is None:
        rep.result(f"{t}: PVMM-TEST-END seen (the program finished)", False)
    elif expect == "skip":
        rep.result(f"{t} exits 4 (skip)", prog.rc == 4)
    elif prog.rc != 0:
        rep.result(f"{t} exit status {prog.rc}", False)
    if expect == "skip" and prog.plan == 0:
        return
    whole = (
        prog.plan is not None
        and len(prog.results) == prog.plan
        and prog.totals == prog.plan
    )
    rep.result(
        f"{t}: TAP output whole (plan {prog.plan}, {len(prog.results)} results, "
        f"totals {prog.totals})",
        whole,
    )


def check(lines, name, expect, kunit=False, kmemleak=False):
    rep = Report(f"guest {name}")
    plans, programs, dmesg, marks, dmesg_open = sections(lines)
    if len(plans) != 1:
        rep.result(f"the run list (PVMM-PLAN) printed once ({len(plans)} seen)", False)
    elif bad := [n for n in plans[0] if not TEST_NAME.match(n)]:
        # Kernel text spliced into the line (the console is shared).
        rep.result(f"the run list (PVMM-PLAN) is whole (garbled: {' '.join(bad)})", False)
    else:
        plan = plans[0]
        ran = [p.name for p in programs]
        rep.result(
            f"every planned program ran once, in order ({len(plan)} planned, {len(ran)} ran)",
            bool(plan) and ran == plan,
        )
    for prog in programs:
        check_program(rep, prog, expect)

    # KUnit at boot: each suite passed as a whole, and nothing in it failed.
    kunit_suites = []
    for x in marks:
        m = re.match(r"PVMM-KUNIT suite=(\S+) passed=(\d+) failed=(\d+) planned=(\d*)", x)
        if m:
            suite, passed, failed = m.group(1), int(m.group(2)), int(m.group(3))
            planned = int(m.group(4) or -1)
            kunit_suites.append(suite)
            rep.result(
                f"KUnit {suite}: {passed} ok, {failed} not ok, {planned} planned",
                failed == 0 and passed > 0 and passed == planned,
            )
    if kunit and "rust_doctests_kernel" not in kunit_suites:
        rep.result("the kernel crate's doctests ran", False)

    leaks = [int(m.group(1)) for x in marks if (m := re.match(r"PVMM-KMEMLEAK leaks=(\d+)", x))]
    if leaks:
        rep.result(f"kmemleak finds no leak (leaks={leaks[-1]})", leaks[-1] == 0)
    elif kmemleak:
        rep.result("kmemleak scanned at the end", False)

    # The kernel log, whole, from boot to the end of the tests (the console
    # shows only what came before the tests and after them).
    rep.result(
        f"kernel log printed at the end ({len(dmesg or [])} lines)",
        dmesg is not None and not dmesg_open and len(dmesg) > 0,
    )
    taints = [int(m.group(1)) for x in marks if (m := re.match(r"PVMM-TAINT (\d+)$", x))]
    if taints:
        flags = "".join(c for i, c in enumerate(TAINT_LETTERS) if taints[-1] & (1 << i))
        rep.result(
            f"kernel not tainted beyond O and N (taint {taints[-1]} [{flags}])",
            taints[-1] & ~TAINT_ALLOWED == 0,
        )
    else:
        rep.result("taint value printed at the end", False)

    bad = [x for x in lines if KERNEL_TROUBLE.search(x)]
    rep.result("no kernel BUG/WARNING/Oops/panic" + (f" (first: {bad[0][:120]})" if bad else ""), not bad)
    return rep.lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("console")
    ap.add_argument("name")
    ap.add_argument("expect", choices=("pass", "skip"))
    ap.add_argument("--kunit", action="store_true", help="the doctests must have run")
    ap.add_argument("--kmemleak", action="store_true", help="kmemleak must have scanned")
    a = ap.parse_args()
    with open(a.console, encoding="utf-8", errors="replace") as f:
        lines = [x.rstrip("\r\n").replace("\r", "") for x in f]
    for line in check(lines, a.name, a.expect, a.kunit, a.kmemleak):
        print(line)


if __name__ == "__main__":
    sys.exit(main())
