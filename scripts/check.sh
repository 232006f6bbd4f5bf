#!/usr/bin/env bash
# pvmm test runner: installs what is missing, builds everything from the
# project's sources and runs every test.  One result line per check, then
# the summary line "N passed, N failed" that CI reads.
#
# env: PVMM_CACHE (build cache, default ~/.cache/pvmm), JOBS, TIMEOUT
#
# Both guest architectures are tested: x86_64 first, then arm64 on QEMU's
# virt board.  Every command is given its ARCH explicitly.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
cd "$PVMM_TOP" || exit 1
pvmm_lock
unset ARCH
set_arch x86_64

pass=0
fail=0
skip=0
logs=$PVMM_OUT/check
rm -rf "$logs"
mkdir -p "$logs"

result() {	# name rc
	if [ "$2" = 0 ]; then
		pass=$((pass + 1))
		echo "ok - $1"
	else
		fail=$((fail + 1))
		echo "not ok - $1"
	fi
}

# step NAME CMD...: run CMD with output in a log; show the tail on failure.
step() {
	local name=$1 log
	shift
	log=$logs/$(printf '%s' "$name" | tr -c 'A-Za-z0-9_.-' _).log
	STEP_LOG=$log	# for the caller, to read what the step printed
	"$@" >"$log" 2>&1
	local rc=$?
	[ "$rc" = 0 ] || { tail -n 30 "$log" | sed 's/^/#   /'; echo "#   log: $log"; }
	result "$name" "$rc"
	return "$rc"
}

finish() {
	echo "# skipped: $skip (logs in $logs)"
	echo "$pass passed, $fail failed"
	[ "$fail" = 0 ]
	exit
}

# arm64 needs more than x86_64 (a foreign architecture in apt): a machine
# that cannot have it still runs the x86_64 half, and the arm64 half fails.
step "install dependencies (x86_64)" scripts/install-deps.sh x86_64 || finish
arm64_deps=
step "install dependencies (arm64)" scripts/install-deps.sh arm64 && arm64_deps=1
# The setup scripts themselves: install-deps.sh on simulated machines,
# reruns of kernel.sh and apply-to-tree.sh after failures, and shellcheck.
step "setup scripts on simulated machines (scripts/tests)" \
	/usr/bin/python3 -m unittest discover -s scripts/tests
step "shellcheck scripts/ and .ci/run" shellcheck -S warning -x -P SCRIPTDIR \
	scripts/*.sh scripts/guest/init .ci/run

# --- userspace: host stub and wire format -----------------------------------
cargo_dir=host-stubs
step "cargo fmt --check" cargo fmt --manifest-path $cargo_dir/Cargo.toml --all -- --check
step "cargo clippy -D warnings" cargo clippy --manifest-path $cargo_dir/Cargo.toml \
	--all-targets -- -D warnings
cargo test --manifest-path $cargo_dir/Cargo.toml >"$logs/cargo-test.log" 2>&1
crc=$?
while read -r p f; do
	pass=$((pass + p))
	fail=$((fail + f))
done < <(sed -n 's/^test result: [a-zA-Z]*\. \([0-9]*\) passed; \([0-9]*\) failed.*/\1 \2/p' \
	"$logs/cargo-test.log")
echo "# cargo test: $(grep -c '^test result' "$logs/cargo-test.log") suites"
[ "$crc" = 0 ] || result "cargo test (exit status)" "$crc"
step "build host stub" cargo build --release --manifest-path $cargo_dir/Cargo.toml
# The wire handshakes under every interleaving loom allows (a target
# directory of its own: --cfg loom rebuilds everything).
step "loom models of the wire handshakes" env RUSTFLAGS="--cfg loom" \
	CARGO_TARGET_DIR=$cargo_dir/target/loom cargo test --release \
	--manifest-path $cargo_dir/Cargo.toml -p pvmm-wire --test loom
# --- make bench: its parsing and report, on synthetic input ---------------------
step "bench tests (run.py parsing, report.py)" /usr/bin/python3 -m unittest discover -s bench -p 'test_*.py'

