//! Showing that a client did *not* receive something, without sleeping
//! and without relying on order across channels.
//!
//! Order holds per publisher *per channel* (one Redis channel, or one
//! session's queue), not across channels: with sharded pub/sub, two group
//! channels may come over two connections. So:
//!
//! * [`marker_is_next`]: the client shares a channel with what it must not
//!   get (its group, or the session's own queue on one node). Publish a
//!   marker there, from the same publisher, *after* every intended
//!   receiver has read the positive deliveries; the marker must be the
//!   next frame.
//! * [`quiet_after_marker`]: the client has no channel in common with what
//!   it must not get. Publish a marker on the client's own channel after
//!   the positive deliveries were read everywhere, wait for it, then
//!   assert that no frame arrives within [`QUIET`]. That is a *bounded
//!   negative wait* — the one place a test waits for nothing to happen —
//!   and only after the marker shows that the client's node has handled
//!   everything published before it.

use std::time::Duration;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use super::Client;

/// How long a client must stay quiet after its marker.
pub const QUIET: Duration = Duration::from_millis(300);

/// The next data frame of `client` is the text `marker`: nothing that was
/// queued before it on the same channel reached the client.
pub async fn marker_is_next(client: &mut Client, marker: &str, what: &str) {
    assert_eq!(
        client.next_data().await,
        Message::text(marker),
        "{what}: something came before the marker {marker:?}"
    );
}

/// `client` reads `marker` next (published on its own channel), and then
/// nothing within [`QUIET`]: a bounded negative wait.
pub async fn quiet_after_marker(client: &mut Client, marker: &str, what: &str) {
    marker_is_next(client, marker, what).await;
    assert_quiet(client, what).await;
}

/// No data frame reaches `client` within [`QUIET`] (pings are skipped).
pub async fn assert_quiet(client: &mut Client, what: &str) {
    let next = async {
        loop {
            match client.ws.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => return other,
            }
        }
    };
    if let Ok(frame) = tokio::time::timeout(QUIET, next).await {
        panic!("{what}: expected nothing within {QUIET:?}, got {frame:?}");
    }
}
