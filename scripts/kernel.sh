#!/usr/bin/env bash
# Build a pvmm guest kernel.
#
# usage: [ARCH=x86_64|arm64] scripts/kernel.sh y|m|kasan|y-plain
#   y: CONFIG_PVMM=y (driver built in), the debug kernel
#   m: CONFIG_PVMM=m (driver as a module, also built out of tree)
#   kasan: the debug kernel with KASAN as well (make check-full)
#   y-plain: CONFIG_PVMM=y on the module kernel's configuration, without
#   the debug options: ccache serves nearly all of its C from the m build
#   ARCH: the guest architecture (default x86_64); arm64 is cross-built
#   with LLVM=1 and needs no cross binutils.
#
# The source is Debian's linux-source-6.12 (whatever 6.12.y is installed) or
# $KSRC, with kernel/patches and the overlay applied by apply-to-tree.sh.
# Build directories are keyed by kernel version, architecture, patches and
# config, and reused: make's own dependency tracking rebuilds what the
# overlay changed.
# Prints the build directory on stdout.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

variant=${1:?usage: $0 y|m|kasan|y-plain}
case "$variant" in
y | m) pvmm=$variant ;;
# The KASAN kernel is the built-in debug kernel plus kasan.config.
kasan | y-plain) pvmm=y ;;
*) die "variant must be y, m, kasan or y-plain" ;;
esac

# The overlay's files in the patches do not count: apply-to-tree.sh copies
# them, and an edited one must not look like a new series.
patch_hash=$(for p in "$PVMM_TOP"/kernel/patches/*.patch; do
	"$PVMM_TOP/scripts/series.py" wiring "$p"
done | hash_stdin)

# prune DIR KEEP WHY: trees and builds of versions no longer used go: the
# entries of DIR whose names do not start with KEEP.
prune() {
	local old
	for old in "$1"/*; do
		[ -e "$old" ] || continue
		case "${old##*/}" in
		"$2"*) ;;
		*) log "removing $old ($3)"; rm -rf "$old" ;;
		esac
	done
}

# extract: a fresh tree from Debian's tarball.  Marked complete only at the
# end, so an interrupted extraction is redone.
extract() {
	log "extracting $LINUX_SOURCE $pkgver"
	rm -rf "$src" "$src.tmp"
	mkdir -p "$src.tmp"
	tar -C "$src.tmp" --strip-components=1 -xf "$tarball"
	mv "$src.tmp" "$src"
	touch "$src/.pvmm-extracted"
}
LINUX_SOURCE=linux-source-6.12
if [ -n "${KSRC:-}" ]; then
	src=$KSRC
	"$PVMM_TOP/scripts/apply-to-tree.sh" "$src" >&2
else
	tarball=${PVMM_LINUX_TARBALL:-/usr/src/$LINUX_SOURCE.tar.xz}
	[ -f "$tarball" ] || die "$tarball missing: run scripts/install-deps.sh"
	pkgver=$(dpkg-query -W -f='${Version}' "$LINUX_SOURCE")
	[ "$pkgver" = "$PVMM_LINUX_SOURCE_VERSION" ] ||
		warn "building $LINUX_SOURCE $pkgver; pvmm is tested with $PVMM_LINUX_SOURCE_VERSION"
	src=$PVMM_CACHE/src/linux-$pkgver-$patch_hash
	prune "$PVMM_CACHE/src" "linux-$pkgver-" "another $LINUX_SOURCE"
	[ -f "$src/.pvmm-extracted" ] || extract
	# A tree the series does not apply to cleanly (a run stopped while
	# patching, a hand edit) is extracted again, once.
	if ! "$PVMM_TOP/scripts/apply-to-tree.sh" "$src" >&2; then
		log "$src: the patches do not apply; extracting it again"
		extract
		"$PVMM_TOP/scripts/apply-to-tree.sh" "$src" >&2 ||
			die "kernel/patches do not apply to $LINUX_SOURCE $pkgver"
	fi
fi
kver=$(make -s -C "$src" kernelversion)

