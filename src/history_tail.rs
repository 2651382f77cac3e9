//! The node-local tail of each history group: the group's most recent
//! messages, kept in memory while this node's live stream of it is
//! continuous, so that a late join, a resume or a gap repair whose range
//! the tail covers is served without a history read.
//!
//! Why it can be trusted: every positioned message reaches this node in
//! offset order through its subscription (`delivery.rs` checks that the
//! stream does not skip). While it does not skip, the messages seen live
//! since the tail began *are* the group's history from that point on, and
//! a reader can be served any range that lies inside it. The tail never
//! claims more than it saw:
//!
//! * it covers the offsets `(from, top]`: `from` is where the live stream
//!   stood when the tail began (0 when it began with the epoch itself);
//! * a message that does not continue it (a skip, another epoch) starts it
//!   over from that message: what came before is not known any more;
//! * it keeps at most the group's history size, so it never serves an
//!   entry the history has trimmed, and it stops serving once the history
//!   may have expired (its TTL after the last message, less a margin for
//!   the time the message took to get here);
//! * a tail that has not seen a message since it began serves nothing: it
//!   cannot know when its history expires.
//!
//! Bounded per node: the tails together hold at most `budget` payload
//! bytes; past it the least recently used tails go whole.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::backend::history::{HistoryEntry, HistoryPage, HistoryQuery, MAX_PAGE};
use crate::group::GroupName;
use crate::history::HistoryLimits;

/// The longest a tail trusts a history to outlive its last message by less
/// than its TTL: a message reaches this node after it was stored.
const EXPIRY_MARGIN: Duration = Duration::from_secs(5);

/// Every history group's tail on this node. See the module docs.
pub(crate) struct HistoryTails {
    state: Mutex<State>,
    /// The most payload bytes all tails hold together (0: no tails).
    budget: usize,
}

#[derive(Default)]
struct State {
    groups: HashMap<GroupName, Tail>,
    /// Payload bytes held, all tails together.
    bytes: usize,
    /// Counts uses, for the least recently used.
    clock: u64,
}

struct Tail {
    epoch: Option<Arc<str>>,
    /// The tail holds every offset in `(from, top]`.
    from: u64,
    top: u64,
    entries: VecDeque<HistoryEntry>,
    bytes: usize,
    /// When the history may expire (set by the first message seen).
    trusted_until: Option<Instant>,
    /// The clock at its last use.
    used: u64,
}

impl Tail {
    fn empty(epoch: Option<Arc<str>>, top: u64) -> Self {
        Tail {
            epoch,
            from: top,
            top,
            entries: VecDeque::new(),
            bytes: 0,
            trusted_until: None,
            used: 0,
        }
    }
}

impl HistoryTails {
    /// Tails holding at most `budget` payload bytes together.
    pub(crate) fn new(budget: usize) -> Self {
        HistoryTails {
            state: Mutex::default(),
            budget,
        }
    }

    /// This node's live stream of `group` stands at `top` of `epoch` (a
    /// history read found it there, and nothing arrived live yet): a tail
    /// begins there, empty, unless one is already going.
    pub(crate) fn begin(&self, group: &GroupName, epoch: Option<Arc<str>>, top: u64) {
        if self.budget == 0 {
            return;
        }
        let mut state = self.state.lock();
        state
            .groups
            .entry(group.clone())
            .or_insert_with(|| Tail::empty(epoch, top));
    }

