#!/usr/bin/env bash
# A bounded soak: thousands of WebSocket connections joining and leaving,
# groups appearing and disappearing, against two groupcast nodes and a
# Redis, for SOAK_SECONDS (default 600). Reports each node's RSS and open
# file descriptors at the start and the end and the number of group
# channels left in Redis once nobody is connected (must be 0), and fails on
# a leak of descriptors, sessions, groups or subscriptions.
#
#   scripts/soak.sh                          # 10 minutes, 2000 connections
#   SOAK_SECONDS=120 SOAK_CONNECTIONS=1000 scripts/soak.sh
#
# Settings (environment):
#   SOAK_SECONDS       how long the load runs            (600)
#   SOAK_CONNECTIONS   client tasks, each mostly connected (2000)
#   SOAK_GROUPS        groups per epoch                  (200)
#   SOAK_EPOCH         seconds an epoch of groups lives  (30)
#   SOAK_RATE          messages/s published              (200)
#   SOAK_PROFILE       release or debug build            (release)
#
# Redis is a local redis-server on a free loopback port (installed with
# apt-get when missing); the nodes listen on free loopback ports. Logs go
# to target/soak/. Everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${SOAK_SECONDS:-600}
connections=${SOAK_CONNECTIONS:-2000}
groups=${SOAK_GROUPS:-200}
epoch=${SOAK_EPOCH:-30}
rate=${SOAK_RATE:-200}
profile=${SOAK_PROFILE:-release}
linger_ms=2000

if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server"
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
fi

if [ "$profile" = release ]; then
  cargo build --release --bin groupcast --example soak
  bin=target/release
else
  cargo build --bin groupcast --example soak
  bin=target/debug
fi

logs=target/soak
mkdir -p "$logs"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  >"$logs/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
  sleep 0.1
done
redis-cli -p "$redis_port" ping >/dev/null

node_args=()
node_pids=()
for name in soak-1 soak-2; do
  port=$(free_port)
  # Per-IP limit left at its default: the driver spreads its connections
  # over 8 loopback addresses (fewer than 1000 per address per node).
  "$bin/groupcast" --listen "127.0.0.1:$port" --node-id "$name" \
    --redis-url "redis://127.0.0.1:$redis_port" \
    --unsubscribe-linger "${linger_ms}ms" --log warn >"$logs/$name.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  node_pids+=("$pid")
  node_args+=(--node "http://127.0.0.1:$port" --pid "$pid")
  for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null
done

echo "soak: redis on 127.0.0.1:$redis_port, nodes ${node_pids[*]}, ${seconds}s, $profile build"
"$bin/examples/soak" "${node_args[@]}" \
  --redis "redis://127.0.0.1:$redis_port" \
  --seconds "$seconds" --connections "$connections" --groups "$groups" \
  --epoch-seconds "$epoch" --publish-rate "$rate" --linger-ms "$linger_ms"
