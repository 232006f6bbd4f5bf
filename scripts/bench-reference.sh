#!/usr/bin/env bash
# make bench-reference: run make bench (PRESET=full unless PRESET says
# otherwise) and copy what a reader of the run needs into
# Documentation/bench-reference: report.md, results.json and every plot
# report.md links.  Arguments go to scripts/bench.sh.  The files of the old
# reference (report.md, results.json, *.png, *.svg there) are removed only
# once the new run has delivered, so that a failed run keeps the old one.
#
# usage: scripts/bench-reference.sh [RUN.PY-OPTIONS...]
# env:   PRESET (full, the default here; quick; smoke), PVMM_CACHE, JOBS
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$PVMM_TOP"

export PRESET=${PRESET:-full}
ref=Documentation/bench-reference
# Held across the run and the copy, so that "latest" is this run's; bench.sh
# sees PVMM_LOCKED and does not take it again.
pvmm_lock
latest=$PVMM_CACHE/bench/latest
before=$(readlink "$latest" || true)
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
	warn "the tree has uncommitted changes: the reference will say (dirty)"
fi

rc=0
PVMM_BENCH_TARGET="make bench-reference" scripts/bench.sh "$@" || rc=$?
run=$(readlink "$latest" || true)
# bench.sh points "latest" at its run before the first boot; if it still
# names the old run, this one never started.
if [ -z "$run" ] || [ "$run" = "$before" ]; then
	die "make bench made no new run directory (exit status $rc); $ref unchanged"
fi
for f in results.json report.md; do
	[ -s "$run/$f" ] || die "$run has no $f (make bench exit status $rc); $ref unchanged"
done

# The plots report.md links, by bare file name: nothing outside the run.
mapfile -t plots < <(grep -oE '\]\([A-Za-z0-9._-]+\.(png|svg)\)' "$run/report.md" |
	sed 's/^](//; s/)$//' | sort -u || true)
for f in "${plots[@]}"; do
	[ -s "$run/$f" ] || die "report.md links $f, which $run lacks; $ref unchanged"
done

mkdir -p "$ref"
rm -f "$ref/report.md" "$ref/results.json" "$ref"/*.png "$ref"/*.svg
cp "$run/report.md" "$run/results.json" "$ref/"
for f in "${plots[@]}"; do
	cp "$run/$f" "$ref/"
done
log "reference: $ref (${#plots[@]} plot files) from $run"
if [ "$rc" -ne 0 ]; then
	warn "make bench exited with status $rc: report.md lists the boots that failed"
fi
exit "$rc"
