//! Headless Chromium through chromedriver (`scripts/install-test-deps.sh`
//! installs both): the demo page, the admin page, the JS client, compression in the
//! browser, and the JS client (one group, and five on one connection) and
//! the browser's EventSource resuming across a killed node (which also
//! needs Docker for Redis).
//!
//! One test binary for these files (one module each, tests named
//! `module::test`), so that the suite links a few binaries instead of one
//! per file.

#[path = "../common/mod.rs"]
mod common;

mod browser;
mod browser_admin;
mod browser_disconnect;
mod browser_presence;
mod browser_resume;
mod browser_sse;
