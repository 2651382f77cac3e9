//! Reading frames: tungstenite's header parser, groupcast's message rules.
//!
//! Why not tungstenite's whole reader? It keeps a read buffer per
//! connection for the connection's life (an idle socket pays for it), and
//! it cannot read permessage-deflate frames. This reader holds bytes only
//! while a frame is incomplete: the connection reads into a stack buffer,
//! [`FrameReader::feed`] copies what arrived, and once every complete
//! frame is taken out the buffer is released.
//!
//! The rules are tungstenite's (`protocol/mod.rs`, `read_message_frame`),
//! in the same order, so that both fail on the same input with the same
//! kind of error: the differential tests (`tests/wire/wire_differential.rs`)
//! and the fuzz target `frames` hold this reader to tungstenite's.
//!
//! Where it differs on purpose: after a close, tungstenite's server reads
//! nothing more (it ends the connection), and this reader refuses any byte
//! that follows (1002, RFC 6455 section 5.5.1); the server stops reading at
//! a close anyway. A close code a peer may not send is returned as sent
//! (see [`CloseFrame::code_is_allowed`]), where tungstenite rewrites the
//! frame to 1002. And RSV1 is "compressed" when permessage-deflate was
//! negotiated, which tungstenite cannot read.

use std::io::Cursor;

use bytes::{Buf, Bytes, BytesMut};
use tungstenite::Utf8Bytes;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};

use super::deflate::{self, InflateError};
use super::frame::MAX_CONTROL_PAYLOAD;
use super::utf8::Utf8Stream;

/// The most bytes read from a socket at once (`Config::read_buffer_size`
/// is capped to it): the read buffer lives on the stack, for one read.
pub const MAX_READ_CHUNK: usize = 16 * 1024;

/// Which end of the connection reads: a server requires masked frames, a
/// client requires unmasked ones (RFC 6455 section 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

/// A complete message or control frame, as the peer sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Text(Utf8Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    /// The peer's close, with its code and reason if it gave them.
    Close(Option<CloseFrame>),
}

/// The code and reason of a close frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    pub code: u16,
    pub reason: Utf8Bytes,
}

impl CloseFrame {
    /// Whether a peer may send this code (RFC 6455 section 7.4): 1005,
    /// 1006, 1015 and unassigned codes may not.
    pub fn code_is_allowed(&self) -> bool {
        CloseCode::from(self.code).is_allowed()
    }
}

/// Why the peer's input is refused. Each kind has its close code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The input breaks RFC 6455 (close 1002).
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// A frame or message is larger than the limit (close 1009).
    #[error("message of {size} bytes or more is larger than the limit of {limit}")]
    TooBig { size: usize, limit: usize },
    /// A text message or close reason is not UTF-8 (close 1007).
    #[error("text is not valid UTF-8")]
    InvalidUtf8,
    /// A compressed message cannot be inflated (close 1007), or inflates
    /// past the limit (close 1009).
    #[error(transparent)]
    Inflate(#[from] InflateError),
}

impl ReadError {
    /// The close code that tells the peer what it did wrong.
    pub fn close_code(&self) -> u16 {
        match self {
            ReadError::Protocol(_) => 1002,
            ReadError::TooBig { .. } | ReadError::Inflate(InflateError::TooBig { .. }) => 1009,
            ReadError::InvalidUtf8 | ReadError::Inflate(InflateError::Corrupt(_)) => 1007,
        }
    }
}

/// The size limits of what a peer may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest message, after reassembling fragments and inflating.
    pub max_message_size: usize,
    /// The largest single frame, as it is on the wire.
    pub max_frame_size: usize,
}

/// A message whose first frames arrived and whose last did not yet.
#[derive(Debug)]
struct Partial {
    text: bool,
    compressed: bool,
    data: BytesMut,
}

/// The frame being read: its header, once parsed, and how much of its
/// payload was already unmasked and checked as UTF-8 (text only, see
/// [`FrameReader::checks_utf8`]).
#[derive(Debug)]
struct Pending {
    header: FrameHeader,
    len: usize,
    checks_utf8: bool,
    checked: usize,
}

