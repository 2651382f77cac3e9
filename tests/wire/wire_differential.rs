//! groupcast's own WebSocket frames (`src/wire/`) against tungstenite's:
//! what a tungstenite client writes our reader reads as tungstenite's
//! server does, and what we write tungstenite's client reads back
//! identically. The comparison itself (and what "the same" means where the
//! two differ in form) is in `fuzz/wire.rs`, shared with the fuzz target
//! `frames`.
//!
//! The inputs come from a seeded PRNG: the same cases on every run, and a
//! failing case names its seed. Client frames are built with tungstenite's
//! own `Frame::format` (masked, as a client sends them), or by hand where
//! tungstenite cannot write them (non-minimal lengths).
//!
//! Where our reader differs from tungstenite on purpose:
//!
//! * After a close, tungstenite's server reads nothing more; our reader
//!   refuses any byte that follows with 1002 (RFC 6455 section 5.5.1).
//!   The cases' expected ends are our reader's; `wire::after_close` maps
//!   them to tungstenite's.
//! * A close code a peer may not send is handed up as sent (the server
//!   answers 1002); tungstenite rewrites the frame to `1002 "Protocol
//!   violation"`. Normalised in the comparison (`wire::close`).
//! * permessage-deflate: tungstenite has none, so RSV1 frames are checked
//!   against flate2 here, not against tungstenite.
//!
//! Both accept (the same header parser): lengths in a longer encoding than
//! needed (RFC 6455 asks senders for the shortest; receivers need not
//! refuse), and a 64-bit length with its top bit set is refused by the
//! frame size limit (1009).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use groupcast::wire::{FrameReader, Incoming, Limits, OpCode as Op, Role, deflate, frame};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use tungstenite::protocol::frame::coding::{CloseCode, OpCode};
use tungstenite::protocol::frame::{CloseFrame, Frame, FrameHeader};
use tungstenite::protocol::{Role as TRole, WebSocket, WebSocketConfig};
use tungstenite::{Message, Utf8Bytes};

use crate::checks::wire;
use crate::checks::wire::{End, Got, Sent};

// ----- building what a client sends --------------------------------------------

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// A masked client frame, formatted by tungstenite (`rsv`: RSV1-3 as bits
/// 4, 2, 1).
fn client_frame(rng: &mut StdRng, fin: bool, rsv: u8, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let header = FrameHeader {
        is_final: fin,
        rsv1: rsv & 4 != 0,
        rsv2: rsv & 2 != 0,
        rsv3: rsv & 1 != 0,
        opcode: OpCode::from(opcode),
        mask: Some(rng.random()),
    };
    let mut out = Vec::with_capacity(payload.len() + 14);
    Frame::from_payload(header, Bytes::copy_from_slice(payload))
        .format(&mut out)
        .unwrap();
    out
}

