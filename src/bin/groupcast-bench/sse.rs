//! The Server-Sent Events client (`--transport sse`): a plain HTTP/1.1
//! `GET <url>/sse/<group>` over the same bounded TCP connect as the
//! WebSocket clients, and a `text/event-stream` reader.
//!
//! Kept to what the bench needs and measures: the response head is
//! checked (200, `text/event-stream`), the body may be chunked (hyper
//! chunks a streamed body) or end with the connection, and the event
//! stream is parsed as the WHATWG spec says (lines end at `\r\n`, `\r` or
//! `\n`; `data:` lines joined by `\n`; an event ends at a blank line;
//! comment lines start with `:`). The parser is fed whatever each read
//! returned, so events and chunks split across reads anywhere; the
//! [`Dechunker`] and [`EventParser`] are plain state machines, tested
//! without sockets. Wire bytes are counted like the WebSocket clients':
//! everything read after the response head, chunk framing included.

use anyhow::{Context as _, bail, ensure};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::wire::Counted;

/// Largest response head.
const MAX_HEAD: usize = 16 * 1024;
/// Largest event (its data joined), or chunk-size line.
const MAX_EVENT: usize = 1 << 20;

/// One dispatched event: its type (`message` when the stream named none)
/// and its data, the `data:` lines joined by `\n`.
pub struct SseEvent<'a> {
    pub kind: &'a [u8],
    pub data: &'a [u8],
}

/// An open event stream.
pub struct SseStream<S> {
    pub stream: Counted<S>,
    buf: BytesMut,
    body: Vec<u8>,
    dechunker: Option<Dechunker>,
    parser: EventParser,
    /// Bytes read up to the end of the response head.
    pub head_bytes: u64,
}

impl<S: AsyncRead + AsyncWrite + Unpin> SseStream<S> {
    /// Sends `GET` for `url` (`http://host:port/path`) and reads the
    /// response head; the body's first bytes, if they came with it, are
    /// kept for [`SseStream::read_events`].
    pub async fn connect(stream: S, url: &str) -> anyhow::Result<SseStream<S>> {
        let rest = url.strip_prefix("http://").context("only http:// URLs")?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let mut stream = Counted::new(stream);
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\
             Cache-Control: no-cache\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buf = BytesMut::with_capacity(4096);
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            ensure!(buf.len() < MAX_HEAD, "response head too long");
            if stream.read_buf(&mut buf).await? == 0 {
                bail!("connection closed before the response head");
            }
        };
        let head = std::str::from_utf8(&buf[..end]).context("response head not UTF-8")?;
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap_or_default();
        ensure!(
            status.split_whitespace().nth(1) == Some("200"),
            "refused: {status}"
        );
        let (mut chunked, mut event_stream) = (false, false);
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                let value = value.trim().to_ascii_lowercase();
                if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked |= value.contains("chunked");
                } else if name.eq_ignore_ascii_case("content-type") {
                    event_stream |= value.starts_with("text/event-stream");
                }
            }
        }
        ensure!(event_stream, "the response is not text/event-stream");
        buf.advance(end);
        Ok(SseStream {
            head_bytes: stream.read_bytes() - buf.len() as u64,
            stream,
            buf,
            body: Vec::new(),
            dechunker: chunked.then(Dechunker::default),
            parser: EventParser::default(),
        })
    }

    /// Reads once (unless bytes are already waiting) and calls `on_event`
    /// for every event completed by what arrived. `Ok(false)`: the stream
    /// ended (the connection closed, or the last chunk came). Cancel-safe
    /// between reads: nothing read is lost.
    pub async fn read_events(
        &mut self,
        mut on_event: impl FnMut(SseEvent<'_>),
    ) -> anyhow::Result<bool> {
        if self.buf.is_empty() {
            self.buf.reserve(8 * 1024);
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Ok(false);
            }
        }
        let input = self.buf.split();
        let body: &[u8] = match &mut self.dechunker {
            Some(dechunker) => {
                self.body.clear();
                dechunker.feed(&input, &mut self.body)?;
                &self.body
            }
            None => &input,
        };
        self.parser.feed(body, &mut on_event)?;
        Ok(!self.dechunker.as_ref().is_some_and(Dechunker::done))
    }
}