/// Turns the bytes a peer sends into [`Incoming`] messages.
#[derive(Debug)]
pub struct FrameReader {
    role: Role,
    limits: Limits,
    /// Whether permessage-deflate was negotiated (RSV1 = compressed).
    deflate: bool,
    /// Bytes of frames not complete yet; empty (no allocation) otherwise.
    buf: BytesMut,
    /// The frame being read, once its header is parsed.
    pending: Option<Pending>,
    partial: Option<Partial>,
    /// The UTF-8 check of the uncompressed text message being read, fed as
    /// its bytes arrive (so that invalid text fails inside a frame).
    utf8: Utf8Stream,
    /// A close was read: nothing may follow.
    closed: bool,
    /// The error the reader failed with: returned again by every read.
    failed: Option<ReadError>,
}

impl FrameReader {
    pub fn new(role: Role, limits: Limits) -> Self {
        FrameReader {
            role,
            limits,
            deflate: false,
            buf: BytesMut::new(),
            pending: None,
            partial: None,
            utf8: Utf8Stream::default(),
            closed: false,
            failed: None,
        }
    }

    /// Accepts compressed data frames (permessage-deflate negotiated).
    pub fn with_deflate(mut self, deflate: bool) -> Self {
        self.deflate = deflate;
        self
    }

