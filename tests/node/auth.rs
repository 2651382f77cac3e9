//! Authentication and authorisation, end to end: real WebSocket clients
//! over loopback against in-process servers (and the spawned binary), each
//! rejection checked with its exact status or close code (401/403 before
//! the upgrade; 1008 for a publish without permission, 4001 at token
//! expiry, 4003 for a bad refresh after it), and the right credentials
//! shown to work: tokens of every key type, JWKS rotation, anonymous
//! groups, refresh, API keys, Origin, CORS, the admin listener, the
//! `token` subcommand — standalone and in a cluster over an ACL-protected
//! Redis.
//!
//! Keys in `tests/fixtures/security/` are test-only (see its README).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common;
use crate::common::node::NodeProcess;
use crate::common::redis::{TestRedis, fast_options};
use crate::common::silence::marker_is_next;
use crate::common::{Client, Refused, TestServer, http as http_json, wait_until, wait_until_async};
use futures_util::SinkExt;
use groupcast::auth::{
    ApiKeys, ClientAuth, CorsPolicy, GroupPatterns, KeySet, OriginPolicy, TokenClaims,
    TokenVerifier, VerifyOptions,
};
use groupcast::server::{self, ServerOptions};
use groupcast::{Hub, close_code};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;

// ----- keys and tokens ------------------------------------------------------------

const SECRET: &[u8] = b"security-test-secret-0123456789abcdef";
const API_KEY: &str = "test-api-key-0123456789";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/security")
        .join(name)
}

fn read_fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).expect("read a key fixture")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The server's keys: an HS256 secret (`hs1`), an RSA key (`rsa1`) and an
/// EC P-256 key (`ec1`).
fn key_set() -> KeySet {
    let mut keys = KeySet::new();
    keys.add_secret(Some("hs1".into()), SECRET).unwrap();
    keys.add_public_key_file(Some("rsa1".into()), &fixture("rsa-public.pem"))
        .unwrap();
    keys.add_public_key_file(Some("ec1".into()), &fixture("ec-public.pem"))
        .unwrap();
    keys
}

/// Token mode over [`key_set`], no leeway (so expiry tests are exact).
fn token_auth() -> ClientAuth {
    ClientAuth::with_tokens(TokenVerifier::new(
        key_set(),
        VerifyOptions {
            leeway: Duration::ZERO,
            ..VerifyOptions::default()
        },
    ))
}

fn claims(sub: &str, groups: &[&str], publish: bool, ttl_secs: i64) -> TokenClaims {
    TokenClaims {
        sub: sub.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        publish,
        presence: true,
        exp: (now() as i64 + ttl_secs) as u64,
        nbf: None,
        iss: None,
        aud: None,
        iat: Some(now()),
    }
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &TokenClaims, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, key).expect("sign a test token")
}

fn hs256(claims: &TokenClaims) -> String {
    sign(
        Algorithm::HS256,
        Some("hs1"),
        claims,
        &EncodingKey::from_secret(SECRET),
    )
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&read_fixture("rsa-private.pem")).expect("RSA fixture")
}

fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(&read_fixture("ec-private.pem")).expect("EC fixture")
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with `alg: none` and no signature, as an attacker would send it.
fn unsigned(header: Value, claims: &TokenClaims) -> String {
    format!(
        "{}.{}.",
        b64(header.to_string().as_bytes()),
        b64(serde_json::to_string(claims).unwrap().as_bytes())
    )
}

// ----- servers and clients ---------------------------------------------------------

/// A hub with `auth` and the binary's forwarder: what a client sends goes
/// to its whole group.
fn hub_with(auth: ClientAuth) -> Hub {
    Hub::builder()
        .client_auth(auth)
        .on_text(|hub, session, text| {
            let _ = hub.to(session.group()).send(text);
        })
        .build()
        .expect("build a hub")
}

fn secured_options() -> ServerOptions {
    ServerOptions {
        api_keys: Arc::new(ApiKeys::new([API_KEY]).unwrap()),
        ..ServerOptions::default()
    }
}

async fn secured_server(auth: ClientAuth) -> TestServer {
    TestServer::start_with(hub_with(auth), secured_options()).await
}

