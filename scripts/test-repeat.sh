#!/usr/bin/env bash
# Runs the whole suite N times (default 5) on a clean clone of HEAD, the way CI
# does (`bash .ci/run` in the clone), and prints one line per run. For finding
# tests that fail by chance: a run that fails keeps its log.
#   npm run test:repeat -- 5
# Only committed work is tested: the clone is of HEAD, not of the work tree.
set -uo pipefail
top=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
runs=${1:-5}
case "$runs" in '' | *[!0-9]* | 0) echo "usage: npm run test:repeat -- N   (N ≥ 1 runs)" >&2; exit 2 ;; esac

work=$(mktemp -d -t camfleet-repeat-XXXXXX)
git clone -q "$top" "$work/camfleet" || exit 1
commit=$(git -C "$work/camfleet" rev-parse --short HEAD)
echo "test:repeat: $runs runs of commit $commit in $work/camfleet (logs beside it)"

failed=0
for i in $(seq 1 "$runs"); do
  log="$work/run-$i.log"
  start=$(date +%s)
  (cd "$work/camfleet" && CI=true bash .ci/run </dev/null >"$log" 2>&1)
  rc=$?
  secs=$(($(date +%s) - start))
  counts=$(grep -E '^tests: [0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
  if [ "$rc" -eq 0 ]; then
    printf 'run %d/%d: passed  %-34s %4d s\n' "$i" "$runs" "${counts:-tests: (no count)}" "$secs"
  else
    failed=$((failed + 1))
    printf 'run %d/%d: FAILED  %-34s %4d s  exit %d, log %s\n' "$i" "$runs" "${counts:-tests: (no count)}" "$secs" "$rc" "$log"
    grep -E '^ +(FAIL|×)|✗|FAIL ' "$log" | head -n 10 | sed 's/^/    /'
  fi
done

if [ "$failed" -eq 0 ]; then
  echo "test:repeat: $runs of $runs runs passed"
  rm -rf "$work"
else
  echo "test:repeat: $failed of $runs runs failed; logs in $work"
  exit 1
fi
