#!/usr/bin/env bash
# Runs the workloads of BENCHMARKS.md end to end on this machine, loopback only:
# starts a redis-server on a free loopback port, groupcast nodes and reference
# nodes (examples/reference.rs), runs target/release/groupcast-bench against
# each, several runs, prints medians and spread, and stops everything it
# started. Every step is bounded in time (`timeout`).
#
# Kinds (KINDS, default "groupcast reference prebuilt"; alternated within each
# run of w1, w1max, w2, w2fix, w3 and scale, and each run starts one kind
# further along the list — run 1 a b c, run 2 b c a, run 3 c a b — so that
# no kind is always the one that runs first after a change of workload):
#   groupcast  target/release/groupcast (GC=...)
#   baseline   another groupcast binary (GC_BASELINE=...)
#   reference  examples/reference.rs --mode tungstenite: axum WebSockets, one
#              Redis SUBSCRIBE connection, a bounded queue per socket
#   prebuilt   examples/reference.rs --mode prebuilt: each broadcast's frame
#              built once, one task and one write_vectored per socket, no
#              per-socket buffers (--deflate per-socket in `deflate`)
# Binaries: GC, BENCH and REF override the paths; by default they are under
# $CARGO_TARGET_DIR (or target/)/release.
#
#   scripts/bench.sh                      # everything, 3 runs
#   ONLY=w1,w3 RUNS=5 scripts/bench.sh    # some workloads
#   NO_BUILD=1 scripts/bench.sh           # use the binaries already built
#   GC=/path/to/other/groupcast KINDS=groupcast ONLY=w1 W1_RATE=150 NO_BUILD=1 scripts/bench.sh
#                                         # A/B a change (W1 at another rate)
#   GC_BASELINE=/path/to/old/groupcast KINDS="groupcast baseline reference" ONLY=w1 scripts/bench.sh
#                                         # A/B in one run, alternating with the reference
#   CARGO_TARGET_DIR=/work/target-x ONLY=w3 RUNS=1 NO_BUILD=1 scripts/bench.sh
#                                         # binaries from another target dir
#
# Workloads (names for ONLY):
#   w1     fan-out: 2 nodes, 1 group, 2000 clients, 64 B via Redis PUBLISH,
#          20 msgs/s (40k deliveries/s): server CPU µs per delivery, latency
#   w1max  same, stepping the rate: highest with no loss (and, separately,
#          highest that also had p99 < 50 ms)
#   w2     2 nodes, 1000 groups x 10 clients, round-robin: highest such rates
#   w2fix  the same at W2_RATE (2000) msgs/s = 20k deliveries/s: server CPU
#          per delivery, latency
#   w2iso  1000 groups whose members are all on node A, published through
#          node B's HTTP API: PUBLISHes counted in Redis, bus messages on A/B
#   w3     10000 idle clients over 1000 groups on one node: RSS per connection
#          (groupcast, reference, prebuilt; with W3_RB4096=1 also groupcast
#          and reference with the old 4 KiB read buffer)
#   stall  w1 with and without one client that never reads (closed with
#          1013, or kept with drop-oldest)
#   scale  one node, as many clients as the fd limit allows, one group,
#          1 broadcast per second: p99; each kind of KINDS in turn
#   churn  2000 joins+leaves/s over 1000 groups for 60 s, then a publish to
#          each group, PUBSUB CHANNELS, RSS; once per kind of CHURN_KINDS
#          (default "off on"; rotated every run): "on" with the nodes'
#          --presence and --join-leave on every group (churn-*, bench-*).
#          Each: Redis commands per second (INFO stats
#          total_commands_processed, INFO commandstats) and Redis CPU (INFO
#          cpu) over the churn, and, after the presence grace + TTL, the
#          groupcast:presence:* keys left (0 expected; listed if not).
#          Progress lines every 5 s (PROGRESS)
#   presmem  Redis bytes and commands per presence member: PRESMEM_N (10000)
#          idle clients on 2 nodes in one group, then in 1000 groups
#          (--presence on): MEMORY USAGE of the groups' presence keys / N,
#          commands per join and per leave (commandstats deltas / N)
#   presfan  join/leave fan-out: 1000 groupcast.v1 members of one group on 2
#          nodes while PRESFAN_RATE (20) other clients per second join and
#          leave it (500 ms each), --join-leave on and off alternating
#          (--presence on both): server CPU per join/leave frame delivered
#   presw1 W1 with the nodes' --presence covering its group (bench-*) and
#          without, alternating: server CPU per delivery (target <= 1.05x)
#   modes  W2 traffic (1000 groups x 10 clients, 2000 msgs/s through node B's
#          API = 20k deliveries/s) through single, sharded x3 and cluster x3
#          (local redis-server processes): PUBLISH/SPUBLISH calls and CPU of
#          each Redis instance, server CPU per delivery; then what classic
#          PUBLISH costs on the same cluster (CLUSTER INFO publish counters)
#   tail   W1 with history on (FCALL), the nodes' history tail on and off
#          (--history-cache 0) alternating: server CPU per delivery
#   hist   history: W1 with history off (PUBLISH) and on (FCALL
#          groupcast_publish, --history '*=1000:1h') alternating, server CPU
#          per delivery; Redis CPU per publish off/on (10 groups, 2000
#          msgs/s); catch-up of a client resuming 10,000 missed messages;
#          Redis memory per 1,000 retained 64-byte messages
#   deflate W1 with ~200-byte task-log-like text lines (--payload-kind log)
#          and clients offering permessage-deflate (--compression),
#          alternating: groupcast as is, groupcast compressing
#          ($GC_COMPRESSION_ARGS, default --compression; a binary without
#          that flag is reported and skipped), prebuilt --deflate
#          per-socket (compresses every message for every socket), prebuilt
#          without compression: wire bytes and server CPU per delivery
#   sse    W1 (2 nodes, 1 group, 2000 clients, W1_RATE msgs/s) over WebSocket
#          and over Server-Sent Events (groupcast-bench --transport sse),
#          alternating: server CPU per delivery, latency, loss, wire bytes;
#          then W3 (10000 idle clients, 1000 groups, 1 node) over each:
#          RSS per idle connection (labels ssew1-*, ssew3-*)
#   multigroup  1000 groups x 10 members on one node, MULTI_RATE (2000)
#          msgs/s via Redis PUBLISH round-robin over the groups (20k
#          deliveries/s), as MULTI_VARIANTS (default "g1raw g1v1 g10v1
#          g10v1s"), alternating: g1raw 10000 raw connections x 1 group;
#          g1v1 the same speaking groupcast.v1; g10v1 1000 groupcast.v1
#          connections x 10 consecutive groups (subscribe requests), whose
#          messages are published within ~5 ms of each other; g10v1s the
#          same with each connection's groups 100 apart (--strided-groups),
#          spread over the round: node RSS per connection and per
#          membership, server CPU per delivery, latency, loss (labels
#          multi-*)
# Results: $OUT/json/*.json (one bench summary each), $OUT/logs, $OUT/summary.txt
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
ONLY=${ONLY:-w1,w1max,w2,w2fix,w2iso,w3,stall,scale,churn,hist,tail,modes,deflate,sse,multigroup,presmem,presfan,presw1}
OUT=${OUT:-target/bench/$(date +%Y%m%d-%H%M%S)}
W1_RATES=${W1_RATES:-25 50 100 150 200 300}
W2_RATES=${W2_RATES:-2000 4000 6000 8000 12000}
STEP_DURATION=${STEP_DURATION:-8s}
W1_RATE=${W1_RATE:-20}
KINDS=${KINDS:-groupcast reference prebuilt}
# sse and multigroup at a smaller scale (a quick check of the script):
# SSE_CLIENTS, IDLE_CLIENTS (W3-style, 10 per group), MULTI_GROUPS (10
# members each), MULTI_RATE, DURATION.
SSE_CLIENTS=${SSE_CLIENTS:-2000}
IDLE_CLIENTS=${IDLE_CLIENTS:-10000}
MULTI_GROUPS=${MULTI_GROUPS:-1000}
MULTI_VARIANTS=${MULTI_VARIANTS:-g1raw g1v1 g10v1 g10v1s}
MULTI_RATE=${MULTI_RATE:-2000}
DURATION=${DURATION:-20s}
# Presence workloads (see above): CHURN_KINDS, CHURN_SECONDS (60),
# PRESMEM_N, PRESFAN_RATE, PRESFAN_MEMBERS (1000), PRESFAN_SECONDS (30),
# PRESFAN_QUEUE (the nodes' --queue-len in presfan, 4096);
# PROGRESS: the progress interval of their bench runs (5s), printed.
CHURN_KINDS=${CHURN_KINDS:-off on}
CHURN_SECONDS=${CHURN_SECONDS:-60}
PRESMEM_N=${PRESMEM_N:-10000}
PRESFAN_RATE=${PRESFAN_RATE:-20}
PRESFAN_MEMBERS=${PRESFAN_MEMBERS:-1000}
PRESFAN_SECONDS=${PRESFAN_SECONDS:-30}
PRESFAN_QUEUE=${PRESFAN_QUEUE:-4096}
for var in CHURN_SECONDS PRESMEM_N PRESFAN_RATE PRESFAN_MEMBERS PRESFAN_SECONDS PRESFAN_QUEUE; do
    [[ ${!var} =~ ^[1-9][0-9]*$ ]] || { echo "$var must be a whole number above 0, not '${!var}'" >&2; exit 1; }
