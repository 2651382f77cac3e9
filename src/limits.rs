//! The node's limits: connections (total and per client address), groups,
//! and the rate of messages one connection may send.
//!
//! Each limit is a [`Config`](crate::Config) field with a safe default;
//! `0` turns a limit off. A connection is admitted against the connection
//! limits *before* the WebSocket upgrade, so a full node answers with an
//! HTTP status and a JSON reason instead of a socket (see
//! `transport/lifecycle.rs`): 503 `node_full` or `too_many_groups`, 429
//! `too_many_connections_from_ip`. The admission holds a
//! permit until the connection ends, so upgrades in flight
//! count too and a burst of connects cannot overshoot the limit.
//!
//! Every refusal is counted in `groupcast_limit_rejections_total{limit=…}`
//! with one of the [`LimitRejection::label`] values.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Which limit refused or closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitRejection {
    /// The node holds `--max-connections` connections.
    #[error("this node is full: {limit} connections")]
    Connections { limit: usize },
    /// The client's address holds `--max-connections-per-ip` connections.
    #[error("too many connections from this address: the limit is {limit}")]
    ConnectionsPerIp { limit: usize },
    /// The node has members in `--max-groups` groups and this one is new.
    #[error("this node serves its maximum of {limit} groups")]
    Groups { limit: usize },
    /// The client sent messages faster than `--max-inbound-rate`.
    #[error("rate limit exceeded: more than {rate} messages/s")]
    InboundRate { rate: u32 },
    /// The client sent a message larger than `--max-message-size`.
    #[error("message larger than {limit} bytes")]
    MessageSize { limit: usize },
}

impl LimitRejection {
    /// The `limit` label of `groupcast_limit_rejections_total`.
    pub fn label(&self) -> &'static str {
        match self {
            LimitRejection::Connections { .. } => "connections",
            LimitRejection::ConnectionsPerIp { .. } => "connections_per_ip",
            LimitRejection::Groups { .. } => "groups",
            LimitRejection::InboundRate { .. } => "inbound_rate",
            LimitRejection::MessageSize { .. } => "message_size",
        }
    }
}

/// Counts the connections of a node, in total and per client address.
pub(crate) struct ConnectionLimiter {
    max_total: usize,
    max_per_ip: usize,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    /// Only addresses with at least one connection: entries go at zero, so
    /// the map never grows with the number of addresses ever seen.
    per_ip: HashMap<IpAddr, usize>,
}

impl ConnectionLimiter {
    pub(crate) fn new(max_total: usize, max_per_ip: usize) -> Self {
        ConnectionLimiter {
            max_total,
            max_per_ip,
            counts: Mutex::new(Counts::default()),
        }
    }

    /// Takes a slot for a connection from `ip` (no address: only the total
    /// limit applies), or says which limit is reached.
    pub(crate) fn admit(
        self: &Arc<Self>,
        ip: Option<IpAddr>,
    ) -> Result<ConnectionPermit, LimitRejection> {
        // ::ffff:10.0.0.1 and 10.0.0.1 are one client.
        let ip = ip.map(|ip| ip.to_canonical());
        let mut counts = self.counts.lock();
        if self.max_total > 0 && counts.total >= self.max_total {
            return Err(LimitRejection::Connections {
                limit: self.max_total,
            });
        }
        let per_ip = if self.max_per_ip > 0 { ip } else { None };
        if let Some(ip) = per_ip {
            let held = counts.per_ip.get(&ip).copied().unwrap_or(0);
            if held >= self.max_per_ip {
                return Err(LimitRejection::ConnectionsPerIp {
                    limit: self.max_per_ip,
                });
            }
            counts.per_ip.insert(ip, held + 1);
        }
        counts.total += 1;
        Ok(ConnectionPermit {
            limiter: self.clone(),
            ip: per_ip,
        })
    }

    /// Connections admitted and not yet ended (upgrades in flight included).
    pub(crate) fn admitted(&self) -> usize {
        self.counts.lock().total
    }

    /// Addresses holding at least one connection (when per-IP counting is on).
    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.counts.lock().per_ip.len()
    }

    fn release(&self, ip: Option<IpAddr>) {
        let mut counts = self.counts.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(ip) = ip
            && let Some(held) = counts.per_ip.get_mut(&ip)
        {
            *held -= 1;
            if *held == 0 {
                counts.per_ip.remove(&ip);
            }
        }
    }
}

/// One admitted connection's slot; given back when dropped.
pub(crate) struct ConnectionPermit {
    limiter: Arc<ConnectionLimiter>,
    ip: Option<IpAddr>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.limiter.release(self.ip);
    }
}

/// A token bucket: `rate` messages per second on average, up to `burst`
/// at once. Starts full.
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// `None` when `rate` is 0 (no limit). A burst below 1 is taken as 1.
    pub(crate) fn new(rate: u32, burst: u32) -> Option<Self> {
        if rate == 0 {
            return None;
        }
        let burst = f64::from(burst.max(1));
        Some(TokenBucket {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            last: Instant::now(),
        })
    }

    /// Takes one token; false when the bucket is empty.
    pub(crate) fn take(&mut self) -> bool {
        self.take_at(Instant::now())
    }

    fn take_at(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)))
    }

    #[test]
    fn total_limit_and_release() {
        let limiter = Arc::new(ConnectionLimiter::new(2, 0));
        let a = limiter.admit(ip(1)).unwrap();
        let _b = limiter.admit(None).unwrap();
        assert_eq!(
            limiter.admit(ip(2)).err(),
            Some(LimitRejection::Connections { limit: 2 })
        );
        drop(a);
        assert!(limiter.admit(ip(2)).is_ok());
    }

    #[test]
    fn per_ip_limit_counts_each_address_and_forgets_empty_ones() {
        let limiter = Arc::new(ConnectionLimiter::new(0, 2));
        let a1 = limiter.admit(ip(1)).unwrap();
        let a2 = limiter.admit(ip(1)).unwrap();
        assert_eq!(
            limiter.admit(ip(1)).err(),
            Some(LimitRejection::ConnectionsPerIp { limit: 2 })
        );
        let b = limiter.admit(ip(2)).unwrap();
        // The same client over an IPv4-mapped IPv6 address.
        let mapped = Some(IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped()));
        assert!(limiter.admit(mapped).is_err());
        assert_eq!(limiter.addresses(), 2);
        drop((a1, a2, b));
        assert_eq!(limiter.addresses(), 0);
        assert_eq!(limiter.admitted(), 0);
    }

    #[test]
    fn zero_means_no_limit() {
        let limiter = Arc::new(ConnectionLimiter::new(0, 0));
        let permits: Vec<_> = (0..100).map(|_| limiter.admit(ip(1)).unwrap()).collect();
        assert_eq!(limiter.admitted(), 100);
        assert_eq!(limiter.addresses(), 0);
        drop(permits);
        assert_eq!(limiter.admitted(), 0);
    }

    #[test]
    fn token_bucket_allows_a_burst_then_the_rate() {
        assert!(TokenBucket::new(0, 10).is_none());
        let mut bucket = TokenBucket::new(10, 3).unwrap();
        let start = bucket.last;
        for _ in 0..3 {
            assert!(bucket.take_at(start));
        }
        assert!(!bucket.take_at(start));
        // 10/s: one token every 100 ms.
        assert!(!bucket.take_at(start + Duration::from_millis(50)));
        assert!(bucket.take_at(start + Duration::from_millis(101)));
        // A long pause refills to the burst, not beyond.
        let later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(bucket.take_at(later));
        }
        assert!(!bucket.take_at(later));
    }
}
