#!/usr/bin/env bash
# Runs the core's property tests many times, each run with fresh random seeds: the state
# machines' random operation sequences (mux, stream parser, parsers) explore far more cases
# than one `cargo test` does. A failure prints the shrunk case and records its seed under
# crates/kcm-core/proptest-regressions/, so that every later `cargo test` replays it.
# Usage: scripts/stress.sh [ROUNDS]   (default 50; about 0.3 s a round on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-50}"
cargo test --release -p kcm-core --no-run --quiet 2>/dev/null
# The test binaries cargo just built (the library's unit tests and the property-test files).
bins=$(cargo test --release -p kcm-core --no-run --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')
if [ -z "$bins" ]; then
  echo "stress.sh: found no test binaries" >&2
  exit 1
fi
failed=0
for i in $(seq 1 "$rounds"); do
  for b in $bins; do
    if ! out=$("$b" --quiet 2>&1); then
      echo "$out" | grep -E "minimal failing input|panicked at|^test .* FAILED" | head -20
      failed=$((failed + 1))
    fi
  done
done
echo "stress.sh: $rounds rounds, $failed failing runs"
[ "$failed" -eq 0 ]