done
((PRESMEM_N >= 1000)) || { echo "PRESMEM_N must be at least 1000 (presmem's 1,000 groups)" >&2; exit 1; }
# rotated RUN ITEM...: the items rotated by RUN - 1, so that no item is
# always the first after a change of workload.
rotated() {
    local run=$1
    shift
    local -a items=("$@")
    local n=${#items[@]} i
    for ((i = 0; i < n; i++)); do
        printf '%s ' "${items[(i + run - 1) % n]}"
    done
}
# kinds_of RUN: KINDS rotated by RUN - 1 (see "Kinds" above).
kinds_of() {
    local -a kinds
    read -r -a kinds <<<"$KINDS"
    rotated "$1" "${kinds[@]}"
}
SOURCES=127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4
TARGET_DIR=${CARGO_TARGET_DIR:-target}
GC=${GC:-$TARGET_DIR/release/groupcast}
BENCH=${BENCH:-$TARGET_DIR/release/groupcast-bench}
REF=${REF:-$TARGET_DIR/release/examples/reference}
CATCHUP=${CATCHUP:-$TARGET_DIR/release/examples/catchup}
GC_COMPRESSION_ARGS=${GC_COMPRESSION_ARGS:---compression}
mkdir -p "$OUT/json" "$OUT/logs"

if [ -z "${NO_BUILD:-}" ]; then
    cargo build --release --bin groupcast --bin groupcast-bench --example reference --example catchup
fi
for bin in "$GC" "$BENCH" "$REF"; do
    [ -x "$bin" ] || { echo "missing $bin (build first)" >&2; exit 1; }
done
command -v redis-server >/dev/null || { echo "needs redis-server (apt-get install -y redis-server)" >&2; exit 1; }

STARTED=()
cleanup() {
    for pid in "${STARTED[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${STARTED[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

want() { [[ ",$ONLY," == *",$1,"* ]]; }
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/summary.txt" >&2; }

# free_port, wait_port
source scripts/lib/ports.sh

stop() { # pid...
    for pid in "$@"; do kill "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    >"$OUT/logs/redis.log" 2>&1 &
REDIS_PID=$!
STARTED+=("$REDIS_PID")
wait_port "$REDIS_PORT"
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }

# Redis's own counters over a window: redis_window_start (CONFIG RESETSTAT,
# CPU and time noted), then redis_window_end LABEL: the commands (INFO stats
# total_commands_processed and INFO commandstats calls, which count the
# commands scripts run as well as the scripts), CPU (INFO cpu
# used_cpu_sys + used_cpu_user) and seconds since the start, printed and
# written to $OUT/json/rstat-LABEL.json.
redis_cpu_ms() { rcli INFO cpu | tr -d '\r' | awk -F: '/^used_cpu_(sys|user):/ {s += $2} END {printf "%d", s * 1000}'; }
redis_window_start() {
    rcli CONFIG RESETSTAT >/dev/null
    RW_CPU=$(redis_cpu_ms)
    RW_T=$(date +%s.%N)
}
redis_window_end() {
    local label=$1 cpu t
    cpu=$(redis_cpu_ms)
    t=$(date +%s.%N)
    { rcli INFO stats; rcli INFO commandstats; } | tr -d '\r' |
        python3 -c '
import json, re, sys
label, path, load, secs, cpu_ms = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
total, calls, usec = 0, {}, {}
for line in sys.stdin:
    if line.startswith("total_commands_processed:"):
        total = int(line.split(":")[1])
    m = re.match(r"cmdstat_([^:]+):calls=(\d+),usec=(\d+)", line)
    if m:
        calls[m.group(1)] = int(m.group(2))
        usec[m.group(1)] = int(m.group(3))
# What the measuring itself added (INFO, CONFIG RESETSTAT).
for own in ("info", "config|resetstat"):
    calls.pop(own, None)
    usec.pop(own, None)
s = {"label": label, "seconds": round(secs, 3), "total_commands_processed": total,
     "commands_per_sec": round(total / secs, 1), "commandstats_calls": calls,
     "commandstats_usec": usec, "commandstats_calls_total": sum(calls.values()),
     "redis_cpu_ms": cpu_ms, "redis_cpu_utilization": round(cpu_ms / 1000 / secs, 3),
     "load1_after": load}
json.dump(s, open(path, "w"))
top = ", ".join(f"{k} {v}" for k, v in sorted(calls.items(), key=lambda kv: -kv[1])[:8])
print(f"  redis over {label}: {total} commands in {secs:.1f} s = {total / secs:.0f}/s "
      f"(commandstats, the scripts own commands included: {sum(calls.values())}: {top}); "
      f"CPU {cpu_ms} ms = {cpu_ms / 10 / secs:.1f} % of a core")
' "$label" "$OUT/json/rstat-$label.json" "$(cut -d' ' -f1 /proc/loadavg)" \
            "$(awk -v a="$RW_T" -v b="$t" 'BEGIN {print b - a}')" "$((cpu - RW_CPU))" | tee -a "$OUT/summary.txt" >&2
}
# presence_members PATTERN: the members in the presence hashes whose keys
# match PATTERN (KEYS, inside Redis); presence_bytes PATTERN: their keys'
# MEMORY USAGE (SAMPLES 0: exact) summed, and how many keys.
presence_members() {
    rcli EVAL "local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do n = n + redis.call('HLEN', k) end return n" 0 "$1"
}
presence_bytes() {
    rcli EVAL "local n, c = 0, 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do n = n + redis.call('MEMORY', 'USAGE', k, 'SAMPLES', 0) c = c + 1 end return {n, c}" 0 "$1" | tr '\n' ' '
}

# start_node KIND NAME [extra args] -> sets NODE_PID and NODE_PORT.
# groupcast's admission limits (10,000 connections per node, 1,000 per client
# address) are lifted: every bench client comes from a few loopback addresses.
start_node() {
    local kind=$1 name=$2
    shift 2
    NODE_PORT=$(free_port)
    case $kind in
        groupcast|baseline)
            local bin=$GC
            [ "$kind" = baseline ] && bin=${GC_BASELINE:?set GC_BASELINE for the baseline kind}
            local redis_args=(--redis-url "$REDIS_URL")
            [ -n "${NODE_ARGS_OVERRIDE:-}" ] && redis_args=()
            "$bin" --listen "127.0.0.1:$NODE_PORT" "${redis_args[@]}" \
                --client-messages none --log warn --node-id "$name" \
                --max-connections 0 --max-connections-per-ip 0 "$@" \
                >"$OUT/logs/node-$name.log" 2>&1 &
            ;;
        reference|prebuilt)
            local mode=tungstenite
            [ "$kind" = prebuilt ] && mode=prebuilt
            "$REF" --listen "127.0.0.1:$NODE_PORT" --redis-url "$REDIS_URL" --mode "$mode" "$@" \
                >"$OUT/logs/node-$name.log" 2>&1 &
            ;;
        *) echo "unknown kind $kind" >&2; return 1 ;;
    esac
    NODE_PID=$!
    STARTED+=("$NODE_PID")
    wait_port "$NODE_PORT" "$NODE_PID" || { tail -5 "$OUT/logs/node-$name.log" >&2; return 1; }
}

