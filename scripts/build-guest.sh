#!/usr/bin/env bash
# Build what a CONFIG_PVMM=m guest needs: the host stub, the kernel, the
# module (out of tree), the selftests and an initramfs holding them.  Prints
# the kernel build directory on its last line.
#
# usage: scripts/build-guest.sh OUT.cpio.gz
# env:   PVMM_CACHE, JOBS
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$PVMM_TOP"

initrd=${1:?usage: $0 OUT.cpio.gz}
log "building the host stub"
cargo build --release --manifest-path host-stubs/Cargo.toml >&2
build=$(scripts/kernel.sh m)
log "building pvmm.ko out of tree"
make -s -C "$PVMM_TOP" module KDIR="$build" >/dev/null
mkdir -p "$PVMM_OUT"
cp drivers/pvmm/pvmm.ko "$PVMM_OUT/pvmm.ko"
make -s -C "$PVMM_TOP" clean KDIR="$build" >/dev/null 2>&1 || true
make -s -C selftests/pvmm KSRC="$(cat "$build/pvmm-src")" O="$PVMM_OUT/selftests" >&2
scripts/initramfs.sh "$initrd" "$PVMM_OUT/selftests" "$PVMM_OUT/pvmm.ko"
echo "$build"
