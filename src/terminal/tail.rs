//! `groupcast tail <ws-url|group>`: print a group's messages, one line each,
//! for as long as it runs.
//!
//! It is a `groupcast.v1` client (`docs/protocol.md`), because only that
//! protocol tells a client where it is: every message of a history group
//! carries its `(epoch, offset)`, and the client keeps the last one as its
//! position. When the connection drops (a node restarts, a load balancer
//! times out, the node closes with 4010 because its own Redis link lost
//! messages) it reconnects with `?since=<offset>&epoch=<epoch>` and the
//! node sends exactly what was missed: a line is neither lost nor printed
//! twice. When that is impossible (the history was trimmed or lost, or the
//! group keeps none) it says so on stderr instead of carrying on silently.
//!
//! Reconnects wait with exponential backoff and full jitter, as the
//! protocol asks of every client (many tails of one node must not all come
//! back in the same instant), except after 4010, which asks to resume at
//! once. A refusal that retrying cannot fix (a 4xx such as a missing token
//! or a bad group, a close with 1008 or 4003) ends the command with the
//! node's own reason and a non-zero exit instead of retrying forever.
//!
//! Output goes to stdout, one message per line, flushed per line so that
//! pipes (`| grep`, `| tee`) see each line at once. Notes (joined,
//! reconnecting) go to stderr. Ctrl-C and a closed pipe (`| head`) end it
//! with exit status 0.

use std::io::{ErrorKind, Write};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use futures_util::StreamExt;
use groupcast::GroupName;
use groupcast::close_code;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use url::Url;

use super::{REQUEST_TIMEOUT, hint, node_url, refusal};
use crate::cli::TailArgs;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The first reconnect waits up to this long (the JavaScript client's
/// default too)…
const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// …and the delay doubles up to this. Shorter than the JavaScript client's
/// 30 s: someone is watching a terminal.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Runs `groupcast tail` until Ctrl-C, a closed stdout, or an error that
/// retrying cannot fix.
pub async fn run(args: TailArgs) -> anyhow::Result<()> {
    // Installed first, so that a Ctrl-C at any point (connecting, waiting
    // to reconnect, reading) is seen: a signal that arrived while no
    // `ctrl_c()` future was alive would otherwise be lost.
    let interrupted = CancellationToken::new();
    let on_signal = interrupted.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
        }
    });

    let (base, group) = target(&args)?;
    let mut tail = Tail {
        base,
        group,
        position: None,
        joined: false,
        json: args.json,
        quiet: args.quiet,
    };
    let token = args.token.as_deref();
    let mut backoff = Backoff::default();
    loop {
        let url = tail.url();
        let connected = tokio::select! {
            connected = connect(&url, token) => connected,
            () = interrupted.cancelled() => return Ok(()),
        };
        let delay = match connected {
            Ok(socket) => {
                let ended = tail.follow(socket, &interrupted).await?;
                if tail.joined {
                    // A welcome came: the next failure starts small again.
                    backoff = Backoff::default();
                }
                match ended {
                    Ended::Stopped => return Ok(()),
                    Ended::Closed { code, reason } => {
                        let what = format!("the node closed the connection ({code} {reason})");
                        if is_final(code) {
                            bail!("{what}; reconnecting would not help");
                        }
                        let delay = match code {
                            // The node asks to resume at once: its history
                            // holds what its live stream lost.
                            close_code::RESUME => Duration::ZERO,
                            // Too slow, or the node is full: not right away.
                            close_code::TRY_AGAIN_LATER => backoff.long(),
                            _ => backoff.next(),
                        };
                        tail.note(&format!("{what}; reconnecting in {}", shown(delay)));
                        delay
                    }
                    Ended::Dropped(why) => {
                        let delay = backoff.next();
                        tail.note(&format!(
                            "connection lost ({why}); reconnecting in {}",
                            shown(delay)
                        ));
                        delay
                    }
                }
            }
            Err(Refusal::Final(reason)) => {
                let hint = hint(&reason)
                    .map(|h| format!("\n  {h}"))
                    .unwrap_or_default();
                bail!("the node refused {url}: {reason}{hint}");
            }
            Err(Refusal::Unreachable(why)) if !tail.joined => {
                // Never connected: most likely the wrong address, or no
                // node running. Say so rather than wait for one.
                bail!("cannot connect to {url}: {why} (is a node running there?)");
            }
            Err(Refusal::Unreachable(why) | Refusal::Retry(why)) => {
                let delay = backoff.next();
                tail.note(&format!(
                    "cannot connect ({why}); retrying in {}",
                    shown(delay)
                ));
                delay
            }
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = interrupted.cancelled() => return Ok(()),
        }
    }
}

