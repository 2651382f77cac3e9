//! The answer to a publish: where the message stands once it left.

use tokio::sync::oneshot;

use super::error::BackendError;
use super::inbound::Position;

/// What a publish achieved once it left the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// Where the message stands in its group's history, when the backend
    /// keeps one for that group.
    pub position: Option<Position>,
}

/// The answer to a publish: resolves when the message has left the node
/// (or could not). Dropping it is fine: the publish still happens, in order.
pub struct PublishAck(Option<oneshot::Receiver<Result<Published, BackendError>>>);

impl PublishAck {
    /// An ack that is already done (nothing to send).
    pub fn done() -> Self {
        PublishAck(None)
    }

    /// An ack that resolves when `rx` does.
    pub fn pending(rx: oneshot::Receiver<Result<Published, BackendError>>) -> Self {
        PublishAck(Some(rx))
    }

    /// Waits for the outcome.
    pub async fn wait(self) -> Result<Published, BackendError> {
        match self.0 {
            None => Ok(Published::default()),
            Some(rx) => rx.await.unwrap_or(Err(BackendError::Closed)),
        }
    }
}
