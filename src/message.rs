//! What a broadcast carries: a text or a binary WebSocket frame.
//!
//! A message is built once and then shared by every session that receives
//! it. Both variants wrap reference-counted bytes ([`Bytes`]), so cloning a
//! message for a thousand sessions copies a pointer a thousand times, never
//! the payload.

use bytes::Bytes;

/// UTF-8 text over shared bytes: what a text frame carries, and what text
/// handlers are given (the frame's own bytes, no copy). Derefs to `str`.
pub use tungstenite::Utf8Bytes;

/// One WebSocket data frame, ready to be fanned out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text frame; the bytes are valid UTF-8 by construction.
    Text(Utf8Bytes),
    /// A binary frame.
    Binary(Bytes),
}

impl Message {
    /// A text message.
    pub fn text(text: impl Into<Utf8Bytes>) -> Self {
        Message::Text(text.into())
    }

    /// A binary message.
    pub fn binary(data: impl Into<Bytes>) -> Self {
        Message::Binary(data.into())
    }

    /// Text when `bytes` are valid UTF-8, binary otherwise.
    ///
    /// This is how payloads published from outside groupcast (for example
    /// with `redis-cli PUBLISH`) are turned into frames.
    pub fn from_raw(bytes: Bytes) -> Self {
        match Utf8Bytes::try_from(bytes.clone()) {
            Ok(text) => Message::Text(text),
            Err(_) => Message::Binary(bytes),
        }
    }

    /// The payload's length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Message::Text(t) => t.len(),
            Message::Binary(b) => b.len(),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether this is a text frame.
    pub fn is_text(&self) -> bool {
        matches!(self, Message::Text(_))
    }

    /// The payload as bytes (shared, not copied).
    pub fn payload(&self) -> Bytes {
        match self {
            Message::Text(t) => Bytes::from(t.clone()),
            Message::Binary(b) => b.clone(),
        }
    }

    /// The text, when this is a text frame.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Message::Text(t) => Some(t.as_str()),
            Message::Binary(_) => None,
        }
    }
}

impl From<&str> for Message {
    fn from(s: &str) -> Self {
        Message::text(s)
    }
}

impl From<String> for Message {
    fn from(s: String) -> Self {
        Message::text(s)
    }
}

impl From<Utf8Bytes> for Message {
    fn from(text: Utf8Bytes) -> Self {
        Message::Text(text)
    }
}

impl From<&Utf8Bytes> for Message {
    fn from(text: &Utf8Bytes) -> Self {
        Message::Text(text.clone())
    }
}

impl From<Vec<u8>> for Message {
    fn from(v: Vec<u8>) -> Self {
        Message::binary(v)
    }
}

impl From<Bytes> for Message {
    fn from(b: Bytes) -> Self {
        Message::Binary(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_payloads_become_text_when_utf8() {
        assert_eq!(
            Message::from_raw(Bytes::from_static(b"hello")),
            Message::text("hello")
        );
        let bin = Bytes::from_static(&[0xff, 0x00]);
        assert_eq!(Message::from_raw(bin.clone()), Message::Binary(bin));
    }
}
