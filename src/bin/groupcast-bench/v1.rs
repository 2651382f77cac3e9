//! The `groupcast.v1` frames a bench client reads and sends, for
//! `--groups-per-client K` (and `--v1`): one connection holding several
//! groups.
//!
//! A client joins its first group by its URL and each further one with a
//! `subscribe` request, answered by `subscribed` (or an `error`, which
//! fails the client: the run would otherwise count a member that is not
//! one). Messages arrive as `{"type":"message","group":…,"data":…}`; the
//! bench payload is `data` (base64 when `"binary": true`), and a message
//! whose `group` is not one of the client's is misrouted, whatever its
//! stamp says. Other frames (`welcome`, answers) are not deliveries.
//!
//! Presence frames (`join`, `leave`, `user_joined`, `user_left`, sent in
//! the groups a node names with `--join-leave`) are counted, per kind,
//! across every client ([`presence_events`]): what a join/leave costs the
//! servers per frame delivered.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use serde::Deserialize;

use crate::payload::{Stamp, Tally};

/// The subprotocol the clients ask for.
pub const PROTOCOL: &str = "groupcast.v1";

/// A client's groups: (name, index); the first is the one in its URL.
pub type Groups = [(String, u32)];

/// The fields of a server frame the bench reads.
#[derive(Debug, Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    group: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<Cow<'a, str>>,
    #[serde(default)]
    binary: bool,
    id: Option<u64>,
    #[serde(borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reason: Option<Cow<'a, str>>,
}

/// The presence frames the clients count, in the order of
/// [`presence_events`].
pub const PRESENCE_KINDS: [&str; 4] = ["join", "leave", "user_joined", "user_left"];

/// Presence frames received so far by every client, per kind of
/// [`PRESENCE_KINDS`].
static PRESENCE_EVENTS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// The presence frames received so far by every client, per kind of
/// [`PRESENCE_KINDS`].
pub fn presence_events() -> [u64; 4] {
    PRESENCE_EVENTS
        .each_ref()
        .map(|n| n.load(Ordering::Relaxed))
}

/// Counts `kind` when it is a presence frame's; whether it was.
fn count_presence(kind: &str) -> bool {
    match PRESENCE_KINDS.iter().position(|k| *k == kind) {
        Some(i) => {
            PRESENCE_EVENTS[i].fetch_add(1, Ordering::Relaxed);
            true
        }
        None => false,
    }
}

/// A subscribe request for `group`, answered with `id`.
pub fn subscribe_request(group: &str, id: u64) -> String {
    serde_json::json!({ "type": "subscribe", "group": group, "id": id }).to_string()
}

/// What a frame says about the subscribe request `id`: `None` when it is
/// not its answer, `Some(Ok(()))` subscribed, `Some(Err(why))` refused.
pub fn answer_to(frame: &[u8], id: u64) -> Option<Result<(), String>> {
    let frame: Frame<'_> = serde_json::from_slice(frame).ok()?;
    if frame.id != Some(id) {
        return None;
    }
    match &*frame.kind {
        "subscribed" => Some(Ok(())),
        "error" => Some(Err(format!(
            "subscribe to {} refused: {} {}",
            frame.group.as_deref().unwrap_or("?"),
            frame.code.as_deref().unwrap_or("?"),
            frame.reason.as_deref().unwrap_or(""),
        ))),
        _ => None,
    }
}