# --- kernels: CONFIG_PVMM=y and =m, module out of tree ------------------------
build_y=
build_m=
if step "kernel build CONFIG_PVMM=y (CLIPPY=1)" scripts/kernel.sh y; then
	build_y=$(tail -n 1 "$STEP_LOG")
fi
if step "kernel build CONFIG_PVMM=m (CLIPPY=1)" scripts/kernel.sh m; then
	build_m=$(tail -n 1 "$STEP_LOG")
fi
# make check-full: the debug kernel once more, with KASAN.
build_kasan=
if [ "${PVMM_CHECK_FULL:-0}" = 1 ] &&
	step "kernel build CONFIG_PVMM=y with KASAN (CLIPPY=1)" scripts/kernel.sh kasan; then
	build_kasan=$(tail -n 1 "$STEP_LOG")
fi
for b in $build_y $build_m $build_kasan; do
	step "no Rust warnings in pvmm code ($(basename "$b"))" scripts/rust-warnings.sh \
		"$b/build.log"
done
# --- kernel patches (checkpatch.pl comes from the extracted tree) -----------
for p in kernel/patches/*.patch; do
	step "checkpatch $(basename "$p")" "$PVMM_TOP/scripts/checkpatch.sh" "$p"
done
step "kernel/patches carry the overlay as it is (scripts/series.py check)" \
	"$PVMM_TOP/scripts/series.py" check
step "kernel/patches apply to pristine linux-source-6.12 on their own" \
	"$PVMM_TOP/scripts/series.py" verify /usr/src/linux-source-6.12.tar.xz
step "checkpatch -f rust/kernel, rust/helpers, drivers/pvmm" \
	"$PVMM_TOP/scripts/checkpatch.sh" --overlay

ko=
if [ -n "$build_m" ]; then
	if step "out-of-tree module build (make KDIR=..., CLIPPY=1)" \
		make -C "$PVMM_TOP" clippy KDIR="$build_m"; then
		oot_log=$STEP_LOG
		cp "$PVMM_TOP/drivers/pvmm/pvmm.ko" "$logs/pvmm.ko"
		ko=$logs/pvmm.ko
		step "no Rust warnings in the out-of-tree build" scripts/rust-warnings.sh "$oot_log" \
			drivers/pvmm/pvmm.o
	fi
	make -C "$PVMM_TOP" clean KDIR="$build_m" >/dev/null 2>&1
	step "rustfmt --check (kernel Rust)" scripts/rustfmt-check.sh "$build_m"
fi

# --- selftests in the guest -----------------------------------------------------
tests=$PVMM_AOUT/selftests
src=$(cat "$build_m/pvmm-src" 2>/dev/null || true)
step "build selftests" make -C selftests/pvmm KSRC="${src:-}" O="$tests" || tests=

# Skips a guest that must pass may report: the module kernel has no
# boot-time mode to check.  Any other skip there is a failure, so that a
# driver that fails to bind cannot pass by skipping everything.
SKIP_OK='pvmm is a module'

# check_console NAME CONSOLE pass|skip: count each TAP result of one guest.
# "skip" expects every test program to exit 4; "pass" expects each to exit 0.
check_console() {
	local name=$1 console=$2 expect=$3 line t=
	tr -d '\r' <"$console" >"$console.txt"
	while IFS= read -r line; do
		case "$line" in
		PVMM-TEST-BEGIN*) t=${line#PVMM-TEST-BEGIN } ;;
		"ok "*"# SKIP"*)
			if [ "$expect" = pass ] && ! grep -q "$SKIP_OK" <<<"$line"; then
				result "$name: $t: ${line#ok } (a skip where every test must run)" 1
				continue
			fi
			skip=$((skip + 1))
			echo "# skip - $name: $t: ${line#ok }"
			;;
		"ok "*) [ "$expect" = skip ] || result "$name: $t: ${line#ok }" 0 ;;
		"not ok "*) result "$name: $t: ${line#not ok }" 1 ;;
		PVMM-TEST-END*)
			local trc=${line##*rc=}
			if [ "$expect" = skip ]; then
				result "$name: $t exits 4 (skip)" "$([ "$trc" = 4 ] && echo 0 || echo 1)"
			elif [ "$trc" != 0 ]; then
				result "$name: $t exit status $trc" 1
			fi
			;;
		esac
	done <"$console.txt"
	# KUnit at boot: each suite passed as a whole, and nothing in it failed.
	while read -r line; do
		local suite=${line#*suite=} passed=${line#*passed=} failed=${line#*failed=}
		suite=${suite%% *}
		passed=${passed%% *}
		result "guest $name: KUnit $suite: $passed ok, $failed not ok" \
			"$([ "$failed" = 0 ] && [ "$passed" -gt 0 ] && echo 0 || echo 1)"
	done < <(grep -o 'PVMM-KUNIT suite=.*' "$console.txt")
	if [ "${KUNIT:-}" = 1 ] && ! grep -q 'PVMM-KUNIT suite=rust_doctests_kernel' "$console.txt"; then
		result "guest $name: the kernel crate's doctests ran" 1
	fi
	line=$(grep -o 'PVMM-KMEMLEAK leaks=[0-9]*' "$console.txt" | tail -n 1)
	if [ -n "$line" ]; then
		result "guest $name: kmemleak finds no leak (${line#PVMM-KMEMLEAK })" \
			"$([ "${line##*=}" = 0 ] && echo 0 || echo 1)"
	elif [ "${KMEMLEAK:-}" = 1 ]; then
		result "guest $name: kmemleak scanned at the end" 1
	fi
	if grep -q 'Kernel panic\|BUG:\|WARNING:\|Oops' "$console.txt"; then
		result "guest $name: no kernel BUG/WARNING/Oops/panic" 1
	else
		result "guest $name: no kernel BUG/WARNING/Oops/panic" 0
	fi
}

# check_audit NAME OUT SLOT: the host stub's release audit of one slot (its
# last stats line in OUT): it read the guest's release log, and no pgd was
# released before the host had acknowledged its DESTROY.
check_audit() {
	local line audited premature left
	line=$(grep -o "stats slot$3: .*" "$2" | tail -n 1)
	# A host with one slot prints its totals only.
	[ -n "$line" ] || line=$(grep -o "stats: .*" "$2" | tail -n 1)
	audited=$(sed -n 's/.* releases_audited=\([0-9]*\).*/\1/p' <<<"$line")
	premature=$(sed -n 's/.* premature_releases=\([0-9]*\).*/\1/p' <<<"$line")
	echo "# host audit $1: ${audited:-?} releases audited, ${premature:-?} premature"
	result "host audit $1: releases audited, none before its acknowledgement" \
		"$([ "${audited:-0}" -gt 0 ] && [ "${premature:-1}" = 0 ] && echo 0 || echo 1)"
	# The guest's reboot (pci shutdown) reset the host before it went away.
	left=$(sed -n "s/.*slot$3: peer [0-9]* disconnected; dropping its \([0-9]*\) host objects.*/\1/p" "$2" | tail -n 1)
	result "host $1: the guest's shutdown left no object on the host (${left:-?} left)" \
		"$([ "${left:-1}" = 0 ] && echo 0 || echo 1)"
}

