#!/usr/bin/env bash
# Checks the HTTP API's OpenAPI description against standard tools and a
# live node:
#  * starts the groupcast binary ($GROUPCAST_BIN, else the debug build,
#    brought up to date first: a stale binary would check an old API)
#    standalone on a free loopback port, with an API key,
#    presence and history on every group (so that every operation can
#    answer 200);
#  * validates GET /api/openapi.json with openapi-spec-validator;
#  * runs schemathesis against it, bounded (OPENAPI_MAX_EXAMPLES examples
#    per operation, default 25; OPENAPI_MAX_TIME seconds in all, default
#    40): no 5xx, every status, content type, header and body as
#    described, the API key enforced, 405 for undescribed methods.
# The endless event stream (/sse/{group}) and the WebSocket upgrade
# (/ws/{group}) are left to tests/node/openapi.rs, which calls them.
#
#   scripts/check-openapi.sh
#
# openapi-spec-validator and schemathesis come from PyPI, pinned in
# scripts/openapi-requirements.txt, into a venv at target/openapi-tools/
# (made once; skipped when it already has exactly those versions).
set -euo pipefail

case "${1:-}" in
  -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
  "") ;;
  *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
esac

repo="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/lib/ports.sh
. "$repo/scripts/lib/ports.sh"
venv="$repo/target/openapi-tools"
requirements="$repo/scripts/openapi-requirements.txt"

venv_ready() {
  [ -x "$venv/bin/python" ] || return 1
  "$venv/bin/python" -m pip freeze 2>/dev/null | sort >"$venv/.installed"
  while read -r pin; do
    case "$pin" in ''|'#'*) continue ;; esac
    grep -qixF "$pin" "$venv/.installed" || return 1
  done <"$requirements"
}

if ! venv_ready; then
  echo "setting up $venv (openapi-spec-validator, schemathesis) ..."
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
fi

binary="${GROUPCAST_BIN:-}"
if [ -z "$binary" ]; then
  (cd "$repo" && cargo build --quiet --bin groupcast)
  binary="$repo/target/debug/groupcast"
fi

port=$(free_port)
key="check-openapi-$(date +%s)-key"
log="$repo/target/check-openapi-node.log"
env -u GROUPCAST_CONFIG "$binary" --listen "127.0.0.1:$port" --api-keys "$key" \
  --presence '**' --history '**=100:1h' --node-id check-openapi >"$log" 2>&1 &
node=$!
trap 'kill "$node" 2>/dev/null || true' EXIT
wait_port "$port" "$node"
url="http://127.0.0.1:$port/api/openapi.json"

spec="$repo/target/openapi.json"
"$venv/bin/python" -c 'import sys, urllib.request; open(sys.argv[2], "wb").write(urllib.request.urlopen(sys.argv[1]).read())' "$url" "$spec"
echo "==> openapi-spec-validator $url"
"$venv/bin/openapi-spec-validator" "$spec"

echo "==> schemathesis on $url"
# The reports (and schemathesis's example database) stay under target/.
cd "$repo/target"
"$venv/bin/schemathesis" run "$url" \
  --header "Authorization: Bearer $key" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,ignored_auth,unsupported_method \
  --exclude-path '/sse/{group}' --exclude-path '/ws/{group}' \
  --max-examples "${OPENAPI_MAX_EXAMPLES:-25}" \
  --max-time "${OPENAPI_MAX_TIME:-40}" \
  --request-timeout 5 \
  --generation-database none \
  --no-color
