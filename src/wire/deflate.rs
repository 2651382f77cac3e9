//! permessage-deflate (RFC 7692), negotiated so that a broadcast is
//! compressed once.
//!
//! With `server_no_context_takeover` every message the server sends is a
//! deflate stream of its own, independent of what that socket was sent
//! before; so the compressed bytes of one broadcast are the same for every
//! member, and are built once (see `transport/websocket/encoding.rs`). With
//! `client_no_context_takeover` (which a server may ask for even when the
//! client did not offer it, RFC 7692 section 7.1.1.1) the client does the
//! same, so no connection keeps a 32 KiB inflate window while idle.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The extension as groupcast accepts it, in the 101 response.
pub const RESPONSE: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// The end of a sync-flushed deflate stream, removed before sending and put
/// back before inflating (RFC 7692 section 7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Whether the client's `Sec-WebSocket-Extensions` offers permessage-deflate
/// in a form groupcast can accept: any offer of it whose parameters we can
/// honour (we always compress without context takeover, and with the full
/// 15-bit window, so `server_max_window_bits` below 15 cannot be honoured).
pub fn accepts(offers: &str) -> bool {
    offers.split(',').any(|offer| {
        let mut parts = offer.split(';').map(str::trim);
        if !parts
            .next()
            .is_some_and(|name| name.eq_ignore_ascii_case("permessage-deflate"))
        {
            return false;
        }
        parts.all(|param| {
            let (name, value) = match param.split_once('=') {
                Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
                None => (param, None),
            };
            match name.to_ascii_lowercase().as_str() {
                "server_no_context_takeover" | "client_no_context_takeover" => value.is_none(),
                // We do not limit the client's window: its choice is fine.
                "client_max_window_bits" => {
                    value.is_none_or(|bits| bits.parse::<u8>().is_ok_and(|b| (8..=15).contains(&b)))
                }
                "server_max_window_bits" => value == Some("15"),
                _ => false,
            }
        })
    })
}

thread_local! {
    /// One compressor per thread, reset for every message: its state is
    /// hundreds of KiB, far too much to allocate per broadcast.
    static COMPRESSOR: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), false));
}

/// `payload` compressed as one message with no context (the tail removed),
/// or `None` if compressing failed or did not make it smaller.
pub fn compress(payload: &[u8]) -> Option<Vec<u8>> {
    compress_with(payload, payload.len() / 2 + 64)
}

/// [`compress`] starting from an output buffer of `initial_capacity` bytes
/// (grown as needed). Public so that the property tests and the fuzz target
/// can try every buffer size; the result does not depend on it.
#[doc(hidden)]
pub fn compress_with(payload: &[u8], initial_capacity: usize) -> Option<Vec<u8>> {
    COMPRESSOR.with(|compressor| {
        let mut compressor = compressor.borrow_mut();
        compressor.reset();
        let mut out = Vec::with_capacity(initial_capacity.max(1));
        let mut input = payload;
        // miniz_oxide stops a call early in two ways. When `out` fills up,
        // it keeps the block that did not fit; and the next call then only
        // copies that block out and returns, without compressing what it
        // still holds (up to 258 bytes of lookahead) or ending the flush.
        // So a call that leaves room in `out` proves the sync flush
        // complete only when the call before it left room too: after a
        // call that filled `out`, one more call is always made. (Stopping
        // at the first call with room lost the tail of messages whose
        // compressed size outgrew the first buffer: Autobahn 12.2.9 and
        // 12.5.x.) That extra call may add an empty stored block when the
        // flush had in fact completed: valid deflate, five bytes.
        let mut previous_filled = false;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(64));
            }
            let before_in = compressor.total_in();
            compressor
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .ok()?;
            let consumed = usize::try_from(compressor.total_in() - before_in).ok()?;
            input = input.get(consumed..)?;
            let filled = out.len() == out.capacity();
            if input.is_empty() && !filled && !previous_filled {
                break;
            }
            previous_filled = filled;
        }
        // A complete sync flush ends with the tail; anything else is not a
        // message a peer could inflate, so it goes uncompressed.
        if !out.ends_with(&TAIL) {
            return None;
        }
        out.truncate(out.len() - TAIL.len());
        (out.len() < payload.len()).then_some(out)
    })
}

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// The message inflates to more than the limit (a decompression bomb,
    /// or just too large): stopped at the limit, never allocated past it.
    #[error("the message inflates to more than {limit} bytes")]
    TooBig { limit: usize },
    #[error("the compressed message is not valid deflate data: {0}")]
    Corrupt(String),
}