    /// A positioned message of `group` arrived live, at `offset` of
    /// `epoch`. It continues the tail, or starts it over.
    pub(crate) fn append(
        &self,
        group: &GroupName,
        epoch: &Arc<str>,
        offset: u64,
        payload: &Bytes,
        limits: HistoryLimits,
    ) {
        if self.budget == 0 {
            return;
        }
        let now = Instant::now();
        let mut guard = self.state.lock();
        let state = &mut *guard;
        state.clock += 1;
        let clock = state.clock;
        let tail = state
            .groups
            .entry(group.clone())
            .or_insert_with(|| Tail::empty(Some(epoch.clone()), offset.saturating_sub(1)));
        // No history yet (`None`, top 0) continues into any epoch's first
        // offset; otherwise the same epoch and the very next offset.
        let continues = tail.epoch.as_ref().is_none_or(|known| known == epoch)
            && offset == tail.top.saturating_add(1);
        if !continues {
            state.bytes -= tail.bytes;
            *tail = Tail::empty(Some(epoch.clone()), offset.saturating_sub(1));
        }
        tail.epoch = Some(epoch.clone());
        tail.top = offset;
        tail.entries.push_back(HistoryEntry {
            offset,
            payload: payload.clone(),
        });
        tail.bytes += payload.len();
        state.bytes += payload.len();
        let keep = usize::try_from(limits.size).unwrap_or(usize::MAX);
        while tail.entries.len() > keep {
            if let Some(gone) = tail.entries.pop_front() {
                tail.bytes -= gone.payload.len();
                state.bytes -= gone.payload.len();
                tail.from = gone.offset;
            }
        }
        tail.trusted_until = Some(now + limits.ttl.saturating_sub(EXPIRY_MARGIN));
        tail.used = clock;
        Self::evict(state, self.budget, group);
    }

    /// Forgets `group`'s tail: its live stream's continuity is in doubt
    /// (a new subscription, a gap that was not repaired).
    pub(crate) fn forget(&self, group: &GroupName) {
        let mut state = self.state.lock();
        if let Some(tail) = state.groups.remove(group) {
            state.bytes -= tail.bytes;
        }
    }

    /// `query` of `group`'s history, if the tail covers it: exactly what
    /// the history would answer (the page's entries, epoch and top as this
    /// node's live stream has them). `None`: ask the history.
    pub(crate) fn read(&self, group: &GroupName, query: HistoryQuery) -> Option<HistoryPage> {
        let now = Instant::now();
        let mut guard = self.state.lock();
        let state = &mut *guard;
        state.clock += 1;
        let clock = state.clock;
        let tail = state.groups.get_mut(group)?;
        if tail.trusted_until.is_none_or(|until| now >= until) {
            return None;
        }
        let entries: Vec<HistoryEntry> = match query {
            HistoryQuery::Last(n) => {
                let n = n.min(MAX_PAGE);
                let held = tail.top - tail.from;
                // Everything since the epoch began, or at least `n`.
                if tail.from != 0 && held < n as u64 {
                    return None;
                }
                let skip = tail.entries.len().saturating_sub(n);
                tail.entries.iter().skip(skip).cloned().collect()
            }
            HistoryQuery::After { offset, limit } => {
                // Before what it holds, or past what this node's stream
                // has brought so far (the reader saw newer messages
                // elsewhere, still on their way here): the history's.
                if offset < tail.from || offset > tail.top {
                    return None;
                }
                let start = usize::try_from(offset - tail.from)
                    .unwrap_or(usize::MAX)
                    .min(tail.entries.len());
                tail.entries
                    .iter()
                    .skip(start)
                    .take(limit.min(MAX_PAGE))
                    .cloned()
                    .collect()
            }
        };
        tail.used = clock;
        Some(HistoryPage {
            epoch: tail.epoch.clone(),
            top: tail.top,
            entries,
        })
    }

