//! Joining with a backlog, and resuming without a gap.
//!
//! A client asks on the upgrade: `?history=N` (the last N messages, then
//! live) or `?since=<offset>&epoch=<epoch>` (everything after that offset,
//! then live). The order of steps is what makes it gapless:
//!
//! 1. the session **joins held**: it is in the registry, so every message
//!    that reaches this node from now on is queued for it, but its writer
//!    waits;
//! 2. the hub **waits for the subscription** to be confirmed
//!    ([`Hub::subscribed`]), so everything published from now on reaches
//!    this node;
//! 3. it **reads history** (pages of at most `MAX_PAGE`, up to the top it
//!    saw first) — everything published before;
//! 4. it **releases** the queue with the welcome and the backlog in front:
//!    live messages the backlog already holds are dropped by offset, so the
//!    client sees each offset once and none is missing.
//!
//! When a resume cannot be complete (another epoch, offsets trimmed or
//! expired, Redis unreachable) nothing is replayed and a `groupcast.v1`
//! client is told `recovered: false`: it continues from the current top
//! and knows to refetch. Raw clients get the same frames they always did.

use std::fmt;

use crate::backend::Channel;
use crate::backend::history::{HistoryPage, HistoryQuery, MAX_PAGE};
use crate::delivery::decode;
use crate::error::HubError;
use crate::group::GroupName;
use crate::hub::Hub;
use crate::message::Message;
use crate::outbound::{Queued, Stamp};
use crate::protocol::{GrouplessWelcome, Protocol, Welcome};
use crate::session::Session;

/// The longest epoch a client may send back.
const MAX_EPOCH_LEN: usize = 64;

/// What a client asked to be replayed when it joined.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Replay {
    /// Nothing: live from now on.
    #[default]
    None,
    /// The last `n` retained messages, then live.
    Last(u64),
    /// Everything after `offset` of `epoch`, then live.
    Since { offset: u64, epoch: String },
}

/// Why an upgrade's replay parameters were refused (an HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ReplayError(String);

impl Replay {
    /// Reads `history`, `since` and `epoch` from a query string; other
    /// parameters (the token) are left alone.
    pub fn from_query(query: Option<&str>) -> Result<Replay, ReplayError> {
        let (mut history, mut since, mut epoch) = (None, None, None);
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let slot = match key.as_ref() {
                "history" => &mut history,
                "since" => &mut since,
                "epoch" => &mut epoch,
                _ => continue,
            };
            if slot.replace(value.into_owned()).is_some() {
                return Err(ReplayError(format!("{key} is given twice")));
            }
        }
        let number = |name: &str, value: &str| {
            value.parse::<u64>().map_err(|_| {
                ReplayError(format!(
                    "{name} must be a whole number from 0 to {}, not {value:?}",
                    u64::MAX
                ))
            })
        };
        match (history, since, epoch) {
            (None, None, None) => Ok(Replay::None),
            (Some(n), None, None) => Ok(Replay::Last(number("history", &n)?)),
            (None, Some(offset), Some(epoch)) => {
                check_epoch(&epoch)?;
                Ok(Replay::Since {
                    offset: number("since", &offset)?,
                    epoch,
                })
            }
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(ReplayError(
                "give either history=N or since=&epoch=, not both".into(),
            )),
            (None, Some(_), None) => Err(ReplayError(
                "since needs the epoch it belongs to: since=<offset>&epoch=<epoch>".into(),
            )),
            (None, None, Some(_)) => Err(ReplayError(
                "epoch needs since: since=<offset>&epoch=<epoch>".into(),
            )),
        }
    }

    /// Reads a Server-Sent Events `Last-Event-ID`: `<epoch>:<offset>`, as
    /// the `id` of a message event gave it.
    pub fn from_last_event_id(id: &str) -> Result<Replay, ReplayError> {
        let Some((epoch, offset)) = id.rsplit_once(':') else {
            return Err(ReplayError(format!(
                "Last-Event-ID must be <epoch>:<offset> (as an event's id gave it), not {id:?}"
            )));
        };
        check_epoch(epoch)?;
        let offset = offset.parse::<u64>().map_err(|_| {
            ReplayError(format!(
                "the offset of Last-Event-ID must be a whole number, not {offset:?}"
            ))
        })?;
        Ok(Replay::Since {
            offset,
            epoch: epoch.to_owned(),
        })
    }

    /// Whether a session that asked this must join held.
    pub(crate) fn wants_backlog(&self) -> bool {
        !matches!(self, Replay::None | Replay::Last(0))
    }
}

/// An epoch as a client may send it back: what a welcome or a message gave
/// it, never anything longer or stranger.
fn check_epoch(epoch: &str) -> Result<(), ReplayError> {
    let valid = !epoch.is_empty()
        && epoch.len() <= MAX_EPOCH_LEN
        && epoch
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(ReplayError(format!(
            "epoch must be 1 to {MAX_EPOCH_LEN} letters, digits, '-' or '_' (as a welcome or message frame gave it), not {epoch:?}"
        )))
    }
}

