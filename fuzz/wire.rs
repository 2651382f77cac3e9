//! The differential oracle for groupcast's own WebSocket frames
//! (`src/wire/`): the same bytes go through our code and through
//! tungstenite's, and both must report the same messages and end the same
//! way. Shared (with `#[path]`) by the fuzz target `frames` (through
//! `checks.rs`), `tests/wire/fuzz_regressions.rs` and
//! `tests/wire/wire_differential.rs`.
//!
//! Comparing the two readers:
//!
//! * Messages are compared as [`Got`]: kind and bytes (text as a string,
//!   close frames as code and reason).
//! * A close code a peer may not send (1005, 1006, 1015, unassigned ones):
//!   tungstenite replaces the whole close frame by `1002 "Protocol
//!   violation"`; our reader hands the code as sent and the server answers
//!   1002 for it (`CloseFrame::code_is_allowed`, `transport/websocket/connection.rs`).
//!   Both are normalised to tungstenite's form ([`close`]).
//! * The end ([`End`]): tungstenite reads from a stream, and when that
//!   stream runs out it returns `ResetWithoutClosingHandshake` (before a
//!   close) or `ConnectionClosed` (after one), whether or not half a frame
//!   or half a message is buffered; our reader returns `Ok(None)`. Both are
//!   [`End::Open`]: "no error, the input ran out". Whether something was
//!   left half-read is checked by the callers that know (`Ours::buffered`).
//! * After a close tungstenite's server reads nothing more (it ends with
//!   `ConnectionClosed`); our reader refuses any byte after a close with
//!   1002. The server stops reading at a close either way ([`after_close`]).
//! * An error is compared by its class, the close code the server sends:
//!   tungstenite's `Protocol` is 1002, `Capacity` 1009, `Utf8` 1007.

#![allow(dead_code)]

use std::io::{self, Cursor, Read, Write};

use groupcast::wire::{self, FrameReader, Incoming, Limits, OpCode, ReadError};
use tungstenite::error::ProtocolError;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{Role, WebSocket, WebSocketConfig};
use tungstenite::{Error, Message};

/// A message or control frame, as either reader reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

/// A close frame's code and reason, as tungstenite reports them: a code a
/// peer may not send becomes `1002 "Protocol violation"`.
pub fn close(code: u16, reason: &str) -> Got {
    if CloseCode::from(code).is_allowed() {
        Got::Close(Some((code, reason.to_owned())))
    } else {
        Got::Close(Some((1002, "Protocol violation".to_owned())))
    }
}

/// How reading ended once all the input was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum End {
    /// No error: the input ran out (maybe inside a frame or a message).
    Open,
    /// The connection is failed, with this close code: 1002 (protocol),
    /// 1007 (not UTF-8) or 1009 (too big).
    Failed(u16),
}

/// Everything a reader made of some input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub messages: Vec<Got>,
    pub end: End,
}

/// What our reader made of some input, and what it kept.
#[derive(Debug)]
pub struct Ours {
    pub outcome: Outcome,
    /// The bytes it holds of an incomplete frame or message at the end.
    pub buffered: usize,
    /// The error it failed with, if it did.
    pub error: Option<ReadError>,
}

fn got(message: Incoming) -> Got {
    match message {
        Incoming::Text(text) => Got::Text(text.as_str().to_owned()),
        Incoming::Binary(data) => Got::Binary(data.to_vec()),
        Incoming::Ping(data) => Got::Ping(data.to_vec()),
        Incoming::Pong(data) => Got::Pong(data.to_vec()),
        Incoming::Close(None) => Got::Close(None),
        Incoming::Close(Some(frame)) => {
            // What the server does with it (see the module doc).
            assert_eq!(
                frame.code_is_allowed(),
                CloseCode::from(frame.code).is_allowed()
            );
            close(frame.code, frame.reason.as_str())
        }
    }
}

/// Our reader on `input`, fed in chunks of the sizes `chunk` gives (at
/// least 1 byte each; `usize::MAX`: all at once), reading every message
/// after each chunk, as the server does.
pub fn ours(
    input: &[u8],
    role: wire::Role,
    limits: Limits,
    deflate: bool,
    mut chunk: impl FnMut() -> usize,
) -> Ours {
    let mut reader = FrameReader::new(role, limits).with_deflate(deflate);
    let mut messages = Vec::new();
    let mut rest = input;
    loop {
        let n = chunk().clamp(1, rest.len().max(1)).min(rest.len());
        reader.feed(&rest[..n]);
        rest = &rest[n..];
        loop {
            match reader.read() {
                Ok(Some(message)) => messages.push(got(message)),
                Ok(None) => break,
                Err(error) => {
                    // Failed for good: the reader keeps refusing.
                    reader.feed(rest);
                    assert_eq!(reader.read().as_ref(), Err(&error), "read after {error}");
                    return Ours {
                        outcome: Outcome {
                            messages,
                            end: End::Failed(error.close_code()),
                        },
                        buffered: reader.buffered(),
                        error: Some(error),
                    };
                }
            }
        }
        if rest.is_empty() {
            break;
        }
    }
    Ours {
        outcome: Outcome {
            messages,
            end: End::Open,
        },
        buffered: reader.buffered(),
        error: None,
    }
}

