#!/usr/bin/env bash
# Run the kernel's checkpatch.pl on a patch; fails on any error or warning.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
src=$(ls -d "$PVMM_CACHE"/src/linux-* 2>/dev/null | head -n 1)
[ -n "$src" ] || src=${KSRC:-}
[ -x "$src/scripts/checkpatch.pl" ] || die "no kernel tree with checkpatch.pl"
# On stdin: given a file name, this checkpatch may check it as a source file.
"$src/scripts/checkpatch.pl" --no-tree --strict --max-line-length=100 - <"$1"
