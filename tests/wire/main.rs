//! The WebSocket layer: frames, permessage-deflate, close codes, and the
//! fuzz inputs replayed. Nothing here needs Docker: an in-process hub on
//! loopback at most, and for `deflate_peers` the Python venv that
//! `scripts/install-test-deps.sh` makes.
//!
//! One test binary for these files (one module each, tests named
//! `module::test`), so that the suite links a few binaries instead of one
//! per file. `wire_differential` installs a counting global allocator for
//! the whole binary; it counts only on a thread that turns it on.

#[path = "../common/mod.rs"]
mod common;

/// The fuzz targets' checks, replayed by `fuzz_regressions`, and with them
/// the frame oracle `checks::wire` (`fuzz/wire.rs`) that
/// `wire_differential` compares with: loaded once for the whole binary.
#[path = "../../fuzz/checks.rs"]
mod checks;

mod close_codes;
mod compression;
mod deflate;
mod deflate_peers;
mod fuzz_regressions;
mod wire_differential;
