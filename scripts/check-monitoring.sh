#!/usr/bin/env bash
# Checks the monitoring files in deploy/:
#  * deploy/prometheus/alerts.yml with `promtool check rules`, then
#    `promtool test rules` on a few cases (the main alerts fire when they
#    should, and not otherwise);
#  * deploy/grafana/groupcast.json: valid JSON, a Grafana dashboard model
#    with the `datasource`, `job` and `instance` variables, every panel with
#    PromQL targets on the `${datasource}` variable, and every expression
#    parsed by promtool (Grafana's variables replaced by plain values).
# That every groupcast_* metric these files use is exported by /metrics is
# checked by `cargo test --test node dashboards::`.
#
#   scripts/check-monitoring.sh
#
# promtool comes from Debian's `prometheus` package. When it is not on the
# PATH (or in $PROMTOOL), the package is downloaded with `apt-get download`
# and unpacked with `dpkg -x` into target/monitoring-tools/ (no daemon
# installed or started, nothing outside the repository touched; root or
# sudo is needed only if apt's package lists must be updated first).
set -euo pipefail

case "${1:-}" in
  -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
  "") ;;
  *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
esac

repo="$(cd "$(dirname "$0")/.." && pwd)"
rules="$repo/deploy/prometheus/alerts.yml"
dashboard="$repo/deploy/grafana/groupcast.json"
tools="$repo/target/monitoring-tools"

find_promtool() {
  if [ -n "${PROMTOOL:-}" ]; then echo "$PROMTOOL"; return 0; fi
  if command -v promtool >/dev/null 2>&1; then command -v promtool; return 0; fi
  if [ -x "$tools/usr/bin/promtool" ]; then echo "$tools/usr/bin/promtool"; return 0; fi
  return 1
}

install_promtool() {
  if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg >/dev/null 2>&1; then
    echo "promtool not found and no apt-get/dpkg here: install Prometheus's promtool and put it on the PATH (or set PROMTOOL)" >&2
    exit 1
  fi
  local download
  download="$(mktemp -d)"
  # As root, apt downloads as its _apt user, who cannot write here.
  local apt_opts=()
  [ "$(id -u)" -ne 0 ] || apt_opts=(-o APT::Sandbox::User=root)
  echo "promtool not found: downloading Debian's prometheus package into $tools ..."
  if ! (cd "$download" && apt-get "${apt_opts[@]}" download prometheus); then
    # Stale or missing package lists: update them (needs root or sudo).
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
      if command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
      else
        echo "apt-get download prometheus failed; run as root (or install sudo) to update apt's lists" >&2
        exit 1
      fi
    fi
    "${sudo[@]}" apt-get update
    (cd "$download" && apt-get "${apt_opts[@]}" download prometheus)
  fi
  rm -rf "$tools"
  mkdir -p "$tools"
  dpkg -x "$download"/prometheus_*.deb "$tools"
  rm -rf "$download"
  [ -x "$tools/usr/bin/promtool" ] || { echo "no usr/bin/promtool in Debian's prometheus package" >&2; exit 1; }
}

promtool="$(find_promtool)" || { install_promtool; promtool="$(find_promtool)"; }
"$promtool" --version 2>&1 | head -n 1

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "==> promtool check rules ${rules#"$repo"/}"
"$promtool" check rules "$rules"

