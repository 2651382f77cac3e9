#!/usr/bin/env bash
# The join storm of BENCHMARKS.md, loopback only: one node on a local
# redis-server holding a history group of 1,000 messages with one member
# (so its live stream, and its tail, are warm), then N groupcast.v1 clients
# join within a second with ?history=1000 (examples/join_storm.rs). Each
# run measures, with the node's tail on and off alternating in the same
# run: the clients' catch-up times, messages lost or doubled, the history
# reads that reached Redis (XRANGE/XREVRANGE calls, from INFO
# commandstats) and Redis CPU during the storm, and the node's own counts
# of reads served from its tail, from Redis, and merged.
#
#   scripts/storm.sh                     # N = 2000 and 5000, 2 runs each
#   STORM_CLIENTS="2000 5000 9000" RUNS=3 scripts/storm.sh
#   NO_BUILD=1 scripts/storm.sh          # use the binaries already built
#
# `scripts/storm.sh resume` runs the resume storm instead
# (examples/resume_storm.rs): three nodes on the local redis-server, N
# groupcast.v1 clients over STORM_GROUPS (20) history groups all on node
# 1, STORM_RATE (50) messages/s published through nodes 2 and 3; node 1
# is SIGKILLed and the clients reconnect to nodes 2 and 3 with the
# JavaScript client's jittered backoff and resume with since/epoch. Each
# run reports the time from the kill until each client caught up
# (p50/p99/max), messages lost or doubled, the history reads that reached
# Redis (XRANGE/XREVRANGE) and Redis CPU from the kill until the last
# client caught up, and the survivors' counts of reads served from their
# tail, from Redis, and merged; the tail on and off alternating:
#
#   STORM_CLIENTS="2000 5000 10000" RUNS=2 scripts/storm.sh resume
#
# Every step is bounded in time; everything started is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${1:-join}
case "$MODE" in
  join | resume) ;;
  *) echo "usage: scripts/storm.sh [join|resume]" >&2; exit 2 ;;
esac
STORM_CLIENTS=${STORM_CLIENTS:-"2000 5000"}
STORM_GROUPS=${STORM_GROUPS:-20}
STORM_RATE=${STORM_RATE:-50}
RUNS=${RUNS:-2}
HISTORY=${HISTORY:-1000}
OUT=${OUT:-bench/results/$(date -u +%Y-%m-%d)/$([ "$MODE" = join ] && echo storm || echo resume-storm)}
TARGET=${STORM_TARGET:-${CARGO_TARGET_DIR:-target}/release}
# The storm tools' directory (STORM_EXAMPLES=target/debug/examples to use
# debug builds of the tools against release nodes).
EXAMPLES=${STORM_EXAMPLES:-$TARGET/examples}
mkdir -p "$OUT/logs"

command -v redis-server >/dev/null || { echo "needs redis-server (apt-get install -y redis-server)" >&2; exit 1; }
if [ "${NO_BUILD:-0}" != 1 ]; then
  cargo build --release --bin groupcast --example join_storm --example resume_storm
fi
# One socket per client, in the storm tool and in the node.
ulimit -n "$(ulimit -Hn)"

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$OUT/summary.txt"; }

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$OUT/logs/redis.log" 2>&1 &
pids+=($!)
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }
for _ in $(seq 50); do rcli PING >/dev/null 2>&1 && break; sleep 0.1; done

