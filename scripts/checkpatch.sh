#!/usr/bin/env bash
# Run the kernel's checkpatch.pl; fails on any error, warning or check.
#
# usage: scripts/checkpatch.sh PATCH     a patch of kernel/patches
#        scripts/checkpatch.sh --overlay the overlay's sources as files (-f):
#                                        rust/kernel/**/*.rs, rust/helpers/*.c,
#                                        drivers/pvmm/**/*.rs, but the files
#                                        6.12 has (series.py changed): their
#                                        own lines are upstream's, and pvmm's
#                                        are checked in the patch
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
changed=$("$PVMM_TOP/scripts/series.py" changed)
for f in $(find rust/kernel rust/helpers drivers/pvmm \( -name '*.rs' -o -name '*.c' \) \
	! -name '*.mod.c' | LC_ALL=C sort); do
	grep -qxF "$f" <<<"$changed" && continue
	"$src/scripts/checkpatch.pl" "${opts[@]}" --terse -f "$f" || rc=1
done
[ "$rc" = 0 ] && echo "checkpatch clean: the overlay's sources"
exit "$rc"
