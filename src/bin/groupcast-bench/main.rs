//! `groupcast-bench`: a fan-out load tool for groupcast (WebSocket and
//! Server-Sent Events clients, one or many groups each).
//!
//! See `groupcast-bench --help` and BENCHMARKS.md. Private to this binary:
//! nothing here is part of the library's API.

// serde_json's `json!` of the summary (about 50 keys) recurses deeper than
// the default limit.
#![recursion_limit = "256"]

mod args;
mod clients;
mod payload;
mod procfs;
mod publish;
mod sse;
mod v1;
mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use args::{Args, Transport};
use clients::{Outcome, Shared, Target};
use payload::Totals;
use procfs::ProcSample;

/// Descriptors kept free besides one per client (runtime, publishers, /proc).
const FD_RESERVE: u64 = 64;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.validate()?;
    let need = (args.clients + args.stall + args.churn_fds()) as u64
        + 2 * args.publishers as u64
        + FD_RESERVE;
    procfs::ensure_fd_limit(
        need,
        &format!("--clients {} (+ --stall {})", args.clients, args.stall),
    )?;
    clients::now_us(); // start the clock
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = runtime.enable_all().build()?;
    let summary = runtime.block_on(run(&args))?;
    runtime.shutdown_timeout(Duration::from_secs(5));
    print_human(&summary);
    let line = serde_json::to_string(&summary)?;
    if let Some(path) = &args.json_out {
        std::fs::write(path, format!("{line}\n"))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("{line}");
    Ok(())
}

const PHASES: [&str; 5] = ["connecting", "settling", "publishing", "draining", "done"];

struct Progress {
    phase: AtomicU8,
    sent: Arc<AtomicU64>,
}

