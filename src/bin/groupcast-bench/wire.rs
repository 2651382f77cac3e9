//! The bytes on the wire: a counting stream adapter (every client's socket
//! is wrapped in one, so wire bytes per delivery are measured whatever the
//! server sends), and, for `--compression`, a small WebSocket client of its
//! own (handshake offering `permessage-deflate`, frame reader, inflate)
//! since tungstenite rejects frames with RSV1 set.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use anyhow::{Context as _, bail, ensure};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// A stream that counts the bytes read from it.
pub struct Counted<S> {
    inner: S,
    read: u64,
}

impl<S> Counted<S> {
    pub fn new(inner: S) -> Counted<S> {
        Counted { inner, read: 0 }
    }

    /// Bytes read so far.
    pub fn read_bytes(&self) -> u64 {
        self.read
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        self.read += (buf.filled().len() - before) as u64;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Largest message (after inflating) the raw client accepts.
const MAX_MESSAGE: usize = 1 << 20;
/// Largest handshake response.
const MAX_HEAD: usize = 16 * 1024;

/// What the raw client reads.
pub enum Event {
    /// A text or binary message (inflated if it was compressed).
    Data,
    /// A close frame: (code, reason).
    Close(Option<(u16, String)>),
}

/// A WebSocket client over a raw stream: its own handshake and frame
/// reader; answers pings, inflates `permessage-deflate` messages.
pub struct RawWs<S> {
    pub stream: Counted<S>,
    buf: BytesMut,
    /// The current message (fragments joined, inflated).
    pub message: Vec<u8>,
    compressed: Vec<u8>,
    /// `Some` when the server accepted permessage-deflate. Never reset: a
    /// message compressed without context takeover refers to nothing
    /// before it and ends on a byte boundary (sync flush), so one inflater
    /// reads both kinds, and a reset per message would cost more than the
    /// inflating (it rebuilds the decoder's tables).
    inflate: Option<flate2::Decompress>,
    /// Bytes read before the first frame (the HTTP response).
    pub handshake_bytes: u64,
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawWs<S> {
    /// The opening handshake for `url` (`ws://host:port/path`), offering
    /// `permessage-deflate; client_no_context_takeover`.
    pub async fn connect(stream: S, url: &str) -> anyhow::Result<RawWs<S>> {
        let rest = url.strip_prefix("ws://").context("only ws:// URLs")?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let key = tungstenite::handshake::client::generate_key();
        let mut stream = Counted::new(stream);
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buf = BytesMut::with_capacity(4096);
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            ensure!(buf.len() < MAX_HEAD, "handshake response too long");
            if stream.read_buf(&mut buf).await? == 0 {
                bail!("connection closed during the handshake");
            }
        };
        let head = std::str::from_utf8(&buf[..end]).context("handshake response not UTF-8")?;
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap_or_default();
        ensure!(
            status.split_whitespace().nth(1) == Some("101"),
            "handshake refused: {status}"
        );
        let (mut accept, mut extensions) = (None, String::new());
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("sec-websocket-accept") {
                    accept = Some(value.to_string());
                } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
                    extensions.push_str(value);
                    extensions.push(',');
                }
            }
        }
        ensure!(
            accept.as_deref()
                == Some(tungstenite::handshake::derive_accept_key(key.as_bytes()).as_str()),
            "bad Sec-WebSocket-Accept"
        );
        let mut inflate = None;
        for ext in extensions.split(',').filter(|e| !e.trim().is_empty()) {
            let mut params = ext.split(';').map(str::trim);
            ensure!(
                params.next() == Some("permessage-deflate") && inflate.is_none(),
                "server answered an extension not offered: {ext}"
            );
            inflate = Some(flate2::Decompress::new(false));
        }
        buf.advance(end);
        Ok(RawWs {
            handshake_bytes: stream.read_bytes() - buf.len() as u64,
            stream,
            buf,
            message: Vec::new(),
            compressed: Vec::new(),
            inflate,
        })
    }

    /// Whether the server accepted permessage-deflate.
    pub fn compressed(&self) -> bool {
        self.inflate.is_some()
    }

    /// Reads up to the next message or close; the message is in
    /// `self.message`.
    pub async fn next(&mut self) -> anyhow::Result<Event> {
        self.message.clear();
        self.compressed.clear();
        let mut in_message = false;
        let mut rsv1 = false;
        loop {
            let Header {
                fin,
                opcode,
                rsv1: frame_rsv1,
                len,
                size: header,
            } = loop {
                if let Some(h) = parse_header(&self.buf)? {
                    break h;
                }
                self.fill().await?;
            };
            ensure!(
                len <= MAX_MESSAGE as u64,
                "frame of {len} bytes is too large"
            );
            let total = header + len as usize;
            while self.buf.len() < total {
                self.fill().await?;
            }
            let payload = &self.buf[header..total];
            match opcode {
                0x8 => {
                    let close = (payload.len() >= 2).then(|| {
                        let code = u16::from_be_bytes([payload[0], payload[1]]);
                        (code, String::from_utf8_lossy(&payload[2..]).into_owned())
                    });
                    return Ok(Event::Close(close));
                }
                0x9 => {
                    let pong = masked_frame(0xA, payload);
                    self.buf.advance(total);
                    self.stream.write_all(&pong).await?;
                    continue;
                }
                0xA => {
                    self.buf.advance(total);
                    continue;
                }
                0x1 | 0x2 if !in_message => {
                    in_message = true;
                    rsv1 = frame_rsv1;
                }
                0x0 if in_message => {}
                _ => bail!("unexpected frame opcode {opcode:#x}"),
            }
            let target = if rsv1 {
                &mut self.compressed
            } else {
                &mut self.message
            };
            ensure!(
                target.len() + payload.len() <= MAX_MESSAGE,
                "message too large"
            );
            target.extend_from_slice(payload);
            self.buf.advance(total);
            if fin {
                break;
            }
        }
        if rsv1 {
            self.inflate_message()?;
        }
        Ok(Event::Data)
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        self.buf.reserve(8 * 1024);
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            bail!("connection ended");
        }
        Ok(())
    }

    /// RFC 7692: append `00 00 ff ff`, raw inflate into `self.message`,
    /// at most [`MAX_MESSAGE`] bytes.
    fn inflate_message(&mut self) -> anyhow::Result<()> {
        let Some(inflater) = &mut self.inflate else {
            bail!("RSV1 frame without permessage-deflate");
        };
        self.compressed.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let input = &self.compressed[..];
        let mut pos = 0;
        self.message.reserve(input.len() * 3);
        loop {
            let before = inflater.total_in();
            inflater
                .decompress_vec(
                    &input[pos..],
                    &mut self.message,
                    flate2::FlushDecompress::Sync,
                )
                .context("inflate failed")?;
            pos += (inflater.total_in() - before) as usize;
            if pos == input.len() && self.message.len() < self.message.capacity() {
                return Ok(());
            }
            ensure!(
                self.message.len() < MAX_MESSAGE,
                "inflated message too large"
            );
            self.message.reserve(self.message.capacity().max(256));
        }
    }
}

