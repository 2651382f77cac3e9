//! A join storm, for the storm benchmark (`scripts/storm.sh`): `--clients`
//! `groupcast.v1` clients of one history group connect within `--within`
//! (spread evenly), each asking for `?history=<H>`, and each reads its
//! welcome and the backlog it asked for. It prints one line of JSON: how
//! many caught up (a client whose welcome has no position — the node could
//! not read the history — failed), the time from each client's start to
//! its last backlog message (p50, p99, max), and how many messages were
//! lost or doubled
//! (each client must get exactly the offsets `top - H + 1 ..= top` of its
//! welcome's epoch, once each, in order).
//!
//! ```text
//! cargo run --release --example join_storm -- --url ws://127.0.0.1:8080 --group storm --clients 2000 --history 1000
//! ```

#[path = "shared/mod.rs"]
mod shared;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use shared::{Caught, Tally, arg};

/// The most one client may take to catch up before it counts as failed.
const CLIENT_LIMIT: Duration = Duration::from_secs(120);

async fn one_client(url: String, history: u64, start: Instant) -> Caught {
    tokio::time::sleep_until(start.into()).await;
    let outcome = tokio::time::timeout(CLIENT_LIMIT, catch_up(&url, history, start)).await;
    match outcome {
        Ok(Ok(caught)) => caught,
        Ok(Err(error)) => Caught {
            error: Some(error.to_string()),
            ..Caught::default()
        },
        Err(_) => Caught {
            error: Some(format!("not caught up within {CLIENT_LIMIT:?}")),
            ..Caught::default()
        },
    }
}

async fn catch_up(url: &str, history: u64, start: Instant) -> anyhow::Result<Caught> {
    let mut request = format!("{url}?history={history}").into_client_request()?;
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "groupcast.v1".parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    let mut expected: Option<(u64, u64)> = None; // (next offset, last offset)
    let mut caught = Caught::default();
    while let Some(frame) = ws.next().await {
        let Message::Text(text) = frame? else {
            continue;
        };
        let json: serde_json::Value = serde_json::from_str(&text)?;
        match json["type"].as_str() {
            Some("welcome") => {
                // A history group's welcome without a position: the node
                // could not read the history, and the client goes on live
                // without its backlog. Not caught up.
                let Some(top) = json["offset"].as_u64() else {
                    anyhow::bail!(
                        "the welcome has no position: the node could not read the history"
                    );
                };
                if top == 0 {
                    caught.took = Some(start.elapsed());
                    return Ok(caught);
                }
                let first = top.saturating_sub(history) + 1;
                expected = Some((first, top));
            }
            Some("message") => {
                let Some((next, last)) = expected.as_mut() else {
                    anyhow::bail!("a message before the welcome");
                };
                let offset = json["offset"].as_u64().unwrap_or(0);
                if offset < *next {
                    caught.doubled += 1;
                    continue;
                }
                caught.lost += offset - *next;
                *next = offset + 1;
                if offset >= *last {
                    caught.took = Some(start.elapsed());
                    return Ok(caught);
                }
            }
            _ => {}
        }
    }
    anyhow::bail!("the connection ended before the backlog did")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let base = arg("--url").ok_or_else(|| anyhow::anyhow!("--url ws://host:port"))?;
    let group = arg("--group").unwrap_or_else(|| "storm".into());
    let clients: usize = arg("--clients").unwrap_or_else(|| "1000".into()).parse()?;
    let history: u64 = arg("--history").unwrap_or_else(|| "1000".into()).parse()?;
    let within: f64 = arg("--within-secs").unwrap_or_else(|| "1".into()).parse()?;
    let url = Arc::new(format!("{}/ws/{group}", base.trim_end_matches('/')));
    let began = Instant::now() + Duration::from_millis(200);
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let offset = Duration::from_secs_f64(within * i as f64 / clients.max(1) as f64);
            tokio::spawn(one_client(url.to_string(), history, began + offset))
        })
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        tally.add(task.await?);
    }
    let total = began.elapsed();
    let mut summary = tally.json();
    summary.insert("clients".into(), clients.into());
    summary.insert("history".into(), history.into());
    summary.insert("storm_seconds".into(), total.as_secs_f64().into());
    println!("{}", serde_json::Value::Object(summary));
    Ok(())
}
