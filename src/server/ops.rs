//! What operators and orchestrators look at: health, readiness, metrics,
//! and ws-notifier's debug view.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::bodies::{DebugState, Readiness, SessionView};
use super::state::AppState;

/// Health, readiness and metrics: unauthenticated, for orchestrators and
/// scrapers; on the main port or on the admin listener.
pub(crate) fn health_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// The debug view: lists every session with its keys, so it sits behind
/// the API key with the HTTP API.
pub(crate) fn debug_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(debug_state))
}

/// Liveness: the process answers HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    summary = "Liveness: the process answers HTTP",
    responses((status = 200, description = "`ok`", content_type = "text/plain", body = String)),
)]
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: not draining, and the bus (Redis) is reachable.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    summary = "Readiness: not draining, and Redis reachable",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready: shutting down, or Redis unreachable (`reason` says which)", body = Readiness),
    ),
)]
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
    let body = Readiness {
        ready,
        node: hub.node_id().to_string(),
        bus: bus.kind,
        reason,
    };
    (status, Json(body))
}

/// Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Metrics in the Prometheus text format",
    responses((status = 200, description = "The metrics (README, \"Metrics\")", content_type = "text/plain; version=0.0.4", body = String)),
)]
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
#[utoipa::path(
    get,
    path = "/debug/state",
    tag = "operations",
    summary = "This node's sessions per group, its bus and workers (`--debug-endpoint`)",
    responses((status = 200, description = "The node's state", body = DebugState)),
)]
async fn debug_state(State(state): State<AppState>) -> Json<DebugState> {
    let hub = &state.hub;
    let groups = hub
        .groups()
        .into_iter()
        .map(|g| {
            let sessions = hub
                .members(&g.name)
                .iter()
                .map(|s| SessionView::of(hub.node_id(), s))
                .collect();
            (g.name.to_string(), sessions)
        })
        .collect();
    Json(DebugState {
        node: hub.node_id().to_string(),
        shutting_down: hub.is_shutting_down(),
        sessions: hub.session_count(),
        groups,
        bus: hub.status(),
        workers: hub.workers(),
        worker_leases: hub.worker_leases().await.ok(),
        cluster: hub.nodes().await.ok(),
    })
}
