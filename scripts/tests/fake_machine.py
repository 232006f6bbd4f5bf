#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""A simulated Debian machine for testing the setup scripts.

Installed on PATH under the names of the commands it stands in for
(apt-get, apt-cache, dpkg, dpkg-query, dpkg-deb, sudo, id, rustup, cargo,
bindgen), it answers from a state file ($FAKE_MACHINE, JSON) and appends
every call to $FAKE_MACHINE.log, one JSON object a line.  The state says
what is installed, which suites the apt sources name, what the archive
holds per suite, and which calls fail; see new_machine() in
test_install_deps.py for its fields.

What it imitates, because the scripts depend on it:
- apt-cache policy prints the way apt does, one line at a time, and dies
  of SIGPIPE when its reader goes away;
- apt only knows what the last apt-get update fetched, and an update with
  arm64 enabled on a mirror without arm64 fails;
- sudo drops DEBIAN_FRONTEND, as its env_reset does;
- apt-get refuses an unknown -t release, and with --no-remove refuses to
  replace an installed qemu-utils by one of another version.
"""

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(os.environ["FAKE_MACHINE"])
URI = "file:/srv/fake-archive/debian"
HOST = "x86_64-unknown-linux-gnu"


def load():
    return json.loads(STATE.read_text())


def save(m):
    STATE.write_text(json.dumps(m, indent=1, sort_keys=True))


def log(cmd, args):
    entry = {"cmd": cmd, "args": args,
             "frontend": os.environ.get("DEBIAN_FRONTEND"),
             "sudo": os.environ.get("FAKE_SUDO") == "1"}
    with open(str(STATE) + ".log", "a") as f:
        f.write(json.dumps(entry) + "\n")


def out(lines, slow=False):
    """Print lines; slow: one write and flush per line, as apt does."""
    for line in lines:
        sys.stdout.write(line + "\n")
        if slow:
            sys.stdout.flush()
            time.sleep(0.001)
    sys.stdout.flush()


def uid(m):
    return 0 if m.get("root", True) or os.environ.get("FAKE_SUDO") == "1" else 1000


def fail_once(m, what):
    """True if the state asks for this call to fail (counts down)."""
    n = m.get("fail", {}).get(what, 0)
    if n > 0:
        m["fail"][what] = n - 1
        save(m)
        return True
    return False


def refused(m, what, url):
    """apt's failures: no root for the lock, or an injected fetch error."""
    if uid(m) != 0:
        print("E: Could not open lock file - open (13: Permission denied)", file=sys.stderr)
        return True
    if fail_once(m, what):
        print(f"E: Failed to fetch {URI}/{url}", file=sys.stderr)
        return True
    return False


def vercmp(a, op, b):
    return subprocess.call(["/usr/bin/dpkg", "--compare-versions", a, op, b]) == 0


def configured_suites(m):
    """Suites the apt sources name, including files added under the
    sources directory the test gives ($PVMM_APT_SOURCES_DIR)."""
    suites = list(m["sources"])
    d = os.environ.get("PVMM_APT_SOURCES_DIR")
    if d and Path(d).is_dir():
        for f in sorted(Path(d).glob("*.sources")):
            for line in f.read_text().splitlines():
                if line.startswith("Suites:"):
                    suites += line.split()[1:]
    return suites


def prio(suite):
    return 100 if suite.endswith("-backports") else 500


def offers(m, pkg):
    """[(version, suite)] apt knows for pkg ("name" or "name:arm64")."""
    arch = "arm64" if pkg.endswith(":arm64") else "amd64"
    name = pkg.split(":")[0]
    res = []
    for suite, pkgs in m["lists"].get(arch, {}).items():
        if name in pkgs:
            res.append((pkgs[name], suite))
    return res


def candidate(m, pkg):
    best = None
    for v, s in offers(m, pkg):
        if best is None or prio(s) > prio(best[1]) or \
                (prio(s) == prio(best[1]) and vercmp(v, "gt", best[0])):
            best = (v, s)
    inst = m["installed"].get(pkg)
    if inst and (best is None or vercmp(inst, "gt", best[0])):
        return inst  # apt does not downgrade on its own
    return best[0] if best else None


# --- the commands ---------------------------------------------------------------

