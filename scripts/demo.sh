#!/usr/bin/env bash
# pvmm demo: install what is missing, build the host stub, a CONFIG_PVMM=m
# guest kernel, the module (out of tree), the selftests and an initramfs;
# start the host stub, boot the guest under QEMU, run a fork/exit teardown
# storm and show what happened on both sides.
#
# env: ARCH (x86_64, the default, or arm64), PVMM_CACHE, JOBS, SMP, MEM,
#      HOST_ARGS (e.g. "--cost-us-per-mib 200"),
#      PVMM_GUEST_ARGS (e.g. "pvmm.env.PVMM_STORM_PROCS=128")
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$PVMM_TOP"

pvmm_lock
scripts/install-deps.sh "$PVMM_ARCH"
build=$(scripts/build-guest.sh "$PVMM_AOUT/initramfs-demo.cpio.gz")

console=$PVMM_AOUT/demo-console.log
hstats=$PVMM_AOUT/demo-host.stats
log "booting Linux $(cat "$build/pvmm-kernel-version") ($PVMM_ARCH) under QEMU; console: $console"
# shellcheck disable=SC2086
LOG=$console HOST_STATS=$hstats scripts/run-guest.sh "$build/$KIMAGE" \
	"$PVMM_AOUT/initramfs-demo.cpio.gz" demo ${PVMM_GUEST_ARGS:-} >/dev/null

tr -d '\r' <"$console" | python3 "$PVMM_TOP/scripts/demo-report.py" "$hstats"
