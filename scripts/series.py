#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Keep kernel/patches a complete series while the overlay stays the source.

The project's kernel sources live as ordinary files (the overlay: rust/kernel,
rust/helpers, drivers/pvmm).  The patches in kernel/patches carry, besides
their hand-written hunks (the wiring: Kconfig, Makefiles, lib.rs, helpers.c
and the like), one section per overlay file, so that a reader of the series
sees every line that goes into the kernel, and the series applies to a
pristine 6.12 tree on its own.  An overlay file that 6.12 does not have is a
"new file" section; one that 6.12 has (rust/kernel/task.rs, say) is the whole
file as pvmm needs it, and its section is the diff from the pristine file,
whose blob id the section's index line names.  Those sections are generated
here:

  series.py update         rewrite the patches' overlay sections and diffstats
                           (the pristine copy of a changed 6.12 file comes from
                           its section, or else from the tarball below)
  series.py check          fail if a patch's overlay sections are stale
  series.py verify TARBALL apply the whole series, as it is, to the files it
                           changes taken fresh from TARBALL (Debian's
                           linux-source-6.12), and compare what it adds with
                           the overlay
  series.py changed        print the overlay files that 6.12 has too (their
                           sections are diffs, not new files)
  series.py wiring PATCH   print PATCH without its overlay sections (what
                           apply-to-tree.sh applies before it copies the
                           overlay, so that editing an overlay file does not
                           look like a new patch series to the build cache)
"""

import functools
import os
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
TARBALL = os.environ.get("PVMM_LINUX_TARBALL", "/usr/src/linux-source-6.12.tar.xz")


@functools.lru_cache
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


def is_new(section):
    return "\nnew file mode " in section.split("\n@@", 1)[0]


def new_file_section(rel):
    data = (TOP / rel).read_text()
    if not data.endswith("\n"):
        sys.exit(f"{rel}: no newline at the end")
    lines = data.splitlines()
    body = "".join(f"+{line}\n" for line in lines)
    return (f"diff --git a/{rel} b/{rel}\nnew file mode 100644\n"
            f"--- /dev/null\n+++ b/{rel}\n@@ -0,0 +1,{len(lines)} @@\n{body}")


def changed_file_section(rel, pristine):
    """The diff from pristine (6.12's rel) to the overlay's rel, with full
    blob ids, so that check can tell a stale pristine side too."""
    with tempfile.TemporaryDirectory() as tmp:
        for side, data in (("a", pristine), ("b", (TOP / rel).read_bytes())):
            f = Path(tmp, side, rel)
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(data)
            f.chmod(0o644)
        out = subprocess.run(["git", "diff", "--no-index", "--full-index", "--no-prefix",
                              "--no-color", "--no-ext-diff", f"a/{rel}", f"b/{rel}"],
                             cwd=tmp, capture_output=True, text=True)
    if out.returncode != 1:
        sys.exit(f"{rel}: no change from 6.12's file, or git diff failed: {out.stderr}")
    return out.stdout


def pristine_of(rel, section):
    """6.12's rel, from its section (the overlay file with the section
    reversed, if that gives the blob the section names), or None."""
    m = re.search(r"^index ([0-9a-f]+)\.\.", section, re.M)
    if not m or is_new(section):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp, rel)
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes((TOP / rel).read_bytes())
        Path(tmp, "s.patch").write_text(section)
        if subprocess.run(["git", "apply", "-R", "s.patch"], cwd=tmp,
                          capture_output=True).returncode:
            return None
        blob = subprocess.run(["git", "hash-object", rel], cwd=tmp, check=True,
                              capture_output=True, text=True).stdout.strip()
        return f.read_bytes() if blob.startswith(m.group(1)) else None


def pristine_from_tarball(rels):
    """{rel: content} of those of rels that the 6.12 tarball has."""
    if not rels or not Path(TARBALL).is_file():
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        # Members it lacks make tar fail; what it has is extracted anyway.
        subprocess.run(["tar", "-C", tmp, "--strip-components=1", "-xf", TARBALL,
                        "--wildcards"] + [f"*/{r}" for r in rels], capture_output=True)
        return {r: Path(tmp, r).read_bytes() for r in rels if Path(tmp, r).is_file()}


def is_overlay(path, dirs):
    """Whether path is a file of the overlay directories dirs, rather than a
    file only the wiring changes (as helpers.c)."""
    return path in overlay_files(tuple(dirs))


def strip_overlay(text, dirs):
    """(text without its overlay sections and its diffstat, the paths of the
    changed 6.12 files among those sections)."""
    header, sections, trailer = split(text)
    keep = [s for p, s in sections if not is_overlay(p, dirs)]
    changed = [p for p, s in sections if is_overlay(p, dirs) and not is_new(s)]
    cut = header.rfind("\n---\n")
    if cut >= 0:
        header = header[:cut] + "\n---\n\n"
    return header + "".join(keep) + trailer, changed


def wiring(text, dirs):
    """What apply-to-tree.sh applies: text without its overlay sections.  The
    changed 6.12 files it leaves to the overlay are named before the first
    diff (patch skips that text), so that a file going back to 6.12's makes a
    new series for the build cache, not a tree that lacks it."""
    out, changed = strip_overlay(text, dirs)
    if changed:
        cut = out.find("\ndiff --git ") + 1 or len(out)
        out = out[:cut] + "".join(f"overlay replaces {p}\n" for p in changed) + out[cut:]
    return out


def diffstat(diff):
    """git's diffstat of diff, as format-patch writes it under '---'."""
    with tempfile.NamedTemporaryFile("w", suffix=".patch") as f:
        f.write(diff)
        f.flush()
        out = subprocess.run(["git", "apply", "--stat", "--summary", f.name],
                             check=True, capture_output=True, text=True,
                             cwd=tempfile.gettempdir()).stdout
    return out


def generate(text, dirs, tarball=False):
    """text with its overlay sections made from the overlay as it is; with
    tarball, the pristine side of a changed 6.12 file may come from there."""
    old = dict(split(text)[1])
    rels = overlay_files(dirs)
    pristine = {rel: pristine_of(rel, old[rel]) for rel in rels if rel in old}
    if tarball:
        pristine.update(pristine_from_tarball(
            [r for r in rels if pristine.get(r) is None]))
    header, sections, trailer = split(strip_overlay(text, dirs)[0])
    for rel in rels:
        if pristine.get(rel) is not None:
            sections.append((rel, changed_file_section(rel, pristine[rel])))
        elif rel in old and not is_new(old[rel]):
            if tarball:
                sys.exit(f"{rel}: its section does not give 6.12's file, and {TARBALL} "
                         "does not have it")
            # A changed 6.12 file whose section is stale: check says so.
            sections.append((rel, ""))
        else:
            sections.append((rel, new_file_section(rel)))
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
    if cmd == "changed":
        for p in sorted(PATCHES.glob("*.patch")):
            if owner(p):
                print("".join(f"{rel}\n" for rel in strip_overlay(p.read_text(), owner(p))[1]),
                      end="")
        return 0
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
        new = generate(old, dirs, tarball=cmd == "update")
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