async fn run(args: &Args) -> anyhow::Result<Value> {
    let mut addrs = Vec::new();
    for url in &args.urls {
        addrs.push(clients::resolve(url).await?);
    }
    let via = match &args.publish {
        Some(spec) => Some(publish::Via::parse(spec, &args.channel_prefix, args.fcall)?),
        None => None,
    };
    let pids = &args.measure_pid;
    let before = procfs::sample_all(pids)?;

    let shared = Arc::new(Shared {
        connect_gate: Semaphore::new(args.connect_concurrency),
        connected: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        connect_times: Mutex::new(clients::new_histogram()),
        stop: CancellationToken::new(),
        compression: args.compression,
        transport: args.transport,
        v1: args.v1(),
    });
    let progress = Arc::new(Progress {
        phase: AtomicU8::new(0),
        sent: Arc::new(AtomicU64::new(0)),
    });
    let total_clients = args.clients + args.stall;
    let churn_counts = Arc::new(clients::ChurnCounts::default());
    let progress_task = (!args.quiet).then(|| {
        tokio::spawn(report_progress(
            progress.clone(),
            shared.clone(),
            churn_counts.clone(),
            total_clients as u64,
            args.progress_every,
        ))
    });

    // ----- connect -----
    let connect_start = Instant::now();
    let mut handles = Vec::with_capacity(total_clients);
    for i in 0..total_clients {
        let u = args.node_of(i);
        let groups = args.groups_of(i);
        let base = args.urls[u].trim_end_matches('/');
        let url = match args.transport {
            Transport::Ws => format!("{base}/ws/{}", groups[0].0),
            Transport::Sse => format!(
                "http://{}/sse/{}",
                base.trim_start_matches("ws://"),
                groups[0].0
            ),
        };
        let target = Target {
            url,
            addr: addrs[u],
            source: args.source_addrs[i % args.source_addrs.len()],
            groups,
            stalled: i >= args.clients,
        };
        handles.push(tokio::spawn(clients::run(target, shared.clone())));
    }
    let deadline = connect_start + args.connect_timeout;
    loop {
        let done = shared.connected.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed);
        if done >= total_clients as u64 || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_elapsed = connect_start.elapsed();
    let connected = shared.connected.load(Ordering::Relaxed);
    if connected == 0 {
        shared.stop.cancel();
        let mut first_error = None;
        for handle in handles {
            if let Ok(outcome) = handle.await {
                first_error = first_error.or(outcome.connect_error);
            }
        }
        anyhow::bail!(
            "no client could connect: {}",
            first_error.unwrap_or_else(|| "connect phase timed out".into())
        );
    }

    // ----- settle; connect the publishers meanwhile -----
    progress.phase.store(1, Ordering::Relaxed);
    let settle_until = Instant::now() + args.settle;
    let groups: Arc<Vec<String>> = Arc::new((0..args.groups).map(|g| args.group_name(g)).collect());
    let mut conns = Vec::new();
    if let (Some(via), true) = (&via, args.rate > 0.0) {
        for _ in 0..args.publishers {
            conns.push(publish::connect(via).await?);
        }
    }
    tokio::time::sleep_until(settle_until.into()).await;
    let connected_sample = procfs::sample_all(pids)?;
    let events_before = v1::presence_events();

    // ----- publish (or stay idle) -----
    progress.phase.store(2, Ordering::Relaxed);
    let publish_start = Instant::now();
    let churn_task = (args.churn > 0.0).then(|| {
        tokio::spawn(churn(
            args.clone_churn(&addrs),
            churn_counts.clone(),
            shared.stop.clone(),
        ))
    });
    let mut reports = Vec::new();
    if conns.is_empty() {
        let deadline = Instant::now() + args.duration;
        while Instant::now() < deadline && !all_dropped(&shared, connected) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    } else {
        let mut jobs = Vec::new();
        for (p, conn) in conns.into_iter().enumerate() {
            let job = publish::Job {
                id: p as u16,
                groups: groups.clone(),
                first_group: p * args.groups / args.publishers,
                rate: args.rate / args.publishers as f64,
                duration: args.duration,
                payload_len: args.payload,
                payload_kind: args.payload_kind,
                sent_total: progress.sent.clone(),
            };
            jobs.push(tokio::spawn(publish::run(job, conn)));
        }
        for job in jobs {
            reports.push(job.await.context("a publisher panicked")?);
        }
    }
    let publish_elapsed = publish_start.elapsed();
    if let Some(task) = churn_task {
        let bound = args.churn_hold + Duration::from_secs(15);
        let _ = tokio::time::timeout(bound, task).await;
    }

    // ----- drain -----
    progress.phase.store(3, Ordering::Relaxed);
    // Deliveries, and the presence frames of the last churn leaves.
    let arrived = || clients::snapshot().0 + v1::presence_events().iter().sum::<u64>();
    if !reports.is_empty() || args.churn > 0.0 {
        let drain_until = Instant::now() + args.drain;
        let mut last = arrived();
        let mut quiet_since = Instant::now();
        while Instant::now() < drain_until {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = arrived();
            if now != last {
                last = now;
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() >= Duration::from_millis(500) {
                break;
            }
        }
    }
    let window = publish_start.elapsed();
    let after = procfs::sample_all(pids)?;
    let events_after = v1::presence_events();

    // ----- stop and collect -----
    progress.phase.store(4, Ordering::Relaxed);
    shared.stop.cancel();
    let mut outcomes = Vec::with_capacity(handles.len());
    for handle in handles {
        match tokio::time::timeout(Duration::from_secs(30), handle).await {
            Ok(Ok(outcome)) => outcomes.push(outcome),
            Ok(Err(_)) | Err(_) => outcomes.push(Outcome::default()),
        }
    }
    if let Some(task) = progress_task {
        task.abort();
    }

    Ok(summarize(
        args,
        &Measured {
            connect_elapsed,
            publish_elapsed,
            window,
            outcomes,
            reports,
            connect_times: shared.connect_times.lock().clone(),
            churn: churn_counts,
            before,
            connected_sample,
            after,
            events_before,
            events_after,
        },
    ))
}

fn all_dropped(shared: &Shared, connected: u64) -> bool {
    shared.dropped.load(Ordering::Relaxed) >= connected
}

async fn report_progress(
    progress: Arc<Progress>,
    shared: Arc<Shared>,
    churn: Arc<clients::ChurnCounts>,
    target: u64,
    every: Duration,
) {
    let start = Instant::now();
    let mut last_delivered = 0;
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let (delivered, hist) = clients::snapshot();
        let phase = PHASES[progress.phase.load(Ordering::Relaxed) as usize];
        let churned = churn.started.load(Ordering::Relaxed);
        let churn_line = if churned > 0 {
            format!(
                "  churn {} joined, {} failed, {} skipped",
                churn.joined.load(Ordering::Relaxed),
                churn.failed.load(Ordering::Relaxed),
                churn.skipped.load(Ordering::Relaxed)
            )
        } else {
            String::new()
        };
        let events: u64 = v1::presence_events().iter().sum();
        let events_line = if events > 0 {
            format!("  presence frames {events}")
        } else {
            String::new()
        };
        eprintln!(
            "[{:>4}s] {phase:<10} connected {}/{target} (failed {}, dropped {})  sent {}  \
             delivered/s {}  p99 so far {}{churn_line}{events_line}",
            start.elapsed().as_secs(),
            shared.connected.load(Ordering::Relaxed),
            shared.failed.load(Ordering::Relaxed),
            shared.dropped.load(Ordering::Relaxed),
            progress.sent.load(Ordering::Relaxed),
            ((delivered - last_delivered) as f64 / every.as_secs_f64()) as u64,
            if hist.is_empty() {
                "-".to_string()
            } else {
                fmt_us(hist.value_at_quantile(0.99))
            },
        );
        last_delivered = delivered;
    }
}

