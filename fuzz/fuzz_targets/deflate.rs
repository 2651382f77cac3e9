//! permessage-deflate: whatever the message and the first buffer sizes,
//! what we compress inflates back exactly (by another inflater and by
//! ours), and inflating any bytes never panics or passes the limit (see
//! `checks.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::deflate(data));
