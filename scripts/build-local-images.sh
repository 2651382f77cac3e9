#!/usr/bin/env bash
# Builds the container images the integration tests need, from packages of
# this machine's own distribution, because no container registry is
# reachable here (see /work/shared/machine-notes.md).
#
#   scripts/build-local-images.sh           # build what is missing
#   scripts/build-local-images.sh --force   # rebuild everything
#
# Images:
#   local/redis:7  Debian's redis-server, copied with the shared libraries
#                  it links and imported as a ~20 MB image. Run the tests
#                  with REDIS_IMAGE=local/redis:7.
#   local/redis-cluster:7
#                  A whole Redis Cluster in one container: six redis-server
#                  (3 primaries, 3 replicas) on ports BASE..BASE+5
#                  (env CLUSTER_BASE_PORT, default 7000), announced as
#                  127.0.0.1 (env CLUSTER_ANNOUNCE_IP). Publish each port on
#                  the same host port and a client on the host follows
#                  MOVED answers to addresses it can reach (in a compose
#                  network set CLUSTER_ANNOUNCE_HOSTNAME to the service
#                  name instead: docker-compose.cluster.yml). Prints
#                  "Cluster ready" once cluster_state is ok everywhere.
#                  REDIS_CLUSTER_IMAGE in the tests.
#   local/redis-sentinel:7
#                  A primary (BASE), a replica (BASE+1) and three Sentinels
#                  (BASE+2..BASE+4) watching it as "groupcast", all
#                  announced as 127.0.0.1. Prints "Sentinel ready".
#                  REDIS_SENTINEL_IMAGE in the tests.
#
# Idempotent: an image that already exists is kept unless --force is given.
set -euo pipefail

force=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

if ! command -v docker >/dev/null 2>&1; then
  echo "docker is not installed" >&2
  exit 1
fi

# Whether an image exists locally (never pulls).
image_exists() {
  docker image inspect "$1" >/dev/null 2>&1
}

# Installs Debian packages when one of the given commands is missing.
need() {
  local cmd=$1; shift
  if ! command -v "$cmd" >/dev/null 2>&1; then
    echo "installing $* (for $cmd)"
    if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
  fi
}

build_redis() {
  local image=local/redis:7
  if [ "$force" -eq 0 ] && image_exists "$image"; then
    echo "$image exists (use --force to rebuild)"
    return
  fi
  need redis-server redis-server redis-tools
  local server
  server=$(command -v redis-server)
  local rootfs
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' RETURN
  # The binary and every shared library it links, at their own paths.
  for f in "$server" $(ldd "$server" | grep -o '/[^ ]*'); do
    cp --parents -L "$f" "$rootfs/"
  done
  mkdir -p "$rootfs/tmp" "$rootfs/data" "$rootfs/etc"
  echo 'root:x:0:0:root:/root:/bin/sh' > "$rootfs/etc/passwd"
  # --protected-mode no: clients come through a published port, so they are
  # not on loopback as far as redis-server can tell.
  tar -C "$rootfs" -c . | docker import \
    --change 'EXPOSE 6379/tcp' \
    --change 'WORKDIR /data' \
    --change "CMD [\"$server\",\"--bind\",\"0.0.0.0\",\"--protected-mode\",\"no\",\"--save\",\"\",\"--appendonly\",\"no\"]" \
    - "$image" >/dev/null
  echo "built $image ($(docker image inspect --format '{{.Size}}' "$image") bytes, $("$server" --version | grep -o 'v=[^ ]*'))"
}

# Copies `$@` (binaries) and every shared library they link into `$rootfs`.
copy_with_libs() {
  local f
  for bin in "$@"; do
    for f in "$bin" $(ldd "$bin" | grep -o '/[^ ]*'); do
      cp --parents -L "$f" "$rootfs/"
    done
  done
}

# The cluster image's entrypoint (POSIX sh; dash in the image).
cluster_entrypoint() {
  cat <<'SCRIPT'
#!/bin/sh
# Six nodes of a Redis Cluster in this one container. See
# scripts/build-local-images.sh in the groupcast repository.
set -eu
base=${CLUSTER_BASE_PORT:-7000}
ip=${CLUSTER_ANNOUNCE_IP:-127.0.0.1}
timeout=${CLUSTER_NODE_TIMEOUT:-2000}
# In a compose network: announce a hostname instead (clients there reach
# the container by its service name, not by 127.0.0.1).
announce_hostname=""
if [ -n "${CLUSTER_ANNOUNCE_HOSTNAME:-}" ]; then
  announce_hostname="--cluster-announce-hostname $CLUSTER_ANNOUNCE_HOSTNAME --cluster-preferred-endpoint-type hostname"
fi
nodes=""
for i in 0 1 2 3 4 5; do
  port=$((base + i))
  mkdir -p "/data/$port"
  redis-server --port "$port" --bind 0.0.0.0 --protected-mode no \
    --cluster-enabled yes --cluster-config-file "/data/$port/nodes.conf" \
    --cluster-node-timeout "$timeout" --cluster-announce-ip "$ip" \
    --cluster-replica-validity-factor 0 --cluster-require-full-coverage no $announce_hostname \
    --dir "/data/$port" --save '' --appendonly no \
    --daemonize yes --logfile "/data/$port/log"
  nodes="$nodes 127.0.0.1:$port"
done
for i in 0 1 2 3 4 5; do
  until redis-cli -p $((base + i)) ping >/dev/null 2>&1; do sleep 0.1; done
done
# shellcheck disable=SC2086
redis-cli --cluster create $nodes --cluster-replicas 1 --cluster-yes >/data/create.log 2>&1
for i in 0 1 2 3 4 5; do
  until redis-cli -p $((base + i)) cluster info | grep -q cluster_state:ok; do sleep 0.1; done
done
# Every node agrees on the slots and knows every replica (what
# `redis-cli --cluster reshard` insists on).
until redis-cli --cluster check "127.0.0.1:$base" >/dev/null 2>&1; do sleep 0.2; done
echo "Cluster ready on ports $base-$((base + 5))"
# Nodes may be shut down by tests (failover); the container stays.
while :; do sleep 3600; done
SCRIPT
}

