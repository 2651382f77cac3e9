#!/usr/bin/env bash
# groupcast's one test command (the README's, and what CI runs):
# installs and builds everything the tests need on a fresh machine, then
# runs every test. Nothing needs to be installed by hand first.
#
#   scripts/test.sh            # everything
#   SKIP_DEPLOY=1 scripts/test.sh   # skip the compose and k8s checks
#   FUZZ=1 scripts/test.sh          # also run each fuzz target (FUZZ_SECONDS=30)
#   SKIP_AUTOBAHN=1 scripts/test.sh # skip the Autobahn|Testsuite subset
#   SKIP_TYPESCRIPT=1 scripts/test.sh # skip the tsc check of the JS client's types
#   SKIP_OPENAPI=1 scripts/test.sh  # skip the OpenAPI validator and schemathesis run
#   SKIP_CHAOS=1 scripts/test.sh    # skip the one-minute chaos run
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
started=$(date +%s)

# Containers the tests start are removed when the tests end; a killed run
# can leave some behind, so clean up on the way out, whatever happens.
cleanup() {
  local left
  left=$(docker ps -aq --filter label=org.testcontainers.managed-by=testcontainers 2>/dev/null || true)
  # One id per line; word splitting into arguments is wanted here.
  # shellcheck disable=SC2086
  if [ -n "$left" ]; then docker rm -f $left >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

# The JavaScript client's own logic (reconnect, resume, dedup), against a
# fake WebSocket: no server, no browser, a second or so.
if command -v node >/dev/null 2>&1; then
  step "JavaScript client: node --test clients/js/test/"
  node --test clients/js/test/
else
  step "JavaScript client: SKIPPED, node is not installed (the browser tests still drive the client)"
fi

# The client's TypeScript declarations (clients/js/groupcast.d.ts):
# tsc --noEmit --strict over a typed usage example. tsc is Debian's
# node-typescript, unpacked into target/typescript/ when missing; where it
# cannot be had, the step says why and is skipped.
if [ "${SKIP_TYPESCRIPT:-0}" = 1 ]; then
  step "TypeScript declarations: SKIPPED (SKIP_TYPESCRIPT=1)"
elif why=$(clients/js/check-types.sh --setup); then
  step "TypeScript declarations: clients/js/check-types.sh"
  clients/js/check-types.sh
else
  step "TypeScript declarations: SKIPPED, ${why} (clients/js/check-types.sh --setup)"
fi

step "test dependencies: chromium and chromedriver (browser test)"
scripts/install-test-deps.sh

step "local container images (no registry is needed)"
scripts/build-local-images.sh
export REDIS_IMAGE="${REDIS_IMAGE:-local/redis:7}"

step "cargo test (unit, integration, browser, examples build)"
cargo test --all-targets --no-fail-fast

# WebSocket conformance: a subset of Autobahn|Testsuite (a few minutes) on
# the release binary; the whole suite is `scripts/autobahn.sh`.
if [ "${SKIP_AUTOBAHN:-0}" = 1 ]; then
  step "Autobahn|Testsuite subset: SKIPPED (SKIP_AUTOBAHN=1)"
elif why=$(scripts/autobahn.sh --check-setup); then
  step "Autobahn|Testsuite subset: scripts/autobahn.sh quick"
  scripts/autobahn.sh quick
else
  step "Autobahn|Testsuite subset: SKIPPED, ${why#wstest cannot be set up: } (scripts/autobahn.sh --check-setup)"
fi

step "cargo test --doc (the examples in the API docs)"
cargo test --doc

# The Grafana dashboard and the Prometheus alerts in deploy/: promtool
# (Debian's prometheus package, unpacked into target/ if missing) checks
# and unit-tests the rules and parses every dashboard query; that they use
# only exported metrics is `cargo test --test node dashboards::` above.
if [ "${SKIP_MONITORING:-0}" = 1 ]; then
  step "monitoring files: SKIPPED (SKIP_MONITORING=1)"
else
  step "monitoring files: scripts/check-monitoring.sh"
  scripts/check-monitoring.sh
fi

# The HTTP API's OpenAPI description: openapi-spec-validator, then
# schemathesis against a live node (bounded: about 80 s), both from PyPI
# in a venv under target/. That every route is described and every
# response matches is `cargo test --test node openapi::` above.
if [ "${SKIP_OPENAPI:-0}" = 1 ]; then
  step "OpenAPI description: SKIPPED (SKIP_OPENAPI=1)"
else
  step "OpenAPI description: scripts/check-openapi.sh"
  scripts/check-openapi.sh
fi

# Fuzzing is not in the default run: its sanitizer build alone takes
# about 7 of the suite's 30 minutes on 2 cores. Every input that ever
# crashed a target is replayed by `cargo test --test wire
# fuzz_regressions::` above; `scripts/fuzz.sh` (or FUZZ=1 here) fuzzes.
if [ "${FUZZ:-0}" = 1 ]; then
  step "fuzz targets, ${FUZZ_SECONDS:-30}s each (any crash fails)"
  scripts/fuzz.sh
fi

if [ "${SKIP_DEPLOY:-0}" != 1 ]; then
  step "kubernetes manifests: render every overlay and validate offline"
  scripts/k8s-validate.sh

  step "docker compose cluster: three replicas behind the load balancer"
  scripts/compose-test.sh
fi

# The chaos run, short: 45 s of numbered traffic to three nodes and
# Redis in containers while faults are injected at random (the seed is
# printed; the images are compose-test's); fails when a resuming client
# lost, doubled or reordered a message history holds. The 30-minute run of
# docs/reliability.md is `scripts/chaos.sh`.
if [ "${SKIP_CHAOS:-0}" = 1 ]; then
  step "chaos run: SKIPPED (SKIP_CHAOS=1)"
else
  step "chaos run, 45 s: scripts/chaos.sh"
  CHAOS_SECONDS=45 CHAOS_FAULT_MIN=4 CHAOS_FAULT_MAX=9 CHAOS_OUT=target/chaos scripts/chaos.sh
fi

step "all tests passed in $(( $(date +%s) - started ))s"
