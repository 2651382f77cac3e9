//! A client that catches up, for the history benchmark
//! (`ONLY=hist scripts/bench.sh`): connects to a group with `?since=&epoch=`
//! (or `?history=N`), reads until it has `--count` messages, and prints one
//! line of JSON: how many, how long, how many per second, and whether the
//! welcome said `recovered`.
//!
//! ```text
//! cargo run --release --example catchup -- --url ws://127.0.0.1:8080/ws/catchup --since 0 --epoch E --count 10000
//! ```

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = arg("--url").ok_or_else(|| anyhow::anyhow!("--url ws://host:port/ws/<group>"))?;
    let count: u64 = arg("--count").unwrap_or_else(|| "10000".into()).parse()?;
    let query = match (arg("--since"), arg("--epoch"), arg("--history")) {
        (Some(since), Some(epoch), _) => format!("?since={since}&epoch={epoch}"),
        (_, _, Some(n)) => format!("?history={n}"),
        _ => anyhow::bail!("give --since and --epoch, or --history"),
    };
    let mut request = format!("{url}{query}").into_client_request()?;
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "groupcast.v1".parse()?);
    let started = Instant::now();
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(request),
    )
    .await??;
    let mut messages = 0u64;
    let mut recovered = serde_json::Value::Null;
    let deadline = started + Duration::from_secs(120);
    while messages < count {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(frame)) = tokio::time::timeout(left, ws.next()).await else {
            anyhow::bail!("only {messages} of {count} messages within 120 s");
        };
        if let Message::Text(text) = frame? {
            let json: serde_json::Value = serde_json::from_str(&text)?;
            match json["type"].as_str() {
                Some("welcome") => recovered = json["recovered"].clone(),
                Some("message") => messages += 1,
                _ => {}
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "messages": messages,
            "seconds": seconds,
            "messages_per_sec": messages as f64 / seconds,
            "recovered": recovered,
        })
    );
    Ok(())
}