# run_guest NAME BZIMAGE INITRD pass|skip [ENV...]: boot, run the selftests.
# Guests that must pass run against a host that audits every pgd release.
run_guest() {
	local name=$1 kernel=$2 initrd=$3 expect=$4 console out
	shift 4
	console=$logs/guest-$name.log
	out=$logs/guest-$name.out
	env "$@" LOG="$console" scripts/run-guest.sh "$kernel" "$initrd" check \
		"${GUEST_ARGS[@]}" >"$out" 2>&1
	result "guest $name: boots and finishes" "$?"
	check_console "$name" "$console" "$expect"
	[ "$expect" = pass ] && check_audit "$name" "$out" 0
}

# run_pair BZIMAGE INITRD: one host stub serves two guests at once, each with
# its own socket, shared memory and ring, each running the storms.
run_pair() {
	local out=$logs/guest-pair.out i line destroys cpu
	env GUESTS=2 SMP=1 HOST_ARGS="$SLOW_HOST" \
		KERNEL_ARGS=pvmm.env.PVMM_ONLY=pvmm_storm LOG="$logs/guest-pair.log" \
		scripts/run-guest.sh "$1" "$2" check "${GUEST_ARGS[@]}" >"$out" 2>&1
	result "guest pair: both boot and finish" "$?"
	for i in 0 1; do
		check_console "pair.$i" "$logs/guest-pair.$i.log" pass
		check_audit "pair.$i" "$out" "$i"
	done
	# The host stub's own counters per slot: both guests were served.
	for i in 0 1; do
		line=$(grep -o "stats slot$i: .*" "$out" | tail -n 1)
		echo "# host $line" | cut -c1-400
		destroys=$(sed -n 's/.* destroys=\([0-9]*\).*/\1/p' <<<"$line")
		cpu=$(sed -n 's/.* cpu_us=\([0-9]*\).*/\1/p' <<<"$line")
		result "host stub slot $i: served its guest and accounted its CPU time" \
			"$([ "${destroys:-0}" -gt 0 ] && [ "${cpu:-0}" -gt 0 ] && echo 0 || echo 1)"
	done
}

