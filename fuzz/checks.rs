//! What the fuzz targets check, shared by the targets (`fuzz_targets/`) and
//! by `tests/wire/fuzz_regressions.rs`, which replays every seed and every input
//! kept in `fuzz/regressions/` through the same functions on every
//! `cargo test`.
//!
//! A check fails by panicking: a crash of the target, a failed test.

#![allow(dead_code)]

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use bytes::Bytes;
use groupcast::auth::GroupPattern;
use groupcast::auth::http::client_token;
use groupcast::auth::refresh::{RefreshRequest, parse_refresh};
use groupcast::envelope::{self, Decoded, Envelope, FrameKind};
use groupcast::group::MAX_GROUP_LEN;
use groupcast::wire::{Limits, ReadError, Role};
use groupcast::{GroupName, GroupNameError, Message};

#[path = "wire.rs"]
pub mod wire;

/// The envelope decoder, on any bytes from a `group:*` channel.
///
/// * Bytes not starting with `0xC1` are raw: returned untouched, and
///   delivered as text exactly when they are UTF-8.
/// * Bytes starting with `0xC1` are an envelope or an error, never raw.
/// * A decoded envelope's frame (when it has one) carries its payload, and
///   encoding it again gives bytes that decode to the same envelope.
pub fn envelope(data: &[u8]) {
    let bytes = Bytes::copy_from_slice(data);
    match envelope::decode(bytes.clone()) {
        Ok(Decoded::Raw(raw)) => {
            assert_ne!(data.first(), Some(&envelope::MAGIC[0]), "0xC1 taken as raw");
            assert_eq!(raw, bytes, "raw bytes changed");
            let message = Message::from_raw(raw);
            assert_eq!(message.is_text(), std::str::from_utf8(data).is_ok());
            assert_eq!(message.payload(), bytes);
        }
        Ok(Decoded::Envelope(env)) => {
            assert!(
                data.starts_with(&envelope::MAGIC) && data.get(3) == Some(&envelope::VERSION),
                "an envelope without the magic and version"
            );
            check_frame(&env);
            let again = env.encode().expect("a decoded envelope encodes again");
            match envelope::decode(again) {
                Ok(Decoded::Envelope(back)) => assert_eq!(back, env, "round trip"),
                other => panic!("a re-encoded envelope decodes as {other:?}"),
            }
        }
        Err(_) => assert_eq!(
            data.first(),
            Some(&envelope::MAGIC[0]),
            "only 0xC1 bytes can fail to decode"
        ),
    }
}

fn check_frame(env: &Envelope) {
    match (env.kind, env.message()) {
        (FrameKind::Binary, Ok(message)) => {
            assert!(!message.is_text());
            assert_eq!(message.payload(), env.payload);
        }
        (FrameKind::Text, Ok(message)) => {
            assert!(message.is_text());
            assert_eq!(message.payload(), env.payload);
        }
        (FrameKind::Text, Err(_)) => {
            assert!(
                std::str::from_utf8(&env.payload).is_err(),
                "valid text refused"
            );
        }
        (FrameKind::Binary, Err(error)) => panic!("a binary envelope has no frame: {error}"),
    }
}

/// Splits fuzz input into `n` parts at NUL bytes; the last part takes the
/// rest (NULs included), missing parts are empty.
fn parts<const N: usize>(data: &[u8]) -> [&[u8]; N] {
    let mut out = [&data[..0]; N];
    let mut pieces = data.splitn(N, |b| *b == 0);
    for slot in out.iter_mut() {
        *slot = pieces.next().unwrap_or_default();
    }
    out
}

/// Group names and request parsing. The input is
/// `path NUL content-type NUL query NUL body`:
///
/// * the path is a group name (`/ws/{group}`), a group pattern, and the
///   rest of `POST /api/groups/{rest}`;
/// * the content type and body make the publish request;
/// * the content type is also an `Authorization` header, and the query a
///   query string, for the client's token;
/// * the body is also a client text message (a refresh request or not).
pub fn request(data: &[u8]) {
    let [path, content_type, query, body] = parts::<4>(data);
    let path = String::from_utf8_lossy(path);
    let query = String::from_utf8_lossy(query);

    let name = group_name(&path);
    group_pattern(&path, name.as_ref());

    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(content_type) {
        headers.insert(header::CONTENT_TYPE, value.clone());
        headers.insert(header::AUTHORIZATION, value);
    }
    publish(&path, &headers, body);

    if let Ok(Some(token)) = client_token(&headers, Some(&query)) {
        assert!(!token.is_empty(), "an empty token");
    }
    if let Ok(text) = std::str::from_utf8(body) {
        match parse_refresh(text) {
            Some(RefreshRequest::Token(token)) => {
                assert!(!token.is_empty());
                assert!(text.contains("refresh"));
            }
            Some(RefreshRequest::Malformed) => assert!(text.contains("refresh")),
            None => {}
        }
    }
}

