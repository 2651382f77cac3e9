#!/usr/bin/env bash
# Checks groupcast.d.ts (the TypeScript declarations shipped beside
# groupcast.js): `tsc --noEmit --strict` over the typed usage example
# clients/js/test/usage.ts, whose `@ts-expect-error` lines also show that
# the declarations refuse what they should.
#
#   clients/js/check-types.sh           # install tsc if missing, then check
#   clients/js/check-types.sh --setup   # only find or install tsc; print why not
#
# tsc is Debian's `node-typescript` package. When `tsc` is not on the PATH
# (or in $TSC), the package is downloaded with `apt-get download` and
# unpacked with `dpkg -x` into target/typescript/ (nothing installed
# system-wide; root or sudo only if apt's package lists need an update).
# It runs on the system's node. Exit 3 (with the reason on stdout) when tsc
# cannot be had here, so that scripts/test.sh can skip the step.
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
tools="$repo/target/typescript"

find_tsc() {
  if [ -n "${TSC:-}" ]; then echo "$TSC"; return 0; fi
  if command -v tsc >/dev/null 2>&1; then command -v tsc; return 0; fi
  if [ -e "$tools/usr/bin/tsc" ]; then echo "$tools/usr/bin/tsc"; return 0; fi
  return 1
}

# Prints why tsc cannot be installed (and returns 1), or installs it.
install_tsc() {
  if ! command -v node >/dev/null 2>&1; then
    echo "node is not installed (tsc runs on it)"; return 1
  fi
  if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg >/dev/null 2>&1; then
    echo "tsc not found and no apt-get/dpkg here: install TypeScript's tsc and put it on the PATH (or set TSC)"
    return 1
  fi
  local download
  download="$(mktemp -d)"
  # As root, apt downloads as its _apt user, who cannot write here.
  local apt_opts=()
  [ "$(id -u)" -ne 0 ] || apt_opts=(-o APT::Sandbox::User=root)
  echo "tsc not found: downloading Debian's node-typescript package into ${tools#"$repo"/} ..." >&2
  if ! (cd "$download" && apt-get "${apt_opts[@]}" download node-typescript >&2); then
    # Stale or missing package lists: update them (needs root or sudo).
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
      if command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
      else
        rm -rf "$download"
        echo "apt-get download node-typescript failed, and updating apt's lists needs root or sudo"
        return 1
      fi
    fi
    if ! { "${sudo[@]}" apt-get update >&2 && (cd "$download" && apt-get "${apt_opts[@]}" download node-typescript >&2); }; then
      rm -rf "$download"
      echo "apt-get download node-typescript failed (no such package in apt's sources?)"
      return 1
    fi
  fi
  rm -rf "$tools"
  mkdir -p "$tools"
  dpkg -x "$download"/node-typescript_*.deb "$tools"
  rm -rf "$download"
  # usr/bin/tsc is a relative symlink into usr/share/nodejs/typescript/.
  [ -e "$tools/usr/bin/tsc" ] || { echo "no usr/bin/tsc in Debian's node-typescript package"; return 1; }
}

tsc="$(find_tsc)" || {
  if ! why="$(install_tsc)"; then
    echo "$why"
    exit 3
  fi
  tsc="$(find_tsc)"
}
# Through node, whichever tsc was found: the same node as the JS tests.
version="$(node "$tsc" --version 2>/dev/null)" || { echo "$tsc does not run on $(node --version 2>&1)"; exit 3; }
echo "tsc: $tsc, $version" >&2
[ "${1:-}" = --setup ] && exit 0

cd "$repo"
node "$tsc" --noEmit --strict \
  --target es2022 --module es2022 --moduleResolution node --lib es2022,dom \
  clients/js/test/usage.ts
echo "clients/js/groupcast.d.ts: tsc --noEmit --strict clients/js/test/usage.ts passed" >&2