read -ra GUEST_ARGS <<<"${PVMM_GUEST_ARGS:-}"
# Every host audits the guest's pgd releases (see check_audit).
AUDIT=--audit-releases
# A deliberately slow host (every DESTROY costs at least this much), so the
# credit cap is reached and creation throttling is exercised.
SLOW_HOST="$AUDIT ${PVMM_CHECK_HOST_ARGS:---cost-base-us 5000}"
# The latency test runs in a guest of its own, against a slower host (but
# not so slow that a synchronous wait reaches sync_timeout_ms) whose worker
# yields to the vCPU: one vCPU, so that the worker has a core of its own.
LATENCY_HOST="$AUDIT ${PVMM_CHECK_LATENCY_HOST_ARGS:---cost-base-us 100000 --worker-nice 19}"
# Tests that need a host of their own run only in their own guests.
EXCLUDE_OWN_HOST=pvmm.env.PVMM_EXCLUDE=pvmm_latency,pvmm_faults
if [ -n "$tests" ] && [ -n "$build_y" ] &&
	step "initramfs, built-in driver" scripts/initramfs.sh "$PVMM_AOUT/initramfs-y.cpio.gz" \
		"$tests"; then
	# The debug kernel (kmemleak, lockdep, DEBUG_VM, page poisoning, and
	# the kernel crate's doctests as KUnit tests at boot): every report
	# fails the guest. Its big storm touches 8 MiB per
	# process rather than 32, since under TCG every page these checks
	# poison costs several times more. pvmm_reload needs a module.
	KMEMLEAK=1 KUNIT=1 run_guest "pvmm=y,debug,smp=2" "$build_y/$KIMAGE" \
		"$PVMM_AOUT/initramfs-y.cpio.gz" pass SMP=2 HOST_ARGS="$SLOW_HOST" \
		KERNEL_ARGS="pvmm.mode=chunked page_poison=1 pvmm.env.PVMM_STORM_MIB=8 $EXCLUDE_OWN_HOST,pvmm_reload"
fi
if [ -n "$tests" ] && [ -n "$build_kasan" ]; then
	# KASAN slows exits down so much that only a ten times slower host
	# still gets ahead of them and makes the credits throttle.
	KMEMLEAK=1 KUNIT=1 run_guest "pvmm=y,kasan,smp=2" "$build_kasan/$KIMAGE" \
		"$PVMM_AOUT/initramfs-y.cpio.gz" pass SMP=2 \
		HOST_ARGS="$AUDIT --cost-base-us 50000" \
		KERNEL_ARGS="pvmm.mode=chunked page_poison=1 pvmm.env.PVMM_STORM_MIB=8 $EXCLUDE_OWN_HOST,pvmm_reload"