/// The URL to join and the group it names: a WebSocket URL as given (with
/// its query: a `token`, say), or a bare group on `--url`. `--history N`
/// replaces any `history` of the URL.
fn target(args: &TailArgs) -> anyhow::Result<(Url, String)> {
    let mut url = if args.target.contains("://") {
        node_url(&args.target, true)?
    } else {
        let group = GroupName::new(&args.target)
            .map_err(|e| anyhow!("{:?} is not a group name: {e}", args.target))?;
        let mut url = node_url(&args.url, true)?;
        let path = format!("{}/ws/{group}", url.path().trim_end_matches('/'));
        url.set_path(&path);
        url
    };
    let group = match url.path().split_once("/ws/") {
        Some((_, group)) if !group.is_empty() => group.to_string(),
        _ => bail!("{url} is not a group's WebSocket URL (ws://host:8080/ws/<group>)"),
    };
    if let Some(n) = args.history {
        set_query(&mut url, &["history"], &[("history", n.to_string())]);
    }
    Ok((url, group))
}

/// `url` without the query parameters `drop`, plus `add`.
fn set_query(url: &mut Url, drop: &[&str], add: &[(&str, String)]) {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(key, _)| !drop.contains(&key.as_ref()))
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    url.set_query(None);
    if kept.is_empty() && add.is_empty() {
        return;
    }
    let mut query = url.query_pairs_mut();
    for (key, value) in &kept {
        query.append_pair(key, value);
    }
    for (key, value) in add {
        query.append_pair(key, value);
    }
}

/// Close codes after which reconnecting would be closed again the same way
/// (`docs/protocol.md`, "Close codes and what to do"), and those that say
/// not to (4500–4999: 4509 is a disconnect for good). 4001 (token
/// expired) is among them: this client has no way to get a new token.
fn is_final(code: u16) -> bool {
    matches!(
        code,
        close_code::PROTOCOL_ERROR
            | close_code::INVALID_PAYLOAD
            | close_code::POLICY
            | close_code::TOKEN_EXPIRED
            | close_code::REFRESH_REJECTED
    ) || groupcast::is_final_code(code)
}

/// Why a handshake did not give a socket.
enum Refusal {
    /// Nothing answered (connection refused, reset, no answer in time).
    Unreachable(String),
    /// The node answered but cannot take the client now (429, 5xx).
    Retry(String),
    /// The node refused for a reason that retrying cannot fix (4xx), or
    /// the handshake itself is wrong.
    Final(String),
}

/// Opens a `groupcast.v1` connection to `url`.
async fn connect(url: &Url, token: Option<&str>) -> Result<Socket, Refusal> {
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| Refusal::Final(e.to_string()))?;
    let headers = request.headers_mut();
    headers.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(groupcast::protocol::V1),
    );
    if let Some(token) = token {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| Refusal::Final("the token holds characters no header may".into()))?;
        headers.insert(header::AUTHORIZATION, value);
    }
    let connected =
        tokio::time::timeout(REQUEST_TIMEOUT, tokio_tungstenite::connect_async(request))
            .await
            .map_err(|_| {
                Refusal::Unreachable(format!("no answer within {}", shown(REQUEST_TIMEOUT)))
            })?;
    match connected {
        Ok((socket, _response)) => Ok(socket),
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let reason = refusal(status, response.body().as_deref().unwrap_or_default());
            // 408, 429 and 5xx are "not now"; every other status is the
            // client's fault (400 bad query, 401 token, 403 not allowed).
            if status == 408 || status == 429 || status >= 500 {
                Err(Refusal::Retry(reason))
            } else {
                Err(Refusal::Final(reason))
            }
        }
        Err(tungstenite::Error::Io(e)) => Err(Refusal::Unreachable(e.to_string())),
        Err(other) => Err(Refusal::Final(format!(
            "the WebSocket handshake failed: {other}"
        ))),
    }
}

