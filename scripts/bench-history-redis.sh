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
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
N=${N:-40000}
command -v redis-benchmark >/dev/null || { echo "needs redis-benchmark (apt-get install -y redis-tools)" >&2; exit 1; }
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
script="$append
return append(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" >"$dir/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 50); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.1; done
cli() { redis-cli -p "$port" "$@"; }
payload=$(printf 'm%.0s' $(seq 64))
sha=$(cli SCRIPT LOAD "$script")
cli FUNCTION LOAD REPLACE "$library" >/dev/null
echo "redis $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/'), $(nproc) cores, $N calls per run, 64-byte payload, MAXLEN 1000"
for run in $(seq "$RUNS"); do
    cli FLUSHALL >/dev/null; cli CONFIG RESETSTAT >/dev/null
    timeout 120 redis-benchmark -p "$port" -n "$N" -c 4 -q EVALSHA "$sha" 2 \
        'groupcast:history:{group:bench}' 'groupcast:history-epoch:{group:bench}' group:bench \
        "$payload" 1000 3600000 epoch1 PUBLISH >/dev/null 2>&1
    stats=$(cli INFO commandstats | tr -d '\r')
    failed=$(sed -n 's/^cmdstat_evalsha:.*failed_calls=\([0-9]*\).*/\1/p' <<<"$stats")
    if [ "${failed:-1}" != 0 ]; then
        echo "the script failed ${failed:-?} times:" >&2
        cli EVALSHA "$sha" 2 'groupcast:history:{group:bench}' 'groupcast:history-epoch:{group:bench}' \
            group:bench "$payload" 1000 3600000 epoch1 PUBLISH >&2
        exit 1
    fi
    [ -z "${VERBOSE:-}" ] || grep '^cmdstat_' <<<"$stats" | grep -v 'config\|flushall\|script' >&2
    eval_us=$(sed -n 's/^cmdstat_evalsha:.*usec_per_call=\([0-9.]*\).*/\1/p' <<<"$stats")
    xadd_us=$(sed -n 's/^cmdstat_xadd:.*usec_per_call=\([0-9.]*\).*/\1/p' <<<"$stats")
    cli FLUSHALL >/dev/null; cli CONFIG RESETSTAT >/dev/null
    timeout 120 redis-benchmark -p "$port" -n "$N" -c 4 -q FCALL groupcast_publish 1 bench "$payload" >/dev/null 2>&1
    stats=$(cli INFO commandstats | tr -d '\r')
    fcall_us=$(sed -n 's/^cmdstat_fcall:.*usec_per_call=\([0-9.]*\).*/\1/p' <<<"$stats")
    failed=$(sed -n 's/^cmdstat_fcall:.*failed_calls=\([0-9]*\).*/\1/p' <<<"$stats")
    [ "${failed:-1}" = 0 ] || { echo "FCALL failed ${failed:-?} times:" >&2; cli FCALL groupcast_publish 1 bench "$payload" >&2; exit 1; }
    cli CONFIG RESETSTAT >/dev/null
    timeout 120 redis-benchmark -p "$port" -n "$N" -c 4 -q PUBLISH group:bench "$payload" >/dev/null 2>&1
    pub_us=$(cli INFO commandstats | tr -d '\r' | sed -n 's/^cmdstat_publish:.*usec_per_call=\([0-9.]*\).*/\1/p')
    echo "run $run: history append ${eval_us} us/call (of which XADD ${xadd_us}), FCALL groupcast_publish ${fcall_us} us/call, plain PUBLISH ${pub_us} us/call"
done