fi
if [ -n "$tests" ] && [ -n "$build_m" ] && [ -n "$ko" ] &&
	step "initramfs, module" scripts/initramfs.sh "$PVMM_AOUT/initramfs-m.cpio.gz" \
		"$tests" "$ko"; then
	run_guest "pvmm=m,smp=4" "$build_m/$KIMAGE" \
		"$PVMM_AOUT/initramfs-m.cpio.gz" pass SMP=4 HOST_ARGS="$SLOW_HOST" \
		KERNEL_ARGS="$EXCLUDE_OWN_HOST"
	# Latency beside a storm in every mode, against a host slow enough
	# that a blocking teardown stands out of the emulator's noise.
	run_guest "latency,smp=1" "$build_m/$KIMAGE" \
		"$PVMM_AOUT/initramfs-m.cpio.gz" pass SMP=1 HOST_ARGS="$LATENCY_HOST" \
		KERNEL_ARGS=pvmm.env.PVMM_ONLY=pvmm_latency
	# Hosts that misbehave on purpose (pvmm-host --fault), one guest each.
	# break-ring breaks the ring after 40 requests, inside the first storm;
	# stall and late-ack outlast host_timeout_ms and the detach deadline.
	for f in never-ack cq-flood irq-storm dup-ack forged-ack break-ring:40 \
		break-ring-back:40 stall:3000 late-ack:12000; do
		# loglevel=4: the driver's rate-limited warnings about the
		# host stay in the log the tests read, off the console they
		# print their results on.
		# forged-ack: a slow host, so that processes exit before the
		# host reaches their CREATE and a forged DESTROY completion
		# comes while the real DESTROY is still queued.
		case $f in
		forged-ack) cost="--cost-base-us 5000" ;;
		*) cost= ;;
		esac
		run_guest "fault=$f,smp=2" "$build_m/$KIMAGE" \
			"$PVMM_AOUT/initramfs-m.cpio.gz" pass SMP=2 \
			HOST_ARGS="$AUDIT $cost --fault $f" \
			KERNEL_ARGS="pvmm.env.PVMM_ONLY=pvmm_faults pvmm.env.PVMM_FAULT=$f loglevel=4"
	done
	# The modes once more on a single vCPU.
	run_guest "pvmm=m,smp=1" "$build_m/$KIMAGE" \
		"$PVMM_AOUT/initramfs-m.cpio.gz" pass SMP=1 HOST_ARGS="$SLOW_HOST" \
		KERNEL_ARGS=pvmm.env.PVMM_ONLY=pvmm_modes
	run_pair "$build_m/$KIMAGE" "$PVMM_AOUT/initramfs-m.cpio.gz"
	run_guest "no-device" "$build_m/$KIMAGE" \
		"$PVMM_AOUT/initramfs-m.cpio.gz" skip NO_DEVICE=1
	# An ivshmem-doorbell device whose memory carries no pvmm header is
	# someone else's: the driver refuses it at probe and every test skips.
	run_guest "foreign-device" "$build_m/$KIMAGE" \
		"$PVMM_AOUT/initramfs-m.cpio.gz" skip HOST_ARGS="--fault no-header"
	grep -q 'pvmm .*no usable pvmm host: bad magic 0x0' \
		"$logs/guest-foreign-device.log.txt"
	result "guest foreign-device: pvmm refused the unmarked device" $?
fi


# --- arm64: QEMU's virt board (GICv3 with ITS, PL011), cross-built -------------
# The module kernel runs the same selftests as the x86_64 module guest, and
# pvmm_latency in a guest of its own.  A built-in kernel runs the device and
# storm tests: in make check it is the module kernel's configuration with
# CONFIG_PVMM=y (y-plain), whose C ccache serves from the module build; make
# check-full adds the debug configuration (lockdep, kmemleak, DEBUG_VM, page
# poisoning) as on x86_64, a build of its own.  The fault hosts, the guest
# pair and the no-device run do not depend on the guest's architecture and
# run on x86_64 only.
set_arch arm64
a64_m=
a64_y=
a64_dbg=
[ -n "$arm64_deps" ] || finish
if step "arm64 kernel build CONFIG_PVMM=m (CLIPPY=1)" env ARCH=arm64 scripts/kernel.sh m; then
	a64_m=$(tail -n 1 "$STEP_LOG")
fi
if step "arm64 kernel build CONFIG_PVMM=y, module kernel's config (CLIPPY=1)" \
	env ARCH=arm64 scripts/kernel.sh y-plain; then
	a64_y=$(tail -n 1 "$STEP_LOG")
