#!/usr/bin/env bash
# The chaos run: three groupcast nodes and Redis (with the append-only
# file) as containers (deploy/chaos/docker-compose.yml), numbered
# publishers and resuming clients (examples/chaos_clients.rs), and faults
# injected at random intervals while messages flow. At the end every
# client's sequence is checked against the groups' history; the run fails
# when a resuming client (groupcast.v1, SSE) lost, doubled or reordered a
# message history still holds (docs/reliability.md, "The chaos run").
#
#   scripts/chaos.sh                         # 30 minutes (CHAOS_SECONDS=1800)
#   CHAOS_SECONDS=60 CHAOS_FAULT_MIN=4 CHAOS_FAULT_MAX=10 scripts/chaos.sh   # scripts/test.sh's
#   CHAOS_SEED=1234 scripts/chaos.sh         # the same faults, in the same order, at the same times
#
# Settings (environment): CHAOS_SECONDS (1800) of publishing; a fault every
# CHAOS_FAULT_MIN..CHAOS_FAULT_MAX seconds (10..40), drawn with CHAOS_SEED
# (random, printed); the clients: CHAOS_V1 (9), CHAOS_SSE (6), CHAOS_RAW (6)
# over CHAOS_GROUPS (3) groups, CHAOS_HTTP_PUBLISHERS (2) and
# CHAOS_FCALL_PUBLISHERS (2) at CHAOS_RATE (5) messages/s each. Results:
# CHAOS_OUT (bench/results/<date>/chaos): the run's log, its fault log, the
# checker's JSON and the markdown table. NO_BUILD=1 uses the images and
# the clients as they are. CHAOS_KEEP=1 leaves the stack up.
#
# The faults, drawn from a shuffled bag so each kind comes once before any
# comes again:
#   node_kill      docker kill a node, start it again 1-5 s later
#   node_stop      docker stop a node (SIGTERM: drain, 1001), start it 1-5 s later
#   redis_restart  docker restart redis (graceful: the AOF keeps everything)
#   redis_freeze   docker pause redis (SIGSTOP-like, cgroup freezer) for 2-6 s
#   pubsub_kill    CLIENT KILL TYPE pubsub: every node's subscriber connection
#   node_cut       a node disconnected from the Redis network for 2-8 s
#                  (its clients stay connected to it), then reconnected
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

seconds=${CHAOS_SECONDS:-1800}
fault_min=${CHAOS_FAULT_MIN:-10}
fault_max=${CHAOS_FAULT_MAX:-40}
seed=${CHAOS_SEED:-$((RANDOM * 32768 + RANDOM))}
project=${CHAOS_PROJECT:-groupcast-chaos}
out=${CHAOS_OUT:-bench/results/$(date -u +%Y-%m-%d)/chaos}
stamp=$(date -u +%Y%m%dT%H%M%SZ)-${seconds}s-seed${seed}
started=$(date +%s)
mkdir -p "$out"
log="$out/run-$stamp.log"
faults="$out/faults-$stamp.log"
: >"$faults"

