#!/usr/bin/env bash
# Runs one integration test many times on a loaded machine, to tell a flaky
# test from a steady one: two busy loops (`yes > /dev/null`) take the cores
# the test would otherwise have to itself, as a CI machine's neighbours do.
# Counts the failures and keeps the output of each failing run.
#
#   scripts/repeat-under-load.sh history a_gap      # 30 runs
#   RUNS=10 BUSY=1 scripts/repeat-under-load.sh faults killed_node
#
# RUNS (30), BUSY (2: busy loops), LOGS (a fresh directory under /tmp).
# The images come from the same env vars as scripts/test.sh (REDIS_IMAGE,
# default local/redis:7: build them with scripts/build-local-images.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -ne 2 ]; then
    echo "usage: $0 TEST_FILE TEST_NAME_FILTER   (e.g. $0 history a_gap)" >&2
    exit 2
fi
file=$1
filter=$2
runs=${RUNS:-30}
busy=${BUSY:-2}
logs=${LOGS:-$(mktemp -d /tmp/repeat-XXXXXX)}
mkdir -p "$logs"
export REDIS_IMAGE=${REDIS_IMAGE:-local/redis:7}

echo "==> building the test binary"
cargo test -q --test "$file" --no-run

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
for _ in $(seq "$busy"); do
    yes > /dev/null &
    pids+=($!)
done

failed=0
for run in $(seq "$runs"); do
    log="$logs/run$run.log"
    # Bounded: a run that hangs counts as a failure.
    if timeout 600 cargo test -q --test "$file" -- "$filter" > "$log" 2>&1; then
        rm -f "$log"
        echo "run $run/$runs: ok"
    else
        failed=$((failed + 1))
        echo "run $run/$runs: FAILED (output in $log)"
    fi
done
echo "$failed of $runs runs failed ($busy busy loops beside each); logs of failures in $logs"
[ "$failed" -eq 0 ]
