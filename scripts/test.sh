#!/usr/bin/env bash
# The whole test suite: set-up, type check, then every test against real
# nats-server/ffmpeg processes. Ends with one plain line "tests: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-test.sh || exit 1
echo "camfleet test: type check" >&2
./node_modules/.bin/tsc --noEmit || exit 1

report=$(mktemp -t camfleet-vitest-XXXXXX.json)
trap 'rm -f "$report"' EXIT
./node_modules/.bin/vitest run --reporter=default --reporter=json --outputFile.json="$report" "$@"
rc=$?
if [ -s "$report" ]; then
  node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const skipped = r.numPendingTests + r.numTodoTests;
    console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed` + (skipped ? `, ${skipped} skipped` : ""));
  ' "$report"
fi
exit $rc
