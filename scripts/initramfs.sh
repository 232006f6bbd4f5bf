#!/usr/bin/env bash
# Build a guest initramfs: static busybox, the guest init, the kselftests
# with their run list, cyclictest with the libraries it links and, when
# given, the pvmm module.
#
# usage: scripts/initramfs.sh OUT.cpio.gz SELFTEST_DIR [pvmm.ko]
set -euo pipefail
. "$(dirname "$0")/lib.sh"

out=${1:?usage: $0 OUT.cpio.gz SELFTEST_DIR [pvmm.ko]}
tests=${2:?selftest directory}
ko=${3:-}

busybox=$(command -v busybox || true)
[ -n "$busybox" ] && file -L "$busybox" 2>/dev/null | grep -q static ||
	busybox=/bin/busybox
[ -x "$busybox" ] || die "static busybox missing: run scripts/install-deps.sh"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp,lib/modules,selftests}
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
	[ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
install -m 0755 "$PVMM_TOP/scripts/guest/init" "$root/init"
for t in "$tests"/pvmm_*; do
	[ -x "$t" ] && install -m 0755 "$t" "$root/selftests/"
done
install -m 0644 "$tests/kselftest-list.txt" "$root/selftests/"
# cyclictest (Debian's rt-tests) is dynamically linked: bring its libraries
# and loader along at the paths ldd names.
ct=$(command -v cyclictest || true)
[ -n "$ct" ] || die "cyclictest missing: run scripts/install-deps.sh"
install -m 0755 "$ct" "$root/bin/cyclictest"
for lib in $(ldd "$ct" | grep -o '/[^ ]*'); do
	install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
done
[ -z "$ko" ] || install -m 0644 "$ko" "$root/lib/modules/pvmm.ko"
(cd "$root" && find . -print0 | LC_ALL=C sort -z |
	cpio --null -o -H newc --quiet) | gzip -1 >"$out"
