//! The OpenAPI description at `/api/openapi.json` against the node that
//! serves it: every described operation is served (and no other method
//! on its path), the full router gets routes only with their description,
//! and every response a live node gives — to valid and invalid requests
//! alike — has a described status and a body that validates against the
//! described schema (the spec's own components, by `jsonschema`, with
//! every object closed so that an undescribed field fails too).
//!
//! The external checks (`openapi-spec-validator`, schemathesis) are
//! `scripts/check-openapi.sh`.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::common::{Client, TestServer};
use groupcast::auth::{ApiKeys, GroupPatterns};
use groupcast::history::HistoryPolicy;
use groupcast::server::ServerOptions;
use groupcast::{Config, Hub};
use serde_json::{Value, json};

const API_KEY: &str = "openapi-test-key-0123456789";

/// The largest API body the node takes here (small, to show the 413).
const MAX_BODY: usize = 1024;

/// A node with an API key, presence on `p/*` and history on `h/*`, and
/// its description as served (no key needed for that).
async fn described_node() -> (TestServer, Value) {
    let config = Config {
        presence: GroupPatterns::parse(["p/*"]).unwrap(),
        history: HistoryPolicy::parse(["h/*=100:1h"]).unwrap(),
        ..Config::default()
    };
    let options = ServerOptions {
        api_keys: Arc::new(ApiKeys::new([API_KEY]).unwrap()),
        api_max_body: MAX_BODY,
        ..ServerOptions::default()
    };
    let server =
        TestServer::start_with(Hub::builder().config(config).build().unwrap(), options).await;
    let response = reqwest::get(server.http_url("/api/openapi.json"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let spec: Value = response.json().await.unwrap();
    assert_eq!(spec["openapi"], "3.1.0");
    (server, spec)
}

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// Every (method, path template) the description lists.
fn operations(spec: &Value) -> BTreeSet<(String, String)> {
    let paths = spec["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|method| item.get(**method).is_some())
                .map(move |method| (method.to_string(), path.clone()))
        })
        .collect()
}

/// A template made a request path (`{group}` a slashed group, to show
/// that both forms are served).
fn concrete(template: &str) -> String {
    template.replace("{group}", "p/room")
}

fn request(method: &str, url: &str) -> reqwest::RequestBuilder {
    let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    reqwest::Client::new()
        .request(method, url)
        .bearer_auth(API_KEY)
}

/// The error code of a JSON error body, if it is one.
async fn error_code(response: reqwest::Response) -> Option<String> {
    let body: Value = response.json().await.ok()?;
    body["error"].as_str().map(str::to_owned)
}

/// Each described operation reaches a handler (not the router's
/// `no_route` or `method_not_allowed`), and every other method on a
/// described path is a 405: the description lists no route the node
/// lacks, and hides no method of the paths it lists.
#[tokio::test]
async fn every_described_operation_is_served_and_no_other_method() {
    let (server, spec) = described_node().await;
    let described = operations(&spec);
    assert!(described.len() >= 19, "{described:?}");
    // Operation ids name one operation each (code generators need it).
    let ids: Vec<&str> = described
        .iter()
        .map(|(method, path)| spec["paths"][path][method]["operationId"].as_str().unwrap())
        .collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
    for (method, template) in &described {
        let url = server.http_url(&concrete(template));
        // Headers only: an event stream would never end.
        let response = request(method, &url).send().await.unwrap();
        let status = response.status().as_u16();
        let code = if status == 404 || status == 405 {
            error_code(response).await
        } else {
            None
        };
        assert!(
            !matches!(code.as_deref(), Some("no_route" | "method_not_allowed")),
            "{method} {template} is described but not served: {status} {code:?}"
        );
    }
    let paths: BTreeSet<&String> = described.iter().map(|(_, path)| path).collect();
    for path in paths {
        for method in METHODS {
            if described.contains(&(method.to_string(), path.clone())) {
                continue;
            }
            let url = server.http_url(&concrete(path));
            let response = request(method, &url).send().await.unwrap();
            assert_eq!(response.status(), 405, "{method} {path}");
            assert_eq!(
                error_code(response).await.as_deref(),
                Some("method_not_allowed")
            );
        }
    }
    // A path that is nobody's: the router's JSON 404.
    let response = request("get", &server.http_url("/api/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(error_code(response).await.as_deref(), Some("no_route"));
}

/// The other direction: a route cannot be served undescribed, because the
/// full router takes routes only as `.routes(routes!(handler))` (which
/// adds the handler's description) — there is no plain `.route(…)` in
/// the library outside `ws_router`, the hub's bare WebSocket/SSE routes
/// for embedding in an application's own router (not the node's). This
/// reads the sources, so that adding one fails here rather than leaving
/// a route out of `/api/openapi.json`.
#[test]
fn the_full_router_takes_routes_only_with_their_description() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![root];
    let mut plain = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // `ws_router`'s body, the one place plain routes are allowed.
            let allowed = text.find("pub fn ws_router").map(|start| {
                let end = start + text[start..].find("\n}\n").unwrap_or(0);
                start..end
            });
            for call in [".route(", ".route_service(", ".nest(", ".nest_service("] {
                for (at, _) in text.match_indices(call) {
                    let line = text[..at].lines().count();
                    let in_comment = text[..at]
                        .rsplit('\n')
                        .next()
                        .is_some_and(|l| l.trim_start().starts_with("//"));
                    if !in_comment && !allowed.as_ref().is_some_and(|a| a.contains(&at)) {
                        plain.push(format!("{}:{line}: {call}", path.display()));
                    }
                }
            }
        }
    }
    assert!(
        plain.is_empty(),
        "routes added without a description (use `.routes(routes!(handler))` with a \
         `#[utoipa::path]` on the handler): {plain:#?}"
    );
}

