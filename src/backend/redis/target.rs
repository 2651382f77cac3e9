//! Where a link's Redis server is: fixed (one Redis, each shard) or
//! followed (the primary that Sentinel names, which changes on failover).
//!
//! The subscriber and the pool of a link both read the server from here,
//! so the Sentinel backend can move a whole link to a new primary by
//! switching one value: the pool hands out connections to the new server
//! from then on, and the subscriber, which watches the generation, drops
//! its connection and reconnects — and resubscribes its wanted set — to
//! the new one.

use deadpool_redis::Pool;
use parking_lot::RwLock;
use tokio::sync::watch;

/// One server: a client for the subscriber, a pool for everything else.
#[derive(Clone)]
pub(crate) struct Server {
    pub client: redis::Client,
    /// `host:port`, for logs and status (never a URL: it may hold a password).
    pub address: String,
    pub pool: Pool,
}

/// The current server of a link, if known. See the module docs.
pub(crate) struct CurrentServer {
    current: RwLock<Option<Server>>,
    generation: watch::Sender<u64>,
}

impl CurrentServer {
    /// A target that is `server` for good.
    pub(crate) fn fixed(server: Server) -> Self {
        CurrentServer {
            current: RwLock::new(Some(server)),
            generation: watch::Sender::new(0),
        }
    }

    /// A target not known yet (Sentinel has not answered).
    pub(crate) fn unknown() -> Self {
        CurrentServer {
            current: RwLock::new(None),
            generation: watch::Sender::new(0),
        }
    }

    /// The server now.
    pub(crate) fn current(&self) -> Option<Server> {
        self.current.read().clone()
    }

    /// `host:port` of the server now, or `"unknown"`.
    pub(crate) fn address(&self) -> String {
        self.current
            .read()
            .as_ref()
            .map_or_else(|| "unknown".to_string(), |s| s.address.clone())
    }

    /// Moves the link to `server`: the old pool is closed, and the
    /// subscriber is told to reconnect.
    pub(crate) fn switch(&self, server: Server) {
        let old = self.current.write().replace(server);
        if let Some(old) = old {
            old.pool.close();
        }
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Changes whenever [`CurrentServer::switch`] is called.
    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Closes the current pool (shutdown).
    pub(crate) fn close(&self) {
        if let Some(server) = self.current.read().as_ref() {
            server.pool.close();
        }
    }
}
