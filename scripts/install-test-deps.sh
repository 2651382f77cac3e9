#!/usr/bin/env bash
# Installs what the browser test (tests/browser.rs) needs: Debian's headless
# Chromium and its WebDriver, chromedriver.
#
#   scripts/install-test-deps.sh           # install what is missing
#   scripts/install-test-deps.sh --check   # only report; exit 1 if missing
#
# Idempotent: when both `chromium` and `chromedriver` are on PATH it does
# nothing. Needs root (or sudo) and apt-get, i.e. Debian or Ubuntu.
set -euo pipefail

check=0
for arg in "$@"; do
  case "$arg" in
    --check) check=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)

if [ ${#missing[@]} -eq 0 ]; then
  echo "chromium and chromedriver are installed:"
  chromium --version 2>/dev/null || true
  chromedriver --version
  exit 0
fi

if [ "$check" -eq 1 ]; then
  echo "missing packages: ${missing[*]} (run scripts/install-test-deps.sh)" >&2
  exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "apt-get not found: install ${missing[*]} with your system's package manager" >&2
  exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "run as root (or install sudo) to install ${missing[*]}" >&2
    exit 1
  fi
fi

echo "installing ${missing[*]} ..."
"${sudo[@]}" apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
chromedriver --version
