#!/usr/bin/env bash
# Runs every standard scenario (or those named as arguments) with a release build,
# writing one JSON report per scenario into $OUT (default bench-results/<UTC time>/).
#
#   benches/run-scenarios.sh                      # all scenarios
#   benches/run-scenarios.sh single-partition keyed-zipf
#   SKIFF_BENCH_ARGS="--total 100MB" benches/run-scenarios.sh   # extra flags for every run
#   REPEAT=3 benches/run-scenarios.sh iggy-produce-1gb          # repeat each scenario
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p skiff-bench -p skiff-broker --bin skiff-bench --bin skiffd

OUT=${OUT:-bench-results/$(date -u +%Y%m%dT%H%M%SZ)}
REPEAT=${REPEAT:-1}
mkdir -p "$OUT"
BENCH=target/release/skiff-bench
read -r -a EXTRA <<<"${SKIFF_BENCH_ARGS:-}"

if [ "$#" -gt 0 ]; then
  names=("$@")
else
  names=()
  for file in benches/scenarios/*.toml; do
    names+=("$(basename "$file" .toml)")
  done
fi

failed=()
for name in "${names[@]}"; do
  for run in $(seq 1 "$REPEAT"); do
    echo "=== $name (run $run of $REPEAT)"
    if ! "$BENCH" scenario "$name" --quiet "${EXTRA[@]}" --json "$OUT/$name.$run.json" 2>&1 | tee "$OUT/$name.$run.txt"; then
      failed+=("$name#$run")
    fi
  done
done

echo "reports in $OUT"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "FAILED: ${failed[*]}" >&2
  exit 1
fi
