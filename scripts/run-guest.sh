#!/usr/bin/env bash
# Boot a pvmm guest under QEMU against a freshly started host stub and run
# one job in it.  The console goes to stdout and to $LOG.  With GUESTS=N,
# N guests boot at once against one host stub (one socket, shared memory and
# ring each); their consoles go to $LOG with .0, .1, ... before the suffix.
#
# usage: scripts/run-guest.sh KERNEL-IMAGE INITRAMFS JOB [KERNEL-ARGS...]
# env:   ARCH (x86_64 or arm64; by default the image's own), ACCEL (tcg,
#        icount or kvm; below), ICOUNT (-icount options), SMP (2),
#        MEM (1024), TIMEOUT seconds (900), LOG, NO_DEVICE=1 (boot
#        without the ivshmem device), HOST_ARGS (extra pvmm-host options),
#        HOST_STATS (where the host stub writes its counters), KERNEL_ARGS
#        (more kernel command line), GUESTS (1), QEMU_CPUS and HOST_CPUS
#        (taskset CPU lists for QEMU and for the host stub; empty: any)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

kernel=${1:?usage: $0 KERNEL-IMAGE INITRAMFS JOB [ARGS...]}
initrd=${2:?initramfs}
job=${3:?job}
shift 3
# Without ARCH, an arm64 Image says what it is: "ARM\x64" at offset 56.
if [ -z "${ARCH:-}" ] && [ "$(dd if="$kernel" bs=1 skip=56 count=4 2>/dev/null)" = ARMd ]; then
	set_arch arm64
fi

host=${PVMM_HOST:-$PVMM_TOP/host-stubs/target/release/pvmm-host}
[ -x "$host" ] || die "$host missing: build host-stubs first"
run=$(mktemp -d)
log=${LOG:-$run/console.log}
hstats=${HOST_STATS:-$run/host.stats}
guests=${GUESTS:-1}
socks=()
logs=()
for i in $(seq 0 $((guests - 1))); do
	socks+=("$run/ivshmem.$i.sock")
	if [ "$guests" = 1 ]; then
		logs+=("$log")
	else
		logs+=("${log%.*}.$i.${log##*.}")
	fi
done
hpid=
cleanup() {
	if [ -n "$hpid" ]; then
		kill -TERM "$hpid" 2>/dev/null || true
		wait "$hpid" 2>/dev/null || true
	fi
	rm -rf "$run"
}
trap cleanup EXIT

if [ "${NO_DEVICE:-0}" != 1 ]; then
	hargs=()
	for s in "${socks[@]}"; do
		hargs+=(--socket "$s")
	done
	# shellcheck disable=SC2086
	${HOST_CPUS:+taskset -c "$HOST_CPUS"} "$host" "${hargs[@]}" \
		--stats-file "$hstats" ${HOST_ARGS:-} >"$run/host.log" 2>&1 &
	hpid=$!
	for s in "${socks[@]}"; do
		for _ in $(seq 100); do
			[ -S "$s" ] && break
			kill -0 "$hpid" 2>/dev/null ||
				{ cat "$run/host.log" >&2; die "host stub died"; }
			sleep 0.1
		done
		[ -S "$s" ] || die "host stub did not create $s"
	done
fi

# ACCEL: tcg, multi-threaded TCG (the default); icount, single-threaded TCG
# whose guest clock follows the guest's instructions (ICOUNT: the -icount
# options), so that the host preempting QEMU does not show as guest
# latency; kvm (as KVM=1).
# shellcheck disable=SC2054 # QEMU's option values hold commas
case "${ACCEL:-tcg}" in
tcg) accel=(-accel tcg,thread=multi) ;;
icount) accel=(-accel tcg,thread=single -icount "${ICOUNT:-shift=0,sleep=on}") ;;
kvm) accel=(-accel kvm) ;;
*) die "ACCEL=$ACCEL: tcg, icount or kvm" ;;
esac
[ "${KVM:-0}" = 1 ] && accel=(-accel kvm)
# The board: x86_64 is QEMU's default pc with SeaBIOS and a 16550 UART;
# arm64 is virt with a GICv3 (its ITS takes the MSI-X writes of the ivshmem
# device), PSCI and a PL011.  Under TCG, -cpu max emulates pointer
# authentication with QEMU's own cheap algorithm (pauth-impdef) rather than
# QARMA, which would cost more than the guest's own work.
case "$PVMM_ARCH" in
arm64)
	# shellcheck disable=SC2054 # QEMU's option values hold commas
	qemu=(qemu-system-aarch64 -M virt,gic-version=3)
	cpu=max
	[ "${KVM:-0}" = 1 ] || cpu=max,pauth-impdef=on
	qemu+=(-cpu "$cpu")
	console=ttyAMA0
	;;
*)
	qemu=(qemu-system-x86_64 -cpu max)
	console=ttyS0
	;;
esac

# qemu_guest I: boot guest I, console to its log.
qemu_guest() {
	local dev=()
	[ "${NO_DEVICE:-0}" = 1 ] ||
		dev=(-chardev "socket,path=${socks[$1]},id=ivs"
		     -device "ivshmem-doorbell,chardev=ivs,vectors=1")
	timeout --foreground "${TIMEOUT:-900}" \
		${QEMU_CPUS:+taskset -c "$QEMU_CPUS"} "${qemu[@]}" \
		"${accel[@]}" -smp "${SMP:-2}" -m "${MEM:-1024}" \
		-nographic -no-reboot -nodefaults -serial stdio \
		-kernel "$kernel" -initrd "$initrd" \
		-append "console=$console panic=-1 oops=panic loglevel=6 log_buf_len=4M pvmm.job=$job ${KERNEL_ARGS:-} $ARGS" \
		"${dev[@]}" 2>&1
}
ARGS="$*"

set +e
if [ "$guests" = 1 ]; then
	qemu_guest 0 | tee "$log"
else
	pids=()
	for i in $(seq 0 $((guests - 1))); do
		qemu_guest "$i" </dev/null >"${logs[$i]}" &
		pids+=($!)
	done
	wait "${pids[@]}"
fi
set -e

# The host stub exits 0 on SIGTERM; anything else (a panic, a failed
# slot) fails the run.
hrc=0
if [ -n "$hpid" ]; then
	kill -TERM "$hpid" 2>/dev/null || true
	wait "$hpid" || hrc=$?
	hpid=
	echo "PVMM-HOST-LOG-BEGIN"
	tail -n 20 "$run/host.log"
	echo "PVMM-HOST-LOG-END"
fi
for l in "${logs[@]}"; do
	grep -q PVMM-GUEST-END "$l" || { echo "guest did not finish: $l" >&2; exit 1; }
done
[ "$hrc" = 0 ] || { echo "host stub exited with status $hrc" >&2; exit 1; }
exit 0
