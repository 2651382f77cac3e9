#!/usr/bin/env bash
# Instructions one node runs per delivery, counted by valgrind: a figure
# that the machine's speed and load do not move, to compare designs and
# builds by (as IR=1 does for Redis in bench-history-redis.sh).
#
# Two nodes on one redis-server; node A runs under valgrind (cachegrind, no
# cache simulation), node B natively; groupcast-bench publishes at RATE for
# SHORT seconds, then again (fresh nodes) for LONG seconds. Start-up,
# handshakes and shutdown cost the same in both runs, so
#
#   (Ir(LONG) - Ir(SHORT)) / (node A's deliveries in LONG - in SHORT)
#
# is what a delivery costs in user space (valgrind sees no kernel work).
# Default shape: W2's (10 members per group, 5 per node) at a rate
# valgrind keeps up with. The difference is noisy by a few per cent (what
# each round of a loop finds ready depends on timing): compare several
# runs.
#
#   scripts/instructions-per-delivery.sh                 # groupcast
#   KIND=prebuilt scripts/instructions-per-delivery.sh   # the pre-built-frames reference
#   KIND=tungstenite scripts/instructions-per-delivery.sh
#   GC=/path/to/other/groupcast scripts/instructions-per-delivery.sh
#   CLIENTS=2000 NGROUPS=1 RATE=5 scripts/instructions-per-delivery.sh   # W1's shape
#
# Output: target/instructions/<kind>/{short,long,diff}.out (cg_annotate
# diff.out lists the functions that the extra deliveries cost).
set -euo pipefail
shopt -s inherit_errexit # a failure inside $(run ...) stops the script too
cd "$(dirname "$0")/.."
KIND=${KIND:-groupcast}
CLIENTS=${CLIENTS:-1000}
NGROUPS=${NGROUPS:-100}
RATE=${RATE:-200}
SHORT=${SHORT:-5}
LONG=${LONG:-25}
OUT=${OUT:-target/instructions/$KIND}
case "$KIND" in groupcast|prebuilt|tungstenite) ;; *) echo "KIND: groupcast, prebuilt or tungstenite" >&2; exit 2 ;; esac
for tool in valgrind cg_diff redis-server; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install -y valgrind redis-server)" >&2; exit 1; }
done
[ "$LONG" -gt "$SHORT" ] || { echo "LONG must be more than SHORT" >&2; exit 2; }
per_message=$(( CLIENTS / NGROUPS / 2 ))
[ "$per_message" -ge 1 ] || { echo "CLIENTS / NGROUPS must be at least 2" >&2; exit 2; }
[ -n "${NO_BUILD:-}" ] || cargo build --release --bin groupcast --bin groupcast-bench --example reference
mkdir -p "$OUT"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
trap cleanup EXIT INT TERM
# free_port, wait_port; a node under valgrind takes a while to listen.
source scripts/lib/ports.sh
export WAIT_PORT_TRIES=300

# node PORT REDIS_PORT [wrapper...]: one node of KIND (exec: $! is the node).
node() {
  local p=$1 rp=$2; shift 2
  if [ "$KIND" = groupcast ]; then
    exec "$@" "${GC:-target/release/groupcast}" --listen "127.0.0.1:$p" --redis-url "redis://127.0.0.1:$rp" \
      --client-messages none --log warn --node-id "ir-$p" --max-connections 0 --max-connections-per-ip 0
  else
    exec "$@" target/release/examples/reference --listen "127.0.0.1:$p" --mode "$KIND" \
      --redis-url "redis://127.0.0.1:$rp"
  fi
}

# run SECONDS NAME: one run; prints node A's instruction total.
run() {
  # Called in $(...): a subshell, with its own processes to clean up.
  trap cleanup EXIT
  local seconds=$1 name=$2 rp pa pb a
  rp=$(free_port)
  redis-server --port "$rp" --bind 127.0.0.1 --save '' --appendonly no >"$OUT/redis-$name.log" 2>&1 &
  pids+=($!)
  wait_port "$rp"
  pa=$(free_port); pb=$(free_port)
  node "$pa" "$rp" valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file="$OUT/$name.out" \
    >"$OUT/node-a-$name.log" 2>&1 &
  a=$!; pids+=($a)
  node "$pb" "$rp" >"$OUT/node-b-$name.log" 2>&1 &
  pids+=($!)
  wait_port "$pa" "$a"; wait_port "$pb"
  echo "[$(date +%T)] $KIND, $seconds s at $RATE msgs/s ($CLIENTS clients, $NGROUPS groups)" >&2
  target/release/groupcast-bench --quiet --url "ws://127.0.0.1:$pa" --url "ws://127.0.0.1:$pb" \
    --clients "$CLIENTS" --groups "$NGROUPS" --publish "redis://127.0.0.1:$rp" --rate "$RATE" \
    --duration "${seconds}s" --connect-timeout 60s >"$OUT/bench-$name.txt" 2>&1 \
    || { echo "groupcast-bench failed: $OUT/bench-$name.txt" >&2; tail -5 "$OUT/bench-$name.txt" >&2; exit 1; }
  tail -1 "$OUT/bench-$name.txt" | python3 -c '
import json, sys
s = json.load(sys.stdin)
if s["loss"] or s["dups"]:
    sys.exit("loss %d, duplicates %d: not a clean run" % (s["loss"], s["dups"]))'
  # valgrind writes its counts when the node exits.
  kill -TERM "$a"; wait "$a" 2>/dev/null || true
  cleanup
  sed -n 's/^summary: //p' "$OUT/$name.out"
}

short=$(run "$SHORT" short)
long=$(run "$LONG" long)
cg_diff "$OUT/short.out" "$OUT/long.out" >"$OUT/diff.out" 2>/dev/null || true
deliveries=$(( RATE * (LONG - SHORT) * per_message ))
python3 -c "
short, long, d = $short, $long, $deliveries
print(f'$KIND: {(long - short) / d:.0f} instructions per delivery on node A '
      f'({long - short:,} over {d:,} deliveries; {short:,} in $SHORT s, {long:,} in $LONG s)')"
echo "by function: cg_annotate $OUT/diff.out | head -40" >&2
