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
. "$(dirname "$0")/check-lib.sh"
cd "$PVMM_TOP" || exit 1
pvmm_lock
unset ARCH
set_arch x86_64
# A fresh directory for the logs (check-lib.sh names it).
rm -rf "$logs"
mkdir -p "$logs"

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
step "bench tests (plan.py, run.py parsing, report.py, compare.py)" /usr/bin/python3 -m unittest discover -s bench -p 'test_*.py'

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


read -ra GUEST_ARGS <<<"${PVMM_GUEST_ARGS:-}"
# Every host audits the guest's pgd releases (see check_audit).
AUDIT=--audit-releases
# A deliberately slow host (every DESTROY costs at least this much), so the
# credit cap is reached and creation throttling is exercised.
SLOW_HOST="$AUDIT ${PVMM_CHECK_HOST_ARGS:---cost-base-us 5000}"
# The latency test runs in a guest of its own, under icount (the guest's
# clock follows its instructions, so host load does not show as latency),
# against a slower host (but not so slow that a synchronous wait reaches
# sync_timeout_ms) whose worker yields to the vCPU: one vCPU, so that the
# worker has a core of its own.  Under icount off and async maxima repeat
# (4 to 7 us in every boot tried, x86_64 and arm64), so async must stay
# within 110 % of off plus 10 us, more than that whole floor.  A
# host wait shows as the guest instructions the vCPU spins through, which
# can be 100 times the host's cost when the worker waits for a core: 2 ms
# per DESTROY keeps that far from sync_timeout_ms.
LATENCY_HOST="$AUDIT ${PVMM_CHECK_LATENCY_HOST_ARGS:---cost-base-us 2000 --worker-nice 19}"
LATENCY_BOUNDS="pvmm.env.PVMM_LAT_MAX_PCT=110 pvmm.env.PVMM_LAT_MAX_SLACK_US=10"
LATENCY_BOUNDS+=" pvmm.env.PVMM_LAT_P999_PCT=110 pvmm.env.PVMM_LAT_P999_SLACK_US=10"
LATENCY_ARGS="pvmm.env.PVMM_ONLY=pvmm_latency pvmm.env.PVMM_LAT_SECONDS=3 ${PVMM_CHECK_LATENCY_BOUNDS:-$LATENCY_BOUNDS}"
# Tests that need a host of their own run only in their own guests.
EXCLUDE_OWN_HOST=pvmm.env.PVMM_EXCLUDE=pvmm_latency,pvmm_faults,pvmm_credits
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
	# still gets ahead of them and makes the credits throttle; exits
	# come some 200 ms apart, so batches get a 1 s flush deadline.
	KMEMLEAK=1 KUNIT=1 run_guest "pvmm=y,kasan,smp=2" "$build_kasan/$KIMAGE" \
		"$PVMM_AOUT/initramfs-y.cpio.gz" pass SMP=2 \
		HOST_ARGS="$AUDIT --cost-base-us 50000" \
		KERNEL_ARGS="pvmm.mode=chunked page_poison=1 pvmm.env.PVMM_STORM_MIB=8 pvmm.env.PVMM_BATCH_FLUSH_US=1000000 $EXCLUDE_OWN_HOST,pvmm_reload"
fi
if [ -n "$tests" ] && [ -n "$build_m" ] && [ -n "$ko" ] &&
	step "initramfs, module" scripts/initramfs.sh "$PVMM_AOUT/initramfs-m.cpio.gz" \
		"$tests" "$ko"; then
	run_guest "pvmm=m,smp=4" "$build_m/$KIMAGE" \
		"$PVMM_AOUT/initramfs-m.cpio.gz" pass SMP=4 HOST_ARGS="$SLOW_HOST" \
		KERNEL_ARGS="$EXCLUDE_OWN_HOST"
	# Latency beside a storm in every mode, under icount.
	run_guest "latency,smp=1" "$build_m/$KIMAGE" \
		"$PVMM_AOUT/initramfs-m.cpio.gz" pass ACCEL=icount SMP=1 \
		HOST_ARGS="$LATENCY_HOST" KERNEL_ARGS="$LATENCY_ARGS"
	# The credits at default settings against the paper's trap: a host
	# whose teardown worker runs at SCHED_IDLE while the guest keeps both
	# vCPUs busy (multi-threaded TCG, so the vCPU threads fill the host's
	# cores).  2 ms per DESTROY keeps a starved worker within
	# host_timeout_ms.
	run_guest "credits,smp=2" "$build_m/$KIMAGE" \
		"$PVMM_AOUT/initramfs-m.cpio.gz" pass SMP=2 \
		HOST_ARGS="$AUDIT ${PVMM_CHECK_CREDITS_HOST_ARGS:---cost-base-us 2000 --worker-sched idle}" \
		KERNEL_ARGS=pvmm.env.PVMM_ONLY=pvmm_credits
	# Hosts that misbehave on purpose (pvmm-host --fault), one guest each.
	# break-ring breaks the ring after 40 requests, inside the first storm;
	# stall and late-ack outlast host_timeout_ms and the detach deadline.
	for f in never-ack cq-flood irq-storm dup-ack forged-ack break-ring:40 \
		break-ring-back:40 stall:3000 late-ack:12000 no-irq stop:200 \
		no-wakeup; do
		# loglevel=4: the driver's rate-limited warnings about the
		# host stay in the log the tests read, off the console they
		# print their results on.
		# forged-ack: a slow host, so that processes exit before the
		# host reaches their CREATE and a forged DESTROY completion
		# comes while the real DESTROY is still queued.
		# stop: a ring of 8, which the CREATEs fill, so that every
		# DESTROY waits in the guest's backlog, none in flight.
		keeps=0
		case $f in
		forged-ack) cost="--cost-base-us 5000" ;;
		stop:*) cost="--sq-entries 8 --cq-entries 8" keeps=1 ;;
		*) cost= ;;
		esac
		KEEPS_OBJECTS=$keeps run_guest "fault=$f,smp=2" "$build_m/$KIMAGE" \
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
src=
for b in $a64_m $a64_y; do
	[ -n "$src" ] || src=$(cat "$b/pvmm-src" 2>/dev/null)
done
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
		"$PVMM_AOUT/initramfs-m.cpio.gz" pass ARCH=arm64 ACCEL=icount SMP=1 \
		HOST_ARGS="$LATENCY_HOST" KERNEL_ARGS="$LATENCY_ARGS"
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
