#!/usr/bin/env bash
# Profiles one groupcast node (or the reference) under W1 of BENCHMARKS.md:
# 2 nodes, 1 group, 2,000 clients, 64 B via Redis PUBLISH at RATE msgs/s
# (or W2 with CLIENTS and NGROUPS),
# with `perf record -e cpu-clock` (a software clock: works where hardware
# counters are not exposed, as on this project's VMs) on node A, then
# prints the top of the flat profile and of the profile by caller.
#
#   scripts/profile.sh                     # groupcast, 20 msgs/s (40k deliveries/s)
#   KIND=reference scripts/profile.sh      # the featureless tungstenite reference
#   KIND=prebuilt scripts/profile.sh       # the featureless pre-built-frames reference
#   RATE=100 SECONDS_=15 scripts/profile.sh
#   SYSCALLS=1 scripts/profile.sh          # count node A's system calls instead
#   EVENT=cpu-clock:u CALL_GRAPH="--call-graph dwarf" scripts/profile.sh   # user space only, callers from DWARF
#   CLIENTS=10000 NGROUPS=1000 RATE=2000 OUT=target/profile/w2 scripts/profile.sh   # W2 (w2fix)
# Output: target/profile/<kind>/{perf.data,flat.txt,callers.txt,bench.txt}
# (with SYSCALLS=1: syscalls.txt, each call per delivery of node A)
set -euo pipefail
cd "$(dirname "$0")/.."
KIND=${KIND:-groupcast}
RATE=${RATE:-20}
CLIENTS=${CLIENTS:-2000}
NGROUPS=${NGROUPS:-1}
# Deliveries per published message on node A: its half of one group's members.
per_message=$(( CLIENTS / NGROUPS / 2 ))
[ "$per_message" -ge 1 ] || { echo "CLIENTS / NGROUPS must be at least 2" >&2; exit 2; }
SECONDS_=${SECONDS_:-15}
OUT=${OUT:-target/profile/$KIND}
mkdir -p "$OUT"
command -v perf >/dev/null || { echo "needs perf (apt-get install -y linux-perf)" >&2; exit 1; }
cargo build --release --bin groupcast --bin groupcast-bench --example reference

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
# free_port, wait_port
source scripts/lib/ports.sh

rp=$(free_port)
redis-server --port "$rp" --bind 127.0.0.1 --save '' --appendonly no >"$OUT/redis.log" 2>&1 &
pids+=($!)
wait_port "$rp"
urls=()
node_pids=()
for name in a b; do
  p=$(free_port)
  if [ "$KIND" = groupcast ]; then
    target/release/groupcast --listen "127.0.0.1:$p" --redis-url "redis://127.0.0.1:$rp" \
      --client-messages none --log warn --node-id "prof-$name" \
      --max-connections 0 --max-connections-per-ip 0 >"$OUT/node-$name.log" 2>&1 &
  else
    mode=tungstenite
    [ "$KIND" = prebuilt ] && mode=prebuilt
    target/release/examples/reference --listen "127.0.0.1:$p" --mode "$mode" \
      --redis-url "redis://127.0.0.1:$rp" >"$OUT/node-$name.log" 2>&1 &
  fi
  pids+=($!)
  node_pids+=($!)
  wait_port "$p"
  urls+=(--url "ws://127.0.0.1:$p")
done

# The bench connects and settles (about 5 s), then publishes for SECONDS_;
# perf samples node A from 6 s in for SECONDS_ - 2.
timeout $((SECONDS_ + 120)) target/release/groupcast-bench --quiet "${urls[@]}" \
  --clients "$CLIENTS" --groups "$NGROUPS" --publish "redis://127.0.0.1:$rp" --rate "$RATE" \
  --duration "${SECONDS_}s" --source-addrs 127.0.0.1,127.0.0.2 \
  --measure-pid "${node_pids[0]},${node_pids[1]}" >"$OUT/bench.txt" 2>&1 &
bench=$!
sleep 6
if [ -n "${SYSCALLS:-}" ]; then
  calls=writev,write,sendto,sendmsg,read,readv,recvfrom,recvmsg,epoll_wait,epoll_pwait,epoll_ctl,futex,sched_yield,accept4,close
  events=$(tr , '\n' <<<"$calls" | sed 's/^/syscalls:sys_enter_/' | paste -sd,)
  perf stat -x, -e "$events" -p "${node_pids[0]}" -o "$OUT/perf-stat.csv" -- sleep $((SECONDS_ - 2)) 2>/dev/null
  wait "$bench"
  # Node A's share of the deliveries: half of each group's members.
  deliveries=$(( RATE * (SECONDS_ - 2) * per_message ))
  awk -F, -v d="$deliveries" '$1 ~ /^[0-9]+$/ && $1 > 0 { sub("syscalls:sys_enter_", "", $3); printf "%-12s %10d  %.3f per delivery\n", $3, $1, $1 / d }' \
    "$OUT/perf-stat.csv" | sort -k2 -nr >"$OUT/syscalls.txt"
  echo "== $KIND: node A's system calls over $((SECONDS_ - 2)) s (~$deliveries deliveries): $OUT/syscalls.txt"
  cat "$OUT/syscalls.txt"
  exit 0
fi
perf record -e "${EVENT:-cpu-clock}" -F 999 ${CALL_GRAPH:--g} -p "${node_pids[0]}" -o "$OUT/perf.data" -- sleep $((SECONDS_ - 2)) 2>"$OUT/perf-record.log"
wait "$bench"
perf report -i "$OUT/perf.data" --stdio --no-children --sort dso,symbol --percent-limit 0.8 2>/dev/null \
  | grep -v '^$' | grep -E '^ +[0-9]' >"$OUT/flat.txt" || true
perf report -i "$OUT/perf.data" --stdio --no-children --sort dso --percent-limit 0.5 2>/dev/null \
  | grep -v '^$' | grep -E '^ +[0-9]' >"$OUT/dso.txt" || true
perf report -i "$OUT/perf.data" --stdio --children --sort symbol --percent-limit 4 -g none 2>/dev/null \
  | grep -E '^ +[0-9]' >"$OUT/callers.txt" || true
echo "== $KIND at $RATE msgs/s: $(tail -1 "$OUT/bench.txt" | python3 -c 'import json,sys; s=json.load(sys.stdin); print("deliveries/s", s["deliveries_per_sec"], "cpu µs/delivery", s["server_cpu_us_per_delivery"], "p99 µs", s["latency_us"]["p99"])')"
echo "== by DSO (the kernel's share is [kernel.kallsyms]): $OUT/dso.txt"
cat "$OUT/dso.txt"
echo "== flat profile (self time, top 25): $OUT/flat.txt"
head -25 "$OUT/flat.txt"
echo "== inclusive (children), >= 4 %: $OUT/callers.txt"
head -30 "$OUT/callers.txt"
