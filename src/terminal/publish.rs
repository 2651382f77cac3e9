//! `groupcast publish <group> [MESSAGE | -]`: one message, or stdin's lines
//! (one message each), to a group.
//!
//! Two routes, for two kinds of publisher:
//!
//! * **through a node's HTTP API** (`--url`, `--api-key`): what a backend
//!   or a script next to the cluster uses. The node checks the key and
//!   answers each message's offset for history groups.
//! * **straight to Redis** (`--redis-url`): for a job that can reach Redis
//!   but no node (a task runner inside the data network). It calls the
//!   Redis Function every node loads (`FCALL groupcast_publish`), so a
//!   history group keeps the message and gives it an offset exactly as a
//!   node's own publish would; a group no `--history` rule matches is
//!   published live by the same call. Where no node has loaded the
//!   function (no node with `--history` ever started on this Redis), it
//!   falls back to a plain `PUBLISH` on the group's channel, which every
//!   node delivers as a raw payload (`groupcast::envelope`).
//!
//! Messages go one at a time, each after the previous one was accepted, so
//! they arrive in the order of the input, and an error stops the command
//! at the message that failed (saying how many went before it) instead of
//! losing messages silently in the middle of a stream. `--rate` spaces
//! them out; long inputs get a progress line on stderr every second and
//! every run a summary at the end.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use groupcast::GroupName;
use groupcast::backend::channels::{ChannelNames, DEFAULT_CLUSTER_CHANNEL};
use groupcast::backend::redis::function::FUNCTION_NAME;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use super::{REQUEST_TIMEOUT, hint, node_url, redact, refusal};
use crate::cli::PublishArgs;

/// How often the progress line is refreshed.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Runs `groupcast publish`.
pub async fn run(args: PublishArgs) -> anyhow::Result<()> {
    let group = GroupName::new(&args.group)
        .map_err(|e| anyhow!("{:?} is not a group name: {e}", args.group))?;
    let mut source = if args.message == "-" {
        Source::lines(tokio::io::stdin())
    } else if args.message.is_empty() {
        bail!("the message is empty: give some text, or - to publish stdin's lines");
    } else {
        Source::One(Some(args.message.clone()))
    };
    let mut sink = match &args.redis_url {
        Some(url) => Sink::Redis(RedisSink::connect(url, &args.channel_prefix, &group).await?),
        None => Sink::Http(HttpSink::new(&args.url, args.api_key.clone(), &group)?),
    };
    let mut pace = args.rate.map(|rate| {
        let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        // After a slow publish, carry on at the rate: no burst to catch up.
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        pace
    });
    let mut progress = Progress::new(args.quiet);
    while let Some(text) = source.next().await? {
        if let Some(pace) = pace.as_mut() {
            pace.tick().await;
        }
        let sent = sink.send(&text).await.with_context(|| {
            format!(
                "message {} was not published ({} published before it)",
                progress.sent + 1,
                progress.sent
            )
        })?;
        progress.count(sent);
    }
    progress.finish(&group, &sink.describe(), source.skipped());
    Ok(())
}

/// Where the messages come from.
enum Source {
    /// The MESSAGE argument, until taken.
    One(Option<String>),
    /// stdin, line by line.
    Lines {
        reader: BufReader<Box<dyn AsyncRead + Unpin + Send>>,
        line: usize,
        skipped: usize,
    },
}

impl Source {
    fn lines(input: impl AsyncRead + Unpin + Send + 'static) -> Source {
        Source::Lines {
            reader: BufReader::new(Box::new(input)),
            line: 0,
            skipped: 0,
        }
    }

    /// The next message; `None` at the end of the input. Empty lines are
    /// skipped: a message cannot be empty (the API answers 400).
    async fn next(&mut self) -> anyhow::Result<Option<String>> {
        let (reader, line, skipped) = match self {
            Source::One(message) => return Ok(message.take()),
            Source::Lines {
                reader,
                line,
                skipped,
            } => (reader, line, skipped),
        };
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let read = reader
                .read_until(b'\n', &mut buf)
                .await
                .context("cannot read stdin")?;
            if read == 0 {
                return Ok(None);
            }
            *line += 1;
            // `\n` and `\r\n` both end a line.
            while matches!(buf.last(), Some(b'\n' | b'\r')) {
                buf.pop();
            }
            if buf.is_empty() {
                *skipped += 1;
                continue;
            }
            let text = String::from_utf8(std::mem::take(&mut buf))
                .map_err(|_| anyhow!("line {line} of stdin is not valid UTF-8"))?;
            return Ok(Some(text));
        }
    }

    fn skipped(&self) -> usize {
        match self {
            Source::One(_) => 0,
            Source::Lines { skipped, .. } => *skipped,
        }
    }
}

