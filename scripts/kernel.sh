#!/usr/bin/env bash
# Build a pvmm guest kernel.
#
# usage: scripts/kernel.sh y|m
#   y: CONFIG_PVMM=y (driver built in)
#   m: CONFIG_PVMM=m (driver as a module, also built out of tree)
#
# The source is Debian's linux-source-6.12 (whatever 6.12.y is installed) or
# $KSRC, with kernel/patches and the overlay applied by apply-to-tree.sh.
# Build directories are keyed by kernel version, patches and config, and
# reused: make's own dependency tracking rebuilds what the overlay changed.
# Prints the build directory on stdout.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

variant=${1:?usage: $0 y|m}
case "$variant" in y|m) ;; *) die "variant must be y or m" ;; esac

patch_hash=$(cat "$PVMM_TOP"/kernel/patches/*.patch | hash_stdin)

if [ -n "${KSRC:-}" ]; then
	src=$KSRC
else
	tarball=/usr/src/linux-source-6.12.tar.xz
	[ -f "$tarball" ] || die "$tarball missing: run scripts/install-deps.sh"
	pkgver=$(dpkg-query -W -f='${Version}' linux-source-6.12)
	src=$PVMM_CACHE/src/linux-$pkgver-$patch_hash
	if [ ! -f "$src/.pvmm-extracted" ]; then
		log "extracting linux-source-6.12 $pkgver"
		rm -rf "$src" "$src.tmp"
		mkdir -p "$src.tmp"
		tar -C "$src.tmp" --strip-components=1 -xf "$tarball"
		mv "$src.tmp" "$src"
		touch "$src/.pvmm-extracted"
	fi
fi
"$PVMM_TOP/scripts/apply-to-tree.sh" "$src" >&2
kver=$(make -s -C "$src" kernelversion)

# The built-in kernel is the debug one (lockdep, sleep-in-atomic checks);
# the module kernel is what a user would run.
fragments=("$PVMM_TOP/kernel/configs/pvmm.config")
[ "$variant" = y ] && fragments+=("$PVMM_TOP/kernel/configs/debug.config")
cfg_hash=$( (echo "$kver $variant $patch_hash"; cat "${fragments[@]}") | hash_stdin)
build=$PVMM_CACHE/build/$kver-pvmm$variant-$cfg_hash
mkdir -p "$build"
export PATH
PATH=$(ccache_path)
mk() { make -C "$src" O="$build" LLVM=1 "$@"; }

if [ ! -f "$build/.config" ]; then
	log "configuring $kver, CONFIG_PVMM=$variant"
	mk tinyconfig >/dev/null
	"$src/scripts/kconfig/merge_config.sh" -m -O "$build" "$build/.config" \
		"${fragments[@]}" >/dev/null
	echo "CONFIG_PVMM=$variant" >>"$build/.config"
	mk olddefconfig >/dev/null
fi
grep -q "^CONFIG_PVMM=$variant\$" "$build/.config" ||
	die "CONFIG_PVMM=$variant did not survive olddefconfig (is Rust available?)"
grep -q '^CONFIG_RUST=y$' "$build/.config" || die "CONFIG_RUST is off"
# Every option a fragment asks for must have survived olddefconfig.
for opt in $(grep -h '^CONFIG_.*=y$' "${fragments[@]}"); do
	grep -qx "$opt" "$build/.config" || die "$opt did not survive olddefconfig"
done

targets=(bzImage)
[ "$variant" = m ] && targets+=(modules)
log "building $kver (pvmm=$variant) in $build"
mk -j"$JOBS" CLIPPY="${CLIPPY:-1}" "${targets[@]}" >"$build/build.log" 2>&1 || {
	tail -40 "$build/build.log" >&2
	die "kernel build failed; log: $build/build.log"
}
echo "$kver" >"$build/pvmm-kernel-version"
echo "$src" >"$build/pvmm-src"
log "built Linux $kver (pvmm=$variant): $build/arch/x86/boot/bzImage"
echo "$build"