    /// Adds bytes read from the socket (dropped once the reader failed).
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// How many bytes wait for the rest of their frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() + self.partial.as_ref().map_or(0, |p| p.data.len())
    }

    /// The next complete message or control frame, if the bytes fed so far
    /// hold one. After an error the connection must be failed: the reader
    /// keeps returning errors.
    pub fn read(&mut self) -> Result<Option<Incoming>, ReadError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let read = self.read_message();
        if let Err(error) = &read {
            // Whatever follows the bad frame is not read: it may be the
            // rest of a frame refused before its payload, or anything.
            self.failed = Some(error.clone());
            self.buf = BytesMut::new();
            self.partial = None;
        }
        read
    }

    fn read_message(&mut self) -> Result<Option<Incoming>, ReadError> {
        loop {
            let Some(payload) = self.next_frame_payload()? else {
                if self.buf.is_empty() {
                    // Nothing half-read: give the buffer back (an idle
                    // connection holds no read buffer).
                    self.buf = BytesMut::new();
                }
                return Ok(None);
            };
            let (header, payload) = payload;
            if let Some(message) = self.on_frame(header, payload)? {
                return Ok(Some(message));
            }
        }
    }

    /// One frame's header and unmasked payload, once all of it is here.
    fn next_frame_payload(&mut self) -> Result<Option<(FrameHeader, BytesMut)>, ReadError> {
        if self.closed {
            if self.buf.is_empty() {
                return Ok(None);
            }
            return Err(ReadError::Protocol("frame received after a close"));
        }
        if self.pending.is_none() {
            let mut cursor = Cursor::new(&self.buf[..]);
            let parsed = FrameHeader::parse(&mut cursor)
                .map_err(|_| ReadError::Protocol("invalid opcode"))?;
            let Some((header, len)) = parsed else {
                return Ok(None);
            };
            let advanced = cursor.position() as usize;
            self.buf.advance(advanced);
            // Refuse an oversized frame before waiting for its payload.
            let limit = self.limits.max_frame_size;
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            if len > limit {
                return Err(ReadError::TooBig { size: len, limit });
            }
            // A text message in one frame that is all here already is
            // checked once, when the message is built (`complete`): there
            // is nothing to fail early on, and checking it as it "arrives"
            // too would check every such message twice.
            let text = header.opcode == OpCode::Data(Data::Text);
            let all_here = text && header.is_final && self.buf.len() >= len;
            let checks_utf8 = !all_here && self.checks_utf8(&header, len);
            if text {
                self.utf8 = Utf8Stream::default();
            }
            self.pending = Some(Pending {
                header,
                len,
                checks_utf8,
                checked: 0,
            });
        }
        let Some(pending) = &mut self.pending else {
            return Ok(None);
        };
        if pending.checks_utf8 {
            // Unmask and check what arrived of the payload so far.
            let arrived = self.buf.len().min(pending.len);
            let fresh = &mut self.buf[pending.checked..arrived];
            if let Some(mask) = pending.header.mask {
                apply_mask(fresh, mask, pending.checked);
            }
            pending.checked = arrived;
            self.utf8.feed(fresh).map_err(|_| ReadError::InvalidUtf8)?;
        }
        if self.buf.len() < pending.len {
            return Ok(None);
        }
        // Checked just above: a frame is pending.
        let Some(Pending {
            mut header,
            len,
            checked,
            ..
        }) = self.pending.take()
        else {
            return Ok(None);
        };
        let mut payload = self.buf.split_to(len);
        match (self.role, header.mask.take()) {
            (Role::Server, Some(mask)) => apply_mask(&mut payload[checked..], mask, checked),
            (Role::Server, None) => {
                return Err(ReadError::Protocol("unmasked frame from a client"));
            }
            (Role::Client, mask) => header.mask = mask,
        }
        Ok(Some((header, payload)))
    }

    /// Whether a frame's payload is checked as UTF-8 while it arrives: an
    /// uncompressed text frame that [`on_frame`](Self::on_frame) will take
    /// once complete, but for its UTF-8. Only then may invalid text fail
    /// the connection before the frame's end: for a frame refused anyway
    /// the reason must stay the one tungstenite gives (protocol, size),
    /// which it finds at the frame's end.
    fn checks_utf8(&self, header: &FrameHeader, len: usize) -> bool {
        let masked_right = match self.role {
            Role::Server => header.mask.is_some(),
            Role::Client => header.mask.is_none(),
        };
        let fits = |size: usize| {
            size <= self.limits.max_message_size && len <= self.limits.max_message_size - size
        };
        let continues_text = match (header.opcode, &self.partial) {
            (OpCode::Data(Data::Text), None) => fits(0),
            (OpCode::Data(Data::Continue), Some(partial)) => {
                partial.text && !partial.compressed && fits(partial.data.len())
            }
            _ => false,
        };
        continues_text && masked_right && !header.rsv1 && !header.rsv2 && !header.rsv3
    }

    /// Applies the message rules to one frame: a complete message or
    /// control frame, `None` for a fragment, or an error.
    fn on_frame(
        &mut self,
        header: FrameHeader,
        payload: BytesMut,
    ) -> Result<Option<Incoming>, ReadError> {
        let data_start = matches!(header.opcode, OpCode::Data(Data::Text | Data::Binary));
        let compressed = header.rsv1 && self.deflate && data_start;
        if (header.rsv1 && !compressed) || header.rsv2 || header.rsv3 {
            return Err(ReadError::Protocol("reserved bits are set"));
        }
        if self.role == Role::Client && header.mask.is_some() {
            return Err(ReadError::Protocol("masked frame from a server"));
        }
        let fin = header.is_final;
        match header.opcode {
            OpCode::Control(control) => {
                if !fin {
                    return Err(ReadError::Protocol("fragmented control frame"));
                }
                if payload.len() > MAX_CONTROL_PAYLOAD {
                    return Err(ReadError::Protocol("control frame longer than 125 bytes"));
                }
                match control {
                    Control::Close => {
                        self.closed = true;
                        close_frame(payload.freeze()).map(|close| Some(Incoming::Close(close)))
                    }
                    Control::Ping => Ok(Some(Incoming::Ping(payload.freeze()))),
                    Control::Pong => Ok(Some(Incoming::Pong(payload.freeze()))),
                    Control::Reserved(_) => Err(ReadError::Protocol("unknown control frame")),
                }
            }
            OpCode::Data(data) => {
                match (data, self.partial.as_mut()) {
                    (Data::Continue, None) => {
                        Err(ReadError::Protocol("continuation frame without a message"))
                    }
                    (Data::Continue, Some(partial)) => {
                        extend(partial, &payload, self.limits.max_message_size)?;
                        if fin {
                            // Checked just above: a partial message exists.
                            let Some(partial) = self.partial.take() else {
                                return Ok(None);
                            };
                            self.complete(partial).map(Some)
                        } else {
                            Ok(None)
                        }
                    }
                    (_, Some(_)) => Err(ReadError::Protocol(
                        "new message while a fragmented message is incomplete",
                    )),
                    (Data::Text | Data::Binary, None) => {
                        let text = data == Data::Text;
                        let limit = self.limits.max_message_size;
                        if fin {
                            if payload.len() > limit {
                                return Err(ReadError::TooBig {
                                    size: payload.len(),
                                    limit,
                                });
                            }
                            let partial = Partial {
                                text,
                                compressed,
                                data: payload,
                            };
                            self.complete(partial).map(Some)
                        } else {
                            let mut partial = Partial {
                                text,
                                compressed,
                                data: BytesMut::new(),
                            };
                            extend(&mut partial, &payload, limit)?;
                            self.partial = Some(partial);
                            Ok(None)
                        }
                    }
                    (Data::Reserved(_), None) => Err(ReadError::Protocol("unknown data frame")),
                }
            }
        }
    }

    /// A message whose last frame arrived: inflated and checked.
    fn complete(&self, partial: Partial) -> Result<Incoming, ReadError> {
        if partial.text && !partial.compressed && !self.utf8.is_whole() {
            // Checked as it arrived, and valid so far: but cut short.
            return Err(ReadError::InvalidUtf8);
        }
        let data = if partial.compressed {
            Bytes::from(deflate::inflate(
                &partial.data,
                self.limits.max_message_size,
            )?)
        } else {
            partial.data.freeze()
        };
        if partial.text {
            Utf8Bytes::try_from(data)
                .map(Incoming::Text)
                .map_err(|_| ReadError::InvalidUtf8)
        } else {
            Ok(Incoming::Binary(data))
        }
    }
}

