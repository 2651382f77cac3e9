#!/usr/bin/env bash
# Builds, without any container registry, the images docker-compose.yml
# needs, from this machine's Debian packages and our own release binary
# (see /work/shared/machine-notes.md: no image can be pulled here).
#
#   scripts/build-deploy-images.sh            # build what is missing or stale
#   scripts/build-deploy-images.sh --force    # rebuild everything
#   scripts/build-deploy-images.sh --no-cargo # use target/release/groupcast as is
#
# Images (use them with the same docker-compose.yml as the public ones):
#   local/redis:7        scripts/build-local-images.sh's redis-server image
#                        (built here with the same recipe if that script is absent)
#   local/redis:7-cli    local/redis:7 plus redis-cli and a static busybox
#                        (sh, sleep, date), so `compose exec redis redis-cli ...`
#                        and the ticker demo work as with redis:7-alpine
#   local/haproxy:2      Debian's haproxy; same config path, command and
#                        user (uid 99) as the public haproxy image
#   local/groupcast:dev  our release binary (cargo build --release on this
#                        host) + the libraries it links + CA certificates +
#                        busybox for the health check, user 65532: the same
#                        paths as the runtime stage of the Dockerfile
#
#   REDIS_IMAGE=local/redis:7-cli GROUPCAST_IMAGE=local/groupcast:dev \
#   LB_IMAGE=local/haproxy:2 docker-compose up -d --no-build --scale ws=3
#
# Images are built with `docker build` from a rootfs and a FROM-scratch (or
# FROM-local-image) Dockerfile with the classic builder: nothing is pulled.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

force=0
cargo_build=1
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    --no-cargo) cargo_build=0 ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

REDIS_BASE=local/redis:7
REDIS_CLI_IMAGE=local/redis:7-cli
LB_IMAGE=local/haproxy:2
GROUPCAST_IMAGE=local/groupcast:dev

# The classic builder: FROM scratch and FROM a local image never touch a
# registry with it, and it exists on every engine this project meets.
export DOCKER_BUILDKIT=0

if ! command -v docker >/dev/null 2>&1; then
  echo "docker is not installed" >&2
  exit 1
fi

image_exists() {
  docker image inspect "$1" >/dev/null 2>&1
}

image_label() {
  docker image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true
}

# need COMMAND PACKAGE...: installs Debian packages when COMMAND is missing.
need() {
  local cmd=$1
  shift
  if ! command -v "$cmd" >/dev/null 2>&1; then
    echo "installing $* (for $cmd)"
    local sudo=
    if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
    $sudo apt-get -o DPkg::Lock::Timeout=300 update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=300 \
      install -y -qq "$@" >/dev/null
  fi
}

# copy_libs ROOTFS FILE...: every library each file links, at its own path
# (symlinks resolved).
copy_libs() {
  local rootfs=$1
  shift
  local f lib
  for f in "$@"; do
    for lib in $(ldd "$f" 2>/dev/null | grep -o '/[^ ]*' || true); do
      [ -e "$rootfs$lib" ] || cp --parents -L "$lib" "$rootfs/"
    done
  done
}

# copy_with_libs ROOTFS FILE...: each file at its own path, and its libraries.
copy_with_libs() {
  local rootfs=$1
  shift
  local f
  for f in "$@"; do
    cp --parents -L "$f" "$rootfs/"
  done
  copy_libs "$rootfs" "$@"
}

# busybox_into ROOTFS DIR APPLET...: Debian's static busybox at DIR/busybox
# and a symlink for each applet.
busybox_into() {
  local rootfs=$1 dir=$2
  shift 2
  if ! dpkg-query -W -f '${Status}' busybox-static 2>/dev/null | grep -q 'ok installed'; then
    need /nonexistent/busybox-static busybox-static
  fi
  local bb
  bb=$(dpkg -L busybox-static | grep -m1 '/busybox$')
  mkdir -p "$rootfs$dir"
  cp -L "$bb" "$rootfs$dir/busybox"
  local applet
  for applet in "$@"; do
    ln -sf busybox "$rootfs$dir/$applet"
  done
}

