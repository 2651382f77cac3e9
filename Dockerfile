# groupcast container image.
#
#   docker build -t groupcast:latest .
#   docker run --rm -p 8080:8080 groupcast:latest                      # standalone
#   docker run --rm -p 8080:8080 -e GROUPCAST_REDIS_URL=redis://redis:6379 groupcast:latest
#
# Three stages:
#   planner - the source tree with every .rs file replaced by a stub, so the
#             dependency layer below is rebuilt only when Cargo.toml,
#             Cargo.lock or the set of targets changes (not on every edit);
#   builder - compiles the dependencies against the stubs (cached), then the
#             real source, and picks a static busybox for the health check;
#   runtime - distroless (glibc, no shell, no package manager), the release
#             binary, busybox for `wget` in the HEALTHCHECK, non-root.
#
# Works with the classic builder and with BuildKit (no RUN --mount), so
# `docker-compose` v1 and `docker compose` v2 can both build it.
# scripts/build-deploy-images.sh builds an equivalent image without any
# registry (same paths, same user, same health check).

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS planner
WORKDIR /src
COPY . .
# Keep the manifests and the layout of targets; stub out every source file.
RUN find . -name '*.rs' -exec sh -c 'echo "fn main() { }" > "$1"' _ {} \; \
 && find . -type f ! -name '*.rs' ! -name 'Cargo.toml' ! -name 'Cargo.lock' -delete

FROM ${RUST_IMAGE} AS builder
WORKDIR /src
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends busybox-static \
 && rm -rf /var/lib/apt/lists/*
# Release builds keep symbols for backtraces but not the debug info.
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=debuginfo
# 1. Dependencies only: cached until the manifests or the targets change.
COPY --from=planner /src ./
RUN cargo build --release --locked --bin groupcast
# 2. The real source. COPY keeps the context's mtimes, which may be older
#    than the stubs': touch every source so cargo rebuilds our crate.
COPY . .
RUN find . -name '*.rs' -not -path './target/*' -exec touch {} + \
 && cargo build --release --locked --bin groupcast \
 && cp target/release/groupcast /groupcast \
 && /groupcast --version

FROM ${RUNTIME_IMAGE}
COPY --from=builder /groupcast /usr/local/bin/groupcast
COPY --from=builder /bin/busybox /usr/local/bin/busybox
# distroless's `nonroot` user (uid 65532); the Kubernetes manifests match it.
USER 65532:65532
ENV GROUPCAST_LISTEN=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/healthz"]
# SIGTERM: not ready, drain for GROUPCAST_DRAIN_PERIOD, close sessions with
# 1001, exit within GROUPCAST_SHUTDOWN_TIMEOUT.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/groupcast"]