/// A published message's position, for history groups.
#[derive(Debug, Default, Deserialize)]
struct Sent {
    offset: Option<u64>,
    epoch: Option<String>,
}

/// Where the messages go.
enum Sink {
    Http(HttpSink),
    Redis(RedisSink),
}

impl Sink {
    async fn send(&mut self, text: &str) -> anyhow::Result<Sent> {
        match self {
            Sink::Http(sink) => sink.send(text).await,
            Sink::Redis(sink) => sink.send(text).await,
        }
    }

    /// For the summary: which route was taken.
    fn describe(&self) -> String {
        match self {
            Sink::Http(sink) => format!("through {}", sink.node),
            Sink::Redis(sink) if sink.function => {
                format!("to Redis at {} ({FUNCTION_NAME})", sink.url)
            }
            Sink::Redis(sink) => format!("to Redis at {} (PUBLISH {})", sink.url, sink.channel),
        }
    }
}

/// `POST /api/groups/<group>/messages`, `text/plain`.
struct HttpSink {
    client: reqwest::Client,
    /// The node's base URL, for messages.
    node: String,
    endpoint: String,
    api_key: Option<String>,
}

impl HttpSink {
    fn new(url: &str, api_key: Option<String>, group: &GroupName) -> anyhow::Result<HttpSink> {
        let base = node_url(url, false)?;
        let endpoint = format!(
            "{}/api/groups/{group}/messages",
            base.as_str().trim_end_matches('/')
        );
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(HttpSink {
            client,
            node: base.as_str().trim_end_matches('/').to_string(),
            endpoint,
            api_key,
        })
    }

    async fn send(&self, text: &str) -> anyhow::Result<Sent> {
        let mut request = self
            .client
            .post(&self.endpoint)
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(text.to_owned());
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the node at {}", self.node))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .with_context(|| format!("the node at {} did not finish its answer", self.node))?;
        if !status.is_success() {
            let reason = refusal(status.as_u16(), &body);
            let hint = hint(&reason).map(|h| format!(" ({h})")).unwrap_or_default();
            bail!("the node refused it: {reason}{hint}");
        }
        serde_json::from_slice(&body).with_context(|| {
            format!(
                "the node's answer is not a publish answer: {}",
                String::from_utf8_lossy(&body)
            )
        })
    }
}

/// `FCALL groupcast_publish 1 <group> <payload>`, or `PUBLISH` where the
/// function is missing.
struct RedisSink {
    conn: redis::aio::MultiplexedConnection,
    /// Redacted, for messages.
    url: String,
    group: GroupName,
    /// The group's channel, for the `PUBLISH` fallback.
    channel: String,
    /// Whether to call the function (until Redis says it has none).
    function: bool,
}

impl RedisSink {
    async fn connect(url: &str, prefix: &str, group: &GroupName) -> anyhow::Result<RedisSink> {
        let shown = redact(url);
        let names = ChannelNames::new(prefix, DEFAULT_CLUSTER_CHANNEL)
            .map_err(|e| anyhow!("--channel-prefix {prefix:?}: {e}"))?;
        let client =
            redis::Client::open(url).with_context(|| format!("{shown} is not a Redis URL"))?;
        let conn = tokio::time::timeout(REQUEST_TIMEOUT, client.get_multiplexed_async_connection())
            .await
            .map_err(|_| anyhow!("no answer within {REQUEST_TIMEOUT:?}"))
            // RedisError's text already holds its cause: flattened, so that
            // the one-line report does not say it twice.
            .and_then(|connected| connected.map_err(|e| anyhow!("{e}")))
            .with_context(|| format!("cannot connect to Redis at {shown}"))?;
        Ok(RedisSink {
            conn,
            url: shown,
            group: group.clone(),
            channel: names.group(group),
            function: true,
        })
    }