# build_image TAG DIR: docker build, quiet unless it fails.
build_image() {
  local log
  log=$(mktemp)
  if ! docker build -t "$1" "$2" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "building $1 failed" >&2
    exit 1
  fi
  rm -f "$log"
}

new_rootfs() {
  local dir
  dir=$(mktemp -d "${TMPDIR:-/tmp}/groupcast-image.XXXXXX")
  mkdir -p "$dir/rootfs/etc" "$dir/rootfs/tmp"
  chmod 1777 "$dir/rootfs/tmp"
  echo "$dir"
}

# ---------------------------------------------------------------- redis
build_redis() {
  if [ -x "$here/build-local-images.sh" ] || [ -f "$here/build-local-images.sh" ]; then
    if [ "$force" -eq 1 ]; then
      bash "$here/build-local-images.sh" --force
    else
      bash "$here/build-local-images.sh"
    fi
  fi
  if ! image_exists "$REDIS_BASE"; then
    # Same recipe as scripts/build-local-images.sh, for when it is absent.
    need redis-server redis-server
    local server dir
    server=$(command -v redis-server)
    dir=$(new_rootfs)
    copy_with_libs "$dir/rootfs" "$server"
    mkdir -p "$dir/rootfs/data"
    echo 'root:x:0:0:root:/root:/bin/sh' >"$dir/rootfs/etc/passwd"
    tar -C "$dir/rootfs" -c . | docker import \
      --change 'EXPOSE 6379/tcp' \
      --change 'WORKDIR /data' \
      --change "CMD [\"$server\",\"--bind\",\"0.0.0.0\",\"--protected-mode\",\"no\",\"--save\",\"\",\"--appendonly\",\"no\"]" \
      - "$REDIS_BASE" >/dev/null
    rm -rf "$dir"
    echo "built $REDIS_BASE"
  fi

  local base_id
  base_id=$(docker image inspect --format '{{.Id}}' "$REDIS_BASE")
  if [ "$force" -eq 0 ] && image_exists "$REDIS_CLI_IMAGE" &&
    [ "$(image_label "$REDIS_CLI_IMAGE" groupcast.base)" = "$base_id" ]; then
    echo "$REDIS_CLI_IMAGE is up to date"
    return
  fi
  need redis-cli redis-tools
  local dir
  dir=$(new_rootfs)
  copy_with_libs "$dir/rootfs" "$(command -v redis-cli)"
  busybox_into "$dir/rootfs" /bin sh sleep date
  # Keep only what the base image lacks (its own files stay as they are).
  rm -rf "$dir/rootfs/etc" "$dir/rootfs/tmp"
  cat >"$dir/Dockerfile" <<EOF
FROM $REDIS_BASE
COPY rootfs/ /
LABEL groupcast.base="$base_id"
HEALTHCHECK --interval=2s --timeout=2s --retries=15 CMD ["redis-cli", "ping"]
EOF
  build_image "$REDIS_CLI_IMAGE" "$dir"
  rm -rf "$dir"
  docker run --rm --entrypoint redis-cli "$REDIS_CLI_IMAGE" --version >/dev/null
  echo "built $REDIS_CLI_IMAGE ($(docker image inspect --format '{{.Size}}' "$REDIS_CLI_IMAGE") bytes)"
}

