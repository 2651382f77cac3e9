# shellcheck shell=bash
# Sets up Autobahn|Testsuite's `wstest` for scripts/autobahn.sh. Source it.
#
# wstest (autobahntestsuite 0.8.2) runs only on CPython 2.7. Two ways:
#   * container: the image crossbario/autobahn-testsuite, where it is
#     present or a registry gives it (none does on our build machines);
#   * local: CPython 2.7 from Debian bullseye (a private apt view, the
#     packages unpacked with `dpkg -x` into a private prefix; the system's
#     apt sources and packages are left alone), pip 20.3.4 from its wheel,
#     and the suite with pinned versions, all under AB_HOME.
# AUTOBAHN_SETUP=auto|container|local chooses (auto: container if there is
# one, else local). See docs/protocol.md, "Conformance: Autobahn|Testsuite".

AB_HOME="${AUTOBAHN_HOME:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/groupcast-autobahn}"
AB_IMAGE="${AUTOBAHN_IMAGE:-crossbario/autobahn-testsuite:0.8.2}"
AB_MIRROR="${AUTOBAHN_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
AB_PREFIX="$AB_HOME/py27"
AB_SITE="$AB_HOME/site-packages"
AB_WSTEST="$AB_HOME/bin/wstest"
AB_LIB="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# 1 (default): replace wsaccel's UTF-8 validator with the same one in
# plain C (scripts/lib/autobahn-utf8validator.c), 80 times faster, once a
# check shows it answers alike: wsaccel's made wstest itself take 3/4 of
# the time of the text cases. 0 keeps wsaccel's.
AB_FAST_UTF8="${AUTOBAHN_FAST_UTF8:-1}"

# Debian bullseye packages that make a working CPython 2.7 (with _ssl,
# _ctypes and the headers for C extensions) on a newer Debian.
AB_DEBS="python2.7-minimal libpython2.7-minimal libpython2.7-stdlib python2.7
libpython2.7 libpython2.7-dev libssl1.1 libffi7"

# Versions that install and run on 2.7 (the latest releases do not).
AB_PINS="autobahntestsuite==0.8.2 autobahn==0.10.9 txaio==2.1.0 Twisted==20.3.0
zope.interface==5.4.0 cryptography==3.3.2 pyOpenSSL==20.0.1 cffi==1.15.1
pycparser==2.21 service-identity==21.1.0 pyasn1==0.5.1 pyasn1-modules==0.3.0
klein==17.10.0 Werkzeug==1.0.1 Jinja2==2.11.3 MarkupSafe==1.1.1 attrs==21.4.0
hyperlink==21.0.0 Automat==20.2.0 incremental==21.3.0 constantly==15.1.0
PyHamcrest==1.10.1 wsaccel==0.6.3 ujson==1.35 six==1.16.0 idna==2.10
enum34==1.1.10 ipaddress==1.0.23 typing==3.10.0.0 unittest2==1.1.0
argparse==1.4.0 traceback2==1.4.0 linecache2==1.0.0"
AB_PIP_WHEELS="pip==20.3.4 setuptools==44.1.1 wheel==0.37.1"

# The stamp says what was set up; a different pin list sets up anew.
ab_stamp_text() {
    printf 'debs: %s\npins: %s\n' "${AB_DEBS//$'\n'/ }" "${AB_PINS//$'\n'/ }"
    if [ "$AB_FAST_UTF8" = 1 ]; then
        printf 'utf8validator: %s\n' "$(cksum <"$AB_LIB/autobahn-utf8validator.c")"
    fi
}

ab_log() { printf '[autobahn] %s\n' "$*" >&2; }

# How wstest is run, once ab_setup has succeeded: "container" or "local".
AB_MODE=""

ab_local_ready() {
    [ -x "$AB_WSTEST" ] && [ -f "$AB_HOME/stamp" ] &&
        [ "$(cat "$AB_HOME/stamp")" = "$(ab_stamp_text)" ]
}

ab_container_ready() {
    command -v docker >/dev/null 2>&1 &&
        timeout 20 docker image inspect "$AB_IMAGE" >/dev/null 2>&1
}

# Tries to pull the image: fails fast where no registry resolves.
ab_container_pull() {
    command -v docker >/dev/null 2>&1 || return 1
    timeout 20 docker info >/dev/null 2>&1 || return 1
    ab_log "pulling $AB_IMAGE (up to 5 minutes)"
    timeout 300 docker pull -q "$AB_IMAGE" >/dev/null 2>&1
}

# ab_reachable URL: answers within 15 s (proxies from the environment apply).
ab_reachable() {
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=15).read(1)' \
        "$1" >/dev/null 2>&1
}