# The sentinel image's entrypoint.
sentinel_entrypoint() {
  cat <<'SCRIPT'
#!/bin/sh
# A primary, a replica and three Sentinels in this one container. See
# scripts/build-local-images.sh in the groupcast repository.
set -eu
base=${SENTINEL_BASE_PORT:-26000}
ip=${SENTINEL_ANNOUNCE_IP:-127.0.0.1}
name=${SENTINEL_MASTER_NAME:-groupcast}
down_after=${SENTINEL_DOWN_AFTER_MS:-1000}
mkdir -p /data/primary /data/replica
redis-server --port "$base" --bind 0.0.0.0 --protected-mode no --save '' --appendonly no \
  --replica-announce-ip "$ip" --dir /data/primary --daemonize yes --logfile /data/primary/log
redis-server --port $((base + 1)) --bind 0.0.0.0 --protected-mode no --save '' --appendonly no \
  --replica-announce-ip "$ip" --replicaof "$ip" "$base" \
  --dir /data/replica --daemonize yes --logfile /data/replica/log
for i in 2 3 4; do
  port=$((base + i))
  mkdir -p "/data/$port"
  cat >"/data/$port/sentinel.conf" <<CONF
port $port
bind 0.0.0.0
protected-mode no
sentinel announce-ip $ip
sentinel monitor $name $ip $base 2
sentinel down-after-milliseconds $name $down_after
sentinel failover-timeout $name 5000
sentinel parallel-syncs $name 1
dir /data/$port
logfile /data/$port/log
daemonize yes
CONF
  redis-server "/data/$port/sentinel.conf" --sentinel
done
until redis-cli -p $((base + 1)) info replication | grep -q master_link_status:up; do sleep 0.1; done
for i in 2 3 4; do
  until redis-cli -p $((base + i)) sentinel replicas "$name" 2>/dev/null | grep -q "$((base + 1))"; do sleep 0.1; done
done
echo "Sentinel ready on ports $base-$((base + 4))"
while :; do sleep 3600; done
SCRIPT
}

# An image of redis-server, redis-cli and a POSIX shell running `$2`
# (the entrypoint's text) as `$1`.
build_scripted() {
  local image=$1 entrypoint=$2
  if [ "$force" -eq 0 ] && image_exists "$image"; then
    echo "$image exists (use --force to rebuild)"
    return
  fi
  need redis-server redis-server redis-tools
  need redis-cli redis-tools
  local rootfs
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' RETURN
  copy_with_libs "$(command -v redis-server)" "$(command -v redis-cli)" \
    "$(readlink -f /bin/sh)" "$(command -v sleep)" "$(command -v grep)" "$(command -v mkdir)" "$(command -v cat)"
  # Debian's redis-sentinel is redis-server started in Sentinel mode
  # (`--sentinel`); the package ships the same binary under another name.
  mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/data" "$rootfs/etc"
  ln -sf "$(readlink -f /bin/sh)" "$rootfs/bin/sh"
  for tool in redis-server redis-cli sleep grep mkdir cat; do
    [ -e "$rootfs/bin/$tool" ] || ln -sf "$(command -v "$tool")" "$rootfs/bin/$tool"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' > "$rootfs/etc/passwd"
  "$entrypoint" > "$rootfs/entrypoint.sh"
  chmod +x "$rootfs/entrypoint.sh"
  tar -C "$rootfs" -c . | docker import \
    --change 'WORKDIR /data' \
    --change 'ENV PATH=/bin:/usr/bin' \
    --change 'CMD ["/bin/sh","/entrypoint.sh"]' \
    - "$image" >/dev/null
  echo "built $image ($(docker image inspect --format '{{.Size}}' "$image") bytes)"
}

build_redis
build_scripted local/redis-cluster:7 cluster_entrypoint
build_scripted local/redis-sentinel:7 sentinel_entrypoint
