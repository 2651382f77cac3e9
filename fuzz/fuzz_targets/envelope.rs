//! The envelope decoder: whatever bytes arrive on a `group:*` channel,
//! `envelope::decode` and `Envelope::message` never panic, and what they
//! accept follows the wire format (see `checks.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::envelope(data));