# start_pair KIND [extra args] -> PAIR_PIDS "pid1,pid2", PAIR_URLS "--url a --url b", PAIR_PORTS
start_pair() {
    local kind=$1
    shift
    start_node "$kind" "$kind-a" "$@" || return 1
    local p1=$NODE_PID port1=$NODE_PORT
    start_node "$kind" "$kind-b" "$@" || { stop "$p1"; return 1; }
    PAIR_PIDS="$p1,$NODE_PID"
    PAIR_PORTS="$port1 $NODE_PORT"
    PAIR_URLS=(--url "ws://127.0.0.1:$port1" --url "ws://127.0.0.1:$NODE_PORT")
    sleep 1
}

stop_pair() { stop ${PAIR_PIDS//,/ }; }

# bench LABEL args... : one bounded bench run; its JSON goes to $OUT/json/LABEL.json
# With PROGRESS=<interval> (set by the presence workloads) its progress
# lines go to the terminal too, prefixed with the label, and to
# $OUT/logs/LABEL.progress.
bench() {
    local label=$1
    shift
    log "run $label (load: $(cut -d' ' -f1-3 /proc/loadavg))"
    local ok=1
    if [ -n "${PROGRESS:-}" ]; then
        timeout 900 "$BENCH" --progress-every "$PROGRESS" --label "$label" --source-addrs "$SOURCES" \
            --json-out "$OUT/json/$label.json" "$@" >"$OUT/logs/$label.txt" \
            2> >(tee "$OUT/logs/$label.progress" | sed -u "s/^/  [$label] /" >&2) || ok=
    else
        timeout 900 "$BENCH" --quiet --label "$label" --source-addrs "$SOURCES" \
            --json-out "$OUT/json/$label.json" "$@" >"$OUT/logs/$label.txt" 2>&1 || ok=
    fi
    if [ -z "$ok" ]; then
        sleep 0.2 # the progress tee's last lines
        log "  FAILED: $(tail -3 "$OUT/logs/$label.txt" "$OUT/logs/$label.progress" 2>/dev/null)"
        return 1
    fi
    python3 - "$OUT/json/$label.json" "$(cut -d' ' -f1 /proc/loadavg)" <<'EOF' | tee -a "$OUT/summary.txt" >&2
import json, sys
path, load = sys.argv[1], sys.argv[2]
s = json.load(open(path))
s["load1_after"] = float(load)
json.dump(s, open(path, "w"))
lat = s.get("latency_us") or {}
print(f"  delivered/s {s['deliveries_per_sec']:.0f} loss {s['loss']} dups {s['dups']} "
      f"ooo {s['out_of_order']} p50 {lat.get('p50')} p99 {lat.get('p99')} max {lat.get('max')} µs "
      f"cpu/delivery {s.get('server_cpu_us_per_delivery')} µs "
      f"(user {s.get('server_user_us_per_delivery')}) "
      f"wire/delivery {s.get('wire_bytes_per_delivery')} B "
      f"rss/conn {s.get('server_rss_per_connection_bytes')} B "
      f"(per membership {s.get('server_rss_per_membership_bytes')} B) ended_early {s['ended_early']}")
EOF
}

# keeps_up LABEL: no loss, publisher on schedule, nobody dropped
keeps_up() {
    python3 - "$OUT/json/$1.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
ok = (s["loss"] == 0 and s["publisher_behind"] == 0 and s["publish_errors"] == 0
      and s["ended_early"] == 0)
sys.exit(0 if ok else 1)
EOF
}

# fast LABEL: p99 < 50 ms
fast() {
    python3 -c 'import json,sys; l=json.load(open(sys.argv[1])).get("latency_us") or {}; sys.exit(0 if l.get("p99", 1e12) < 50000 else 1)' "$OUT/json/$1.json"
}

# step_search WORKLOAD KIND RUN CLIENTS GROUPS RATES...: steps the rate up
# while the nodes keep up (no loss, nobody dropped, publisher on schedule);
# records the highest such rate, and the highest that also had p99 < 50 ms.
step_search() {
    local workload=$1 kind=$2 run=$3 clients=$4 groups=$5
    shift 5
    local best=0 best_fast=0
    start_pair "$kind"
    for rate in "$@"; do
        local label="$workload-$kind-r$run-rate$rate"
        if bench "$label" "${PAIR_URLS[@]}" --clients "$clients" --groups "$groups" \
            --publish "$REDIS_URL" --rate "$rate" --duration "$STEP_DURATION" \
            --settle 3s --measure-pid "$PAIR_PIDS" && keeps_up "$label"; then
            best=$rate
            if fast "$label"; then best_fast=$rate; fi
        else
            break
        fi
        sleep 1
    done
    stop_pair
    log "$workload $kind run $run: highest rate without loss $best msgs/s; with p99 < 50 ms too: $best_fast msgs/s"
    echo "{\"workload\":\"$workload\",\"kind\":\"$kind\",\"run\":$run,\"max_rate\":$best,\"max_rate_p99_50ms\":$best_fast}" \
        >"$OUT/json/$workload-$kind-r$run-max.json"
}

log "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r); redis on $REDIS_PORT; out $OUT"

if want w1; then
    for run in $(seq "$RUNS"); do
        for kind in $(kinds_of "$run"); do
            start_pair "$kind"
            bench "w1-$kind-r$run" "${PAIR_URLS[@]}" --clients 2000 --groups 1 \
                --publish "$REDIS_URL" --rate "$W1_RATE" --duration 20s --measure-pid "$PAIR_PIDS" || true
            stop_pair
        done
    done
fi

if want w2fix; then
    # W2 at a fixed rate: 1000 groups x 10 clients on 2 nodes, W2_RATE
    # msgs/s round-robin over the groups via Redis PUBLISH (2000 msgs/s =
    # 20k deliveries/s): server CPU per delivery, latency.
    for run in $(seq "$RUNS"); do
        for kind in $(kinds_of "$run"); do
            start_pair "$kind"
            bench "w2fix-$kind-r$run" "${PAIR_URLS[@]}" --clients 10000 --groups 1000 \
                --publish "$REDIS_URL" --rate "${W2_RATE:-2000}" --duration 20s --settle 3s \
                --measure-pid "$PAIR_PIDS" || true
            stop_pair
        done
    done
fi

if want w1max; then
    for run in $(seq "$RUNS"); do
        for kind in $(kinds_of "$run"); do
            step_search w1max "$kind" "$run" 2000 1 $W1_RATES
        done
    done
fi

if want w2; then
    for run in $(seq "$RUNS"); do
        for kind in $(kinds_of "$run"); do
            step_search w2max "$kind" "$run" 10000 1000 $W2_RATES
        done
    done
fi

if want w2iso; then
    # Members of 1000 groups only on node A; publish through node B's HTTP API.
    start_pair groupcast
    read -r port_a port_b <<<"$PAIR_PORTS"
    before=$(rcli INFO commandstats | grep -o 'cmdstat_publish:calls=[0-9]*' | cut -d= -f2)
    bench "w2iso-groupcast" --url "ws://127.0.0.1:$port_a" --clients 10000 --groups 1000 \
        --publish "http://127.0.0.1:$port_b" --rate 1000 --duration 10s --settle 3s \
        --measure-pid "$PAIR_PIDS" || true
    after=$(rcli INFO commandstats | grep -o 'cmdstat_publish:calls=[0-9]*' | cut -d= -f2)
    sent=$(python3 -c "import json;print(json.load(open('$OUT/json/w2iso-groupcast.json'))['sent'])")
    bus_a=$(curl -s "http://127.0.0.1:$port_a/metrics" | grep -E '^[a-z_]*bus_received' | awk '{print $2}')
    bus_b=$(curl -s "http://127.0.0.1:$port_b/metrics" | grep -E '^[a-z_]*bus_received' | awk '{print $2}')
    log "w2iso: $sent broadcasts through node B's API -> $((${after:-0} - ${before:-0})) PUBLISH in Redis (presence heartbeats use SET, not PUBLISH); bus messages received: node A (all members) $bus_a, node B (no members) $bus_b"
    echo "{\"workload\":\"w2iso\",\"sent\":$sent,\"redis_publish\":$((${after:-0} - ${before:-0})),\"bus_received_a\":${bus_a:-null},\"bus_received_b\":${bus_b:-null}}" \
        >"$OUT/json/w2iso-check.json"
    stop_pair
fi

if want w3; then
    for run in $(seq "$RUNS"); do
        variants="groupcast reference prebuilt"
        [ -n "${W3_RB4096:-}" ] && variants="$variants groupcast-rb4096 reference-rb4096"
        for variant in $variants; do
            case $variant in
                *-rb4096) start_node "${variant%-rb4096}" w3 --read-buffer-size 4096 ;;
                *) start_node "$variant" w3 ;;
            esac
            sleep 1
            bench "w3-$variant-r$run" --url "ws://127.0.0.1:$NODE_PORT" --clients 10000 \
                --groups 1000 --duration 5s --settle 3s --measure-pid "$NODE_PID" || true
            stop "$NODE_PID"
        done
    done
