//! Publishers: Redis PUBLISH (or `FCALL groupcast_publish`, for groups
//! with history) or the HTTP API, paced to a rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::clients::now_us;
use crate::payload::{self, Stamp};

/// How messages leave the bench.
#[derive(Debug, Clone)]
pub enum Via {
    /// `fcall`: publish with `FCALL groupcast_publish 1 <group> <payload>`
    /// (appended to the group's history) instead of `PUBLISH`.
    Redis {
        url: String,
        prefix: String,
        fcall: bool,
    },
    Http {
        host_port: String,
    },
}

impl Via {
    pub fn parse(spec: &str, prefix: &str, fcall: bool) -> anyhow::Result<Via> {
        if spec.starts_with("redis://") {
            Ok(Via::Redis {
                url: spec.to_string(),
                prefix: prefix.to_string(),
                fcall,
            })
        } else if let Some(rest) = spec.strip_prefix("http://") {
            let host_port = rest.trim_end_matches('/').to_string();
            anyhow::ensure!(
                !host_port.contains('/'),
                "--publish http://host:port takes no path"
            );
            Ok(Via::Http { host_port })
        } else {
            anyhow::bail!("--publish must be redis://host:port or http://host:port")
        }
    }
}

/// One publisher's job.
pub struct Job {
    pub id: u16,
    pub groups: Arc<Vec<String>>,
    /// Group index of this publisher's first message.
    pub first_group: usize,
    pub rate: f64,
    pub duration: Duration,
    pub payload_len: usize,
    pub payload_kind: payload::PayloadKind,
    /// Messages sent by all publishers (progress).
    pub sent_total: Arc<AtomicU64>,
}

/// What one publisher did.
#[derive(Debug, Default)]
pub struct Report {
    /// Messages that left, per group index.
    pub sent_per_group: Vec<u64>,
    pub sent: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Messages the schedule asked for but the publisher could not send in time.
    pub behind: u64,
}

enum Conn {
    Redis(redis::aio::MultiplexedConnection, String, bool),
    Http(HttpConn),
}

/// Connects up front, so that connecting is not part of the paced run.
pub async fn connect(via: &Via) -> anyhow::Result<ConnHandle> {
    Ok(ConnHandle(match via {
        Via::Redis { url, prefix, fcall } => {
            let client = redis::Client::open(url.as_str()).context("invalid redis URL")?;
            let conn = tokio::time::timeout(
                Duration::from_secs(5),
                client.get_multiplexed_async_connection(),
            )
            .await
            .context("connecting to Redis timed out")?
            .with_context(|| format!("cannot connect to {url}"))?;
            Conn::Redis(conn, prefix.clone(), *fcall)
        }
        Via::Http { host_port } => Conn::Http(HttpConn::connect(host_port).await?),
    }))
}

pub struct ConnHandle(Conn);

