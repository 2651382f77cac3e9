//! The vectored writer every transport shares: a batch of already-encoded
//! buffers (shared bytes, built once per message for all members) written
//! with as few `writev` calls as the socket allows, resumable where the
//! socket stopped taking bytes.
//!
//! Nothing here knows what the buffers are — WebSocket frames or SSE
//! events: a transport describes its batch with [`WriteFrames`] (read in
//! place, nothing collected) and keeps a [`Progress`] across polls.

use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use tokio::io::AsyncWrite;
use tokio::time::timeout;

use crate::error::SessionError;

/// The most frames handed to one `writev` (the kernel's `IOV_MAX` is
/// 1024): the slices live on the stack, for one write.
pub(crate) const MAX_SLICES: usize = 64;

/// The frames of one write, read in place.
pub(crate) trait WriteFrames {
    fn count(&self) -> usize;
    fn frame(&self, index: usize) -> &[u8];
}

/// Control frames, built for the write.
impl WriteFrames for [Bytes] {
    fn count(&self) -> usize {
        self.len()
    }

    fn frame(&self, index: usize) -> &[u8] {
        &self[index]
    }
}

/// Writes `frames` with as few vectored writes as the socket allows,
/// failing past `limit` (counted in `timeouts`).
pub(crate) async fn write_frames<S: AsyncWrite + Unpin, F: WriteFrames + ?Sized>(
    io: &mut S,
    timeouts: &Counter,
    frames: &F,
    limit: Duration,
) -> Result<(), SessionError> {
    let mut sent = Progress::default();
    let result = within(
        limit,
        poll_fn(|cx| poll_write_frames(io, cx, frames, &mut sent)),
    )
    .await;
    if matches!(result, Err(SessionError::WriteTimeout(_))) {
        timeouts.inc();
    }
    result
}

/// How far a write of several frames got.
#[derive(Default)]
pub(crate) struct Progress {
    /// Buffers written entirely.
    frames: usize,
    /// Bytes of the next buffer written.
    offset: usize,
}

/// Writes `frames` from where `sent` stands, up to [`MAX_SLICES`] per
/// vectored write (one frame: a plain write), until all are written or
/// the socket is full.
pub(crate) fn poll_write_frames<S: AsyncWrite + Unpin, F: WriteFrames + ?Sized>(
    io: &mut S,
    cx: &mut Context<'_>,
    frames: &F,
    sent: &mut Progress,
) -> Poll<Result<(), SessionError>> {
    let write_error = |error: io::Error| SessionError::Write(error.to_string());
    let total = frames.count();
    while sent.frames < total {
        let count = (total - sent.frames).min(MAX_SLICES);
        let first = &frames.frame(sent.frames)[sent.offset..];
        let written = if count == 1 {
            // The usual case (a message at a time): no slices to build.
            ready!(Pin::new(&mut *io).poll_write(cx, first))
        } else {
            // Each frame looked up once: the slices say how far it got.
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            slices[0] = IoSlice::new(first);
            for (slot, index) in slices[1..count].iter_mut().zip(sent.frames + 1..) {
                *slot = IoSlice::new(frames.frame(index));
            }
            let slices = &slices[..count];
            let written = ready!(Pin::new(&mut *io).poll_write_vectored(cx, slices));
            if let Ok(written) = written {
                advance(sent, slices, written);
            }
            written
        }
        .map_err(write_error)?;
        if written == 0 {
            return Poll::Ready(Err(write_error(io::ErrorKind::WriteZero.into())));
        }
        if count == 1 {
            if written < first.len() {
                sent.offset += written;
            } else {
                sent.frames += 1;
                sent.offset = 0;
            }
        }
    }
    Pin::new(&mut *io).poll_flush(cx).map_err(write_error)
}

/// Moves `sent` past the `written` bytes of `slices` (which start where
/// `sent` stands).
fn advance(sent: &mut Progress, slices: &[IoSlice<'_>], written: usize) {
    let mut left = written;
    for slice in slices {
        if left < slice.len() {
            sent.offset += left;
            return;
        }
        left -= slice.len();
        sent.frames += 1;
        sent.offset = 0;
    }
}

/// Runs a write to the client, failing it if it takes longer than
/// `limit`. Almost every write completes on its first poll (the socket's
/// send buffer has room), so the timer — an insertion into and a removal
/// from the runtime's timer wheel — is only armed when it does not.
pub(crate) async fn within(
    limit: Duration,
    write: impl Future<Output = Result<(), SessionError>>,
) -> Result<(), SessionError> {
    let mut write = pin!(write);
    match futures_util::poll!(write.as_mut()) {
        Poll::Ready(result) => result,
        Poll::Pending => timeout(limit, write)
            .await
            .map_err(|_| SessionError::WriteTimeout(limit))?,
    }
}
