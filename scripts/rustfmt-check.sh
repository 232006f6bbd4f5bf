#!/usr/bin/env bash
# rustfmt --check on pvmm's kernel Rust, with the kernel's rustfmt settings.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
build=${1:?usage: $0 BUILD_DIR}
src=$(cat "$build/pvmm-src")
cd "$PVMM_TOP"
# rustfmt follows out-of-line modules: those of the 6.12 files the overlay
# carries (init.rs has init/*.rs) are only in the kernel tree, so these
# files are checked there, as the copies apply-to-tree.sh made of them.
changed=$(scripts/series.py changed)
files=()
while IFS= read -r f; do
	if grep -qxF "$f" <<<"$changed"; then
		cmp -s "$f" "$src/$f" || die "$src/$f is not the overlay's $f"
		f=$src/$f
	fi
	files+=("$f")
done < <(find rust/kernel drivers/pvmm -name '*.rs' ! -name '*.mod.rs' | LC_ALL=C sort)
rustfmt --check --edition 2021 --config-path "$src/.rustfmt.toml" "${files[@]}"
echo "rustfmt clean: ${#files[@]} files"
