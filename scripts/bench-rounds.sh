#!/usr/bin/env bash
# Runs the criterion benches several times in a row, so that our ring and its
# peers are measured interleaved across the machine's changing core placement,
# and prints the median of each benchmark over the rounds with ratios to ours.
#
#   scripts/bench-rounds.sh [ROUNDS] [CRITERION FILTER]
#   scripts/bench-rounds.sh 5 bench_push_pop_contended
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
filter=${2:-}
out=target/bench-rounds
rm -rf "$out" && mkdir -p "$out"
for r in $(seq 1 "$rounds"); do
  echo "round $r/$rounds" >&2
  cargo bench --bench ring_buffer -- --noplot ${filter:+"$filter"} >"$out/round-$r.log" 2>&1
  find target/criterion -path '*/new/estimates.json' | while read -r f; do
    id=${f#target/criterion/}; id=${id%/new/estimates.json}
    mkdir -p "$out/$r/$(dirname "$id")" && cp "$f" "$out/$r/$id.json"
  done
done
python3 scripts/bench_medians.py "$out" "$rounds"
