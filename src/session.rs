//! One client, as the hub and handlers see it, whatever its transport.
//!
//! A [`Session`] is a cheap handle (an `Arc`): the registry holds one, the
//! connection's tasks hold one, handlers get a reference. It carries the
//! session's identity (id, group, remote address), the keys the application
//! attaches to it, and its outbound queue. It knows nothing of sockets or transports: a
//! transport's writer drains the queue, encoding each message its own way,
//! and maps the session's [`CloseReason`] to its own signal (see
//! `transport/`).

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use parking_lot::RwLock;
use serde_json::Value;

use crate::auth::Claims;
use crate::broadcast::{Broadcast, KeyFilter};
use crate::close::{CloseKind, CloseReason};
use crate::config::Config;
use crate::group::GroupName;
use crate::message::Message;
use crate::outbound::{Outbound, Pushed, Queued};
use crate::protocol::Protocol;
pub use crate::session_id::SessionId;

/// A session's way back to its hub: weak, because the hub (through its
/// registry) owns the sessions; and opaque, because a session sits below
/// the hub in the layers: `hub.rs` turns it back into a `Hub`
/// (`Session::hub`), nothing else looks inside.
#[derive(Clone)]
pub(crate) struct HubHandle(pub(crate) Weak<dyn Any + Send + Sync>);

/// A connected client. Clone it freely: clones share one connection.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    id: SessionId,
    group: Option<GroupName>,
    remote_addr: Option<SocketAddr>,
    connected_at: SystemTime,
    keys: RwLock<HashMap<String, Value>>,
    /// What the session may do; replaced on a token refresh.
    claims: RwLock<Arc<Claims>>,
    outbound: Outbound,
    /// The hub the session belongs to (weak: the hub owns its sessions).
    hub: HubHandle,
    /// How its frames are written.
    protocol: Protocol,
}

impl Session {
    pub(crate) fn new(
        id: SessionId,
        group: Option<GroupName>,
        remote_addr: Option<SocketAddr>,
        config: &Config,
        claims: Claims,
        hub: HubHandle,
        (protocol, held): (Protocol, bool),
    ) -> Self {
        let mut keys = HashMap::new();
        // The subject is also a key, so the API shows it and a KeyFilter
        // can select a user's sessions; the typed claims stay authoritative.
        if let Some(sub) = &claims.sub {
            keys.insert("sub".to_string(), Value::from(sub.clone()));
        }
        Session {
            inner: Arc::new(Inner {
                id,
                group,
                remote_addr,
                connected_at: SystemTime::now(),
                keys: RwLock::new(keys),
                claims: RwLock::new(Arc::new(claims)),
                outbound: Outbound::new(config.queue_len, config.queue_full, held),
                hub,
                protocol,
            }),
        }
    }

    /// What this session may do: how it was admitted, its token's subject,
    /// whether it may publish, when it expires. Set by the server from the
    /// client's token (see [`crate::auth`]); handlers cannot change it.
    pub fn claims(&self) -> Arc<Claims> {
        self.inner.claims.read().clone()
    }

    /// Replaces the claims after a successful token refresh.
    pub(crate) fn set_claims(&self, claims: Claims) {
        *self.inner.claims.write() = Arc::new(claims);
    }

    /// The session's id, unique across the cluster.
    pub fn id(&self) -> &SessionId {
        &self.inner.id
    }

    /// How the session's frames are written: bare payloads, or
    /// `groupcast.v1` JSON frames with history positions.
    pub fn protocol(&self) -> Protocol {
        self.inner.protocol
    }

    /// Whether the group's join and leave frames (`--join-leave`) reach
    /// this session: `groupcast.v1` sessions whose token lets them see
    /// presence; never a raw client, which would take them for messages.
    pub fn sees_presence_frames(&self) -> bool {
        self.inner.protocol == Protocol::V1 && self.claims().may_see_presence()
    }

