//! Group names and request parsing: `GroupName::new`, the publish request
//! of the HTTP API (`server::parse_publish`), client tokens from headers
//! and query strings, refresh messages and group patterns never panic, and
//! what they accept follows their rules (see `checks.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::request(data));
