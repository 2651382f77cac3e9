//! Identical history reads of one group on one node, merged into one.
//!
//! A storm — thousands of clients of one popular group joining with
//! `?history=1000`, or reconnecting together after a node died — asks
//! this node for the same page of the same group many times in the same
//! instant. When the node's tail (`history_tail.rs`) cannot answer, the
//! first reader goes to the history store and everyone who asks for the
//! same page meanwhile waits for that one answer ("singleflight", as
//! Centrifugo's PRO edition and Go's `x/sync/singleflight` call it).
//!
//! **Only reads that began after the reader joined.** A catch-up is
//! gapless because its history read is made after its session joined the
//! group (held): everything published before the read is in the page,
//! everything after it reaches the session live. A read that began before
//! the session joined may miss what was published in between, which the
//! session did not get live either; so a reader joins only a read in
//! flight that began at or after its `not_before`, and otherwise starts
//! its own (which later readers then join).
//!
//! The read in flight removes itself from the table when it completes,
//! whoever is still waiting for it, so a reader that gave up (its client
//! went away) never leaves a stale answer behind.
//!
//! Generic over what is read: presence snapshots are merged the same way
//! (`presence/snapshot.rs`), keyed by group.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::backend::BackendError;
use crate::backend::history::{HistoryPage, HistoryQuery};
use crate::group::GroupName;

type Read<V> = Shared<BoxFuture<'static, Result<V, BackendError>>>;

/// A read in flight: when it began, and which it is (so that it removes
/// itself, not a later read of the same page).
struct InFlight<V: Clone> {
    read: Read<V>,
    began: Instant,
    number: u64,
}

/// The reads in flight, by what they read (`K`): history pages by group
/// and query.
pub(crate) struct MergedReads<K = (GroupName, HistoryQuery), V = HistoryPage>
where
    V: Clone,
{
    inflight: Arc<Mutex<Table<K, V>>>,
}

impl<K, V: Clone> Default for MergedReads<K, V> {
    fn default() -> Self {
        MergedReads {
            inflight: Arc::new(Mutex::new(Table {
                reads: HashMap::new(),
                next: 0,
            })),
        }
    }
}

struct Table<K, V: Clone> {
    reads: HashMap<K, InFlight<V>>,
    /// Numbers the reads.
    next: u64,
}

/// Whether a read went to the store or joined one in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadBy {
    /// This reader asked the store.
    Store,
    /// It waited for another reader's identical read.
    Merged,
}

impl MergedReads {
    /// `query` of `group`: joins an identical read in flight that began
    /// at or after `not_before` (see the module docs), or starts one with
    /// `fetch`.
    pub(crate) async fn read<F>(
        &self,
        group: &GroupName,
        query: HistoryQuery,
        not_before: Instant,
        fetch: impl FnOnce() -> F,
    ) -> (Result<HistoryPage, BackendError>, ReadBy)
    where
        F: Future<Output = Result<HistoryPage, BackendError>> + Send + 'static,
    {
        self.read_key((group.clone(), query), not_before, fetch)
            .await
    }
}