    async fn send(&mut self, text: &str) -> anyhow::Result<Sent> {
        if self.function {
            let mut fcall = redis::cmd("FCALL");
            fcall
                .arg(FUNCTION_NAME)
                .arg(1)
                .arg(self.group.as_str())
                .arg(text);
            match self.run::<redis::Value>(&fcall).await {
                // `{offset, epoch}`: a history group kept it.
                Ok(value @ redis::Value::Array(_)) => {
                    let (offset, epoch): (u64, String) = redis::from_redis_value(value)
                        .context("the function answered something other than {offset, epoch}")?;
                    return Ok(Sent {
                        offset: Some(offset),
                        epoch: Some(epoch),
                    });
                }
                // 0: no --history rule matches the group; published live.
                Ok(_) => return Ok(Sent::default()),
                Err(e) if function_missing(&e) => {
                    eprintln!(
                        "publish: Redis has no {FUNCTION_NAME} function (no node with \
                         --history has started on it): publishing with PUBLISH {}, live only",
                        self.channel
                    );
                    self.function = false;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("FCALL {FUNCTION_NAME} failed"));
                }
            }
        }
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(&self.channel).arg(text);
        self.run::<i64>(&publish)
            .await
            .context("PUBLISH failed")
            .map(|_receivers| Sent::default())
    }

    /// One command, bounded in time: a paused Redis must not hang the
    /// command forever.
    async fn run<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> anyhow::Result<T> {
        match tokio::time::timeout(REQUEST_TIMEOUT, cmd.query_async::<T>(&mut self.conn)).await {
            Ok(answer) => answer.with_context(|| format!("Redis at {}", self.url)),
            Err(_) => bail!(
                "Redis at {} did not answer within {REQUEST_TIMEOUT:?}",
                self.url
            ),
        }
    }
}

/// Whether Redis answered that the function is not loaded (`ERR Function
/// not found`).
fn function_missing(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<redis::RedisError>())
        .any(|e| {
            e.detail()
                .is_some_and(|d| d.to_ascii_lowercase().contains("function not found"))
        })
}

/// Counts, the progress line and the summary.
struct Progress {
    quiet: bool,
    /// A terminal gets one line rewritten in place; a pipe or a file gets
    /// a line per update.
    terminal: bool,
    start: Instant,
    last_shown: Instant,
    shown_any: bool,
    sent: u64,
    first: Option<Sent>,
    last: Option<Sent>,
}

impl Progress {
    fn new(quiet: bool) -> Progress {
        let now = Instant::now();
        Progress {
            quiet,
            terminal: std::io::stderr().is_terminal(),
            start: now,
            last_shown: now,
            shown_any: false,
            sent: 0,
            first: None,
            last: None,
        }
    }

    fn count(&mut self, sent: Sent) {
        self.sent += 1;
        if sent.offset.is_some() {
            if self.first.is_none() {
                self.first = Some(sent);
            } else {
                self.last = Some(sent);
            }
        }
        if self.quiet || self.last_shown.elapsed() < PROGRESS_EVERY {
            return;
        }
        self.last_shown = Instant::now();
        self.shown_any = true;
        let elapsed = self.start.elapsed().as_secs_f64();
        let line = format!(
            "publish: {} sent, {:.0}/s, {:.0}s",
            self.sent,
            self.sent as f64 / elapsed,
            elapsed
        );
        if self.terminal {
            eprint!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
    }

    fn finish(&self, group: &GroupName, route: &str, skipped: usize) {
        if self.quiet {
            return;
        }
        if self.terminal && self.shown_any {
            eprint!("\r\x1b[2K");
        }
        let elapsed = self.start.elapsed().as_secs_f64();
        let plural = if self.sent == 1 { "" } else { "s" };
        let mut summary = format!(
            "publish: {} message{plural} to {group} {route} in {elapsed:.1}s",
            self.sent
        );
        if elapsed >= 1.0 {
            summary.push_str(&format!(" ({:.0}/s)", self.sent as f64 / elapsed));
        }
        let offsets = |sent: &Sent| {
            sent.offset
                .map(|o| (o, sent.epoch.clone().unwrap_or_default()))
        };
        match (
            self.first.as_ref().and_then(offsets),
            self.last.as_ref().and_then(offsets),
        ) {
            (Some((first, epoch)), Some((last, _))) => {
                summary.push_str(&format!("; offsets {first}-{last} of epoch {epoch}"));
            }
            (Some((first, epoch)), None) => {
                summary.push_str(&format!("; offset {first} of epoch {epoch}"));
            }
            _ => {}
        }
        if skipped > 0 {
            summary.push_str(&format!("; {skipped} empty line(s) skipped"));
        }
        eprintln!("{summary}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stdin_lines_are_messages_without_their_line_ends() {
        let input: &'static [u8] = b"one\r\n\ntwo\nthree";
        let mut source = Source::lines(input);
        let mut got = Vec::new();
        while let Some(text) = source.next().await.unwrap() {
            got.push(text);
        }
        assert_eq!(got, ["one", "two", "three"]);
        assert_eq!(source.skipped(), 1);

        let bad: &'static [u8] = b"ok\n\xff\n";
        let mut source = Source::lines(bad);
        assert_eq!(source.next().await.unwrap().as_deref(), Some("ok"));
        let error = source.next().await.unwrap_err().to_string();
        assert!(error.contains("line 2"), "{error}");
    }
}