/// `GroupName::new` agrees with the rules written out here, and a valid
/// name survives every way it travels (Display, JSON, `FromStr`).
fn group_name(s: &str) -> Option<GroupName> {
    let valid = !s.is_empty()
        && s.len() <= MAX_GROUP_LEN
        && !s.chars().any(|c| c.is_control() || c.is_whitespace())
        && s.split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    match GroupName::new(s) {
        Ok(name) => {
            assert!(valid, "accepted {s:?}");
            assert_eq!(name.as_str(), s);
            assert_eq!(name.to_string(), s);
            assert_eq!(s.parse::<GroupName>().as_ref(), Ok(&name));
            let json = serde_json::to_string(&name).unwrap();
            let back: GroupName = serde_json::from_str(&json).unwrap();
            assert_eq!(back, name);
            Some(name)
        }
        Err(error) => {
            assert!(!valid, "refused {s:?}: {error}");
            if let GroupNameError::TooLong { len } = error {
                assert_eq!(len, s.len());
            }
            // A name JSON refuses too.
            let json = serde_json::to_string(s).unwrap();
            assert!(serde_json::from_str::<GroupName>(&json).is_err());
            None
        }
    }
}

/// A pattern is valid exactly when it is a valid group name; it always
/// matches itself, and `**` matches every name.
fn group_pattern(s: &str, name: Option<&GroupName>) {
    let pattern = GroupPattern::new(s);
    assert_eq!(pattern.is_ok(), name.is_some(), "pattern vs name: {s:?}");
    if let (Ok(pattern), Some(name)) = (pattern, name) {
        assert!(pattern.matches(name), "{s:?} does not match itself");
        assert!(GroupPattern::new("**").unwrap().matches(name));
    }
}

/// `POST /api/groups/{rest}`: either a group and the body as a frame, or a
/// client error.
fn publish(rest: &str, headers: &HeaderMap, body: &[u8]) {
    let body = Bytes::copy_from_slice(body);
    match groupcast::server::parse_publish(rest, headers, body.clone()) {
        Ok((group, message)) => {
            assert_eq!(format!("{group}/messages"), rest);
            assert!(!body.is_empty());
            assert_eq!(message.payload(), body);
            let mime = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if message.is_text() {
                assert!(std::str::from_utf8(&body).is_ok());
                assert_ne!(mime, "application/octet-stream");
            } else {
                assert_eq!(mime, "application/octet-stream");
            }
        }
        Err((status, code)) => {
            assert!(
                [
                    StatusCode::BAD_REQUEST,
                    StatusCode::NOT_FOUND,
                    StatusCode::UNSUPPORTED_MEDIA_TYPE
                ]
                .contains(&status),
                "{status} {code}"
            );
            assert!(!code.is_empty());
        }
    }
}

/// The limits the `frames` target reads with, picked by its first byte.
const FRAME_LIMITS: [Limits; 4] = [
    Limits {
        max_message_size: 64,
        max_frame_size: 32,
    },
    Limits {
        max_message_size: 300,
        max_frame_size: 300,
    },
    Limits {
        max_message_size: 65_536,
        max_frame_size: 65_536,
    },
    Limits {
        max_message_size: 1 << 20,
        max_frame_size: 1 << 24,
    },
];

/// Our WebSocket frames against tungstenite's (`wire.rs`). The input is a
/// config byte (limits: the low 2 bits; the chunking seed: the rest) and
/// then the bytes a client sends:
///
/// * our reader — all at once and fed in chunks — and tungstenite's server
///   read the same messages and end the same way (no error, or an error of
///   the same class), and nothing panics;
/// * with permessage-deflate negotiated our reader reads the same, unless
///   it refused a frame's reserved bits without it (RSV1 means
///   "compressed" then), and does not panic on any compressed frame;
/// * messages derived from the same bytes, written by `wire::frame`, are
///   read back exactly by tungstenite's client.
pub fn frames(data: &[u8]) {
    let (config, input) = data
        .split_first()
        .map_or((0, data), |(config, input)| (*config, input));
    let limits = FRAME_LIMITS[usize::from(config & 3)];
    let seed = u64::from(config >> 2);
    let plain = wire::same_as_tungstenite_server(input, limits, seed);
    let deflated = wire::ours(input, Role::Server, limits, true, wire::chunks(seed));
    if plain.error != Some(ReadError::Protocol("reserved bits are set")) {
        assert_eq!(deflated.outcome, plain.outcome, "with deflate negotiated");
    }
    wire::tungstenite_client_reads_back(&wire::sent_from(input), seed);
}

