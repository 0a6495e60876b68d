#!/usr/bin/env bash
# Runs every test of the workspace. Installs the system packages the tests use when they are
# missing (Debian/Ubuntu, as root): clang/llvm (rebuilds the BPF corpus), iproute2 (network
# namespaces and tc netem for the fault tests).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v clang >/dev/null 2>&1 || need+=(clang)
command -v llvm-objdump >/dev/null 2>&1 || command -v llvm-objdump-14 >/dev/null 2>&1 || need+=(llvm)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v tc >/dev/null 2>&1 || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    # A package mirror that fails once (a lock held by a boot-time job, a dropped fetch)
    # should not fail the whole test run: three tries, a few seconds apart.
    installed=no
    for try in 1 2 3; do
      if apt-get update -qq >/dev/null &&
        apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; then
        installed=yes
        break
      fi
      echo "test.sh: apt-get failed (try $try of 3)" >&2
      sleep $((try * 5))
    done
    if [ "$installed" = no ]; then
      echo "test.sh: could not install ${need[*]}" >&2
      exit 1
    fi
  else
    echo "test.sh: missing ${need[*]} (not root or no apt-get): the tests that need them will say SKIPPED" >&2
  fi
fi

# Build first, then run the tests one binary at a time so the fault and timing-sensitive
# tests are not starved on a small machine.
cargo build --workspace --all-targets --quiet
cargo test --workspace --quiet -- --test-threads="${KCM_TEST_THREADS:-2}"