/// Inflates one client message (sent without context takeover), producing
/// at most `limit` bytes.
pub fn inflate(compressed: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    inflate_with(compressed, limit, compressed.len().saturating_mul(4))
}

/// [`inflate`] starting from an output buffer of `initial_capacity` bytes
/// (grown as needed, never past `limit` + 1). Public for the property tests
/// and the fuzz target; the result does not depend on it.
#[doc(hidden)]
pub fn inflate_with(
    compressed: &[u8],
    limit: usize,
    initial_capacity: usize,
) -> Result<Vec<u8>, InflateError> {
    let mut inflater = Decompress::new(false);
    let mut out = Vec::with_capacity(initial_capacity.clamp(1, limit.max(1)));
    let mut input = compressed;
    let mut tail_fed = false;
    loop {
        if out.len() == out.capacity() {
            if out.len() >= limit {
                // Full at the limit with input or output left: too big
                // (one more byte of room tells which, below).
                out.reserve_exact(1);
            } else {
                out.reserve_exact(out.capacity().min(limit - out.len()).max(64));
            }
        }
        let before_in = inflater.total_in();
        let before_out = inflater.total_out();
        let status = inflater
            .decompress_vec(input, &mut out, FlushDecompress::Sync)
            .map_err(|error| InflateError::Corrupt(error.to_string()))?;
        if out.len() > limit {
            return Err(InflateError::TooBig { limit });
        }
        let consumed = usize::try_from(inflater.total_in() - before_in).unwrap_or(usize::MAX);
        input = input.get(consumed..).unwrap_or_default();
        let produced = inflater.total_out() - before_out;
        if matches!(status, Status::StreamEnd) {
            // A final block: what follows (our tail) is not needed.
            return Ok(out);
        }
        let room = out.len() < out.capacity();
        if !input.is_empty() {
            if consumed == 0 && produced == 0 && room {
                return Err(InflateError::Corrupt("no progress".into()));
            }
            continue;
        }
        if !tail_fed {
            input = &TAIL;
            tail_fed = true;
            continue;
        }
        // All input is in, the tail too. Like the compressor, miniz_oxide
        // may return early (after copying out what did not fit before),
        // so it is done only when a call with room gives nothing more.
        if produced == 0 && room {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_compressed_inflates_back() {
        let line =
            "2026-12-01T10:00:00Z INFO task/42 step 3 of 9: compiling crate foo v1.2.3 ".repeat(3);
        let compressed = compress(line.as_bytes()).expect("text compresses");
        assert!(compressed.len() < line.len() / 2);
        assert_eq!(inflate(&compressed, 1 << 20).unwrap(), line.as_bytes());
    }

    #[test]
    fn incompressible_payloads_are_sent_plain() {
        let noise: Vec<u8> = (0..64u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        assert_eq!(compress(&noise), None);
    }

    #[test]
    fn a_decompression_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 10 << 20];
        let bomb = compress(&zeros).unwrap();
        assert!(
            bomb.len() < (10 << 20) / 100,
            "a bomb: {} bytes",
            bomb.len()
        );
        assert_eq!(
            inflate(&bomb, 64 * 1024),
            Err(InflateError::TooBig { limit: 64 * 1024 })
        );
        assert_eq!(inflate(&bomb, 10 << 20).unwrap().len(), 10 << 20);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(
            inflate(&[0xff; 32], 1024),
            Err(InflateError::Corrupt(_))
        ));
    }

    #[test]
    fn offers_are_accepted_only_when_they_can_be_honoured() {
        assert!(accepts("permessage-deflate; client_max_window_bits"));
        assert!(accepts("x-webkit-deflate-frame, permessage-deflate"));
        assert!(accepts(
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=10"
        ));
        assert!(!accepts("permessage-deflate; server_max_window_bits=10"));
        assert!(!accepts("permessage-deflate; unknown_param"));
        assert!(!accepts("x-webkit-deflate-frame"));
        assert!(!accepts(""));
    }
}