/// permessage-deflate (`wire::deflate`), on any bytes: the first two
/// choose the size of the first output buffer, the rest is a message.
///
/// * The buffers change nothing but, where one fills up, an empty block
///   (5 bytes) at the end.
/// * What we compress is smaller, and inflates to the message exactly,
///   both by an inflater that shares no code with ours (zune-inflate) and
///   by ours, whatever the buffers' first sizes (the compressor once lost
///   the end of messages that outgrew its first buffer).
/// * Any bytes, inflated, give a message within the limit or an error,
///   never a panic and never more than the limit.
pub fn deflate(data: &[u8]) {
    use groupcast::wire::deflate;
    let (capacity, message) = match data {
        [low, high, rest @ ..] => (usize::from(u16::from_le_bytes([*low, *high])), rest),
        _ => (1, data),
    };
    // With room for any output from the start, no call ever fills the
    // buffer: the reference for whether the message compresses at all.
    // A buffer that fills up may cost an empty stored block (5 bytes, see
    // `compress_with`) each time it does, never anything else: so the
    // results differ by whole empty blocks, and only when the smaller
    // buffer filled (which makes a message near incompressible go plain).
    let roomy = deflate::compress_with(message, message.len() * 2 + 1024);
    let compressed = deflate::compress_with(message, capacity);
    match (&roomy, &compressed) {
        // Until the first time the smaller buffer fills, both runs wrote
        // the same bytes: it can only have filled, and the results differ,
        // if it was no larger than the roomy stream with its tail.
        (Some(roomy), Some(small)) => {
            let extra = small.len().checked_sub(roomy.len());
            assert!(
                extra.is_some_and(|extra| {
                    extra % 5 == 0 && (extra == 0 || capacity <= roomy.len() + 4)
                }),
                "{} bytes with a first buffer of {capacity}, {} with room for all",
                small.len(),
                roomy.len()
            );
        }
        (Some(roomy), None) => assert!(
            capacity <= roomy.len() + 4,
            "not compressed with a first buffer of {capacity} that never filled"
        ),
        (None, Some(_)) => panic!("compressed only with a first buffer of {capacity}"),
        (None, None) => {}
    }
    if let Some(compressed) = compressed {
        assert!(compressed.len() < message.len(), "compressed is smaller");
        assert_eq!(
            independently_inflated(&compressed),
            message,
            "another inflater's reading"
        );
        let ours = deflate::inflate_with(&compressed, message.len(), capacity)
            .expect("our inflater reads what we compressed");
        assert_eq!(ours, message, "our inflater's reading");
    }
    let limit = capacity % 4096 + 1;
    if let Ok(inflated) = deflate::inflate_with(message, limit, capacity) {
        assert!(inflated.len() <= limit, "inflated past the limit");
    }
}

/// A compressed message as a peer inflates it: the tail the sender removed
/// put back, then a final empty stored block, read by an inflater that
/// shares no code with ours (zune-inflate).
pub fn independently_inflated(compressed: &[u8]) -> Vec<u8> {
    let mut stream = compressed.to_vec();
    stream.extend_from_slice(&[0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff]);
    zune_inflate::DeflateDecoder::new(&stream)
        .decode_deflate()
        .expect("another inflater reads what we compressed")
}

/// Bytes that compress to somewhere between a tenth and nine tenths of
/// their size, like slices of a bitmap or a PDF: runs of one byte mixed
/// with noise, `noise` percent of them. Deterministic for a seed.
pub fn half_compressible(seed: u64, len: usize, noise: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    };
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        if next() % 100 < noise {
            out.push(next() as u8);
        } else {
            let byte = next() as u8;
            let run = (next() % 8) as usize;
            out.extend(std::iter::repeat_n(byte, run));
        }
    }
    out.truncate(len);
    out
}
