//! Per-group presence on Redis: this node's joins and leaves written in
//! batches, everyone's members read a page at a time.
//!
//! Every Redis mode uses this one store: on one server (single, Sentinel)
//! with one pool; sharded, with a pool per shard, each group on its
//! shard's (the one its channel is on); on a Redis Cluster with the
//! cluster pool, which routes each script to the slot of the group's hash
//! tag. The keys and scripts are in `group_scripts.rs`.
//!
//! **Batches, not one write per join.** [`joined`](PresenceStore::joined)
//! and [`left`](PresenceStore::left) only note the change (the latest word
//! per session wins). A writer task writes what was noted a short window
//! after the first change ([`BATCH_WINDOW`]: a burst of joins is one
//! script call per group) and, every heartbeat interval, one call per
//! group this node holds, which pushes its members' expiry forward
//! (`presence_ttl`). A member is visible to other nodes within about
//! `BATCH_WINDOW` plus one round trip of its join; keys the application
//! sets in `on_connect` are in it, keys changed later are not written
//! again in this version.
//!
//! **A dead node's members** expire with its entry in the group's `nodes`
//! sorted set, `presence_ttl` after its last batch, and every script
//! (reads included) prunes expired nodes first, atomically: whichever runs
//! first removes them, once, and nothing shows them after their expiry.
//!
//! **Transitions** (occupied, vacated, user and session joined and left)
//! come back from every script (`group_scripts.rs`) and go to the hub's
//! [`PresenceChanges`] at once: each is in exactly one script's answer.
//! When a call left a pending leave (a user's last connection gone, the
//! group emptied), this node confirms it after the grace with one more
//! call ([`GroupPresence::confirm_after`]); any other script of the group
//! that runs after the grace (another node's heartbeat, a read) would
//! report it too, once, if this node died first.
//!
//! **Writing a group whole.** A group this node has not written yet, one
//! whose last batch failed, and one whose entry Redis no longer has (the
//! node was cut off longer than the TTL, Redis restarted) are written
//! whole from the registry, in chunks, after dropping whatever of this
//! node's was left: so what Redis holds converges on the registry whatever
//! was lost.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::errors::command_error;
use super::group_scripts::{Scripts, keys_of, transition_of};
use super::periodic::{Every, Streak, Woken};
use super::pool::RedisPool;
use crate::backend::channels::ChannelNames;
use crate::backend::error::BackendError;
use crate::backend::future::BoxFuture;
use crate::backend::member::{
    Cursor, LocalMembers, MAX_MEMBER_PAGE, Member, MemberPage, PresenceStats, UserCount,
};
use crate::backend::presence::LocalGroups;
use crate::backend::presence_store::PresenceStore;
use crate::backend::tasks::Tasks;
use crate::backend::transition::PresenceChanges;
use crate::group::GroupName;
use crate::session_id::SessionId;

/// How long the writer waits after the first change of a batch, so that a
/// burst of joins goes out as one write per group.
pub(crate) const BATCH_WINDOW: Duration = Duration::from_millis(50);

/// Most members one script call adds (a group written whole goes in
/// chunks of this many).
const CHUNK: usize = 1000;

/// How long after the grace a pending leave is confirmed: Redis's clock
/// decides when it is due, and must have passed the deadline.
const CONFIRM_MARGIN: Duration = Duration::from_millis(100);

/// How many groups' batches are in flight at once.
const CONCURRENT_GROUPS: usize = 16;

/// What a group's write is (the script's `full` argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    /// This node's members, whole (after dropping what it had): `1`.
    Whole,
    /// The heartbeat: changes, if any, and the keys' expiry pushed: `0`.
    Refresh,
    /// A change batch: the changes only (the expiry is the heartbeat's): `2`.
    Changes,
}

/// Which pool a group's keys are on.
pub(crate) type Route = Arc<dyn Fn(&GroupName) -> usize + Send + Sync>;