impl fmt::Display for Replay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Replay::None => f.write_str("live"),
            Replay::Last(n) => write!(f, "history={n}"),
            Replay::Since { offset, epoch } => write!(f, "since={offset}&epoch={epoch}"),
        }
    }
}

/// A group's history, decoded, for the HTTP API.
#[derive(Debug, Clone)]
pub struct History {
    /// The group's epoch (`None`: no history stored now).
    pub epoch: Option<String>,
    /// The newest offset.
    pub top: u64,
    /// The messages read, oldest first, with their offsets.
    pub messages: Vec<(u64, Message)>,
}

impl Hub {
    /// Puts the welcome (for `groupcast.v1`) and the backlog `replay` asks
    /// for in front of `session`'s held queue, then lets its writer go.
    /// See the module docs. Never fails the connection: what cannot be
    /// replayed is reported as `recovered: false`.
    pub(crate) async fn catch_up(&self, session: &Session, replay: &Replay, presence: bool) {
        match session.group() {
            Some(group) => {
                self.catch_up_in(session, group, replay, None, presence)
                    .await
            }
            // A connection without a group (`/ws`, `groupcast.v1` only):
            // its welcome says who and where; there is nothing to replay.
            None => {
                let session_id = session.id().to_string();
                let welcome = GrouplessWelcome {
                    kind: "welcome",
                    session: &session_id,
                    node: self.node_id(),
                };
                session
                    .outbound()
                    .release(vec![Queued::protocol(welcome.to_json())], None);
            }
        }
    }

    /// The same for `group`, which `session` just joined: with `request`,
    /// the answer to a `subscribe` request of that id (a `subscribed`
    /// frame in place of the welcome). The session's queue is held (by the
    /// join, or by [`Outbound::hold`](crate::outbound::Outbound::hold)).
    /// With `presence`, the group's presence snapshot follows the welcome
    /// (`presence/snapshot.rs`).
    pub(crate) async fn catch_up_in(
        &self,
        session: &Session,
        group: &GroupName,
        replay: &Replay,
        request: Option<u64>,
        presence: bool,
    ) {
        let limits = self.config().history.for_group(group);
        let mut welcome = Welcome {
            kind: if request.is_some() {
                "subscribed"
            } else {
                "welcome"
            },
            id: request,
            session: session.id().to_string(),
            node: self.node_id().to_string(),
            group: group.to_string(),
            epoch: None,
            offset: None,
            history: limits.is_some(),
            recovered: matches!(replay, Replay::Since { .. }).then_some(false),
        };
        let mut backlog = Vec::new();
        if let Some(limits) = limits {
            match self.read_backlog(session, group, replay, limits.size).await {
                Ok((page, entries, recovered)) => {
                    self.history_read_at(group, page.epoch.as_deref(), page.top);
                    welcome.epoch = page.epoch.as_deref().map(str::to_owned);
                    welcome.offset = Some(page.top);
                    if let Some(flag) = welcome.recovered.as_mut() {
                        *flag = recovered;
                    }
                    backlog = entries;
                }
                Err(error) => {
                    self.metrics().history_read_errors.inc();
                    tracing::warn!(session = %session.id(), %group, %replay, %error,
                        "cannot read the history: the session continues live");
                }
            }
        }
        if welcome.recovered == Some(false) {
            self.metrics().resumes_not_recovered.inc();
        } else if welcome.recovered == Some(true) {
            self.metrics().resumes_recovered.inc();
        }
        let snapshot = if presence {
            Some(self.presence_snapshot(session, group, request).await)
        } else {
            None
        };
        let mut front = Vec::with_capacity(backlog.len() + 2);
        let mut seen = None;
        if session.protocol() == Protocol::V1 || request.is_some() {
            front.push(Queued::welcome(&welcome));
            front.extend(snapshot);
            // The client starts from the welcome's top: what is queued live
            // up to it belongs before its join point.
            if let (Some(epoch), Some(top)) = (&welcome.epoch, welcome.offset) {
                seen = Some((std::sync::Arc::from(epoch.as_str()), top));
            }
        }
        front.extend(backlog);
        session.outbound().release(front, seen);
    }

