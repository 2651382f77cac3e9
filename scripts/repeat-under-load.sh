#!/usr/bin/env bash
# Runs one integration test many times on a loaded machine, to tell a flaky
# test from a steady one: two busy loops (`yes > /dev/null`) take the cores
# the test would otherwise have to itself, as a CI machine's neighbours do.
# Counts the failures and keeps the output of each failing run.
#
#   scripts/repeat-under-load.sh cluster history::a_gap      # 30 runs
#   RUNS=10 BUSY=1 scripts/repeat-under-load.sh cluster faults::a_killed_node
#   scripts/repeat-under-load.sh history a_gap      # a file's name: the same
#
# The first argument is a test binary (tests/<binary>/main.rs, or
# tests/compose.rs) and the filter is libtest's, on the full names
# (`history::a_gap...`); or it is the name of a file in a binary
# (tests/<binary>/<file>.rs), and the filter picks among that file's tests
# as it did when each file was its own binary. A filter that selects no
# test is an error, not 30 empty passes.
#
# RUNS (30), BUSY (2: busy loops), LOGS (a fresh directory under /tmp).
# The images come from the same env vars as scripts/test.sh (REDIS_IMAGE,
# default local/redis:7: build them with scripts/build-local-images.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -ne 2 ]; then
    echo "usage: $0 TEST_BINARY|TEST_FILE TEST_NAME_FILTER   (e.g. $0 cluster history::a_gap)" >&2
    exit 2
fi
binary=$1
filter=$2
file=
if [ ! -f "tests/$binary/main.rs" ] && [ ! -f "tests/$binary.rs" ]; then
    # A file's name: the binary that holds it.
    found=(tests/*/"$binary".rs)
    if [ ! -f "${found[0]}" ] || [ "${found[0]%/*}" = tests/common ]; then
        echo "no test binary or test file named $binary under tests/" >&2
        exit 2
    fi
    file=$binary
    binary=$(basename "$(dirname "${found[0]}")")
fi
runs=${RUNS:-30}
busy=${BUSY:-2}
export REDIS_IMAGE=${REDIS_IMAGE:-local/redis:7}

echo "==> building the test binary"
cargo test -q --test "$binary" --no-run

# The tests the filter selects, named in full.
listed=$(cargo test -q --test "$binary" -- --list 2>/dev/null | sed -n 's/: test$//p')
if [ -n "$file" ]; then
    # Those of the file whose name (after `<file>::`) contains the filter,
    # run by their exact names.
    mapfile -t selected < <(printf '%s\n' "$listed" |
        awk -v prefix="$file::" -v filter="$filter" \
            'index($0, prefix) == 1 && index(substr($0, length(prefix) + 1), filter) > 0')
    args=(--exact "${selected[@]}")
else
    mapfile -t selected < <(printf '%s\n' "$listed" | grep -F -- "$filter" || true)
    args=("$filter")
fi
if [ "${#selected[@]}" -eq 0 ]; then
    echo "no test of the $binary binary matches ${file:+$file::*}$filter" >&2
    exit 2
fi
echo "==> $binary: ${selected[*]}"
logs=${LOGS:-$(mktemp -d /tmp/repeat-XXXXXX)}
mkdir -p "$logs"

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
    if timeout 600 cargo test -q --test "$binary" -- "${args[@]}" > "$log" 2>&1; then
        rm -f "$log"
        echo "run $run/$runs: ok"
    else
        failed=$((failed + 1))
        echo "run $run/$runs: FAILED (output in $log)"
    fi
done
echo "$failed of $runs runs failed ($busy busy loops beside each); logs of failures in $logs"
[ "$failed" -eq 0 ]
