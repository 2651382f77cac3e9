//! The fuzz targets' inputs, replayed on every `cargo test`: each seed
//! (`fuzz/seeds/<target>/`) and each input a fuzzer ever crashed on
//! (`fuzz/regressions/<target>/`) goes through the very checks the target
//! runs (`fuzz/checks.rs`), without libFuzzer and on the stable toolchain.
//!
//! When `scripts/fuzz.sh` finds a crash, it copies the input to
//! `fuzz/regressions/<target>/`; fix the bug and keep the file.
//!
//! The seeds are written by the ignored test at the end:
//! `cargo test --test wire -- --ignored fuzz_regressions::write_seeds`.

use std::path::{Path, PathBuf};

use groupcast::KeyFilter;
use groupcast::SessionId;
use groupcast::envelope::{Envelope, FrameKind};

use crate::checks;
use crate::common::frames::masked_client_frame;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Every file in `fuzz/seeds/<target>` and `fuzz/regressions/<target>`.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for kind in ["seeds", "regressions"] {
        let dir = fuzz_dir().join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_file() && path.file_name().is_some_and(|n| n != ".gitkeep") {
                let bytes = std::fs::read(&path).unwrap();
                out.push((path, bytes));
            }
        }
    }
    out.sort();
    out
}

/// Runs `check` on every input of `target`, naming the one that fails.
fn replay(target: &str, check: fn(&[u8])) {
    let inputs = inputs(target);
    assert!(
        inputs.len() >= 5,
        "fuzz/seeds/{target} should hold the seed corpus"
    );
    for (path, bytes) in inputs {
        let outcome = std::panic::catch_unwind(|| check(&bytes));
        assert!(
            outcome.is_ok(),
            "{} fails the {target} checks (replay: cargo fuzz run {target} {})",
            path.display(),
            path.display()
        );
    }
}

#[test]
fn envelope_inputs_pass_the_envelope_checks() {
    replay("envelope", checks::envelope);
}

#[test]
fn request_inputs_pass_the_request_checks() {
    replay("request", checks::request);
}

#[test]
fn frames_inputs_pass_the_frames_checks() {
    replay("frames", checks::frames);
}

#[test]
fn deflate_inputs_pass_the_deflate_checks() {
    replay("deflate", checks::deflate);
}

// ----- the seed corpus ------------------------------------------------------------

fn envelope_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let base = Envelope {
        origin: "node-a".into(),
        id: 7,
        kind: FrameKind::Text,
        except: None,
        filter: None,
        sessions: None,
        payload: b"hello".to_vec(),
        presence: false,
        presence_seq: None,
    };
    let full = Envelope {
        origin: "node-b".into(),
        id: u64::MAX,
        kind: FrameKind::Binary,
        except: Some(SessionId::from("0123456789abcdef")),
        filter: Some(KeyFilter::equals("role", "admin")),
        sessions: Some(vec![SessionId::from("s1"), SessionId::from("s2")]),
        payload: vec![0, 0xff, 0xC1, b'G', b'C'],
        presence: false,
        presence_seq: None,
    };
    let text = base.encode().unwrap().to_vec();
    let mut bad_text = base.clone();
    bad_text.payload = vec![0xff, 0xfe];
    vec![
        ("text-envelope", text.clone()),
        ("full-envelope", full.encode().unwrap().to_vec()),
        (
            "text-envelope-bad-utf8",
            bad_text.encode().unwrap().to_vec(),
        ),
        ("truncated-envelope", text[..text.len() / 2].to_vec()),
        ("unknown-version", {
            let mut v = text.clone();
            v[3] = 2;
            v
        }),
        ("magic-only", vec![0xC1, b'G', b'C', 1]),
        ("raw-text", b"hello from redis-cli".to_vec()),
        ("raw-binary", vec![0xff, 0x00, 0x80]),
        ("raw-empty", Vec::new()),
    ]
}

fn request_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let join = |parts: &[&[u8]]| parts.join(&0u8);
    vec![
        (
            "text-publish",
            join(&[
                b"room/messages",
                b"text/plain; charset=utf-8",
                b"",
                b"hello",
            ]),
        ),
        (
            "json-publish",
            join(&[b"task/42/messages", b"application/json", b"", b"{\"n\":1}"]),
        ),
        (
            "binary-publish",
            join(&[
                b"room/messages",
                b"application/octet-stream",
                b"",
                &[0, 0xff, 1],
            ]),
        ),
        (
            "bearer-and-refresh",
            join(&[
                b"chat",
                b"Bearer abc.def.ghi",
                b"token=xyz&x=1",
                b"{\"type\":\"refresh\",\"token\":\"abc\"}",
            ]),
        ),
        (
            "query-token",
            join(&[
                b"news/**",
                b"",
                b"a=b&token=t%20k",
                b"{\"type\":\"refresh\"}",
            ]),
        ),
        (
            "bad-names",
            join(&[b"a//b/../x/messages", b"text/html", b"token=", b""]),
        ),
        (
            "patterns",
            join(&[b"task-*/x*y/**", b"application/problem+json", b"", b"[1,2"]),
        ),
    ]
}

