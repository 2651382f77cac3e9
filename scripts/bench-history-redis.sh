#!/usr/bin/env bash
# Redis's own time for one history publish: the nodes' append script (taken
# from src/backend/redis/history.rs, so it is always the current one)
# against a plain PUBLISH, on an idle redis-server on loopback, with
# redis-benchmark (4 clients, N calls each run), RUNS runs alternating.
# Prints INFO commandstats' usec_per_call for EVALSHA, the XADD inside it,
# the Redis Function outsiders call (FCALL groupcast_publish, the library
# built from src/backend/redis/function.rs as the nodes build it, with one
# rule '*=1000:1h'), and PUBLISH; fails if any call of the script failed (an error reply is a
# different, cheaper path and measures nothing useful).
#
#   scripts/bench-history-redis.sh            # RUNS=3 N=40000
#   REV=<commit> scripts/bench-history-redis.sh   # the script of another commit
#   VERBOSE=1 scripts/bench-history-redis.sh  # also every command the script ran
#   IR=1 scripts/bench-history-redis.sh       # instructions per call instead
#   REDIS_ARGS='--stream-node-max-entries 16' scripts/bench-history-redis.sh
#   PIN=0 scripts/bench-history-redis.sh      # Redis and redis-benchmark not pinned
#
# With 2 or more cores, Redis runs on the last core and redis-benchmark on
# the first (taskset), so that the load generator never preempts Redis in
# the middle of a command: usec_per_call is wall time, and a preempted
# command counts the other process's time as its own. PIN=0 turns it off.
#
# IR=1 runs redis-server under valgrind (cachegrind, no cache simulation)
# twice per kind, with IR_N1 and IR_N2 calls (default 1000 and 5000: both
# past MAXLEN, so every counted call trims), and prints the instructions
# Redis executed per call, (Ir(N2) - Ir(N1)) / (N2 - N1): unlike
# usec_per_call it does not move with the machine's load, so a change of a
# few per cent shows in one run.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
cores=$(nproc)
if [ "${PIN:-1}" != 0 ] && [ "$cores" -ge 2 ] && command -v taskset >/dev/null; then
    on_redis_core=(taskset -c "$((cores - 1))")
    on_bench_core=(taskset -c 0)
else
    on_redis_core=()
    on_bench_core=()
fi
N=${N:-40000}
command -v redis-benchmark >/dev/null || { echo "needs redis-benchmark (apt-get install -y redis-tools)" >&2; exit 1; }
[ -z "${IR:-}" ] || command -v valgrind >/dev/null || { echo "IR=1 needs valgrind (apt-get install -y valgrind)" >&2; exit 1; }
src=src/backend/redis/history.rs
show() { if [ -n "${REV:-}" ]; then git show "$REV:$1"; else cat "$1"; fi; }
source_text=$(show "$src")
# The library as function.rs's library() writes it, for one rule '*=1000:1h'.
library=$(python3 -c '
import re, sys
h, f = open(sys.argv[1]).read(), open(sys.argv[2]).read()
append = re.search(r"pub\(crate\) const APPEND_FN: &str = r\"\n(.*?)\n\";\n", h, re.S).group(1)
meta = re.search(r"const META_PREFIX: &str = \"(.*?)\";", h).group(1)
stream = re.search(r"const STREAM_PREFIX: &str = \"(.*?)\";", h).group(1)
lib = re.search(r"r#\"(#!lua name=groupcast.*?)\"#,", f, re.S).group(1)
for k, v in [("{APPEND_FN}", "\0A"), ("{rules}", "\0R"), ("{FUNCTION_NAME}", "groupcast_publish"),
             ("{prefix}", "\x27group:\x27"), ("{stream}", "\x27%s\x27" % stream), ("{meta}", "\x27%s\x27" % meta),
             ("{{", "{"), ("}}", "}"), ("\0A", append), ("\0R", "  { \x27^.+$\x27, 1000, 3600000 },\n")]:
    lib = lib.replace(k, v)
print(lib)' <(printf '%s\n' "$source_text") <(show src/backend/redis/function.rs))
append=$(printf '%s\n' "$source_text" | sed -n '/^pub(crate) const APPEND_FN: &str = r"/,/^";/p' | sed '1d;$d')
[ -n "$append" ] || { echo "APPEND_FN not found in $src" >&2; exit 1; }
# The call as append_script_source() writes it: since the epoch is made in
# Redis and the publish command is in the script, 4 arguments; before, 6
# (a fresh epoch and PUBLISH as arguments).
if grep -q "ARGV\[6\]" <<<"$source_text"; then
    script="$append
return append(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])"
    append_args=(1000 3600000 epoch1 PUBLISH)
else
    script="$append
return append(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'PUBLISH')"
    append_args=(1000 3600000)
