#!/usr/bin/env bash
# End-to-end test of docker-compose.yml: the real stack (Redis, three `ws`
# replicas, the load balancer), images built locally (no registry needed),
# real WebSocket clients through the load balancer (tests/compose.rs).
#
#   scripts/compose-test.sh              # build images, run, tear down
#   COMPOSE_TEST_KEEP=1 scripts/compose-test.sh   # leave the stack up after
#
# Checks (each printed as PASS/FAIL): the images build; the stack comes up
# healthy; clients spread over >= 2 replicas; `redis-cli PUBLISH` in the
# redis container reaches every client; stopping one replica closes its
# clients with 1001, they reconnect through the load balancer, and the
# clients of the other replicas miss nothing; the replica exits 0.
# The stack is always torn down (down -v), on failure too. Exit code 0 only
# if every check passed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

project=${COMPOSE_TEST_PROJECT:-groupcast-test}
replicas=${COMPOSE_TEST_REPLICAS:-3}
clients=${COMPOSE_TEST_CLIENTS:-12}
started=$(date +%s)

pass() { echo "PASS: $*"; }
fail() {
  echo "FAIL: $*"
  exit 1
}

if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
else
  fail "neither 'docker compose' nor 'docker-compose' is installed"
fi
echo "using: ${compose[*]} ($("${compose[@]}" version --short 2>/dev/null || echo '?'))"

# A free loopback port for the load balancer (not 8080: a dev server may
# use it), below the ephemeral range so that no test's outgoing connection
# takes it between the pick and `up`.
pick_port() {
  python3 - <<'EOF'
import random, socket
for _ in range(200):
    port = random.randint(20000, 29999)
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(port)
        break
EOF
}

# The images scripts/build-deploy-images.sh builds. Not REDIS_IMAGE & co.
# from the caller's environment: scripts/test.sh sets REDIS_IMAGE to the
# plain local/redis:7 (no redis-cli) for the testcontainers tests.
export REDIS_IMAGE=${COMPOSE_TEST_REDIS_IMAGE:-local/redis:7-cli}
export GROUPCAST_IMAGE=${COMPOSE_TEST_GROUPCAST_IMAGE:-local/groupcast:dev}
export LB_IMAGE=${COMPOSE_TEST_LB_IMAGE:-local/haproxy:2}
export GROUPCAST_HOST_IP=127.0.0.1
# Short drain for the test; the load balancer checks /readyz every second.
export GROUPCAST_DRAIN_PERIOD=${GROUPCAST_DRAIN_PERIOD:-2s}
export GROUPCAST_SHUTDOWN_TIMEOUT=${GROUPCAST_SHUTDOWN_TIMEOUT:-5s}

dc() {
  timeout 180 "${compose[@]}" -p "$project" -f "$root/docker-compose.yml" "$@"
}

# 1. Images, and the test client, before anything runs.
if bash scripts/build-deploy-images.sh; then
  pass "images built: $REDIS_IMAGE $GROUPCAST_IMAGE $LB_IMAGE"
else
  fail "building the images (scripts/build-deploy-images.sh)"
fi
timeout 900 cargo test --test compose --no-run >/dev/null 2>&1 ||
  { timeout 900 cargo test --test compose --no-run; fail "building tests/compose.rs"; }
pass "tests/compose.rs builds"

