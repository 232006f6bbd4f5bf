# Shared settings for the pvmm scripts; source it, do not run it.
# shellcheck shell=bash

PVMM_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Everything built or cached lives outside the repository.
PVMM_CACHE=${PVMM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pvmm}
PVMM_OUT=${PVMM_OUT:-$PVMM_CACHE/out}
JOBS=${JOBS:-$(($(nproc) + 1))}
export CCACHE_DIR=${CCACHE_DIR:-$PVMM_CACHE/ccache}
export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-5G}

log() { printf '[pvmm] %s\n' "$*" >&2; }
warn() { printf '[pvmm] warning: %s\n' "$*" >&2; }
die() { printf '[pvmm] error: %s\n' "$*" >&2; exit 1; }

# Pinned versions (scripts/versions.sh, rust-toolchain.toml).  The kernel
# build runs in the source tree, outside this repository, so the toolchain
# file alone would not reach it: RUSTUP_TOOLCHAIN does.  The pinned bindgen
# lives in the cache, ahead of any other on PATH.
. "$PVMM_TOP/scripts/versions.sh"
PVMM_RUST_TOOLCHAIN=$(sed -n 's/^channel *= *"\(.*\)"$/\1/p' "$PVMM_TOP/rust-toolchain.toml")
export RUSTUP_TOOLCHAIN=$PVMM_RUST_TOOLCHAIN
PVMM_TOOLS=$PVMM_CACHE/tools/bindgen-$PVMM_BINDGEN_VERSION
case ":$PATH:" in
*":$PVMM_TOOLS/bin:"*) ;;
*) export PATH=$PVMM_TOOLS/bin:$PATH ;;
esac

# pvmm_lock: one make demo, check or bench at a time per cache (they share
# source trees, build directories and outputs).  Taken by the top-level
# script and inherited by everything it starts.
pvmm_lock() {
	[ -z "${PVMM_LOCKED:-}" ] || return 0
	mkdir -p "$PVMM_CACHE"
	exec 9>>"$PVMM_CACHE/lock"
	if ! flock -n 9; then
		log "another pvmm run holds $PVMM_CACHE/lock; waiting for it"
		flock 9
	fi
	export PVMM_LOCKED=1
}

# The guest architecture, from ARCH: x86_64 (the default; x86 too) or arm64
# (aarch64 too).  PVMM_ARCH keys build directories, outputs and guest
# names, so that one cache holds both; KARCH is the kernel's ARCH, KIMAGE
# the boot image in a build directory, PVMM_AOUT the outputs of this
# architecture (module, selftests, initramfs), CROSS the prefix of the C
# compiler for the static selftests.
# shellcheck disable=SC2034 # the variables are for the scripts that source this
set_arch() {
	case "${1:-x86_64}" in
	x86 | x86_64)
		PVMM_ARCH=x86_64 KARCH=x86 KIMAGE=arch/x86/boot/bzImage CROSS= ;;
	arm64 | aarch64)
		PVMM_ARCH=arm64 KARCH=arm64 KIMAGE=arch/arm64/boot/Image
		CROSS=aarch64-linux-gnu- ;;
	*) die "ARCH=$1: pvmm guests are x86_64 or arm64" ;;
	esac
	PVMM_AOUT=$PVMM_OUT/$PVMM_ARCH
}
set_arch "${ARCH:-}"

# Short content hash of files or strings given on stdin.
hash_stdin() { sha256sum | cut -c1-12; }

# ccache in front of clang for C (kernel and host tools) without touching
# the kernel's own CC/HOSTCC variables: rustc links through HOSTCC, which
# must stay a single word.
ccache_path() {
	local d=$PVMM_CACHE/ccache-bin
	if command -v ccache >/dev/null; then
		mkdir -p "$d"
		ln -sf "$(command -v ccache)" "$d/clang"
		printf '%s:%s' "$d" "$PATH"
	else
		printf '%s' "$PATH"
	fi
}
