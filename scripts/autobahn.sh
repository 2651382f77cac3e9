#!/usr/bin/env bash
# Autobahn|Testsuite (wstest -m fuzzingclient, autobahntestsuite 0.8.2)
# against the release binary, as a standalone node on a loopback port
# echoing through a one-member group (ws://127.0.0.1:PORT/ws/echo), in two
# runs: "plain" (no --compression) and "compressed" (--compression).
#
#   scripts/autobahn.sh              every case (517), both runs (~6 minutes on
#                                    2 cores); then rewrites the summary in
#                                    docs/protocol.md
#   scripts/autobahn.sh quick        1-7 and 10 in both runs, 12.1, 12.2 and
#                                    12.5 in the compressed one (~2 minutes)
#   scripts/autobahn.sh cases ID...  these cases (wstest patterns: 6.4.*), both runs
#   scripts/autobahn.sh --check-setup   says whether wstest is or can be set up
#                                    (exit 0 when it can)
#   scripts/autobahn.sh --setup      only sets wstest up
#
# wstest is set up on first use into AUTOBAHN_HOME (default
# ~/.cache/groupcast-autobahn; under a minute, then instant): see
# scripts/lib/autobahn-setup.sh. Reports: target/autobahn/<mode>-<run>/
# (index.json, all parts merged; part-*/index.html to browse). Exits non-zero when a case FAILED or
# 6.4.3 / 6.4.4 (fail fast on invalid UTF-8) is not strictly OK.
# AUTOBAHN_TIMEOUT (seconds) bounds the whole test; AUTOBAHN_JOBS (default:
# the number of cores) is how many wstest processes run side by side;
# AUTOBAHN_BINARY tests that binary instead of building target/release.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# shellcheck source=scripts/lib/autobahn-setup.sh
. scripts/lib/autobahn-setup.sh
# shellcheck source=scripts/lib/ports.sh
. scripts/lib/ports.sh

mode=full
case "${1:-}" in
    "" | full) mode=full ;;
    quick) mode=quick ;;
    cases)
        mode=cases; shift
        [ $# -gt 0 ] || { echo "usage: $0 cases ID..." >&2; exit 2; }
        ;;
    --check-setup) ab_check; exit $? ;;
    --setup) ab_setup; exit $? ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown mode '$1' (see $0 --help)" >&2; exit 2 ;;
esac

quick_both=('1.*' '2.*' '3.*' '4.*' '5.*' '6.*' '7.*' '10.*')
case "$mode" in
    full) plain_cases=('*'); compressed_cases=('*'); timeout=${AUTOBAHN_TIMEOUT:-3600} ;;
    quick) plain_cases=("${quick_both[@]}")
        compressed_cases=("${quick_both[@]}" '12.1.*' '12.2.*' '12.5.*')
        timeout=${AUTOBAHN_TIMEOUT:-900} ;;
    cases) plain_cases=("$@"); compressed_cases=("$@"); timeout=${AUTOBAHN_TIMEOUT:-3600} ;;
esac

started=$(date +%s)
ab_setup || { echo "wstest cannot be set up (scripts/autobahn.sh --check-setup)" >&2; exit 1; }

if [ -n "${AUTOBAHN_BINARY:-}" ]; then
    binary=$(realpath "$AUTOBAHN_BINARY"); commit="given as AUTOBAHN_BINARY"