# Waits (bounded) until the command after `$1` succeeds (a command, run
# again each time: not a `test` of values expanded once).
wait_for() {
  local what=$1; shift
  for _ in $(seq 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "timed out waiting for $what" >&2; exit 1
}

# Whether one connection listens to channel $1.
numsub_is_one() { [ "$(rcli PUBSUB NUMSUB "$1" | tail -1)" = 1 ]; }

# Whether file $1 has at least $2 lines.
lines_at_least() { [ "$(wc -l <"$1")" -ge "$2" ]; }

# One storm: $1 clients, tail "on" or "off", run $3.
storm() {
  local clients=$1 tail=$2 run=$3 group="storm-$1-$2-$3" port cache
  port=$(free_port)
  cache=$([ "$tail" = on ] && echo 67108864 || echo 0)
  "$TARGET/groupcast" --listen "127.0.0.1:$port" --redis-url "redis://127.0.0.1:$REDIS_PORT" \
    --history "storm-*=1000:1h" --history-cache "$cache" --max-connections 20000 \
    --max-connections-per-ip 0 --queue-len 2048 >"$OUT/logs/node-$group.log" 2>&1 &
  local node=$!
  pids+=("$node")
  wait_for "the node" curl -sf "http://127.0.0.1:$port/readyz"
  # A member, so that the node listens to the group and its tail is warm.
  "$TARGET/groupcast" tail --quiet "ws://127.0.0.1:$port/ws/$group" >"$OUT/logs/keeper-$group.txt" 2>/dev/null &
  local keeper=$!
  pids+=("$keeper")
  wait_for "the member to join" numsub_is_one "group:$group"
  seq 1 "$HISTORY" | timeout 120 "$TARGET/groupcast" publish "$group" - --redis-url "redis://127.0.0.1:$REDIS_PORT" >/dev/null 2>&1
  wait_for "the member to get the backlog" lines_at_least "$OUT/logs/keeper-$group.txt" "$HISTORY"
  rcli CONFIG RESETSTAT >/dev/null
  local cpu_before cpu_after
  cpu_before=$(rcli INFO cpu | awk -F: '/used_cpu_(sys|user):/ {s+=$2} END {print s}')
  timeout 300 "$EXAMPLES/join_storm" --url "ws://127.0.0.1:$port" --group "$group" \
    --clients "$clients" --history "$HISTORY" --within-secs 1 >"$OUT/logs/storm-$group.json"
  cpu_after=$(rcli INFO cpu | awk -F: '/used_cpu_(sys|user):/ {s+=$2} END {print s}')
  local reads metrics
  reads=$(rcli INFO commandstats | awk -F'[:=,]' '/cmdstat_x(rev)?range:/ {s+=$3} END {print s+0}')
  metrics=$(curl -sf "http://127.0.0.1:$port/metrics")
  local m_tail m_store m_merged
  m_tail=$(echo "$metrics" | awk '/^groupcast_history_reads_tail_total/ {print $2}')
  m_store=$(echo "$metrics" | awk '/^groupcast_history_reads_store_total/ {print $2}')
  m_merged=$(echo "$metrics" | awk '/^groupcast_history_reads_merged_total/ {print $2}')
  python3 - "$OUT/logs/storm-$group.json" "$clients" "$tail" "$run" "$reads" "$cpu_before" "$cpu_after" \
    "$m_tail" "$m_store" "$m_merged" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
path, clients, tail, run, reads, before, after, m_tail, m_store, m_merged = sys.argv[1:]
r = json.load(open(path))
cpu_ms = (float(after) - float(before)) * 1000
print(json.dumps({"clients": int(clients), "tail": tail, "run": int(run),
  "caught_up": r["caught_up"], "failed": r["failed"], "lost": r["lost"], "doubled": r["doubled"],
  "p50_ms": round(r["catch_up_ms_p50"], 1), "p99_ms": round(r["catch_up_ms_p99"], 1),
  "max_ms": round(r["catch_up_ms_max"], 1), "redis_history_commands": int(reads),
  "redis_cpu_ms": round(cpu_ms, 1), "node_reads_tail": int(float(m_tail or 0)),
  "node_reads_store": int(float(m_store or 0)), "node_reads_merged": int(float(m_merged or 0)),
  "first_error": r["first_error"]}))
PY
  kill "$keeper" "$node" 2>/dev/null || true
  wait "$keeper" "$node" 2>/dev/null || true
}

# The survivors' counts of history reads: served from the tail, from
# Redis, merged (summed over the nodes on ports $@).
node_reads() {
  local port
  for port in "$@"; do curl -sf "http://127.0.0.1:$port/metrics" || true; done |
    awk '/^groupcast_history_reads_tail_total/ {t += $2} /^groupcast_history_reads_store_total/ {s += $2}
         /^groupcast_history_reads_merged_total/ {m += $2} END {printf "%d %d %d\n", t, s, m}'
}

# Starts a node on a free port with the tail on or off ($1); sets
# `started_port` and `started_pid`. (Not a $(subshell): the pid must be
# this shell's child.)
start_node() {
  local cache
  cache=$([ "$1" = on ] && echo 67108864 || echo 0)
  started_port=$(free_port)
  "$TARGET/groupcast" --listen "127.0.0.1:$started_port" --redis-url "redis://127.0.0.1:$REDIS_PORT" \
    --history "storm-*=1000:1h" --history "rstorm-*/*=1000:1h" --history-cache "$cache" \
    --max-connections 20000 --max-connections-per-ip 0 --queue-len 2048 \
    >"$OUT/logs/node-$2.log" 2>&1 &
  started_pid=$!
  pids+=("$started_pid")
  wait_for "node $2" curl -sf "http://127.0.0.1:$started_port/readyz"
}

# One resume storm: $1 clients, tail "on" or "off", run $3.
resume_storm() {
  local clients=$1 tail=$2 run=$3 name="rstorm-$1-$2-$3" ports=() nodes=() i
  for i in 1 2 3; do
    start_node "$tail" "$name-$i"
    ports+=("$started_port")
    nodes+=("$started_pid")
  done
  timeout 600 "$EXAMPLES/resume_storm" --victim "127.0.0.1:${ports[0]}" --victim-pid "${nodes[0]}" \
    --survivors "127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}" --redis-url "redis://127.0.0.1:$REDIS_PORT" \
    --clients "$clients" --groups "$STORM_GROUPS" --rate "$STORM_RATE" --prefix "$name" \
    >"$OUT/logs/storm-$name.json"
  local reads
  reads=$(node_reads "${ports[1]}" "${ports[2]}")
  python3 - "$OUT/logs/storm-$name.json" "$tail" "$run" $reads <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
path, tail, run, m_tail, m_store, m_merged = sys.argv[1:]
r = json.load(open(path))
print(json.dumps({"clients": r["clients"], "groups": r["groups"], "tail": tail, "run": int(run),
  "caught_up": r["caught_up"], "failed": r["failed"], "lost": r["lost"], "doubled": r["doubled"],
  "p50_ms": round(r["catch_up_ms_p50"], 1), "p99_ms": round(r["catch_up_ms_p99"], 1),
  "max_ms": round(r["catch_up_ms_max"], 1), "redis_history_commands": r["redis_history_commands"],
  "redis_cpu_ms": round(r["redis_cpu_ms"], 1), "survivors_reads_tail": int(m_tail),
  "survivors_reads_store": int(m_store), "survivors_reads_merged": int(m_merged),
  "first_error": r["first_error"]}))
PY
  kill "${nodes[@]}" 2>/dev/null || true
  wait "${nodes[@]}" 2>/dev/null || true
}

# Runs `$1 CLIENTS TAIL RUN` for each run and N, the tail on and off in
# turn (alternating which goes first, so neither always follows a change).
each_storm() {
  local run clients tail order
  for run in $(seq "$RUNS"); do
    for clients in $STORM_CLIENTS; do
      if [ $((run % 2)) = 1 ]; then order="on off"; else order="off on"; fi
      for tail in $order; do
        log "run $run: $clients clients, tail $tail"
        "$1" "$clients" "$tail" "$run"
      done
    done
  done
}

if [ "$MODE" = resume ]; then
  log "resume storm: clients ${STORM_CLIENTS} over $STORM_GROUPS groups, $STORM_RATE msg/s, $RUNS runs, tail on/off alternating (results in $OUT)"
  each_storm resume_storm
else
  log "join storm: clients ${STORM_CLIENTS}, ?history=$HISTORY, $RUNS runs, tail on/off alternating (results in $OUT)"
  each_storm storm
fi
log "done"