echo "==> promtool test rules: the alerts fire when they should"
cp "$rules" "$work/alerts.yml"
cat >"$work/alerts_test.yml" <<'TESTS'
rule_files: [alerts.yml]
evaluation_interval: 1m
tests:
  # A node that stops answering scrapes; another one that stays up.
  - interval: 1m
    input_series:
      - series: 'up{job="groupcast", instance="a:8080"}'
        values: '1 1 0 0 0 0 0'
      - series: 'up{job="groupcast", instance="b:8080"}'
        values: '1 1 1 1 1 1 1'
    alert_rule_test:
      - eval_time: 3m
        alertname: GroupcastNodeDown
        exp_alerts: []
      - eval_time: 5m
        alertname: GroupcastNodeDown
        exp_alerts:
          - exp_labels: {severity: critical, job: groupcast, instance: "a:8080"}
            exp_annotations:
              summary: "groupcast node a:8080 is down"
              description: "Prometheus has not been able to scrape a:8080 (job groupcast) for 2 minutes: the node is gone, hung or unreachable. Its clients reconnect to the other nodes."
      - eval_time: 6m
        alertname: GroupcastNoNodes
        exp_alerts: []

  # No node scraped at all.
  - interval: 1m
    input_series:
      - series: 'up{job="groupcast", instance="a:8080"}'
        values: '0x10'
    alert_rule_test:
      - eval_time: 6m
        alertname: GroupcastNoNodes
        exp_alerts:
          - exp_labels: {severity: critical}
            exp_annotations:
              summary: "no groupcast node is being scraped"
              description: "No target of job \"groupcast\" has been scraped successfully for 5 minutes: every node is down, or service discovery lost them."

  # Redis lost by one node; a flapping link on another.
  - interval: 1m
    input_series:
      - series: 'groupcast_bus_up{job="groupcast", instance="a:8080"}'
        values: '1 1 0 0 0 0'
      - series: 'groupcast_bus_up{job="groupcast", instance="b:8080"}'
        values: '1x10'
      - series: 'groupcast_redis_connection_up{job="groupcast", instance="b:8080", mode="redis", role="redis", redis="redis:6379"}'
        values: '1x20'
      - series: 'groupcast_bus_connects_total{job="groupcast", instance="b:8080"}'
        values: '1 1 2 3 4 5 6 7 8 9 10'
    alert_rule_test:
      - eval_time: 2m
        alertname: GroupcastBackendDown
        exp_alerts: []
      - eval_time: 4m
        alertname: GroupcastBackendDown
        exp_alerts:
          - exp_labels: {severity: critical, job: groupcast, instance: "a:8080"}
            exp_annotations:
              summary: "groupcast node a:8080 cannot reach Redis"
              description: "The bus of a:8080 has been disconnected from Redis for over a minute: its clients still get local messages, but nothing from or to the other nodes, and publishes fail."
      - eval_time: 10m
        alertname: GroupcastBackendReconnectStorm
        exp_alerts:
          - exp_labels: {severity: warning, job: groupcast, instance: "b:8080"}
            exp_annotations:
              summary: "groupcast node b:8080 keeps reconnecting to Redis"
              description: "b:8080 connected to Redis 9.45 times in 15 minutes: the connection keeps dropping (network, Redis restarts, client-output-buffer limits, timeouts)."

  # One connect at start-up is no storm.
  - interval: 1m
    input_series:
      - series: 'groupcast_redis_connection_up{job="groupcast", instance="a:8080", mode="redis", role="redis", redis="redis:6379"}'
        values: '1x20'
      - series: 'groupcast_bus_connects_total{job="groupcast", instance="a:8080"}'
        values: '1x20'
    alert_rule_test:
      - eval_time: 15m
        alertname: GroupcastBackendReconnectStorm
        exp_alerts: []

  # Slow clients, publish errors, auth rejections.
  - interval: 1m
    input_series:
      - series: 'groupcast_queue_full_closes_total{job="groupcast", instance="a:8080"}'
        values: '0+5x20'
      - series: 'groupcast_bus_publish_errors_total{job="groupcast", instance="a:8080"}'
        values: '0+1x20'
      - series: 'groupcast_auth_rejections_total{job="groupcast", instance="a:8080", reason="bad_signature"}'
        values: '0+600x20'
      - series: 'groupcast_queue_drops_total{job="groupcast", instance="a:8080"}'
        values: '0+100x20'
      - series: 'groupcast_messages_out_total{job="groupcast", instance="a:8080"}'
        values: '0+1000x20'
      - series: 'groupcast_queue_full_closes_total{job="groupcast", instance="b:8080"}'
        values: '0+1x20'
      - series: 'groupcast_webhook_dropped_total{job="groupcast", instance="a:8080"}'
        values: '0+2x20'
      - series: 'groupcast_webhook_attempt_failures_total{job="groupcast", instance="a:8080"}'
        values: '0+30x20'
      - series: 'groupcast_webhook_delivered_total{job="groupcast", instance="a:8080"}'
        values: '0x20'
    alert_rule_test:
      - eval_time: 15m
        alertname: GroupcastWebhookQueueOverflowing
        exp_alerts:
          - exp_labels: {severity: warning, job: groupcast, instance: "a:8080"}
            exp_annotations:
              summary: "groupcast node a:8080 drops webhook events"
              description: "10 webhook events were dropped on a:8080 in 5 minutes: the receiver (--webhook-url) is down or slower than the events, the queue (--webhook-queue) is full, or events were not taken within their maximum age. The application misses them."
      - eval_time: 15m
        alertname: GroupcastWebhookReceiverFailing
        exp_alerts:
          - exp_labels: {severity: warning, job: groupcast, instance: "a:8080"}
            exp_annotations:
              summary: "the webhook receiver of groupcast node a:8080 takes nothing"
              description: "Every webhook attempt of a:8080 has failed for 5 minutes; events wait in the queue (groupcast_webhook_queue) and are dropped once it is full."
      - eval_time: 15m
        alertname: GroupcastQueueFullSpike
        exp_alerts:
          - exp_labels: {severity: warning, job: groupcast, instance: "a:8080"}
            exp_annotations:
              summary: "groupcast node a:8080 closes many slow clients"
              description: "25 sessions on a:8080 were closed with 1013 in 5 minutes because their send queue was full: clients read too slowly for the message rate (or the node is overloaded)."
      - eval_time: 15m
        alertname: GroupcastPublishErrors
        exp_alerts:
          - exp_labels: {severity: warning, job: groupcast, instance: "a:8080"}
            exp_annotations:
              summary: "groupcast node a:8080 fails to publish to Redis"
              description: "5 publishes to the bus failed on a:8080 in the last 5 minutes, for 5 minutes: those messages did not reach the other nodes."
      - eval_time: 15m
        alertname: GroupcastAuthRejectionSpike
        exp_alerts:
          - exp_labels: {severity: warning, job: groupcast, instance: "a:8080"}
            exp_annotations:
              summary: "groupcast node a:8080 rejects many requests"
              description: "a:8080 has been refusing 10 requests or connections per second for authentication or authorisation for 10 minutes: expired or mis-signed tokens after a key rotation, a misconfigured client, or an attack. The dashboard shows them by reason."
      - eval_time: 15m
        alertname: GroupcastQueueDrops
        exp_alerts:
          - exp_labels: {severity: warning, job: groupcast, instance: "a:8080"}
            exp_annotations:
              summary: "groupcast node a:8080 drops over 1% of deliveries"
              description: "The drop-oldest queue policy dropped 10% of the messages queued on a:8080 over 10 minutes."