# The built-in kernel is the debug one (lockdep, sleep-in-atomic checks,
# kmemleak, DEBUG_VM, page poisoning); the module kernel is what a user would
# run, with the timerlat tracer that make bench reads, and y-plain is that
# configuration with the driver built in.
fragments=("$PVMM_TOP/kernel/configs/pvmm.config"
	"$PVMM_TOP/kernel/configs/$PVMM_ARCH.config")
case "$variant" in
y | kasan) fragments+=("$PVMM_TOP/kernel/configs/debug.config") ;;
m | y-plain) fragments+=("$PVMM_TOP/kernel/configs/timerlat.config") ;;
esac
[ "$variant" = kasan ] && fragments+=("$PVMM_TOP/kernel/configs/kasan.config")
cfg_hash=$( (echo "$kver $PVMM_ARCH $variant $patch_hash"; cat "${fragments[@]}") |
	hash_stdin)
build=$PVMM_CACHE/build/$kver-$PVMM_ARCH-pvmm$variant-$cfg_hash
prune "$PVMM_CACHE/build" "$kver-" "another kernel version"
mkdir -p "$build"
export PATH
PATH=$(ccache_path)
mk() { make -C "$src" O="$build" ARCH="$KARCH" LLVM=1 "$@"; }

# Rust must be usable before configuring: without it Kconfig drops
# CONFIG_RUST silently.  Say why, in the kernel's words.
if ! out=$(mk rustavailable 2>&1); then
	printf '%s\n' "$out" >&2
	die "the kernel finds no usable Rust toolchain (above); run scripts/install-deps.sh"
fi

# The configuration is done when .pvmm-configured exists: one that failed
# part way (tinyconfig written, fragments not merged) is started over.
if [ ! -f "$build/.pvmm-configured" ]; then
	log "configuring $kver, $PVMM_ARCH $variant kernel, CONFIG_PVMM=$pvmm"
	rm -f "$build/.config"
	mk tinyconfig >/dev/null
	"$src/scripts/kconfig/merge_config.sh" -m -O "$build" "$build/.config" \
		"${fragments[@]}" >/dev/null
	echo "CONFIG_PVMM=$pvmm" >>"$build/.config"
	mk olddefconfig >/dev/null
	config=$(<"$build/.config")
	[[ $'\n'$config$'\n' == *$'\n'"CONFIG_PVMM=$pvmm"$'\n'* ]] ||
		die "CONFIG_PVMM=$pvmm did not survive olddefconfig"
	[[ $'\n'$config$'\n' == *$'\n'CONFIG_RUST=y$'\n'* ]] || die "CONFIG_RUST is off"
	# Every option a fragment asks for must have survived olddefconfig.
	for opt in $(grep -h '^CONFIG_.*=y$' "${fragments[@]}"); do
		[[ $'\n'$config$'\n' == *$'\n'"$opt"$'\n'* ]] || die "$opt did not survive olddefconfig"
	done
	touch "$build/.pvmm-configured"
fi

# The Rust objects whose warnings make check counts are compiled in every
# build, so that a build with nothing else to do still shows them (with
# CLIPPY=1, under clippy): the kernel crate and the built-in driver.
rm -f "$build/rust/kernel.o" "$build"/drivers/pvmm/*.o

targets=("$(basename "$KIMAGE")")
[ "$variant" = m ] && targets+=(modules)
log "building $kver for $PVMM_ARCH (pvmm=$variant) in $build"
mk -j"$JOBS" CLIPPY="${CLIPPY:-1}" "${targets[@]}" >"$build/build.log" 2>&1 || {
	tail -40 "$build/build.log" >&2
	die "kernel build failed; log: $build/build.log"
}
echo "$kver" >"$build/pvmm-kernel-version"
echo "$src" >"$build/pvmm-src"
echo "$PVMM_ARCH" >"$build/pvmm-arch"
log "built Linux $kver for $PVMM_ARCH (pvmm=$variant): $build/$KIMAGE"
echo "$build"
