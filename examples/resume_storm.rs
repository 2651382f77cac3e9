//! A resume storm, for the storm benchmark (`scripts/storm.sh resume`):
//! `--clients` `groupcast.v1` clients over `--groups` history groups, all
//! on one node (`--victim`, whose process `--victim-pid` is), while a
//! publisher sends `--rate` messages/s through the other nodes
//! (`--survivors`). The victim is SIGKILLed; every client reconnects to a
//! survivor with the JavaScript client's jittered backoff (500 ms doubling
//! to 30 s, full jitter; the next address on each attempt) and resumes
//! with `since`/`epoch`.
//!
//! It prints one line of JSON: how many clients caught up (a resume not
//! answered `recovered: true` failed), the time from the kill until each
//! client had every message up to its resume's welcome offset (p50, p99,
//! max), how many messages were lost or doubled over the whole run (each
//! client must see every offset after its join once, in order, up to the
//! groups' last offset at the end), and what Redis did from the kill until
//! the last client caught up: history reads (`XRANGE`/`XREVRANGE` calls,
//! from `INFO commandstats` after `CONFIG RESETSTAT`) and CPU.
//!
//! Each survivor holds one member of every group before the kill (a
//! keeper), so that it listens to the groups and its history tail is warm,
//! as on a cluster where the groups have members everywhere.
//!
//! ```text
//! cargo run --release --example resume_storm -- --victim 127.0.0.1:8081 --victim-pid 4242 \
//!   --survivors 127.0.0.1:8082,127.0.0.1:8083 --redis-url redis://127.0.0.1:6379 \
//!   --clients 500 --groups 20 --prefix rstorm-1
//! ```

#[path = "shared/mod.rs"]
mod shared;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use shared::{Caught, Positioned, Tally, Ws, arg, arg_or, backoff_delay, connect_v1, resume_query};

/// The JavaScript client's reconnect delays (`clients/js/groupcast.js`).
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A connection attempt (upgrade and welcome) that takes longer failed.
const CONNECT_LIMIT: Duration = Duration::from_secs(10);
/// The most one client may take to catch up, and to reach the end.
const CLIENT_LIMIT: Duration = Duration::from_secs(120);

/// What the clients share.
struct Storm {
    prefix: String,
    victim: String,
    survivors: Vec<String>,
    joined: AtomicUsize,
    /// When the victim was killed.
    killed: OnceLock<Instant>,
    caught_up: AtomicUsize,
    /// Each group's last offset once publishing stopped.
    final_tops: OnceLock<Vec<u64>>,
    stop: CancellationToken,
}

/// One client's position in its group and the check of its sequence.
struct Sequence {
    epoch: String,
    last: u64,
    lost: u64,
    doubled: u64,
}

impl Sequence {
    fn take(&mut self, frame: Message) -> anyhow::Result<()> {
        let Message::Text(text) = frame else {
            return Ok(());
        };
        let json: Value = serde_json::from_str(&text)?;
        let Some(message) = Positioned::parse(&json) else {
            return Ok(());
        };
        let (Some(epoch), Some(offset)) = (message.epoch, message.offset) else {
            anyhow::bail!("a message without a position in a history group");
        };
        anyhow::ensure!(
            epoch == self.epoch,
            "the epoch changed from {} to {epoch}",
            self.epoch
        );
        if offset <= self.last {
            self.doubled += 1;
        } else {
            self.lost += offset - self.last - 1;
            self.last = offset;
        }
        Ok(())
    }
}

async fn client(storm: Arc<Storm>, index: usize, group: usize) -> Caught {
    let mut outcome = Caught::default();
    let mut sequence = None;
    let run = tokio::time::timeout(
        CLIENT_LIMIT * 3,
        resume_through(&storm, index, group, &mut sequence, &mut outcome),
    )
    .await;
    match run {
        Ok(Ok(())) => {}
        Ok(Err(e)) => outcome.error = Some(e.to_string()),
        Err(_) => outcome.error = Some("the run did not end in time".into()),
    }
    if let Some(s) = sequence {
        outcome.lost += s.lost;
        outcome.doubled += s.doubled;
        // Short of the end (a failed client is counted as failed, not
        // as having lost the rest).
        if outcome.error.is_none() {
            outcome.lost += storm
                .final_tops
                .get()
                .map_or(0, |t| t[group].saturating_sub(s.last));
        }
    }
    outcome
}