/// How a connection ended.
enum Ended {
    /// Ctrl-C, or stdout closed: the command is done.
    Stopped,
    /// The node sent a close frame.
    Closed { code: u16, reason: String },
    /// The connection broke without a close frame.
    Dropped(String),
}

/// A message's place in its group: what to resume from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Position {
    epoch: String,
    offset: u64,
}

/// One `groupcast.v1` frame from the node. Unknown types and fields are
/// ignored, as the protocol asks (later revisions may add some).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Frame {
    Welcome {
        node: String,
        group: String,
        epoch: Option<String>,
        offset: Option<u64>,
        history: bool,
        #[serde(default)]
        recovered: Option<bool>,
    },
    Message {
        data: String,
        offset: Option<u64>,
        epoch: Option<String>,
        #[serde(default)]
        binary: bool,
    },
    Reset {
        epoch: Option<String>,
        offset: Option<u64>,
        #[serde(default)]
        reason: String,
    },
    #[serde(other)]
    Other,
}

/// One printed message with `--json`.
#[derive(Serialize)]
struct JsonLine<'a> {
    group: &'a str,
    offset: Option<u64>,
    epoch: Option<&'a str>,
    data: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    binary: bool,
}

/// The client's state across connections.
struct Tail {
    /// The URL of the first join (a backlog or a resume the user asked for).
    base: Url,
    group: String,
    /// The last message printed (history groups), or the top offset joined
    /// at: every later connection resumes from it.
    position: Option<Position>,
    /// Whether a welcome ever came (so a later one is a reconnect).
    joined: bool,
    json: bool,
    quiet: bool,
}

impl Tail {
    /// Where to connect now: a resume from the position once there is one,
    /// else the first URL again (so a backlog asked for and not yet
    /// received is asked for again).
    fn url(&self) -> Url {
        let mut url = self.base.clone();
        if let Some(position) = &self.position {
            set_query(
                &mut url,
                &["history", "since", "epoch"],
                &[
                    ("since", position.offset.to_string()),
                    ("epoch", position.epoch.clone()),
                ],
            );
        }
        url
    }

    /// Whether the first URL asked for a backlog (`?history=N`).
    fn asked_backlog(&self) -> bool {
        self.base
            .query_pairs()
            .any(|(key, value)| key == "history" && value != "0")
    }

