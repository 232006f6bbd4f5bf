#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Keep kernel/patches a complete series while the overlay stays the source.

The project's kernel sources live as ordinary files (the overlay: rust/kernel,
rust/helpers, drivers/pvmm).  The patches in kernel/patches carry, besides
their hand-written hunks (the wiring: Kconfig, Makefiles, lib.rs, helpers.c
and the like), one "new file" section per overlay file, so that a reader of
the series sees every line that goes into the kernel, and the series applies
to a pristine 6.12 tree on its own.  Those sections are generated here:

  series.py update         rewrite the patches' overlay sections and diffstats
  series.py check          fail if a patch's overlay sections are stale
  series.py verify TARBALL apply the whole series, as it is, to the files it
                           changes taken fresh from TARBALL (Debian's
                           linux-source-6.12), and compare what it adds with
                           the overlay
  series.py wiring PATCH   print PATCH without its overlay sections (what
                           apply-to-tree.sh applies before it copies the
                           overlay, so that editing an overlay file does not
                           look like a new patch series to the build cache)
"""

import re
import subprocess
import sys
import tempfile
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
PATCHES = TOP / "kernel" / "patches"
# Which patch adds which overlay directories.
OWNERS = {
    "0002-": ("rust/kernel", "rust/helpers"),
    "0003-": ("drivers/pvmm",),
}
OVERLAY_NAMES = re.compile(r"(\.rs|\.c|\.h|/Kconfig|/Makefile)$")


def overlay_files(dirs):
    """The overlay's files under dirs, as apply-to-tree.sh copies them."""
    out = []
    for d in dirs:
        for p in sorted((TOP / d).rglob("*")):
            rel = p.relative_to(TOP).as_posix()
            if p.is_file() and OVERLAY_NAMES.search("/" + rel) and \
                    not rel.endswith(".mod.c"):
                out.append(rel)
    return sorted(out)


def split(text):
    """(header, [(path, section)], trailer) of a git format-patch file."""
    first = text.find("\ndiff --git ")
    if first < 0:
        sys.exit("not a patch with diffs")
    header, body = text[:first + 1], text[first + 1:]
    trailer = ""
    m = re.search(r"^-- \n", body, re.M)
    if m:
        body, trailer = body[:m.start()], body[m.start():]
    sections = []
    for chunk in re.split(r"(?m)^(?=diff --git )", body):
        if chunk:
            path = re.match(r"diff --git a/(\S+) b/", chunk).group(1)
            sections.append((path, chunk))
    return header, sections, trailer


def new_file_section(rel):
    data = (TOP / rel).read_text()
    if not data.endswith("\n"):
        sys.exit(f"{rel}: no newline at the end")
    lines = data.splitlines()
    body = "".join(f"+{line}\n" for line in lines)
    return (f"diff --git a/{rel} b/{rel}\nnew file mode 100644\n"
            f"--- /dev/null\n+++ b/{rel}\n@@ -0,0 +1,{len(lines)} @@\n{body}")


def is_overlay(path, section, dirs):
    """Whether section adds a file of the overlay directories dirs (rather
    than changing a file the kernel already has, as helpers.c)."""
    return "\nnew file mode " in section.split("\n@@", 1)[0] and \
        any(path.startswith(d + "/") for d in dirs)


def wiring(text, dirs):
    """text without its overlay sections and its diffstat."""
    header, sections, trailer = split(text)
    keep = [s for p, s in sections if not is_overlay(p, s, dirs)]
    cut = header.rfind("\n---\n")
    if cut >= 0:
        header = header[:cut] + "\n---\n\n"
    return header + "".join(keep) + trailer


def diffstat(diff):
    """git's diffstat of diff, as format-patch writes it under '---'."""
    with tempfile.NamedTemporaryFile("w", suffix=".patch") as f:
        f.write(diff)
        f.flush()
        out = subprocess.run(["git", "apply", "--stat", "--summary", f.name],
                             check=True, capture_output=True, text=True,
                             cwd=tempfile.gettempdir()).stdout
    return out


def generate(text, dirs):
    header, sections, trailer = split(wiring(text, dirs))
    sections += [(rel, new_file_section(rel)) for rel in overlay_files(dirs)]
    sections.sort(key=lambda s: s[0])
    body = "".join(s for _, s in sections)
    # The diffstat goes between "---" and the first diff.
    if not header.endswith("\n---\n\n"):
        sys.exit("patch header has no '---' line")
    header = header[:-1] + diffstat(body) + "\n"
    return header + body + trailer


def owner(patch):
    for prefix, dirs in OWNERS.items():
        if patch.name.startswith(prefix):
            return dirs
    return ()


def verify(tarball):
    """The series applies to pristine sources and adds the overlay as it is."""
    patches = sorted(PATCHES.glob("*.patch"))
    touched = set()
    for p in patches:
        _, sections, _ = split(p.read_text())
        touched |= {path for path, sec in sections
                    if "\nnew file mode " not in sec.split("\n@@", 1)[0]}
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["tar", "-C", tmp, "--strip-components=1", "-xf",
                        tarball, "--wildcards"] +
                       [f"*/{t}" for t in sorted(touched)], check=True)
        for p in patches:
            r = subprocess.run(["patch", "-p1", "-s", "-N", "--no-backup-if-mismatch",
                                "-i", str(p)], cwd=tmp, capture_output=True,
                               text=True)
            if r.returncode:
                print(f"{p.name} does not apply to pristine sources:\n"
                      f"{r.stdout}{r.stderr}")
                return 1
        bad = [rel for dirs in OWNERS.values() for rel in overlay_files(dirs)
               if not (Path(tmp) / rel).is_file() or
               (Path(tmp) / rel).read_bytes() != (TOP / rel).read_bytes()]
    if bad:
        print("the series does not add these overlay files as they are: " +
              ", ".join(bad))
        return 1
    print(f"{len(patches)} patches apply to pristine sources and add the overlay")
    return 0


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "verify" and len(argv) == 3:
        return verify(argv[2])
    if cmd == "wiring" and len(argv) == 3:
        p = Path(argv[2])
        sys.stdout.write(wiring(p.read_text(), owner(p)))
        return 0
    if cmd not in ("update", "check"):
        sys.exit(__doc__)
    stale = []
    for p in sorted(PATCHES.glob("*.patch")):
        dirs = owner(p)
        if not dirs:
            continue
        old = p.read_text()
        new = generate(old, dirs)
        if new != old:
            stale.append(p.name)
            if cmd == "update":
                p.write_text(new)
    if cmd == "check":
        if stale:
            print("stale overlay sections in " + ", ".join(stale) +
                  ": run scripts/series.py update")
            return 1
        print("kernel/patches carry the overlay as it is")
    elif stale:
        print("updated " + ", ".join(stale))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
