#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""scripts/install-deps.sh on simulated machines (fake_machine.py on PATH).

Each case sets up a machine, runs the real script under its own
`set -euo pipefail`, and checks the commands that change the system (apt-get
update and install, dpkg --add-architecture, rustup, cargo install), the
exit status and the message.

    python3 -m unittest discover -s scripts/tests
"""

import copy
import json
import os
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]
FAKE = Path(__file__).resolve().parent / "fake_machine.py"
FAKED = ["apt-get", "apt-cache", "dpkg", "dpkg-query", "dpkg-deb", "sudo", "id",
         "rustup", "cargo", "bindgen"]

with open(TOP / "scripts/versions.sh") as f:
    PINS = dict(line.strip().split("=", 1) for line in f
                if line.startswith("PVMM_") and "=" in line)
KSRC = PINS["PVMM_LINUX_SOURCE_VERSION"]
BINDGEN = PINS["PVMM_BINDGEN_VERSION"]
RUST = next(line.split('"')[1] for line in open(TOP / "rust-toolchain.toml")
            if line.startswith("channel"))

QEMU7 = "1:7.2+dfsg-7+deb12u18+b2"
QEMU10 = "1:10.0.2+ds-2+deb13u1~bpo12+1"
NATIVE = ["make", "gcc", "libc6-dev", "patch", "file", "git", "perl", "clang", "lld",
          "llvm", "flex", "bison", "bc", "libelf-dev", "libssl-dev", "cpio", "xz-utils",
          "busybox-static", "rt-tests", "ccache", "python3", "python3-matplotlib",
          "shellcheck", "qemu-system-x86"]
ARM64_HOST = ["qemu-system-arm", "gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"]
ARM64_ROOT = ["busybox-static", "rt-tests", "libnuma1", "libc6"]


def new_machine():
    """A fresh Debian 12 machine: rustup with the pinned Rust but no
    rust-src, git and gcc, the usual sources, lists not yet fetched."""
    main = {p: "1.0-1" for p in NATIVE + ARM64_HOST}
    main.update({"qemu-system-x86": QEMU7, "qemu-system-arm": QEMU7, "qemu-utils": QEMU7})
    main.update({f"{p}:arm64": "2.0-1" for p in ARM64_ROOT})
    return {
        "root": True,
        "installed": {"git": "1:2.39.5-0+deb12u2", "gcc": "4:12.2.0-3"},
        "sources": ["bookworm", "bookworm-updates", "bookworm-security"],
        "archive": {
            "bookworm": main,
            "bookworm-updates": {},
            "bookworm-security": {"linux-source-6.12": KSRC},
            "bookworm-backports": {"qemu-system-x86": QEMU10, "qemu-system-arm": QEMU10,
                                   "qemu-utils": QEMU10},
        },
        "lists": {"amd64": {}, "arm64": {}},
        "foreign": [],
        "mirror_arm64": True,
        "fail": {},
        "rust": {"toolchains": {RUST: ["cargo", "rustc", "rust-std", "rustfmt", "clippy"]}},
        "debian_bindgen": None,
    }


def fetched(m):
    """The lists as a successful apt-get update leaves them."""
    lists = {"amd64": {}, "arm64": {}}
    for s in m["sources"]:
        pkgs = m["archive"].get(s, {})
        lists["amd64"][s] = {k: v for k, v in pkgs.items() if ":" not in k}
        if "arm64" in m["foreign"] and m["mirror_arm64"]:
            lists["arm64"][s] = {k[:-6]: v for k, v in pkgs.items() if k.endswith(":arm64")}
    m["lists"] = lists
    return m


def everything_installed(m, arm64=True):
    for p in NATIVE + (ARM64_HOST if arm64 else []):
        m["installed"][p] = m["archive"]["bookworm"][p]
    m["installed"]["linux-source-6.12"] = KSRC
    m["rust"]["toolchains"][RUST].append("rust-src")
    if arm64:
        m["foreign"] = ["arm64"]
    return fetched(m)


class Machine:
    """One simulated machine: its state, its PATH of fakes, its cache."""

    def __init__(self, test, state):
        self.dir = Path(tempfile.mkdtemp(prefix="pvmm-fake-"))
        test.addCleanup(shutil.rmtree, self.dir)
        bindir = self.dir / "bin"
        bindir.mkdir()
        for name in FAKED:
            (bindir / name).symlink_to(FAKE)
        self.state = self.dir / "machine.json"
        self.state.write_text(json.dumps(state))
        self.cache = self.dir / "cache"
        self.sources = self.dir / "sources.list.d"
        self.sources.mkdir()
        self.env = {
            "PATH": f"{bindir}:/usr/bin:/bin",
            "HOME": str(self.dir),
            "FAKE_MACHINE": str(self.state),
            "PVMM_CACHE": str(self.cache),
            "PVMM_APT_SOURCES_DIR": str(self.sources),
            "LC_ALL": "C",
        }

    def run(self, *args, **env):
        """Run install-deps.sh; return (exit status, stderr, calls made)."""
        log = Path(str(self.state) + ".log")
        log.unlink(missing_ok=True)
        p = subprocess.run(["bash", str(TOP / "scripts/install-deps.sh"), *args],
                           env=dict(self.env, **env), capture_output=True, text=True,
                           timeout=120)
        calls = [json.loads(line) for line in log.read_text().splitlines()] \
            if log.exists() else []
        return p.returncode, p.stdout + p.stderr, calls

    def read(self):
        return json.loads(self.state.read_text())


def changes(calls):
    """The calls that change the system, as short strings."""
    res = []
    for c in calls:
        a = c["args"]
        if c["cmd"] == "apt-get" and a and (a[0] in ("update", "install", "download") or
                                            "install" in a) and "-s" not in a:
            words = [w for w in a if not w.startswith("-") or w == "-t"]
            res.append("apt-get " + " ".join(words))
        elif c["cmd"] == "dpkg" and a[0] in ("--add-architecture", "--remove-architecture"):
            res.append("dpkg " + " ".join(a))
        elif c["cmd"] == "rustup" and a[:2] in (["toolchain", "install"], ["component", "add"]):
            res.append("rustup " + " ".join(a[:2]) + " " + a[-1])
        elif c["cmd"] == "cargo":
            res.append("cargo install " + a[-1])
    return res


def installs(calls):
    return [c for c in changes(calls) if c.startswith("apt-get install")]


class InstallDeps(unittest.TestCase):
    def test_fresh_machine_line_by_line_apt_cache(self):
        m = Machine(self, new_machine())
        rc, msg, calls = m.run("x86_64")
        self.assertEqual(rc, 0, msg)
        got = changes(calls)
        self.assertEqual(got[0], "apt-get update")
        self.assertEqual(got.count("apt-get update"), 1)
        self.assertIn("apt-get install qemu-system-x86", got)
        rest = [c for c in installs(calls) if "qemu" not in c]
        self.assertEqual(len(rest), 1)
        self.assertIn(f"linux-source-6.12={KSRC}", rest[0])
        for p in NATIVE:
            if p not in ("git", "gcc", "qemu-system-x86"):
                self.assertIn(f" {p}", rest[0])
        self.assertNotIn(" git", rest[0])
        self.assertIn("rustup component add rust-src", got)
        self.assertIn("cargo install bindgen-cli", got)
        # x86_64 needs nothing foreign.
        self.assertFalse([c for c in got if "arm64" in c])
        # apt-get saw the non-interactive frontend.
        self.assertTrue(all(c["frontend"] == "noninteractive"
                            for c in calls if c["cmd"] == "apt-get"))
        installed = m.read()["installed"]
        self.assertEqual(installed["linux-source-6.12"], KSRC)
        # The pinned bindgen is where lib.sh puts it on PATH.
        b = m.cache / f"tools/bindgen-{BINDGEN}/bin/bindgen"
        self.assertEqual(subprocess.check_output([str(b), "--version"], text=True).strip(),
                         f"bindgen {BINDGEN}")

    def test_as_user_through_sudo_keeps_the_frontend(self):
        s = new_machine()
        s["root"] = False
        m = Machine(self, s)
        rc, msg, calls = m.run("x86_64")
        self.assertEqual(rc, 0, msg)
        apt = [c for c in calls if c["cmd"] == "apt-get" and c["args"][0] != "-s"
               and "download" not in c["args"]]
        self.assertTrue(apt)
        self.assertTrue(all(c["sudo"] and c["frontend"] == "noninteractive" for c in apt))

    def test_debian_bindgen_is_too_old(self):
        s = everything_installed(new_machine(), arm64=False)
        s["debian_bindgen"] = "0.60.1"
        m = Machine(self, s)
        rc, msg, calls = m.run("x86_64")
        self.assertEqual(rc, 0, msg)
        self.assertEqual(changes(calls), ["cargo install bindgen-cli"])

    def test_rust_toolchain_missing_is_installed_pinned(self):
        s = new_machine()
        s["rust"]["toolchains"] = {"stable": ["cargo", "rustc"]}
        m = Machine(self, s)
        rc, msg, calls = m.run("x86_64")
        self.assertEqual(rc, 0, msg)
        self.assertIn("rustup toolchain install rust-src,rustfmt,clippy", changes(calls))
        self.assertTrue(set(m.read()["rust"]["toolchains"][RUST]) >=
                        {"rust-src", "rustfmt", "clippy"})

    def test_linux_source_only_in_security(self):
        s = new_machine()
        s["archive"]["bookworm-security"]["linux-source-6.12"] = KSRC
        self.assertNotIn("linux-source-6.12", s["archive"]["bookworm"])
        m = Machine(self, s)
        rc, msg, calls = m.run("x86_64")
        self.assertEqual(rc, 0, msg)
        self.assertEqual(m.read()["installed"]["linux-source-6.12"], KSRC)

    def test_linux_source_pin_gone_takes_newest_with_warning(self):
        s = new_machine()
        s["archive"]["bookworm-security"]["linux-source-6.12"] = "6.12.999-1~deb12u1"
        m = Machine(self, s)
        rc, msg, calls = m.run("x86_64")
        self.assertEqual(rc, 0, msg)
        self.assertIn(f"tested with linux-source-6.12 {KSRC}", msg)
        self.assertEqual(m.read()["installed"]["linux-source-6.12"], "6.12.999-1~deb12u1")

    def test_linux_source_offered_nowhere(self):
        s = new_machine()
        s["sources"].remove("bookworm-security")
        m = Machine(self, s)
        rc, msg, calls = m.run("x86_64")
        self.assertEqual(rc, 1)
        self.assertIn("linux-source-6.12 is offered by none of this machine's apt sources", msg)
        self.assertIn("'bookworm-security'", msg)
        self.assertEqual(installs(calls), [])

    def test_qemu_utils_from_backports_with_backports(self):
        s = new_machine()
        s["installed"]["qemu-utils"] = QEMU10
        s["sources"].append("bookworm-backports")
        m = Machine(self, s)
        rc, msg, calls = m.run("x86_64")
        self.assertEqual(rc, 0, msg)
        self.assertIn("apt-get install -t bookworm-backports qemu-system-x86", changes(calls))
        self.assertEqual(m.read()["installed"]["qemu-utils"], QEMU10)

    def test_qemu_utils_from_backports_without_backports(self):
        s = new_machine()
        s["installed"]["qemu-utils"] = QEMU10
        m = Machine(self, s)
        rc, msg, calls = m.run("x86_64")
        self.assertEqual(rc, 1)
        self.assertNotIn("invalid for APT::Default-Release", msg)
        self.assertIn("Enable bookworm-backports", msg)
        self.assertIn("PVMM_APT_BACKPORTS=1", msg)
        # Nothing half-done: no package was installed, none removed.
        self.assertEqual(installs(calls), [])
        self.assertEqual(m.read()["installed"]["qemu-utils"], QEMU10)

        # Asked to, the script adds the suite as a copy of the machine's
        # own main source, and QEMU comes from there.
        rc, msg, calls = m.run("x86_64", PVMM_APT_BACKPORTS="1")
        self.assertEqual(rc, 0, msg)
        added = (m.sources / "pvmm-backports.sources").read_text()
        self.assertIn("Suites: bookworm-backports", added)
        self.assertIn("URIs: file:/srv/fake-archive/debian", added)
        self.assertIn("apt-get install -t bookworm-backports qemu-system-x86", changes(calls))
        self.assertEqual(m.read()["installed"]["qemu-system-x86"], QEMU10)
        self.assertEqual(m.read()["installed"]["qemu-utils"], QEMU10)

    def test_everything_installed_installs_nothing(self):
        m = Machine(self, everything_installed(new_machine()))
        # The pinned bindgen in the cache, as an earlier run left it.
        b = m.cache / f"tools/bindgen-{BINDGEN}/bin/bindgen"
        b.parent.mkdir(parents=True)
        b.write_text(f"#!/bin/sh\necho 'bindgen {BINDGEN}'\n")
        b.chmod(0o755)
        # The first run only unpacks the arm64 userland into the empty cache.
        rc, msg, calls = m.run("x86_64", "arm64")
        self.assertEqual(rc, 0, msg)
        self.assertEqual(changes(calls), ["apt-get download " +
                                          " ".join(f"{p}:arm64" for p in ARM64_ROOT)])
        self.assertTrue((m.cache / "arm64-root/.pvmm-versions").exists())
        rc, msg, calls = m.run("x86_64", "arm64")
        self.assertEqual((rc, changes(calls)), (0, []), msg)

    def test_rerun_after_a_failed_install(self):
        s = new_machine()
        s["installed"]["qemu-system-x86"] = QEMU7
        s["fail"] = {"install": 1}
        m = Machine(self, s)
        rc, msg, calls = m.run("x86_64")
        self.assertEqual(rc, 100, msg)
        self.assertEqual(len(installs(calls)), 1)
        # The second run installs what the first did not.
        rc, msg, calls = m.run("x86_64")
        self.assertEqual(rc, 0, msg)
        self.assertEqual(len(installs(calls)), 1)
        self.assertIn("rustup component add rust-src", changes(calls))
        rc, msg, calls = m.run("x86_64")
        self.assertEqual((rc, changes(calls)), (0, []), msg)

    def test_rerun_after_a_failed_rust_step_installs_no_package_again(self):
        s = new_machine()
        s["fail"] = {"rustup": 1}
        m = Machine(self, s)
        rc, msg, calls = m.run("x86_64")
        self.assertNotEqual(rc, 0)
        self.assertEqual(len(installs(calls)), 2)
        rc, msg, calls = m.run("x86_64")
        self.assertEqual(rc, 0, msg)
        self.assertEqual(changes(calls), ["rustup component add rust-src",
                                          "cargo install bindgen-cli"])

    def test_arm64_known_to_dpkg_but_not_fetched(self):
        # What an earlier run leaves when its apt-get update failed right
        # after dpkg --add-architecture arm64.
        s = everything_installed(new_machine(), arm64=False)
        s["installed"].update({p: "1.0-1" for p in ARM64_HOST})
        s["foreign"] = ["arm64"]
        m = Machine(self, s)
        rc, msg, calls = m.run("arm64")
        self.assertEqual(rc, 0, msg)
        got = changes(calls)
        self.assertEqual(got[0], "apt-get update")
        self.assertIn("apt-get download " + " ".join(f"{p}:arm64" for p in ARM64_ROOT), got)

    def test_rerun_after_a_failed_arm64_update(self):
        s = everything_installed(new_machine(), arm64=False)
        s["installed"].update({p: "1.0-1" for p in ARM64_HOST})
        s["fail"] = {"update": 2}
        m = Machine(self, s)
        rc, msg, calls = m.run("arm64")
        self.assertEqual(rc, 1)
        self.assertEqual(changes(calls)[:5], [
            "dpkg --add-architecture arm64", "apt-get update", "apt-get update",
            "dpkg --remove-architecture arm64", "apt-get update"])
        rc, msg, calls = m.run("arm64")
        self.assertEqual(rc, 0, msg)
        self.assertTrue((m.cache / "arm64-root/.pvmm-versions").exists())

    def test_mirror_without_arm64(self):
        s = new_machine()
        s["mirror_arm64"] = False
        m = Machine(self, s)
        rc, msg, calls = m.run("arm64")
        self.assertEqual(rc, 1)
        self.assertIn("offer no arm64 packages", msg)
        self.assertIn("dpkg --remove-architecture arm64", changes(calls))
        # Nothing half-done: no package installed, dpkg as it was.
        self.assertEqual(installs(calls), [])
        self.assertEqual(m.read()["foreign"], [])
        # x86_64 never touches the architecture, and works.
        rc, msg, calls = m.run("x86_64")
        self.assertEqual(rc, 0, msg)
        self.assertFalse([c for c in changes(calls) if "arm64" in c])
        self.assertEqual(len(installs(calls)), 2)

    def test_no_sudo_as_user(self):
        s = new_machine()
        s["root"] = False
        m = Machine(self, s)
        (m.dir / "bin/sudo").unlink()
        rc, msg, calls = m.run("x86_64")
        self.assertEqual(rc, 1)
        self.assertIn("needs root", msg)


if __name__ == "__main__":
    unittest.main()