    /// Reads frames until the connection ends.
    async fn follow(
        &mut self,
        mut socket: Socket,
        interrupted: &CancellationToken,
    ) -> anyhow::Result<Ended> {
        loop {
            let frame = tokio::select! {
                frame = socket.next() => frame,
                () = interrupted.cancelled() => {
                    // A polite close, but do not hang on a dead peer.
                    let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
                    return Ok(Ended::Stopped);
                }
            };
            match frame {
                None => return Ok(Ended::Dropped("the connection ended".into())),
                Some(Err(e)) => return Ok(Ended::Dropped(e.to_string())),
                Some(Ok(Message::Text(text))) => {
                    if !self.on_frame(text.as_str())? {
                        return Ok(Ended::Stopped);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((close_code::NORMAL, String::new()));
                    return Ok(Ended::Closed { code, reason });
                }
                // Pings are answered by tungstenite; `groupcast.v1` sends
                // nothing as binary.
                Some(Ok(_)) => {}
            }
        }
    }

    /// Handles one frame; false when stdout is closed.
    fn on_frame(&mut self, text: &str) -> anyhow::Result<bool> {
        let frame: Frame = serde_json::from_str(text)
            .with_context(|| format!("the node sent a frame that is not groupcast.v1: {text:?}"))?;
        match frame {
            Frame::Welcome {
                node,
                group,
                epoch,
                offset,
                history,
                recovered,
            } => {
                let top = epoch
                    .zip(offset)
                    .map(|(epoch, offset)| Position { epoch, offset });
                self.on_welcome(&node, &group, history, top, recovered);
                Ok(true)
            }
            Frame::Message {
                data,
                offset,
                epoch,
                binary,
            } => self.on_message(&data, offset, epoch, binary),
            Frame::Reset {
                epoch,
                offset,
                reason,
            } => {
                self.warn(&format!(
                    "the node cannot deliver some messages ({reason}): messages may be missing"
                ));
                if let Some(top) = epoch
                    .zip(offset)
                    .map(|(epoch, offset)| Position { epoch, offset })
                {
                    self.position = Some(top);
                }
                Ok(true)
            }
            Frame::Other => Ok(true),
        }
    }

    /// The welcome says where this connection starts (the table in
    /// `docs/protocol.md`, "What a client does with each welcome").
    fn on_welcome(
        &mut self,
        node: &str,
        group: &str,
        history: bool,
        top: Option<Position>,
        recovered: Option<bool>,
    ) {
        let reconnect = self.joined;
        self.joined = true;
        if !history {
            if reconnect {
                self.warn(
                    "reconnected; this group keeps no history, so messages published while \
                     disconnected are missing",
                );
            }
            self.note(&format!(
                "joined {group} on {node} (the group keeps no history)"
            ));
            return;
        }
        match recovered {
            Some(true) => {}
            Some(false) => {
                let from = self
                    .position
                    .as_ref()
                    .map(|p| format!(" offset {} of epoch {}", p.offset, p.epoch))
                    .unwrap_or_default();
                self.warn(&format!(
                    "cannot resume from{from}: the history no longer holds it (trimmed, \
                     expired or lost); messages may be missing, continuing with the live ones"
                ));
                self.position = top.clone();
            }
            // A fresh join: live from the top, unless a backlog was asked
            // for (then the position is the last backlog message).
            None if self.position.is_none() && !self.asked_backlog() => {
                self.position = top.clone();
            }
            None => {}
        }
        let at = top
            .map(|p| format!("offset {} of epoch {}", p.offset, p.epoch))
            .unwrap_or_else(|| "no messages yet".into());
        let how = if recovered == Some(true) {
            "resumed"
        } else {
            "joined"
        };
        self.note(&format!("{how} {group} on {node} ({at})"));
    }

    /// Prints a message unless it was printed before; false when stdout is
    /// closed.
    fn on_message(
        &mut self,
        data: &str,
        offset: Option<u64>,
        epoch: Option<String>,
        binary: bool,
    ) -> anyhow::Result<bool> {
        if let (Some(offset), Some(epoch)) = (offset, &epoch) {
            // The protocol's rule: an offset at or below the last one, in
            // the same epoch, was seen already. The node sends nothing
            // twice; the check costs a comparison.
            if let Some(last) = &self.position
                && last.epoch == *epoch
                && offset <= last.offset
            {
                return Ok(true);
            }
            self.position = Some(Position {
                epoch: epoch.clone(),
                offset,
            });
        }
        let mut line = if self.json {
            serde_json::to_vec(&JsonLine {
                group: &self.group,
                offset,
                epoch: epoch.as_deref(),
                data,
                binary,
            })
            .context("cannot write a message as JSON")?
        } else if binary {
            // The bytes as published; base64 only if the node's were not.
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .unwrap_or_else(|_| data.as_bytes().to_vec())
        } else {
            data.as_bytes().to_vec()
        };
        line.push(b'\n');
        let mut stdout = std::io::stdout().lock();
        match stdout.write_all(&line).and_then(|()| stdout.flush()) {
            Ok(()) => Ok(true),
            // `groupcast tail g | head -3`: the reader is done, so are we.
            Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(e).context("cannot write to stdout"),
        }
    }

    /// A note on stderr, unless `--quiet`.
    fn note(&self, text: &str) {
        if !self.quiet {
            eprintln!("tail: {text}");
        }
    }

    /// A warning on stderr, even with `--quiet`: lines may be missing.
    fn warn(&self, text: &str) {
        eprintln!("tail: warning: {text}");
    }
}

/// Exponential backoff with full jitter (`docs/protocol.md`,
/// "Reconnecting"): attempt n waits a random time in
/// `[0, min(max, min_delay × 2^n)]`.
#[derive(Default)]
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let cap = BACKOFF_MIN
            .saturating_mul(1 << self.attempt.min(16))
            .min(BACKOFF_MAX);
        self.attempt = self.attempt.saturating_add(1);
        cap.mul_f64(rand::random::<f64>())
    }

    /// For "try again later" (1013): between half the maximum and the
    /// maximum, as the JavaScript client does.
    fn long(&mut self) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        BACKOFF_MAX.mul_f64(0.5 + rand::random::<f64>() * 0.5)
    }
}