fi

if want stall; then
    # W1 (2 nodes, 2000 clients, 1 group, W1_RATE msgs/s) without and with
    # one client that never reads: does it change the others' latency? The
    # nodes bound each socket's kernel send buffer (--socket-send-buffer
    # 8192); without that the kernel would absorb megabytes for the stalled
    # client, hours of this workload, and nothing would happen. stall1: the
    # defaults; the stalled client's socket fills within seconds, its
    # writer blocks, and it is dropped by the write timeout (10 s) or the
    # full queue (1013), whichever comes first. stall1drop: the worst case
    # for the others, a client that stays stalled to the end with a full
    # queue (--queue-full drop-oldest, --write-timeout 10m).
    for run in $(seq "$RUNS"); do
        for variant in stall0 stall1 stall1drop; do
            stalled=0 policy=close write_timeout=10s
            case $variant in
                stall1) stalled=1 ;;
                stall1drop) stalled=1 policy=drop-oldest write_timeout=10m ;;
            esac
            start_pair groupcast --socket-send-buffer 8192 --queue-full "$policy" \
                --write-timeout "$write_timeout"
            bench "$variant-groupcast-r$run" "${PAIR_URLS[@]}" --clients 2000 --groups 1 \
                --stall "$stalled" --publish "$REDIS_URL" --rate "$W1_RATE" --duration 60s \
                --measure-pid "$PAIR_PIDS" || true
            for port in $PAIR_PORTS; do
                curl -s "http://127.0.0.1:$port/metrics" | grep -E '^groupcast_(queue_full_closes|queue_drops|write_timeouts)_total'
            done | awk -v v="$variant" -v r="$run" '{s[$1]+=$2} END {for (k in s) printf "  %s r%s: %s %d\n", v, r, k, s[k]}' \
                | tee -a "$OUT/summary.txt" >&2
            stop_pair
        done
    done
fi

if want scale; then
    # Both the node and the bench are limited to `ulimit -Hn` descriptors.
    hard=$(ulimit -Hn)
    clients=$((hard - 200))
    for run in $(seq "$RUNS"); do
        for kind in $(kinds_of "$run"); do
            start_node "$kind" "scale-$kind"
            bench "scale-$kind-r$run" --url "ws://127.0.0.1:$NODE_PORT" --clients "$clients" --groups 1 \
                --publish "$REDIS_URL" --rate 1 --duration 10s --settle 3s --drain 10s \
                --connect-concurrency 500 --measure-pid "$NODE_PID" || true
            stop "$NODE_PID"
            sleep 2 # let the previous run's sockets leave TIME_WAIT's way
        done
    done
fi

if want deflate; then
    # W1 (2 nodes, 1 group, 2000 clients, W1_RATE msgs/s) with ~200-byte
    # log lines; every client offers permessage-deflate and inflates what
    # comes compressed. Variants, alternating within each run:
    #   groupcast               as is (declines the extension unless it
    #                           compresses by default)
    #   groupcast-compression   with $GC_COMPRESSION_ARGS: compressed once
    #                           per broadcast
    #   prebuilt-per-socket     prebuilt reference, every message compressed
    #                           again for every socket
    #   prebuilt                prebuilt reference, no compression
    for run in $(seq "$RUNS"); do
        for variant in groupcast groupcast-compression prebuilt-per-socket prebuilt; do
            case $variant in
                groupcast) kind=groupcast; extra=() ;;
                groupcast-compression) kind=groupcast; read -r -a extra <<<"$GC_COMPRESSION_ARGS" ;;
                prebuilt-per-socket) kind=prebuilt; extra=(--deflate per-socket) ;;
                prebuilt) kind=prebuilt; extra=() ;;
            esac
            if ! start_pair "$kind" "${extra[@]}"; then
                log "deflate-$variant-r$run: SKIPPED: $kind ${extra[*]} did not start" \
                    "($(grep -m1 -i error "$OUT/logs/node-$kind-a.log" || tail -1 "$OUT/logs/node-$kind-a.log"))"
                continue
            fi
            bench "deflate-$variant-r$run" "${PAIR_URLS[@]}" --clients 2000 --groups 1 \
                --publish "$REDIS_URL" --rate "$W1_RATE" --duration 20s --payload-kind log \
                --compression --measure-pid "$PAIR_PIDS" || true
            if [ -f "$OUT/json/deflate-$variant-r$run.json" ]; then
                python3 - "$OUT/json/deflate-$variant-r$run.json" <<'PY' | tee -a "$OUT/summary.txt" >&2
import json, sys
s = json.load(open(sys.argv[1]))
print(f"  compression accepted by {s['compression_accepted']} of {s['connect']['connected']} clients; "
      f"{s['wire_bytes']} wire bytes, {s['wire_bytes_per_delivery']} per delivery")
PY
            fi
            stop_pair
        done
    done
fi

if want sse; then
    # W1 over WebSocket and over Server-Sent Events, alternating (the same
    # nodes' flags; the SSE clients GET /sse/<group> on the same port).
    for run in $(seq "$RUNS"); do
        for transport in $(rotated "$run" ws sse); do
            start_pair groupcast
            bench "ssew1-$transport-r$run" "${PAIR_URLS[@]}" --transport "$transport" \
                --clients "$SSE_CLIENTS" --groups 1 --publish "$REDIS_URL" --rate "$W1_RATE" \
                --duration "$DURATION" --measure-pid "$PAIR_PIDS" || true
            stop_pair
        done
    done
    # W3 over each: 10,000 idle connections, 1,000 groups, one node.
    for run in $(seq "$RUNS"); do
        for transport in $(rotated "$run" ws sse); do
            start_node groupcast "ssew3-$transport"
            sleep 1
            bench "ssew3-$transport-r$run" --url "ws://127.0.0.1:$NODE_PORT" --transport "$transport" \
                --clients "$IDLE_CLIENTS" --groups $((IDLE_CLIENTS / 10)) --duration 5s --settle 3s \
                --measure-pid "$NODE_PID" || true
            stop "$NODE_PID"
            sleep 2 # let the previous run's sockets leave TIME_WAIT's way
        done
    done