/// Sends at `job.rate` for `job.duration`, round-robin over the groups.
pub async fn run(job: Job, conn: ConnHandle) -> Report {
    let mut conn = conn.0;
    let groups = job.groups.len();
    let mut report = Report {
        sent_per_group: vec![0; groups],
        ..Report::default()
    };
    let mut seqs = vec![0u64; groups];
    let total = (job.rate * job.duration.as_secs_f64()).round() as u64;
    // A publisher that falls behind gives up at 1.5× the duration.
    let give_up = job.duration + job.duration / 2 + Duration::from_secs(1);
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut scheduled = 0u64; // messages taken from the schedule
    let mut next_group = job.first_group % groups;
    let mut buf = Vec::with_capacity(job.payload_len);
    let mut batch: Vec<(usize, Vec<u8>)> = Vec::new();
    while scheduled < total {
        tick.tick().await;
        let elapsed = start.elapsed();
        if elapsed > give_up {
            break;
        }
        let due = ((job.rate * elapsed.as_secs_f64()) as u64).min(total);
        if due <= scheduled {
            continue;
        }
        let n = (due - scheduled).min(10_000);
        batch.clear();
        for _ in 0..n {
            let g = next_group;
            next_group = (next_group + 1) % groups;
            let stamp = Stamp {
                publisher: job.id,
                group: g as u32,
                seq: seqs[g],
                sent_us: now_us(),
            };
            seqs[g] += 1;
            payload::encode_kind(job.payload_kind, &stamp, job.payload_len, &mut buf);
            batch.push((g, buf.clone()));
        }
        scheduled += n;
        let result = match &mut conn {
            Conn::Redis(conn, prefix, fcall) => {
                let mut pipe = redis::pipe();
                for (g, body) in &batch {
                    if *fcall {
                        pipe.cmd("FCALL")
                            .arg("groupcast_publish")
                            .arg(1)
                            .arg(&job.groups[*g])
                            .arg(body.as_slice())
                            .ignore();
                    } else {
                        pipe.cmd("PUBLISH")
                            .arg(format!("{prefix}{}", job.groups[*g]))
                            .arg(body.as_slice())
                            .ignore();
                    }
                }
                pipe.query_async::<()>(conn)
                    .await
                    .map_err(|e| e.to_string())
            }
            Conn::Http(http) => {
                let mut result = Ok(());
                for (g, body) in &batch {
                    if let Err(error) = http.post(&job.groups[*g], body).await {
                        result = Err(format!("{error:#}"));
                        break;
                    }
                }
                result
            }
        };
        match result {
            Ok(()) => {
                for (g, _) in &batch {
                    report.sent_per_group[*g] += 1;
                }
                report.sent += n;
                job.sent_total.fetch_add(n, Ordering::Relaxed);
            }
            Err(error) => {
                // Not counted as sent: receivers are not expected to see them.
                // (A half-failed HTTP batch may still have delivered some.)
                report.errors += n;
                report.first_error.get_or_insert(error);
                if let Conn::Http(http) = &mut conn
                    && let Ok(fresh) = HttpConn::connect(&http.host_port.clone()).await
                {
                    *http = fresh;
                }
            }
        }
    }
    report.behind = total - scheduled;
    report
}

/// A minimal HTTP/1.1 keep-alive client for `POST /api/groups/<g>/messages`.
pub struct HttpConn {
    host_port: String,
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    line: String,
}

impl HttpConn {
    async fn connect(host_port: &str) -> anyhow::Result<HttpConn> {
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(host_port))
            .await
            .context("HTTP connect timed out")?
            .with_context(|| format!("cannot connect to {host_port}"))?;
        anyhow::ensure!(
            stream.peer_addr()?.ip().is_loopback(),
            "--publish: the bench only targets loopback addresses"
        );
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        Ok(HttpConn {
            host_port: host_port.to_string(),
            reader: BufReader::new(read),
            writer: write,
            line: String::new(),
        })
    }

    async fn post(&mut self, group: &str, body: &[u8]) -> anyhow::Result<()> {
        tokio::time::timeout(Duration::from_secs(10), self.post_inner(group, body))
            .await
            .context("HTTP publish timed out")?
    }

    async fn post_inner(&mut self, group: &str, body: &[u8]) -> anyhow::Result<()> {
        let mut request = format!(
            "POST /api/groups/{group}/messages HTTP/1.1\r\nHost: {}\r\n\
             Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            self.host_port,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        self.writer.write_all(&request).await?;
        self.line.clear();
        self.reader.read_line(&mut self.line).await?;
        let status: u16 = self
            .line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad HTTP status line {:?}", self.line.trim_end()))?;
        let mut length = 0usize;
        loop {
            self.line.clear();
            if self.reader.read_line(&mut self.line).await? == 0 {
                anyhow::bail!("connection closed in HTTP headers");
            }
            let header = self.line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().context("bad Content-Length")?;
            }
        }
        let mut response = vec![0; length];
        self.reader.read_exact(&mut response).await?;
        anyhow::ensure!(
            (200..300).contains(&status),
            "HTTP {status}: {}",
            String::from_utf8_lossy(&response)
        );
        Ok(())
    }
}
