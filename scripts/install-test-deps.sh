#!/usr/bin/env bash
# Installs what the tests need beyond cargo:
#  * Debian's headless Chromium and its WebDriver, chromedriver (the browser
#    tests, tests/browser/);
#  * the Python `websockets` library (PyPI), pinned in
#    tests/peers/requirements.txt, in a private venv at target/py-peers/
#    (the independent permessage-deflate peer, tests/wire/deflate_peers.rs);
#    the system's Python is left as it is.
#
#   scripts/install-test-deps.sh           # install what is missing
#   scripts/install-test-deps.sh --check   # only report; exit 1 if missing
#
# Idempotent: what is installed already is left alone. Chromium needs root
# (or sudo) and apt-get, i.e. Debian or Ubuntu; the venv needs python3 with
# its venv module (Debian's python3-venv, installed here if missing).
set -euo pipefail

check=0
for arg in "$@"; do
  case "$arg" in
    --check) check=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="$repo/target/py-peers"
requirements="$repo/tests/peers/requirements.txt"
python="${PYTHON:-python3}"

sudo=()
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "apt-get not found: install $* with your system's package manager" >&2
    exit 1
  fi
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo=(sudo)
    else
      echo "run as root (or install sudo) to install $*" >&2
      exit 1
    fi
  fi
  echo "installing $* ..."
  "${sudo[@]}" apt-get update
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
}

# Whether the venv has exactly the pinned packages.
venv_ready() {
  [ -x "$venv/bin/python" ] || return 1
  "$venv/bin/python" - "$requirements" <<'EOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if line:
        name, pinned = line.split("==")
        if version(name) != pinned:
            sys.exit(1)
EOF
}

# 1. Chromium and chromedriver.
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
venv_missing=0
venv_ready || venv_missing=1

if [ "$check" -eq 1 ]; then
  status=0
  if [ ${#missing[@]} -gt 0 ]; then
    echo "missing packages: ${missing[*]} (run scripts/install-test-deps.sh)" >&2
    status=1
  fi
  if [ "$venv_missing" -eq 1 ]; then
    echo "missing: the Python peers' venv $venv with $(grep -v '^#' "$requirements" | xargs)" \
      "(run scripts/install-test-deps.sh)" >&2
    status=1
  fi
  [ "$status" -eq 0 ] && echo "chromium, chromedriver and the Python peers' venv are installed"
  exit "$status"
fi

if [ ${#missing[@]} -gt 0 ]; then
  apt_install "${missing[@]}"
fi
echo "chromium and chromedriver are installed:"
chromium --version 2>/dev/null || true
chromedriver --version

# 2. The Python peers' venv.
if [ "$venv_missing" -eq 1 ]; then
  if ! command -v "$python" >/dev/null 2>&1 \
    || ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    # Debian's python3 keeps venv's pip in a package of its own.
    apt_install python3 python3-venv
    python=/usr/bin/python3
  fi
  if [ ! -x "$venv/bin/python" ]; then
    echo "creating the Python peers' venv in $venv ..."
    "$python" -m venv --clear "$venv"
  fi
  "$venv/bin/python" -m pip install --disable-pip-version-check --quiet -r "$requirements"
  venv_ready || { echo "the venv $venv does not have $requirements after installing" >&2; exit 1; }
fi
echo "the Python peers' venv ($venv):"
"$venv/bin/python" -c 'import sys, websockets; print("python", sys.version.split()[0], "websockets", websockets.__version__)'