/// Accounts one frame received by a client holding `groups`; returns the
/// stamp of a delivery, for its latency.
pub fn account(tally: &mut Tally, groups: &Groups, frame: &[u8]) -> Option<Stamp> {
    let Ok(parsed) = serde_json::from_slice::<Frame<'_>>(frame) else {
        tally.invalid += 1;
        return None;
    };
    if parsed.kind != "message" {
        // join, leave, …: counted; welcome, subscribed, …: not deliveries
        count_presence(&parsed.kind);
        return None;
    }
    let Some(data) = parsed.data else {
        tally.invalid += 1;
        return None;
    };
    let member_of = parsed
        .group
        .as_deref()
        .and_then(|name| groups.iter().find(|(g, _)| g == name));
    let Some(&(_, index)) = member_of else {
        tally.misrouted += 1;
        return None;
    };
    if parsed.binary {
        match base64::engine::general_purpose::STANDARD.decode(data.as_bytes()) {
            Ok(bytes) => tally.frame(&bytes, index),
            Err(_) => {
                tally.invalid += 1;
                None
            }
        }
    } else {
        tally.frame(data.as_bytes(), index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{Totals, encode};

    fn payload(group: u32, seq: u64) -> String {
        let mut out = Vec::new();
        let stamp = Stamp {
            publisher: 0,
            group,
            seq,
            sent_us: 1,
        };
        encode(&stamp, 64, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn messages_count_for_the_named_group_only() {
        let groups = [("g-3".to_string(), 3), ("g-7".to_string(), 7)];
        let mut tally = Tally::default();
        let message = |group: &str, data: &str| {
            format!(r#"{{"type":"message","group":"{group}","data":"{data}"}}"#)
        };
        let frames = [
            r#"{"type":"welcome","group":"g-3","epoch":null}"#.to_string(),
            message("g-3", &payload(3, 0)),
            message("g-7", &payload(7, 0)),
            // Named for a group the client does not hold.
            message("g-9", &payload(9, 0)),
            // Named for one of its groups, stamped for the other.
            message("g-7", &payload(3, 1)),
            format!(
                r#"{{"type":"message","group":"g-7","binary":true,"data":"{}"}}"#,
                base64::engine::general_purpose::STANDARD.encode(payload(7, 1))
            ),
            "not json".to_string(),
        ];
        let stamped: Vec<bool> = frames
            .iter()
            .map(|f| account(&mut tally, &groups, f.as_bytes()).is_some())
            .collect();
        assert_eq!(stamped, [false, true, true, false, false, true, false]);
        let mut totals = Totals::default();
        tally.add_to(&mut totals);
        // A publisher numbers each group on its own: seq 0 of g-3 and seq
        // 0 of g-7 are two messages, not a duplicate.
        assert_eq!((totals.delivered, totals.unique, totals.dups), (3, 3, 0));
        assert_eq!((totals.misrouted, totals.invalid), (2, 1));
    }

    #[test]
    fn subscribe_answers_are_matched_by_id() {
        let request: serde_json::Value =
            serde_json::from_str(&subscribe_request("g-1", 4)).unwrap();
        assert_eq!(
            request,
            serde_json::json!({"type": "subscribe", "group": "g-1", "id": 4})
        );
        let ok = br#"{"type":"subscribed","id":4,"group":"g-1","history":false}"#;
        assert_eq!(answer_to(ok, 4), Some(Ok(())));
        assert_eq!(answer_to(ok, 5), None);
        let refused =
            br#"{"type":"error","id":4,"group":"g-1","code":"too_many_groups","reason":"at most 2"}"#;
        let why = answer_to(refused, 4).unwrap().unwrap_err();
        assert!(why.contains("too_many_groups at most 2"), "{why}");
        assert_eq!(answer_to(br#"{"type":"message","data":"x"}"#, 4), None);
    }

    #[test]
    fn presence_frames_are_counted_per_kind_and_are_not_deliveries() {
        // The only test that sends presence frames: the counts' deltas are its own.
        let before = presence_events();
        let groups = [("g-1".to_string(), 1)];
        let mut tally = Tally::default();
        for frame in [
            r#"{"type":"join","group":"g-1","session":"a","node":"n"}"#,
            r#"{"type":"leave","group":"g-1","session":"a","node":"n"}"#,
            r#"{"type":"leave","group":"g-1","session":"b","node":"n"}"#,
            r#"{"type":"user_joined","group":"g-1","sub":"u","node":"n"}"#,
            r#"{"type":"user_left","group":"g-1","sub":"u","node":"n"}"#,
            r#"{"type":"welcome","group":"g-1"}"#,
        ] {
            assert!(account(&mut tally, &groups, frame.as_bytes()).is_none());
        }
        let after = presence_events();
        let delta: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
        assert_eq!(delta, [1, 2, 1, 1]);
        let mut totals = Totals::default();
        tally.add_to(&mut totals);
        assert_eq!(
            (totals.delivered, totals.invalid, totals.misrouted),
            (0, 0, 0)
        );
        assert!(!count_presence("message"));
    }
}