/// `schema` made strict for the check: every object schema that lists
/// its properties gets `additionalProperties: false` (unless it says
/// otherwise), so a field the handler sends but the description omits
/// fails validation.
fn closed(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), json!(false));
            }
            map.values_mut().for_each(closed);
        }
        Value::Array(items) => items.iter_mut().for_each(closed),
        _ => {}
    }
}

/// Checks one response against the description: its status is described
/// for the operation, its content type is one described for that status,
/// and a JSON body validates against the described schema.
fn check(spec: &Value, method: &str, template: &str, status: u16, content_type: &str, body: &[u8]) {
    let what = format!(
        "{} {template} answered {status} {content_type} {}",
        method.to_uppercase(),
        String::from_utf8_lossy(&body[..body.len().min(300)])
    );
    let operation = &spec["paths"][template][method];
    assert!(operation.is_object(), "{what}: no such operation described");
    let described = &operation["responses"][status.to_string()];
    assert!(
        described.is_object(),
        "{what}: this status is not described"
    );
    let Some(contents) = described.get("content").and_then(Value::as_object) else {
        assert!(body.is_empty(), "{what}: described without a body");
        return;
    };
    let mime = content_type.split(';').next().unwrap_or("").trim();
    let (_, content) = contents
        .iter()
        .find(|(described, _)| described.split(';').next().unwrap_or("").trim() == mime)
        .unwrap_or_else(|| panic!("{what}: content type not described ({contents:?})"));
    if mime != "application/json" {
        return;
    }
    let instance: Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut schema = content["schema"].clone();
    let Some(object) = schema.as_object_mut() else {
        panic!("{what}: no schema");
    };
    object.insert(
        "$schema".into(),
        json!("https://json-schema.org/draft/2020-12/schema"),
    );
    // `#/components/schemas/…` resolves against the schema's own root.
    object.insert("components".into(), spec["components"].clone());
    closed(&mut schema);
    if let Err(error) = jsonschema::validate(&schema, &instance) {
        panic!(
            "{what}: does not match its schema: {error} at {}",
            error.instance_path()
        );
    }
}

/// One request of the tour below.
struct Case {
    method: &'static str,
    template: &'static str,
    path: String,
    key: Option<&'static str>,
    content_type: Option<&'static str>,
    body: Vec<u8>,
}

fn get(template: &'static str, path: &str) -> Case {
    Case {
        method: "get",
        template,
        path: path.to_string(),
        key: Some(API_KEY),
        content_type: None,
        body: Vec::new(),
    }
}

fn post(path: &str, content_type: &'static str, body: impl Into<Vec<u8>>) -> Case {
    Case {
        method: "post",
        template: "/api/groups/{group}/messages",
        path: path.to_string(),
        key: Some(API_KEY),
        content_type: Some(content_type),
        body: body.into(),
    }
}

/// A POST of `body` as JSON to `path` of the operation `template`.
fn post_json(template: &'static str, path: &str, body: &str) -> Case {
    Case {
        template,
        content_type: Some("application/json"),
        ..post(path, "application/json", body)
    }
}