/// A frame tungstenite cannot write: unmasked, or its length in a longer
/// encoding than needed (`width`: 0, 2 or 8 extra bytes; a `len` it
/// cannot hold is cut).
fn hand_frame(first: u8, width: usize, len: u64, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let masked = if mask.is_some() { 0x80 } else { 0 };
    match width {
        0 => out.push(masked | len as u8),
        2 => {
            out.push(masked | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(masked | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// Exactly `len` bytes of UTF-8 with 1- to 4-byte characters (a long one
/// repeats a random kilobyte: generating is slow in a debug build).
fn text(rng: &mut StdRng, len: usize) -> String {
    if len > 4096 {
        let block = text(rng, 1024);
        let mut out = block.repeat(len / 1024 - 1);
        out.push_str(&text(rng, len - out.len()));
        return out;
    }
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let c = *['a', 'Z', ' ', 'é', '€', '😀', '\u{7f}', '\u{10ffff}']
            .choose(rng)
            .unwrap();
        out.push(if out.len() + c.len_utf8() <= len {
            c
        } else {
            'x'
        });
    }
    out
}

fn binary(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut out = vec![0; len.min(4096)];
    rng.fill(&mut out[..]);
    out.iter().copied().cycle().take(len).collect()
}

/// A length that is interesting under `limits`: the frame length encoding
/// boundaries and the limits themselves, or a small one.
fn length(rng: &mut StdRng, limits: Limits) -> usize {
    if rng.random_bool(0.6) {
        return rng.random_range(0..40);
    }
    let mut candidates = vec![0, 1, 2, 3, 4, 5, 124, 125, 126, 127, 128, 200];
    // Large ones rarely: they cost time in a debug build.
    if rng.random_bool(0.1) {
        candidates = vec![65_534, 65_535, 65_536, 65_537];
        for limit in [limits.max_message_size, limits.max_frame_size] {
            if limit <= 70_000 {
                candidates.extend([limit - 1, limit, limit + 1]);
            }
        }
    } else {
        for limit in [limits.max_message_size, limits.max_frame_size] {
            if limit <= 1000 {
                candidates.extend([limit - 1, limit, limit + 1]);
            }
        }
    }
    *candidates.choose(rng).unwrap()
}

/// `data` cut into 1 to 5 pieces at random byte offsets (inside UTF-8
/// characters too; empty pieces too).
fn pieces(rng: &mut StdRng, data: &[u8]) -> Vec<Vec<u8>> {
    let n = if rng.random_bool(0.5) {
        1
    } else {
        rng.random_range(2..=5)
    };
    let mut cuts: Vec<usize> = (1..n).map(|_| rng.random_range(0..=data.len())).collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    for cut in cuts {
        out.push(data[start..cut].to_vec());
        start = cut;
    }
    out.push(data[start..].to_vec());
    out
}

fn control_payload(rng: &mut StdRng) -> Vec<u8> {
    let len = *[0, 1, 4, 30, 125].choose(rng).unwrap();
    binary(rng, len)
}

/// The test input of one case and what it should read as, independently
/// of either reader.
struct Case {
    limits: Limits,
    bytes: Vec<u8>,
    /// What must be read before the end (for a case that fails, a prefix
    /// of what is read).
    expected: Vec<Got>,
    /// The end: `None` when only tungstenite knows (after a message that
    /// may be too big, a frame after a close...).
    end: Option<End>,
    /// Whether the input stops inside a frame.
    truncated: bool,
}

/// A data message, fragmented maybe, pings and pongs between its
/// fragments. Adds what it should read as to `expected`; `Err(1009)` when
/// it breaks a limit (what is read is then up to tungstenite).
fn data_message(
    rng: &mut StdRng,
    limits: Limits,
    opcode: u8,
    payload: &[u8],
    out: &mut Vec<u8>,
    expected: &mut Vec<Got>,
) -> Result<(), u16> {
    let pieces = pieces(rng, payload);
    let last = pieces.len() - 1;
    let too_big = payload.len() > limits.max_message_size
        || pieces
            .iter()
            .any(|piece| piece.len() > limits.max_frame_size);
    // Which of the pings are read before the failure: up to tungstenite.
    let mut unknown = Vec::new();
    let expected = if too_big { &mut unknown } else { expected };
    for (i, piece) in pieces.iter().enumerate() {
        let op = if i == 0 { opcode } else { CONTINUATION };
        out.extend(client_frame(rng, i == last, 0, op, piece));
        if i < last && rng.random_bool(0.3) {
            let (op, got): (u8, fn(Vec<u8>) -> Got) = if rng.random() {
                (PING, Got::Ping)
            } else {
                (PONG, Got::Pong)
            };
            let control = control_payload(rng);
            out.extend(client_frame(rng, true, 0, op, &control));
            expected.push(got(control));
        }
    }
    if too_big {
        return Err(1009);
    }
    expected.push(if opcode == TEXT {
        Got::Text(String::from_utf8(payload.to_vec()).unwrap())
    } else {
        Got::Binary(payload.to_vec())
    });
    Ok(())
}

/// Text that is not UTF-8: a bad sequence inside, or a character cut at
/// the end.
fn invalid_utf8(rng: &mut StdRng) -> Vec<u8> {
    let bad: &[&[u8]] = &[
        &[0xff],
        &[0xc0, 0xaf],             // overlong '/'
        &[0x80],                   // a lone continuation byte
        &[0xed, 0xa0, 0x80],       // a surrogate
        &[0xe0, 0x80, 0x80],       // overlong
        &[0xf5, 0x80, 0x80, 0x80], // past U+10FFFF
        &[0xe2, 0x82, b'x'],       // a character cut short
    ];
    let arg = rng.random_range(0..20);
    let mut data = text(rng, arg).into_bytes();
    if rng.random_bool(0.3) {
        // An incomplete character at the very end.
        let c = "😀".as_bytes();
        data.extend_from_slice(&c[..rng.random_range(1..4)]);
    } else {
        let mut at = rng.random_range(0..=data.len());
        while std::str::from_utf8(&data[..at]).is_err() {
            at -= 1;
        }
        let tail = data.split_off(at);
        data.extend_from_slice(bad.choose(rng).unwrap());
        data.extend(tail);
    }
    data
}

/// A close frame's payload, and what it should read as (`Err(code)`: a
/// failure).
fn close_payload(rng: &mut StdRng) -> (Vec<u8>, Result<Got, u16>) {
    let codes = [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000,
        4999, // allowed
        0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535, // not allowed
    ];
    let code: u16 = *codes.choose(rng).unwrap();
    match rng.random_range(0..6) {
        0 => (Vec::new(), Ok(Got::Close(None))),
        1 => (vec![0x03], Err(1002)),
        2 => {
            let mut payload = code.to_be_bytes().to_vec();
            payload.extend_from_slice(&[b'o', b'k', 0xff]);
            (payload, Err(1007))
        }
        _ => {
            let arg = rng.random_range(0..=123);
            let reason = text(rng, arg);
            let mut payload = code.to_be_bytes().to_vec();
            payload.extend_from_slice(reason.as_bytes());
            (payload, Ok(wire::close(code, &reason)))
        }
    }
}

/// A frame that breaks RFC 6455, and the close code it deserves.
fn fault(rng: &mut StdRng, limits: Limits, out: &mut Vec<u8>, expected: &mut Vec<Got>) -> u16 {
    let arg = rng.random_range(0..10);
    let small = binary(rng, arg);
    let data_op = if rng.random() { TEXT } else { BINARY };
    let arg = rng.random_range(0..10);
    let small_text = text(rng, arg).into_bytes();
    match rng.random_range(0..12) {
        0 => {
            // Unmasked.
            let op = *[0x81, 0x82, 0x89, 0x8A, 0x88].choose(rng).unwrap();
            out.extend(hand_frame(op, 0, small.len() as u64, None, &small));
            1002
        }
        1 => {
            // Reserved bits, on any frame.
            let rsv = rng.random_range(1..8);
            let op = *[TEXT, BINARY, PING, PONG, CLOSE].choose(rng).unwrap();
            out.extend(client_frame(rng, true, rsv, op, &small_text));
            1002
        }
        2 => {
            // A reserved opcode.
            let op = *[3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF]
                .choose(rng)
                .unwrap();
            out.extend(client_frame(rng, true, 0, op, &small));
            1002
        }
        3 => {
            // A fragmented control frame.
            let op = *[PING, PONG, CLOSE].choose(rng).unwrap();
            out.extend(client_frame(rng, false, 0, op, &[]));
            1002
        }
        4 => {
            // A control frame over 125 bytes.
            let len = rng.random_range(126..=300);
            let op = *[PING, PONG, CLOSE].choose(rng).unwrap();
            let big = binary(rng, len);
            out.extend(client_frame(rng, true, 0, op, &big));
            if len > limits.max_frame_size {
                1009
            } else {
                1002
            }
        }
        5 => {
            // A continuation without a message.
            let arg = rng.random();
            out.extend(client_frame(rng, arg, 0, CONTINUATION, &small));
            1002
        }
        6 => {
            // A new message while one is fragmented.
            out.extend(client_frame(rng, false, 0, data_op, &small_text));
            if rng.random() {
                let ping = control_payload(rng);
                out.extend(client_frame(rng, true, 0, PING, &ping));
                expected.push(Got::Ping(ping));
            }
            let arg = rng.random();
            out.extend(client_frame(rng, arg, 0, data_op, &small_text));
            1002
        }
        7 => {
            // A frame after a close.
            out.extend(client_frame(rng, true, 0, CLOSE, &[]));
            expected.push(Got::Close(None));
            let op = *[TEXT, PING, CLOSE].choose(rng).unwrap();
            out.extend(client_frame(rng, true, 0, op, b"late"));
            1002
        }
        8 => {
            // Not UTF-8: one frame, or fragments (a character split across
            // them maybe).
            let data = invalid_utf8(rng);
            let pieces = pieces(rng, &data);
            let last = pieces.len() - 1;
            for (i, piece) in pieces.iter().enumerate() {
                let op = if i == 0 { TEXT } else { CONTINUATION };
                out.extend(client_frame(rng, i == last, 0, op, piece));
            }
            1007
        }
        9 => {
            // A bad close frame.
            loop {
                let (payload, read) = close_payload(rng);
                if let Err(code) = read {
                    out.extend(client_frame(rng, true, 0, CLOSE, &payload));
                    return code;
                }
            }
        }
        10 => {
            // A 64-bit length with the top bit set.
            let len = 0x8000_0000_0000_0000 | rng.random_range(0..100u64);
            out.extend(hand_frame(0x82, 8, len, Some([1, 2, 3, 4]), &[]));
            1009
        }
        _ => {
            // A message over the limit.
            let len = limits.max_message_size + 1;
            let payload = binary(rng, len);
            let _ = data_message(rng, limits, BINARY, &payload, out, &mut Vec::new());
            1009
        }
    }
}

fn case(rng: &mut StdRng) -> Case {
    let limits = *[
        Limits {
            max_message_size: 300,
            max_frame_size: 200,
        },
        Limits {
            max_message_size: 65_536,
            max_frame_size: 65_536,
        },
        Limits {
            max_message_size: 70_000,
            max_frame_size: 1 << 20,
        },
        Limits {
            max_message_size: 1 << 20,
            max_frame_size: 16 << 20,
        },
    ]
    .choose(rng)
    .unwrap();
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    let mut end = Some(End::Open);
    for _ in 0..rng.random_range(0..6) {
        match rng.random_range(0..10) {
            0..=4 => {
                let len = length(rng, limits);
                let (op, payload) = if rng.random() {
                    (TEXT, text(rng, len).into_bytes())
                } else {
                    (BINARY, binary(rng, len))
                };
                if data_message(rng, limits, op, &payload, &mut bytes, &mut expected).is_err() {
                    end = Some(End::Failed(1009));
                    break;
                }
            }
            5 | 6 => {
                let payload = control_payload(rng);
                if rng.random() {
                    bytes.extend(client_frame(rng, true, 0, PING, &payload));
                    expected.push(Got::Ping(payload));
                } else {
                    bytes.extend(client_frame(rng, true, 0, PONG, &payload));
                    expected.push(Got::Pong(payload));
                }
            }
            7 => {
                // The shortest message in a longer length encoding.
                let arg = rng.random_range(0..10);
                let payload = text(rng, arg);
                let width = *[2, 8].choose(rng).unwrap();
                let key = rng.random();
                let len = payload.len() as u64;
                bytes.extend(hand_frame(0x81, width, len, Some(key), payload.as_bytes()));
                expected.push(Got::Text(payload));
            }
            8 => {
                let (payload, read) = close_payload(rng);
                bytes.extend(client_frame(rng, true, 0, CLOSE, &payload));
                match read {
                    Ok(got) => {
                        expected.push(got);
                        break; // nothing may follow (a fault may: below)
                    }
                    Err(code) => {
                        end = Some(End::Failed(code));
                        break;
                    }
                }
            }
            _ => {
                let code = fault(rng, limits, &mut bytes, &mut expected);
                end = Some(End::Failed(code));
                break;
            }
        }
    }
    if expected
        .last()
        .is_some_and(|got| matches!(got, Got::Close(_)))
        && end == Some(End::Open)
    {
        if rng.random_bool(0.3) {
            // Anything after a close is refused, once it is a whole frame.
            bytes.extend(client_frame(rng, true, 0, TEXT, b"late"));
            end = Some(End::Failed(1002));
        } else if rng.random_bool(0.2) {
            // Even half a frame.
            let late = client_frame(rng, true, 0, TEXT, b"late");
            let arg = rng.random_range(1..late.len());
            bytes.extend_from_slice(&late[..arg]);
            end = Some(End::Failed(1002));
        }
    } else if end == Some(End::Open) && rng.random_bool(0.05) {
        let _ = fault(rng, limits, &mut bytes, &mut expected);
        end = None;
    }
    let mut truncated = false;
    if end == Some(End::Open) && !expected.is_empty() && rng.random_bool(0.15) {
        // Cut inside the last frame: its message is not read.
        expected.pop();
        let frame_start = bytes.len() - last_frame_len(&bytes);
        bytes.truncate(rng.random_range(frame_start + 1..bytes.len()));
        truncated = true;
    }
    Case {
        limits,
        bytes,
        expected,
        end,
        truncated,
    }
}

/// The length of the last frame in `bytes` (all well-formed, masked).
fn last_frame_len(bytes: &[u8]) -> usize {
    let mut at = 0;
    let mut last = 0;
    while at < bytes.len() {
        let mut cursor = std::io::Cursor::new(&bytes[at..]);
        let (_, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
        last = cursor.position() as usize + len as usize;
        at += last;
    }
    last
}

// ----- reading what clients send ----------------------------------------------

#[test]
fn what_tungstenite_clients_write_we_read_identically() {
    let mut rng = StdRng::seed_from_u64(0x6C_17);
    let mut ends = std::collections::HashMap::<End, usize>::new();
    let mut truncations = 0;
    for seed in 0..3000u64 {
        let case = case(&mut rng);
        let ours = wire::same_as_tungstenite_server(&case.bytes, case.limits, seed);
        let outcome = &ours.outcome;
        let context = format!(
            "case {seed}: {:02x?}\nread {:?} {:?}\nexpected {:?} {:?}",
            &case.bytes[case.bytes.len().saturating_sub(40)..],
            outcome.messages,
            outcome.end,
            case.expected,
            case.end
        );
        match case.end {
            Some(End::Open) => {
                assert_eq!(outcome.messages, case.expected, "{context}");
                assert_eq!(outcome.end, End::Open, "{context}");
                // Nothing kept unless the input stops inside a frame.
                if !case.truncated {
                    assert_eq!(ours.buffered, 0, "{context}");
                }
            }
            Some(end) => {
                assert!(outcome.messages.starts_with(&case.expected), "{context}");
                assert_eq!(outcome.end, end, "{context}");
            }
            None => assert!(outcome.messages.starts_with(&case.expected), "{context}"),
        }
        *ends.entry(outcome.end).or_default() += 1;
        truncations += usize::from(case.truncated);
    }
    // Every way of ending is exercised, many times.
    for end in [
        End::Open,
        End::Failed(1002),
        End::Failed(1007),
        End::Failed(1009),
    ] {
        assert!(
            ends.get(&end).copied().unwrap_or(0) >= 100,
            "{end:?}: {ends:?}"
        );
    }
    assert!(truncations >= 100, "{truncations} truncated cases");
}

/// A Vec-backed socket for tungstenite's client: what it writes is kept.
struct Written(Vec<u8>);

impl std::io::Read for Written {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Ok(0)
    }
}

impl std::io::Write for Written {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn messages_a_tungstenite_client_sends_are_read_as_sent() {
    let mut rng = StdRng::seed_from_u64(7);
    let limits = Limits {
        max_message_size: 1 << 20,
        max_frame_size: 1 << 20,
    };
    for seed in 0..300 {
        let mut client = WebSocket::from_raw_socket(
            Written(Vec::new()),
            TRole::Client,
            Some(WebSocketConfig::default()),
        );
        let mut expected = Vec::new();
        for _ in 0..rng.random_range(1..8) {
            let len = length(&mut rng, limits).min(70_000);
            let (message, got) = match rng.random_range(0..5) {
                0 => {
                    let s = text(&mut rng, len);
                    (Message::text(s.clone()), Got::Text(s))
                }
                1 => {
                    let b = binary(&mut rng, len);
                    (Message::binary(b.clone()), Got::Binary(b))
                }
                2 => {
                    let p = control_payload(&mut rng);
                    (Message::Ping(p.clone().into()), Got::Ping(p))
                }
                3 => {
                    let p = control_payload(&mut rng);
                    (Message::Pong(p.clone().into()), Got::Pong(p))
                }
                _ => {
                    let code = *[1000u16, 1001, 1011, 4000].choose(&mut rng).unwrap();
                    let arg = rng.random_range(0..=123);
                    let reason = text(&mut rng, arg);
                    let frame = CloseFrame {
                        code: CloseCode::from(code),
                        reason: Utf8Bytes::from(reason.clone()),
                    };
                    (
                        Message::Close(Some(frame)),
                        Got::Close(Some((code, reason))),
                    )
                }
            };
            let close = matches!(message, Message::Close(_));
            client.send(message).unwrap();
            expected.push(got);
            if close {
                break;
            }
        }
        let bytes = std::mem::take(&mut client.get_mut().0);
        let ours = wire::same_as_tungstenite_server(&bytes, limits, seed);
        assert_eq!(ours.outcome.messages, expected, "case {seed}");
        assert_eq!(ours.outcome.end, End::Open);
        assert_eq!(ours.buffered, 0);
    }
}

// ----- what we write ------------------------------------------------------------

#[test]
fn what_we_write_tungstenite_clients_read_back_identically() {
    let mut rng = StdRng::seed_from_u64(0xF2A);
    let limits = Limits {
        max_message_size: 65_536,
        max_frame_size: 65_536,
    };
    for seed in 0..500 {
        let mut messages = Vec::new();
        for _ in 0..rng.random_range(0..8) {
            let mut len = length(&mut rng, limits);
            if seed % 100 == 0 && messages.is_empty() {
                len = 1 << 20;
            }
            messages.push(match rng.random_range(0..5) {
                0 => Sent::Text(text(&mut rng, len)),
                1 => Sent::Binary(binary(&mut rng, len)),
                2 => Sent::Ping,
                3 => Sent::Pong(binary(&mut rng, len.min(300))),
                _ => {
                    let code = rng.random_bool(0.8).then(|| rng.random_range(1000..5000));
                    Sent::Close(code, text(&mut rng, len.min(400)))
                }
            });
        }
        wire::tungstenite_client_reads_back(&messages, seed);
    }
}

#[test]
fn a_close_reason_too_long_is_cut_to_whole_characters() {
    // 125 bytes of payload at most: 2 of code, 123 of reason.
    for reason in [
        "é".repeat(62),
        "€".repeat(42),
        "😀".repeat(31),
        "a".repeat(200),
    ] {
        let sent = Sent::Close(Some(1000), reason.clone());
        let Got::Close(Some((1000, cut))) = sent.expected() else {
            panic!("a close")
        };
        assert!(cut.len() <= 123 && cut.len() > 119, "{} bytes", cut.len());
        assert!(reason.starts_with(&cut));
        wire::tungstenite_client_reads_back(&[sent], 0);
    }
}

/// RFC 7692 section 7.2.2: the sender's sync-flushed deflate data, the
/// final `00 00 ff ff` removed.
fn inflate_with_flate2(compressed: &[u8]) -> Vec<u8> {
    let mut input = compressed.to_vec();
    input.extend_from_slice(&[0x00, 0x00, 0xff, 0xff]);
    let mut inflater = Decompress::new(false);
    let mut out = Vec::with_capacity(input.len() * 8 + 1024);
    loop {
        let before = inflater.total_in() as usize;
        inflater
            .decompress_vec(&input[before..], &mut out, FlushDecompress::Sync)
            .unwrap();
        if inflater.total_in() as usize == input.len() && out.len() < out.capacity() {
            return out;
        }
        out.reserve(out.capacity());
    }
}

#[test]
fn compressed_frames_we_write_inflate_back_to_the_original() {
    let mut rng = StdRng::seed_from_u64(99);
    let mut compressed_some = 0;
    for _ in 0..120 {
        let len = *[0, 10, 125, 126, 1000, 65_535, 65_536, 200_000]
            .choose(&mut rng)
            .unwrap();
        // Compressible text: words repeated.
        let words = ["groupcast ", "broadcast ", "é€😀 ", "log line 42 "];
        let mut original = String::new();
        while original.len() < len {
            original.push_str(words.choose(&mut rng).unwrap());
        }
        let (op, first) = if rng.random() {
            (Op::Text, 0xC1)
        } else {
            (Op::Binary, 0xC2)
        };
        let Some(compressed) = deflate::compress(original.as_bytes()) else {
            assert!(
                original.len() < 64,
                "{} bytes did not compress",
                original.len()
            );
            continue;
        };
        compressed_some += 1;
        let frame = frame::encode(op, true, &compressed);
        // The header: FIN, RSV1, the opcode; unmasked, shortest length.
        assert_eq!(frame[0], first);
        let mut cursor = std::io::Cursor::new(&frame[..]);
        let (header, length) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
        assert!(header.is_final && header.rsv1 && !header.rsv2 && !header.rsv3);
        assert_eq!(header.mask, None);
        assert_eq!(length as usize, compressed.len());
        assert_eq!(
            cursor.position() as usize,
            frame::header(op, true, compressed.len()).1
        );
        let payload = &frame[cursor.position() as usize..];
        assert_eq!(inflate_with_flate2(payload), original.as_bytes());
    }
    assert!(compressed_some > 60, "{compressed_some} compressed");
}

// ----- reading compressed frames -------------------------------------------------

/// flate2's raw deflate of `data`, sync-flushed, its tail removed: what a
/// browser sends with permessage-deflate (no context takeover).
fn deflate_with_flate2(data: &[u8]) -> Vec<u8> {
    let mut compressor = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    loop {
        let before = compressor.total_in() as usize;
        compressor
            .compress_vec(&data[before..], &mut out, FlushCompress::Sync)
            .unwrap();
        if compressor.total_in() as usize == data.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity() + 64);
    }
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

fn read_all(reader: &mut FrameReader, bytes: &[u8]) -> Result<Vec<Incoming>, u16> {
    reader.feed(bytes);
    let mut out = Vec::new();
    loop {
        match reader.read() {
            Ok(Some(message)) => out.push(message),
            Ok(None) => return Ok(out),
            Err(error) => return Err(error.close_code()),
        }
    }
}

const DEFLATE_LIMITS: Limits = Limits {
    max_message_size: 1 << 20,
    max_frame_size: 1 << 20,
};

#[test]
fn compressed_client_messages_read_as_the_original() {
    let mut rng = StdRng::seed_from_u64(5);
    for _ in 0..200 {
        let len = length(&mut rng, DEFLATE_LIMITS);
        let is_text = rng.random();
        let original = if is_text {
            text(&mut rng, len).into_bytes()
        } else {
            binary(&mut rng, len)
        };
        let compressed = deflate_with_flate2(&original);
        // RSV1 on the first frame only; pings between the fragments.
        let mut bytes = Vec::new();
        let pieces = pieces(&mut rng, &compressed);
        let last = pieces.len() - 1;
        for (i, piece) in pieces.iter().enumerate() {
            let (rsv, op) = match i {
                0 => (4, if is_text { TEXT } else { BINARY }),
                _ => (0, CONTINUATION),
            };
            bytes.extend(client_frame(&mut rng, i == last, rsv, op, piece));
            if i < last {
                bytes.extend(client_frame(&mut rng, true, 0, PING, b"p"));
            }
        }
        let mut reader = FrameReader::new(Role::Server, DEFLATE_LIMITS).with_deflate(true);
        let mut read = read_all(&mut reader, &bytes).unwrap();
        let message = read.pop().unwrap();
        assert_eq!(read.len(), last, "the pings");
        assert!(
            read.iter()
                .all(|m| *m == Incoming::Ping(Bytes::from_static(b"p")))
        );
        match message {
            Incoming::Text(got) => {
                assert!(is_text);
                assert_eq!(got.as_bytes(), &original[..]);
            }
            Incoming::Binary(got) => {
                assert!(!is_text);
                assert_eq!(&got[..], &original[..]);
            }
            other => panic!("{other:?}"),
        }
        // Without deflate negotiated, RSV1 is a protocol error, as for
        // tungstenite.
        let mut plain = FrameReader::new(Role::Server, DEFLATE_LIMITS);
        assert_eq!(read_all(&mut plain, &bytes).unwrap_err(), 1002);
        assert_eq!(
            wire::theirs(&bytes, TRole::Server, DEFLATE_LIMITS).end,
            End::Failed(1002)
        );
    }
}

/// RSV1 is "compressed" only on the first frame of a data message.
#[test]
fn rsv1_on_a_continuation_or_control_frame_is_a_protocol_error() {
    let mut rng = StdRng::seed_from_u64(6);
    let compressed = deflate_with_flate2(b"hello hello hello");
    let cases = [
        vec![
            client_frame(&mut rng, false, 4, TEXT, &compressed[..3]),
            client_frame(&mut rng, true, 4, CONTINUATION, &compressed[3..]),
        ],
        vec![client_frame(&mut rng, true, 4, PING, b"")],
        vec![client_frame(&mut rng, true, 4, PONG, b"x")],
        vec![client_frame(&mut rng, true, 4, CLOSE, &[0x03, 0xe8])],
        // RSV2 and RSV3 mean nothing with deflate either.
        vec![client_frame(&mut rng, true, 6, TEXT, &compressed)],
        vec![client_frame(&mut rng, true, 1, BINARY, &compressed)],
    ];
    for frames in cases {
        let bytes = frames.concat();
        let mut reader = FrameReader::new(Role::Server, DEFLATE_LIMITS).with_deflate(true);
        assert_eq!(read_all(&mut reader, &bytes), Err(1002), "{bytes:02x?}");
    }
}

/// Allocations of this thread, while it counts: the largest one.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: no panic while a thread's locals are being torn down.
    let _ = COUNTING.try_with(|counting| {
        if counting.get() {
            let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn a_decompression_bomb_is_refused_without_allocating_past_the_limit() {
    // 10 MiB of zeros: 1 MiB deflated, sync-flushed (a block that refers to
    // nothing before it), ten times over.
    let mib = deflate::compress(&vec![0u8; 1 << 20]).unwrap();
    let mut bomb = Vec::new();
    for _ in 0..10 {
        bomb.extend_from_slice(&mib);
        bomb.extend_from_slice(&[0x00, 0x00, 0xff, 0xff]);
    }
    bomb.truncate(bomb.len() - 4);
    assert_eq!(inflate_with_flate2(&bomb).len(), 10 << 20, "a bomb");
    assert!(bomb.len() < 64 * 1024, "{} bytes", bomb.len());

    let limit = 256 * 1024;
    let limits = Limits {
        max_message_size: limit,
        max_frame_size: limit,
    };
    let mut rng = StdRng::seed_from_u64(10);
    let frame = client_frame(&mut rng, true, 4, BINARY, &bomb);
    let mut reader = FrameReader::new(Role::Server, limits).with_deflate(true);
    LARGEST.set(0);
    COUNTING.set(true);
    let read = read_all(&mut reader, &frame);
    COUNTING.set(false);
    assert_eq!(read, Err(1009));
    let largest = LARGEST.get();
    assert!(
        largest <= limit + 4096,
        "an allocation of {largest} bytes for a limit of {limit}"
    );
}

#[test]
fn corrupt_deflate_data_is_an_error_not_a_panic() {
    let mut reader = FrameReader::new(Role::Server, DEFLATE_LIMITS).with_deflate(true);
    let mut rng = StdRng::seed_from_u64(11);
    let frame = client_frame(&mut rng, true, 4, TEXT, &[0xff; 32]);
    assert_eq!(read_all(&mut reader, &frame), Err(1007));

    // Random bytes, and valid data damaged: an error or a message, never a
    // panic; a text message read is UTF-8 (Utf8Bytes cannot be otherwise).
    let mut errors = 0;
    for i in 0..500 {
        let mut data = if i % 2 == 0 {
            let len = rng.random_range(0..200);
            binary(&mut rng, len)
        } else {
            deflate_with_flate2(text(&mut rng, 300).as_bytes())
        };
        if i % 2 == 1 {
            let at = rng.random_range(0..data.len());
            data[at] ^= 1 << rng.random_range(0..8);
            data.truncate(rng.random_range(0..=data.len()));
        }
        let frame = client_frame(&mut rng, true, 4, TEXT, &data);
        let mut reader = FrameReader::new(Role::Server, DEFLATE_LIMITS).with_deflate(true);
        match read_all(&mut reader, &frame) {
            Ok(read) => assert!(read.len() <= 1),
            Err(code) => {
                assert!([1007, 1009].contains(&code), "{code}");
                errors += 1;
            }
        }
    }
    assert!(errors > 100, "{errors} errors");
}
