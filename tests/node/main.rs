//! One node and its clients: delivery, order, limits, slow clients, bad
//! input, the HTTP API, auth, drain, workers, the README's settings, and
//! the terminal client (`groupcast tail` and `publish`).
//! Most tests serve a hub in-process or spawn the binary with no Redis; a
//! few show that the same rule holds across nodes and start their own
//! Redis container, and `bad_input` publishes garbage on this binary's
//! `TestRedis::shared()` one.
//!
//! One test binary for these files (one module each, tests named
//! `module::test`), so that the suite links a few binaries instead of one
//! per file.

#[path = "../common/mod.rs"]
mod common;

mod api;
mod auth;
mod bad_input;
mod config_file;
mod dashboards;
mod delivery;
mod docs;
mod drain;
mod join_leave;
mod limits;
mod logs;
mod openapi;
mod order;
mod slow_clients;
mod smoke;
mod sse;
mod terminal;
mod webhooks;
mod workers;
