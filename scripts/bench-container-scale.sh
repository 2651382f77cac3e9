#!/usr/bin/env bash
# One groupcast node, as many WebSocket connections as its file-descriptor
# limit allows, one group: does one broadcast reach every member with
# p99 < 1 s? (The "Scale" item of the benchmark issue.)
#
# Why containers: a host process here may open at most `ulimit -Hn` (20,000)
# descriptors; a container can get a higher `--ulimit nofile=...` when the
# engine is allowed to raise it (it needs CAP_SYS_RESOURCE). The script asks
# for NOFILE, and when the engine refuses it finds the highest limit the
# engine does grant, reports it, and (FIT_TO_LIMIT=1, the default) lowers N
# to what fits under it.
#
# How:
#   1. builds local/groupcast-bench:dev (no registry: `docker import` of a
#      rootfs holding target/release/groupcast and groupcast-bench and the
#      libraries they link; cargo builds them only when they are missing)
#   2. a private docker network; the node in its own container, standalone
#      (no Redis), `--max-connections 0 --max-connections-per-ip 0
#      --client-messages none`, with the nofile ulimit and
#      net.ipv4.ip_local_port_range="1024 65000" (per network namespace)
#   3. groupcast-bench in a second container (own nofile ulimit, own cgroup
#      and memory) that joins the node's network and PID namespaces
#      (`--network container:NODE --pid container:NODE`): groupcast-bench
#      only binds loopback source addresses (127.x.y.z, see --source-addrs),
#      which cannot reach another namespace's address, so the clients reach
#      the node over the shared loopback. Every loopback source address gives
#      its own ~64k ephemeral ports, so N > 60,000 uses 127.0.0.1, 127.0.0.2,
#      ... (ceil(N / 60,000) of them). Sharing the PID namespace makes the
#      node PID 1 for the bench, so `--measure-pid 1` works (server CPU per
#      delivery, RSS per connection).
#   4. N clients in 1 group; RATE broadcasts/s over HTTP for DURATION; the
#      host samples the node's RSS and open descriptors (/proc/PID of the
#      container's main process) every second.
#   5. prints a summary, also written to target/bench/container-scale/
#      summary.txt, next to the bench's JSON (bench.json) and log.
#
# Run (as root, or a user that may use docker and read /proc/PID/fd):
#   scripts/bench-container-scale.sh                 # N=100000
#   N=2000 scripts/bench-container-scale.sh          # a quick check
#
# Settings (environment):
#   N=100000          clients (all in one group)
#   NOFILE=1048576    nofile ulimit asked for both containers
#   FIT_TO_LIMIT=1    if N does not fit under the granted limit, lower N to
#                     what fits (0: fail instead)
#   RATE=1 DURATION=10s PAYLOAD=64 SETTLE=5s DRAIN=30s
#   CONCURRENCY=      connections set up at once (default: 500, at most N)
#   CONNECT_TIMEOUT=  seconds for the connect phase (default: 60 + N/250)
#   PER_SOURCE=60000  clients per loopback source address
#   IMAGE=local/groupcast-bench:dev   REBUILD=1 forces the image build
#   OUT_DIR=target/bench/container-scale
#
# Everything it creates (containers, network, the sampler) is removed on exit,
# also on failure or Ctrl-C; the image stays (it is rebuilt only when a binary
# changed).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

N=${N:-100000}
NOFILE=${NOFILE:-1048576}
FIT_TO_LIMIT=${FIT_TO_LIMIT:-1}
RATE=${RATE:-1}
DURATION=${DURATION:-10s}
PAYLOAD=${PAYLOAD:-64}
SETTLE=${SETTLE:-5s}
DRAIN=${DRAIN:-30s}
CONCURRENCY=${CONCURRENCY:-}
CONNECT_TIMEOUT=${CONNECT_TIMEOUT:-}
IMAGE=${IMAGE:-local/groupcast-bench:dev}
REBUILD=${REBUILD:-0}
OUT_DIR=${OUT_DIR:-$root/target/bench/container-scale}
PORT_RANGE="1024 65000"
# Clients per loopback source address (the port range gives ~64k).
PER_SOURCE=${PER_SOURCE:-60000}
# Descriptors kept free under the limit besides one per client: the bench
# needs 64 + 2 per publisher, the node its listener, runtime and the
# publisher's HTTP connection.
FD_RESERVE=100