    /// The group this session connected to (`/ws/<group>`,
    /// `/sse/<group>`); `None` for a `groupcast.v1` connection opened at
    /// `/ws`, which holds only the groups it subscribes to. Every group it
    /// holds, this one included, is [`Session::groups`].
    pub fn group(&self) -> Option<&GroupName> {
        self.inner.group.as_ref()
    }

    /// The client's address, as the server saw it (a proxy's address when
    /// behind one).
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.inner.remote_addr
    }

    /// When the session connected.
    pub fn connected_at(&self) -> SystemTime {
        self.inner.connected_at
    }

    /// Attaches a key to the session (melody: `Set`). Keys show up in the
    /// HTTP API and can be matched by a [`KeyFilter`](crate::KeyFilter).
    pub fn set(&self, key: impl Into<String>, value: impl Into<Value>) {
        self.inner.keys.write().insert(key.into(), value.into());
    }

    /// A key's value (melody: `Get`).
    pub fn get(&self, key: &str) -> Option<Value> {
        self.inner.keys.read().get(key).cloned()
    }

    /// Removes a key, returning its value (melody: `UnSet`).
    pub fn remove(&self, key: &str) -> Option<Value> {
        self.inner.keys.write().remove(key)
    }

    /// A copy of all keys.
    pub fn keys(&self) -> HashMap<String, Value> {
        self.inner.keys.read().clone()
    }

    /// Runs `f` on the keys without copying them.
    pub(crate) fn with_keys<R>(&self, f: impl FnOnce(&HashMap<String, Value>) -> R) -> R {
        f(&self.inner.keys.read())
    }

    /// Sends a message to this session only (melody: `Write`). Returns
    /// false when the session is closing or its queue overflowed.
    pub fn send(&self, message: impl Into<Message>) -> bool {
        matches!(
            self.push(Queued::from(message.into())),
            Pushed::Queued | Pushed::DroppedOldest
        )
    }

    pub(crate) fn push(&self, message: Queued) -> Pushed {
        self.inner.outbound.push(message)
    }

    /// The way back to the hub (see `HubHandle`; `Session::hub` is in
    /// `hub.rs`).
    pub(crate) fn hub_handle(&self) -> &HubHandle {
        &self.inner.hub
    }

    /// Closes the connection with a WebSocket-style close code and reason
    /// (melody: `CloseWithMsg`; a transport without codes is told the
    /// code's [`CloseKind`]). Messages queued before are sent first.
    /// Returns false when the session was already closing.
    pub fn close(&self, code: u16, reason: impl Into<std::borrow::Cow<'static, str>>) -> bool {
        self.close_with(CloseReason::new(
            CloseKind::from_websocket_code(code),
            reason,
        ))
    }

    /// Closes the connection for `reason`, which each transport turns into
    /// its own signal. Messages queued before are sent first. Returns false
    /// when the session was already closing.
    pub fn close_with(&self, reason: CloseReason) -> bool {
        self.inner.outbound.close(reason)
    }

    /// Whether the session is closing or closed (melody: `IsClosed`).
    pub fn is_closed(&self) -> bool {
        self.inner.outbound.is_closing()
    }

    /// How many messages wait in the outbound queue.
    pub fn queued(&self) -> usize {
        self.inner.outbound.len()
    }

    pub(crate) fn outbound(&self) -> &Outbound {
        &self.inner.outbound
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.inner.id)
            .field("group", &self.inner.group)
            .field("remote_addr", &self.inner.remote_addr)
            .finish_non_exhaustive()
    }
}

/// What a broadcast or a key filter makes of a live session: the plain
/// data types (`broadcast.rs`) know keys, not sessions.
impl KeyFilter {
    /// Whether `session`'s keys match.
    pub fn matches(&self, session: &Session) -> bool {
        session.with_keys(|keys| self.matches_keys(keys))
    }
}

impl Broadcast {
    /// Whether `session`, already addressed by the target, receives it.
    pub(crate) fn admits(&self, session: &Session) -> bool {
        if self.except.as_ref() == Some(session.id()) {
            return false;
        }
        match &self.filter {
            Some(filter) => filter.matches(session),
            None => true,
        }
    }
}