fi
dir=$(mktemp -d)
pid=
stop_redis() { [ -z "$pid" ] || { redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; pid=; }; }
trap 'stop_redis; rm -rf "$dir"' EXIT
# start_redis [wrapper...]: a fresh redis-server on a free loopback port.
start_redis() {
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    # shellcheck disable=SC2086
    "${on_redis_core[@]}" "$@" redis-server ${REDIS_ARGS:-} --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" >"$dir/log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.1; done
    sha=$(cli SCRIPT LOAD "$script")
    cli FUNCTION LOAD REPLACE "$library" >/dev/null
}
cli() { redis-cli -p "$port" "$@"; }
payload=$(printf 'm%.0s' $(seq 64))
stream='groupcast:history:{group:bench}'
meta='groupcast:history-epoch:{group:bench}'
# bench N KIND: N calls of KIND (append, fcall, publish) with redis-benchmark.
bench() {
    local n=$1
    case $2 in
        append) set -- EVALSHA "$sha" 2 "$stream" "$meta" group:bench "$payload" "${append_args[@]}" ;;
        fcall) set -- FCALL groupcast_publish 1 bench "$payload" ;;
        publish) set -- PUBLISH group:bench "$payload" ;;
    esac
    "${on_bench_core[@]}" timeout 600 redis-benchmark -p "$port" -n "$n" -c 4 -q "$@" >/dev/null 2>&1
}
# check CMD: fails if any call of CMD (evalsha, fcall) failed since the last RESETSTAT.
check() {
    local failed
    failed=$(cli INFO commandstats | tr -d '\r' | sed -n "s/^cmdstat_$1:.*failed_calls=\([0-9]*\).*/\1/p")
    if [ "${failed:-1}" != 0 ]; then
        echo "$1 failed ${failed:-?} times:" >&2
        case $1 in
            evalsha) cli EVALSHA "$sha" 2 "$stream" "$meta" group:bench "$payload" "${append_args[@]}" >&2 ;;
            fcall) cli FCALL groupcast_publish 1 bench "$payload" >&2 ;;
        esac
        exit 1
    fi
}
echo "redis $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/'), $cores cores${on_redis_core[*]:+ (Redis on core $((cores - 1)), redis-benchmark on core 0)}, 64-byte payload, MAXLEN 1000${REDIS_ARGS:+, $REDIS_ARGS}${REV:+, source of $REV}"

if [ -n "${IR:-}" ]; then
    N1=${IR_N1:-1000}
    N2=${IR_N2:-5000}
    # ir N KIND CMD: instructions redis-server ran from start to shutdown.
    ir() {
        start_redis valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file="$dir/cg.out"
        bench "$1" "$2"
        [ -z "$3" ] || check "$3"
        stop_redis
        grep -o 'I *refs: *[0-9,]*' "$dir/log" | tr -dc 0-9
    }
    for kind in append:evalsha fcall:fcall publish:; do
        a=$(ir "$N1" "${kind%%:*}" "${kind#*:}")
        b=$(ir "$N2" "${kind%%:*}" "${kind#*:}")
        echo "${kind%%:*}: $(( (b - a) / (N2 - N1) )) instructions per call"
    done
    exit 0
fi

echo "$N calls per run"
start_redis
for run in $(seq "$RUNS"); do
    cli FLUSHALL >/dev/null; cli CONFIG RESETSTAT >/dev/null
    bench "$N" append
    check evalsha
    stats=$(cli INFO commandstats | tr -d '\r')
    eval_us=$(sed -n 's/^cmdstat_evalsha:.*usec_per_call=\([0-9.]*\).*/\1/p' <<<"$stats")
    xadd_us=$(sed -n 's/^cmdstat_xadd:.*usec_per_call=\([0-9.]*\).*/\1/p' <<<"$stats")
    [ -z "${VERBOSE:-}" ] || grep '^cmdstat_' <<<"$stats" | grep -v 'config\|flushall\|script\|function' >&2
    cli FLUSHALL >/dev/null; cli CONFIG RESETSTAT >/dev/null
    bench "$N" fcall
    check fcall
    fcall_us=$(cli INFO commandstats | tr -d '\r' | sed -n 's/^cmdstat_fcall:.*usec_per_call=\([0-9.]*\).*/\1/p')
    cli CONFIG RESETSTAT >/dev/null
    bench "$N" publish
    pub_us=$(cli INFO commandstats | tr -d '\r' | sed -n 's/^cmdstat_publish:.*usec_per_call=\([0-9.]*\).*/\1/p')
    echo "run $run: history append ${eval_us} us/call (of which XADD ${xadd_us}), FCALL groupcast_publish ${fcall_us} us/call, plain PUBLISH ${pub_us} us/call"
done