fi
if [ "${PVMM_CHECK_FULL:-0}" = 1 ] &&
	step "arm64 kernel build CONFIG_PVMM=y, debug (CLIPPY=1)" \
		env ARCH=arm64 scripts/kernel.sh y; then
	a64_dbg=$(tail -n 1 "$STEP_LOG")
fi
for b in $a64_m $a64_y $a64_dbg; do
	step "no Rust warnings in pvmm code ($(basename "$b"))" scripts/rust-warnings.sh \
		"$b/build.log"
done
a64_ko=
if [ -n "$a64_m" ]; then
	if step "arm64 out-of-tree module build (make KDIR=... ARCH=arm64, CLIPPY=1)" \
		make -C "$PVMM_TOP" clippy KDIR="$a64_m" ARCH=arm64; then
		oot_log=$STEP_LOG
		mkdir -p "$PVMM_AOUT"
		cp "$PVMM_TOP/drivers/pvmm/pvmm.ko" "$PVMM_AOUT/pvmm.ko"
		a64_ko=$PVMM_AOUT/pvmm.ko
		step "no Rust warnings in the arm64 out-of-tree build" scripts/rust-warnings.sh \
			"$oot_log" drivers/pvmm/pvmm.o
	fi
	make -C "$PVMM_TOP" clean KDIR="$a64_m" ARCH=arm64 >/dev/null 2>&1
fi
a64_tests=$PVMM_AOUT/selftests
src=$(cat "$a64_m/pvmm-src" "$a64_y/pvmm-src" 2>/dev/null | head -n 1)
step "build arm64 selftests (static, ${CROSS}gcc)" make -C selftests/pvmm KSRC="${src:-}" \
	CROSS_COMPILE="$CROSS" O="$a64_tests" || a64_tests=
if [ -n "$a64_tests" ] && [ -n "$a64_m" ] && [ -n "$a64_ko" ] &&
	step "arm64 initramfs (arm64 busybox, cyclictest and its libraries)" \
		env ARCH=arm64 scripts/initramfs.sh "$PVMM_AOUT/initramfs-m.cpio.gz" \
		"$a64_tests" "$a64_ko"; then
	run_guest "arm64,pvmm=m,smp=2" "$a64_m/$KIMAGE" \
		"$PVMM_AOUT/initramfs-m.cpio.gz" pass ARCH=arm64 SMP=2 HOST_ARGS="$SLOW_HOST" \
		KERNEL_ARGS="$EXCLUDE_OWN_HOST"
	run_guest "arm64,latency,smp=1" "$a64_m/$KIMAGE" \
		"$PVMM_AOUT/initramfs-m.cpio.gz" pass ARCH=arm64 SMP=1 HOST_ARGS="$LATENCY_HOST" \
		KERNEL_ARGS=pvmm.env.PVMM_ONLY=pvmm_latency
fi
# The built-in guests: pvmm_device and pvmm_storm.
ONLY_DEVICE_STORM="$EXCLUDE_OWN_HOST,pvmm_reload,pvmm_modes"
if [ -n "$a64_tests" ] && { [ -n "$a64_y" ] || [ -n "$a64_dbg" ]; } &&
	step "arm64 initramfs, built-in driver" \
		env ARCH=arm64 scripts/initramfs.sh "$PVMM_AOUT/initramfs-y.cpio.gz" "$a64_tests"; then
	[ -z "$a64_y" ] ||
		run_guest "arm64,pvmm=y,smp=2" "$a64_y/$KIMAGE" \
			"$PVMM_AOUT/initramfs-y.cpio.gz" pass ARCH=arm64 SMP=2 \
			HOST_ARGS="$SLOW_HOST" KERNEL_ARGS="pvmm.mode=chunked $ONLY_DEVICE_STORM"
	[ -z "$a64_dbg" ] ||
		KMEMLEAK=1 KUNIT=1 run_guest "arm64,pvmm=y,debug,smp=2" "$a64_dbg/$KIMAGE" \
			"$PVMM_AOUT/initramfs-y.cpio.gz" pass ARCH=arm64 SMP=2 \
			HOST_ARGS="$SLOW_HOST" \
			KERNEL_ARGS="pvmm.mode=chunked page_poison=1 pvmm.env.PVMM_STORM_MIB=8 $ONLY_DEVICE_STORM"
fi

finish
