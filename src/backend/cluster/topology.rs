//! Which primary owns which slots: the cluster subscriber's own slot map.
//!
//! The subscriber sends each SSUBSCRIBE to the primary of its channel's
//! slot itself (one connection per primary it needs), so it needs the map
//! that redis-rs keeps privately inside its cluster connection. It reads
//! it with `CLUSTER SLOTS` from any node it knows, and corrects single
//! slots from MOVED answers in between, which is how it follows a reshard
//! without re-reading the whole map.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, Value};
use tokio::time::timeout;

use super::slot::SLOTS;
use crate::backend::error::BackendError;
use crate::backend::redis::errors::command_error;

/// `host:port` of a cluster node, as the cluster announces it.
pub(crate) type NodeAddr = String;

/// Slot ranges and their primaries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SlotMap {
    /// First slot of a range → (last slot, primary).
    ranges: BTreeMap<u16, (u16, NodeAddr)>,
}

impl SlotMap {
    /// The primary of `slot`, when some primary serves it.
    pub(crate) fn owner(&self, slot: u16) -> Option<&NodeAddr> {
        let (_, (last, node)) = self.ranges.range(..=slot).next_back()?;
        (slot <= *last).then_some(node)
    }

    /// Every primary that serves a slot.
    pub(crate) fn primaries(&self) -> impl Iterator<Item = &NodeAddr> {
        let mut seen: Vec<&NodeAddr> = self.ranges.values().map(|(_, n)| n).collect();
        seen.sort();
        seen.dedup();
        seen.into_iter()
    }

    /// A MOVED answer: `slot` is now served by `node`.
    pub(crate) fn moved(&mut self, slot: u16, node: &str) {
        if self.owner(slot).is_some_and(|owner| owner == node) {
            return;
        }
        // Split the range that held `slot` around it.
        if let Some((&first, &(last, ref owner))) = self.ranges.range(..=slot).next_back()
            && slot <= last
        {
            let owner = owner.clone();
            self.ranges.remove(&first);
            if first < slot {
                self.ranges.insert(first, (slot - 1, owner.clone()));
            }
            if slot < last {
                self.ranges.insert(slot + 1, (last, owner));
            }
        }
        self.ranges.insert(slot, (slot, node.to_string()));
    }

    /// Reads a `CLUSTER SLOTS` answer. `asked` is the node that answered,
    /// for entries whose host is empty (a node that does not know its own
    /// address announces none).
    pub(crate) fn parse(value: Value, asked: &str) -> Result<Self, String> {
        let Value::Array(entries) = value else {
            return Err(format!("CLUSTER SLOTS answered {value:?}"));
        };
        let asked_host = asked.rsplit_once(':').map_or(asked, |(host, _)| host);
        let mut ranges = BTreeMap::new();
        for entry in entries {
            let Value::Array(fields) = entry else {
                return Err("a CLUSTER SLOTS entry is not an array".into());
            };
            let mut fields = fields.into_iter();
            let (Some(first), Some(last), Some(primary)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err("a CLUSTER SLOTS entry is too short".into());
            };
            let first = slot_number(first)?;
            let last = slot_number(last)?;
            let Value::Array(primary) = primary else {
                return Err("a CLUSTER SLOTS node is not an array".into());
            };
            let mut primary = primary.into_iter();
            let host = match primary.next() {
                Some(Value::BulkString(host)) => String::from_utf8_lossy(&host).into_owned(),
                Some(Value::SimpleString(host)) => host,
                other => return Err(format!("a CLUSTER SLOTS host is {other:?}")),
            };
            let host = if host.is_empty() || host == "?" {
                asked_host.to_string()
            } else {
                host
            };
            let port = match primary.next() {
                Some(Value::Int(port)) => {
                    u16::try_from(port).map_err(|_| format!("port {port} out of range"))?
                }
                other => return Err(format!("a CLUSTER SLOTS port is {other:?}")),
            };
            if first > last {
                return Err(format!("slot range {first}-{last} is reversed"));
            }
            ranges.insert(first, (last, format!("{host}:{port}")));
        }
        Ok(SlotMap { ranges })
    }
}

