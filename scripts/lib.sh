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
die() { printf '[pvmm] error: %s\n' "$*" >&2; exit 1; }

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
