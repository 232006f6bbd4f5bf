#!/usr/bin/env bash
# Fail if a kernel build log has rustc/clippy warnings or errors pointing
# at pvmm's Rust code (the abstractions in rust/kernel and drivers/pvmm).
set -euo pipefail
log=${1:?usage: $0 BUILD.LOG}
ours='(rust/kernel/(pci|io|irq|debugfs|device_printk|timer|module_param|mm_hooks)|rust/helpers/(io|irqflags|mm|pci|sched_signal)|drivers/pvmm/)'
hits=$(grep -E -B6 -- "--> .*$ours" "$log" | grep -E '^(warning|error)' || true)
total=$(grep -cE '^warning' "$log" || true)
echo "rust warnings in the whole build: $total; in pvmm code: $(printf '%s' "$hits" | grep -c . || true)"
[ -z "$hits" ] || { grep -E -B6 -A6 -- "--> .*$ours" "$log"; exit 1; }
