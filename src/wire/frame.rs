//! Writing frames: a server's frames are unmasked, so one broadcast's frame
//! is the same bytes for every member. They are built here once — header
//! and payload in one buffer — and then shared, never copied per socket.
//!
//! A frame (RFC 6455 section 5.2), as a server sends it:
//!
//! ```text
//! byte 0      FIN | RSV1 (compressed, RFC 7692) | opcode
//! byte 1      payload length: 0-125, or 126 + 2 bytes, or 127 + 8 bytes
//! ...         the payload, as it is (no mask from a server)
//! ```

use bytes::{BufMut, Bytes, BytesMut};

/// The frame types groupcast reads and writes (RFC 6455 section 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OpCode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

/// The longest frame header a server writes: 2 bytes and an 8-byte length.
pub const MAX_HEADER: usize = 10;

/// The largest payload a control frame (close, ping, pong) may carry.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The header of a final, unmasked frame: its bytes and how many are used.
pub fn header(opcode: OpCode, compressed: bool, len: usize) -> ([u8; MAX_HEADER], usize) {
    let mut head = [0u8; MAX_HEADER];
    head[0] = 0x80 | if compressed { 0x40 } else { 0 } | opcode as u8;
    // The shortest length encoding, as RFC 6455 asks of every sender.
    let used = if len < 126 {
        head[1] = len as u8;
        2
    } else if let Ok(short) = u16::try_from(len) {
        head[1] = 126;
        head[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        head[1] = 127;
        head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (head, used)
}

/// One final, unmasked frame — header and payload in one buffer, ready to
/// be written to any number of sockets.
pub fn encode(opcode: OpCode, compressed: bool, payload: &[u8]) -> Bytes {
    let (head, used) = header(opcode, compressed, payload.len());
    let mut frame = BytesMut::with_capacity(used + payload.len());
    frame.put_slice(&head[..used]);
    frame.put_slice(payload);
    frame.freeze()
}

/// A ping with no payload (groupcast's keepalive).
pub fn ping() -> Bytes {
    Bytes::from_static(&[0x80 | OpCode::Ping as u8, 0])
}

/// The answer to a ping: the same payload (at most 125 bytes, as the ping's).
pub fn pong(payload: &[u8]) -> Bytes {
    let end = payload.len().min(MAX_CONTROL_PAYLOAD);
    encode(OpCode::Pong, false, &payload[..end])
}

/// A close frame with a code and a reason cut to fit (123 bytes, at a
/// character boundary), or without either when `code` is `None`.
pub fn close(code: Option<u16>, reason: &str) -> Bytes {
    let Some(code) = code else {
        return encode(OpCode::Close, false, &[]);
    };
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode(OpCode::Close, false, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_use_the_shortest_encoding() {
        assert_eq!(header(OpCode::Text, false, 125).1, 2);
        assert_eq!(header(OpCode::Text, false, 126).1, 4);
        assert_eq!(header(OpCode::Text, false, 65_535).1, 4);
        assert_eq!(header(OpCode::Text, false, 65_536).1, 10);
        let (head, _) = header(OpCode::Binary, true, 300);
        assert_eq!(&head[..4], &[0xC2, 126, 0x01, 0x2C]);
    }

    #[test]
    fn a_close_reason_is_cut_at_a_character_boundary() {
        let reason = "é".repeat(100); // 200 bytes
        let frame = close(Some(1000), &reason);
        let payload = &frame[2..];
        assert!(payload.len() <= MAX_CONTROL_PAYLOAD);
        assert!(std::str::from_utf8(&payload[2..]).is_ok());
        assert_eq!(&close(None, "ignored")[..], &[0x88, 0]);
    }
}
