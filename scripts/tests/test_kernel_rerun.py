#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""kernel.sh and apply-to-tree.sh recover from a failed run.

They run on a stand-in project (a copy of scripts/ with a two-file patch
series) and a stand-in kernel tarball whose Makefile implements the targets
kernel.sh uses; a failure is injected into one run and the next must
finish the job.
"""

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import unittest
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]
FAKE = Path(__file__).resolve().parent / "fake_machine.py"

MAKEFILE = """\
kernelversion:
\t@echo 6.12.117
rustavailable:
\t@echo 'Rust is available!'
tinyconfig:
\t@mkdir -p $(O) && echo CONFIG_TINY=y >$(O)/.config
olddefconfig:
\t@if [ -n "$$FAKE_FAIL_OLDDEFCONFIG" ]; then echo 'olddefconfig: failed' >&2; exit 2; fi
\t@echo CONFIG_OLDDEF=y >>$(O)/.config
bzImage:
\t@mkdir -p $(O)/arch/x86/boot && touch $(O)/arch/x86/boot/bzImage
modules:
\t@true
"""
MERGE_CONFIG = """\
#!/bin/sh
# merge_config.sh -m -O DIR BASE FRAGMENT...
shift; shift; dir=$1; shift; base=$1; shift
cat "$base" "$@" >"$dir/.config.new" && mv "$dir/.config.new" "$dir/.config"
"""
PATCH = """\
From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001
From: pvmm test <test@example.invalid>
Subject: [PATCH] fake: change two files

---
 a.txt | 2 +-
 b.txt | 2 +-

diff --git a/a.txt b/a.txt
--- a/a.txt
+++ b/a.txt
@@ -1,3 +1,3 @@
 one
-two
+TWO
 three
diff --git a/b.txt b/b.txt
--- a/b.txt
+++ b/b.txt
@@ -1,3 +1,3 @@
 one
-two
+TWO
 three
-- 
2.39.5
"""
PRISTINE = "one\ntwo\nthree\n"
PATCHED = "one\nTWO\nthree\n"


class Project:
    """A stand-in project and kernel tarball in a temporary directory."""

    def __init__(self, test):
        self.dir = Path(tempfile.mkdtemp(prefix="pvmm-rerun-"))
        test.addCleanup(shutil.rmtree, self.dir)
        self.top = self.dir / "pvmm"
        shutil.copytree(TOP / "scripts", self.top / "scripts",
                        ignore=shutil.ignore_patterns("tests", "__pycache__"))
        shutil.copy(TOP / "rust-toolchain.toml", self.top)
        (self.top / "kernel/patches").mkdir(parents=True)
        (self.top / "kernel/patches/0001-fake.patch").write_text(PATCH)
        (self.top / "kernel/configs").mkdir()
        (self.top / "kernel/configs/pvmm.config").write_text("CONFIG_RUST=y\nCONFIG_X=y\n")
        (self.top / "kernel/configs/x86_64.config").write_text("CONFIG_64BIT=y\n")
        (self.top / "kernel/configs/timerlat.config").write_text("CONFIG_TIMERLAT_TRACER=y\n")
        for d, f in (("rust/kernel", "x.rs"), ("rust/helpers", "x.c"), ("drivers/pvmm", "x.rs")):
            (self.top / d).mkdir(parents=True)
            (self.top / d / f).write_text("// overlay\n")
        tree = self.dir / "linux"
        (tree / "scripts/kconfig").mkdir(parents=True)
        (tree / "Makefile").write_text(MAKEFILE)
        mc = tree / "scripts/kconfig/merge_config.sh"
        mc.write_text(MERGE_CONFIG)
        mc.chmod(0o755)
        for f in ("a.txt", "b.txt"):
            (tree / f).write_text(PRISTINE)
        self.tarball = self.dir / "linux-source-6.12.tar.xz"
        with tarfile.open(self.tarball, "w:xz") as t:
            t.add(tree, arcname="linux-source-6.12")
        self.pristine_tree = tree
        bindir = self.dir / "bin"
        bindir.mkdir()
        (bindir / "dpkg-query").symlink_to(FAKE)
        state = self.dir / "machine.json"
        state.write_text(json.dumps({"installed": {"linux-source-6.12": "6.12.117-1~deb12u1"}}))
        self.cache = self.dir / "cache"
        self.env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}",
                        FAKE_MACHINE=str(state), PVMM_CACHE=str(self.cache),
                        PVMM_LINUX_TARBALL=str(self.tarball), ARCH="x86_64")
        self.env.pop("KSRC", None)
        self.env.pop("PVMM_LOCKED", None)

    def kernel(self, **env):
        return subprocess.run(["bash", str(self.top / "scripts/kernel.sh"), "m"],
                              env=dict(self.env, **env), capture_output=True, text=True,
                              timeout=120)

    def apply(self, tree):
        return subprocess.run(["bash", str(self.top / "scripts/apply-to-tree.sh"), str(tree)],
                              env=self.env, capture_output=True, text=True, timeout=60)

    def src_trees(self):
        return sorted((self.cache / "src").glob("linux-*[!p]"))


class KernelRerun(unittest.TestCase):
    def test_failed_configuration_is_redone(self):
        p = Project(self)
        r = p.kernel(FAKE_FAIL_OLDDEFCONFIG="1")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("olddefconfig: failed", r.stderr)
        r = p.kernel()
        self.assertEqual(r.returncode, 0, r.stderr)
        build = Path(r.stdout.strip().splitlines()[-1])
        config = (build / ".config").read_text().splitlines()
        for opt in ("CONFIG_TINY=y", "CONFIG_RUST=y", "CONFIG_X=y", "CONFIG_64BIT=y",
                    "CONFIG_PVMM=m", "CONFIG_OLDDEF=y"):
            self.assertIn(opt, config)
        self.assertTrue((build / "arch/x86/boot/bzImage").exists())
        # A third run has nothing to configure.
        r = p.kernel()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("configuring", r.stderr)

    def test_half_applied_patch_in_the_cache_is_extracted_again(self):
        p = Project(self)
        r = p.kernel()
        self.assertEqual(r.returncode, 0, r.stderr)
        [src] = [d for d in (p.cache / "src").iterdir() if d.is_dir()]
        # A run stopped between the patch's two files, in a tree of an
        # older apply-to-tree: a.txt patched, b.txt not, nothing recorded.
        (src / "b.txt").write_text(PRISTINE)
        (src / ".pvmm-patches").write_text("")
        r = p.kernel()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("extracting it again", r.stderr)
        self.assertEqual((src / "a.txt").read_text(), PATCHED)
        self.assertEqual((src / "b.txt").read_text(), PATCHED)

    def test_a_patch_that_does_not_apply_changes_nothing(self):
        p = Project(self)
        tree = p.dir / "user-tree"
        shutil.copytree(p.pristine_tree, tree)
        (tree / "b.txt").write_text("something else\n")
        r = p.apply(tree)
        self.assertEqual(r.returncode, 1)
        self.assertIn("nothing of it was applied", r.stderr)
        self.assertEqual((tree / "a.txt").read_text(), PRISTINE)
        # Fixed, the same tree takes the whole patch.
        (tree / "b.txt").write_text(PRISTINE)
        r = p.apply(tree)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual((tree / "a.txt").read_text(), PATCHED)
        self.assertEqual((tree / "b.txt").read_text(), PATCHED)
        # And once more: already applied, nothing to do.
        r = p.apply(tree)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual((tree / "b.txt").read_text(), PATCHED)


if __name__ == "__main__":
    unittest.main()