# Why a local setup cannot work, or nothing when it can (a few seconds).
ab_local_blocker() {
    local t
    for t in apt-get dpkg python3 gcc; do
        command -v "$t" >/dev/null 2>&1 || { echo "$t is not installed"; return; }
    done
    [ "$(dpkg --print-architecture)" = amd64 ] ||
        { echo "the local setup knows amd64 only"; return; }
    ab_reachable "$AB_MIRROR/dists/bullseye/InRelease" ||
        { echo "no Debian bullseye mirror reachable at $AB_MIRROR"; return; }
    python3 -m pip --version >/dev/null 2>&1 ||
        { echo "python3 has no pip (needed to fetch pip for 2.7)"; return; }
    ab_reachable "https://pypi.org/simple/autobahntestsuite/" ||
        [ -n "${PIP_INDEX_URL:-}" ] ||
        { echo "PyPI is not reachable"; return; }
}

# ab_check: says whether wstest is (or can be) set up; 0 when it can.
ab_check() {
    if ab_local_ready; then echo "wstest is set up (local CPython 2.7 in $AB_HOME)"; return 0; fi
    if [ "${AUTOBAHN_SETUP:-auto}" != local ] && ab_container_ready; then
        echo "wstest is set up (container image $AB_IMAGE)"; return 0
    fi
    if [ "${AUTOBAHN_SETUP:-auto}" = container ]; then
        echo "wstest cannot be set up: no image $AB_IMAGE (AUTOBAHN_SETUP=container)"; return 1
    fi
    local why
    why=$(ab_local_blocker)
    if [ -n "$why" ]; then echo "wstest cannot be set up: $why"; return 1; fi
    echo "wstest can be set up (local CPython 2.7 from Debian bullseye, into $AB_HOME)"
}

ab_apt() {
    apt-get -q -o Dir::Etc::sourcelist="$AB_HOME/apt/sources.list" \
        -o Dir::Etc::sourceparts="$AB_HOME/apt/empty" -o Dir::Etc::preferencesparts="$AB_HOME/apt/empty" \
        -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false \
        -o Dir::State::Lists="$AB_HOME/apt/lists" \
        -o Dir::Cache="$AB_HOME/apt/cache" -o Dir::State::status="$AB_HOME/apt/status" \
        -o APT::Sandbox::User=root -o Acquire::Retries=3 "$@"
}

