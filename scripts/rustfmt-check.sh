#!/usr/bin/env bash
# rustfmt --check on pvmm's kernel Rust, with the kernel's rustfmt settings.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
build=${1:?usage: $0 BUILD_DIR}
src=$(cat "$build/pvmm-src")
cd "$PVMM_TOP"
mapfile -t files < <(find rust/kernel drivers/pvmm -name '*.rs' ! -name '*.mod.rs')
rustfmt --check --edition 2021 --config-path "$src/.rustfmt.toml" "${files[@]}"
echo "rustfmt clean: ${#files[@]} files"