impl<K, V> MergedReads<K, V>
where
    K: std::hash::Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// What `key` names: joins the read of it in flight that began at or
    /// after `not_before`, or starts one with `fetch`.
    pub(crate) async fn read_key<F>(
        &self,
        key: K,
        not_before: Instant,
        fetch: impl FnOnce() -> F,
    ) -> (Result<V, BackendError>, ReadBy)
    where
        F: Future<Output = Result<V, BackendError>> + Send + 'static,
    {
        let (read, by) = {
            let mut guard = self.inflight.lock();
            let table = &mut *guard;
            match table.reads.get(&key) {
                Some(inflight) if inflight.began >= not_before => {
                    (inflight.read.clone(), ReadBy::Merged)
                }
                _ => {
                    table.next += 1;
                    let number = table.next;
                    let shared = self.inflight.clone();
                    let done = key.clone();
                    let fetch = fetch();
                    let read = async move {
                        let page = fetch.await;
                        let mut table = shared.lock();
                        if table.reads.get(&done).is_some_and(|r| r.number == number) {
                            table.reads.remove(&done);
                        }
                        page
                    }
                    .boxed()
                    .shared();
                    table.reads.insert(
                        key,
                        InFlight {
                            read: read.clone(),
                            began: Instant::now(),
                            number,
                        },
                    );
                    (read, ReadBy::Store)
                }
            }
        };
        (read.await, by)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use tokio::sync::Notify;

    use super::*;
    use crate::backend::history::HistoryEntry;

    #[tokio::test]
    async fn merged_reads_return_to_every_waiter_the_same_page_and_ask_once() {
        let reads = Arc::new(MergedReads::default());
        let fetches = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Notify::new());
        let group = GroupName::new("g").unwrap();
        let query = HistoryQuery::Last(10);
        let page = HistoryPage {
            epoch: Some(Arc::from("e")),
            top: 3,
            entries: vec![HistoryEntry {
                offset: 3,
                payload: Bytes::from_static(b"m"),
            }],
        };
        let mut waiters = Vec::new();
        for _ in 0..50 {
            let (reads, fetches, release, group, page) = (
                reads.clone(),
                fetches.clone(),
                release.clone(),
                group.clone(),
                page.clone(),
            );
            let asked = Instant::now();
            waiters.push(tokio::spawn(async move {
                reads
                    .read(&group, query, asked, || {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        async move {
                            release.notified().await;
                            Ok(page)
                        }
                    })
                    .await
            }));
        }
        // Every waiter is waiting on the one read before it is answered.
        while reads.inflight.lock().reads.is_empty() {
            tokio::task::yield_now().await;
        }
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        release.notify_one();
        let mut merged = 0;
        for waiter in waiters {
            let (result, by) = waiter.await.unwrap();
            assert_eq!(result.unwrap(), page);
            merged += usize::from(by == ReadBy::Merged);
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "one read for all");
        assert_eq!(merged, 49);
        assert!(
            reads.inflight.lock().reads.is_empty(),
            "the read left the table"
        );
    }

    #[tokio::test]
    async fn a_reader_never_joins_a_read_that_began_before_it_joined() {
        let reads = Arc::new(MergedReads::default());
        let group = GroupName::new("g").unwrap();
        let query = HistoryQuery::Last(1);
        let release = Arc::new(Notify::new());
        // A read in flight, begun now.
        let first = {
            let (reads, group, release) = (reads.clone(), group.clone(), release.clone());
            tokio::spawn(async move {
                reads
                    .read(&group, query, Instant::now(), || async move {
                        release.notified().await;
                        Ok(HistoryPage::default())
                    })
                    .await
            })
        };
        while reads.inflight.lock().reads.is_empty() {
            tokio::task::yield_now().await;
        }
        // A reader that joined after it began reads for itself...
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        let (_, by) = reads
            .read(&group, query, Instant::now(), || async {
                Ok(HistoryPage::default())
            })
            .await;
        assert_eq!(by, ReadBy::Store);
        // ...and the first read, still in flight, completes for its reader.
        release.notify_one();
        let (result, by) = first.await.unwrap();
        assert!(result.is_ok());
        assert_eq!(by, ReadBy::Store);
        assert!(reads.inflight.lock().reads.is_empty());
    }

    #[tokio::test]
    async fn a_read_whose_reader_gave_up_completes_for_the_next_and_leaves() {
        let reads = Arc::new(MergedReads::default());
        let group = GroupName::new("g").unwrap();
        let query = HistoryQuery::Last(1);
        let joined = Instant::now();
        let release = Arc::new(Notify::new());
        let abandoned = {
            let (reads, group, release) = (reads.clone(), group.clone(), release.clone());
            tokio::spawn(async move {
                reads
                    .read(&group, query, joined, || async move {
                        release.notified().await;
                        Ok(HistoryPage::default())
                    })
                    .await
            })
        };
        while reads.inflight.lock().reads.is_empty() {
            tokio::task::yield_now().await;
        }
        abandoned.abort();
        release.notify_one();
        let (result, by) = reads
            .read(&group, query, joined, || async {
                Ok(HistoryPage::default())
            })
            .await;
        assert!(result.is_ok());
        assert_eq!(by, ReadBy::Merged, "it drives the read in flight");
        assert!(
            reads.inflight.lock().reads.is_empty(),
            "nothing stale is left"
        );
    }
}