# 2. The stack; always torn down.
cleanup() {
  local status=$?
  if [ "$status" -ne 0 ]; then
    echo "--- logs (last 60 lines per service) ---"
    dc logs --no-color --tail 60 2>&1 || true
    echo "--- end of logs ---"
  fi
  if [ "${COMPOSE_TEST_KEEP:-0}" = 1 ]; then
    echo "COMPOSE_TEST_KEEP=1: the stack stays up (${compose[*]} -p $project down -v to remove it)"
  else
    dc down -v --remove-orphans -t 10 >/dev/null 2>&1 || true
    if [ -n "$(docker ps -aq --filter "label=com.docker.compose.project=$project")" ]; then
      echo "FAIL: containers of $project are left behind"
      status=1
    else
      echo "torn down: $project"
    fi
  fi
  echo "compose-test took $(($(date +%s) - started)) s"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Leftovers of an interrupted run.
dc down -v --remove-orphans -t 5 >/dev/null 2>&1 || true

# Up; should the port be taken after all, again on another one.
up_log=$(mktemp)
for attempt in 1 2 3; do
  port=$(pick_port)
  [ -n "$port" ] || fail "no free port found for the load balancer"
  export GROUPCAST_PORT=$port
  if dc up -d --no-build --scale "ws=$replicas" >"$up_log" 2>&1; then
    break
  fi
  if [ "$attempt" -lt 3 ] && grep -q 'address already in use' "$up_log"; then
    echo "port $port was taken; again with another"
    dc down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
    continue
  fi
  cat "$up_log"
  rm -f "$up_log"
  fail "the stack did not start"
done
rm -f "$up_log"
pass "${compose[*]} -p $project up -d --no-build --scale ws=$replicas (load balancer on 127.0.0.1:$port)"

# 3. Healthy: every container's health check, then every replica through
#    the load balancer.
health_of() {
  docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$@" 2>/dev/null
}
deadline=$(($(date +%s) + 90))
while :; do
  ids=$(docker ps -q --filter "label=com.docker.compose.project=$project")
  # shellcheck disable=SC2086
  states=$(health_of $ids | sort | uniq -c | tr -s ' ' | tr '\n' ',')
  # shellcheck disable=SC2086
  if [ "$(echo "$ids" | wc -w)" -eq $((replicas + 2)) ] &&
    ! health_of $ids | grep -qv -e '^healthy$' -e '^running$'; then
    break
  fi
  [ "$(date +%s)" -lt "$deadline" ] || fail "containers not healthy within 90 s: $states"
  sleep 1
done
pass "all $((replicas + 2)) containers healthy ($states)"

deadline=$(($(date +%s) + 60))
seen=""
while :; do
  node=$(curl -fsS --max-time 2 "http://127.0.0.1:$port/api/info" 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["node"])' 2>/dev/null || true)
  if [ -n "$node" ] && ! grep -qxF "$node" <<<"$seen"; then
    seen=$(printf '%s\n%s' "$seen" "$node" | sed '/^$/d')
  fi
  [ "$(grep -c . <<<"$seen")" -ge "$replicas" ] && break
  [ "$(date +%s)" -lt "$deadline" ] ||
    fail "the load balancer reached $(grep -c . <<<"$seen") of $replicas replicas within 60 s"
  sleep 0.2
done
pass "the load balancer reaches all $replicas replicas: $(echo "$seen" | tr '\n' ' ')"

code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port/readyz")
[ "$code" = 200 ] || fail "GET /readyz through the load balancer: $code"
pass "GET /readyz through the load balancer: 200"

# The README's command, as written.
reply=$(dc exec -T redis redis-cli PUBLISH group:ticker_ws hello 2>&1 | tr -d '\r')
[[ "$reply" =~ ^[0-9]+$ ]] || fail "compose exec redis redis-cli PUBLISH group:ticker_ws hello: $reply"
pass "${compose[*]} exec redis redis-cli PUBLISH group:ticker_ws hello -> $reply"

# 4. The clients (tests/compose.rs): spread, broadcast, stop one replica.
if GROUPCAST_COMPOSE_ADDR="127.0.0.1:$port" GROUPCAST_COMPOSE_PROJECT="$project" \
  GROUPCAST_COMPOSE_CLIENTS="$clients" \
  timeout 300 cargo test --test compose -- --ignored --nocapture; then
  pass "tests/compose.rs"
else
  fail "tests/compose.rs (see its FAIL line above)"
fi
