#!/usr/bin/env bash
# pvmm demo: install what is missing, build the host stub, a CONFIG_PVMM=m
# guest kernel, the module (out of tree), the selftests and an initramfs;
# start the host stub, boot the guest under QEMU, run a fork/exit teardown
#
# storm and show what happened on both sides; then measure wakeup latency
# beside a storm in off, sync and async and show it as a table.  The guest
# runs under icount (its clock follows its instructions, so host load does
# not show as latency), against a host that spends DEMO_COST_US of CPU per
# DESTROY.
#
# env: ARCH (x86_64, the default, or arm64), PVMM_CACHE, JOBS, SMP (1),
#      MEM, ACCEL (icount), DEMO_COST_US (2000), HOST_ARGS (more host stub
#      options), PVMM_GUEST_ARGS (e.g. "pvmm.env.PVMM_STORM_PROCS=128")
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$PVMM_TOP"

pvmm_lock
scripts/install-deps.sh "$PVMM_ARCH"
build=$(scripts/build-guest.sh "$PVMM_AOUT/initramfs-demo.cpio.gz")

console=$PVMM_AOUT/demo-console.log
hstats=$PVMM_AOUT/demo-host.stats
log "booting Linux $(cat "$build/pvmm-kernel-version") ($PVMM_ARCH) under QEMU; console: $console"
cost=${DEMO_COST_US:-2000}
# shellcheck disable=SC2086
LOG=$console HOST_STATS=$hstats ACCEL=${ACCEL:-icount} SMP=${SMP:-1} \
	HOST_ARGS="--cost-base-us $cost ${HOST_ARGS:-}" scripts/run-guest.sh \
	"$build/$KIMAGE" "$PVMM_AOUT/initramfs-demo.cpio.gz" demo \
	${PVMM_GUEST_ARGS:-} >/dev/null

tr -d '\r' <"$console" |
	python3 "$PVMM_TOP/scripts/demo-report.py" "$hstats" "$((cost / 1000)).$((cost % 1000 / 100)) ms"
