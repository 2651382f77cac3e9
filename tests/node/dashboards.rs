//! The Grafana dashboard (`deploy/grafana/groupcast.json`) and the
//! Prometheus alerts (`deploy/prometheus/alerts.yml`) use only metrics that
//! `/metrics` exports, and use counters under `rate()`/`increase()`.
//!
//! A node on the shared Redis, with token auth and a connection limit, is
//! given some traffic (members, a forwarded message, a refused token, a
//! refused connection) so that the labelled families (auth rejections,
//! limit rejections, Redis connections) have samples; then every
//! `groupcast_*` name in the files' PromQL must be in its `/metrics`.
//! `scripts/check-monitoring.sh` checks the files' syntax (promtool).

use std::collections::BTreeSet;
use std::path::Path;

use crate::common::redis::{TestRedis, fast_options, wait_subscribed};
use crate::common::{Client, TestServer, forwarding, http};
use groupcast::auth::{ClientAuth, GroupPatterns, KeySet, TokenVerifier, VerifyOptions};
use groupcast::{Config, Hub};
use serde_json::Value;

const DASHBOARD: &str = "deploy/grafana/groupcast.json";
const RULES: &str = "deploy/prometheus/alerts.yml";

fn read_repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {}: {e}", full.display()))
}

// ----- the PromQL in the files -----------------------------------------------------

/// Every PromQL expression in a Grafana dashboard: each `expr` (panel
/// targets) and each `query` (template variables, a string or an object
/// with its own `query`), wherever they are nested.
fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("expr" | "query" | "definition", Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, &mut out);
    out
}

/// Every `expr:` of a Prometheus rules file: inline (`expr: up == 0`,
/// quoted or not) or a block scalar (`expr: |` or `>`, and the lines
/// indented more than the key).
fn rule_exprs(yaml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let Some(value) = trimmed.strip_prefix("expr:") else {
            continue;
        };
        let indent = line.len() - trimmed.len();
        let value = value.trim();
        if value.starts_with('|') || value.starts_with('>') {
            let mut block = String::new();
            while let Some(next) = lines.peek() {
                let next_indent = next.len() - next.trim_start().len();
                if !next.trim().is_empty() && next_indent <= indent {
                    break;
                }
                block.push_str(next.trim());
                block.push('\n');
                lines.next();
            }
            out.push(block);
        } else {
            out.push(value.trim_matches(|c| c == '\'' || c == '"').to_string());
        }
    }
    out
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The `groupcast_*` metric names in a PromQL expression, each with its
/// byte offset.
fn metric_names(expr: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(found) = expr[from..].find("groupcast_") {
        let start = from + found;
        let end = expr[start..]
            .find(|c: char| !is_name_char(c))
            .map_or(expr.len(), |n| start + n);
        let preceded = expr[..start].chars().next_back().is_some_and(is_name_char);
        if !preceded {
            out.push((start, &expr[start..end]));
        }
        from = end;
    }
    out
}

/// The function whose parentheses directly enclose byte `at` of `expr`
/// (`rate` in `sum(rate(x[5m]))`), if any.
fn enclosing_function(expr: &str, at: usize) -> Option<&str> {
    let mut depth = 0usize;
    for (i, c) in expr[..at].char_indices().rev() {
        match c {
            ')' => depth += 1,
            '(' if depth > 0 => depth -= 1,
            '(' => {
                let before = expr[..i].trim_end();
                let start = before
                    .rfind(|c: char| !is_name_char(c))
                    .map_or(0, |n| n + 1);
                return Some(&before[start..]);
            }
            _ => {}
        }
    }
    None
}

// ----- what /metrics exports -------------------------------------------------------

/// The sample names a Prometheus text exposition exports, and which of them
/// are counters. Names come from the samples and from the `# TYPE` lines
/// (a counter `x` is sampled as `x_total`, a histogram as `x_bucket`,
/// `x_sum` and `x_count`).
struct Exported {
    names: BTreeSet<String>,
    counters: BTreeSet<String>,
}

