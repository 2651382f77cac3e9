#!/usr/bin/env bash
# The presence API at MEMBERS (100,000) members of one group: GET
# /api/groups/{group} and one page of GET /api/groups/{group}/members
# (limit 100, the default, and 1000, the most), REQUESTS (50) each, one
# after the other with curl: median and p99 of curl's time_total, the
# body's size, and Redis's CPU per request (INFO cpu used_cpu_sys+user
# over the requests, less the same length of time idle just before: the
# nodes' heartbeats) and its presence scripts (INFO commandstats).
#
# This machine allows at most 20,000 open files per process (`ulimit -Hn`;
# Docker grants no more to a container), so 100,000 WebSocket members
# cannot sit on two node processes. They are spread instead over NODES
# (12) groupcast processes of at most 9,000 connections each, every node
# with its own groupcast-bench process of the same size (each binding two
# loopback source addresses of its own, 127.0.1.i and 127.0.2.i, so that
# no address runs out of its 28,232 ephemeral ports). All of them are real
# WebSocket connections with presence on (--presence 'big*'); the
# requests go to node 1. One redis-server, as in scripts/bench.sh.
#
#   scripts/bench-presence-api.sh                      # 100,000 members
#   MEMBERS=10000 NODES=2 scripts/bench-presence-api.sh   # a smaller check
#   OUT=bench/results/<date>/presence-api NO_BUILD=1 scripts/bench-presence-api.sh
#
# Bounded: connecting is given CONNECT_SECONDS (300), every step a timeout;
# everything started is stopped on exit. Results in $OUT/summary.txt and
# $OUT/*.json, logs in $OUT/logs/.
set -euo pipefail

cd "$(dirname "$0")/.."
MEMBERS=${MEMBERS:-100000}
NODES=${NODES:-12}
REQUESTS=${REQUESTS:-50}
CONNECT_SECONDS=${CONNECT_SECONDS:-300}
OUT=${OUT:-target/bench/presence-api-$(date +%Y%m%d-%H%M%S)}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
GC=${GC:-$TARGET_DIR/release/groupcast}
BENCH=${BENCH:-$TARGET_DIR/release/groupcast-bench}
GROUP=big0
mkdir -p "$OUT/logs"

log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/summary.txt" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $MEMBERS =~ ^[0-9]+$ && $NODES =~ ^[0-9]+$ && $REQUESTS =~ ^[0-9]+$ && $CONNECT_SECONDS =~ ^[0-9]+$ ]] ||
    die "MEMBERS, NODES, REQUESTS and CONNECT_SECONDS must be whole numbers"
((NODES >= 1 && NODES <= 60)) || die "NODES must be between 1 and 60"
((MEMBERS >= NODES)) || die "MEMBERS must be at least NODES"
((CONNECT_SECONDS >= 1 && CONNECT_SECONDS <= 600)) || die "CONNECT_SECONDS must be between 1 and 600"
PER_NODE=$(((MEMBERS + NODES - 1) / NODES))
((MEMBERS > PER_NODE * (NODES - 1))) ||
    die "MEMBERS $MEMBERS leaves the last of $NODES nodes no member at $PER_NODE per node: lower NODES"
((REQUESTS >= 2)) || die "REQUESTS must be at least 2"
LIMIT=$(ulimit -Hn)
# A node holds its connections plus ~100 descriptors of its own (Redis,
# listener, runtime); its bench the same clients plus 64 (FD_RESERVE).
((PER_NODE + 200 <= LIMIT)) ||
    die "$PER_NODE connections per node exceed the open-files limit $LIMIT (ulimit -Hn): raise NODES"
((PER_NODE <= 9000)) || log "note: $PER_NODE connections per node (more than the 9,000 planned)"

if [ -z "${NO_BUILD:-}" ]; then
    cargo build --release --bin groupcast --bin groupcast-bench
fi
for bin in "$GC" "$BENCH"; do
    [ -x "$bin" ] || die "missing $bin (build first)"
done
command -v redis-server >/dev/null || die "needs redis-server (apt-get install -y redis-server)"
command -v curl >/dev/null || die "needs curl"