else
    ab_log "cargo build --release"
    cargo build --release --quiet --bin groupcast
    binary="$root/target/release/groupcast"
    commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [ -n "$(git status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then
        commit="$commit with uncommitted changes"
    fi
fi
version="$("$binary" --version 2>/dev/null | head -1) ($commit)"
ab_log "testing $version"

pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# wstest (Python 2, one core) is the bound, not the server: the cases are
# split into AUTOBAHN_JOBS parts of about equal cost (default: one per
# core) that run side by side, each a wstest of its own against a server of
# its own; each part's report is in target/autobahn/<mode>-<run>/part-N/.
jobs=${AUTOBAHN_JOBS:-$(nproc)}

declare -A total
for run in plain compressed; do
    rm -rf "$root/target/autobahn/$mode-$run"; mkdir -p "$root/target/autobahn/$mode-$run"
done

# start_server RUN DIR: a node for one wstest (its group "echo" must have
# one member only: wstests side by side would hear each other); sets $port.
start_server() {
    local run="$1" dir="$2" flags=() unset_env=() v
    [ "$run" = compressed ] && flags+=(--compression)
    port=$(free_port)
    # Only our flags: no GROUPCAST_* from the environment (Redis, auth...).
    for v in $(compgen -e | grep '^GROUPCAST_' || true); do unset_env+=(-u "$v"); done
    env "${unset_env[@]}" GROUPCAST_LOG=warn \
        "$binary" --listen "127.0.0.1:$port" --client-messages group "${flags[@]}" \
        --max-inbound-rate 0 --max-message-size 16777216 --queue-len 100000 \
        >"$dir/server.log" 2>&1 &
    server=$!
    wait_port "$port" "$server" || { cat "$dir/server.log" >&2; return 1; }
}

commas() { local IFS=,; echo "$*"; }
plan=$(python3 scripts/lib/autobahn-report.py plan "$jobs" \
    "plain=$(commas "${plain_cases[@]}")" "compressed=$(commas "${compressed_cases[@]}")")
for run in plain compressed; do
    total[$run]=$(awk -v r="$run" '$2 == r { n += NF - 2 } END { print n + 0 }' <<<"$plan")
done
ab_log "cases: plain ${total[plain]}, compressed ${total[compressed]}; $jobs wstest processes side by side"
ab_log "server flags: --listen 127.0.0.1:PORT --client-messages group [--compression] --max-inbound-rate 0 --max-message-size 16777216 --queue-len 100000"

# run_part N: the part's lines in turn (each: RUN CASE...), each against a
# server of its own.
run_part() {
    local n="$1" line run dir rc=0 port server="" wstest=""
    # Stopped (timeout, Ctrl-C): stop this part's wstest and server too.
    trap 'kill $wstest $server 2>/dev/null; exit 1' TERM INT
    while read -r line; do
        read -r run _ <<<"$line"
        dir="$root/target/autobahn/$mode-$run/part-$n"
        mkdir -p "$dir"
        start_server "$run" "$dir" || return 1
        # One word per case is wanted.
        # shellcheck disable=SC2086
        python3 scripts/lib/autobahn-report.py spec "$dir/spec.json" \
            "ws://127.0.0.1:$port/ws/echo" groupcast ${line#"$run" }
        ab_wstest "$dir" -m fuzzingclient -s spec.json >"$dir/wstest.log" 2>&1 &
        wstest=$!
        wait "$wstest" ||
            { rc=1; echo "wstest failed: $dir/wstest.log" >&2; tail -20 "$dir/wstest.log" >&2; }
        wstest=""
        kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; server=""
    done < <(awk -v n="$n" '$1 == n { $1 = ""; sub(/^ /, ""); print }' <<<"$plan")
    return $rc
}

parts=()
while read -r n; do
    run_part "$n" &
    pids+=($!); parts+=($!)
done < <(awk '{ print $1 }' <<<"$plan" | sort -u)

# Until every part ends, printing progress every 30 s; bounded.
deadline=$(( $(date +%s) + timeout )); last=0
while :; do
    busy=0
    for p in "${parts[@]}"; do kill -0 "$p" 2>/dev/null && busy=1; done
    if [ "$busy" = 0 ] || [ $(( $(date +%s) - last )) -ge 30 ]; then
        line=""
        for run in plain compressed; do
            line+="$run $(python3 scripts/lib/autobahn-report.py progress \
                "$root/target/autobahn/$mode-$run" "${total[$run]}")  "
        done
        ab_log "$(( $(date +%s) - started ))s: cases started: $line"
        last=$(date +%s)
    fi
    [ "$busy" = 1 ] || break
    if [ "$(date +%s)" -ge "$deadline" ]; then
        ab_log "timed out after ${timeout}s (AUTOBAHN_TIMEOUT)"; exit 1
    fi
    sleep 5
done
failed=0
for p in "${parts[@]}"; do wait "$p" || failed=1; done
cleanup; pids=()
[ "$failed" = 0 ] || { ab_log "a wstest failed (see above)"; exit 1; }
ab_log "done $(( $(date +%s) - started ))s after the start; reports in target/autobahn/$mode-{plain,compressed}/part-*/index.html"

summary=(python3 scripts/lib/autobahn-report.py summary)
if [ "$mode" = full ]; then
    summary+=(--docs docs/protocol.md --command "scripts/autobahn.sh" --binary "$version")
fi
echo
"${summary[@]}" "plain=$root/target/autobahn/$mode-plain" "compressed=$root/target/autobahn/$mode-compressed"