fn slot_number(value: Value) -> Result<u16, String> {
    match value {
        Value::Int(n) => u16::try_from(n)
            .ok()
            .filter(|&n| n < SLOTS)
            .ok_or_else(|| format!("slot {n} out of range")),
        other => Err(format!("a slot number is {other:?}")),
    }
}

/// `seed`'s connection settings (credentials, TLS, database) for the node
/// at `node` (`host:port`).
pub(crate) fn node_info(seed: &ConnectionInfo, node: &str) -> Result<ConnectionInfo, BackendError> {
    let (host, port) = node
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host.to_string(), port.parse::<u16>().ok()?)))
        .ok_or_else(|| BackendError::Command(format!("a cluster node address {node:?}")))?;
    let addr = match seed.addr() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host,
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => ConnectionAddr::Tcp(host, port),
    };
    Ok(seed.clone().set_addr(addr))
}

/// Reads the slot map from the first of `candidates` that answers, each
/// within `limit`.
pub(crate) async fn read_slot_map(
    seed: &ConnectionInfo,
    candidates: &[NodeAddr],
    limit: Duration,
) -> Result<SlotMap, BackendError> {
    let mut last_error = BackendError::Unavailable("no cluster node to ask".into());
    for node in candidates {
        let attempt = async {
            let client = redis::Client::open(node_info(seed, node)?).map_err(command_error)?;
            let mut conn = client
                .get_multiplexed_async_connection()
                .await
                .map_err(command_error)?;
            let answer: Value = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async(&mut conn)
                .await
                .map_err(command_error)?;
            SlotMap::parse(answer, node).map_err(BackendError::Command)
        };
        match timeout(limit, attempt).await {
            Ok(Ok(map)) if map.primaries().next().is_some() => return Ok(map),
            Ok(Ok(_)) => {
                last_error = BackendError::Unavailable(format!("{node} serves no slots yet"));
            }
            Ok(Err(error)) => last_error = error,
            Err(_) => last_error = BackendError::Timeout(limit),
        }
    }
    Err(last_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    fn three_primaries() -> SlotMap {
        let answer = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("127.0.0.1", 7000),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(10922),
                node("", 7001),
                node("127.0.0.1", 7004),
            ]),
            Value::Array(vec![
                Value::Int(10923),
                Value::Int(16383),
                node("127.0.0.1", 7002),
            ]),
        ]);
        SlotMap::parse(answer, "10.0.0.9:7001").unwrap()
    }

    #[test]
    fn cluster_slots_answers_are_read() {
        let map = three_primaries();
        assert_eq!(map.owner(0).unwrap(), "127.0.0.1:7000");
        assert_eq!(
            map.owner(5461).unwrap(),
            "10.0.0.9:7001",
            "empty host: the asked one"
        );
        assert_eq!(map.owner(16383).unwrap(), "127.0.0.1:7002");
        assert_eq!(map.primaries().count(), 3);
        assert!(SlotMap::parse(Value::Nil, "x:1").is_err());
        assert!(
            SlotMap::parse(
                Value::Array(vec![Value::Array(vec![Value::Int(0), Value::Int(99_999)])]),
                "x:1"
            )
            .is_err()
        );
    }

    #[test]
    fn a_moved_answer_moves_one_slot() {
        let mut map = three_primaries();
        map.moved(100, "127.0.0.1:7002");
        assert_eq!(map.owner(99).unwrap(), "127.0.0.1:7000");
        assert_eq!(map.owner(100).unwrap(), "127.0.0.1:7002");
        assert_eq!(map.owner(101).unwrap(), "127.0.0.1:7000");
        map.moved(0, "127.0.0.1:7001");
        assert_eq!(map.owner(0).unwrap(), "127.0.0.1:7001");
        assert_eq!(map.owner(1).unwrap(), "127.0.0.1:7000");
        assert_eq!(SlotMap::default().owner(5), None);
    }
}
