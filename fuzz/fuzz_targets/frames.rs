//! WebSocket frames, differentially: whatever bytes a client sends, our
//! `FrameReader` (fed all at once and in chunks, with and without
//! permessage-deflate) reads the same messages as tungstenite's server and
//! ends the same way, and never panics; and messages derived from the bytes,
//! written by `wire::frame`, are read back exactly by tungstenite's client
//! (see `checks.rs` and `wire.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::frames(data));