/// A socket for tungstenite: reads `input`, accepts every write (its pongs
/// and close replies).
struct Stream<'a>(Cursor<&'a [u8]>);

impl Read for Stream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Stream<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// tungstenite's `WebSocket` in `role` on `input`, with the same limits,
/// reading until it fails or the input runs out.
pub fn theirs(input: &[u8], role: Role, limits: Limits) -> Outcome {
    // A small read buffer: it only sets how much is read at once (the
    // default 128 KiB, zeroed per instance, slows the fuzz target).
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .max_message_size(Some(limits.max_message_size))
        .max_frame_size(Some(limits.max_frame_size));
    let mut socket = WebSocket::from_raw_socket(Stream(Cursor::new(input)), role, Some(config));
    let mut messages = Vec::new();
    let end = loop {
        let message = match socket.read() {
            Ok(message) => message,
            Err(Error::ConnectionClosed)
            | Err(Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => break End::Open,
            Err(Error::Protocol(_)) => break End::Failed(1002),
            Err(Error::Capacity(_)) => break End::Failed(1009),
            Err(Error::Utf8(_)) => break End::Failed(1007),
            Err(error) => panic!("tungstenite failed with {error:?}"),
        };
        messages.push(match message {
            Message::Text(text) => Got::Text(text.as_str().to_owned()),
            Message::Binary(data) => Got::Binary(data.to_vec()),
            Message::Ping(data) => Got::Ping(data.to_vec()),
            Message::Pong(data) => Got::Pong(data.to_vec()),
            Message::Close(None) => Got::Close(None),
            Message::Close(Some(frame)) => Got::Close(Some((
                u16::from(frame.code),
                frame.reason.as_str().to_owned(),
            ))),
            Message::Frame(_) => panic!("tungstenite returned a raw frame"),
        });
    };
    Outcome { messages, end }
}

/// Our outcome as tungstenite's server would have it: once it has read a
/// close (and answered it) it reads nothing more and ends with
/// `ConnectionClosed`, whatever follows. Our reader refuses anything after
/// a close (RFC 6455 section 5.5.1: nothing may follow it), so a failure
/// for that reason, right after a close, is tungstenite's clean end. (The
/// server stops reading at a close either way: `transport/websocket/connection.rs`.)
pub fn after_close(ours: &Ours) -> Outcome {
    let mut outcome = ours.outcome.clone();
    if matches!(outcome.messages.last(), Some(Got::Close(_)))
        && ours.error == Some(ReadError::Protocol("frame received after a close"))
    {
        outcome.end = End::Open;
    }
    outcome
}

/// tungstenite's server on `input`, held to failing fast on invalid text.
///
/// tungstenite checks a frame's UTF-8 when the frame is complete; our reader
/// checks it as the frame arrives (RFC 6455 section 8.1, Autobahn 6.4.x),
/// so where the input ends inside a text frame that already holds invalid
/// bytes, ours fails with 1007 and tungstenite is still waiting. Then the
/// frame is completed for tungstenite with zeros (any completion of
/// invalid text is invalid), and it must fail with 1007 at the same point.
pub fn theirs_failing_fast(input: &[u8], limits: Limits, ours: &Outcome) -> Outcome {
    let expected = theirs(input, Role::Server, limits);
    if ours.end != End::Failed(1007) || expected.end != End::Open {
        return expected;
    }
    let mut completed = input.to_vec();
    completed.resize(input.len() + limits.max_frame_size.min(1 << 20) + 14, 0);
    theirs(&completed, Role::Server, limits)
}

/// Chunk sizes from a seed (xorshift): 1 byte up to 4 KiB, some all at once.
pub fn chunks(seed: u64) -> impl FnMut() -> usize {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        match state % 8 {
            0 => usize::MAX,
            1 | 2 => 1,
            3 | 4 => (state >> 8) as usize % 16 + 1,
            _ => (state >> 8) as usize % 4096 + 1,
        }
    }
}

/// Reads `input` as a server with both readers — our reader fed all at
/// once and in chunks from `seed` — and checks that all three agree.
/// Returns our chunked run.
pub fn same_as_tungstenite_server(input: &[u8], limits: Limits, seed: u64) -> Ours {
    let whole = ours(input, wire::Role::Server, limits, false, || usize::MAX);
    let expected = theirs_failing_fast(input, limits, &whole.outcome);
    assert_eq!(after_close(&whole), expected, "all at once, vs tungstenite");
    let chunked = ours(input, wire::Role::Server, limits, false, chunks(seed));
    assert_eq!(
        chunked.outcome, whole.outcome,
        "in chunks (seed {seed}), vs all at once"
    );
    if chunked.outcome.end == End::Open {
        assert_eq!(
            chunked.buffered, whole.buffered,
            "what is kept depends on chunks"
        );
    }
    chunked
}

