//! A message read on a subscriber connection, turned into what the hub's
//! inbox takes: shared by the single-server and the cluster subscriber.

use std::sync::Arc;

use bytes::Bytes;
use redis::Msg;

use super::history::split_positioned;
use crate::backend::channels::ChannelNames;
use crate::backend::inbound::{Channel, Inbound};
use crate::backend::subscriptions::Subscriptions;

/// A message read on a subscriber connection as the inbox takes it: which
/// channel (the cluster channel; a wanted group; or a group just
/// unsubscribed with a message already on its way — the registry has no
/// members for it, so delivering is harmless), and the history position a
/// positioned publish carries. `None` for an unknown channel. Shared by the
/// single-server and the cluster subscriber.
pub(crate) fn inbound_of(
    message: &Msg,
    wanted: &Subscriptions,
    names: &ChannelNames,
    epochs: &mut Option<Arc<str>>,
) -> Option<Inbound> {
    let name = message.get_channel_name();
    let channel = match wanted.group_of(name) {
        Some(group) => Channel::Group(group.clone()),
        None => match names.parse(name) {
            Some(channel) => channel,
            None => {
                tracing::debug!(channel = name, "ignored a message on an unknown channel");
                return None;
            }
        },
    };
    let bytes = message.get_payload_bytes();
    Some(match split_positioned(bytes, epochs) {
        Some((position, payload)) => Inbound {
            channel,
            payload: Bytes::copy_from_slice(payload),
            position: Some(position),
        },
        None => Inbound::new(channel, Bytes::copy_from_slice(bytes)),
    })
}