def apt_cache(m, args):
    if args[0] == "policy" and len(args) == 1:
        lines = ["Package files:", " 100 /var/lib/dpkg/status", "     release a=now"]
        for s in configured_suites(m):
            lines += [f" {prio(s)} {URI} {s}/main amd64 Packages",
                      f"     release n={s},c=main,b=amd64"]
        out(lines, slow=True)
        return 0
    if args[0] != "policy":
        return 100
    lines = []
    for pkg in args[1:]:
        vs = offers(m, pkg)
        inst = m["installed"].get(pkg)
        if not vs and not inst:
            continue
        lines += [f"{pkg}:", f"  Installed: {inst or '(none)'}",
                  f"  Candidate: {candidate(m, pkg) or '(none)'}", "  Version table:"]
        versions = sorted({v for v, _ in vs} | ({inst} if inst else set()),
                          key=functools.cmp_to_key(
                              lambda a, b: 0 if a == b else 1 if vercmp(a, "gt", b) else -1),
                          reverse=True)
        for v in versions:
            mark = "***" if v == inst else "   "
            suites = [s for vv, s in vs if vv == v]
            lines.append(f" {mark} {v} {max([prio(s) for s in suites] + [100])}")
            for s in suites:
                lines.append(f"        {prio(s)} {URI} {s}/main amd64 Packages")
            if v == inst:
                lines.append("        100 /var/lib/dpkg/status")
    out(lines, slow=True)
    return 0


def apt_get(m, args):
    opts = [a for a in args if a.startswith("-")]
    words = [a for a in args if not a.startswith("-")]
    release = None
    if "-t" in args:
        release = args[args.index("-t") + 1]
        words.remove(release)
    simulate = "-s" in opts
    verb, pkgs = words[0], words[1:]
    if verb == "update":
        if refused(m, "update", "dists/bookworm/InRelease"):
            return 100
        rc = 0
        lists = {"amd64": {}, "arm64": {}}
        for s in configured_suites(m):
            lists["amd64"][s] = {k: v for k, v in m["archive"].get(s, {}).items()
                                 if not k.endswith(":arm64")}
            if "arm64" in m["foreign"]:
                if m.get("mirror_arm64", True):
                    lists["arm64"][s] = {k[:-6]: v for k, v in m["archive"].get(s, {}).items()
                                         if k.endswith(":arm64")}
                else:
                    print(f"E: Failed to fetch {URI}/dists/{s}/main/binary-arm64/Packages"
                          "  404  Not Found", file=sys.stderr)
                    rc = 100
        m["lists"] = lists
        save(m)
        return rc
    if verb == "download":
        for p in pkgs:
            v = candidate(m, p)
            if v is None:
                print(f"E: Can't select candidate version for {p}", file=sys.stderr)
                return 100
            name, arch = (p.split(":") + ["amd64"])[:2]
            Path(f"{name}_{v.replace(':', '%3a')}_{arch}.deb").write_text(f"{name}\n")
        return 0
    if verb != "install":
        return 100
    if release and release not in configured_suites(m):
        print(f"E: The value '{release}' is invalid for APT::Default-Release as such a"
              " release is not available in the sources", file=sys.stderr)
        return 100
    chosen = {}
    for p in pkgs:
        name, _, want = p.partition("=")
        vs = offers(m, name)
        if want:
            if not any(v == want for v, _ in vs):
                print(f"E: Version '{want}' for '{name}' was not found", file=sys.stderr)
                return 100
            chosen[name] = want
        elif release and any(s == release for _, s in vs):
            chosen[name] = [v for v, s in vs if s == release][0]
        elif candidate(m, name):
            chosen[name] = candidate(m, name)
        else:
            print(f"E: Unable to locate package {name}", file=sys.stderr)
            return 100
    utils = m["installed"].get("qemu-utils")
    clash = [n for n, v in chosen.items() if n.startswith("qemu-system") and utils and v != utils]
    if clash:
        print("The following packages will be REMOVED:\n  qemu-utils")
        if "--no-remove" in opts:
            print("E: Packages need to be removed but remove is disabled.", file=sys.stderr)
            return 100
    if simulate:
        return 0
    if refused(m, "install", "pool/main/x.deb"):
        return 100
    if clash:
        del m["installed"]["qemu-utils"]
    m["installed"].update(chosen)
    save(m)
    return 0