/// Adds a fragment to a message, refusing it past the size limit (its
/// UTF-8, for uncompressed text, was checked as it arrived).
fn extend(partial: &mut Partial, fragment: &[u8], limit: usize) -> Result<(), ReadError> {
    let size = partial.data.len();
    if size > limit || fragment.len() > limit - size {
        return Err(ReadError::TooBig {
            size: size.saturating_add(fragment.len()),
            limit,
        });
    }
    partial.data.extend_from_slice(fragment);
    Ok(())
}

/// A close frame's payload: nothing, or a code and a UTF-8 reason.
fn close_frame(payload: Bytes) -> Result<Option<CloseFrame>, ReadError> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(ReadError::Protocol("close frame with a one-byte payload")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            let reason =
                Utf8Bytes::try_from(payload.slice(2..)).map_err(|_| ReadError::InvalidUtf8)?;
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}

/// Unmasks part of a client's payload in place (RFC 6455 section 5.3):
/// `payload` starts `offset` bytes into the frame's payload.
fn apply_mask(payload: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut mask = mask;
    mask.rotate_left(offset % 4);
    let mut chunks = payload.chunks_exact_mut(4);
    let word = u32::from_ne_bytes(mask);
    for chunk in &mut chunks {
        let mut value = [0u8; 4];
        value.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u32::from_ne_bytes(value) ^ word).to_ne_bytes());
    }
    for (byte, key) in chunks.into_remainder().iter_mut().zip(mask) {
        *byte ^= key;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_message_size: 64,
        max_frame_size: 64,
    };

    /// A client frame: masked with a fixed key.
    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let key = [1, 2, 3, 4];
        let mut frame = vec![first, 0x80 | payload.len() as u8];
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        frame
    }

    #[test]
    fn a_message_split_anywhere_reads_the_same() {
        let mut input = masked(0x81, "héllo".as_bytes());
        input.extend(masked(0x89, b"p"));
        for cut in 0..input.len() {
            let mut reader = FrameReader::new(Role::Server, LIMITS);
            let mut got = Vec::new();
            for part in [&input[..cut], &input[cut..]] {
                reader.feed(part);
                while let Some(message) = reader.read().unwrap() {
                    got.push(message);
                }
            }
            assert_eq!(
                got,
                [
                    Incoming::Text("héllo".into()),
                    Incoming::Ping(Bytes::from_static(b"p"))
                ],
                "cut at {cut}"
            );
            assert_eq!(reader.buffered(), 0);
        }
    }

    #[test]
    fn fragments_with_a_ping_between_them_make_one_message() {
        let mut input = masked(0x01, &"é".as_bytes()[..1]);
        input.extend(masked(0x89, b""));
        input.extend(masked(0x80, &"é".as_bytes()[1..]));
        let mut reader = FrameReader::new(Role::Server, LIMITS);
        reader.feed(&input);
        assert_eq!(reader.read().unwrap(), Some(Incoming::Ping(Bytes::new())));
        assert_eq!(reader.read().unwrap(), Some(Incoming::Text("é".into())));
    }

    #[test]
    fn bad_input_gets_the_close_code_it_deserves() {
        let cases: [(Vec<u8>, u16); 6] = [
            (vec![0x81, 0x01, b'x'], 1002),   // unmasked
            (masked(0x81, &[0xff]), 1007),    // not UTF-8
            (masked(0x82, &[0u8; 65]), 1009), // too big
            (masked(0x09, b""), 1002),        // fragmented ping
            (masked(0xC1, b"x"), 1002),       // RSV1 without deflate
            (masked(0x80, b"x"), 1002),       // stray continuation
        ];
        for (input, code) in cases {
            let mut reader = FrameReader::new(Role::Server, LIMITS);
            reader.feed(&input);
            let error = reader.read().expect_err("refused");
            assert_eq!(error.close_code(), code, "{error}");
        }
    }

    /// Autobahn 6.4.3 and 6.4.4: invalid text fails the connection as
    /// soon as it arrives, before its frame (or fragment) is complete; a
    /// character cut between reads is not invalid.
    #[test]
    fn invalid_text_fails_before_its_frame_is_complete() {
        let mut text = "κόσμε".as_bytes().to_vec();
        text.extend_from_slice(&[0xf4, 0x90, 0x80, 0x80]); // past U+10FFFF
        text.extend_from_slice(b"-edited-");
        for opcode in [0x81, 0x01] {
            let frame = masked(opcode, &text);
            let mut reader = FrameReader::new(Role::Server, LIMITS);
            // Up to and including the first byte of the cut character.
            reader.feed(&frame[..2 + 4 + 10 + 1]);
            assert_eq!(reader.read(), Ok(None), "a cut character waits");
            reader.feed(&frame[2 + 4 + 10 + 1..2 + 4 + 10 + 2]);
            assert_eq!(
                reader.read(),
                Err(ReadError::InvalidUtf8),
                "opcode {opcode:#x}"
            );
        }
        // In a continuation frame too.
        let mut reader = FrameReader::new(Role::Server, LIMITS);
        reader.feed(&masked(0x01, "κό".as_bytes()));
        assert_eq!(reader.read(), Ok(None));
        let frame = masked(0x80, &text);
        reader.feed(&frame[..2 + 4 + 12]);
        assert_eq!(reader.read(), Err(ReadError::InvalidUtf8));
    }

    #[test]
    fn a_frame_refused_for_its_size_is_refused_for_its_size_not_its_text() {
        // 40 + 40 bytes over a 64-byte message limit: tungstenite says
        // 1009 at the second frame's end, whatever its text; so do we.
        let mut reader = FrameReader::new(Role::Server, LIMITS);
        reader.feed(&masked(0x01, &[b'a'; 40]));
        assert_eq!(reader.read(), Ok(None));
        let mut second = vec![b'a'; 40];
        second[0] = 0xff;
        let frame = masked(0x80, &second);
        reader.feed(&frame[..10]);
        assert_eq!(reader.read(), Ok(None));
        reader.feed(&frame[10..]);
        assert_eq!(reader.read().unwrap_err().close_code(), 1009);
    }

    #[test]
    fn compressed_frames_are_inflated_within_the_limit() {
        let text = "a log line, a log line, a log line, a log line";
        let compressed = deflate::compress(text.as_bytes()).unwrap();
        let mut reader = FrameReader::new(Role::Server, LIMITS).with_deflate(true);
        reader.feed(&masked(0xC1, &compressed));
        assert_eq!(reader.read().unwrap(), Some(Incoming::Text(text.into())));
        let bomb = deflate::compress(&[b'a'; 1000]).unwrap();
        reader.feed(&masked(0xC2, &bomb));
        assert_eq!(reader.read().unwrap_err().close_code(), 1009);
    }

    #[test]
    fn after_an_error_every_read_fails_the_same() {
        // A frame over the limit is refused at its header: its payload is
        // never read as frames (here: a ping inside a 65-byte binary).
        let mut payload = masked(0x89, b"inside");
        payload.resize(65, 0);
        let mut reader = FrameReader::new(Role::Server, LIMITS);
        reader.feed(&masked(0x82, &payload));
        let error = reader.read().unwrap_err();
        assert_eq!(error.close_code(), 1009);
        reader.feed(&masked(0x81, b"more"));
        assert_eq!(reader.read(), Err(error));
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn the_buffer_is_released_once_frames_are_complete() {
        let mut reader = FrameReader::new(Role::Server, LIMITS);
        let input = masked(0x82, b"abc");
        reader.feed(&input[..3]);
        assert_eq!(reader.read().unwrap(), None);
        assert_eq!(reader.buffered(), 3);
        reader.feed(&input[3..]);
        assert!(reader.read().unwrap().is_some());
        assert_eq!(reader.read().unwrap(), None);
        assert_eq!(reader.buf.capacity(), 0);
    }
}