/// A delay as people read it (`1.2s`).
fn shown(delay: Duration) -> String {
    format!("{:.1}s", delay.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(target: &str, history: Option<u64>) -> TailArgs {
        TailArgs {
            target: target.into(),
            url: crate::cli::DEFAULT_NODE_URL.into(),
            history,
            json: false,
            token: None,
            quiet: true,
        }
    }

    fn tail(target: &str, history: Option<u64>) -> Tail {
        let (base, group) = super::target(&args(target, history)).unwrap();
        Tail {
            base,
            group,
            position: None,
            joined: false,
            json: false,
            quiet: true,
        }
    }

    #[test]
    fn a_bare_group_is_joined_on_the_default_node() {
        let t = tail("task/42", Some(5));
        assert_eq!(t.url().as_str(), "ws://127.0.0.1:8080/ws/task/42?history=5");
        assert_eq!(t.group, "task/42");
        assert!(super::target(&args("bad//name", None)).is_err());
        assert!(super::target(&args("ws://h:1/nope", None)).is_err());
    }

    #[test]
    fn reconnects_resume_from_the_last_message_and_keep_other_parameters() {
        let mut t = tail("ws://h:1/ws/g?token=abc&history=3", Some(10));
        assert_eq!(t.url().as_str(), "ws://h:1/ws/g?token=abc&history=10");
        t.on_welcome("n", "g", true, Some(pos("e1", 50)), None);
        // A backlog was asked for: no position until its first message.
        assert_eq!(t.position, None);
        t.position = Some(pos("e1", 47));
        assert_eq!(
            t.url().as_str(),
            "ws://h:1/ws/g?token=abc&since=47&epoch=e1"
        );
    }

    #[test]
    fn a_fresh_join_starts_at_the_top_and_a_failed_resume_moves_there() {
        let mut t = tail("g", None);
        t.on_welcome("n", "g", true, Some(pos("e1", 7)), None);
        assert_eq!(t.position, Some(pos("e1", 7)));
        t.on_welcome("n", "g", true, Some(pos("e2", 1)), Some(false));
        assert_eq!(t.position, Some(pos("e2", 1)));
        t.on_welcome("n", "g", true, Some(pos("e2", 9)), Some(true));
        assert_eq!(
            t.position,
            Some(pos("e2", 1)),
            "recovered: keep the position"
        );
    }

    #[test]
    fn final_close_codes_stop_and_the_others_reconnect() {
        assert!(is_final(close_code::POLICY));
        assert!(is_final(close_code::REFRESH_REJECTED));
        assert!(!is_final(close_code::GOING_AWAY));
        assert!(!is_final(close_code::RESUME));
        assert!(!is_final(close_code::TRY_AGAIN_LATER));
        assert!(is_final(close_code::DISCONNECTED_FINAL));
        assert!(is_final(4999));
        assert!(!is_final(close_code::DISCONNECTED));
    }

    #[test]
    fn backoff_grows_to_its_maximum_with_jitter() {
        let mut backoff = Backoff::default();
        for _ in 0..40 {
            assert!(backoff.next() <= BACKOFF_MAX);
        }
        let long = backoff.long();
        assert!(long >= BACKOFF_MAX / 2 && long <= BACKOFF_MAX);
    }

    fn pos(epoch: &str, offset: u64) -> Position {
        Position {
            epoch: epoch.into(),
            offset,
        }
    }
}