/// Joins on the victim, loses it, resumes on a survivor, catches up, and
/// reads to the end.
async fn resume_through(
    storm: &Storm,
    index: usize,
    group: usize,
    sequence: &mut Option<Sequence>,
    outcome: &mut Caught,
) -> anyhow::Result<()> {
    let path = format!("/ws/{}/g{group}", storm.prefix);
    let (mut ws, welcome) =
        connect_v1(&format!("ws://{}{path}", storm.victim), CONNECT_LIMIT).await?;
    let (Some(epoch), Some(offset)) = (welcome.epoch, welcome.offset) else {
        anyhow::bail!("the first welcome has no position");
    };
    let s = sequence.insert(Sequence {
        epoch,
        last: offset,
        lost: 0,
        doubled: 0,
    });
    storm.joined.fetch_add(1, Ordering::Relaxed);
    // Until the victim dies.
    while let Some(frame) = ws.next().await {
        match frame {
            Ok(frame) => s.take(frame)?,
            Err(_) => break,
        }
    }
    // The dead connection's socket goes now: held until the end (a
    // shadowed binding is not dropped), 10,000 of them pushed the tool
    // past the 20,000 descriptors a process may hold here, and 54
    // clients could not open their next connection.
    drop(ws);
    let killed = *storm
        .killed
        .get()
        .ok_or_else(|| anyhow::anyhow!("the connection to the victim ended before the kill"))?;
    // Reconnect as the JavaScript client does: full jitter, the next
    // address on each attempt.
    let mut rng = StdRng::seed_from_u64(index as u64);
    let mut attempt = 0u32;
    // Why the last attempt failed, for the report of a client that never
    // resumed.
    let mut last_failure = String::from("no attempt");
    let (mut ws, target) = loop {
        tokio::time::sleep(backoff_delay(attempt, BACKOFF_MIN, BACKOFF_MAX, &mut rng)).await;
        anyhow::ensure!(
            killed.elapsed() < CLIENT_LIMIT,
            "not resumed within {CLIENT_LIMIT:?} ({attempt} attempts; the last: {last_failure})"
        );
        let node = &storm.survivors[(index + attempt as usize) % storm.survivors.len()];
        let url = format!("ws://{node}{path}?{}", resume_query(&s.epoch, s.last));
        attempt += 1;
        let (ws, welcome) = match connect_v1(&url, CONNECT_LIMIT).await {
            Ok(connected) => connected,
            Err(error) => {
                last_failure = format!("{error:#}");
                continue;
            }
        };
        anyhow::ensure!(
            welcome.recovered == Some(true),
            "the resume was not recovered (welcome: {welcome:?})"
        );
        break (ws, welcome.offset.unwrap_or(0));
    };
    if s.last >= target {
        outcome.took = Some(killed.elapsed());
        storm.caught_up.fetch_add(1, Ordering::Relaxed);
    }
    // Caught up at the welcome's offset; then on to the end.
    loop {
        if let Some(tops) = storm.final_tops.get()
            && s.last >= tops[group]
        {
            return Ok(());
        }
        let frame = tokio::select! {
            frame = ws.next() => frame,
            _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
            _ = storm.stop.cancelled() => return Ok(()),
        };
        let Some(frame) = frame else {
            anyhow::bail!("the survivor's connection ended");
        };
        s.take(frame?)?;
        if outcome.took.is_none() && s.last >= target {
            outcome.took = Some(killed.elapsed());
            storm.caught_up.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A member of every group on each survivor, read and dropped: the
/// survivors listen to the groups, and their history tails are warm.
async fn keepers(storm: &Storm, groups: usize) -> anyhow::Result<Vec<Ws>> {
    let mut keepers = Vec::new();
    for node in &storm.survivors {
        for g in 0..groups {
            let url = format!("ws://{node}/ws/{}/g{g}", storm.prefix);
            keepers.push(connect_v1(&url, CONNECT_LIMIT).await?.0);
        }
    }
    Ok(keepers)
}

/// Publishes `rate` messages/s round-robin over the groups through the
/// survivors' HTTP API until `stop`.
async fn publish(storm: Arc<Storm>, groups: usize, rate: f64, stop: CancellationToken) -> u64 {
    let http = reqwest::Client::new();
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut n = 0u64;
    while stop.run_until_cancelled(pace.tick()).await.is_some() {
        let node = &storm.survivors[n as usize % storm.survivors.len()];
        let url = format!(
            "http://{node}/api/groups/{}/g{}/messages",
            storm.prefix,
            n as usize % groups
        );
        if let Ok(r) = http
            .post(url)
            .body(format!("m{n}"))
            .header("content-type", "text/plain")
            .send()
            .await
            && r.status().is_success()
        {
            n += 1;
        }
    }
    n
}

/// A group's last offset, from a survivor's history API.
async fn top_of(http: &reqwest::Client, node: &str, group: &str) -> anyhow::Result<u64> {
    let page: Value = http
        .get(format!("http://{node}/api/groups/{group}/history?limit=1"))
        .send()
        .await?
        .json()
        .await?;
    page["offset"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no offset in {page}"))
}

/// Redis's history reads (calls) and CPU seconds so far.
async fn redis_usage(redis: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<(u64, f64)> {
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(redis)
        .await?;
    let cpu: String = redis::cmd("INFO").arg("cpu").query_async(redis).await?;
    let reads = stats
        .lines()
        .filter(|l| l.starts_with("cmdstat_xrange:") || l.starts_with("cmdstat_xrevrange:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    let seconds = cpu
        .lines()
        .filter(|l| l.starts_with("used_cpu_sys:") || l.starts_with("used_cpu_user:"))
        .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
        .sum();
    Ok((reads, seconds))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let victim = arg("--victim").ok_or_else(|| anyhow::anyhow!("--victim host:port"))?;
    let victim_pid: i32 = arg("--victim-pid")
        .ok_or_else(|| anyhow::anyhow!("--victim-pid PID"))?
        .parse()?;
    let survivors: Vec<String> = arg("--survivors")
        .ok_or_else(|| anyhow::anyhow!("--survivors host:port,host:port"))?
        .split(',')
        .map(str::to_string)
        .collect();
    let redis_url = arg("--redis-url").ok_or_else(|| anyhow::anyhow!("--redis-url redis://…"))?;
    let clients: usize = arg_or("--clients", 500)?;
    let groups: usize = arg_or("--groups", 20)?;
    let rate: f64 = arg_or("--rate", 50.0)?;
    let prefix = arg_or("--prefix", "rstorm".to_string())?;
    let storm = Arc::new(Storm {
        prefix,
        victim,
        survivors,
        joined: AtomicUsize::new(0),
        killed: OnceLock::new(),
        caught_up: AtomicUsize::new(0),
        final_tops: OnceLock::new(),
        stop: CancellationToken::new(),
    });
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut redis = redis::Client::open(redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;

    // Every group has a message (an epoch to resume in), and a member on
    // every survivor; then the clients join on the victim.
    for g in 0..groups {
        http.post(format!(
            "http://{}/api/groups/{}/g{g}/messages",
            storm.survivors[0], storm.prefix
        ))
        .header("content-type", "text/plain")
        .body("start")
        .send()
        .await?
        .error_for_status()?;
    }
    let keepers = keepers(&storm, groups).await?;
    let tasks: Vec<_> = (0..clients)
        .map(|i| tokio::spawn(client(storm.clone(), i, i % groups)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while storm.joined.load(Ordering::Relaxed) < clients && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::ensure!(
        storm.joined.load(Ordering::Relaxed) == clients,
        "only {} of {clients} clients joined the victim within 60 s",
        storm.joined.load(Ordering::Relaxed)
    );
    let stop_publishing = CancellationToken::new();
    let publisher = tokio::spawn(publish(
        storm.clone(),
        groups,
        rate,
        stop_publishing.clone(),
    ));
    // Messages flow for a second, then the victim dies.
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async::<()>(&mut redis)
        .await?;
    let (_, cpu_before) = redis_usage(&mut redis).await?;
    storm.killed.get_or_init(Instant::now);
    // SAFETY: kill(2) with a pid and a signal number; no memory involved.
    let killed = unsafe { libc::kill(victim_pid, libc::SIGKILL) };
    anyhow::ensure!(
        killed == 0,
        "could not kill {victim_pid}: {}",
        std::io::Error::last_os_error()
    );
    // The storm: until every client caught up or gave up.
    let storm_end = Instant::now() + CLIENT_LIMIT + Duration::from_secs(5);
    while storm.caught_up.load(Ordering::Relaxed) < clients
        && tasks.iter().any(|t| !t.is_finished())
        && Instant::now() < storm_end
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let storm_seconds = storm
        .killed
        .get()
        .map_or(0.0, |k| k.elapsed().as_secs_f64());
    let (reads, cpu_after) = redis_usage(&mut redis).await?;
    // Two more seconds of messages, then the end: every client must reach
    // each group's last offset.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_publishing.cancel();
    let published = publisher.await?;
    let mut tops = Vec::with_capacity(groups);
    for g in 0..groups {
        tops.push(
            top_of(
                &http,
                &storm.survivors[0],
                &format!("{}/g{g}", storm.prefix),
            )
            .await?,
        );
    }
    storm.final_tops.get_or_init(|| tops);
    let end = tokio::spawn({
        let storm = storm.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            storm.stop.cancel();
        }
    });
    let mut tally = Tally::default();
    for task in tasks {
        tally.add(task.await?);
    }
    end.abort();
    drop(keepers);
    let mut summary = tally.json();
    for (key, value) in [
        ("clients", clients.into()),
        ("groups", groups.into()),
        ("rate", rate.into()),
        ("published", published.into()),
        ("storm_seconds", storm_seconds.into()),
        ("redis_history_commands", reads.into()),
        ("redis_cpu_ms", ((cpu_after - cpu_before) * 1000.0).into()),
    ] {
        summary.insert(key.to_string(), value);
    }
    println!("{}", serde_json::Value::Object(summary));
    Ok(())
}