/// Where a [`Dechunker`] is in `Transfer-Encoding: chunked`.
#[derive(Debug, Default, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk-size line (hex, maybe `;extensions`, then CRLF).
    #[default]
    Size,
    /// Inside a chunk: this many data bytes left.
    Data(u64),
    /// After a chunk's data: skipping its CRLF.
    DataEnd,
    /// The last (zero-size) chunk came; the rest is ignored.
    Done,
}

/// Undoes `Transfer-Encoding: chunked` over input split anywhere.
#[derive(Debug, Default)]
pub struct Dechunker {
    state: ChunkState,
    line: Vec<u8>,
}

impl Dechunker {
    /// Appends the body bytes in `input` to `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> anyhow::Result<()> {
        while !input.is_empty() {
            match self.state {
                ChunkState::Size => {
                    let end = input.iter().position(|&b| b == b'\n');
                    let take = end.map_or(input.len(), |i| i + 1);
                    ensure!(self.line.len() + take <= 1024, "chunk-size line too long");
                    self.line.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if end.is_some() {
                        let size = parse_chunk_size(&self.line)?;
                        self.line.clear();
                        self.state = if size == 0 {
                            ChunkState::Done
                        } else {
                            ChunkState::Data(size)
                        };
                    }
                }
                ChunkState::Data(left) => {
                    let take = (left.min(input.len() as u64)) as usize;
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    self.state = if take as u64 == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - take as u64)
                    };
                }
                ChunkState::DataEnd => {
                    // The CRLF after the data: skip to its LF.
                    match input.iter().position(|&b| b == b'\n') {
                        Some(i) => {
                            input = &input[i + 1..];
                            self.state = ChunkState::Size;
                        }
                        None => input = &[],
                    }
                }
                ChunkState::Done => return Ok(()),
            }
        }
        Ok(())
    }

    /// Whether the last chunk came.
    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

/// The size of a chunk-size line (`1a;ext\r\n`).
fn parse_chunk_size(line: &[u8]) -> anyhow::Result<u64> {
    let text = std::str::from_utf8(line).context("chunk-size line not ASCII")?;
    let hex = text.split(';').next().unwrap_or_default().trim();
    let size = u64::from_str_radix(hex, 16).with_context(|| format!("bad chunk size {hex:?}"))?;
    ensure!(
        size <= MAX_EVENT as u64,
        "chunk of {size} bytes is too large"
    );
    Ok(size)
}

/// The `text/event-stream` parser, over input split anywhere.
#[derive(Debug, Default)]
pub struct EventParser {
    /// The line being read.
    line: Vec<u8>,
    /// The last line ended with `\r`: a `\n` right after it ends nothing.
    after_cr: bool,
    /// The event being read: its `data:` lines, each followed by `\n`.
    data: Vec<u8>,
    /// Its `event:` type; empty for the default (`message`).
    kind: Vec<u8>,
}