/// Expects the upgrade to be refused with `status` and error code `code`,
/// before any session exists.
async fn expect_refused(
    server: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
    status: u16,
    code: &str,
) -> Refused {
    let url = format!("ws://{}{}", server.addr, path);
    let opened = server.hub.metrics().connections_opened.get();
    let refused = match Client::try_connect(&url, headers).await {
        Ok(_) => panic!("{path}: expected {status} {code}, but the upgrade succeeded"),
        Err(refused) => refused,
    };
    assert_eq!(refused.status, status, "{path}: {:?}", refused.body);
    assert_eq!(refused.body["error"], code, "{path}: {:?}", refused.body);
    assert!(
        refused.body["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "a clear message: {:?}",
        refused.body
    );
    assert_eq!(
        server.hub.metrics().connections_opened.get(),
        opened,
        "no session was created"
    );
    refused
}

/// [`expect_refused`] for `token` in the query of `path` (`?token=`, as a
/// browser sends it).
async fn expect_token_refused(
    server: &TestServer,
    path: &str,
    token: &str,
    status: u16,
    code: &str,
) -> Refused {
    expect_refused(server, &format!("{path}?token={token}"), &[], status, code).await
}

/// Connects with `token` in the Authorization header and waits until the
/// hub has registered the session.
async fn connect_bearer(server: &TestServer, group: &str, token: &str) -> Client {
    let bearer = format!("Bearer {token}");
    server
        .connect_admitted(&server.ws_url(group), &[("authorization", &bearer)])
        .await
}

/// Connects with `?token=`, as a browser would.
async fn connect_query(server: &TestServer, group: &str, token: &str) -> Client {
    let url = format!("{}?token={token}", server.ws_url(group));
    server.connect_admitted(&url, &[]).await
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// `GET url`, with `api_key` as its Bearer token if given; the response,
/// whatever its status. Panics when nothing answers.
async fn get(url: impl reqwest::IntoUrl, api_key: Option<&str>) -> reqwest::Response {
    let mut request = http().get(url);
    if let Some(key) = api_key {
        request = request.bearer_auth(key);
    }
    request.send().await.expect("an answer to GET")
}

/// Publishes `text` to `group` through the API, with the API key.
async fn api_publish(addr: SocketAddr, group: &str, text: &str) {
    let response = http()
        .post(format!("http://{addr}/api/groups/{group}/messages"))
        .bearer_auth(API_KEY)
        .header("content-type", "text/plain")
        .body(text.to_string())
        .send()
        .await
        .expect("POST to the API");
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
}

// ----- rejections before the upgrade ---------------------------------------------

#[tokio::test]
async fn no_token_is_401_before_the_upgrade() {
    let server = secured_server(token_auth()).await;
    let refused = expect_refused(&server, "/ws/chat", &[], 401, "token_missing").await;
    assert_eq!(
        refused.header("www-authenticate").as_deref(),
        Some("Bearer")
    );
    // Neither an empty query token nor a non-Bearer header counts as a token.
    expect_refused(&server, "/ws/chat?token=", &[], 401, "token_missing").await;
    expect_refused(
        &server,
        "/ws/chat",
        &[("authorization", "Basic dXNlcjpwYXNz")],
        401,
        "bad_authorization_header",
    )
    .await;
    let metrics = server.hub.metrics().render();
    assert!(
        metrics.contains("groupcast_auth_rejections_total{reason=\"token_missing\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_bad_signature_is_401() {
    let server = secured_server(token_auth()).await;
    let forged = sign(
        Algorithm::HS256,
        Some("hs1"),
        &claims("alice", &["chat"], true, 60),
        &EncodingKey::from_secret(b"not-the-server-secret-0123456789abcdef"),
    );
    let refused = expect_token_refused(&server, "/ws/chat", &forged, 401, "bad_signature").await;
    assert_eq!(
        refused.header("www-authenticate").as_deref(),
        Some("Bearer error=\"invalid_token\"")
    );
    // A token tampered with after signing: the payload changed, the
    // signature did not.
    let good = hs256(&claims("alice", &["chat"], false, 60));
    let mut parts: Vec<&str> = good.split('.').collect();
    let upgraded = b64(serde_json::to_string(&claims("alice", &["**"], true, 60))
        .unwrap()
        .as_bytes());
    parts[1] = &upgraded;
    let tampered = parts.join(".");
    expect_token_refused(&server, "/ws/admin", &tampered, 401, "bad_signature").await;
}

#[tokio::test]
async fn wrong_algorithms_are_401_including_alg_none() {
    let server = secured_server(token_auth()).await;
    let c = claims("mallory", &["chat"], true, 60);
    // alg none, with and without a kid, in the header and in the query.
    for header in [
        json!({"alg": "none", "kid": "hs1"}),
        json!({"alg": "none"}),
        json!({"alg": "NONE", "typ": "JWT"}),
    ] {
        let token = unsigned(header, &c);
        let refused = expect_refused(
            &server,
            "/ws/chat",
            &[("authorization", &format!("Bearer {token}"))],
            401,
            "algorithm_not_allowed",
        )
        .await;
        assert!(
            refused.body["message"].as_str().unwrap().contains("none"),
            "{:?}",
            refused.body
        );
        expect_token_refused(&server, "/ws/chat", &token, 401, "algorithm_not_allowed").await;
    }
    // Algorithm confusion: HS256 "signed" with the RSA *public* key as the
    // HMAC secret, naming the RSA key.
    let public_pem = read_fixture("rsa-public.pem");
    let confused = sign(
        Algorithm::HS256,
        Some("rsa1"),
        &c,
        &EncodingKey::from_secret(&public_pem),
    );
    expect_token_refused(&server, "/ws/chat", &confused, 401, "algorithm_not_allowed").await;
    // The same without a kid: only HS256 keys are tried, and the RSA public
    // key is not one of them.
    let confused = sign(
        Algorithm::HS256,
        None,
        &c,
        &EncodingKey::from_secret(&public_pem),
    );
    expect_token_refused(&server, "/ws/chat", &confused, 401, "bad_signature").await;
    // A real RS256 signature presented under the HS256 key's kid.
    let wrong_kid = sign(Algorithm::RS256, Some("hs1"), &c, &rsa_key());
    expect_token_refused(
        &server,
        "/ws/chat",
        &wrong_kid,
        401,
        "algorithm_not_allowed",
    )
    .await;
    // An algorithm groupcast does not accept at all, even with a good secret.
    let hs512 = sign(
        Algorithm::HS512,
        Some("hs1"),
        &c,
        &EncodingKey::from_secret(SECRET),
    );
    expect_token_refused(&server, "/ws/chat", &hs512, 401, "algorithm_not_allowed").await;
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_401() {
    let server = secured_server(token_auth()).await;
    let expired = hs256(&claims("alice", &["chat"], true, -30));
    expect_token_refused(&server, "/ws/chat", &expired, 401, "token_expired").await;
    let mut early = claims("alice", &["chat"], true, 120);
    early.nbf = Some(now() + 60);
    let early = hs256(&early);
    expect_token_refused(&server, "/ws/chat", &early, 401, "token_not_yet_valid").await;
}

#[tokio::test]
async fn an_unknown_kid_is_401() {
    let server = secured_server(token_auth()).await;
    let token = sign(
        Algorithm::HS256,
        Some("retired-key"),
        &claims("alice", &["chat"], true, 60),
        &EncodingKey::from_secret(SECRET),
    );
    let refused = expect_token_refused(&server, "/ws/chat", &token, 401, "unknown_kid").await;
    assert!(
        refused.body["message"]
            .as_str()
            .unwrap()
            .contains("retired-key")
    );
}

#[tokio::test]
async fn a_group_outside_the_grant_is_403() {
    let server = secured_server(token_auth()).await;
    let token = hs256(&claims("alice", &["chat", "task/*"], true, 60));
    for path in ["/ws/admin", "/ws/task", "/ws/task/1/secrets", "/ws/chatter"] {
        let refused = expect_refused(
            &server,
            &format!("{path}?token={token}"),
            &[],
            403,
            "group_not_allowed",
        )
        .await;
        assert!(refused.header("www-authenticate").is_none());
    }
    // Malformed tokens and claims are 401, with a reason.
    expect_refused(
        &server,
        "/ws/chat?token=abc.def",
        &[],
        401,
        "token_malformed",
    )
    .await;
    let mut bad_groups = claims("alice", &[], true, 60);
    bad_groups.groups = vec!["a//b".into()];
    expect_refused(
        &server,
        &format!("/ws/chat?token={}", hs256(&bad_groups)),
        &[],
        401,
        "invalid_claims",
    )
    .await;
}

#[tokio::test]
async fn a_bad_origin_is_403_and_allowed_or_absent_origins_pass() {
    let auth = token_auth().allowed_origins(
        OriginPolicy::parse(["https://app.example.com", "https://*.example.org"]).unwrap(),
    );
    let server = secured_server(auth).await;
    let token = hs256(&claims("alice", &["chat"], true, 60));
    let path = format!("/ws/chat?token={token}");
    for evil in [
        "https://evil.example",
        "http://app.example.com",
        "https://app.example.com.evil.example",
        "null",
    ] {
        let refused = expect_refused(
            &server,
            &path,
            &[("origin", evil)],
            403,
            "origin_not_allowed",
        )
        .await;
        assert!(refused.body["message"].as_str().unwrap().contains(evil));
    }
    // The Origin is checked before the token: a bad origin with no token
    // is still 403.
    expect_refused(
        &server,
        "/ws/chat",
        &[("origin", "https://evil.example")],
        403,
        "origin_not_allowed",
    )
    .await;
    let url = server.ws_url("chat") + "?token=" + &token;
    for good in ["https://app.example.com", "https://eu.example.org"] {
        Client::try_connect(&url, &[("origin", good)])
            .await
            .unwrap_or_else(|r| panic!("{good} must pass: {r:?}"));
    }
    // No Origin header: not a browser page; the token decides.
    Client::try_connect(&url, &[])
        .await
        .expect("no Origin passes");
}

// ----- the right token works -------------------------------------------------------

#[tokio::test]
async fn right_tokens_connect_receive_and_publish_for_every_key_type() {
    let server = secured_server(token_auth()).await;
    let alice = hs256(&claims("alice", &["chat", "task/*"], true, 60));
    let bob = sign(
        Algorithm::RS256,
        Some("rsa1"),
        &claims("bob", &["chat"], true, 60),
        &rsa_key(),
    );
    let carol = sign(
        Algorithm::ES256,
        Some("ec1"),
        &claims("carol", &["chat"], false, 60),
        &ec_key(),
    );
    // Header (non-browser) and query (browser) both work.
    let mut alice = connect_bearer(&server, "chat", &alice).await;
    let mut bob = connect_query(&server, "chat", &bob).await;
    let mut carol = connect_query(&server, "chat", &carol).await;

    // Receive: the API publishes, everyone in the group gets it.
    api_publish(server.addr, "chat", "from the backend").await;
    for client in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(client.recv_text().await, "from the backend");
    }
    // Publish: alice may, and the whole group hears her.
    alice.send_text("hello from alice").await;
    for client in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(client.recv_text().await, "hello from alice");
    }
    // The subject is on the session, typed and as the `sub` key.
    let sessions = server.hub.sessions();
    let mut subs: Vec<String> = sessions
        .iter()
        .map(|s| s.claims().sub.clone().unwrap())
        .collect();
    subs.sort();
    assert_eq!(subs, ["alice", "bob", "carol"]);
    assert!(sessions.iter().all(|s| s.get("sub").is_some()));
    // The API shows how each session got in.
    let group: Value = get(server.http_url("/api/groups/chat"), Some(API_KEY))
        .await
        .json()
        .await
        .unwrap();
    let carol_json = group["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["auth"]["sub"] == "carol")
        .expect("carol's session in the API");
    assert_eq!(carol_json["auth"]["admission"], "token");
    assert_eq!(carol_json["auth"]["publish"], false);
    assert_eq!(carol_json["keys"]["sub"], "carol");

    // A pattern grant: task/* reaches task/42.
    let alice_task = hs256(&claims("alice", &["chat", "task/*"], true, 60));
    let mut task = connect_query(&server, "task/42", &alice_task).await;
    api_publish(server.addr, "task/42", "log line").await;
    assert_eq!(task.recv_text().await, "log line");
}

#[tokio::test]
async fn jwks_keys_rotate_by_kid() {
    // A JWKS with the old and the new key, as an issuer publishes during a
    // rotation.
    let mut old = Jwk::from_encoding_key(&rsa_key(), Algorithm::RS256).unwrap();
    old.common.key_id = Some("2026-old".into());
    let mut new = Jwk::from_encoding_key(&ec_key(), Algorithm::ES256).unwrap();
    new.common.key_id = Some("2026-new".into());
    let dir = std::env::temp_dir().join(format!("groupcast-jwks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let both = dir.join("both.json");
    std::fs::write(
        &both,
        serde_json::to_string(&JwkSet {
            keys: vec![old.clone(), new.clone()],
        })
        .unwrap(),
    )
    .unwrap();
    let only_new = dir.join("new.json");
    std::fs::write(
        &only_new,
        serde_json::to_string(&JwkSet { keys: vec![new] }).unwrap(),
    )
    .unwrap();

    let c = claims("alice", &["chat"], false, 60);
    let old_token = sign(Algorithm::RS256, Some("2026-old"), &c, &rsa_key());
    let new_token = sign(Algorithm::ES256, Some("2026-new"), &c, &ec_key());
    let server_for = |path: PathBuf| async move {
        let mut keys = KeySet::new();
        keys.add_jwks_file(&path).unwrap();
        secured_server(ClientAuth::with_tokens(TokenVerifier::new(
            keys,
            VerifyOptions::default(),
        )))
        .await
    };

    // During the rotation both keys verify.
    let during = server_for(both).await;
    connect_query(&during, "chat", &old_token).await;
    connect_query(&during, "chat", &new_token).await;
    // After it, the old key is gone: its tokens name an unknown kid.
    let after = server_for(only_new).await;
    connect_query(&after, "chat", &new_token).await;
    expect_token_refused(&after, "/ws/chat", &old_token, 401, "unknown_kid").await;
    let _ = std::fs::remove_dir_all(&dir);
}

// ----- publish permission -----------------------------------------------------------

#[tokio::test]
async fn publish_not_allowed_closes_with_1008_and_reaches_no_one() {
    let server = secured_server(token_auth()).await;
    let writer = hs256(&claims("alice", &["chat"], true, 60));
    let reader = hs256(&claims("viewer", &["chat"], false, 60));
    let mut alice = connect_bearer(&server, "chat", &writer).await;
    let mut viewer = connect_bearer(&server, "chat", &reader).await;

    viewer.send_text("let me in").await;
    let reason = viewer.expect_close_code(close_code::POLICY).await;
    assert_eq!(reason, "publish not allowed");
    // Nothing reached the group: the next thing alice reads is the marker.
    api_publish(server.addr, "chat", "marker").await;
    marker_is_next(&mut alice, "marker", "alice").await;
    let metrics = server.hub.metrics().render();
    assert!(
        metrics.contains("groupcast_auth_rejections_total{reason=\"publish_not_allowed\"} 1"),
        "{metrics}"
    );

    // Binary frames are refused the same way.
    let mut viewer = connect_bearer(&server, "chat", &reader).await;
    viewer
        .ws
        .send(WsMessage::binary(vec![1u8, 2, 3]))
        .await
        .unwrap();
    viewer.expect_close_code(close_code::POLICY).await;
}

#[tokio::test]
async fn anonymous_groups_admit_without_a_token_read_only() {
    let auth = token_auth().anonymous_groups(GroupPatterns::parse(["public/*"]).unwrap());
    let server = secured_server(auth).await;
    let mut anon = server.connect("public/news").await;
    api_publish(server.addr, "public/news", "headline").await;
    assert_eq!(anon.recv_text().await, "headline");
    // Anonymous clients may not publish unless configured.
    anon.send_text("spam").await;
    anon.expect_close_code(close_code::POLICY).await;
    // Everything else still needs a token.
    expect_refused(&server, "/ws/chat", &[], 401, "token_missing").await;
    expect_refused(&server, "/ws/public", &[], 401, "token_missing").await;
    // A bad token is refused even for an anonymous group.
    expect_refused(
        &server,
        "/ws/public/news?token=x.y.z",
        &[],
        401,
        "token_malformed",
    )
    .await;

    // With --anonymous-publish they may.
    let auth = token_auth()
        .anonymous_groups(GroupPatterns::parse(["lobby"]).unwrap())
        .anonymous_publish(true);
    let server = secured_server(auth).await;
    let mut a = server.connect("lobby").await;
    let mut b = server.connect("lobby").await;
    a.send_text("hi").await;
    assert_eq!(b.recv_text().await, "hi");
}

#[tokio::test]
async fn open_mode_admits_everyone() {
    let server = TestServer::start(hub_with(ClientAuth::open())).await;
    let mut a = server.connect("anything/at/all").await;
    let mut b = server.connect("anything/at/all").await;
    a.send_text("open").await;
    assert_eq!(b.recv_text().await, "open");
    let sessions = server.hub.sessions();
    assert!(sessions.iter().all(|s| s.claims().publish));
}

// ----- expiry and refresh ----------------------------------------------------------

#[tokio::test]
async fn a_token_expiring_while_connected_closes_with_4001_at_expiry() {
    let server = secured_server(token_auth()).await;
    let c = claims("alice", &["chat"], false, 2);
    let exp = c.exp;
    let mut client = connect_bearer(&server, "chat", &hs256(&c)).await;
    // Still open before expiry: it receives.
    api_publish(server.addr, "chat", "before expiry").await;
    assert_eq!(client.recv_text().await, "before expiry");
    // Then the server closes it, with no frame from the client needed.
    let reason = client.expect_close_code(close_code::TOKEN_EXPIRED).await;
    assert_eq!(reason, "token expired");
    assert!(now() >= exp, "closed at expiry, not before");
    wait_until("the session is gone", || server.hub.session_count() == 0).await;
}

#[tokio::test]
async fn a_refreshed_token_keeps_the_connection_past_the_old_expiry() {
    let server = secured_server(token_auth()).await;
    let first = claims("alice", &["chat"], false, 2);
    let old_exp = first.exp;
    let mut client = connect_bearer(&server, "chat", &hs256(&first)).await;

    // The refresh may also grant publish.
    let renewed = claims("alice", &["chat"], true, 60);
    let refresh = json!({"type": "refresh", "token": hs256(&renewed)}).to_string();
    client.send_text(&refresh).await;
    let ack: Value = serde_json::from_str(&client.recv_text().await).unwrap();
    assert_eq!(ack, json!({"type": "refreshed", "exp": renewed.exp}));

    // Past the old expiry (a clock condition, polled with a timeout)…
    wait_until("the old token's expiry has passed", || now() > old_exp).await;
    // …the connection is alive: it receives, and may now publish. The
    // refresh frame itself was never broadcast: "marker" is next.
    api_publish(server.addr, "chat", "marker").await;
    marker_is_next(&mut client, "marker", "the refreshed client").await;
    client.send_text("now I may").await;
    assert_eq!(client.recv_text().await, "now I may");
}

#[tokio::test]
async fn a_bad_refresh_closes_with_4003() {
    let server = secured_server(token_auth()).await;
    let token = hs256(&claims("alice", &["chat"], true, 60));
    let cases = [
        // Another subject.
        (
            hs256(&claims("mallory", &["chat"], true, 60)),
            "another subject",
        ),
        // No longer allows the group.
        (
            hs256(&claims("alice", &["other"], true, 60)),
            "not allowed to join",
        ),
        // Already expired.
        (
            hs256(&claims("alice", &["chat"], true, -30)),
            "token expired",
        ),
    ];
    for (new_token, why) in cases {
        let mut client = connect_bearer(&server, "chat", &token).await;
        client
            .send_text(&json!({"type": "refresh", "token": new_token}).to_string())
            .await;
        let reason = client.expect_close_code(close_code::REFRESH_REJECTED).await;
        assert!(reason.starts_with("refresh rejected"), "{reason}");
        assert!(reason.contains(why), "{reason} should say {why}");
    }
}

// ----- the HTTP API and debug endpoints ------------------------------------------

#[tokio::test]
async fn the_api_and_debug_state_need_an_api_key() {
    let server = secured_server(token_auth()).await;
    let cases: [(&str, reqwest::Method); 5] = [
        ("/api/groups", reqwest::Method::GET),
        ("/api/groups/chat", reqwest::Method::GET),
        ("/api/groups/chat/messages", reqwest::Method::POST),
        ("/api/nodes", reqwest::Method::GET),
        ("/debug/state", reqwest::Method::GET),
    ];
    for (path, method) in cases {
        let url = server.http_url(path);
        let request = || {
            http()
                .request(method.clone(), &url)
                .header("content-type", "text/plain")
                .body("x")
        };
        // Missing.
        let response = request().send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "api_key_missing", "{path}");
        assert!(body["message"].as_str().unwrap().contains("Bearer"));
        // Not Bearer.
        let response = request()
            .header("authorization", format!("Basic {API_KEY}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{path}");
        // Wrong.
        let response = request()
            .bearer_auth("test-api-key-0123456780")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "api_key_invalid", "{path}");
        // Right.
        let response = request().bearer_auth(API_KEY).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    // Health, readiness and metrics stay unauthenticated.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = get(server.http_url(path), None).await;
        assert_eq!(response.status(), 200, "{path}");
    }
    // An unknown path is still 404, not 401.
    let response = get(server.http_url("/api/nothing-here"), None).await;
    assert_eq!(response.status(), 404);
}

/// Presence (member lists, user lists) and disconnects are the API's
/// alone, behind its key: clients cannot ask for presence yet (README,
/// "Threat model"). Without the key every one is 401; with it, each
/// answers for itself (here: no presence kept, nobody to disconnect).
#[tokio::test]
async fn presence_and_disconnects_need_the_api_key() {
    let server = secured_server(token_auth()).await;
    use reqwest::Method;
    let cases = [
        (Method::GET, "/api/groups/chat/members", 404, "presence_off"),
        (Method::GET, "/api/groups/chat/users", 404, "presence_off"),
        (
            Method::POST,
            "/api/sessions/00ff/disconnect",
            404,
            "unknown_session",
        ),
        (
            Method::POST,
            "/api/users/alice/disconnect",
            404,
            "unknown_user",
        ),
    ];
    for (method, path, status, code) in cases {
        let url = server.http_url(path);
        let response = http().request(method.clone(), &url).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "api_key_missing", "{path}");
        let response = http()
            .request(method, &url)
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], code, "{path}");
    }
}

/// A token's `presence: false` is carried on its session (the API shows
/// it in `auth`), for the client-facing presence to check; a token that
/// does not say is `presence: true`.
#[tokio::test]
async fn a_token_can_deny_its_client_presence() {
    let server = secured_server(token_auth()).await;
    let mut denied = claims("viewer", &["chat"], false, 600);
    denied.presence = false;
    let _viewer = connect_query(&server, "chat", &hs256(&denied)).await;
    let _member = connect_query(
        &server,
        "chat",
        &hs256(&claims("bob", &["chat"], false, 600)),
    )
    .await;
    let response = get(server.http_url("/api/groups/chat"), Some(API_KEY)).await;
    let shown: Value = response.json().await.unwrap();
    let presence_of = |sub: &str| {
        shown["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["auth"]["sub"] == sub)
            .map(|s| s["auth"]["presence"].clone())
    };
    assert_eq!(presence_of("viewer"), Some(json!(false)), "{shown}");
    assert_eq!(presence_of("bob"), Some(json!(true)), "{shown}");
    let sessions = server.hub.sessions();
    let viewer = sessions
        .iter()
        .find(|s| s.claims().sub.as_deref() == Some("viewer"));
    assert!(!viewer.expect("the viewer").claims().may_see_presence());
}

#[tokio::test]
async fn the_debug_endpoint_can_be_turned_off() {
    let options = ServerOptions {
        debug_endpoint: false,
        ..secured_options()
    };
    let server = TestServer::start_with(hub_with(ClientAuth::open()), options).await;
    let response = get(server.http_url("/debug/state"), Some(API_KEY)).await;
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn health_endpoints_can_move_to_an_admin_listener() {
    let options = ServerOptions {
        health_endpoints: false,
        ..secured_options()
    };
    let hub = hub_with(ClientAuth::open());
    let main = TestServer::start_with(hub.clone(), options.clone()).await;
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let app = server::admin_router(hub, options);
    let admin_task = tokio::spawn(async move {
        let _ = axum::serve(admin, app).await;
    });
    for path in ["/healthz", "/readyz", "/metrics"] {
        let on_main = get(main.http_url(path), None).await;
        assert_eq!(on_main.status(), 404, "{path} is not on the main port");
        let on_admin = get(format!("http://{admin_addr}{path}"), None).await;
        assert_eq!(on_admin.status(), 200, "{path} is on the admin port");
    }
    // The admin port serves nothing else.
    let api = get(format!("http://{admin_addr}/api/groups"), Some(API_KEY)).await;
    assert_eq!(api.status(), 404);
    admin_task.abort();
}

#[tokio::test]
async fn cors_headers_only_where_configured() {
    let preflight = |url: String| async move {
        http()
            .request(reqwest::Method::OPTIONS, url)
            .header("origin", "https://console.example.com")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
            .await
            .unwrap()
    };
    // Not configured: no CORS headers, so browsers keep other origins out.
    let plain = secured_server(ClientAuth::open()).await;
    let response = preflight(plain.http_url("/api/groups")).await;
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    let options = ServerOptions {
        cors: CorsPolicy::parse(["https://console.example.com"]).unwrap(),
        ..secured_options()
    };
    let server = TestServer::start_with(hub_with(ClientAuth::open()), options).await;
    let response = preflight(server.http_url("/api/groups")).await;
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://console.example.com"
    );
    // An actual cross-origin call still needs the key.
    let response = http()
        .get(server.http_url("/api/groups"))
        .header("origin", "https://console.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // Another origin gets no allowance.
    let response = http()
        .request(reqwest::Method::OPTIONS, server.http_url("/api/groups"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

// ----- the binary --------------------------------------------------------------------

fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("groupcast-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    path
}

#[tokio::test]
async fn the_token_subcommand_mints_a_token_the_server_accepts() {
    let secret_file = temp_file("mint-secret", &[SECRET, b"\n"].concat());
    let output = common::node::command()
        .args(["token", "--secret-file"])
        .arg(&secret_file)
        .args([
            "--kid",
            "hs1",
            "--sub",
            "alice",
            "--groups",
            "chat,task/*",
            "--publish",
            "--ttl",
            "1h",
        ])
        .output()
        .expect("run groupcast token");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).unwrap().trim().to_string();
    let server = secured_server(token_auth()).await;
    let mut a = connect_query(&server, "task/9", &token).await;
    let mut b = connect_bearer(&server, "task/9", &token).await;
    a.send_text("minted").await;
    assert_eq!(b.recv_text().await, "minted");
    expect_token_refused(&server, "/ws/admin", &token, 403, "group_not_allowed").await;

    // A secret too short for HS256 is refused by the minter too.
    let output = common::node::command()
        .args(["token", "--secret", "short", "--sub", "a"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("at least 32"));
    let _ = std::fs::remove_file(secret_file);
}

#[tokio::test]
async fn the_binary_serves_secured_with_an_admin_listener() {
    let secret_file = temp_file("serve-secret", SECRET);
    let admin_port = common::redis::free_port();
    let admin_listen = format!("127.0.0.1:{admin_port}");
    let jwt_secret = format!("hs1:{}", secret_file.display());
    let node = NodeProcess::builder("auth-secured")
        .args(&[
            "--admin-listen",
            &admin_listen,
            "--jwt-secret-file",
            &jwt_secret,
            "--anonymous-groups",
            "public/*",
            "--debug-endpoint",
            "false",
        ])
        .env("GROUPCAST_API_KEYS", API_KEY)
        .env("GROUPCAST_ALLOWED_ORIGINS", "https://app.example.com")
        .env("GROUPCAST_LOG_FORMAT", "json")
        .spawn();
    node.wait_for_log("groupcast is serving").await;
    let admin = format!("http://127.0.0.1:{admin_port}");
    wait_until_async("the admin listener answers", || {
        let url = format!("{admin}/healthz");
        async move { http_json::status(&url).await == 200 }
    })
    .await;
    let main = node.addr.to_string();
    // Health is only on the admin port.
    let response = get(format!("http://{main}/healthz"), None).await;
    assert_eq!(response.status(), 404);
    // The debug endpoint is off, the API needs the key.
    let response = get(format!("http://{main}/debug/state"), Some(API_KEY)).await;
    assert_eq!(response.status(), 404);
    let response = get(format!("http://{main}/api/groups"), None).await;
    assert_eq!(response.status(), 401);
    // WebSockets need a token, a good origin, and an allowed group.
    let refused = Client::try_connect(&format!("ws://{main}/ws/chat"), &[])
        .await
        .err()
        .unwrap();
    assert_eq!(
        (refused.status, refused.body["error"].as_str()),
        (401, Some("token_missing"))
    );
    let token = hs256(&claims("alice", &["chat"], true, 60));
    let url = format!("ws://{main}/ws/chat?token={token}");
    let refused = Client::try_connect(&url, &[("origin", "https://evil.example")])
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status, 403);
    let mut alice = Client::try_connect(&url, &[("origin", "https://app.example.com")])
        .await
        .expect("a good token from a good origin");
    Client::try_connect(&format!("ws://{main}/ws/public/news"), &[])
        .await
        .expect("an anonymous group without a token");
    // Alice publishes; she is a member, so she hears herself.
    alice.send_text("through the binary").await;
    assert_eq!(alice.recv_text().await, "through the binary");
    drop(node);
    let _ = std::fs::remove_file(secret_file);
}

#[tokio::test]
async fn open_mode_is_announced_loudly() {
    let node = NodeProcess::builder("auth-open")
        .env("GROUPCAST_LOG_FORMAT", "json")
        .spawn();
    let line = node.wait_for_log("OPEN MODE").await;
    let line: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["level"], "WARN");
}

// ----- Redis: ACL user and password, and a secured cluster --------------------------

const REDIS_USER: &str = "groupcast";
const REDIS_PASSWORD: &str = "acl-test-password-0123";

/// A Redis whose only user is `groupcast` with a password and the
/// least-privilege ACL of docs/security.md (the default user is disabled),
/// as a production setup would have it.
async fn acl_redis() -> TestRedis {
    let password = format!(">{REDIS_PASSWORD}");
    TestRedis::start_with_cmd(&[
        "redis-server",
        "--bind",
        "0.0.0.0",
        "--protected-mode",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
        "--user",
        "default",
        "off",
        "--user",
        REDIS_USER,
        "on",
        &password,
        // Exactly the ACL documented in docs/security.md.
        "resetchannels",
        "&group:*",
        "&groupcast:cluster",
        "resetkeys",
        "~{groupcast:nodes}:*",
        "~groupcast:worker:*",
        "-@all",
        "+subscribe",
        "+unsubscribe",
        "+publish",
        "+ping",
        "+set",
        "+get",
        "+del",
        "+pexpire",
        "+eval",
        "+evalsha",
        "+script|load",
        "+multi",
        "+exec",
        "+time",
        "+hset",
        "+hget",
        "+hdel",
        "+zadd",
        "+zrem",
        "+zrangebyscore",
        "+zremrangebyscore",
    ])
    .await
}

/// The URL of `redis` with `user` and `password`.
fn acl_url(redis: &TestRedis, user: Option<&str>, password: Option<&str>) -> String {
    let auth = match (user, password) {
        (Some(user), Some(password)) => format!("{user}:{password}@"),
        (None, Some(password)) => format!(":{password}@"),
        _ => String::new(),
    };
    format!("redis://{auth}127.0.0.1:{}", redis.port)
}

fn clustered_hub(name: &str, url: String) -> Hub {
    Hub::builder()
        .node_id(name)
        .client_auth(token_auth())
        .backend(fast_options(url))
        .on_text(|hub, session, text| {
            let _ = hub.to(session.group()).send(text);
        })
        .build()
        .expect("build a clustered hub")
}

/// Waits until `hub` reports that Redis refused it (its last error
/// contains `why`); it is then neither connected nor ready.
async fn assert_refused_by_redis(hub: &Hub, why: &str) {
    wait_until(&format!("the node reports {why:?}"), || {
        hub.status().last_error.is_some_and(|e| e.contains(why))
    })
    .await;
    assert!(!hub.is_ready());
    assert!(!hub.status().connected);
}

#[tokio::test]
async fn redis_acl_user_and_password_are_required_and_work() {
    let redis = acl_redis().await;
    // A wrong password, or none at all: never connected, never ready, and
    // the status says why.
    let wrong = clustered_hub("wrong", acl_url(&redis, Some(REDIS_USER), Some("nope")));
    let anonymous = clustered_hub("anonymous", acl_url(&redis, None, None));
    // The right user and password.
    let right = clustered_hub(
        "right",
        acl_url(&redis, Some(REDIS_USER), Some(REDIS_PASSWORD)),
    );
    wait_until("the node with the right credentials connects", || {
        right.status().connected
    })
    .await;
    assert!(right.is_ready());
    // The refused node reports why.
    assert_refused_by_redis(&wrong, "authentication failed").await;
    // The node without credentials reports why.
    assert_refused_by_redis(&anonymous, "NOAUTH").await;
}

#[tokio::test]
async fn tokens_work_across_a_cluster_over_an_acl_redis() {
    let redis = acl_redis().await;
    let url = acl_url(&redis, Some(REDIS_USER), Some(REDIS_PASSWORD));
    let a = TestServer::start_with(clustered_hub("node-a", url.clone()), secured_options()).await;
    let b = TestServer::start_with(clustered_hub("node-b", url), secured_options()).await;
    wait_until("both nodes are connected to Redis", || {
        a.hub.status().connected && b.hub.status().connected
    })
    .await;

    let alice = hs256(&claims("alice", &["chat"], true, 60));
    let viewer = hs256(&claims("viewer", &["chat"], false, 60));
    let mut alice = connect_bearer(&a, "chat", &alice).await;
    let mut viewer = connect_query(&b, "chat", &viewer).await;
    wait_until("node b is subscribed to chat", || {
        b.hub
            .status()
            .subscriptions
            .iter()
            .any(|s| s.ends_with("chat"))
    })
    .await;

    // Alice, on node a, reaches the viewer on node b.
    alice.send_text("across nodes").await;
    assert_eq!(alice.recv_text().await, "across nodes");
    assert_eq!(viewer.recv_text().await, "across nodes");
    // The API on node b (with its key) reaches alice on node a.
    api_publish(b.addr, "chat", "from b's API").await;
    assert_eq!(viewer.recv_text().await, "from b's API");
    assert_eq!(alice.recv_text().await, "from b's API");
    // The viewer may not publish, on any node; nothing reaches alice.
    viewer.send_text("sneaky").await;
    viewer.expect_close_code(close_code::POLICY).await;
    api_publish(b.addr, "chat", "marker").await;
    marker_is_next(&mut alice, "marker", "alice").await;
    // Presence works under the least-privilege ACL: each node sees both.
    wait_until_async("each node sees the other's presence", || {
        let hub = a.hub.clone();
        async move { hub.nodes().await.is_ok_and(|nodes| nodes.len() == 2) }
    })
    .await;
    // Rejections are the same on every node.
    expect_refused(&b, "/ws/chat", &[], 401, "token_missing").await;
    let other = hs256(&claims("alice", &["other"], true, 60));
    expect_token_refused(&a, "/ws/chat", &other, 403, "group_not_allowed").await;
}

// ----- history: the same grants as joining ------------------------------------------

/// A client may read a group's history exactly when it may join the group:
/// `?history=` and `?since=` ride on the same upgrade checks, and the
/// history API sits behind the same API keys as the rest of the API.
#[tokio::test]
async fn history_is_read_under_the_same_grants_as_joining() {
    let hub = Hub::builder()
        .client_auth(token_auth())
        .config(groupcast::Config {
            history: groupcast::history::HistoryPolicy::parse(["*=100:1h"]).unwrap(),
            ..groupcast::Config::default()
        })
        .build()
        .unwrap();
    let server = TestServer::start_with(hub, secured_options()).await;
    api_publish(server.addr, "secret", "classified").await;
    let token = hs256(&claims("alice", &["chat"], true, 60));
    for query in ["history=10", "since=0&epoch=abc"] {
        expect_refused(
            &server,
            &format!("/ws/secret?{query}&token={token}"),
            &[],
            403,
            "group_not_allowed",
        )
        .await;
    }
    expect_refused(&server, "/ws/secret?history=10", &[], 401, "token_missing").await;
    let url = format!("http://{}/api/groups/secret/history", server.addr);
    let anonymous = get(&url, None).await;
    assert_eq!(anonymous.status(), 401);
    let keyed = get(&url, Some(API_KEY)).await;
    assert_eq!(keyed.status(), 200);
    let page: Value = keyed.json().await.unwrap();
    assert_eq!(page["messages"][0]["data"], "classified");
    // With the right grant, the backlog comes.
    let member_token = hs256(&claims("bob", &["secret"], true, 60));
    let mut member = Client::try_connect(
        &format!("{}?history=1&token={member_token}", server.ws_url("secret")),
        &[],
    )
    .await
    .expect("a member of secret");
    assert_eq!(member.recv_text().await, "classified");
}

#[tokio::test]
async fn a_connection_without_a_group_needs_a_valid_token_and_each_subscription_a_grant() {
    let server = secured_server(token_auth()).await;
    let v1 = ("sec-websocket-protocol", "groupcast.v1");
    expect_refused(&server, "/ws", &[v1], 401, "token_missing").await;
    expect_refused(
        &server,
        "/ws?token=not.a.token",
        &[v1],
        401,
        "token_malformed",
    )
    .await;

    let token = hs256(&claims("alice", &["granted/*"], false, 60));
    let url = format!("ws://{}/ws?token={token}", server.addr);
    let mut client = Client::try_connect(&url, &[v1])
        .await
        .unwrap_or_else(|refused| panic!("a valid token opens /ws: {refused:?}"));
    let next_json = async |client: &mut Client| -> Value {
        serde_json::from_str(&client.recv_text().await).expect("a JSON frame")
    };
    assert_eq!(next_json(&mut client).await["type"], "welcome");
    for (group, answer_type, code) in [
        ("granted/1", "subscribed", None),
        ("other", "error", Some("group_not_allowed")),
    ] {
        client
            .send_text(&json!({"type":"subscribe","group":group,"id":1}).to_string())
            .await;
        let answer = next_json(&mut client).await;
        assert_eq!(
            (answer["type"].as_str(), answer["code"].as_str()),
            (Some(answer_type), code),
            "{group}: {answer}"
        );
    }
}