fi

if want multigroup; then
    # 1000 groups x 10 members on one node either way: 10,000 connections
    # of one group (raw, then groupcast.v1) or 1,000 groupcast.v1
    # connections of 10 groups each (the URL's group and 9 subscribes).
    for run in $(seq "$RUNS"); do
        for variant in $(rotated "$run" $MULTI_VARIANTS); do
            case $variant in
                g1raw) shape=(--clients $((MULTI_GROUPS * 10))) ;;
                g1v1) shape=(--clients $((MULTI_GROUPS * 10)) --v1) ;;
                g10v1) shape=(--clients "$MULTI_GROUPS" --groups-per-client 10) ;;
                g10v1s) shape=(--clients "$MULTI_GROUPS" --groups-per-client 10 --strided-groups) ;;
                *) log "unknown MULTI_VARIANTS entry $variant"; continue ;;
            esac
            start_node groupcast "multi-$variant"
            sleep 1
            bench "multi-$variant-r$run" --url "ws://127.0.0.1:$NODE_PORT" "${shape[@]}" \
                --groups "$MULTI_GROUPS" --publish "$REDIS_URL" --rate "$MULTI_RATE" --duration "$DURATION" \
                --settle 3s --measure-pid "$NODE_PID" || true
            stop "$NODE_PID"
            sleep 2
        done
    done
fi

