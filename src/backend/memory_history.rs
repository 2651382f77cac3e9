//! History in process memory, for standalone nodes: the same semantics as
//! the Redis streams, without Redis.
//!
//! Each group is a bounded deque of `(offset, payload)` plus its epoch and
//! top offset. Appending and delivering happen under one lock, so local
//! members see offsets in order exactly as cluster members do. An idle
//! group's history is dropped once its TTL has passed since the last
//! append (checked lazily, on the next touch); the next append then starts
//! a new epoch, as it does when the process restarts.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::history::{HistoryEntry, HistoryPage, HistoryQuery, MAX_PAGE, new_epoch};
use crate::backend::inbound::Position;
use crate::group::GroupName;
use crate::history::HistoryLimits;

struct Stream {
    epoch: Arc<str>,
    top: u64,
    entries: VecDeque<HistoryEntry>,
    expires_at: Instant,
}

/// Every standalone group's history.
#[derive(Default)]
pub(crate) struct MemoryHistory {
    groups: Mutex<HashMap<GroupName, Stream>>,
}

impl MemoryHistory {
    /// Appends `payload` to `group` and, still under the lock, hands its
    /// position to `deliver` — so that deliveries happen in offset order.
    pub(crate) fn append(
        &self,
        group: &GroupName,
        limits: HistoryLimits,
        payload: Bytes,
        deliver: impl FnOnce(Position, Bytes),
    ) -> Position {
        let now = Instant::now();
        let mut groups = self.groups.lock();
        if groups.get(group).is_some_and(|s| s.expires_at <= now) {
            groups.remove(group);
        }
        let stream = groups.entry(group.clone()).or_insert_with(|| Stream {
            epoch: Arc::from(new_epoch()),
            top: 0,
            entries: VecDeque::new(),
            expires_at: now,
        });
        stream.top += 1;
        stream.entries.push_back(HistoryEntry {
            offset: stream.top,
            payload: payload.clone(),
        });
        let keep = usize::try_from(limits.size).unwrap_or(usize::MAX);
        while stream.entries.len() > keep {
            stream.entries.pop_front();
        }
        stream.expires_at = now + limits.ttl;
        let position = Position {
            offset: stream.top,
            epoch: stream.epoch.clone(),
        };
        deliver(position.clone(), payload);
        position
    }

    /// Reads a page of `group`'s history.
    pub(crate) fn read(&self, group: &GroupName, query: HistoryQuery) -> HistoryPage {
        let mut groups = self.groups.lock();
        if groups
            .get(group)
            .is_some_and(|s| s.expires_at <= Instant::now())
        {
            groups.remove(group);
        }
        let Some(stream) = groups.get(group) else {
            return HistoryPage::default();
        };
        let entries = match query {
            HistoryQuery::Last(n) => {
                let n = n.min(MAX_PAGE).min(stream.entries.len());
                stream
                    .entries
                    .iter()
                    .skip(stream.entries.len() - n)
                    .cloned()
                    .collect()
            }
            HistoryQuery::After { offset, limit } => stream
                .entries
                .iter()
                .filter(|e| e.offset > offset)
                .take(limit.min(MAX_PAGE))
                .cloned()
                .collect(),
        };
        HistoryPage {
            epoch: Some(stream.epoch.clone()),
            top: stream.top,
            entries,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(size: u64, ttl_secs: u64) -> HistoryLimits {
        HistoryLimits {
            size,
            ttl: Duration::from_secs(ttl_secs),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn history_keeps_the_last_n_and_expires_when_idle() {
        let history = MemoryHistory::default();
        let group = GroupName::new("task/1").unwrap();
        let mut delivered = Vec::new();
        for n in 1..=5u8 {
            history.append(&group, limits(3, 60), Bytes::from(vec![n]), |p, _| {
                delivered.push(p.offset)
            });
        }
        assert_eq!(delivered, [1, 2, 3, 4, 5]);
        let page = history.read(&group, HistoryQuery::Last(10));
        assert_eq!(page.top, 5);
        let offsets: Vec<_> = page.entries.iter().map(|e| e.offset).collect();
        assert_eq!(offsets, [3, 4, 5]);
        let after = history.read(
            &group,
            HistoryQuery::After {
                offset: 3,
                limit: 1,
            },
        );
        assert_eq!(after.entries[0].offset, 4);
        assert_eq!(after.entries.len(), 1);
        let epoch = page.epoch.clone().unwrap();

        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(
            history.read(&group, HistoryQuery::Last(10)),
            HistoryPage::default()
        );
        let position = history.append(&group, limits(3, 60), Bytes::new(), |_, _| {});
        assert_eq!(position.offset, 1, "a new epoch starts over");
        assert_ne!(position.epoch, epoch);
    }
}