target_dir=${CARGO_TARGET_DIR:-$root/target}
node_bin=$target_dir/release/groupcast
bench_bin=$target_dir/release/groupcast-bench

tag="gcscale-$$"
net="$tag"
node="$tag-node"
bench="$tag-bench"
sampler_pid=
bench_job=
workdir=

# Short docker commands, bounded.
dk() { timeout 120 docker "$@"; }

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

# secs DURATION: whole seconds of 10s / 500ms / 2m / 1h (rounded up).
secs() {
  local v=$1
  case "$v" in
    *ms) echo $(((${v%ms} + 999) / 1000)) ;;
    *s) echo "${v%s}" ;;
    *m) echo $((${v%m} * 60)) ;;
    *h) echo $((${v%h} * 3600)) ;;
    *) echo "$v" ;;
  esac
}

cleanup() {
  local rc=$?
  set +e
  if [ -n "$sampler_pid" ]; then
    kill "$sampler_pid" 2>/dev/null
    wait "$sampler_pid" 2>/dev/null
  fi
  local c
  if [ -n "$bench_job" ]; then
    kill "$bench_job" 2>/dev/null
  fi
  for c in "$bench" "$node"; do
    if dk container inspect "$c" >/dev/null 2>&1; then
      timeout 60 docker rm -f "$c" >/dev/null 2>&1 || log "warning: could not remove container $c"
    fi
  done
  if dk network inspect "$net" >/dev/null 2>&1; then
    timeout 60 docker network rm "$net" >/dev/null 2>&1 || log "warning: could not remove network $net"
  fi
  if [ -n "$workdir" ]; then rm -rf "$workdir"; fi
  if [ "$rc" -ne 0 ]; then
    log "failed (exit $rc); containers and network removed"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- checks
for cmd in docker jq timeout ldd sha256sum tar; do
  command -v "$cmd" >/dev/null 2>&1 || die "$cmd is not installed"
done
if ! is_uint "$N" || [ "$N" -lt 1 ]; then die "N must be a positive integer (got $N)"; fi
is_uint "$NOFILE" || die "NOFILE must be an integer (got $NOFILE)"
if ! is_uint "$PER_SOURCE" || [ "$PER_SOURCE" -lt 1 ]; then die "PER_SOURCE must be a positive integer"; fi
timeout 30 docker info >/dev/null 2>&1 || die "cannot talk to the docker engine"
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
rm -f "$OUT_DIR/bench.json" "$OUT_DIR/bench.log" "$OUT_DIR/node.log" \
  "$OUT_DIR/node-samples.tsv" "$OUT_DIR/summary.txt"
workdir=$(mktemp -d "${TMPDIR:-/tmp}/gcscale.XXXXXX")

# ---------------------------------------------------------------- binaries
if [ ! -x "$node_bin" ] || [ ! -x "$bench_bin" ]; then
  log "release binaries missing: cargo build --release"
  (cd "$root" && timeout 3600 cargo build --release --locked --bin groupcast --bin groupcast-bench)
fi
if [ ! -x "$node_bin" ] || [ ! -x "$bench_bin" ]; then die "no $node_bin or $bench_bin"; fi

# ---------------------------------------------------------------- image
build_image() {
  local sum
  sum=$(cat "$node_bin" "$bench_bin" | sha256sum | cut -d' ' -f1)
  if [ "$REBUILD" != 1 ] &&
    [ "$(dk image inspect --format '{{ index .Config.Labels "groupcast.binaries.sha256" }}' "$IMAGE" 2>/dev/null || true)" = "$sum" ]; then
    log "image $IMAGE is up to date"
    return
  fi
  log "building image $IMAGE from $node_bin and $bench_bin"
  local r="$workdir/rootfs" f lib
  mkdir -p "$r/usr/local/bin" "$r/etc" "$r/tmp" "$r/out"
  chmod 1777 "$r/tmp"
  for f in "$node_bin" "$bench_bin"; do
    for lib in $(ldd "$f" | grep -o '/[^ ]*' || true); do
      [ -e "$r$lib" ] || cp --parents -L "$lib" "$r/"
    done
    # Keep the symbols (backtraces), drop the debug info.
    if command -v strip >/dev/null 2>&1; then
      strip --strip-debug -o "$r/usr/local/bin/$(basename "$f")" "$f"
    else
      cp "$f" "$r/usr/local/bin/"
    fi
  done
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$r/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$r/etc/group"
  tar -C "$r" -c . | timeout 300 docker import \
    --change "LABEL groupcast.binaries.sha256=$sum" \
    --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
    --change 'ENTRYPOINT ["/usr/local/bin/groupcast"]' \
    - "$IMAGE" >/dev/null
  rm -rf "$r"
  timeout 60 docker run --rm --entrypoint groupcast-bench "$IMAGE" --version >/dev/null ||
    die "the new image does not run groupcast-bench"
  log "built $IMAGE ($(dk image inspect --format '{{.Size}}' "$IMAGE") bytes)"
}
build_image

# ---------------------------------------------------------------- nofile
# nofile_ok LIMIT: does the engine start a container with this nofile ulimit?
nofile_ok() {
  timeout 60 docker run --rm --ulimit "nofile=$1:$1" --entrypoint groupcast \
    "$IMAGE" --version >/dev/null 2>"$workdir/ulimit.err"
}
log "asking the engine for --ulimit nofile=$NOFILE:$NOFILE"
engine_note="granted"
limit=$NOFILE
if ! nofile_ok "$NOFILE"; then
  refusal=$(grep -m1 -o 'error setting rlimit[^:]*: [^:]*' "$workdir/ulimit.err" ||
    head -c 300 "$workdir/ulimit.err")
  log "the engine refuses nofile=$NOFILE: $refusal"
  # The highest limit it grants: binary search between one that works and
  # one that does not (about 20 short container starts).
  lo=$(ulimit -Hn)
  [ "$lo" = unlimited ] && lo=1024
  [ "$lo" -lt "$NOFILE" ] || lo=1024
  nofile_ok "$lo" || { lo=1024; nofile_ok "$lo" || die "the engine refuses even nofile=1024: $(cat "$workdir/ulimit.err")"; }
  hi=$NOFILE
  while [ $((hi - lo)) -gt 1 ]; do
    mid=$(((lo + hi) / 2))
    if nofile_ok "$mid"; then lo=$mid; else hi=$mid; fi
  done
  limit=$lo
  engine_note="REFUSED $NOFILE ($refusal); highest granted: $limit"
  log "highest nofile the engine grants: $limit"
fi

requested_n=$N
fit=$((limit - FD_RESERVE))
if [ "$N" -gt "$fit" ]; then
  if [ "$FIT_TO_LIMIT" = 1 ]; then
    log "N=$N does not fit under nofile=$limit: running N=$fit (FIT_TO_LIMIT=1)"
    N=$fit
  else
    die "N=$N needs about $((N + FD_RESERVE)) descriptors per process, the engine grants $limit"
  fi
fi

# ---------------------------------------------------------------- sizing
[ -n "$CONCURRENCY" ] || CONCURRENCY=$((N < 500 ? N : 500))
[ -n "$CONNECT_TIMEOUT" ] || CONNECT_TIMEOUT=$((60 + N / 250))
[ "$CONNECT_TIMEOUT" -le 600 ] || CONNECT_TIMEOUT=600
sources_n=$(((N + PER_SOURCE - 1) / PER_SOURCE))
[ "$sources_n" -le 250 ] || die "N=$N needs more than 250 loopback source addresses"
sources=127.0.0.1
for ((i = 2; i <= sources_n; i++)); do sources="$sources,127.0.0.$i"; done
bench_bound=$((CONNECT_TIMEOUT + $(secs "$SETTLE") + $(secs "$DURATION") + $(secs "$DRAIN") + 180))

# ---------------------------------------------------------------- node
log "creating network $net"
timeout 60 docker network create --label "groupcast.bench=$tag" "$net" >/dev/null

log "starting the node ($node, nofile=$limit, standalone)"
timeout 120 docker run -d --name "$node" --label "groupcast.bench=$tag" \
  --network "$net" --user 65532:65532 \
  --ulimit "nofile=$limit:$limit" \
  --sysctl "net.ipv4.ip_local_port_range=$PORT_RANGE" \
  --entrypoint groupcast "$IMAGE" \
  --listen 0.0.0.0:8080 --max-connections 0 --max-connections-per-ip 0 \
  --client-messages none --log warn >/dev/null

node_pid=$(dk inspect -f '{{.State.Pid}}' "$node")
node_ip=$(dk inspect -f "{{ (index .NetworkSettings.Networks \"$net\").IPAddress }}" "$node")
if ! is_uint "$node_pid" || [ "$node_pid" -eq 0 ]; then
  die "the node is not running: $(dk logs "$node" 2>&1 | tail -5)"
fi

# Listening on 8080 (0x1F90) in its namespace?
deadline=$((SECONDS + 30))
until grep -q ':1F90 00000000:0000 0A' "/proc/$node_pid/net/tcp" 2>/dev/null; do
  [ "$SECONDS" -lt "$deadline" ] || die "the node does not listen on :8080 after 30 s: $(dk logs "$node" 2>&1 | tail -5)"
  [ -d "/proc/$node_pid" ] || die "the node exited: $(dk logs "$node" 2>&1 | tail -5)"
  sleep 0.2
done

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

node_nofile=$(awk '/^Max open files/ {print $4 ":" $5}' "/proc/$node_pid/limits")
rss_before=$(rss_kib "$node_pid")
fds_before=$(fds "$node_pid")
log "node up: host pid $node_pid, ip $node_ip, nofile $node_nofile, RSS $rss_before KiB, $fds_before fds"

# Host-side sampler: time, RSS (KiB), open fds of the node, every second.
sample_loop() {
  local t0=$SECONDS
  while [ -d "/proc/$node_pid" ]; do
    printf '%s\t%s\t%s\n' "$((SECONDS - t0))" "$(rss_kib "$node_pid")" "$(fds "$node_pid")"
    sleep 1
  done
}
sample_loop >"$OUT_DIR/node-samples.tsv" &
sampler_pid=$!

# ---------------------------------------------------------------- bench
log "bench: N=$N clients in 1 group, $sources_n source address(es), concurrency $CONCURRENCY, rate $RATE/s for $DURATION (bounded at ${bench_bound}s)"
# In the background, and waited for: a signal to this script then runs the
# cleanup at once instead of after the bench.
bench_rc=0
timeout "$bench_bound" docker run --name "$bench" --label "groupcast.bench=$tag" \
  --network "container:$node" --pid "container:$node" \
  --ulimit "nofile=$limit:$limit" \
  -v "$OUT_DIR:/out" \
  --entrypoint groupcast-bench "$IMAGE" \
  --url ws://127.0.0.1:8080 --clients "$N" --groups 1 \
  --publish http://127.0.0.1:8080 --rate "$RATE" --duration "$DURATION" \
  --payload "$PAYLOAD" --source-addrs "$sources" \
  --connect-concurrency "$CONCURRENCY" --connect-timeout "${CONNECT_TIMEOUT}s" \
  --settle "$SETTLE" --drain "$DRAIN" --measure-pid 1 \
  --label "container-scale N=$N nofile=$limit" --json-out /out/bench.json \
  2>&1 | tee "$OUT_DIR/bench.log" >&2 &
bench_job=$!
wait "$bench_job" || bench_rc=$?
bench_job=

rss_after=$(rss_kib "$node_pid")
fds_after=$(fds "$node_pid")
kill "$sampler_pid" 2>/dev/null || true
wait "$sampler_pid" 2>/dev/null || true
sampler_pid=
timeout 30 docker logs "$node" >"$OUT_DIR/node.log" 2>&1 || true

[ "$bench_rc" -eq 0 ] || die "groupcast-bench failed (exit $bench_rc); see $OUT_DIR/bench.log"
[ -s "$OUT_DIR/bench.json" ] || die "no $OUT_DIR/bench.json"
[ -d "/proc/$node_pid" ] || die "the node died during the run: see $OUT_DIR/node.log"

# ---------------------------------------------------------------- summary
# Peak fds and the RSS at that moment, from the host samples.
read -r peak_fds peak_rss < <(awk -F'\t' '$3 > f {f = $3; r = $2} END {print f + 0, r + 0}' "$OUT_DIR/node-samples.tsv")
j="$OUT_DIR/bench.json"
q() { jq -r "$1" "$j"; }
connected=$(q '.connect.connected')
connected_rss=$(q '.servers[0].rss_connected_kib // 0')
per_conn=$(q '.server_rss_per_connection_bytes // "n/a"')
host_per_conn=n/a
[ "$connected" -gt 0 ] && host_per_conn=$(((peak_rss - rss_before) * 1024 / connected))
p99=$(q '.latency_us.p99 // empty')
loss=$(q '.loss')
verdict="FAIL"
if [ "$connected" -eq "$N" ] && [ "$loss" -eq 0 ] && [ -n "$p99" ] && [ "$p99" -lt 1000000 ]; then
  verdict="PASS"
fi
ms() { awk -v us="$1" 'BEGIN { if (us == "" || us == "null") print "n/a"; else printf "%.1f ms", us / 1000 }'; }

{
  echo "groupcast container scale benchmark ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) RAM)"
  echo "  engine        docker $(dk version --format '{{.Server.Version}}' 2>/dev/null); nofile asked $NOFILE: $engine_note"
  echo "  node          groupcast standalone in $node, nofile in container $node_nofile, --max-connections 0"
  echo "  clients       requested $requested_n, ran N=$N in 1 group over ws://127.0.0.1:8080 (shared netns), $sources_n source address(es)"
  echo "  connected     $connected of $N, failed $(q '.connect.failed'), in $(q '.connect.total_ms') ms (per connection p50 $(q '.connect.per_connection_us.p50') µs, p99 $(q '.connect.per_connection_us.p99') µs)"
  if [ "$(q '.connect.first_error // empty')" != "" ]; then
    echo "  connect error $(q '.connect.first_error')"
  fi
  echo "  broadcasts    $(q '.sent') sent over HTTP at $RATE/s for $DURATION (errors $(q '.publish_errors'))"
  echo "  deliveries    $(q '.delivered') of $(q '.expected') expected; loss $loss, dups $(q '.dups'), out-of-order $(q '.out_of_order'), ended early $(q '.ended_early')"
  echo "  latency       publish -> each member: p50 $(ms "$(q '.latency_us.p50')"), p99 $(ms "$p99"), p999 $(ms "$(q '.latency_us.p999')"), max $(ms "$(q '.latency_us.max')") (max = slowest member of any broadcast)"
  echo "  node RSS      before $rss_before KiB, all connected $connected_rss KiB (bench) / at peak fds $peak_rss KiB (host), after $rss_after KiB"
  echo "  per conn      $per_conn bytes (bench: RSS delta / connections), $host_per_conn bytes (host samples)"
  echo "  node fds      before $fds_before, peak $peak_fds, after $fds_after (limit $node_nofile)"
  echo "  node CPU      $(q '.server_cpu_us_per_delivery // "n/a"') µs per delivery, $(q '.server_cpu_utilization // "n/a"') cores in the publish window"
  echo "  bench RSS     $(q '.bench_rss_kib') KiB (peak $(q '.bench_hwm_kib') KiB)"
  echo "  verdict       $verdict (all $N connected, no loss, p99 < 1 s)"
  echo "  files         $OUT_DIR/{summary.txt,bench.json,bench.log,node.log,node-samples.tsv}"
} | tee "$OUT_DIR/summary.txt"