    /// Payload bytes held now, all tails together.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.state.lock().bytes
    }

    /// Drops the least recently used tails (never `keep`, the one just
    /// used) until the budget holds.
    fn evict(state: &mut State, budget: usize, keep: &GroupName) {
        while state.bytes > budget {
            let oldest = state
                .groups
                .iter()
                .filter(|(group, _)| *group != keep)
                .min_by_key(|(_, tail)| tail.used)
                .map(|(group, _)| group.clone());
            let Some(oldest) = oldest else {
                // Only the tail just used is left: trim it from the front.
                if let Some(tail) = state.groups.get_mut(keep) {
                    while state.bytes > budget {
                        let Some(gone) = tail.entries.pop_front() else {
                            break;
                        };
                        tail.bytes -= gone.payload.len();
                        state.bytes -= gone.payload.len();
                        tail.from = gone.offset;
                    }
                }
                return;
            };
            if let Some(tail) = state.groups.remove(&oldest) {
                state.bytes -= tail.bytes;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::backend::memory_history::MemoryHistory;

    fn group(name: &str) -> GroupName {
        GroupName::new(name).unwrap()
    }

    fn limits(size: u64) -> HistoryLimits {
        HistoryLimits {
            size,
            ttl: Duration::from_secs(3600),
        }
    }

    /// What can happen to a group, as the tail's node sees it.
    #[derive(Debug, Clone)]
    enum Step {
        /// A message published and received live.
        Live(u8),
        /// A message published while this node did not hear it (its
        /// subscriber reconnected): a skip in its live stream.
        Missed(u8),
        /// The history was lost (new epoch), then a message received live.
        NewEpoch(u8),
        /// A subscription started over.
        Forget,
        /// A reader asks.
        Read(HistoryQuery),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => any::<u8>().prop_map(Step::Live),
            1 => any::<u8>().prop_map(Step::Missed),
            1 => any::<u8>().prop_map(Step::NewEpoch),
            1 => Just(Step::Forget),
            4 => (0usize..30).prop_map(|n| Step::Read(HistoryQuery::Last(n))),
            4 => (0u64..40, 0usize..30)
                .prop_map(|(offset, limit)| Step::Read(HistoryQuery::After { offset, limit })),
        ]
    }

    proptest! {
        /// Whatever happens, a read the tail answers is answered exactly
        /// as the history (the standalone backend's, the same semantics
        /// as Redis streams) answers it at that moment.
        #[test]
        fn the_tail_serves_exactly_what_history_would(
            size in 1u64..20,
            budget in prop_oneof![Just(usize::MAX), 0usize..200],
            steps in proptest::collection::vec(step(), 1..120),
        ) {
            let g = group("g");
            let mut history = MemoryHistory::default();
            let tails = HistoryTails::new(budget);
            let mut served = 0;
            for step in steps {
                match step {
                    Step::Live(byte) => {
                        history.append(&g, limits(size), Bytes::from(vec![byte; usize::from(byte % 7)]), |position, payload| {
                            tails.append(&g, &position.epoch, position.offset, &payload, limits(size));
                        });
                    }
                    Step::Missed(byte) => {
                        history.append(&g, limits(size), Bytes::from(vec![byte]), |_, _| {});
                    }
                    Step::NewEpoch(byte) => {
                        history = MemoryHistory::default();
                        history.append(&g, limits(size), Bytes::from(vec![byte]), |position, payload| {
                            tails.append(&g, &position.epoch, position.offset, &payload, limits(size));
                        });
                    }
                    Step::Forget => tails.forget(&g),
                    Step::Read(query) => {
                        if let Some(page) = tails.read(&g, query) {
                            served += 1;
                            // A skip the live stream has not seen yet is
                            // not the tail's to know: compare only while
                            // the tail's top is the history's.
                            let truth = history.read(&g, query);
                            if truth.top == page.top && truth.epoch == page.epoch {
                                prop_assert_eq!(&page, &truth, "{:?}", query);
                            } else {
                                prop_assert!(truth.top > page.top || truth.epoch != page.epoch);
                            }
                        }
                    }
                }
                prop_assert!(tails.bytes() <= budget);
            }
            let _ = served;
        }
    }

    #[test]
    fn a_skip_or_a_new_epoch_starts_the_tail_over() {
        let g = group("g");
        let tails = HistoryTails::new(usize::MAX);
        let e1: Arc<str> = Arc::from("e1");
        for offset in 1..=3 {
            tails.append(&g, &e1, offset, &Bytes::from_static(b"m"), limits(100));
        }
        let all = tails
            .read(
                &g,
                HistoryQuery::After {
                    offset: 0,
                    limit: 10,
                },
            )
            .unwrap();
        assert_eq!(all.entries.len(), 3, "from the epoch's start");
        // Offset 4 was missed: what came before is not known any more.
        tails.append(&g, &e1, 5, &Bytes::from_static(b"m"), limits(100));
        assert_eq!(
            tails.read(
                &g,
                HistoryQuery::After {
                    offset: 0,
                    limit: 10
                }
            ),
            None
        );
        assert_eq!(tails.read(&g, HistoryQuery::Last(2)), None, "only one held");
        let after = tails
            .read(
                &g,
                HistoryQuery::After {
                    offset: 4,
                    limit: 10,
                },
            )
            .unwrap();
        assert_eq!(
            after.entries.iter().map(|e| e.offset).collect::<Vec<_>>(),
            [5]
        );
        // Another epoch.
        let e2: Arc<str> = Arc::from("e2");
        tails.append(&g, &e2, 1, &Bytes::from_static(b"m"), limits(100));
        let page = tails.read(&g, HistoryQuery::Last(5)).unwrap();
        assert_eq!(
            (page.epoch.as_deref(), page.top, page.entries.len()),
            (Some("e2"), 1, 1)
        );
    }

    #[test]
    fn a_read_past_what_the_tail_has_brought_is_the_historys() {
        let g = group("g");
        let tails = HistoryTails::new(usize::MAX);
        let e1: Arc<str> = Arc::from("e1");
        tails.begin(&g, Some(e1.clone()), 0);
        for offset in 1..=15 {
            tails.append(&g, &e1, offset, &Bytes::from_static(b"m"), limits(100));
        }
        let at_top = tails.read(
            &g,
            HistoryQuery::After {
                offset: 15,
                limit: 10,
            },
        );
        assert_eq!(at_top.map(|p| (p.top, p.entries.len())), Some((15, 0)));
        // A client resuming after 16, which reached it through another
        // node: this node's stream has not brought 16 yet, so the tail
        // cannot say where history stands.
        assert_eq!(
            tails.read(
                &g,
                HistoryQuery::After {
                    offset: 16,
                    limit: 10
                }
            ),
            None
        );
    }

    #[test]
    fn a_tail_that_saw_nothing_serves_nothing_and_a_forgotten_one_is_gone() {
        let g = group("g");
        let tails = HistoryTails::new(usize::MAX);
        tails.begin(&g, Some(Arc::from("e1")), 7);
        assert_eq!(
            tails.read(&g, HistoryQuery::Last(0)),
            None,
            "expiry unknown"
        );
        tails.append(
            &g,
            &Arc::from("e1"),
            8,
            &Bytes::from_static(b"m"),
            limits(100),
        );
        let page = tails
            .read(
                &g,
                HistoryQuery::After {
                    offset: 7,
                    limit: 10,
                },
            )
            .unwrap();
        assert_eq!((page.top, page.entries.len()), (8, 1));
        assert_eq!(
            tails.read(
                &g,
                HistoryQuery::After {
                    offset: 6,
                    limit: 10
                }
            ),
            None
        );
        tails.forget(&g);
        assert_eq!(tails.read(&g, HistoryQuery::Last(0)), None);
        assert_eq!(tails.bytes(), 0);
    }

    #[test]
    fn the_least_recently_used_tails_go_when_the_budget_is_full() {
        let tails = HistoryTails::new(10);
        let e: Arc<str> = Arc::from("e");
        let (a, b) = (group("a"), group("b"));
        tails.append(&a, &e, 1, &Bytes::from_static(b"aaaaaa"), limits(100));
        tails.append(&b, &e, 1, &Bytes::from_static(b"bbbbbb"), limits(100));
        assert_eq!(tails.read(&a, HistoryQuery::Last(1)), None, "a was evicted");
        assert!(tails.read(&b, HistoryQuery::Last(1)).is_some());
        assert_eq!(tails.bytes(), 6);
    }
}
