//! permessage-deflate against an independent implementation: the Python
//! `websockets` library as the client (`tests/peers/deflate_echo.py`), over
//! loopback, against a hub with `compression: true`.
//!
//! The peer sends payloads from 0 B to 256 KiB (multilingual and base64
//! text, random bytes, slices of a bitmap and a PDF from
//! `tests/fixtures/payloads/`), each whole and fragmented, to a group of
//! one: the default client-messages setting forwards what a member sends
//! to its group, so every message comes back to it. Both directions are
//! compressed (websockets compresses what it sends, the hub inflates; the
//! hub compresses the echo, websockets inflates) and the peer compares
//! every echo byte for byte. The compressor once ended before its sync
//! flush was complete, and 18 of the 64 KiB and 128 KiB bitmap and PDF
//! slices (those ending in a long incompressible run) came back shorter, or
//! inflated to garbage; the raw clients of `tests/wire/compression.rs` and
//! the flate2 oracle of `tests/wire/wire_differential.rs` never sent such
//! a message.
//!
//! Needs the venv that `scripts/install-test-deps.sh` makes
//! (`target/py-peers/`, with `websockets`); without it the test fails,
//! saying so. Chromium as the peer is in `tests/browser/browser.rs`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::TestServer;
use groupcast::{Config, Hub};
use serde_json::Value;

/// How long the whole peer run may take before it is taken for hung (it
/// takes a few seconds); not a measure of anything.
const PEER_LIMIT: Duration = Duration::from_secs(120);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's interpreter; fails, naming the install script, without it.
fn python_with_websockets() -> PathBuf {
    let python = repo().join("target/py-peers/bin/python");
    assert!(
        python.is_file(),
        "{} not found: the permessage-deflate peer test needs the Python `websockets` \
         library in a private venv. Run scripts/install-test-deps.sh and try again.",
        python.display()
    );
    python
}

/// A hub that compresses, takes 256 KiB messages (and more), and lets one
/// client send as fast as it likes.
fn echoing_compressing_hub() -> Hub {
    Hub::builder()
        .config(Config {
            compression: true,
            max_message_size: 1 << 20,
            max_inbound_rate: 0,
            ..Config::default()
        })
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_peer_gets_every_payload_back_byte_for_byte() {
    let python = python_with_websockets();
    let server = TestServer::start(echoing_compressing_hub()).await;
    let script = repo().join("tests/peers/deflate_echo.py");
    let fixtures = repo().join("tests/fixtures/payloads");

    let started = Instant::now();
    let output = tokio::time::timeout(
        PEER_LIMIT,
        tokio::process::Command::new(&python)
            .arg(&script)
            .arg(server.ws_url("echo/python"))
            .arg(&fixtures)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("the Python peer did not finish within {PEER_LIMIT:?}"))
    .expect("run the Python peer");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!(
        "python peer ({:.1} s, {}):\n{stdout}",
        started.elapsed().as_secs_f64(),
        output.status
    );
    if !stderr.is_empty() {
        eprintln!("python peer stderr:\n{stderr}");
    }

    let metrics = server.hub.metrics();
    let (received, received_bytes, compressed) = (
        metrics.messages_in.get(),
        metrics.bytes_in.get(),
        metrics.messages_compressed.get(),
    );
    let server_side = format!(
        "the hub read {received} messages ({received_bytes} bytes inflated) and \
         compressed {compressed}"
    );
    let summary: Value = serde_json::from_str(&stdout).unwrap_or_else(|_| {
        panic!(
            "the Python peer printed no summary ({}); if `websockets` is missing, run \
             scripts/install-test-deps.sh. stderr:\n{stderr}",
            output.status
        )
    });
    assert!(
        output.status.success(),
        "the Python peer found {} of {} messages not echoed exactly; first: {}; {server_side}",
        summary["failed"],
        summary["messages"],
        summary["first_mismatch"]
    );

    // Everything came back, and it went both ways compressed: the peer
    // checked that permessage-deflate was negotiated; the hub read exactly
    // what was sent (inflated), and compressed the echoes.
    let extensions = summary["extensions"].as_str().unwrap_or_default();
    assert!(
        extensions.contains("permessage-deflate"),
        "negotiated: {extensions:?}"
    );
    let messages = summary["messages"].as_u64().unwrap();
    assert_eq!(summary["ok"].as_u64(), Some(messages));
    assert!(messages >= 600, "only {messages} messages were sent");
    assert_eq!(
        (received, received_bytes),
        (messages, summary["sent_bytes"].as_u64().unwrap()),
        "{server_side}"
    );
    // Random bytes do not shrink and messages under 128 bytes are not
    // worth it: both go plain; the rest (a good half) is compressed.
    assert!(
        compressed >= messages / 4,
        "only {compressed} of {messages} echoes were compressed"
    );
}