/// A frame's header.
struct Header {
    fin: bool,
    opcode: u8,
    rsv1: bool,
    /// Payload length.
    len: u64,
    /// Header length.
    size: usize,
}

/// The header of the frame at the start of `buf`, or `None` if it is not
/// all there yet.
fn parse_header(buf: &[u8]) -> anyhow::Result<Option<Header>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    ensure!(buf[1] & 0x80 == 0, "the server sent a masked frame");
    let (len, header) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into()?), 10),
        126 | 127 => return Ok(None),
        n => (n as u64, 2),
    };
    Ok(Some(Header {
        fin: buf[0] & 0x80 != 0,
        opcode: buf[0] & 0x0f,
        rsv1: buf[0] & 0x40 != 0,
        len,
        size: header,
    }))
}

/// A masked client frame (control frames only: payload < 126 bytes).
fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(125)];
    let key: [u8; 4] = rand::random();
    let mut out = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server frame carrying `payload` deflated (RFC 7692), as the
    /// servers do it.
    fn deflated_frame(payload: &[u8]) -> Vec<u8> {
        let mut c = flate2::Compress::new(flate2::Compression::default(), false);
        let mut out = Vec::with_capacity(payload.len() + 64);
        c.compress_vec(payload, &mut out, flate2::FlushCompress::Sync)
            .unwrap();
        assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
        out.truncate(out.len() - 4);
        let mut frame = vec![0xC1, out.len() as u8];
        frame.extend_from_slice(&out);
        frame
    }

    #[tokio::test]
    async fn handshake_inflate_fragments_ping_and_close() {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(async move {
            let mut ws = RawWs::connect(client, "ws://127.0.0.1:1/ws/g").await?;
            assert!(ws.compressed());
            let mut got = Vec::new();
            loop {
                match ws.next().await? {
                    Event::Data => got.push(String::from_utf8(ws.message.clone())?),
                    Event::Close(close) => {
                        got.push(format!("{close:?}"));
                        break;
                    }
                }
            }
            anyhow::Ok((got, ws.stream.read_bytes() - ws.handshake_bytes))
        });
        let mut head = vec![0u8; 1024];
        let n = server.read(&mut head).await.unwrap();
        let head = String::from_utf8_lossy(&head[..n]).into_owned();
        assert!(head.contains("permessage-deflate; client_no_context_takeover"));
        let key = head
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap();
        let accept = tungstenite::handshake::derive_accept_key(key.trim().as_bytes());
        let mut frames = format!(
            "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: {accept}\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\r\n"
        )
        .into_bytes();
        let response_len = frames.len();
        frames.extend(deflated_frame(b"hello hello hello hello"));
        frames.extend([0x89, 0x01, b'p']); // ping
        frames.extend([0x01, 0x03, b'a', b'b', b'c', 0x80, 0x02, b'd', b'e']); // fragments
        frames.extend(deflated_frame(b"again"));
        frames.extend([0x88, 0x04, 0x03, 0xf5, b'h', b'i']);
        server.write_all(&frames).await.unwrap();
        let (got, wire) = task.await.unwrap().unwrap();
        assert_eq!(
            got,
            [
                "hello hello hello hello",
                "abcde",
                "again",
                "Some((1013, \"hi\"))"
            ]
        );
        assert_eq!(wire, (frames.len() - response_len) as u64);
        let mut pong = [0u8; 7];
        server.read_exact(&mut pong).await.unwrap();
        assert_eq!(pong[0], 0x8A);
        assert_eq!(pong[6] ^ pong[2], b'p');
    }
}