/// What the writer has to do, noted by joins and leaves.
#[derive(Default)]
struct Pending {
    /// Per group, per session: present (`true`) or gone, the latest word.
    changes: HashMap<GroupName, HashMap<SessionId, bool>>,
    /// Groups to write whole with the next batch.
    whole: HashSet<GroupName>,
    /// Groups this node has members written in.
    held: HashSet<GroupName>,
}

/// The [`PresenceStore`] of every Redis backend. See the module docs.
pub(crate) struct GroupPresence {
    pools: Vec<RedisPool>,
    route: Route,
    names: ChannelNames,
    node_id: String,
    ttl: Duration,
    local: Arc<dyn LocalMembers>,
    local_groups: LocalGroups,
    pending: Mutex<Pending>,
    wake: Notify,
    scripts: Scripts,
    /// How long a user's leave and a group's vacancy wait for a comeback.
    grace: Duration,
    /// Where the scripts' transitions go.
    changes: PresenceChanges,
    /// Groups to confirm pending leaves in, after how long.
    confirms: mpsc::UnboundedSender<(GroupName, Duration)>,
}

/// How a store is set up.
pub(crate) struct GroupPresenceStart<'a> {
    /// One pool, or one per shard.
    pub(crate) pools: Vec<RedisPool>,
    /// The pool of a group (always `0` with one pool).
    pub(crate) route: Route,
    pub(crate) names: ChannelNames,
    pub(crate) context: &'a crate::backend::seam::BackendContext,
    pub(crate) interval: Duration,
    pub(crate) ttl: Duration,
    pub(crate) span: tracing::Span,
}