// ----- what the server writes --------------------------------------------------

/// A message the server sends, with the `wire::frame` function for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    Text(String),
    Binary(Vec<u8>),
    /// `frame::ping()`: the keepalive, no payload.
    Ping,
    /// `frame::pong(payload)`: cut to 125 bytes.
    Pong(Vec<u8>),
    /// `frame::close(code, reason)`: the reason cut to fit.
    Close(Option<u16>, String),
}

impl Sent {
    /// The frame our server writes for it.
    pub fn encode(&self) -> bytes::Bytes {
        use wire::frame;
        match self {
            Sent::Text(text) => frame::encode(OpCode::Text, false, text.as_bytes()),
            Sent::Binary(data) => frame::encode(OpCode::Binary, false, data),
            Sent::Ping => frame::ping(),
            Sent::Pong(data) => frame::pong(data),
            Sent::Close(code, reason) => frame::close(*code, reason),
        }
    }

    /// What a client reads: RFC 6455's limits applied (a control frame's
    /// payload is at most 125 bytes; a close reason 123, whole characters).
    pub fn expected(&self) -> Got {
        match self {
            Sent::Text(text) => Got::Text(text.clone()),
            Sent::Binary(data) => Got::Binary(data.clone()),
            Sent::Ping => Got::Ping(Vec::new()),
            Sent::Pong(data) => Got::Pong(data[..data.len().min(125)].to_vec()),
            Sent::Close(None, _) => Got::Close(None),
            Sent::Close(Some(code), reason) => {
                let mut cut = String::new();
                for c in reason.chars() {
                    if cut.len() + c.len_utf8() > 123 {
                        break;
                    }
                    cut.push(c);
                }
                close(*code, &cut)
            }
        }
    }
}

/// The limits of a reader that takes anything (tungstenite as our client).
pub const UNLIMITED: Limits = Limits {
    max_message_size: usize::MAX,
    max_frame_size: usize::MAX,
};

/// `messages` encoded by `wire::frame` and concatenated (up to the first
/// close: nothing may follow one) are read back by tungstenite's client
/// exactly, and by our reader in the client role too.
pub fn tungstenite_client_reads_back(messages: &[Sent], seed: u64) {
    let end = messages
        .iter()
        .position(|m| matches!(m, Sent::Close(..)))
        .map_or(messages.len(), |i| i + 1);
    let messages = &messages[..end];
    let mut bytes = Vec::new();
    for message in messages {
        bytes.extend_from_slice(&message.encode());
    }
    let expected = Outcome {
        messages: messages.iter().map(Sent::expected).collect(),
        end: End::Open,
    };
    assert_eq!(
        theirs(&bytes, Role::Client, UNLIMITED),
        expected,
        "tungstenite's client"
    );
    let ours = ours(&bytes, wire::Role::Client, UNLIMITED, false, chunks(seed));
    assert_eq!(ours.outcome, expected, "our reader as a client");
    assert_eq!(ours.buffered, 0);
}

/// Messages derived from fuzz input: a kind byte, a length byte (251-255:
/// 125, 126, 65535, 65536, 70000), the payload taken from the input that
/// follows (cycled to the length). Text is the payload made UTF-8 (lossy);
/// a close has a code (the next byte and the kind byte) when the kind
/// byte's top bit is set.
pub fn sent_from(data: &[u8]) -> Vec<Sent> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut total = 0;
    // At most 64 messages, 256 KiB in all: a fuzz run stays fast.
    while at + 2 <= data.len() && out.len() < 64 && total < 256 * 1024 {
        let (kind, len) = (data[at], data[at + 1]);
        at += 2;
        let len = match len {
            251 => 125,
            252 => 126,
            253 => 65_535,
            254 => 65_536,
            255 => 70_000,
            n => n as usize,
        };
        let source = &data[at..];
        let payload: Vec<u8> = if source.is_empty() {
            vec![b'x'; len]
        } else {
            source.iter().copied().cycle().take(len).collect()
        };
        at += len.min(source.len());
        total += len;
        out.push(match kind % 5 {
            0 => Sent::Text(String::from_utf8_lossy(&payload).into_owned()),
            1 => Sent::Binary(payload),
            2 => Sent::Ping,
            3 => Sent::Pong(payload),
            _ => {
                let code = (kind & 0x80 != 0)
                    .then(|| u16::from_be_bytes([payload.first().copied().unwrap_or(3), kind]));
                Sent::Close(code, String::from_utf8_lossy(&payload).into_owned())
            }
        });
    }
    out
}
