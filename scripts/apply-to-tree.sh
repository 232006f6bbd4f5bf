#!/usr/bin/env bash
# Apply pvmm to a Linux 6.12.y source tree: the patches in kernel/patches,
# then the overlay (rust/kernel, rust/helpers, drivers/pvmm).  Safe to run
# again: applied patches are detected, and overlay files are only rewritten
# when their content changed, so incremental kernel builds stay incremental.
# The patches also carry the overlay's files (scripts/series.py), but those
# sections are left out here and the files copied instead, so that an edited
# overlay file is an incremental change, not a different series.  That goes
# for the 6.12 files the overlay carries changed too (series.py changed):
# the overlay's copy is the patched file.
#
# usage: scripts/apply-to-tree.sh KSRC
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
ksrc=${1:?usage: $0 KSRC}
[ -f "$ksrc/Makefile" ] || { echo "$ksrc: not a kernel tree" >&2; exit 1; }

for tool in patch make; do
	command -v "$tool" >/dev/null ||
		{ echo "$tool is missing: run scripts/install-deps.sh" >&2; exit 1; }
done
ver=$(make -s -C "$ksrc" kernelversion 2>/dev/null)
case "$ver" in
6.12|6.12.*) ;;
*) echo "$ksrc: Linux $ver; pvmm needs 6.12.y" >&2; exit 1 ;;
esac

# Applied patches are recorded in the tree, by the hash of what was applied:
# once the whole series is in, a later patch's hunks (the MAINTAINERS lines of
# 0002 and 0003) stand in the way of an earlier one's reverse dry run. A
# tree patched by other means is recognised by that dry run, patch by patch.
applied="$ksrc/.pvmm-patches"
touch "$applied"
wiring=$(mktemp)
trap 'rm -f "$wiring"' EXIT
for p in "$top"/kernel/patches/*.patch; do
	"$top/scripts/series.py" wiring "$p" >"$wiring"
	id="$(sha256sum <"$wiring" | cut -c1-16) $(basename "$p")"
	grep -qxF "$id" "$applied" && continue
	if ! patch -d "$ksrc" -p1 -R -s -f --dry-run <"$wiring" >/dev/null 2>&1; then
		# Whole or not at all: a patch that stops half way leaves a
		# tree that can be neither patched nor reversed.
		if ! out=$(patch -d "$ksrc" -p1 -N -s -f --dry-run <"$wiring" 2>&1); then
			printf '%s\n' "$out" >&2
			echo "$(basename "$p") does not apply to $ksrc; nothing of it was applied" >&2
			exit 1
		fi
		patch -d "$ksrc" -p1 -N -s <"$wiring"
	fi
	echo "$id" >>"$applied"
done

# Overlay: the project's kernel sources, copied only when they differ.  Files
# an earlier run copied that no longer exist here are removed, so the tree
# never builds something the project has dropped.
manifest="$ksrc/.pvmm-overlay"
files=$(cd "$top" && find rust/kernel rust/helpers drivers/pvmm -type f \
	\( -name '*.rs' -o -name '*.c' -o -name '*.h' -o -name Kconfig \
	   -o -name Makefile \) ! -name '*.mod.c' | LC_ALL=C sort)
for f in $files; do
	cmp -s "$top/$f" "$ksrc/$f" || install -D -m 0644 "$top/$f" "$ksrc/$f"
done
if [ -f "$manifest" ]; then
	for f in $(LC_ALL=C comm -23 "$manifest" <(echo "$files")); do
		rm -f "$ksrc/$f"
	done
fi
echo "$files" >"$manifest"

echo "pvmm applied to Linux $ver in $ksrc"