say() { printf '%s [chaos] %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$log" >&2; }

if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
else
  echo "neither 'docker compose' nor 'docker-compose' is installed" >&2
  exit 1
fi
dc() { timeout 180 "${compose[@]}" -p "$project" -f "$root/deploy/chaos/docker-compose.yml" "$@"; }

# The images compose-test uses (scripts/build-deploy-images.sh: our release
# binary, Debian's redis-server with redis-cli), and the clients.
export REDIS_IMAGE=${CHAOS_REDIS_IMAGE:-local/redis:7-cli}
export GROUPCAST_IMAGE=${CHAOS_GROUPCAST_IMAGE:-local/groupcast:dev}
if [ "${NO_BUILD:-0}" != 1 ]; then
  bash scripts/build-deploy-images.sh >>"$log" 2>&1 || { tail -30 "$log"; exit 1; }
  timeout 900 cargo build --example chaos_clients >>"$log" 2>&1 || { tail -30 "$log"; exit 1; }
  if [ -z "${CHAOS_GROUPCAST_IMAGE:-}" ]; then
    # Other checkouts on the machine build local/groupcast:dev too: run
    # the image of this checkout's binary, under a tag of this run's own.
    sum=$(sha256sum "${CARGO_TARGET_DIR:-target}/release/groupcast" | cut -d' ' -f1)
    label=$(docker image inspect --format '{{ index .Config.Labels "groupcast.binary.sha256" }}' "$GROUPCAST_IMAGE")
    [ "$label" = "$sum" ] || { echo "$GROUPCAST_IMAGE is not this checkout's binary (another build raced ours): run again" >&2; exit 1; }
    export GROUPCAST_IMAGE=local/groupcast:chaos-${sum:0:12}
    docker tag local/groupcast:dev "$GROUPCAST_IMAGE"
  fi
fi
clients_bin=${CARGO_TARGET_DIR:-target}/debug/examples/chaos_clients

# Free loopback ports below the ephemeral range, four different ones.
# shellcheck source=scripts/lib/ports.sh
. scripts/lib/ports.sh
ports=()
while [ ${#ports[@]} -lt 4 ]; do
  port=$(free_port)
  [[ " ${ports[*]} " == *" $port "* ]] || ports+=("$port")
done
port1=${ports[0]} port2=${ports[1]} port3=${ports[2]} redis_port=${ports[3]}
export CHAOS_PORT_1=$port1 CHAOS_PORT_2=$port2 CHAOS_PORT_3=$port3 CHAOS_REDIS_PORT=$redis_port

client_pid=""
cleanup() {
  local status=$?
  [ -n "$client_pid" ] && kill "$client_pid" 2>/dev/null || true
  if [ "$status" -ne 0 ]; then
    dc logs --no-color --tail 40 >>"$log" 2>&1 || true
  fi
  if [ "${CHAOS_KEEP:-0}" = 1 ]; then
    say "CHAOS_KEEP=1: the stack stays up (${compose[*]} -p $project -f deploy/chaos/docker-compose.yml down -v)"
  else
    # Nothing may stay paused or cut off: down cannot stop a paused container.
    docker unpause "$(dc ps -q redis 2>/dev/null)" >/dev/null 2>&1 || true
    dc down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
  fi
  say "took $(($(date +%s) - started)) s; log $log"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

dc down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
dc up -d >>"$log" 2>&1 || { tail -30 "$log"; exit 1; }
id_of() { dc ps -q "$1"; }
redis_id=$(id_of redis)
node_ids=("$(id_of node1)" "$(id_of node2)" "$(id_of node3)")
back=$(docker inspect --format '{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}' "$redis_id" | tr ' ' '\n' | grep '_back$')
say "seed $seed; ${seconds} s; a fault every ${fault_min}-${fault_max} s; nodes on 127.0.0.1:$port1,$port2,$port3; Redis on 127.0.0.1:$redis_port"

# Seeded draws: the same seed gives the same faults at the same times.
RANDOM=$seed
# draw LOW HIGH: sets `drawn` (not echoed: bash reseeds RANDOM in a
# $(subshell), which would break the seed's promise).
draw() { drawn=$(($1 + RANDOM % ($2 - $1 + 1))); }

"$clients_bin" --nodes "127.0.0.1:$port1,127.0.0.1:$port2,127.0.0.1:$port3" \
  --redis-url "redis://127.0.0.1:$redis_port" --seconds "$seconds" --seed "$seed" \
  --groups "${CHAOS_GROUPS:-3}" --v1 "${CHAOS_V1:-9}" --sse "${CHAOS_SSE:-6}" --raw "${CHAOS_RAW:-6}" \
  --http-publishers "${CHAOS_HTTP_PUBLISHERS:-2}" --fcall-publishers "${CHAOS_FCALL_PUBLISHERS:-2}" \
  --rate "${CHAOS_RATE:-5}" --faults-log "$faults" --ready-file "$out/ready-$stamp" \
  --out "$out/chaos-$stamp.json" --table "$out/table-$stamp.md" > >(tee -a "$log") 2> >(tee -a "$log" >&2) &
client_pid=$!

# Every node, Redis and network back as it should be.
restore() {
  docker unpause "$redis_id" >/dev/null 2>&1 || true
  docker start "$redis_id" >/dev/null 2>&1 || true
  local id
  for id in "${node_ids[@]}"; do
    docker network connect "$back" "$id" >/dev/null 2>&1 || true
    docker start "$id" >/dev/null 2>&1 || true
  done
}

# Injects one fault (restoring what it broke) and sets `what` to its
# description. In this shell, not a $(subshell): the draws must advance
# this shell's RANDOM for the run to follow its seed. (`set -e` does not
# apply inside an `if`: each step returns on failure itself.)
fault() {
  local kind=$1 i node pause
  draw 0 2
  i=$drawn
  node=${node_ids[$i]}
  case "$kind" in
    node_kill | node_stop)
      draw 1 5
      pause=$drawn
      if [ "$kind" = node_kill ]; then
        docker kill "$node" >/dev/null || return 1
      else
        docker stop -t 15 "$node" >/dev/null || return 1
      fi
      sleep "$pause"
      docker start "$node" >/dev/null || return 1
      what="node$((i + 1)) down ${pause}s" ;;
    redis_restart)
      docker restart -t 10 "$redis_id" >/dev/null || return 1
      what="redis" ;;
    redis_freeze)
      draw 2 6
      pause=$drawn
      docker pause "$redis_id" >/dev/null || return 1
      sleep "$pause"
      docker unpause "$redis_id" >/dev/null || return 1
      what="redis ${pause}s" ;;
    pubsub_kill)
      what="redis killed $(docker exec "$redis_id" redis-cli CLIENT KILL TYPE pubsub | tr -d '\r') connections" ;;
    node_cut)
      draw 2 8
      pause=$drawn
      docker network disconnect "$back" "$node" >/dev/null || return 1
      sleep "$pause"
      docker network connect "$back" "$node" >/dev/null || return 1
      what="node$((i + 1)) ${pause}s" ;;
  esac
}