impl Case {
    fn key(mut self, key: Option<&'static str>) -> Case {
        self.key = key;
        self
    }
}

/// Every described operation, called on a live node with valid and
/// invalid inputs: each answer's status is described and its body matches
/// the schema described for it. Every operation gets at least one call,
/// so a new route fails here until it has one.
#[tokio::test]
async fn every_response_is_described_and_matches_its_schema() {
    let (server, spec) = described_node().await;
    // Sessions for the views to show: in a presence group, a history
    // group and a plain one.
    let _member = Client::connect(&server.ws_url("p/room")).await;
    let _logger = Client::connect(&server.ws_url("h/log")).await;
    let _plain = Client::connect(&server.ws_url("g")).await;
    // One more, to be disconnected by id.
    let _leaving = Client::connect(&server.ws_url("bye")).await;
    let listed: Value = reqwest::Client::new()
        .get(server.http_url("/api/groups/bye"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let leaving_id = listed["sessions"][0]["id"].as_str().unwrap().to_string();

    let too_big = vec![b'x'; MAX_BODY * 2];
    let cases = vec![
        // Publishing: every kind of body, and every bad one.
        post("/api/groups/g/messages", "text/plain", "hello"),
        post(
            "/api/groups/p/room/messages",
            "application/json",
            r#"{"a":1}"#,
        ),
        post("/api/groups/h%2Flog/messages", "text/plain", "kept"),
        post(
            "/api/groups/h/log/messages",
            "application/octet-stream",
            vec![0, 159, 146, 150],
        ),
        post("/api/groups/g/messages", "text/plain", ""),
        post("/api/groups/g/messages", "text/plain", vec![0xff, 0xfe]),
        post("/api/groups/g/messages", "application/json", "{nope"),
        post("/api/groups/g/messages", "image/png", "x"),
        post("/api/groups/g/messages", "text/plain", too_big),
        post("/api/groups/a%20b/messages", "text/plain", "x"),
        post("/api/groups/g/messages", "text/plain", "x").key(None),
        // Groups.
        get("/api/groups", "/api/groups"),
        get("/api/groups", "/api/groups").key(Some("not-the-key-0123456789")),
        get("/api/groups/{group}", "/api/groups/p/room"),
        get("/api/groups/{group}", "/api/groups/g"),
        get("/api/groups/{group}", "/api/groups/a..b/../c"),
        get("/api/groups/{group}", "/api/groups/%FF"),
        // History.
        get("/api/groups/{group}/history", "/api/groups/h/log/history"),
        get(
            "/api/groups/{group}/history",
            "/api/groups/h/log/history?since=1&limit=1",
        ),
        get(
            "/api/groups/{group}/history",
            "/api/groups/h/log/history?since=x",
        ),
        get(
            "/api/groups/{group}/history",
            "/api/groups/h/log/history?limit=0",
        ),
        get("/api/groups/{group}/history", "/api/groups/g/history"),
        // Presence.
        get("/api/groups/{group}/members", "/api/groups/p/room/members"),
        get(
            "/api/groups/{group}/members",
            "/api/groups/p/room/members?limit=1",
        ),
        get(
            "/api/groups/{group}/members",
            "/api/groups/p/room/members?limit=0",
        ),
        get(
            "/api/groups/{group}/members",
            "/api/groups/p/room/members?cursor=%21",
        ),
        get("/api/groups/{group}/members", "/api/groups/g/members"),
        get("/api/groups/{group}/users", "/api/groups/p/room/users"),
        get("/api/groups/{group}/users", "/api/groups/g/users"),
        get("/api/groups/{group}/users", "/api/groups/p/room/users").key(None),
        // The cluster and the node.
        get("/api/nodes", "/api/nodes"),
        get("/api/workers", "/api/workers"),
        get("/api/info", "/api/info"),
        get("/api/info", "/api/info").key(None),
        get("/debug/state", "/debug/state"),
        get("/debug/state", "/debug/state").key(None),
        get("/healthz", "/healthz").key(None),
        get("/readyz", "/readyz").key(None),
        get("/metrics", "/metrics").key(None),
        get("/api/openapi.json", "/api/openapi.json").key(None),
        get("/", "/").key(None),
        get("/clients/groupcast.js", "/clients/groupcast.js").key(None),
        // The transports, refused before any stream (a 101 is below).
        get("/ws/", "/ws/").key(None),
        get("/ws/{group}", "/ws/g").key(None),
        get("/ws/{group}", "/ws/a%20b").key(None),
        get("/ws/{group}", "/ws/g?history=lots").key(None),
        get("/sse/", "/sse/").key(None),
        get("/sse/{group}", "/sse/a%20b").key(None),
        get("/sse/{group}", "/sse/h/log?since=x").key(None),
        get("/ws", "/ws").key(None),
        get("/ws", "/ws?history=5").key(None),
        // The admin page: with the key, and the challenge without.
        get("/admin", "/admin"),
        get("/admin", "/admin").key(None),
        // Disconnects: one that closes a session, and every refusal.
        post_json(
            "/api/sessions/{id}/disconnect",
            &format!("/api/sessions/{leaving_id}/disconnect"),
            r#"{"reason":"bye"}"#,
        ),
        post_json(
            "/api/sessions/{id}/disconnect",
            "/api/sessions/nosuch/disconnect",
            "",
        ),
        post_json(
            "/api/sessions/{id}/disconnect",
            "/api/sessions/nosuch/disconnect",
            r#"{"code":1}"#,
        ),
        post_json(
            "/api/users/{sub}/disconnect",
            "/api/users/nobody/disconnect",
            "",
        ),
        post_json(
            "/api/users/{sub}/disconnect",
            "/api/users/org/nobody/disconnect",
            r#"{"reconnect":"no"}"#,
        ),
        post_json(
            "/api/users/{sub}/disconnect",
            "/api/users/nobody/disconnect",
            "",
        )
        .key(None),
    ];
    let mut called: BTreeSet<(String, String)> = BTreeSet::new();
    let client = reqwest::Client::new();
    for case in cases {
        let url = server.http_url(&case.path);
        let mut request = client.request(
            reqwest::Method::from_bytes(case.method.to_uppercase().as_bytes()).unwrap(),
            &url,
        );
        if let Some(key) = case.key {
            request = request.bearer_auth(key);
        }
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.body(case.body).send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = response.bytes().await.unwrap();
        check(
            &spec,
            case.method,
            case.template,
            status,
            &content_type,
            &body,
        );
        called.insert((case.method.to_string(), case.template.to_string()));
    }

    // An event stream: its status and type (its body never ends).
    let response = client
        .get(server.http_url("/sse/h/log"))
        .send()
        .await
        .unwrap();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    check(
        &spec,
        "get",
        "/sse/{group}",
        response.status().as_u16(),
        &content_type,
        b"",
    );
    called.insert(("get".into(), "/sse/{group}".into()));
    drop(response);
    // A WebSocket upgrade: 101, no body.
    let (_socket, response) = tokio_tungstenite::connect_async(server.ws_url("p/room"))
        .await
        .unwrap();
    check(
        &spec,
        "get",
        "/ws/{group}",
        response.status().as_u16(),
        "",
        b"",
    );

    let uncalled: Vec<_> = operations(&spec).difference(&called).cloned().collect();
    assert!(
        uncalled.is_empty(),
        "operations this test never calls: {uncalled:?}"
    );
}

/// The check itself: a body with an undescribed field, a field of the
/// wrong type, a missing field or an undescribed status is refused (so
/// the tour above passing means something).
#[tokio::test]
async fn the_check_refuses_what_the_description_does_not_say() {
    let (_server, spec) = described_node().await;
    let json = "application/json";
    let good = br#"{"node":"n","nodes":1,"groups":[{"name":"g","members":2,"nodes":{"n":2}}]}"#;
    check(&spec, "get", "/api/groups", 200, json, good);
    for (status, body) in [
        (
            200,
            &br#"{"node":"n","nodes":1,"groups":[],"extra":true}"#[..],
        ),
        (200, br#"{"node":"n","nodes":"one","groups":[]}"#),
        (200, br#"{"node":"n","groups":[]}"#),
        (
            200,
            br#"{"node":"n","nodes":1,"groups":[{"name":"g","members":-1,"nodes":{}}]}"#,
        ),
        (503, br#"{"error":"bus_unavailable"}"#),
        (418, br#"{"error":"teapot","message":"no"}"#),
    ] {
        let refused =
            std::panic::catch_unwind(|| check(&spec, "get", "/api/groups", status, json, body));
        assert!(
            refused.is_err(),
            "{status} {}",
            String::from_utf8_lossy(body)
        );
    }
}