impl GroupPresence {
    /// The store, with its writer running in `tasks`.
    pub(crate) fn start(start: GroupPresenceStart<'_>, tasks: &mut Tasks) -> Arc<Self> {
        let (confirms, due) = mpsc::unbounded_channel();
        let store = Arc::new(GroupPresence {
            pools: start.pools,
            route: start.route,
            names: start.names,
            node_id: start.context.node_id.clone(),
            ttl: start.ttl,
            local: start.context.members.clone(),
            local_groups: start.context.presence_groups.clone(),
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
            scripts: Scripts::new(),
            grace: start.context.presence_grace,
            changes: start.context.presence_changes.clone(),
            confirms,
        });
        let writer = store.clone().run(start.interval, tasks.token());
        tasks.spawn(writer, start.span.clone());
        let confirmer = store.clone().confirm_after(due, tasks.token());
        tasks.spawn(confirmer, start.span);
        store
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    fn pool_of(&self, group: &GroupName) -> Result<&RedisPool, BackendError> {
        self.pools
            .get((self.route)(group))
            .ok_or_else(|| BackendError::InvalidOptions(format!("no shard for group {group}")))
    }

    /// `script` on `group`'s keys, with the grace, its first argument.
    fn invocation<'s>(
        &self,
        script: &'s redis::Script,
        group: &GroupName,
    ) -> redis::ScriptInvocation<'s> {
        let mut call = script.prepare_invoke();
        for key in &keys_of(&self.names.group(group)) {
            call.key(key);
        }
        call.arg(u64::try_from(self.grace.as_millis()).unwrap_or(u64::MAX));
        call
    }

    /// Runs `call` on `group`'s pool: reports the transitions it made,
    /// schedules the confirmation of a leave it left pending, and returns
    /// its payload.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        group: &GroupName,
        call: redis::ScriptInvocation<'_>,
    ) -> Result<T, BackendError> {
        Ok(self.invoke_at(group, call).await?.0)
    }

    /// [`GroupPresence::invoke`], with the group's position after the call
    /// (see `group_scripts.rs`).
    async fn invoke_at<T: redis::FromRedisValue>(
        &self,
        group: &GroupName,
        call: redis::ScriptInvocation<'_>,
    ) -> Result<(T, u64), BackendError> {
        let pool = self.pool_of(group)?;
        let (payload, words, wait, seq): (redis::Value, Vec<String>, i64, u64) = pool
            .run(
                |mut conn| async move { call.invoke_async(&mut conn).await.map_err(command_error) },
            )
            .await?;
        let changes: Vec<_> = words.iter().filter_map(|w| transition_of(w)).collect();
        if !changes.is_empty() {
            (self.changes)(group, changes, seq);
        }
        if let Ok(wait) = u64::try_from(wait) {
            // The receiver ends only with this store's tasks.
            let _ = self
                .confirms
                .send((group.clone(), Duration::from_millis(wait)));
        }
        let payload = redis::from_redis_value(payload)
            .map_err(|e| BackendError::Command(format!("reading a presence answer: {e}")))?;
        Ok((payload, seq))
    }

    /// Confirms each group's pending leaves when they are due (the
    /// [`CONFIRM_MARGIN`] after the wait a script asked for), until
    /// `cancel`. A failed confirmation is left to the group's next script.
    async fn confirm_after(
        self: Arc<Self>,
        mut due: mpsc::UnboundedReceiver<(GroupName, Duration)>,
        cancel: CancellationToken,
    ) {
        let mut queue: BTreeSet<(Instant, GroupName)> = BTreeSet::new();
        loop {
            let next = queue.first().map(|(at, _)| *at);
            tokio::select! {
                _ = cancel.cancelled() => return,
                got = due.recv() => match got {
                    Some((group, wait)) => {
                        queue.insert((Instant::now() + wait + CONFIRM_MARGIN, group));
                    }
                    None => return,
                },
                _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                    while let Some((_, group)) = queue.pop_first() {
                        let call = self.invocation(&self.scripts.confirm, &group);
                        if let Err(error) = self.invoke::<i64>(&group, call).await {
                            tracing::debug!(%group, %error, "cannot confirm pending leaves");
                        }
                        if queue.first().is_none_or(|(at, _)| *at > Instant::now()) {
                            break;
                        }
                    }
                }
            }
        }
    }

    fn note(&self, group: &GroupName, id: &SessionId, present: bool) {
        let first = {
            let mut pending = self.pending.lock();
            let first = pending.changes.is_empty();
            pending
                .changes
                .entry(group.clone())
                .or_default()
                .insert(id.clone(), present);
            first
        };
        if first {
            self.wake.notify_one();
        }
    }

    /// Writes a batch every `interval` (the heartbeat: expiries pushed
    /// forward) and [`BATCH_WINDOW`] after the first change of one, until
    /// `cancel`.
    async fn run(self: Arc<Self>, interval: Duration, cancel: CancellationToken) {
        let mut every = Every::new(interval, cancel.clone());
        let mut streak = Streak::default();
        while let Some(woken) = every.next(Some(&self.wake)).await {
            if let Woken::Notified = woken {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(BATCH_WINDOW) => {}
                }
            }
            // A change batch writes the groups that changed; the
            // heartbeat writes every group, which pushes their expiry.
            match self.write_batch(matches!(woken, Woken::Tick)).await {
                Ok(()) => {
                    if streak.worked() {
                        tracing::info!("group presence is written again");
                    }
                }
                Err(error) => {
                    if streak.failed() {
                        tracing::warn!(%error, "cannot write group presence");
                    } else {
                        tracing::debug!(%error, "writing group presence failed again");
                    }
                }
            }
        }
    }

    /// One batch: with `heartbeat`, every group this node holds, has
    /// changes in, or has members written in (their expiry pushed
    /// forward); otherwise only the groups with changes or to be written
    /// whole (a burst of joins in one group costs one script call, not
    /// one per group the node holds). A group whose write fails is
    /// written whole next time. Returns the first error.
    async fn write_batch(&self, heartbeat: bool) -> Result<(), BackendError> {
        let (changes, whole, held) = {
            let mut pending = self.pending.lock();
            (
                std::mem::take(&mut pending.changes),
                std::mem::take(&mut pending.whole),
                pending.held.clone(),
            )
        };
        let mut groups: BTreeSet<GroupName> = BTreeSet::new();
        if heartbeat {
            groups.extend((self.local_groups)().into_iter().map(|(group, _)| group));
            groups.extend(held.iter().cloned());
        } else {
            // A group this node holds but has not written yet is whole.
            groups.extend(
                (self.local_groups)()
                    .into_iter()
                    .map(|(group, _)| group)
                    .filter(|group| !held.contains(group)),
            );
        }
        groups.extend(changes.keys().cloned());
        groups.extend(whole.iter().cloned());
        let results: Vec<(GroupName, Result<bool, BackendError>)> =
            futures_util::stream::iter(groups)
                .map(|group| {
                    let entire = whole.contains(&group) || !held.contains(&group);
                    let noted = changes.get(&group);
                    async move {
                        let written = self.write_group(&group, entire, noted, heartbeat).await;
                        (group, written)
                    }
                })
                .buffer_unordered(CONCURRENT_GROUPS)
                .collect()
                .await;
        let mut first_error = None;
        let mut pending = self.pending.lock();
        for (group, written) in results {
            match written {
                Ok(true) => {
                    pending.held.insert(group);
                }
                Ok(false) => {
                    pending.held.remove(&group);
                }
                Err(error) => {
                    pending.whole.insert(group);
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Writes one group's batch (whole when `entire`, else the `noted`
    /// changes); whether this node still has members written in it.
    async fn write_group(
        &self,
        group: &GroupName,
        entire: bool,
        noted: Option<&HashMap<SessionId, bool>>,
        heartbeat: bool,
    ) -> Result<bool, BackendError> {
        if !entire {
            let (added, removed) = self.changes_of(group, noted);
            let write = if heartbeat {
                Write::Refresh
            } else {
                Write::Changes
            };
            match self.write_chunks(group, write, added, removed).await? {
                Some(mine) => return Ok(mine > 0),
                // Redis no longer has this node's entry: write it whole.
                None => tracing::debug!(%group, "group presence lost; writing it whole"),
            }
        }
        let members = self.local.members(group);
        let mine = self
            .write_chunks(group, Write::Whole, members, Vec::new())
            .await?
            .unwrap_or(0);
        Ok(mine > 0)
    }

    /// The noted changes as members to add (their public keys as they are
    /// now) and ids to remove.
    fn changes_of(
        &self,
        group: &GroupName,
        noted: Option<&HashMap<SessionId, bool>>,
    ) -> (Vec<Member>, Vec<SessionId>) {
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        for (id, &present) in noted.into_iter().flatten() {
            match present.then(|| self.local.member(group, id)).flatten() {
                Some(member) => added.push(member),
                // Gone, or left again before this batch.
                None => removed.push(id.clone()),
            }
        }
        (added, removed)
    }

    /// Writes `added` and `removed` in chunks, the first one as `write`
    /// says (the others are changes of the same kind of batch). `None`
    /// when Redis refused changes for want of this node's entry; else this
    /// node's members of the group after the last chunk.
    async fn write_chunks(
        &self,
        group: &GroupName,
        write: Write,
        added: Vec<Member>,
        removed: Vec<SessionId>,
    ) -> Result<Option<i64>, BackendError> {
        let mut chunks: Vec<&[Member]> = added.chunks(CHUNK).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        let last = chunks.len() - 1;
        let mut mine = 0;
        for (index, chunk) in chunks.into_iter().enumerate() {
            let mut call = self.invocation(&self.scripts.write, group);
            call.arg(&self.node_id)
                .arg(self.ttl_ms())
                .arg(match (write, index) {
                    (Write::Whole, 0) => "1",
                    (Write::Changes, _) => "2",
                    _ => "0",
                })
                .arg(chunk.len());
            for member in chunk {
                let json = serde_json::to_vec(member)
                    .map_err(|e| BackendError::Command(format!("encoding a member: {e}")))?;
                call.arg(member.id.as_str())
                    .arg(member.sub.as_deref().unwrap_or(""))
                    .arg(json);
            }
            if index == last {
                for id in &removed {
                    call.arg(id.as_str());
                }
            }
            let answer: i64 = self.invoke(group, call).await?;
            if answer < 0 {
                return Ok(None);
            }
            mine = answer;
        }
        Ok(Some(mine))
    }

    /// Runs `script` on `group`'s keys with `args`.
    async fn read<T: redis::FromRedisValue + Send + 'static>(
        &self,
        script: &redis::Script,
        group: &GroupName,
        args: &[&str],
    ) -> Result<T, BackendError> {
        let mut call = self.invocation(script, group);
        for arg in args {
            call.arg(*arg);
        }
        self.invoke(group, call).await
    }
}

/// Reads a count out of a script's answer.
fn count(value: Option<&redis::Value>) -> u64 {
    value
        .and_then(|v| redis::from_redis_value::<u64>(v.clone()).ok())
        .unwrap_or(0)
}

impl PresenceStore for GroupPresence {
    fn joined(&self, group: &GroupName, id: &SessionId) {
        self.note(group, id, true);
    }

    fn left(&self, group: &GroupName, id: &SessionId) {
        self.note(group, id, false);
    }

    fn members<'a>(
        &'a self,
        group: &'a GroupName,
        cursor: &'a Cursor,
        limit: usize,
    ) -> BoxFuture<'a, Result<MemberPage, BackendError>> {
        Box::pin(async move {
            let limit = limit.clamp(1, MAX_MEMBER_PAGE);
            let after = cursor.last().map_or("", SessionId::as_str);
            let mut call = self.invocation(&self.scripts.page, group);
            call.arg(after).arg(limit);
            let (answer, seq): (Vec<redis::Value>, u64) = self.invoke_at(group, call).await?;
            let stats = PresenceStats {
                members: count(answer.first()),
                users: count(answer.get(1)),
            };
            let mut members = Vec::new();
            let mut more = false;
            for pair in answer.get(2..).unwrap_or_default().chunks_exact(2) {
                if members.len() == limit {
                    more = true;
                    break;
                }
                let json: Option<Vec<u8>> = redis::from_redis_value(pair[1].clone()).ok();
                match json.map(|json| serde_json::from_slice::<Member>(&json)) {
                    Some(Ok(member)) => members.push(member),
                    // Someone else's format: skipped rather than failing
                    // the page.
                    _ => tracing::debug!(%group, "ignored an unreadable presence member"),
                }
            }
            let next = more
                .then(|| members.last().map(|m| Cursor::after(m.id.clone())))
                .flatten();
            Ok(MemberPage {
                members,
                next,
                stats,
                seq,
            })
        })
    }

    fn users<'a>(
        &'a self,
        group: &'a GroupName,
    ) -> BoxFuture<'a, Result<Vec<UserCount>, BackendError>> {
        Box::pin(async move {
            let flat: Vec<(String, u64)> = self.read(&self.scripts.users, group, &[]).await?;
            let mut users: Vec<UserCount> = flat
                .into_iter()
                .map(|(sub, connections)| UserCount { sub, connections })
                .collect();
            users.sort_by(|a, b| a.sub.cmp(&b.sub));
            Ok(users)
        })
    }

    fn stats<'a>(
        &'a self,
        group: &'a GroupName,
    ) -> BoxFuture<'a, Result<PresenceStats, BackendError>> {
        Box::pin(async move {
            let (members, users): (u64, u64) = self.read(&self.scripts.stats, group, &[]).await?;
            Ok(PresenceStats { members, users })
        })
    }

    /// Removes this node's members of every group it wrote or holds.
    fn withdraw(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            let mut groups: BTreeSet<GroupName> =
                self.pending.lock().held.clone().into_iter().collect();
            groups.extend((self.local_groups)().into_iter().map(|(group, _)| group));
            let node = self.node_id.as_str();
            let results: Vec<Result<i64, BackendError>> = futures_util::stream::iter(groups)
                .map(
                    |group| async move { self.read(&self.scripts.withdraw, &group, &[node]).await },
                )
                .buffer_unordered(CONCURRENT_GROUPS)
                .collect()
                .await;
            results
                .into_iter()
                .find_map(Result::err)
                .map_or(Ok(()), Err)
        })
    }
}
