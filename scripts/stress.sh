#!/usr/bin/env bash
# Runs the core's property tests many times, each run with fresh random seeds: the state
# machines' random operation sequences (mux, stream parser, parsers) explore far more cases
# than one `cargo test` does. A failure prints the shrunk case and records its seed (unit
# tests under crates/kcm-core/proptest-regressions/, integration tests in
# crates/kcm-core/tests/*.proptest-regressions), so that every later `cargo test` replays it.
# Built optimised but with debug assertions and overflow checks on (in target/stress, so the
# release build is left alone).
# Usage: scripts/stress.sh [ROUNDS]   (default 50; about 0.3 s a round on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-50}"
export CARGO_TARGET_DIR=target/stress
export CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true
export CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true
# The test binaries (the library's unit tests and the property-test files); build errors show.
bins=$(cargo test --release -p kcm-core --no-run --message-format=json |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')
if [ -z "$bins" ]; then
  echo "stress.sh: found no test binaries" >&2
  exit 1
fi
failed=0
for i in $(seq 1 "$rounds"); do
  for b in $bins; do
    if ! out=$("$b" --quiet 2>&1); then
      # The shrunk case and the panic, or (an abort, a signal) the end of the output.
      echo "$out" | grep -E "minimal failing input|panicked at|^test .* FAILED" | head -20 ||
        echo "$out" | tail -20
      failed=$((failed + 1))
    fi
  done
done
echo "stress.sh: $rounds rounds, $failed failing runs"
[ "$failed" -eq 0 ]
