//! Counters every part of the hub updates, rendered in Prometheus format.
//!
//! Each hub owns its own registry (no process-global recorder), so several
//! hubs in one process — as in the integration tests — count separately.
//! Gauges that the registry can answer exactly (connections, groups) are
//! read at scrape time instead of being kept in step by hand.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// What the webhook sender counts; its own struct, so that the sender
/// task holds clones of these (they share their values) and not the
/// registry.
#[derive(Debug, Clone, Default)]
pub struct WebhookMetrics {
    /// Events waiting to be sent.
    pub queued: Gauge,
    /// Events the receiver took.
    pub delivered: Counter,
    /// Attempts the receiver did not take (each retry counts).
    pub attempt_failures: Counter,
    /// Events dropped: the queue was full, or retries ran past the
    /// event's maximum age.
    pub dropped: Counter,
}

/// The hub's metrics. Cheap to update from any thread.
pub struct Metrics {
    registry: Registry,
    /// WebSocket connections accepted.
    pub connections_opened: Counter,
    /// WebSocket connections ended, for any reason.
    pub connections_closed: Counter,
    /// Connections open now (set at scrape time).
    pub connections: Gauge,
    /// Groups with at least one local member (set at scrape time).
    pub groups: Gauge,
    /// Messages received from clients.
    pub messages_in: Counter,
    /// Payload bytes received from clients.
    pub bytes_in: Counter,
    /// Frames queued to sessions (one per receiving session).
    pub messages_out: Counter,
    /// Payload bytes queued to sessions.
    pub bytes_out: Counter,
    /// Broadcasts started on this node (API, library, client messages).
    pub broadcasts: Counter,
    /// Sessions closed with 1013 because their queue was full.
    pub queue_full_closes: Counter,
    /// Sessions dropped because one write took longer than `write_timeout`.
    pub write_timeouts: Counter,
    /// Messages dropped by the drop-oldest policy.
    pub queue_drops: Counter,
    /// Messages compressed for permessage-deflate members: once per
    /// message, however many members receive it compressed.
    pub messages_compressed: Counter,
    /// Compressed client messages that inflated past `max_message_size`
    /// (decompression bombs, or just too large), closed with 1009.
    pub inflate_too_big: Counter,
    /// Messages received from the bus (Redis), envelopes and raw.
    pub bus_received: Counter,
    /// Messages from the bus that could not be decoded (dropped).
    pub bus_invalid: Counter,
    /// Publishes to the bus that failed.
    pub bus_publish_errors: Counter,
    /// Times the bus connection to Redis was (re)established.
    pub bus_connects: Counter,
    /// 1 while the bus can reach Redis (always 1 standalone).
    pub bus_up: Gauge,
    /// Channels this node is subscribed to.
    pub bus_subscriptions: Gauge,
    /// Group workers running on this node (set at scrape time).
    pub workers_running: Gauge,
    /// Group workers started (including restarts).
    pub worker_starts: Counter,
    /// Group workers that returned an error or panicked.
    pub worker_failures: Counter,
    /// Worker leases lost (not renewed in time, or taken by another node).
    pub worker_leases_lost: Counter,
    /// The webhook sender's (see `webhooks/`).
    pub webhooks: WebhookMetrics,
    /// Resumes (`since`/`epoch`) that got everything they missed.
    pub resumes_recovered: Counter,
    /// Resumes that could not be complete (other epoch, trimmed, expired,
    /// history unreachable): the client was told `recovered: false`.
    pub resumes_not_recovered: Counter,
    /// History reads that failed (the session went on live).
    pub history_read_errors: Counter,
    /// Gaps seen in a session's live stream of offsets (a `groupcast.v1`
    /// client is sent a reset).
    pub history_gaps: Counter,
    /// Gaps in a node's live stream repaired from history.
    pub history_gaps_repaired: Counter,
    /// Gaps that history could not repair (sessions told to resume).
    pub history_gaps_unrepaired: Counter,
    /// History reads served from this node's tail.
    pub history_reads_tail: Counter,
    /// History reads that went to the history store.
    pub history_reads_store: Counter,
    /// History reads that waited for an identical read in flight.
    pub history_reads_merged: Counter,
    /// Requests and connections refused or closed by security, by reason
    /// (`token_missing`, `bad_signature`, `publish_not_allowed`, …).
    pub auth_rejections: Family<Vec<(String, String)>, Counter>,
    /// Connections refused or closed by a limit, by limit (`connections`,
    /// `connections_per_ip`, `groups`, `inbound_rate`, `message_size`).
    pub limit_rejections: Family<Vec<(String, String)>, Counter>,
    /// 1 while one connection to one Redis works, 0 while it does not, by
    /// `mode` (`redis`, `sharded`, `cluster`, `sentinel`), `role` (`redis`,
    /// `shard 0`, `primary`, ...) and `redis` (`host:port`).
    pub redis_connection_up: Family<Vec<(String, String)>, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh set of metrics in its own registry.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("groupcast");
        macro_rules! metric {
            ($name:literal, $help:literal, $kind:ty) => {{
                let m = <$kind>::default();
                registry.register($name, $help, m.clone());
                m
            }};
        }
        Metrics {
            connections_opened: metric!(
                "connections_opened",
                "WebSocket connections accepted",
                Counter
            ),
            connections_closed: metric!(
                "connections_closed",
                "WebSocket connections ended",
                Counter
            ),
            connections: metric!("connections", "WebSocket connections open now", Gauge),
            groups: metric!("groups", "Groups with at least one local member", Gauge),
            messages_in: metric!("messages_in", "Messages received from clients", Counter),
            bytes_in: metric!("bytes_in", "Payload bytes received from clients", Counter),
            messages_out: metric!("messages_out", "Frames queued to sessions", Counter),
            bytes_out: metric!("bytes_out", "Payload bytes queued to sessions", Counter),
            broadcasts: metric!("broadcasts", "Broadcasts started on this node", Counter),
            queue_full_closes: metric!(
                "queue_full_closes",
                "Sessions closed with 1013 because their send queue was full",
                Counter
            ),
            write_timeouts: metric!(
                "write_timeouts",
                "Sessions dropped because a write took longer than the write timeout",
                Counter
            ),
            messages_compressed: metric!(
                "messages_compressed",
                "Messages compressed for permessage-deflate clients (once per message, whatever the number of members)",
                Counter
            ),
            inflate_too_big: metric!(
                "inflate_too_big",
                "Compressed client messages that inflated past max_message_size (closed with 1009)",
                Counter
            ),
            queue_drops: metric!(
                "queue_drops",
                "Messages dropped by the drop-oldest queue policy",
                Counter
            ),
            bus_received: metric!("bus_received", "Messages received from the bus", Counter),
            bus_invalid: metric!(
                "bus_invalid",
                "Undecodable messages received from the bus",
                Counter
            ),
            bus_publish_errors: metric!(
                "bus_publish_errors",
                "Publishes to the bus that failed",
                Counter
            ),
            bus_connects: metric!("bus_connects", "Times the bus connected to Redis", Counter),
            bus_up: metric!("bus_up", "1 while the bus reaches Redis", Gauge),
            resumes_recovered: metric!(
                "resumes_recovered",
                "Resumes that got every message they missed",
                Counter
            ),
            resumes_not_recovered: metric!(
                "resumes_not_recovered",
                "Resumes told recovered=false (other epoch, trimmed, expired, unreachable)",
                Counter
            ),
            history_read_errors: metric!(
                "history_read_errors",
                "History reads that failed",
                Counter
            ),
            history_gaps: metric!("history_gaps", "Gaps in a session's live offsets", Counter),
            history_gaps_repaired: metric!(
                "history_gaps_repaired",
                "Gaps in this node's live stream of a history group repaired from history",
                Counter
            ),
            history_gaps_unrepaired: metric!(
                "history_gaps_unrepaired",
                "Gaps history could not repair: groupcast.v1 sessions were told to resume",
                Counter
            ),
            history_reads_tail: metric!(
                "history_reads_tail",
                "History reads served from this node's tail of the group",
                Counter
            ),
            history_reads_store: metric!(
                "history_reads_store",
                "History reads that went to the history store (Redis)",
                Counter
            ),
            history_reads_merged: metric!(
                "history_reads_merged",
                "History reads that waited for an identical read in flight",
                Counter
            ),
            bus_subscriptions: metric!(
                "bus_subscriptions",
                "Channels this node is subscribed to",
                Gauge
            ),
            workers_running: metric!(
                "workers_running",
                "Group workers running on this node",
                Gauge
            ),
            worker_starts: metric!(
                "worker_starts",
                "Group workers started, restarts included",
                Counter
            ),
            worker_failures: metric!(
                "worker_failures",
                "Group workers that failed or panicked",
                Counter
            ),
            worker_leases_lost: metric!("worker_leases_lost", "Worker leases lost", Counter),
            webhooks: WebhookMetrics {
                queued: metric!("webhook_queue", "Webhook events waiting to be sent", Gauge),
                delivered: metric!(
                    "webhook_delivered",
                    "Webhook events the receiver took",
                    Counter
                ),
                attempt_failures: metric!(
                    "webhook_attempt_failures",
                    "Webhook attempts the receiver did not take (each retry counts)",
                    Counter
                ),
                dropped: metric!(
                    "webhook_dropped",
                    "Webhook events dropped: queue full, or not taken within their maximum age",
                    Counter
                ),
            },
            auth_rejections: metric!(
                "auth_rejections",
                "Requests and connections refused or closed by security, by reason",
                Family<Vec<(String, String)>, Counter>
            ),
            limit_rejections: metric!(
                "limit_rejections",
                "Connections refused or closed by a limit, by limit",
                Family<Vec<(String, String)>, Counter>
            ),
            redis_connection_up: metric!(
                "redis_connection_up",
                "1 while this node's connection to one Redis works, by mode, role and redis",
                Family<Vec<(String, String)>, Gauge>
            ),
            registry,
        }
    }

    /// Counts one security rejection (`reason` is an `AuthError` code or a
    /// close reason such as `publish_not_allowed`).
    pub fn count_auth_rejection(&self, reason: &str) {
        self.auth_rejections
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .inc();
    }

    /// Counts one connection refused or closed by a limit (`limit` is a
    /// [`LimitRejection::label`](crate::LimitRejection::label)).
    pub fn count_limit_rejection(&self, limit: &str) {
        self.limit_rejections
            .get_or_create(&vec![("limit".to_string(), limit.to_string())])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail: fmt::Write for String is
        // infallible, and encode only fails when the writer does.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
