//! What the load examples share (`join_storm`, `resume_storm`,
//! `chaos_clients`): their flags, the JavaScript client's reconnect delay,
//! percentiles, and a `groupcast.v1` connection with its welcome read.
//!
//! Not an example itself: a directory without `main.rs` is not picked up
//! by cargo, and each example includes it with
//! `#[path = "shared/mod.rs"] mod shared;`. Each example uses a part of it.
#![allow(dead_code)]

use std::time::Duration;

use futures_util::StreamExt;
use rand::Rng;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client's WebSocket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The value after `--name` on the command line.
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone())
}

/// `--name`'s value parsed, or `default` when it is absent.
pub fn arg_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match arg(name) {
        None => Ok(default),
        Some(text) => text
            .parse()
            .map_err(|e| anyhow::anyhow!("{name} {text:?}: {e}")),
    }
}

/// The reconnect delay of the JavaScript client (`backoffDelay` in
/// `clients/js/groupcast.js`): "full jitter", a uniform draw in
/// `[0, min(max, min × 2^attempt))`, so that clients dropped together do
/// not come back together.
pub fn backoff_delay(attempt: u32, min: Duration, max: Duration, rng: &mut impl Rng) -> Duration {
    let ceiling = min
        .saturating_mul(2u32.saturating_pow(attempt.min(30)))
        .min(max);
    ceiling.mul_f64(rng.random::<f64>())
}

/// The `p`-quantile (0 to 1) of sorted durations, in milliseconds; 0 for
/// none.
pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at].as_secs_f64() * 1000.0
}

/// A `groupcast.v1` welcome: the fields a resuming client needs.
#[derive(Debug, Clone)]
pub struct Welcome {
    pub node: String,
    /// `None` when the node could not give a position (no history, or
    /// history unreadable).
    pub epoch: Option<String>,
    pub offset: Option<u64>,
    /// Only on a resume: whether everything after `since` follows.
    pub recovered: Option<bool>,
}

impl Welcome {
    /// The welcome in a frame's JSON, if it is one.
    pub fn parse(json: &serde_json::Value) -> Option<Welcome> {
        (json["type"] == "welcome").then(|| Welcome {
            node: json["node"].as_str().unwrap_or_default().to_string(),
            epoch: json["epoch"].as_str().map(str::to_string),
            offset: json["offset"].as_u64(),
            recovered: json["recovered"].as_bool(),
        })
    }
}

/// The query that resumes after `(epoch, offset)`.
pub fn resume_query(epoch: &str, offset: u64) -> String {
    format!("since={offset}&epoch={epoch}")
}

/// Connects a `groupcast.v1` client to `url` (within `limit`) and reads
/// its welcome.
pub async fn connect_v1(url: &str, limit: Duration) -> anyhow::Result<(Ws, Welcome)> {
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "groupcast.v1".parse()?);
    let connected = tokio::time::timeout(limit, async {
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
        while let Some(frame) = ws.next().await {
            if let Message::Text(text) = frame? {
                let json: serde_json::Value = serde_json::from_str(&text)?;
                return match Welcome::parse(&json) {
                    Some(welcome) => Ok((ws, welcome)),
                    None => Err(anyhow::anyhow!("the first frame is not a welcome: {text}")),
                };
            }
        }
        Err(anyhow::anyhow!("the connection ended before the welcome"))
    })
    .await;
    connected.map_err(|_| anyhow::anyhow!("no welcome within {limit:?}"))?
}

/// A `groupcast.v1` message frame's position and payload.
pub struct Positioned {
    pub epoch: Option<String>,
    pub offset: Option<u64>,
    pub data: String,
}

impl Positioned {
    /// The message in a frame's JSON, if it is one.
    pub fn parse(json: &serde_json::Value) -> Option<Positioned> {
        (json["type"] == "message").then(|| Positioned {
            epoch: json["epoch"].as_str().map(str::to_string),
            offset: json["offset"].as_u64(),
            data: json["data"].as_str().unwrap_or_default().to_string(),
        })
    }
}

/// What one storm client saw: the time it took to catch up (none: it did
/// not), the messages it missed or got twice, and why it failed.
#[derive(Default)]
pub struct Caught {
    pub took: Option<Duration>,
    pub lost: u64,
    pub doubled: u64,
    pub error: Option<String>,
}

/// A storm's clients summed up: catch-up times, lost, doubled, failed.
#[derive(Default)]
pub struct Tally {
    took: Vec<Duration>,
    lost: u64,
    doubled: u64,
    failed: u64,
    first_error: Option<String>,
}

impl Tally {
    /// Counts one client; one that neither caught up nor said why failed
    /// all the same.
    pub fn add(&mut self, caught: Caught) {
        self.lost += caught.lost;
        self.doubled += caught.doubled;
        match (caught.took, caught.error) {
            (Some(t), None) => self.took.push(t),
            (_, error) => {
                self.failed += 1;
                let error = error.unwrap_or_else(|| "did not catch up".into());
                // Every failure on stderr (the storm's log), the first in
                // the summary.
                eprintln!("a client failed: {error}");
                self.first_error.get_or_insert(error);
            }
        }
    }

    /// The summary's fields: caught up, failed (and the first error),
    /// lost, doubled, catch-up p50/p99/max in ms.
    pub fn json(mut self) -> serde_json::Map<String, serde_json::Value> {
        self.took.sort();
        let summary = serde_json::json!({
            "caught_up": self.took.len(),
            "failed": self.failed,
            "first_error": self.first_error,
            "lost": self.lost,
            "doubled": self.doubled,
            "catch_up_ms_p50": percentile(&self.took, 0.50),
            "catch_up_ms_p99": percentile(&self.took, 0.99),
            "catch_up_ms_max": percentile(&self.took, 1.0),
        });
        match summary {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        }
    }
}
