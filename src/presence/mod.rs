//! Per-group presence, cluster-wide: who is in a group on every node.
//!
//! Beside the hub like `workers/` ("Adding a per-group feature" in
//! `docs/architecture.md`): below the hub, [`local`] makes this node's
//! registry into the members the backend writes (and, standalone, answers
//! with); above it, [`api`] is the public entry point (`hub.presence(g)`,
//! `hub.presence_stats(g)`). The hub tells the backend's
//! [`PresenceStore`](crate::backend::PresenceStore) of each join and
//! leave; where members are stored and how they expire is the backend's
//! (`backend/redis/group_presence.rs`). What the store's writes change
//! for a whole group (occupied, vacated, a user joined or left) comes back
//! as [`PresenceChange`](crate::backend::PresenceChange)s, which
//! [`events`] turns into webhooks and join/leave frames; [`snapshot`]
//! answers a client's `?presence=1` with the members, gaplessly with
//! those frames.

pub mod api;
pub(crate) mod events;
pub(crate) mod local;
pub mod snapshot;
