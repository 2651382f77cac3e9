//! The one task per node that POSTs webhook events, in order, retrying
//! each until the receiver takes it (see `mod.rs` for why in order and
//! why one at a time).

use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::signature::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};
use super::{WebhookEvent, WebhookOptions};
use crate::backoff::Backoff;
use crate::metrics::WebhookMetrics;

/// Sends what arrives on `queue` until it closes or `shutdown`.
pub(super) async fn run(
    options: WebhookOptions,
    mut queue: mpsc::Receiver<WebhookEvent>,
    metrics: WebhookMetrics,
    shutdown: CancellationToken,
) {
    let client = match reqwest::Client::builder()
        .timeout(options.timeout)
        .user_agent(concat!("groupcast/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot build the webhook client: no webhook will be sent");
            return;
        }
    };
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = queue.recv() => match event {
                Some(event) => event,
                None => return,
            },
        };
        metrics.queued.dec();
        deliver(&client, &options, &metrics, &event, &shutdown).await;
    }
}

/// Sends `event` until it is taken, too old, or the node shuts down.
async fn deliver(
    client: &reqwest::Client,
    options: &WebhookOptions,
    metrics: &WebhookMetrics,
    event: &WebhookEvent,
    shutdown: &CancellationToken,
) {
    // Serializing a struct of strings and integers cannot fail; an empty
    // body would only be refused by the receiver, and retried.
    let body = serde_json::to_vec(event).unwrap_or_default();
    let started = Instant::now();
    let mut backoff = Backoff::new(options.retry_min, options.retry_max);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match post(client, options, event, &body).await {
            Ok(()) => {
                metrics.delivered.inc();
                if attempt > 1 {
                    tracing::info!(id = %event.id, kind = event.kind.name(), attempt, "webhook delivered after retries");
                }
                return;
            }
            Err(why) => {
                metrics.attempt_failures.inc();
                let level_warn = attempt == 1 || attempt.is_power_of_two();
                if level_warn {
                    tracing::warn!(id = %event.id, kind = event.kind.name(), attempt, %why, "webhook not taken; retrying");
                } else {
                    tracing::debug!(id = %event.id, attempt, %why, "webhook not taken; retrying");
                }
            }
        }
        let delay = backoff.next_delay();
        if started.elapsed() + delay > options.max_age {
            metrics.dropped.inc();
            tracing::error!(id = %event.id, kind = event.kind.name(), group = %event.group, attempt,
                "webhook dropped: not taken within its maximum age");
            return;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// One attempt: `Err` with why when the receiver did not take it.
async fn post(
    client: &reqwest::Client,
    options: &WebhookOptions,
    event: &WebhookEvent,
    body: &[u8],
) -> Result<(), String> {
    let timestamp = super::now_ms() / 1000;
    let mut request = client
        .post(options.url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("x-groupcast-event", event.kind.name())
        .header("x-groupcast-id", event.id.as_str())
        .header(TIMESTAMP_HEADER, timestamp.to_string())
        .body(body.to_vec());
    if let Some(secret) = &options.secret {
        request = request.header(SIGNATURE_HEADER, sign(secret, timestamp, body));
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered {status}"))
    }
}