if want churn; then
    # Each kind of CHURN_KINDS in turn, rotated every run: off (no presence)
    # and on (presence and join/leave frames for every group).
    CHURN_PRES=(--presence 'churn-*,bench-*' --join-leave 'churn-*,bench-*')
    for run in $(seq "$RUNS"); do
        for kind in $(rotated "$run" $CHURN_KINDS); do
            case $kind in
                on) start_pair groupcast "${CHURN_PRES[@]}" ;;
                off) start_pair groupcast ;;
                *) log "unknown CHURN_KINDS entry $kind"; continue ;;
            esac
            pids=$PAIR_PIDS
            rss() { for p in ${pids//,/ }; do grep VmRSS "/proc/$p/status" | awk '{print $2}'; done | awk "{s+=\$1} END {print s}"; }
            # Steady members elsewhere keep the nodes busy; churn goes to churn-* groups.
            rss_before=$(rss)
            redis_window_start
            PROGRESS=${PROGRESS:-5s} bench "churn-$kind-r$run" "${PAIR_URLS[@]}" --clients 1000 --groups 100 \
                --publish "$REDIS_URL" --rate 100 --duration "${CHURN_SECONDS}s" --churn 2000 --churn-groups 1000 \
                --churn-hold 500ms --measure-pid "$pids" || true
            redis_window_end "churn-$kind-r$run"
            # Every churn group again, 2 members each, one publish per group per second.
            bench "churn-verify-$kind-r$run" "${PAIR_URLS[@]}" --clients 2000 --groups 1000 \
                --group-template 'churn-{}' --publish "$REDIS_URL" --rate 1000 --duration 3s \
                --settle 3s --measure-pid "$pids" || true
            # > the unsubscribe linger (2 s), one sample of the memory trimmer
            # (5 s), and the presence grace (5 s) + TTL (6 s) + confirm margin.
            sleep 15
            leaked=$(rcli PUBSUB CHANNELS 'group:*' | grep -c . || true)
            pres_keys=$(rcli --scan --pattern 'groupcast:presence:*' | grep -c . || true)
            pres_members=$(presence_members 'groupcast:presence:*:members')
            rss_after=$(rss)
            log "churn $kind: PUBSUB CHANNELS group:* after everyone left: $leaked; groupcast:presence:* keys left: $pres_keys, members in them: $pres_members; RSS of both nodes before $rss_before KiB, after $rss_after KiB"
            if [ "$pres_keys" != 0 ]; then
                rcli --scan --pattern 'groupcast:presence:*' | head -20 | while read -r key; do
                    log "  left: $key $(rcli TYPE "$key") pttl $(rcli PTTL "$key") ms: $(rcli EVAL "local t = redis.call('TYPE', KEYS[1])['ok'] if t == 'hash' then return redis.call('HGETALL', KEYS[1]) elseif t == 'zset' then return redis.call('ZRANGE', KEYS[1], 0, 9, 'WITHSCORES') end return {}" 1 "$key" | tr '\n' ' ' | cut -c1-300)"
                done
            fi
            echo "{\"workload\":\"churn\",\"kind\":\"$kind\",\"run\":$run,\"leaked_channels\":$leaked,\"presence_keys_left\":$pres_keys,\"presence_members_left\":$pres_members,\"rss_before_kib\":$rss_before,\"rss_after_kib\":$rss_after}" \
                >"$OUT/json/churn-check-$kind-r$run.json"
            stop_pair
        done
    done
    # Presence on against off, run by run: Redis commands and CPU.
    python3 - "$OUT/json" <<'EOF' | tee -a "$OUT/summary.txt" >&2
import glob, json, os, sys
d = sys.argv[1]
for on_path in sorted(glob.glob(os.path.join(d, "rstat-churn-on-r*.json"))):
    run = on_path.rsplit("-r", 1)[1][:-5]
    off_path = os.path.join(d, f"rstat-churn-off-r{run}.json")
    b_on, b_off = (os.path.join(d, f"churn-{k}-r{run}.json") for k in ("on", "off"))
    if not all(map(os.path.exists, (off_path, b_on, b_off))):
        continue
    on, off = json.load(open(on_path)), json.load(open(off_path))
    j_on = json.load(open(b_on))["churn"]["joined"]
    j_off = json.load(open(b_off))["churn"]["joined"]
    scripts = sum(v for k, v in on["commandstats_calls"].items() if k in ("evalsha", "eval"))
    print(f"churn run {run}: presence on {on['commands_per_sec']:.0f} commands/s "
          f"({on['total_commands_processed']} in {on['seconds']:.0f} s, {j_on} joins), "
          f"off {off['commands_per_sec']:.0f}/s ({off['total_commands_processed']} in {off['seconds']:.0f} s, {j_off} joins): "
          f"x{on['commands_per_sec'] / max(off['commands_per_sec'], 1e-9):.2f}; "
          f"(on - off) per join+leave {(on['total_commands_processed'] - off['total_commands_processed']) / max(j_on, 1):.2f} "
          f"commands, {scripts / max(j_on, 1):.3f} scripts; with the scripts' own commands (commandstats) per join+leave: on "
          f"{on['commandstats_calls_total'] / max(j_on, 1):.1f}, off {off['commandstats_calls_total'] / max(j_off, 1):.1f}; "
          f"top-level: EVALSHA {scripts / on['seconds']:.0f}/s, PING {on['commandstats_calls'].get('ping', 0) / on['seconds']:.0f}/s and "
          f"UNWATCH {on['commandstats_calls'].get('unwatch', 0) / on['seconds']:.0f}/s (the pool's checks; off: "
          f"{off['commandstats_calls'].get('ping', 0) / off['seconds']:.0f}/s and {off['commandstats_calls'].get('unwatch', 0) / off['seconds']:.0f}/s); "
          f"Redis CPU on {on['redis_cpu_ms']} ms ({on['redis_cpu_utilization'] * 100:.1f} % of a core), "
          f"off {off['redis_cpu_ms']} ms ({off['redis_cpu_utilization'] * 100:.1f} %): "
          f"{(on['redis_cpu_ms'] - off['redis_cpu_ms']) * 1000 / max(j_on, 1):.1f} µs more per join+leave")
EOF
fi

if want presmem; then
    # Redis bytes and commands per presence member: PRESMEM_N idle clients
    # on two nodes in one group, then in 1,000 groups.
    # wait_members PATTERN N SECONDS: until the members hashes hold N.
    wait_members() {
        local i
        for ((i = 0; i < $3 * 10; i++)); do
            [ "$(presence_members "$1")" = "$2" ] && return 0
            sleep 0.1
        done
        log "  presmem: $(presence_members "$1") members after $3 s, not $2"
        return 1
    }
    for run in $(seq "$RUNS"); do
        for shape in one many; do
            if [ "$shape" = one ]; then groups=1; else groups=1000; fi
            prefix="pm$shape$run"
            pattern="groupcast:presence:{group:$prefix-*}"
            start_pair groupcast --presence 'pm*'
            redis_window_start
            bench "presmem-$shape-r$run" "${PAIR_URLS[@]}" --clients "$PRESMEM_N" --groups "$groups" \
                --group-template "$prefix-{}" --duration 16s --settle 1s --measure-pid "$PAIR_PIDS" &
            bench_pid=$!
            if wait_members "$pattern:members" "$PRESMEM_N" 120; then
                redis_window_end "presmem-join-$shape-r$run"
                # The heartbeats while nothing changes.
                redis_window_start
                sleep 10
                redis_window_end "presmem-idle-$shape-r$run"
                read -r bytes keys <<<"$(presence_bytes "$pattern:*")"
                used=$(rcli INFO memory | tr -d '\r' | sed -n 's/^used_memory://p')
                log "presmem $shape: $PRESMEM_N members in $groups groups: $keys presence keys, MEMORY USAGE $bytes B = $((bytes / PRESMEM_N)) B per member (Redis used_memory $used B)"
                for key in members ids users nodes bynode leaving; do
                    read -r b k <<<"$(presence_bytes "$pattern:$key")"
                    log "  $key: $k keys, $b B ($((b / PRESMEM_N)) B per member)"
                done
                echo "{\"workload\":\"presmem\",\"shape\":\"$shape\",\"run\":$run,\"members\":$PRESMEM_N,\"groups\":$groups,\"keys\":$keys,\"bytes\":$bytes,\"bytes_per_member\":$((bytes / PRESMEM_N))}" \
                    >"$OUT/json/presmem-check-$shape-r$run.json"
            fi
            # The leaves, and the vacancies confirmed after the grace (5 s):
            # from here (the clients still connected for a few seconds: their
            # heartbeats are taken off at the idle rate) until the members
            # are gone and the grace is over.
            redis_window_start
            wait "$bench_pid" || true
            awk -v a="$RW_T" -v b="$(date +%s.%N)" 'BEGIN {print b - a}' >"$OUT/json/presmem-held-$shape-r$run.txt"
            wait_members "$pattern:members" 0 60 || true
            sleep 6
            redis_window_end "presmem-leave-$shape-r$run"
            stop_pair
        done
    done
    python3 - "$OUT/json" "$PRESMEM_N" <<'EOF' | tee -a "$OUT/summary.txt" >&2
import glob, json, os, sys
d, n = sys.argv[1], int(sys.argv[2])
scripts = lambda s: sum(v for k, v in s["commandstats_calls"].items() if k in ("evalsha", "eval"))
for path in sorted(glob.glob(os.path.join(d, "rstat-presmem-join-*.json"))):
    tag = os.path.basename(path)[len("rstat-presmem-join-"):-5]
    join = json.load(open(path))
    idle_p, leave_p = (os.path.join(d, f"rstat-presmem-{w}-{tag}.json") for w in ("idle", "leave"))
    if not (os.path.exists(idle_p) and os.path.exists(leave_p)):
        continue
    idle, leave = json.load(open(idle_p)), json.load(open(leave_p))
    held = float(open(os.path.join(d, f"presmem-held-{tag}.txt")).read())
    # The leave window less the heartbeats while the clients still held on.
    for k, rate in (("total_commands_processed", idle["commands_per_sec"]),
                    ("commandstats_calls_total", idle["commandstats_calls_total"] / idle["seconds"]),
                    ("redis_cpu_ms", idle["redis_cpu_ms"] / idle["seconds"])):
        leave[k] = max(0, leave[k] - rate * held)
    leave["commandstats_calls"]["evalsha"] = max(0, leave["commandstats_calls"].get("evalsha", 0)
        - idle["commandstats_calls"].get("evalsha", 0) / idle["seconds"] * held)
    print(f"presmem {tag}: per join {join['total_commands_processed'] / n:.3f} commands "
          f"({scripts(join) / n:.4f} scripts; {join['commandstats_calls_total'] / n:.2f} with the scripts' own), "
          f"Redis CPU {join['redis_cpu_ms'] * 1000 / n:.1f} µs; "
          f"per leave {leave['total_commands_processed'] / n:.3f} commands "
          f"({scripts(leave) / n:.4f} scripts; {leave['commandstats_calls_total'] / n:.2f} with theirs), "
          f"Redis CPU {leave['redis_cpu_ms'] * 1000 / n:.1f} µs (less {held:.1f} s of heartbeats); "
          f"heartbeats while idle {idle['commands_per_sec']:.1f} commands/s, "
          f"{scripts(idle) / idle['seconds']:.1f} scripts/s, Redis CPU {idle['redis_cpu_utilization'] * 100:.2f} % of a core")
EOF
fi

if want presfan; then
    # Join/leave fan-out: PRESFAN_MEMBERS groupcast.v1 members of pres0 on
    # two nodes, PRESFAN_RATE other clients per second joining and leaving
    # it; --join-leave on and off (--presence both), alternating.
    for run in $(seq "$RUNS"); do
        order="on off"
        [ $((run % 2)) = 0 ] && order="off on"
        for jl in $order; do
            # A longer queue (--queue-len, default 256) for both: the members'
            # own 1000 x 1000 / 2 join frames while they connect closed most
            # of them with 1013 in a first run (843 of 1,000), before the
            # measured window began.
            if [ "$jl" = on ]; then start_pair groupcast --presence 'pres*' --join-leave 'pres*' --queue-len "$PRESFAN_QUEUE"
            else start_pair groupcast --presence 'pres*' --queue-len "$PRESFAN_QUEUE"; fi
            PROGRESS=${PROGRESS:-5s} bench "presfan-jl$jl-r$run" "${PAIR_URLS[@]}" --clients "$PRESFAN_MEMBERS" \
                --groups 1 --group-template 'pres{}' --v1 --churn "$PRESFAN_RATE" --churn-groups 1 \
                --churn-template 'pres{}' --churn-hold 500ms --duration "${PRESFAN_SECONDS}s" --settle 10s \
                --measure-pid "$PAIR_PIDS" || true
            stop_pair
        done
    done
    python3 - "$OUT/json" "$PRESFAN_MEMBERS" <<'EOF' | tee -a "$OUT/summary.txt" >&2
import glob, json, os, sys
d, members = sys.argv[1], int(sys.argv[2])
for on_path in sorted(glob.glob(os.path.join(d, "presfan-jlon-r*.json"))):
    off_path = on_path.replace("jlon", "jloff")
    if not os.path.exists(off_path):
        continue
    on, off = json.load(open(on_path)), json.load(open(off_path))
    frames = sum(on["presence_frames"].values())
    joins, joins_off = on["churn"]["joined"], off["churn"]["joined"]
    # Off's CPU scaled to on's joins (they differ by a few at most).
    extra = on["server_cpu_us_window"] - off["server_cpu_us_window"] * joins / max(joins_off, 1)
    for name, s in (("on", on), ("off", off)):
        if s["ended_early"]:
            print(f"presfan {name}: WARNING: {s['ended_early']} members closed before the end "
                  f"({s['ended_early_first']}): fewer frames than 2 x joins x {members}")
    print(f"presfan {os.path.basename(on_path)[len('presfan-jlon-'):-5]}: join/leave on: {frames} frames "
          f"({on['presence_frames']}) for {joins} joins+leaves (expected {2 * joins * members}), "
          f"server CPU {on['server_cpu_us_window'] / 1000:.0f} ms; off: {joins_off} joins+leaves, "
          f"{off['server_cpu_us_window'] / 1000:.0f} ms; on - off (off scaled to on's joins) = "
          f"{extra / 1000:.0f} ms = {extra / max(frames, 1):.2f} µs per frame delivered "
          f"(on's whole CPU {on['server_cpu_us_window'] / max(frames, 1):.2f} µs per frame)")
EOF
fi

if want presw1; then
    # W1 with the nodes' presence covering its group (bench-*) and without,
    # alternating, the other first every run: what presence costs the
    # broadcast path (target: at most 1.05x).
    for run in $(seq "$RUNS"); do
        order="on off"
        [ $((run % 2)) = 0 ] && order="off on"
        for pres in $order; do
            if [ "$pres" = on ]; then start_pair groupcast --presence 'bench-*'
            else start_pair groupcast; fi
            bench "w1-pres$pres-r$run" "${PAIR_URLS[@]}" --clients 2000 --groups 1 \
                --publish "$REDIS_URL" --rate "$W1_RATE" --duration 20s --measure-pid "$PAIR_PIDS" || true
            stop_pair
        done
    done
fi

# ----- medians and spread -----
if want tail; then
    # W1 with history on (FCALL), the node's history tail on (its default
    # budget) and off (--history-cache 0), alternating within each run and
    # starting with the other one every run: what keeping the tail costs
    # the broadcast path (target: at most 1.05x).
    HIST=(--history '*=1000:1h')
    for run in $(seq "$RUNS"); do
        order="on off"
        [ $((run % 2)) = 0 ] && order="off on"
        for tail in $order; do
            if [ "$tail" = on ]; then start_pair groupcast "${HIST[@]}"
            else start_pair groupcast "${HIST[@]}" --history-cache 0; fi
            bench "w1-tail$tail-r$run" "${PAIR_URLS[@]}" --clients 2000 --groups 1 \
                --publish "$REDIS_URL" --fcall --rate "$W1_RATE" --duration 20s --measure-pid "$PAIR_PIDS" || true
            stop_pair
        done
    done
fi

if want hist; then
    # Redis's CPU time so far (user + system), in µs.
    redis_cpu_us() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%d", ($14 + $15) * 1000000 / hz }' "/proc/$REDIS_PID/stat"; }
    # calls and µs per call of one command since the last CONFIG RESETSTAT
    cmdstat() { rcli INFO commandstats | tr -d '\r' | sed -n "s/^cmdstat_$1:calls=\([0-9]*\),usec=[0-9]*,usec_per_call=\([0-9.]*\).*/\1 \2/p"; }
    HIST=(--history '*=1000:1h')
    for run in $(seq "$RUNS"); do
        # W1, history off then on, same nodes' flags but --history.
        start_pair groupcast
        bench "w1-groupcast-r$run" "${PAIR_URLS[@]}" --clients 2000 --groups 1 \
            --publish "$REDIS_URL" --rate "$W1_RATE" --duration 20s --measure-pid "$PAIR_PIDS" || true
        stop_pair
        start_pair groupcast "${HIST[@]}"
        bench "w1-history-r$run" "${PAIR_URLS[@]}" --clients 2000 --groups 1 \
            --publish "$REDIS_URL" --fcall --rate "$W1_RATE" --duration 20s --measure-pid "$PAIR_PIDS" || true
        stop_pair
        # Redis's own cost per publish: 10 groups x 2 members, 2000 msgs/s.
        for mode in off on; do
            if [ "$mode" = on ]; then start_pair groupcast "${HIST[@]}"; fcall=(--fcall); cmd=fcall
            else start_pair groupcast; fcall=(); cmd=publish; fi
            rcli CONFIG RESETSTAT >/dev/null
            cpu0=$(redis_cpu_us)
            bench "redis-$mode-r$run" "${PAIR_URLS[@]}" --clients 20 --groups 10 \
                --publish "$REDIS_URL" "${fcall[@]}" --rate 2000 --duration 10s --measure-pid "$PAIR_PIDS" || true
            cpu1=$(redis_cpu_us)
            read -r calls per_call <<<"$(cmdstat "$cmd")"
            python3 - "$OUT/json/redis-$mode-r$run.json" "$((cpu1 - cpu0))" "${calls:-0}" "${per_call:-0}" <<'PY' | tee -a "$OUT/summary.txt" >&2
import json, sys
path, cpu, calls, per_call = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
s = json.load(open(path))
s["redis_cpu_us_per_publish"] = cpu / calls if calls else None
s["redis_usec_per_call"] = per_call
json.dump(s, open(path, "w"))
print(f"  redis: {calls} calls, {per_call} us/call inside Redis, "
      f"{cpu / max(calls, 1):.1f} us of Redis CPU per publish (process, network included)")
PY
            stop_pair
        done
    done
    # Catch-up and memory, on one node.
    start_node groupcast hist-one --history 'catchup=10000:1h' --history 'mem*=1000:1h'
    ONE_PID=$NODE_PID ONE_PORT=$NODE_PORT
    for _ in $(seq 50); do rcli FUNCTION LIST | grep -q groupcast_publish && break; sleep 0.1; done
    python3 -c '
for n in range(1, 10001):
    body = "m%05d" % n + "x" * 58
    args = ["FCALL", "groupcast_publish", "1", "catchup", body]
    print("*%d\r\n" % len(args) + "".join("$%d\r\n%s\r\n" % (len(a), a) for a in args), end="")
# mem: 1,000 messages, all retained; memmax: 1,023, the stream trimmed to
# 1,000 at offset 1,008 and holding 1,015 entries, the most it holds.
for group, count in (("mem", 1000), ("memmax", 1023)):
    for n in range(1, count + 1):
        body = "m%05d" % n + "x" * 58
        args = ["FCALL", "groupcast_publish", "1", group, body]
        print("*%d\r\n" % len(args) + "".join("$%d\r\n%s\r\n" % (len(a), a) for a in args), end="")
' | rcli --pipe >/dev/null
    EPOCH=$(rcli GET 'groupcast:history-epoch:{group:catchup}')
    for run in $(seq "$RUNS"); do
        log "run catchup-r$run: a groupcast.v1 client resumes 10,000 missed messages"
        timeout 180 "$CATCHUP" --url "ws://127.0.0.1:$ONE_PORT/ws/catchup" \
            --since 0 --epoch "$EPOCH" --count 10000 | tee "$OUT/json/catchup-r$run.txt" | tee -a "$OUT/summary.txt" >&2 || log "  FAILED"
    done
    stream=$(rcli MEMORY USAGE 'groupcast:history:{group:mem}' SAMPLES 0)
    meta=$(rcli MEMORY USAGE 'groupcast:history-epoch:{group:mem}' SAMPLES 0)
    log "memory: 1,000 retained 64-byte messages: stream $stream B + meta $meta B = $(( (stream + meta) )) B ($(( (stream + meta) / 1000 )) B per message)"
    most=$(rcli MEMORY USAGE 'groupcast:history:{group:memmax}' SAMPLES 0)
    log "memory: the most a size-1,000 stream holds ($(rcli XLEN 'groupcast:history:{group:memmax}') entries, just before a trim): stream $most B"
    stop "$ONE_PID"
fi

if want modes; then
    # proc_cpu_us PID: a process's CPU time so far (user + system), in µs.
    proc_cpu_us() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%d", ($14 + $15) * 1000000 / hz }' "/proc/$1/stat"; }
    # calls of a command on the Redis at PORT since its last CONFIG RESETSTAT.
    calls_on() { redis-cli -p "$1" INFO commandstats | tr -d '\r' | sed -n "s/^cmdstat_$2:calls=\([0-9]*\).*/\1/p"; }
    # Three independent instances (sharded) and a three-primary cluster.
    declare -a SH_PORTS SH_PIDS CL_PORTS CL_PIDS
    for i in 0 1 2; do
        p=$(free_port)
        redis-server --port "$p" --bind 127.0.0.1 --save '' --appendonly no >"$OUT/logs/shard-$i.log" 2>&1 &
        SH_PIDS+=($!); STARTED+=($!); SH_PORTS+=("$p"); wait_port "$p"
    done
    for i in 0 1 2; do
        # The cluster bus is port + 10000: keep both below the ephemeral range.
        p=$((17000 + RANDOM % 2000))
        d=$(mktemp -d)
        redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes --cluster-config-file "$d/nodes.conf" \
            --cluster-node-timeout 5000 --dir "$d" --save '' --appendonly no >"$OUT/logs/cluster-$i.log" 2>&1 &
        CL_PIDS+=($!); STARTED+=($!); CL_PORTS+=("$p"); wait_port "$p"
    done
    redis-cli --cluster create "127.0.0.1:${CL_PORTS[0]}" "127.0.0.1:${CL_PORTS[1]}" "127.0.0.1:${CL_PORTS[2]}" \
        --cluster-replicas 0 --cluster-yes >"$OUT/logs/cluster-create.log" 2>&1
    for _ in $(seq 100); do redis-cli -p "${CL_PORTS[0]}" CLUSTER INFO | grep -q cluster_state:ok && break; sleep 0.2; done
    sharded_urls="redis://127.0.0.1:${SH_PORTS[0]},redis://127.0.0.1:${SH_PORTS[1]},redis://127.0.0.1:${SH_PORTS[2]}"
    cluster_urls="redis://127.0.0.1:${CL_PORTS[0]},redis://127.0.0.1:${CL_PORTS[1]},redis://127.0.0.1:${CL_PORTS[2]}"
    for run in $(seq "$RUNS"); do
        for mode in single sharded cluster; do
            case $mode in
                single)  ports=("$REDIS_PORT"); pids=("$REDIS_PID"); cmd=publish; margs=() ;;
                sharded) ports=("${SH_PORTS[@]}"); pids=("${SH_PIDS[@]}"); cmd=publish
                         margs=(--redis-mode sharded --redis-url "$sharded_urls") ;;
                cluster) ports=("${CL_PORTS[@]}"); pids=("${CL_PIDS[@]}"); cmd=spublish
                         margs=(--redis-mode cluster --redis-url "$cluster_urls") ;;
            esac
            # Two nodes; start_node passes the single Redis URL first, and
            # a mode's own --redis-url flags are added to it, so give the
            # single URL only in single mode.
            if [ "$mode" = single ]; then start_pair groupcast; else
                NODE_ARGS_OVERRIDE=1 start_pair groupcast "${margs[@]}"; fi
            read -r port_a port_b <<<"$PAIR_PORTS"
            for p in "${ports[@]}"; do redis-cli -p "$p" CONFIG RESETSTAT >/dev/null; done
            cpu0=(); for pid in "${pids[@]}"; do cpu0+=("$(proc_cpu_us "$pid")"); done
            bench "w2-$mode-r$run" "${PAIR_URLS[@]}" --clients 10000 --groups 1000 \
                --publish "http://127.0.0.1:$port_b" --rate 2000 --duration 10s --settle 3s \
                --measure-pid "$PAIR_PIDS" || true
            line="  $mode:"
            for i in "${!ports[@]}"; do
                c=$(calls_on "${ports[$i]}" "$cmd")
                cpu=$(( $(proc_cpu_us "${pids[$i]}") - cpu0[i] ))
                line="$line redis $i: ${c:-0} ${cmd^^}, $((cpu / 1000)) ms CPU;"
            done
            log "$line"
            stop_pair
        done
    done
    # Classic PUBLISH on the same cluster: every message goes to every node.
    for p in "${CL_PORTS[@]}"; do redis-cli -p "$p" CONFIG RESETSTAT >/dev/null; done
    before=(); for p in "${CL_PORTS[@]}"; do before+=("$(redis-cli -p "$p" CLUSTER INFO | tr -d '\r' | sed -n 's/^cluster_stats_messages_publish_received:\([0-9]*\)/\1/p')"); done
    timeout 120 redis-benchmark -p "${CL_PORTS[0]}" -n 20000 -c 4 -q PUBLISH group:classic "$(printf 'x%.0s' $(seq 64))" >/dev/null 2>&1
    line="classic PUBLISH of 20,000 messages to one node of the cluster:"
    for i in "${!CL_PORTS[@]}"; do
        after=$(redis-cli -p "${CL_PORTS[$i]}" CLUSTER INFO | tr -d '\r' | sed -n 's/^cluster_stats_messages_publish_received:\([0-9]*\)/\1/p')
        line="$line node $i received $(( ${after:-0} - ${before[$i]:-0} )) over the cluster bus;"
    done
    log "$line"
