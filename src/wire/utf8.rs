//! UTF-8 checked as it arrives, so that invalid text fails fast.
//!
//! A text message reaches the server in pieces: fragments, and inside one
//! frame whatever each read brought. RFC 6455 (section 8.1) asks an
//! endpoint to fail the connection as soon as it sees bytes that cannot be
//! UTF-8, not at the message's end; Autobahn's cases 6.4.x send a frame's
//! valid half, wait, then the invalid byte, and call a server that waits
//! for the frame's end "non-strict". A piece may end inside a character:
//! its first bytes are kept (at most three) and completed by the next
//! piece.

/// A UTF-8 check fed piece by piece.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Utf8Stream {
    /// The start of a character the last piece cut (`len` bytes of it).
    carry: [u8; 4],
    len: usize,
}

/// The bytes fed so far cannot be the start of UTF-8 text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

impl Utf8Stream {
    /// Checks the next piece: an error as soon as the bytes so far cannot
    /// be the start of valid text.
    pub fn feed(&mut self, mut piece: &[u8]) -> Result<(), InvalidUtf8> {
        if self.len > 0 {
            // Complete the cut character: it needs at most 4 bytes in all.
            let take = (self.carry.len() - self.len).min(piece.len());
            let mut joined = self.carry;
            joined[self.len..self.len + take].copy_from_slice(&piece[..take]);
            let joined = &joined[..self.len + take];
            match std::str::from_utf8(joined) {
                Ok(_) => {
                    self.len = 0;
                    piece = &piece[take..];
                }
                Err(error) if error.valid_up_to() > 0 => {
                    // The character is complete (and valid); the bytes of
                    // `piece` after it are checked below.
                    let used = error.valid_up_to() - self.len;
                    self.len = 0;
                    piece = &piece[used..];
                }
                Err(error) if error.error_len().is_some() => return Err(InvalidUtf8),
                Err(_) => {
                    // Still cut: `take` was all of `piece`.
                    self.carry[self.len..self.len + take].copy_from_slice(&piece[..take]);
                    self.len += take;
                    return Ok(());
                }
            }
        }
        match std::str::from_utf8(piece) {
            Ok(_) => Ok(()),
            Err(error) if error.error_len().is_none() => {
                let cut = &piece[error.valid_up_to()..];
                self.carry[..cut.len()].copy_from_slice(cut);
                self.len = cut.len();
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// Whether the text fed so far ends on a whole character (a message
    /// must; a fragment need not).
    pub fn is_whole(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bytes that are mostly UTF-8 (so that the valid cases are tested
    /// too), with a stray byte now and then.
    fn mostly_text() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            ".{0,40}".prop_map(String::into_bytes),
            (".{0,40}", any::<u8>(), 0usize..40).prop_map(|(text, byte, at)| {
                let mut bytes = text.into_bytes();
                bytes.insert(at.min(bytes.len()), byte);
                bytes
            }),
            proptest::collection::vec(any::<u8>(), 0..16),
        ]
    }

    proptest! {
        /// However text is cut into pieces, the stream fails exactly when
        /// the whole is not UTF-8 (or ends cut), and fails at the first
        /// piece that makes it so.
        #[test]
        fn pieces_are_judged_as_the_whole(bytes in mostly_text(), cuts in proptest::collection::vec(0usize..48, 0..6)) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.push(0);
            cuts.push(bytes.len());
            cuts.sort_unstable();
            let mut stream = Utf8Stream::default();
            let mut failed_at = None;
            for window in cuts.windows(2) {
                if stream.feed(&bytes[window[0]..window[1]]).is_err() {
                    failed_at = Some(window[1]);
                    break;
                }
            }
            match failed_at {
                None => prop_assert_eq!(
                    std::str::from_utf8(&bytes).is_ok(),
                    stream.is_whole()
                ),
                Some(end) => {
                    // Invalid within what was fed, not just cut short.
                    let error = std::str::from_utf8(&bytes[..end]).unwrap_err();
                    prop_assert!(error.error_len().is_some());
                    // And not before: the pieces up to the previous cut were fine.
                }
            }
        }
    }

    #[test]
    fn a_character_cut_across_three_pieces_is_whole() {
        let euro = "€".as_bytes();
        let mut stream = Utf8Stream::default();
        for byte in euro {
            stream.feed(std::slice::from_ref(byte)).unwrap();
        }
        assert!(stream.is_whole());
    }

    #[test]
    fn an_invalid_byte_fails_before_the_end() {
        let mut stream = Utf8Stream::default();
        stream.feed("κόσμε".as_bytes()).unwrap();
        assert_eq!(
            stream.feed(&[0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0]),
            Err(InvalidUtf8)
        );
    }
}
