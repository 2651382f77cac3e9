//! What operators and orchestrators look at: health, readiness, metrics,
//! and ws-notifier's debug view.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

use super::api::session_json;
use super::state::AppState;

/// Health, readiness and metrics: unauthenticated, for orchestrators and
/// scrapers; on the main port or on the admin listener.
pub(crate) fn health_routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// The debug view: lists every session with its keys, so it sits behind
/// the API key with the HTTP API.
pub(crate) fn debug_routes() -> Router<AppState> {
    Router::new().route("/debug/state", get(debug_state))
}

/// Liveness: the process answers HTTP.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: not draining, and the bus (Redis) is reachable.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let hub = &state.hub;
    let bus = hub.status();
    let ready = hub.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let reason = if hub.is_shutting_down() {
        Some("shutting down".to_string())
    } else if !bus.connected {
        Some(format!(
            "cannot reach Redis: {}",
            bus.last_error.as_deref().unwrap_or("connecting")
        ))
    } else {
        None
    };
    (
        status,
        Json(json!({ "ready": ready, "node": hub.node_id(), "bus": bus.kind, "reason": reason })),
    )
}

/// Prometheus text format.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let hub = &state.hub;
    let m = hub.metrics();
    m.connections.set(hub.session_count() as i64);
    m.groups.set(hub.group_count() as i64);
    let bus = hub.status();
    m.bus_up.set(i64::from(bus.connected));
    m.bus_subscriptions.set(bus.subscriptions.len() as i64);
    m.workers_running.set(
        hub.workers()
            .iter()
            .filter(|w| w.state == "running")
            .count() as i64,
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.render(),
    )
}

/// Sessions per group, subscriptions and bus state (ws-notifier's `/mon`).
async fn debug_state(State(state): State<AppState>) -> impl IntoResponse {
    let hub = &state.hub;
    let groups: serde_json::Map<String, serde_json::Value> = hub
        .groups()
        .into_iter()
        .map(|g| {
            let sessions: Vec<_> = hub
                .members(&g.name)
                .iter()
                .map(|s| session_json(hub.node_id(), s))
                .collect();
            (g.name.to_string(), json!(sessions))
        })
        .collect();
    let nodes = hub.nodes().await.ok();
    let leases = hub.worker_leases().await.ok();
    Json(json!({
        "node": hub.node_id(),
        "shutting_down": hub.is_shutting_down(),
        "sessions": hub.session_count(),
        "groups": groups,
        "bus": hub.status(),
        "workers": hub.workers(),
        "worker_leases": leases,
        "cluster": nodes,
    }))
}