    /// Subscribed first, then history: the page that gave the welcome its
    /// epoch and top, the backlog to replay, and whether a resume is
    /// complete.
    async fn read_backlog(
        &self,
        session: &Session,
        group: &GroupName,
        replay: &Replay,
        size: u64,
    ) -> Result<(HistoryPage, Vec<Queued>, bool), HubError> {
        self.subscribed(group).await?;
        // Reads that began after this one joined may be shared with it.
        let joined = tokio::time::Instant::now();
        match replay {
            Replay::None => {
                let page = self
                    .read_history(group, HistoryQuery::Last(0), joined)
                    .await?;
                Ok((page, Vec::new(), false))
            }
            Replay::Last(n) => {
                let n = usize::try_from((*n).min(size)).unwrap_or(usize::MAX);
                let page = self
                    .read_history(group, HistoryQuery::Last(n), joined)
                    .await?;
                let backlog = self.replayable(session, group, &page);
                Ok((page, backlog, false))
            }
            Replay::Since { offset, epoch } => {
                let first = self
                    .read_history(
                        group,
                        HistoryQuery::After {
                            offset: *offset,
                            limit: MAX_PAGE,
                        },
                        joined,
                    )
                    .await?;
                if !first.continues(epoch, *offset) {
                    return Ok((first, Vec::new(), false));
                }
                // Page on up to the top the first read saw: bounded by the
                // group's size, never one unbounded read.
                let mut backlog = self.replayable(session, group, &first);
                let mut last = first.entries.last().map_or(*offset, |e| e.offset);
                while last < first.top {
                    let page = self
                        .read_history(
                            group,
                            HistoryQuery::After {
                                offset: last,
                                limit: MAX_PAGE,
                            },
                            joined,
                        )
                        .await?;
                    let Some(newest) = page.entries.last().map(|e| e.offset) else {
                        break;
                    };
                    if page.epoch != first.epoch || page.entries[0].offset != last + 1 {
                        // Trimmed or reset while we read: not complete.
                        return Ok((first, Vec::new(), false));
                    }
                    backlog.extend(self.replayable(session, group, &page));
                    last = newest;
                }
                Ok((first, backlog, true))
            }
        }
    }

    /// A page's entries as queued messages for `session` (an envelope's
    /// `except` and key filter apply as they did live).
    fn replayable(&self, session: &Session, group: &GroupName, page: &HistoryPage) -> Vec<Queued> {
        let Some(epoch) = &page.epoch else {
            return Vec::new();
        };
        page.entries
            .iter()
            .filter_map(|entry| {
                let channel = Channel::Group(group.clone());
                let (broadcast, message, _, _) = decode(channel, entry.payload.clone()).ok()?;
                broadcast.admits(session).then(|| {
                    Queued::new(message, Some(Stamp::new(entry.offset, epoch.clone())))
                        .in_group(group)
                })
            })
            .collect()
    }

    /// A page of `group`'s history, decoded (the HTTP API's
    /// `GET /api/groups/{group}/history`). `None` for a group that keeps
    /// no history.
    pub async fn history(
        &self,
        group: &GroupName,
        query: HistoryQuery,
    ) -> Result<Option<History>, HubError> {
        if self.config().history.for_group(group).is_none() {
            return Ok(None);
        }
        let page = self
            .read_history(group, query, tokio::time::Instant::now())
            .await?;
        let messages = page
            .entries
            .iter()
            .filter_map(|entry| {
                let channel = Channel::Group(group.clone());
                let (broadcast, message, _, _) = decode(channel, entry.payload.clone()).ok()?;
                // Messages addressed to some members only are not shown.
                (broadcast.except.is_none() && broadcast.filter.is_none())
                    .then_some((entry.offset, message))
            })
            .collect();
        Ok(Some(History {
            epoch: page.epoch.as_deref().map(str::to_owned),
            top: page.top,
            messages,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_parameters_parse_or_say_why_not() {
        assert_eq!(Replay::from_query(None), Ok(Replay::None));
        assert_eq!(Replay::from_query(Some("token=x")), Ok(Replay::None));
        assert_eq!(
            Replay::from_query(Some("history=20&token=x")),
            Ok(Replay::Last(20))
        );
        assert_eq!(
            Replay::from_query(Some("since=7&epoch=ab-1_c")),
            Ok(Replay::Since {
                offset: 7,
                epoch: "ab-1_c".into()
            })
        );
        for (query, says) in [
            ("history=-1", "whole number"),
            ("history=lots", "whole number"),
            ("history=99999999999999999999", "whole number"),
            ("since=5", "needs the epoch"),
            ("epoch=e", "needs since"),
            ("since=x&epoch=e", "whole number"),
            ("since=1&epoch=", "epoch must be"),
            ("since=1&epoch=a%20b", "epoch must be"),
            ("history=1&since=1&epoch=e", "not both"),
            ("history=1&history=2", "twice"),
        ] {
            let error = Replay::from_query(Some(query)).unwrap_err().to_string();
            assert!(error.contains(says), "{query}: {error}");
        }
    }

    #[test]
    fn a_last_event_id_is_an_epoch_and_an_offset_or_says_why_not() {
        assert_eq!(
            Replay::from_last_event_id("ab-1_c:42"),
            Ok(Replay::Since {
                offset: 42,
                epoch: "ab-1_c".into()
            })
        );
        for (id, says) in [
            ("42", "<epoch>:<offset>"),
            (":42", "epoch must be"),
            ("a b:42", "epoch must be"),
            ("e:", "whole number"),
            ("e:-1", "whole number"),
            ("e:1:2", "epoch must be"),
        ] {
            let error = Replay::from_last_event_id(id).unwrap_err().to_string();
            assert!(error.contains(says), "{id}: {error}");
        }
    }
}