fn exported(exposition: &str) -> Exported {
    let mut names = BTreeSet::new();
    let mut counters = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            match kind {
                "counter" => {
                    let sample = if name.ends_with("_total") {
                        name.to_string()
                    } else {
                        format!("{name}_total")
                    };
                    counters.insert(sample.clone());
                    names.insert(sample);
                }
                "histogram" | "gaugehistogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
                "summary" => {
                    for suffix in ["", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
                "info" => {
                    names.insert(format!("{name}_info"));
                }
                _ => {
                    names.insert(name.to_string());
                }
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    Exported { names, counters }
}

/// What is wrong with `exprs` (each with where it comes from) against
/// `exported`: names not exported, counters not under `rate`, `irate` or
/// `increase`. Empty when all is well.
fn problems(exprs: &[(String, String)], exported: &Exported) -> Vec<String> {
    let mut out = Vec::new();
    for (whence, expr) in exprs {
        for (at, name) in metric_names(expr) {
            if !exported.names.contains(name) {
                out.push(format!(
                    "{whence}: {name} is not exported by /metrics (in `{expr}`)"
                ));
            } else if exported.counters.contains(name) {
                let function = enclosing_function(expr, at);
                if !matches!(function, Some("rate" | "irate" | "increase")) {
                    out.push(format!(
                        "{whence}: the counter {name} is not under rate() or increase() (in `{expr}`)"
                    ));
                }
            }
        }
    }
    out
}

/// The expressions of both files, each with its file.
fn repo_exprs() -> Vec<(String, String)> {
    let dashboard: Value = serde_json::from_str(&read_repo_file(DASHBOARD))
        .unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"));
    let from_dashboard = dashboard_exprs(&dashboard)
        .into_iter()
        .map(|e| (DASHBOARD.to_string(), e));
    let from_rules = rule_exprs(&read_repo_file(RULES))
        .into_iter()
        .map(|e| (RULES.to_string(), e));
    from_dashboard.chain(from_rules).collect()
}

// ----- the tests -------------------------------------------------------------------

/// A node with Redis, token auth (anonymous publishing in `dashboards/*`)
/// and room for two connections; traffic that gives every family a sample.
async fn node_with_traffic() -> TestServer {
    let redis = TestRedis::shared();
    let mut keys = KeySet::new();
    keys.add_secret(Some("dash".into()), b"dashboards-test-secret-0123456789")
        .unwrap();
    let auth = ClientAuth::with_tokens(TokenVerifier::new(keys, VerifyOptions::default()))
        .anonymous_groups(GroupPatterns::parse(["dashboards/*"]).unwrap())
        .anonymous_publish(true);
    let hub = forwarding(Hub::builder())
        .node_id("node-dashboards")
        .client_auth(auth)
        .config(Config {
            max_connections: 2,
            ..Config::default()
        })
        .backend(fast_options(redis.url()))
        .build()
        .expect("build a hub");
    let server = TestServer::start(hub).await;

    // A group outside the anonymous ones, without a token: refused by auth.
    let refused = Client::refused(&server.ws_url("dashboards-private")).await;
    assert_eq!(refused.status, 401, "{:?}", refused.body);

    let mut a = server.connect("dashboards/room").await;
    let mut b = server.connect("dashboards/room").await;
    wait_subscribed(&[&server], "group:dashboards/room").await;
    a.send_text("hello").await;
    assert_eq!(b.recv_text().await, "hello");
    assert_eq!(a.recv_text().await, "hello");

    // A third connection: refused by the limit.
    let refused = Client::refused(&server.ws_url("dashboards/room")).await;
    assert_eq!(refused.status, 503, "{:?}", refused.body);
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_the_alerts_use_is_exported() {
    let server = node_with_traffic().await;
    let exposition = http::get_text(&server.http_url("/metrics")).await;
    let exported = exported(&exposition);
    for family in [
        "groupcast_auth_rejections_total",
        "groupcast_limit_rejections_total",
        "groupcast_redis_connection_up",
    ] {
        assert!(
            exported.names.contains(family),
            "the traffic gives {family} a sample:\n{exposition}"
        );
    }

    let exprs = repo_exprs();
    let used: BTreeSet<&str> = exprs
        .iter()
        .flat_map(|(_, e)| metric_names(e).into_iter().map(|(_, name)| name))
        .collect();
    // Not vacuous: the files were read and their names found.
    assert!(
        used.len() >= 20,
        "only {} groupcast_* names found in {DASHBOARD} and {RULES}: {used:?}",
        used.len()
    );
    let problems = problems(&exprs, &exported);
    assert!(
        problems.is_empty(),
        "{} problem(s):\n  {}\nexported: {:?}",
        problems.len(),
        problems.join("\n  "),
        exported.names
    );
}

/// The check fails on what it should: a name /metrics does not export (a
/// plausible one, a counter without its `_total`), and a counter not under
/// `rate()`; both file formats are read.
#[test]
fn the_check_catches_unexported_names_and_bare_counters() {
    let exposition = "\
# HELP groupcast_bus_connects Times the bus connected to Redis.
# TYPE groupcast_bus_connects counter
groupcast_bus_connects_total 3
# HELP groupcast_bus_up 1 while the bus reaches Redis.
# TYPE groupcast_bus_up gauge
groupcast_bus_up 1
# HELP groupcast_auth_rejections Requests refused by security.
# TYPE groupcast_auth_rejections counter
# EOF
";
    let exported = exported(exposition);
    let rules = "\
groups:
  - name: test
    rules:
      - alert: Fine
        expr: groupcast_bus_up == 0
      - alert: AlsoFine
        expr: |
          sum by (instance) (increase(groupcast_bus_connects_total[15m]))
            > 3 * count by (instance) (groupcast_auth_rejections_total)
      - alert: Webhooks
        expr: 'groupcast_webhook_queue_length > 100'
      - alert: NoTotal
        expr: >
          rate(groupcast_bus_connects[5m]) > 1
        for: 5m
";
    let dashboard = serde_json::json!({
        "templating": {"list": [{"query": {"query": "label_values(groupcast_bus_up, instance)"}}]},
        "panels": [{"targets": [
            {"expr": "sum(rate(groupcast_bus_connects_total{instance=~\"$instance\"}[$__rate_interval]))"},
            {"expr": "groupcast_bus_connects_total"},
        ]}],
    });
    let mut exprs: Vec<(String, String)> = rule_exprs(rules)
        .into_iter()
        .map(|e| ("rules".to_string(), e))
        .collect();
    assert_eq!(exprs.len(), 4, "{exprs:?}");
    assert!(exprs[1].1.contains("increase(") && exprs[1].1.contains("> 3"));
    exprs.extend(
        dashboard_exprs(&dashboard)
            .into_iter()
            .map(|e| ("dashboard".to_string(), e)),
    );
    assert_eq!(exprs.len(), 7, "{exprs:?}");

    let found = problems(&exprs, &exported);
    let expected = [
        "rules: the counter groupcast_auth_rejections_total is not under",
        "rules: groupcast_webhook_queue_length is not exported",
        "rules: groupcast_bus_connects is not exported",
        "dashboard: the counter groupcast_bus_connects_total is not under",
    ];
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    for (problem, start) in found.iter().zip(expected) {
        assert!(problem.starts_with(start), "{problem:?} vs {start:?}");
    }
    // And nothing is found where nothing is wrong.
    let fine: Vec<_> = exprs
        .iter()
        .filter(|(_, e)| e.contains("groupcast_bus_up") || e.starts_with("sum(rate("))
        .cloned()
        .collect();
    assert_eq!(fine.len(), 3, "{fine:?}");
    assert!(problems(&fine, &exported).is_empty(), "{fine:?}");
}