# ---------------------------------------------------------------- haproxy
build_haproxy() {
  if [ "$force" -eq 0 ] && image_exists "$LB_IMAGE"; then
    echo "$LB_IMAGE exists (use --force to rebuild)"
    return
  fi
  need haproxy haproxy
  local bin dir
  bin=$(command -v haproxy)
  dir=$(new_rootfs)
  local r="$dir/rootfs"
  copy_with_libs "$r" "$bin"
  # The public image's layout: binary on PATH, config in /usr/local/etc/haproxy,
  # state in /var/lib/haproxy, user haproxy (99).
  mkdir -p "$r/usr/local/sbin" "$r/usr/local/etc/haproxy" "$r/var/lib/haproxy" "$r/run"
  [ "$bin" = /usr/local/sbin/haproxy ] || ln -s "$bin" "$r/usr/local/sbin/haproxy"
  cp "$root/deploy/haproxy.cfg" "$r/usr/local/etc/haproxy/haproxy.cfg"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nhaproxy:x:99:99:haproxy:/var/lib/haproxy:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' >"$r/etc/passwd"
  printf 'root:x:0:\nhaproxy:x:99:\nnogroup:x:65534:\n' >"$r/etc/group"
  cat >"$dir/Dockerfile" <<'EOF'
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
USER 99:99
WORKDIR /var/lib/haproxy
EXPOSE 8080
# haproxy's graceful stop, as in the public image.
STOPSIGNAL SIGUSR1
CMD ["haproxy", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
EOF
  # The directories the user must own.
  chown -R 99:99 "$r/var/lib/haproxy" "$r/run"
  build_image "$LB_IMAGE" "$dir"
  rm -rf "$dir"
  docker run --rm "$LB_IMAGE" haproxy -c -f /usr/local/etc/haproxy/haproxy.cfg >/dev/null
  echo "built $LB_IMAGE ($(docker image inspect --format '{{.Size}}' "$LB_IMAGE") bytes, $("$bin" -v | head -1))"
}

# ---------------------------------------------------------------- groupcast
build_groupcast() {
  local bin="${CARGO_TARGET_DIR:-$root/target}/release/groupcast"
  if [ "$cargo_build" -eq 1 ]; then
    (cd "$root" && cargo build --release --locked --bin groupcast)
  fi
  if [ ! -x "$bin" ]; then
    echo "no $bin: run cargo build --release first" >&2
    exit 1
  fi
  local sum
  sum=$(sha256sum "$bin" | cut -d' ' -f1)
  if [ "$force" -eq 0 ] && image_exists "$GROUPCAST_IMAGE" &&
    [ "$(image_label "$GROUPCAST_IMAGE" groupcast.binary.sha256)" = "$sum" ]; then
    echo "$GROUPCAST_IMAGE is up to date"
    return
  fi
  local dir
  dir=$(new_rootfs)
  local r="$dir/rootfs"
  copy_libs "$r" "$bin"
  mkdir -p "$r/usr/local/bin"
  # Keep the symbols (backtraces), drop the debug info.
  strip --strip-debug -o "$r/usr/local/bin/groupcast" "$bin"
  busybox_into "$r" /usr/local/bin
  # distroless's users: root and nonroot (65532), as in the Dockerfile.
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$r/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\nnonroot:x:65532:\n' >"$r/etc/group"
  mkdir -p "$r/home/nonroot"
  # Trust roots for rediss:// (distroless ships them too).
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp --parents -L /etc/ssl/certs/ca-certificates.crt "$r/"
  fi
  chown 65532:65532 "$r/home/nonroot"
  cat >"$dir/Dockerfile" <<EOF
FROM scratch
COPY rootfs/ /
LABEL groupcast.binary.sha256="$sum"
USER 65532:65532
ENV GROUPCAST_LISTEN=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \\
  CMD ["/usr/local/bin/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/healthz"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/groupcast"]
EOF
  build_image "$GROUPCAST_IMAGE" "$dir"
  rm -rf "$dir"
  docker run --rm "$GROUPCAST_IMAGE" --version >/dev/null
  echo "built $GROUPCAST_IMAGE ($(docker image inspect --format '{{.Size}}' "$GROUPCAST_IMAGE") bytes, $(docker run --rm "$GROUPCAST_IMAGE" --version))"
}

build_redis
build_haproxy
build_groupcast