STARTED=()
cleanup() {
    for pid in "${STARTED[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${STARTED[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM
source scripts/lib/ports.sh

log "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/^Mem:/ {print $2}') GiB, kernel $(uname -r); load $(cut -d' ' -f1-3 /proc/loadavg)"
log "open files: ulimit -Sn $(ulimit -Sn), ulimit -Hn $LIMIT: $MEMBERS members as $NODES nodes x $PER_NODE connections, one groupcast-bench per node"

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$OUT/logs/redis.log" 2>&1 &
REDIS_PID=$!
STARTED+=("$REDIS_PID")
wait_port "$REDIS_PORT"
rcli() { timeout 60 redis-cli -p "$REDIS_PORT" "$@"; }
redis_cpu_us() { rcli INFO cpu | tr -d '\r' | awk -F: '/^used_cpu_(sys|user):/ {s += $2} END {printf "%d", s * 1000000}'; }
members() { rcli HLEN "groupcast:presence:{group:$GROUP}:members"; }

PORTS=()
NODE_PIDS=()
for ((i = 1; i <= NODES; i++)); do
    port=$(free_port)
    "$GC" --listen "127.0.0.1:$port" --redis-url "redis://127.0.0.1:$REDIS_PORT" \
        --client-messages none --log warn --node-id "big-$i" \
        --max-connections 0 --max-connections-per-ip 0 --presence 'big*' \
        >"$OUT/logs/node-$i.log" 2>&1 &
    NODE_PIDS+=($!)
    STARTED+=($!)
    wait_port "$port" "$!" || die "node $i did not start: $(tail -3 "$OUT/logs/node-$i.log")"
    PORTS+=("$port")
done
log "$NODES nodes on ports ${PORTS[*]}"

BENCH_PIDS=()
connect_start=$(date +%s)
for ((i = 1; i <= NODES; i++)); do
    n=$PER_NODE
    ((i == NODES)) && n=$((MEMBERS - PER_NODE * (NODES - 1)))
    "$BENCH" --url "ws://127.0.0.1:${PORTS[$((i - 1))]}" --clients "$n" --groups 1 \
        --group-template 'big{}' --source-addrs "127.0.1.$i,127.0.2.$i" \
        --connect-concurrency 50 --connect-timeout "${CONNECT_SECONDS}s" --settle 1s \
        --duration 600s --progress-every 10s --label "big-$i" --json-out "$OUT/bench-$i.json" \
        >"$OUT/logs/bench-$i.txt" 2>"$OUT/logs/bench-$i.progress" &
    BENCH_PIDS+=($!)
    STARTED+=($!)
done

# Until every member is in Redis's presence: a progress line every 10 s.
deadline=$((connect_start + CONNECT_SECONDS + 30))
last_line=$connect_start
while :; do
    have=$(members)
    [ "${have:-0}" -ge "$MEMBERS" ] && break
    now=$(date +%s)
    ((now < deadline)) || die "only ${have:-0} of $MEMBERS members in Redis after $((now - connect_start)) s (see $OUT/logs/bench-*.progress)"
    for pid in "${BENCH_PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || die "a groupcast-bench ended early: $(tail -3 "$OUT"/logs/bench-*.txt "$OUT"/logs/bench-*.progress | tail -12)"
    done
    if ((now - last_line >= 10)); then
        last_line=$now
        log "  $((now - connect_start)) s: $have of $MEMBERS members in presence; load $(cut -d' ' -f1 /proc/loadavg)"
    fi
    sleep 1
done
log "all $MEMBERS members in presence after $(($(date +%s) - connect_start)) s; load $(cut -d' ' -f1-3 /proc/loadavg)"
sleep 5 # the last batches, and a heartbeat or two
rss=0
for pid in "${NODE_PIDS[@]}"; do rss=$((rss + $(awk '/VmRSS/ {print $2}' "/proc/$pid/status"))); done
bench_rss=0
for pid in "${BENCH_PIDS[@]}"; do bench_rss=$((bench_rss + $(awk '/VmRSS/ {print $2}' "/proc/$pid/status"))); done
bytes=$(rcli EVAL "local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do n = n + redis.call('MEMORY', 'USAGE', k, 'SAMPLES', 0) end return n" 0 "groupcast:presence:{group:$GROUP}:*")
log "nodes' RSS $((rss / 1024)) MiB in all; the benches' $((bench_rss / 1024)) MiB; the group's presence keys $bytes B in Redis ($((bytes / MEMBERS)) B per member)"

API="http://127.0.0.1:${PORTS[0]}"
# measure NAME PATH: REQUESTS GETs of PATH on node 1, one at a time.
measure() {
    local name=$1 path=$2 cpu0 cpu1 idle0 idle1 t0 t1 t2
    # Redis CPU while nothing is asked, for as long as the requests took
    # last time (the first time: 5 s).
    local idle_secs=${IDLE_SECS:-5}
    rcli CONFIG RESETSTAT >/dev/null
    idle0=$(redis_cpu_us)
    t0=$(date +%s.%N)
    sleep "$idle_secs"
    idle1=$(redis_cpu_us)
    t1=$(date +%s.%N)
    local idle_scripts
    idle_scripts=$(rcli INFO commandstats | tr -d '\r' | sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\).*/\1/p')
    rcli CONFIG RESETSTAT >/dev/null
    cpu0=$(redis_cpu_us)
    t1=$(date +%s.%N)
    : >"$OUT/$name.times"
    for ((k = 0; k < REQUESTS; k++)); do
        timeout 60 curl -s -o "$OUT/logs/$name.body" -w '%{http_code} %{time_total} %{size_download}\n' "$API$path" \
            >>"$OUT/$name.times" || echo "000 60 0" >>"$OUT/$name.times"
    done
    cpu1=$(redis_cpu_us)
    t2=$(date +%s.%N)
    local scripts
    scripts=$(rcli INFO commandstats | tr -d '\r' | sed -n 's/^cmdstat_evalsha:\(.*\)/\1/p')
    python3 - "$name" "$path" "$OUT/$name.times" "$OUT/$name.json" "$((cpu1 - cpu0))" "$((idle1 - idle0))" \
        "$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" "$(awk -v a="$t1" -v b="$t2" 'BEGIN {print b - a}')" \
        "${scripts:-}" "${idle_scripts:-0}" "$MEMBERS" "$(cut -d' ' -f1-3 /proc/loadavg)" "$OUT/logs/$name.body" <<'EOF' | tee -a "$OUT/summary.txt" >&2
import json, statistics, sys
(name, path, times_path, out, cpu, idle_cpu, idle_secs, secs, scripts, idle_scripts, members, load,
 body_path) = sys.argv[1:]
rows = [line.split() for line in open(times_path)]
codes = sorted({r[0] for r in rows})
times = sorted(float(r[1]) * 1000 for r in rows)
size = int(rows[-1][2])
p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
cpu, idle_cpu, idle_secs, secs = int(cpu), int(idle_cpu), float(idle_secs), float(secs)
idle_rate = idle_cpu / idle_secs
net = cpu - idle_rate * secs
fields = dict(kv.split("=") for kv in scripts.split(",")) if scripts else {}
calls = int(fields.get("calls", 0))
usec = int(fields.get("usec", 0))
idle_calls_rate = int(idle_scripts) / idle_secs
body = json.load(open(body_path))
shown = {k: body[k] for k in ("count", "users", "presence") if k in body}
s = {"name": name, "path": path, "requests": len(rows), "status": codes, "members": int(members),
     "ms_median": round(statistics.median(times), 2), "ms_p99": round(p99, 2), "ms_max": round(times[-1], 2),
     "ms_min": round(times[0], 2), "body_bytes": size, "seconds": round(secs, 2),
     "redis_cpu_us": cpu, "redis_idle_cpu_us_per_s": round(idle_rate), "redis_cpu_us_per_request": round(net / len(rows)),
     "evalsha_calls": calls, "evalsha_usec": usec, "idle_evalsha_per_s": round(idle_calls_rate, 1),
     "evalsha_usec_per_request": round(usec / len(rows)), "load": load, "answer": shown}
json.dump(s, open(out, "w"))
print(f"{name}: GET {path} x{len(rows)} (status {','.join(codes)}, {size} B): median {s['ms_median']} ms, "
      f"p99 {s['ms_p99']} ms (min {s['ms_min']}, max {s['ms_max']}); Redis CPU {cpu} us over {secs:.2f} s, "
      f"idle {idle_rate:.0f} us/s -> {s['redis_cpu_us_per_request']} us per request; "
      f"EVALSHA {calls} calls in the window ({idle_calls_rate:.1f}/s idle: the heartbeats), "
      f"{usec} us inside Redis = {s['evalsha_usec_per_request']} us per request; answer {shown}; load {load}")
EOF
}
measure group "/api/groups/$GROUP"
measure members100 "/api/groups/$GROUP/members"
measure members1000 "/api/groups/$GROUP/members?limit=1000"

# Everyone leaves; every node's members must go.
for pid in "${BENCH_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
for pid in "${BENCH_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
for _ in $(seq 60); do [ "$(members)" = 0 ] && break; sleep 1; done
log "after every client left: $(members) members in presence; load $(cut -d' ' -f1-3 /proc/loadavg)"
log "done: $OUT"