fi

python3 - "$OUT/json" <<'EOF' | tee -a "$OUT/summary.txt"
import glob, json, os, re, statistics, sys
from collections import defaultdict
runs = defaultdict(list)
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    s = json.load(open(path))
    label = s.get("label") or os.path.basename(path)[:-5]
    if "max_rate" in s:
        runs[(s["workload"], s["kind"], "max_rate msgs/s")].append(s["max_rate"])
        runs[(s["workload"], s["kind"], "max_rate p99<50ms")].append(s.get("max_rate_p99_50ms", 0))
        continue
    # WORKLOAD-VARIANT-rRUN[-rateN]: w1-prebuilt-r2, w3-reference-rb4096-r1,
    # deflate-prebuilt-per-socket-r3, w1max-groupcast-r1-rate50, ...
    # ssew1-sse-r1, ssew3-ws-r2, multi-g10v1-r3, ...
    m = re.match(r"(w1max|w2max|w2fix|w1|w2|w3|stall\d(?:drop)?|scale|deflate|redis|ssew1|ssew3|multi|presfan)-(.+?)-r\d+(-rate\d+)?$", label)
    if not m:
        continue
    key = f"{m.group(1)}-{m.group(2)}{m.group(3) or ''}"
    lat = s.get("latency_us") or {}
    for metric, value in [
        ("cpu us/delivery", s.get("server_cpu_us_per_delivery")),
        ("user us/delivery", s.get("server_user_us_per_delivery")),
        ("deliveries/s", s.get("deliveries_per_sec")),
        ("p50 us", lat.get("p50")), ("p99 us", lat.get("p99")), ("p999 us", lat.get("p999")),
        ("loss", s.get("loss")),
        ("wire B/delivery", s.get("wire_bytes_per_delivery")),
        ("rss/conn B", s.get("server_rss_per_connection_bytes") if key.startswith(("w3", "scale", "ssew3", "multi")) else None),
        ("rss/membership B", s.get("server_rss_per_membership_bytes") if key.startswith("multi") else None),
        ("cpu us/pres frame", s.get("server_cpu_us_per_presence_frame")),
        ("cpu us/churn join", s.get("server_cpu_us_per_churn_join")),
        ("load1", s.get("load1_after")),
    ]:
        if value is not None:
            runs[(key, "", metric)].append(value)
print(f"{'workload':<32} {'kind':<10} {'metric':<18} {'median':>10} {'min':>10} {'max':>10}  n")
for (w, k, metric), values in sorted(runs.items()):
    print(f"{w:<32} {k:<10} {metric:<18} {statistics.median(values):>10.4g} "
          f"{min(values):>10.4g} {max(values):>10.4g}  {len(values)}")
EOF
log "done: $OUT"
