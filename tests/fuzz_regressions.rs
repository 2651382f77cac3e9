//! The fuzz targets' inputs, replayed on every `cargo test`: each seed
//! (`fuzz/seeds/<target>/`) and each input a fuzzer ever crashed on
//! (`fuzz/regressions/<target>/`) goes through the very checks the target
//! runs (`fuzz/checks.rs`), without libFuzzer and on the stable toolchain.
//!
//! When `scripts/fuzz.sh` finds a crash, it copies the input to
//! `fuzz/regressions/<target>/`; fix the bug and keep the file.
//!
//! The seeds are written by the ignored test at the end:
//! `cargo test --test fuzz_regressions -- --ignored write_seeds`.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

use groupcast::KeyFilter;
use groupcast::SessionId;
use groupcast::envelope::{Envelope, FrameKind};

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
    };
    let full = Envelope {
        origin: "node-b".into(),
        id: u64::MAX,
        kind: FrameKind::Binary,
        except: Some(SessionId::from("0123456789abcdef")),
        filter: Some(KeyFilter::equals("role", "admin")),
        sessions: Some(vec![SessionId::from("s1"), SessionId::from("s2")]),
        payload: vec![0, 0xff, 0xC1, b'G', b'C'],
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

/// Writes the seed corpus into `fuzz/seeds/`.
#[test]
#[ignore = "writes fuzz/seeds/; run by hand when the seeds change"]
fn write_seeds() {
    for (target, seeds) in [("envelope", envelope_seeds()), ("request", request_seeds())] {
        let dir = fuzz_dir().join("seeds").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}
