#!/usr/bin/env bash
# Run the kernel's checkpatch.pl; fails on any error, warning or check.
#
# usage: scripts/checkpatch.sh PATCH     a patch of kernel/patches
#        scripts/checkpatch.sh --overlay the overlay's sources as files (-f):
#                                        rust/kernel/**/*.rs, rust/helpers/*.c,
#                                        drivers/pvmm/**/*.rs
set -euo pipefail
. "$(dirname "$0")/lib.sh"
src=${KSRC:-}
for d in "$PVMM_CACHE"/src/linux-*; do
	[ -n "$src" ] || [ ! -x "$d/scripts/checkpatch.pl" ] || src=$d
done
[ -x "$src/scripts/checkpatch.pl" ] || die "no kernel tree with checkpatch.pl"
opts=(--no-tree --strict --max-line-length=100)
if [ "${1:?usage: $0 PATCH | --overlay}" != --overlay ]; then
	# On stdin: given a file name, this checkpatch may check it as a source file.
	exec "$src/scripts/checkpatch.pl" "${opts[@]}" - <"$1"
fi
# The same options as for the patches, nothing ignored.  checkpatch exits
# non-zero on any error, warning or check.
cd "$PVMM_TOP"
rc=0
for f in $(find rust/kernel drivers/pvmm -name '*.rs' | LC_ALL=C sort) rust/helpers/*.c; do
	"$src/scripts/checkpatch.pl" "${opts[@]}" --terse -f "$f" || rc=1
done
[ "$rc" = 0 ] && echo "checkpatch clean: the overlay's sources"
exit "$rc"