# Faults start once every client has joined (the clients say so).
for _ in $(seq 600); do
  [ -e "$out/ready-$stamp" ] && break
  kill -0 "$client_pid" 2>/dev/null || break
  sleep 0.1
done
rm -f "$out/ready-$stamp"

kinds=(node_kill node_stop redis_restart redis_freeze pubsub_kill node_cut)
bag=()
# The last faults end early enough for everything to settle while the
# publishers still run.
quiet=$((fault_max > 10 ? fault_max : 10))
t0=$(date +%s)
while :; do
  draw "$fault_min" "$fault_max"
  wait_s=$drawn
  [ $(($(date +%s) - t0 + wait_s)) -lt $((seconds - quiet)) ] || break
  sleep "$wait_s"
  kill -0 "$client_pid" 2>/dev/null || break
  if [ ${#bag[@]} -eq 0 ]; then
    bag=("${kinds[@]}")
    for ((j = ${#bag[@]} - 1; j > 0; j--)); do
      k=$((RANDOM % (j + 1)))
      tmp=${bag[$j]} bag[$j]=${bag[$k]} bag[$k]=$tmp
    done
  fi
  kind=${bag[0]}
  bag=("${bag[@]:1}")
  what=""
  if fault "$kind" 2>>"$log"; then
    echo "$(date +%s) $kind $what" >>"$faults"
    say "fault: $kind $what"
  else
    say "fault $kind could not be injected (see $log)"
    restore
  fi
done
restore
say "faults over ($(wc -l <"$faults") injected); waiting for the clients' check"

status=0
wait "$client_pid" || status=$?
client_pid=""
say "results: $out/chaos-$stamp.json, table $out/table-$stamp.md"
[ "$status" -eq 0 ] && say "PASS" || say "FAIL (the checker exited $status)"
exit "$status"
