//! What a backend's history store answers: pages of a group's stream.
//!
//! A group whose name matches a `--history` rule keeps its last messages in
//! a stream whose entry ids are the group's offsets (1, 2, 3, ...), plus an
//! epoch that changes whenever the stream was lost (Redis restarted without
//! persistence, the stream expired or was deleted). Appending and
//! publishing are one atomic step in the backend
//! ([`Broker::publish_with_history`](super::Broker::publish_with_history)),
//! so every member on every node sees the same offsets in the same order,
//! and history never holds a message that was not published or the other
//! way round.
//!
//! Reads are bounded: a page holds at most [`MAX_PAGE`] entries, and a
//! catch-up reads page after page up to the top it saw first.

use std::sync::Arc;

use bytes::Bytes;

/// The most entries one history read returns.
pub const MAX_PAGE: usize = 1000;

/// Which part of a group's history to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HistoryQuery {
    /// The newest `n` entries (oldest first).
    Last(usize),
    /// The entries after `offset`, oldest first, at most `limit` of them.
    After { offset: u64, limit: usize },
}

/// One retained message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Its offset in the group.
    pub offset: u64,
    /// The bytes as published (an envelope, or a raw payload).
    pub payload: Bytes,
}

/// One read of a group's history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryPage {
    /// The group's epoch; `None` when it has no history (never published,
    /// or expired).
    pub epoch: Option<Arc<str>>,
    /// The newest offset ever given in this epoch (0 when none).
    pub top: u64,
    /// The entries read, oldest first.
    pub entries: Vec<HistoryEntry>,
}

impl HistoryPage {
    /// Whether a client that last saw `offset` in `epoch` can get
    /// everything after it from this page and the ones after: same epoch,
    /// and either nothing was missed or the first entry read is the very
    /// next one. (The page must have been read with
    /// `HistoryQuery::After { offset, .. }`.)
    pub fn continues(&self, epoch: &str, offset: u64) -> bool {
        let same_epoch = self.epoch.as_deref() == Some(epoch);
        let next = offset.checked_add(1);
        same_epoch
            && offset <= self.top
            && (offset == self.top || self.entries.first().map(|e| e.offset) == next)
    }
}

/// A fresh epoch: 16 random hex characters.
pub(crate) fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(epoch: &str, top: u64, offsets: &[u64]) -> HistoryPage {
        HistoryPage {
            epoch: Some(Arc::from(epoch)),
            top,
            entries: offsets
                .iter()
                .map(|&offset| HistoryEntry {
                    offset,
                    payload: Bytes::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_resume_continues_only_without_a_hole() {
        assert!(page("e", 10, &[6, 7]).continues("e", 5));
        assert!(page("e", 10, &[]).continues("e", 10), "nothing missed");
        assert!(!page("e", 10, &[8, 9]).continues("e", 5), "6 and 7 trimmed");
        assert!(!page("e", 10, &[6]).continues("other", 5), "another epoch");
        assert!(!page("e", 10, &[]).continues("e", 12), "from the future");
        assert!(!HistoryPage::default().continues("e", 0), "no history");
    }
}
