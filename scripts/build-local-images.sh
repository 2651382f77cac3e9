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

build_redis
