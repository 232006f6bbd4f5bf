#!/usr/bin/env bash
# make bench: build a CONFIG_PVMM=m guest, run the latency matrix
# (bench/run.py) and write the report and plots (bench/report.py) into a
# new directory under $PVMM_CACHE/bench; "latest" points at it.  Arguments
# go to bench/run.py: --accel icount|tcg, --work process|busy, --vcpu-cpus
# LIST, --worker-cpus LIST, --worker-sched other|batch|idle, --worker-nice N,
# and --seconds N, --repeats N (the preset's phase length and repeats).
#
# usage: scripts/bench.sh [RUN.PY-OPTIONS...]
# env:   PRESET (quick, the default; full; smoke), PVMM_CACHE, JOBS
#        PVMM_BENCH_TARGET (the make target results.json names as the
#        command that reproduces the run; make bench-reference sets it)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$PVMM_TOP"

preset=${PRESET:-quick}
pvmm_lock
# The benchmark's guest is x86_64.
set_arch x86_64
scripts/install-deps.sh x86_64
export ARCH=$PVMM_ARCH
build=$(scripts/build-guest.sh "$PVMM_AOUT/initramfs-bench.cpio.gz" | tail -n 1)
out=$PVMM_CACHE/bench/$(date -u +%Y%m%dT%H%M%SZ)-$preset
mkdir -p "$out"
ln -sfn "$out" "$PVMM_CACHE/bench/latest"
log "results in $out"
rc=0
/usr/bin/python3 bench/run.py --build "$build" \
	--initrd "$PVMM_AOUT/initramfs-bench.cpio.gz" --out "$out" --preset "$preset" \
	--command "${PVMM_BENCH_TARGET:-make bench} PRESET=$preset${*:+ BENCH_ARGS='$*'}" \
	"$@" || rc=$?
/usr/bin/python3 bench/report.py "$out"
log "report: $out/report.md"
exit "$rc"
