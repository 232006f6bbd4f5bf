#!/usr/bin/env bash
# Build a guest initramfs: static busybox, the guest init, the kselftests
# with their run list, cyclictest with the libraries it links and, when
# given, the pvmm module.
#
# usage: [ARCH=x86_64|arm64] scripts/initramfs.sh OUT.cpio.gz SELFTEST_DIR [pvmm.ko]
#
# x86_64 takes busybox and cyclictest from this machine; arm64 takes them
# from Debian's arm64 packages, which install-deps.sh unpacks into
# $PVMM_CACHE/arm64-root.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

out=${1:?usage: $0 OUT.cpio.gz SELFTEST_DIR [pvmm.ko]}
tests=${2:?selftest directory}
ko=${3:-}

busybox=$(command -v busybox || true)
[[ -n $busybox && $(file -L "$busybox" 2>/dev/null) == *static* ]] ||
	busybox=/bin/busybox
[ -x "$busybox" ] || die "static busybox missing: run scripts/install-deps.sh"
# The applets are those of this machine's busybox-static; the arm64 one is
# the same Debian package built for arm64, with the same configuration.
applets=$("$busybox" --list)
arm64_root=$PVMM_CACHE/arm64-root
if [ "$PVMM_ARCH" = arm64 ]; then
	busybox=$arm64_root/bin/busybox
	[ -x "$busybox" ] || die "arm64 busybox missing: run scripts/install-deps.sh"
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp,lib/modules,selftests}
cp "$busybox" "$root/bin/busybox"
for applet in $applets; do
	[ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
install -m 0755 "$PVMM_TOP/scripts/guest/init" "$root/init"
for t in "$tests"/pvmm_*; do
	[ -x "$t" ] && install -m 0755 "$t" "$root/selftests/"
done
install -m 0644 "$tests/kselftest-list.txt" "$root/selftests/"
# cyclictest (Debian's rt-tests) is dynamically linked: bring its libraries
# and loader along at the paths ldd names.
if [ "$PVMM_ARCH" = arm64 ]; then
	# No ldd for a foreign binary: follow DT_NEEDED through the unpacked
	# packages, and put the loader where PT_INTERP names it.  The arm64
	# loader searches /lib/aarch64-linux-gnu.
	ct=$arm64_root/usr/bin/cyclictest
	[ -x "$ct" ] || die "arm64 cyclictest missing: run scripts/install-deps.sh"
	install -m 0755 "$ct" "$root/bin/cyclictest"
	interp=$(readelf -l "$ct" | sed -n 's/.*interpreter: \(.*\)]/\1/p')
	install -D -m 0755 "$(readlink -f "$arm64_root$interp")" "$root$interp"
	todo=("$ct")
	while [ ${#todo[@]} -gt 0 ]; do
		elf=${todo[0]}
		todo=("${todo[@]:1}")
		for so in $(readelf -d "$elf" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
			dst=$root/lib/aarch64-linux-gnu/$so
			[ -e "$dst" ] || [ "/lib/$so" = "$interp" ] && continue
			lib=
			for d in lib usr/lib; do
				[ -e "$arm64_root/$d/aarch64-linux-gnu/$so" ] &&
					lib=$(readlink -f "$arm64_root/$d/aarch64-linux-gnu/$so")
			done
			[ -n "$lib" ] || die "$so (needed by $(basename "$elf")) not in $arm64_root"
			install -D -m 0755 "$lib" "$dst"
			todo+=("$lib")
		done
	done
else
	ct=$(command -v cyclictest || true)
	[ -n "$ct" ] || die "cyclictest missing: run scripts/install-deps.sh"
	install -m 0755 "$ct" "$root/bin/cyclictest"
	for lib in $(ldd "$ct" | grep -o '/[^ ]*'); do
		install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
	done
fi
[ -z "$ko" ] || install -m 0644 "$ko" "$root/lib/modules/pvmm.ko"
(cd "$root" && find . -print0 | LC_ALL=C sort -z |
	cpio --null -o -H newc --quiet) | gzip -1 >"$out"
