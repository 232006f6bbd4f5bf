#!/usr/bin/env bash
# Build what a CONFIG_PVMM=m guest needs: the host stub, the kernel, the
# module (out of tree), the selftests and an initramfs holding them.  Prints
# the kernel build directory on its last line.
#
# usage: [ARCH=x86_64|arm64] scripts/build-guest.sh OUT.cpio.gz
# env:   PVMM_CACHE, JOBS
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$PVMM_TOP"

initrd=${1:?usage: $0 OUT.cpio.gz}
log "building the host stub"
cargo build --release --manifest-path host-stubs/Cargo.toml >&2
build=$(scripts/kernel.sh m)
log "building pvmm.ko out of tree"
make -s -C "$PVMM_TOP" module KDIR="$build" ARCH="$KARCH" >/dev/null
mkdir -p "$PVMM_AOUT"
cp drivers/pvmm/pvmm.ko "$PVMM_AOUT/pvmm.ko"
make -s -C "$PVMM_TOP" clean KDIR="$build" ARCH="$KARCH" >/dev/null 2>&1 || true
make -s -C selftests/pvmm KSRC="$(cat "$build/pvmm-src")" CROSS_COMPILE="$CROSS" \
	O="$PVMM_AOUT/selftests" >&2
scripts/initramfs.sh "$initrd" "$PVMM_AOUT/selftests" "$PVMM_AOUT/pvmm.ko"
echo "$build"