ab_setup_local() {
    local started t deb
    started=$(date +%s)
    rm -rf "${AB_HOME:?}/py27" "${AB_HOME:?}/site-packages" "${AB_HOME:?}/bin" "${AB_HOME:?}/stamp" "${AB_HOME:?}/debs"
    mkdir -p "$AB_HOME/apt/empty" "$AB_HOME/apt/lists/partial" "$AB_HOME/apt/cache/archives/partial" \
        "$AB_HOME/debs" "$AB_HOME/wheels" "$AB_PREFIX" "$AB_SITE" "$AB_HOME/bin"
    : >"$AB_HOME/apt/status"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $AB_MIRROR bullseye main" \
        >"$AB_HOME/apt/sources.list"

    ab_log "1/5 Debian bullseye package lists (private apt view, ~10 s)"
    ab_apt update >"$AB_HOME/setup.log" 2>&1 ||
        { cat "$AB_HOME/setup.log" >&2; ab_log "apt-get update (bullseye) failed"; return 1; }

    ab_log "2/5 CPython 2.7 from bullseye: ${AB_DEBS//$'\n'/ }"
    # One word per package is wanted.
    # shellcheck disable=SC2086
    (cd "$AB_HOME/debs" && ab_apt download $AB_DEBS) >>"$AB_HOME/setup.log" 2>&1 ||
        { tail -20 "$AB_HOME/setup.log" >&2; ab_log "apt-get download failed"; return 1; }
    for deb in "$AB_HOME"/debs/*.deb; do dpkg -x "$deb" "$AB_PREFIX"; done
    ab_python -c 'import ssl, ctypes, zlib; print("python " + __import__("sys").version.split()[0])' >&2 ||
        { ab_log "the unpacked CPython 2.7 does not run"; return 1; }

    ab_log "3/5 pip 20.3.4 for 2.7 (its wheel, fetched with python3's pip)"
    # shellcheck disable=SC2086
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 2.7 \
        -d "$AB_HOME/wheels" $AB_PIP_WHEELS >>"$AB_HOME/setup.log" 2>&1 ||
        { tail -20 "$AB_HOME/setup.log" >&2; ab_log "fetching pip for 2.7 failed"; return 1; }

    ab_log "4/5 autobahntestsuite 0.8.2 and its pinned dependencies (builds C extensions, ~1-2 min)"
    t=$(date +%s)
    # pip, setuptools and wheel first (from the wheels), so that the
    # suite's source packages build with this interpreter's setuptools.
    # shellcheck disable=SC2086
    PIP_FIND_LINKS="$AB_HOME/wheels" ab_python "$(ls "$AB_HOME"/wheels/pip-20.3.4-*.whl)/pip" \
        install -q --no-index --target "$AB_SITE" $AB_PIP_WHEELS >>"$AB_HOME/setup.log" 2>&1 ||
        { tail -30 "$AB_HOME/setup.log" >&2; ab_log "installing pip for 2.7 failed"; return 1; }
    # shellcheck disable=SC2086
    CFLAGS="-I$AB_PREFIX/usr/include/python2.7 -I$AB_PREFIX/usr/include -fgnu89-inline" \
        PIP_FIND_LINKS="" ab_python -m pip install -q --no-cache-dir --no-build-isolation \
        --no-warn-script-location --disable-pip-version-check --target "$AB_SITE" \
        $AB_PINS >>"$AB_HOME/setup.log" 2>&1 ||
        { tail -30 "$AB_HOME/setup.log" >&2; ab_log "pip install of the suite failed"; return 1; }
    ab_log "    installed in $(( $(date +%s) - t ))s"
    if [ "$AB_FAST_UTF8" = 1 ]; then ab_fast_utf8 || return 1; fi

    cat >"$AB_WSTEST" <<EOF
#!/bin/sh
# wstest on the private CPython 2.7 (made by scripts/lib/autobahn-setup.sh)
export LD_LIBRARY_PATH="$AB_PREFIX/usr/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export PYTHONHOME="$AB_PREFIX/usr" PYTHONNOUSERSITE=1 PYTHONWARNINGS=ignore
# addsitedir, not PYTHONPATH: zope's namespace package needs its .pth file.
exec "$AB_PREFIX/usr/bin/python2.7" -c 'import site, sys; site.addsitedir("$AB_SITE"); from autobahntestsuite.wstest import run; sys.argv[0] = "wstest"; run()' "\$@"
EOF
    chmod +x "$AB_WSTEST"
    "$AB_WSTEST" --help >/dev/null 2>&1 ||
        { "$AB_WSTEST" --help 2>&1 | tail -20 >&2; ab_log "wstest does not run"; return 1; }
    ab_stamp_text >"$AB_HOME/stamp"
    ab_log "wstest set up in $AB_HOME in $(( $(date +%s) - started ))s"
}

# wstest's UTF-8 validator in C, installed only if it answers exactly as
# wsaccel's on autobahn-utf8check.py's inputs.
ab_fast_utf8() {
    local so="$AB_SITE/wsaccel/utf8validator.so" want got
    ab_log "5/5 wstest's UTF-8 validator in C (checked against wsaccel's, ~10 s)"
    gcc -O2 -shared -fPIC -fno-strict-aliasing -I"$AB_PREFIX/usr/include/python2.7" \
        -I"$AB_PREFIX/usr/include" -o "$AB_HOME/utf8validator.so" \
        "$AB_LIB/autobahn-utf8validator.c" >>"$AB_HOME/setup.log" 2>&1 ||
        { tail -20 "$AB_HOME/setup.log" >&2; ab_log "compiling the validator failed"; return 1; }
    want=$(ab_python "$AB_LIB/autobahn-utf8check.py" "$AB_SITE" 2>>"$AB_HOME/setup.log") ||
        { tail -20 "$AB_HOME/setup.log" >&2; ab_log "the validator check failed to run"; return 1; }
    cp "$so" "$so.wsaccel"
    cp "$AB_HOME/utf8validator.so" "$so"
    got=$(ab_python "$AB_LIB/autobahn-utf8check.py" "$AB_SITE" 2>>"$AB_HOME/setup.log") || got="error"
    if [ "$got" != "$want" ]; then
        cp "$so.wsaccel" "$so"
        ab_log "    WARNING: the C validator answers differently ($got, wsaccel: $want): kept wsaccel's (slow)"
        return 0
    fi
    ab_log "    same answers on $want"
}

# Runs the private interpreter (during setup).
ab_python() {
    LD_LIBRARY_PATH="$AB_PREFIX/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        PYTHONHOME="$AB_PREFIX/usr" PYTHONNOUSERSITE=1 PYTHONPATH="$AB_SITE" \
        "$AB_PREFIX/usr/bin/python2.7" "$@"
}

# ab_setup: makes wstest runnable and sets AB_MODE; quick when done before.
ab_setup() {
    local want="${AUTOBAHN_SETUP:-auto}"
    if [ "$want" != container ] && ab_local_ready; then
        AB_MODE=local; ab_log "wstest: local, already set up in $AB_HOME"; return 0
    fi
    if [ "$want" != local ]; then
        if ab_container_ready || ab_container_pull; then
            AB_MODE=container; ab_log "wstest: container image $AB_IMAGE"; return 0
        fi
        [ "$want" = container ] && { ab_log "no image $AB_IMAGE and no registry gives it"; return 1; }
        ab_log "no container image $AB_IMAGE (no registry reachable): setting up locally"
    fi
    local why
    why=$(ab_local_blocker)
    [ -z "$why" ] || { ab_log "wstest cannot be set up: $why"; return 1; }
    ab_setup_local && AB_MODE=local
}

# ab_wstest DIR ARGS...: runs wstest with DIR as its working directory
# (the spec and the reports are in it, named relative to it).
ab_wstest() {
    local dir="$1"; shift
    if [ "$AB_MODE" = container ]; then
        docker run --rm --network host -e PYTHONUNBUFFERED=1 -v "$dir:/ab" -w /ab \
            --entrypoint wstest "$AB_IMAGE" "$@"
    else
        (cd "$dir" && PYTHONUNBUFFERED=1 "$AB_WSTEST" "$@")
    fi
}