TESTS
(cd "$work" && "$promtool" test rules alerts_test.yml)

echo "==> dashboard ${dashboard#"$repo"/}: Grafana model, panels and PromQL"
python3 - "$dashboard" "$work/dashboard_rules.yml" <<'PY'
import json, re, sys

path, rules_out = sys.argv[1], sys.argv[2]
errors = []
with open(path) as f:
    try:
        dash = json.load(f)
    except json.JSONDecodeError as e:
        sys.exit(f"{path}: not JSON: {e}")

for key in ("title", "uid", "panels", "templating", "schemaVersion"):
    if key not in dash:
        errors.append(f"no top-level {key!r}")
if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
    errors.append(f"schemaVersion {dash.get('schemaVersion')!r}: expected a current model (>= 36)")
if dash.get("id") is not None:
    errors.append("id must be null (Grafana assigns it on import)")

variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
ds = variables.get("datasource")
if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
    errors.append("no `datasource` variable of type datasource for prometheus")
for name in ("job", "instance"):
    v = variables.get(name)
    if not v or v.get("type") != "query":
        errors.append(f"no `{name}` query variable")
    elif v.get("datasource", {}).get("uid") != "${datasource}":
        errors.append(f"variable {name}: datasource is not ${{datasource}}")

# Grafana's variables, as a plain value PromQL accepts.
def plain(expr):
    expr = expr.replace("$__rate_interval", "5m").replace("$__range", "1h").replace("$__interval", "1m")
    return re.sub(r"\$\{?(job|instance)\}?", ".*", expr)

exprs = []
for name in ("job", "instance"):
    q = variables.get(name, {}).get("query", {})
    q = q.get("query", "") if isinstance(q, dict) else q
    m = re.fullmatch(r"label_values\((.*),\s*\w+\)", q or "")
    if not m:
        errors.append(f"variable {name}: query {q!r} is not label_values(<selector>, <label>)")
    else:
        exprs.append((f"variable {name}", plain(m.group(1))))

ids, count = set(), 0
def walk(panels):
    global count
    for p in panels:
        title = p.get("title", "?")
        pid = p.get("id")
        if pid in ids:
            errors.append(f"panel {title!r}: duplicate id {pid}")
        ids.add(pid)
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in "hwxy") or g["x"] + g["w"] > 24:
            errors.append(f"panel {title!r}: bad gridPos {g}")
        if p.get("type") == "row":
            walk(p.get("panels", []))
            continue
        count += 1
        if p.get("datasource", {}).get("uid") != "${datasource}":
            errors.append(f"panel {title!r}: datasource is not ${{datasource}}")
        targets = p.get("targets") or []
        if not targets:
            errors.append(f"panel {title!r}: no targets")
        for t in targets:
            expr = t.get("expr", "").strip()
            if not expr:
                errors.append(f"panel {title!r}: target {t.get('refId')} has no expr")
                continue
            if t.get("datasource", {}).get("uid") != "${datasource}":
                errors.append(f"panel {title!r}: target {t.get('refId')} datasource is not ${{datasource}}")
            exprs.append((f"{title} / {t.get('refId')}", plain(expr)))
walk(dash.get("panels", []))
if count == 0:
    errors.append("no panels")

# Every expression as a recording rule, for promtool to parse (JSON is YAML).
rules = [{"record": f"dashboard:expr_{i}", "expr": e} for i, (_, e) in enumerate(exprs)]
with open(rules_out, "w") as f:
    json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f, indent=1)
with open(rules_out + ".names", "w") as f:
    f.write("\n".join(f"dashboard:expr_{i}: {where}" for i, (where, _) in enumerate(exprs)) + "\n")

if errors:
    sys.exit(f"{path}:\n  " + "\n  ".join(errors))
print(f"{count} panels, {len(exprs)} expressions, variables: {', '.join(variables)}")
PY
if ! "$promtool" check rules "$work/dashboard_rules.yml" >"$work/promtool.out" 2>&1; then
  cat "$work/promtool.out" >&2
  echo "(which panel each dashboard:expr_N is:)" >&2
  cat "$work/dashboard_rules.yml.names" >&2
  exit 1
fi
echo "every dashboard expression parses (promtool)"
echo "monitoring files OK"