impl EventParser {
    pub fn feed(
        &mut self,
        mut input: &[u8],
        on_event: &mut impl FnMut(SseEvent<'_>),
    ) -> anyhow::Result<()> {
        while !input.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if input[0] == b'\n' {
                    input = &input[1..];
                    continue;
                }
            }
            let Some(end) = input.iter().position(|&b| b == b'\n' || b == b'\r') else {
                ensure!(
                    self.line.len() + input.len() <= MAX_EVENT,
                    "event line too long"
                );
                self.line.extend_from_slice(input);
                return Ok(());
            };
            self.after_cr = input[end] == b'\r';
            self.line.extend_from_slice(&input[..end]);
            input = &input[end + 1..];
            let line = std::mem::take(&mut self.line);
            self.on_line(&line, on_event)?;
            self.line = line;
            self.line.clear();
        }
        Ok(())
    }

    fn on_line(
        &mut self,
        line: &[u8],
        on_event: &mut impl FnMut(SseEvent<'_>),
    ) -> anyhow::Result<()> {
        if line.is_empty() {
            // The end of an event; one without data is not dispatched.
            if !self.data.is_empty() {
                self.data.pop(); // the last line's `\n`
                let kind: &[u8] = if self.kind.is_empty() {
                    b"message"
                } else {
                    &self.kind
                };
                on_event(SseEvent {
                    kind,
                    data: &self.data,
                });
            }
            self.data.clear();
            self.kind.clear();
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(()); // a comment: the keep-alive
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                ensure!(self.data.len() + value.len() < MAX_EVENT, "event too large");
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            b"event" => {
                self.kind.clear();
                self.kind.extend_from_slice(value);
            }
            _ => {} // `id`, `retry`, unknown fields
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (type, data) of every event in `input` fed `step` bytes at a time.
    fn events(input: &[u8], step: usize) -> Vec<(String, String)> {
        let mut parser = EventParser::default();
        let mut got = Vec::new();
        for piece in input.chunks(step) {
            parser
                .feed(piece, &mut |e: SseEvent<'_>| {
                    got.push((
                        String::from_utf8_lossy(e.kind).into_owned(),
                        String::from_utf8_lossy(e.data).into_owned(),
                    ))
                })
                .unwrap();
        }
        got
    }

    #[test]
    fn events_are_parsed_whatever_the_reads_split() {
        let stream = b"retry: 1000\n\nevent: welcome\ndata: {\"type\":\"welcome\"}\n\n\
            :\n\nid: e:1\ndata: line one\r\ndata: line two\r\n\r\n\
            event: binary\rdata:AAEC/w==\r\rdata\n\nid: e:2\ndata: last\n\n";
        let expected = [
            ("welcome", "{\"type\":\"welcome\"}"),
            ("message", "line one\nline two"),
            ("binary", "AAEC/w=="),
            ("message", ""),
            ("message", "last"),
        ]
        .map(|(k, d)| (k.to_string(), d.to_string()));
        for step in [1, 2, 3, 7, stream.len()] {
            assert_eq!(
                events(stream, step),
                expected,
                "read {step} bytes at a time"
            );
        }
    }

    #[test]
    fn chunked_bodies_are_joined_whatever_the_reads_split() {
        let body = b"c\r\ndata: hello\n\r\n3;ext=1\r\n\nda\r\n5\r\nta: x\r\n2\r\n\n\n\r\n0\r\n\r\n";
        for step in [1, 2, 5, body.len()] {
            let mut dechunker = Dechunker::default();
            let mut out = Vec::new();
            for piece in body.chunks(step) {
                dechunker.feed(piece, &mut out).unwrap();
            }
            assert!(dechunker.done());
            assert_eq!(
                out, b"data: hello\n\ndata: x\n\n",
                "read {step} bytes at a time"
            );
        }
        assert!(
            Dechunker::default()
                .feed(b"zz\r\n", &mut Vec::new())
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_stream_is_read_over_http() {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(async move {
            let mut sse = SseStream::connect(client, "http://127.0.0.1:1/sse/g").await?;
            let mut got = Vec::new();
            while sse
                .read_events(|e| got.push(String::from_utf8_lossy(e.data).into_owned()))
                .await?
            {}
            anyhow::Ok((got, sse.stream.read_bytes() - sse.head_bytes))
        });
        let mut request = vec![0u8; 1024];
        let n = server.read(&mut request).await.unwrap();
        assert!(request[..n].starts_with(b"GET /sse/g HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"));
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                    transfer-encoding: chunked\r\n\r\n";
        let body = "d\r\ndata: one\ndat\r\n7\r\na: two\n\r\n1\r\n\n\r\n0\r\n\r\n";
        server
            .write_all(format!("{head}{body}").as_bytes())
            .await
            .unwrap();
        let (got, wire) = task.await.unwrap().unwrap();
        assert_eq!(got, ["one\ntwo"]);
        assert_eq!(wire, body.len() as u64);
    }

    #[tokio::test]
    async fn a_refusal_names_its_status() {
        let (client, mut server) = tokio::io::duplex(4096);
        let task = tokio::spawn(SseStream::connect(client, "http://h/sse/g"));
        let mut request = vec![0u8; 1024];
        let _ = server.read(&mut request).await.unwrap();
        server
            .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        let error = task.await.unwrap().err().unwrap();
        assert!(error.to_string().contains("503"), "{error}");
    }
}