def dpkg(m, args):
    if args[0] == "--compare-versions":
        return subprocess.call(["/usr/bin/dpkg"] + args)
    if args[0] == "--print-foreign-architectures":
        out(m["foreign"])
        return 0
    if args[0] in ("--add-architecture", "--remove-architecture"):
        if uid(m) != 0:
            print("dpkg: error: requested operation requires superuser privilege",
                  file=sys.stderr)
            return 2
        if args[0] == "--add-architecture" and args[1] not in m["foreign"]:
            m["foreign"].append(args[1])
        elif args[0] == "--remove-architecture" and args[1] in m["foreign"]:
            m["foreign"].remove(args[1])
        save(m)
        return 0
    return 2


def dpkg_query(m, args):
    fmt = [a for a in args if a.startswith("-f=")][0][3:]
    pkg = args[-1]
    v = m["installed"].get(pkg)
    if v is None:
        print(f"dpkg-query: no packages found matching {pkg}", file=sys.stderr)
        return 1
    sys.stdout.write(fmt.replace("${Status}", "install ok installed").replace("${Version}", v))
    return 0


def dpkg_deb(m, args):
    deb, dest = Path(args[1]), Path(args[2])
    name = deb.read_text().strip()
    (dest / "usr/share/doc" / name).mkdir(parents=True, exist_ok=True)
    return 0


def rustup(m, args):
    rust = m["rust"]
    if args[:2] == ["toolchain", "list"]:
        out([f"{t}-{HOST}" for t in rust["toolchains"]])
        return 0
    if args[:2] == ["toolchain", "install"]:
        if fail_once(m, "rustup"):
            return 1
        comps = args[args.index("--component") + 1].split(",")
        rust["toolchains"][args[2]] = ["cargo", "rustc", "rust-std"] + comps
        save(m)
        return 0
    tc = args[args.index("--toolchain") + 1]
    if tc not in rust["toolchains"]:
        print(f"error: toolchain '{tc}' is not installed", file=sys.stderr)
        return 1
    if args[:3] == ["component", "list", "--installed"]:
        out([c if c == "rust-src" else f"{c}-{HOST}" for c in rust["toolchains"][tc]])
        return 0
    if args[:2] == ["component", "add"]:
        if fail_once(m, "rustup"):
            print("error: component download failed", file=sys.stderr)
            return 1
        rust["toolchains"][tc].append(args[-1])
        save(m)
        return 0
    return 1


def cargo(m, args):
    if args[0] != "install":
        return 1
    if fail_once(m, "cargo"):
        print("error: failed to compile `bindgen-cli`", file=sys.stderr)
        return 101
    root = Path(args[args.index("--root") + 1])
    ver = args[args.index("--version") + 1]
    (root / "bin").mkdir(parents=True, exist_ok=True)
    b = root / "bin/bindgen"
    b.write_text(f"#!/bin/sh\necho 'bindgen {ver}'\n")
    b.chmod(0o755)
    return 0


def bindgen(m, args):
    # The Debian package's bindgen, when the state has it.
    v = m.get("debian_bindgen")
    if not v:
        print("bindgen: command not found", file=sys.stderr)
        return 127
    print(f"bindgen {v}")
    return 0


def sudo(m, args):
    if m.get("root", True):
        print("sudo: running as root already", file=sys.stderr)
    env = dict(os.environ, FAKE_SUDO="1")
    env.pop("DEBIAN_FRONTEND", None)
    return subprocess.call(args, env=env)


def ident(m, args):
    if args == ["-u"]:
        print(uid(m))
        return 0
    return 0 if args == ["_apt"] else 1


COMMANDS = {"apt-cache": apt_cache, "apt-get": apt_get, "dpkg": dpkg,
            "dpkg-query": dpkg_query, "dpkg-deb": dpkg_deb, "rustup": rustup,
            "cargo": cargo, "bindgen": bindgen, "sudo": sudo, "id": ident}


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    cmd = Path(sys.argv[0]).name
    args = sys.argv[1:]
    m = load()
    if cmd not in ("dpkg", "id") or args[:1] not in (["--compare-versions"], ["-u"]):
        log(cmd, args)
    sys.exit(COMMANDS[cmd](m, args))


if __name__ == "__main__":
    main()