/// A masked client frame (key `1 2 3 4`), with the shortest length.
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    masked_client_frame(first, [1, 2, 3, 4], payload)
}

/// `frames` inputs: a config byte (limits, chunking), then client frames.
fn frames_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let with = |config: u8, frames: &[Vec<u8>]| {
        let mut out = vec![config];
        out.extend(frames.concat());
        out
    };
    let compressed = groupcast::wire::deflate::compress(b"hello hello hello hello").unwrap();
    vec![
        (
            "text",
            with(0x05, &[client_frame(0x81, "héllo".as_bytes())]),
        ),
        (
            "fragments-and-pings",
            with(
                0x22,
                &[
                    client_frame(0x01, &"é".as_bytes()[..1]),
                    client_frame(0x89, b"ping"),
                    client_frame(0x00, &"é".as_bytes()[1..]),
                    client_frame(0x8A, b""),
                    client_frame(0x80, b"!"),
                ],
            ),
        ),
        ("binary-126", with(0x41, &[client_frame(0x82, &[7u8; 126])])),
        (
            "close-with-reason",
            with(
                0x03,
                &[
                    client_frame(0x88, b"\x03\xe8bye"),
                    client_frame(0x81, b"late"),
                ],
            ),
        ),
        (
            "bad-close-code",
            with(0x07, &[client_frame(0x88, b"\x03\xedx")]),
        ),
        ("invalid-utf8", with(0x09, &[client_frame(0x81, b"ok\xff")])),
        (
            "too-big",
            with(
                0x00,
                &[client_frame(0x82, &[1u8; 65]), client_frame(0x89, b"")],
            ),
        ),
        ("unmasked", vec![0x01, 0x81, 0x02, b'h', b'i']),
        ("reserved-opcode", with(0x11, &[client_frame(0x83, b"x")])),
        ("compressed", with(0x01, &[client_frame(0xC1, &compressed)])),
        (
            "non-minimal-length",
            vec![0x02, 0x82, 0x80 | 126, 0, 1, 0, 0, 0, 0, b'x'],
        ),
    ]
}

/// `deflate` inputs: two bytes of first buffer size, then a message.
fn deflate_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let with = |capacity: u16, message: &[u8]| {
        let mut out = capacity.to_le_bytes().to_vec();
        out.extend_from_slice(message);
        out
    };
    let log =
        "2026-12-01T10:00:00Z INFO task/42 step 3 of 9: compiling crate foo v1.2.3\n".repeat(40);
    // Runs and noise, like a slice of a bitmap or a PDF: compresses to
    // most of its size. The compressor's buffers only fill up mid-message
    // past 64 KiB of input (its block size), hence the length.
    let half = checks::half_compressible(1, 3000, 60);
    // Autobahn 12.2.9's size; this one came back 3,368 bytes short.
    let large = checks::half_compressible(90 * 7 + 65_536, 65_536, 90);
    vec![
        ("empty", with(0, b"")),
        ("log-lines-one-byte-buffer", with(1, log.as_bytes())),
        ("log-lines-default-buffer", with(1_600, log.as_bytes())),
        ("half-compressible-small-buffer", with(700, &half)),
        ("half-compressible-one-byte-buffer", with(1, &half)),
        ("half-compressible-64k", with(32_832, &large)),
        ("not-deflate", with(64, &[0xff; 40])),
        (
            "stored-block",
            with(8, &[0x01, 0x03, 0x00, 0xfc, 0xff, b'a', b'b', b'c']),
        ),
    ]
}

/// Writes the seed corpus into `fuzz/seeds/`.
#[test]
#[ignore = "writes fuzz/seeds/; run by hand when the seeds change"]
fn write_seeds() {
    for (target, seeds) in [
        ("envelope", envelope_seeds()),
        ("request", request_seeds()),
        ("frames", frames_seeds()),
        ("deflate", deflate_seeds()),
    ] {
        let dir = fuzz_dir().join("seeds").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}
