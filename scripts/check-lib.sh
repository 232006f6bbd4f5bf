# Helpers of scripts/check.sh, which sources this file after lib.sh: the
# result lines and their counts, steps with a log each, and the checks of
# a guest run (its console and the host stub's output).  What runs is in
# check.sh.
# shellcheck shell=bash

# The counts for the summary line, and the directory of the logs.
pass=0
fail=0
skip=0
logs=$PVMM_OUT/check

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
	# shellcheck disable=SC2034 # for the caller, to read what the step printed
	STEP_LOG=$log
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

# check_console NAME CONSOLE pass|skip: the checks of one guest's console
# (scripts/check-console.py): each TAP result, whether every planned
# program's output is whole, KUnit, kmemleak, the kernel log and the taint.
# "skip" expects every test program to exit 4; "pass" expects each to exit 0.
check_console() {
	local name=$1 console=$2 expect=$3 line opts=()
	tr -d '\r' <"$console" >"$console.txt"
	[ "${KUNIT:-}" = 1 ] && opts+=(--kunit)
	[ "${KMEMLEAK:-}" = 1 ] && opts+=(--kmemleak)
	while IFS= read -r line; do
		case "$line" in
		"ok - "*) pass=$((pass + 1)) ;;
		"not ok - "*) fail=$((fail + 1)) ;;
		"# skip - "*) skip=$((skip + 1)) ;;
		esac
		printf '%s\n' "$line"
	done < <(/usr/bin/python3 "$PVMM_TOP/scripts/check-console.py" "${opts[@]}" \
		"$console.txt" "$name" "$expect" ||
		echo "not ok - guest $name: scripts/check-console.py failed")
}

# check_audit NAME OUT SLOT: the host stub's release audit of one slot (its
# last stats line in OUT): it read the guest's release log, and no pgd was
# released before the host had acknowledged its DESTROY.  KEEPS_OBJECTS=1:
# the host stops serving on purpose, so objects stay on it at shutdown.
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
	if [ "${KEEPS_OBJECTS:-0}" = 1 ]; then
		# A host that stopped serving cannot be reset: what it holds
		# stays, and the guest must say that it left spaces there.
		grep -aq 'pvmm: left [0-9]* live address spaces on the host' "$2"
		result "host $1: a stopped host kept its objects (${left:-?}), and the guest said so" $?
		return
	fi
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