struct Measured {
    connect_elapsed: Duration,
    publish_elapsed: Duration,
    /// Publishing plus draining: the window server CPU is measured over.
    window: Duration,
    outcomes: Vec<Outcome>,
    reports: Vec<publish::Report>,
    connect_times: Histogram<u64>,
    churn: Arc<clients::ChurnCounts>,
    before: Vec<ProcSample>,
    connected_sample: Vec<ProcSample>,
    after: Vec<ProcSample>,
    /// Presence frames received by every client before and after the window.
    events_before: [u64; 4],
    events_after: [u64; 4],
}

fn percentiles(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    json!({
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
        "mean": (h.mean() * 10.0).round() / 10.0,
        "count": h.len(),
    })
}

fn summarize(args: &Args, m: &Measured) -> Value {
    let receivers: Vec<&Outcome> = m.outcomes.iter().filter(|o| !o.stalled).collect();
    let mut members = vec![0u64; args.groups];
    let mut totals = Totals::default();
    let mut connect_errors: Vec<&str> = Vec::new();
    let mut ended_early: Vec<&str> = Vec::new();
    let (mut wire_bytes, mut compressed) = (0u64, 0u64);
    for o in &receivers {
        if o.connected {
            for &g in &o.groups {
                members[g as usize] += 1;
            }
            o.tally.add_to(&mut totals);
            wire_bytes += o.wire_bytes;
            compressed += o.compressed as u64;
        }
        if let Some(e) = &o.connect_error {
            connect_errors.push(e);
        }
        if let Some(e) = &o.ended_early {
            ended_early.push(e);
        }
    }
    let stalled_connected = m
        .outcomes
        .iter()
        .filter(|o| o.stalled && o.connected)
        .count();
    let connected = receivers.iter().filter(|o| o.connected).count() as u64;
    let mut sent_per_group = vec![0u64; args.groups];
    let (mut sent, mut errors, mut behind) = (0, 0, 0);
    let mut first_error = None;
    for r in &m.reports {
        for (g, n) in r.sent_per_group.iter().enumerate() {
            sent_per_group[g] += n;
        }
        sent += r.sent;
        errors += r.errors;
        behind += r.behind;
        first_error = first_error.or(r.first_error.clone());
    }
    let expected = payload::expected(&members, &sent_per_group);
    let memberships: u64 = members.iter().sum();
    let loss = expected.saturating_sub(totals.unique);
    let (_, latency) = clients::snapshot();
    let publish_secs = m.publish_elapsed.as_secs_f64().max(1e-9);
    let (bench_rss, bench_hwm) = procfs::self_rss_kib();

    let all_connections = connected + stalled_connected as u64;
    let mut servers = Vec::new();
    let (mut cpu_total, mut user_total, mut rss_delta_total) = (0u64, 0u64, 0i64);
    for (i, pid) in args.measure_pid.iter().enumerate() {
        let (b, c, a) = (m.before[i], m.connected_sample[i], m.after[i]);
        let cpu = a.cpu_us.saturating_sub(c.cpu_us);
        let user = a.user_us.saturating_sub(c.user_us);
        let rss_delta = c.rss_kib as i64 - b.rss_kib as i64;
        cpu_total += cpu;
        user_total += user;
        rss_delta_total += rss_delta;
        servers.push(json!({
            "pid": pid,
            "rss_before_kib": b.rss_kib,
            "rss_connected_kib": c.rss_kib,
            "rss_after_kib": a.rss_kib,
            "cpu_us_window": cpu,
            "user_us_window": user,
            "cpu_us_connect": c.cpu_us.saturating_sub(b.cpu_us),
            "cpu_utilization": round3(cpu as f64 / 1e6 / m.window.as_secs_f64()),
        }));
    }
    let measured = !args.measure_pid.is_empty();
    let events_window: Vec<u64> = m
        .events_after
        .iter()
        .zip(m.events_before)
        .map(|(a, b)| a.saturating_sub(b))
        .collect();
    let events_total: u64 = events_window.iter().sum();
    let presence_frames: serde_json::Map<String, Value> = v1::PRESENCE_KINDS
        .iter()
        .zip(&events_window)
        .map(|(kind, n)| (kind.to_string(), json!(n)))
        .collect();
    let churn_joined = m.churn.joined.load(Ordering::Relaxed);
    json!({
        "label": args.label,
        "urls": args.urls,
        "clients": args.clients,
        "stall": args.stall,
        "groups": args.groups,
        "transport": args.transport.name(),
        "groups_per_client": args.groups_per_client,
        "v1": args.v1(),
        "memberships": memberships,
        "publish": args.publish,
        "rate": args.rate,
        "publishers": args.publishers,
        "duration_s": args.duration.as_secs_f64(),
        "payload": args.payload,
        "payload_kind": format!("{:?}", args.payload_kind).to_lowercase(),
        "compression": args.compression,
        "compression_accepted": compressed,
        "source_addrs": args.source_addrs.len(),
        "connect": {
            "connected": connected,
            "stalled_connected": stalled_connected,
            "failed": connect_errors.len(),
            "first_error": connect_errors.first(),
            "total_ms": m.connect_elapsed.as_millis() as u64,
            "per_connection_us": percentiles(&m.connect_times),
        },
        "churn": if args.churn > 0.0 {
            let c = &m.churn;
            json!({
                "rate": args.churn,
                "groups": args.churn_groups,
                "hold_ms": args.churn_hold.as_millis() as u64,
                "started": c.started.load(Ordering::Relaxed),
                "joined": c.joined.load(Ordering::Relaxed),
                "failed": c.failed.load(Ordering::Relaxed),
                "skipped": c.skipped.load(Ordering::Relaxed),
                "first_error": *c.first_error.lock(),
            })
        } else { Value::Null },
        "sent": sent,
        "send_rate": round3(sent as f64 / publish_secs),
        "publish_errors": errors,
        "publish_first_error": first_error,
        "publisher_behind": behind,
        "expected": expected,
        "delivered": totals.delivered,
        "unique": totals.unique,
        "loss": loss,
        "loss_ratio": if expected > 0 { loss as f64 / expected as f64 } else { 0.0 },
        "dups": totals.dups,
        "out_of_order": totals.out_of_order,
        "invalid": totals.invalid,
        "misrouted": totals.misrouted,
        "ended_early": ended_early.len(),
        "ended_early_first": ended_early.first(),
        "deliveries_per_sec": round3(totals.delivered as f64 / publish_secs),
        "wire_bytes": wire_bytes,
        "wire_bytes_per_delivery": if totals.delivered > 0 {
            json!(round3(wire_bytes as f64 / totals.delivered as f64))
        } else { Value::Null },
        "latency_us": percentiles(&latency),
        "bench_rss_kib": bench_rss,
        "bench_hwm_kib": bench_hwm,
        "window_s": round3(m.window.as_secs_f64()),
        "servers": servers,
        "server_cpu_us_per_delivery": if measured && totals.delivered > 0 {
            json!(round3(cpu_total as f64 / totals.delivered as f64))
        } else { Value::Null },
        // The servers' own code's share of it (utime); the rest is the kernel's.
        "server_user_us_per_delivery": if measured && totals.delivered > 0 {
            json!(round3(user_total as f64 / totals.delivered as f64))
        } else { Value::Null },
        "server_cpu_utilization": if measured {
            json!(round3(cpu_total as f64 / 1e6 / m.window.as_secs_f64()))
        } else { Value::Null },
        // Presence frames (join, leave, …) the clients got within the
        // window, and the servers' CPU per frame and per churn connection.
        "presence_frames": presence_frames,
        "presence_frames_before_window": m.events_before.iter().sum::<u64>(),
        "server_cpu_us_per_presence_frame": if measured && events_total > 0 {
            json!(round3(cpu_total as f64 / events_total as f64))
        } else { Value::Null },
        "server_cpu_us_per_churn_join": if measured && churn_joined > 0 {
            json!(round3(cpu_total as f64 / churn_joined as f64))
        } else { Value::Null },
        "server_cpu_us_window": if measured { json!(cpu_total) } else { Value::Null },
        "server_user_us_window": if measured { json!(user_total) } else { Value::Null },
        "server_rss_per_connection_bytes": if measured && all_connections > 0 {
            json!((rss_delta_total * 1024) / all_connections as i64)
        } else { Value::Null },
        // The receivers' group memberships (stalled clients' not counted).
        "server_rss_per_membership_bytes": if measured && memberships > 0 {
            json!((rss_delta_total * 1024) / memberships as i64)
        } else { Value::Null },
    })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn fmt_us(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}

fn print_human(s: &Value) {
    let get = |k: &str| s.get(k).cloned().unwrap_or(Value::Null);
    let c = &s["connect"];
    println!(
        "groupcast-bench summary{}",
        match s["label"].as_str() {
            Some(l) => format!(" ({l})"),
            None => String::new(),
        }
    );
    println!(
        "  clients     {} {}, {} groups each, {} memberships",
        s["transport"].as_str().unwrap_or("?"),
        if s["v1"].as_bool() == Some(true) {
            "groupcast.v1"
        } else {
            "raw"
        },
        get("groups_per_client"),
        get("memberships"),
    );
    println!(
        "  clients     {} connected ({} stalled), {} failed, in {} ms; per connection p50 {} p99 {}",
        c["connected"],
        c["stalled_connected"],
        c["failed"],
        c["total_ms"],
        c["per_connection_us"]["p50"],
        c["per_connection_us"]["p99"],
    );
    if let Some(e) = c["first_error"].as_str() {
        println!("  first connect error: {e}");
    }
    println!(
        "  published   {} msgs ({}/s), errors {}, behind schedule {}",
        get("sent"),
        get("send_rate"),
        get("publish_errors"),
        get("publisher_behind"),
    );
    println!(
        "  delivered   {} ({}/s); expected {}, loss {}, dups {}, out-of-order {}, invalid {}, misrouted {}",
        get("delivered"),
        get("deliveries_per_sec"),
        get("expected"),
        get("loss"),
        get("dups"),
        get("out_of_order"),
        get("invalid"),
        get("misrouted"),
    );
    println!(
        "  wire        {} bytes read by the clients after the handshakes, {} per delivery{}",
        get("wire_bytes"),
        get("wire_bytes_per_delivery"),
        if s["compression"].as_bool() == Some(true) {
            format!(
                " (compression offered, accepted by {} clients)",
                get("compression_accepted")
            )
        } else {
            String::new()
        },
    );
    let ch = &s["churn"];
    if !ch.is_null() {
        println!(
            "  churn       {} joins+leaves started, {} joined, {} failed, {} skipped (first error: {})",
            ch["started"], ch["joined"], ch["failed"], ch["skipped"], ch["first_error"]
        );
    }
    let frames = &s["presence_frames"];
    let frame_count: u64 = frames
        .as_object()
        .map_or(0, |f| f.values().filter_map(Value::as_u64).sum());
    if frame_count > 0 {
        println!(
            "  presence    {frame_count} frames in the window ({frames}), {} before it; \
             server CPU µs per frame {}",
            get("presence_frames_before_window"),
            get("server_cpu_us_per_presence_frame"),
        );
    }
    if s["ended_early"].as_u64().unwrap_or(0) > 0 {
        println!(
            "  ended early {} clients (first: {})",
            get("ended_early"),
            s["ended_early_first"]
        );
    }
    let l = &s["latency_us"];
    if !l.is_null() {
        println!(
            "  latency µs  p50 {} p90 {} p99 {} p999 {} max {}",
            l["p50"], l["p90"], l["p99"], l["p999"], l["max"]
        );
    }
    if let Some(servers) = s["servers"].as_array().filter(|v| !v.is_empty()) {
        for srv in servers {
            println!(
                "  server {}  RSS {} -> {} -> {} KiB, CPU {} µs in window ({} cores)",
                srv["pid"],
                srv["rss_before_kib"],
                srv["rss_connected_kib"],
                srv["rss_after_kib"],
                srv["cpu_us_window"],
                srv["cpu_utilization"],
            );
        }
        println!(
            "  servers     CPU µs per delivery {}, RSS per connection {} bytes, per membership {} bytes",
            get("server_cpu_us_per_delivery"),
            get("server_rss_per_connection_bytes"),
            get("server_rss_per_membership_bytes"),
        );
    }
    println!(
        "  bench       RSS {} KiB (peak {} KiB)",
        get("bench_rss_kib"),
        get("bench_hwm_kib")
    );
}

/// What the churn task needs.
struct ChurnPlan {
    rate: f64,
    duration: Duration,
    hold: Duration,
    max_open: usize,
    urls: Vec<(String, std::net::SocketAddr)>,
    sources: Vec<std::net::Ipv4Addr>,
    groups: Vec<String>,
}

impl Args {
    fn clone_churn(&self, addrs: &[std::net::SocketAddr]) -> ChurnPlan {
        ChurnPlan {
            rate: self.churn,
            duration: self.duration,
            hold: self.churn_hold,
            max_open: self.churn_max_open,
            urls: self
                .urls
                .iter()
                .map(|u| u.trim_end_matches('/').to_string())
                .zip(addrs.iter().copied())
                .collect(),
            sources: self.source_addrs.clone(),
            groups: (0..self.churn_groups)
                .map(|g| self.churn_template.replace("{}", &g.to_string()))
                .collect(),
        }
    }
}

/// Opens `plan.rate` short-lived connections per second for the duration.
async fn churn(plan: ChurnPlan, counts: Arc<clients::ChurnCounts>, stop: CancellationToken) {
    let open = Arc::new(Semaphore::new(plan.max_open));
    let total = (plan.rate * plan.duration.as_secs_f64()).round() as u64;
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut k = 0u64;
    while k < total && !stop.is_cancelled() && start.elapsed() < plan.duration * 2 {
        tick.tick().await;
        let due = ((plan.rate * start.elapsed().as_secs_f64()) as u64).min(total);
        while k < due {
            let i = k as usize;
            k += 1;
            let Ok(permit) = open.clone().try_acquire_owned() else {
                counts.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            // Like the clients: each group gets members on every node.
            let (url, addr) = &plan.urls[(i / plan.groups.len()) % plan.urls.len()];
            let group = &plan.groups[i % plan.groups.len()];
            let target = Target {
                url: format!("{url}/ws/{group}"),
                addr: *addr,
                source: plan.sources[i % plan.sources.len()],
                groups: Vec::new(),
                stalled: false,
            };
            tokio::spawn(clients::churn_one(
                target,
                plan.hold,
                counts.clone(),
                permit,
            ));
        }
    }
    // Wait for the last ones to leave (bounded by the caller).
    let _ = open.acquire_many(plan.max_open as u32).await;
}
