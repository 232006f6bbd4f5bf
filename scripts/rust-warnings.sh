#!/usr/bin/env bash
# Fail if a kernel build log has rustc/clippy warnings or errors pointing
# at pvmm's Rust code (the abstractions in rust/kernel and drivers/pvmm),
# or if the objects that hold that code were not compiled in it under
# clippy: a log of a build with nothing to do would pass vacuously.
#
# usage: scripts/rust-warnings.sh BUILD.LOG [OBJECT...]
#   OBJECT: what must appear compiled ("CLIPPY ... OBJECT"); by default the
#   kernel crate and the driver, rust/kernel.o and drivers/pvmm/pvmm.o.
set -euo pipefail
log=${1:?usage: $0 BUILD.LOG [OBJECT...]}
shift
[ $# -gt 0 ] || set -- rust/kernel.o drivers/pvmm/pvmm.o
text=$(<"$log")
for o in "$@"; do
	re="CLIPPY +(L |\[M\] )?[^ ]*$o"$'\n'
	[[ $text$'\n' =~ $re ]] || {
		echo "$log: $o was not compiled under clippy in this build; its warnings are unseen"
		exit 1
	}
done
ours='(rust/kernel/(pci|io|irq|debugfs|device_printk|timer|module_param|mm_hooks|(init|task|sync/condvar)\.rs)|rust/helpers/(io|irqflags|mm|pci|sched_signal|task)|drivers/pvmm/)'
hits=$(grep -E -B6 -- "--> .*$ours" "$log" | grep -E '^(warning|error)' || true)
total=$(grep -cE '^warning' "$log" || true)
echo "rust warnings in the whole build: $total; in pvmm code: $(printf '%s' "$hits" | grep -c . || true)"
echo "compiled under clippy: $*"
[ -z "$hits" ] || { grep -E -B6 -A6 -- "--> .*$ours" "$log"; exit 1; }
