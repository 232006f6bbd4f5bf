#!/usr/bin/env bash
# Boot a pvmm guest under QEMU against a freshly started host stub and run
# one job in it.  The console goes to stdout and to $LOG.
#
# usage: scripts/run-guest.sh BZIMAGE INITRAMFS JOB [KERNEL-ARGS...]
# env:   SMP (2), MEM (1024), TIMEOUT seconds (900), LOG, NO_DEVICE=1 (boot
#        without the ivshmem device), HOST_ARGS (extra pvmm-host options),
#        HOST_STATS (where the host stub writes its counters), KERNEL_ARGS
#        (more kernel command line)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

kernel=${1:?usage: $0 BZIMAGE INITRAMFS JOB [ARGS...]}
initrd=${2:?initramfs}
job=${3:?job}
shift 3

host=${PVMM_HOST:-$PVMM_TOP/host-stubs/target/release/pvmm-host}
[ -x "$host" ] || die "$host missing: build host-stubs first"
run=$(mktemp -d)
sock=$run/ivshmem.sock
log=${LOG:-$run/console.log}
hstats=${HOST_STATS:-$run/host.stats}
hpid=
cleanup() {
	if [ -n "$hpid" ]; then
		kill -TERM "$hpid" 2>/dev/null || true
		wait "$hpid" 2>/dev/null || true
	fi
	rm -rf "$run"
}
trap cleanup EXIT

dev=()
if [ "${NO_DEVICE:-0}" != 1 ]; then
	# shellcheck disable=SC2086
	"$host" --socket "$sock" --stats-file "$hstats" ${HOST_ARGS:-} \
		>"$run/host.log" 2>&1 &
	hpid=$!
	for _ in $(seq 100); do
		[ -S "$sock" ] && break
		kill -0 "$hpid" 2>/dev/null || { cat "$run/host.log" >&2; die "host stub died"; }
		sleep 0.1
	done
	[ -S "$sock" ] || die "host stub did not create $sock"
	dev=(-chardev "socket,path=$sock,id=ivs"
	     -device "ivshmem-doorbell,chardev=ivs,vectors=1")
fi

accel=(-accel tcg,thread=multi)
[ "${KVM:-0}" = 1 ] && accel=(-accel kvm)

set +e
timeout --foreground "${TIMEOUT:-900}" qemu-system-x86_64 \
	"${accel[@]}" -cpu max -smp "${SMP:-2}" -m "${MEM:-1024}" \
	-nographic -no-reboot -nodefaults -serial stdio \
	-kernel "$kernel" -initrd "$initrd" \
	-append "console=ttyS0 panic=-1 oops=panic loglevel=6 pvmm.job=$job ${KERNEL_ARGS:-} $*" \
	"${dev[@]}" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e

if [ -n "$hpid" ]; then
	kill -TERM "$hpid" 2>/dev/null || true
	wait "$hpid" 2>/dev/null || true
	hpid=
	echo "PVMM-HOST-LOG-BEGIN"
	tail -n 20 "$run/host.log"
	echo "PVMM-HOST-LOG-END"
fi
grep -q PVMM-GUEST-END "$log" || { echo "guest did not finish (rc=$rc)" >&2; exit 1; }
exit 0
