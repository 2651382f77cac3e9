//! One WebSocket connection's socket: one task that writes the session's
//! queue and reads the client's frames.
//!
//! Why one task and not a reader and a writer? An idle connection then
//! costs one small future and no buffer at all: frames to send are shared
//! bytes built once per broadcast (`transport/websocket/encoding.rs`), written with
//! one vectored write per batch, and what the client sends is read into a
//! stack buffer and handed to the [`FrameReader`], which keeps bytes only
//! while a frame is incomplete.
//!
//! Order on the wire is the order of this loop: a batch of the queue, a
//! pong or a ping between batches, the close last. A slow socket blocks
//! only this task: fan-out never waits for it (it pushes into the queue),
//! and a write that does not finish within `write_timeout` ends the
//! connection.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, sleep_until, timeout};

use super::encoding::{self, Compression};
use crate::CloseReason;
use crate::error::SessionError;
use crate::outbound::{Batch, Queued, SPARE_CAPACITY};
use crate::poll_gate::PollGate;
use crate::protocol::Offsets;
use crate::transport::lifecycle::FromClient;
use crate::transport::writer::{Progress, WriteFrames, poll_write_frames, write_frames};
use crate::wire::{FrameReader, Incoming, ReadError, frame};
use crate::wire::{MAX_READ_CHUNK, close_code};
use crate::{Hub, Session};

/// After sending a close frame, how long to wait for the client's reply.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What a connection was negotiated with, and what it hands its data
/// messages (text, binary) and pongs to.
pub(crate) struct Connection<'a, S> {
    hub: &'a Hub,
    session: &'a Session,
    io: S,
    reader: FrameReader,
    /// permessage-deflate is on for this connection.
    compression: Option<Compression>,
    /// The batch being written, traded with the queue's deque for the
    /// next one (`Outbound::poll_batch`): two buffers go round, and one
    /// that a burst made large is given back after its write.
    batch: VecDeque<Queued>,
    /// The close frame of the batch being written, if it ends with one.
    close: Option<Bytes>,
    /// How far the batch's write got, when the socket could not take it
    /// all at once.
    sent: Progress,
    /// The last history offset sent, to skip repeats of the backlog.
    offsets: Offsets,
}

/// What woke the loop.
enum Event {
    /// A batch was taken from the queue and written at once (almost
    /// always: the socket's send buffer has room); `true` if it ended with
    /// the close.
    Written(Result<(), SessionError>, bool),
    /// A batch was taken, and the socket took only part of it: the rest
    /// is written, within the write timeout, from where `sent` stands.
    Stalled {
        closing: bool,
    },
    Read(io::Result<usize>),
    Timer,
}

impl<'a, S: AsyncRead + AsyncWrite + Unpin> Connection<'a, S> {
    pub fn new(
        hub: &'a Hub,
        session: &'a Session,
        io: S,
        reader: FrameReader,
        compression: Option<Compression>,
    ) -> Self {
        Connection {
            hub,
            session,
            io,
            reader,
            compression,
            batch: VecDeque::new(),
            close: None,
            sent: Progress::default(),
            offsets: Offsets::default(),
        }
    }

    /// Runs the connection until it closes. `on_message` gets every data
    /// message and pong; its error closes the connection with that error's
    /// close code, like the reader's own errors.
    pub async fn run(
        &mut self,
        mut on_message: impl FnMut(FromClient) -> Result<(), SessionError>,
    ) -> Result<(), SessionError> {
        let hub = self.hub;
        let session = self.session;
        let config = hub.config();
        let write_timeout = config.write_timeout;
        let chunk = config.read_buffer_size.clamp(1, MAX_READ_CHUNK);
        let mut last_heard = Instant::now();
        let mut next_ping = last_heard + config.ping_period;
        // One timer for pings, the pong wait and the token's expiry, reset
        // only when it fires (or a refresh brings the expiry forward): a
        // busy connection does not touch the timer wheel per message.
        let timer = sleep_until(self.wake_at(next_ping, last_heard));
        let mut timer = pin!(timer);
        // Polled only when it may have fired (crate::poll_gate): not once
        // per delivery.
        let mut timer_gate = PollGate::default();
        loop {
            // One poll function for the three sources, in this order: the
            // queue first (what to write wins over what to read), then the
            // socket, then the timer. A batch is written right here, inside
            // the same poll, so a delivery costs no future of its own.
            let event = poll_fn(|cx| {
                if let Poll::Ready(close) = session.outbound().poll_batch(cx, &mut self.batch) {
                    return Poll::Ready(self.start_batch(cx, close));
                }
                if let Poll::Ready(read) = poll_read_into(&mut self.io, cx, &mut self.reader, chunk)
                {
                    return Poll::Ready(Event::Read(read));
                }
                if timer_gate
                    .poll(cx, timer.is_elapsed(), |cx| timer.as_mut().poll(cx))
                    .is_ready()
                {
                    return Poll::Ready(Event::Timer);
                }
                Poll::Pending
            })
            .await;
            match event {
                Event::Written(written, closing) => {
                    self.end_batch();
                    written?;
                    if closing {
                        self.await_close_reply().await;
                        return Ok(());
                    }
                }
                Event::Stalled { closing } => {
                    let written = self.finish_batch(write_timeout).await;
                    self.end_batch();
                    written?;
                    if closing {
                        self.await_close_reply().await;
                        return Ok(());
                    }
                }
                Event::Read(Ok(0)) => return Ok(()), // the client went away
                Event::Read(Ok(_)) => {
                    last_heard = Instant::now();
                    loop {
                        let incoming = match self.reader.read() {
                            Ok(Some(incoming)) => incoming,
                            Ok(None) => break,
                            Err(error) => {
                                let error = self.read_error(error);
                                return Box::pin(self.fail(error)).await;
                            }
                        };
                        match incoming {
                            Incoming::Ping(payload) => {
                                // Seen by `on_message` too (pings count
                                // against the client's rate).
                                if let Err(error) = on_message(FromClient::Ping) {
                                    return Box::pin(self.fail(error)).await;
                                }
                                self.write(&[frame::pong(&payload)], write_timeout).await?;
                            }
                            Incoming::Close(close) => {
                                // Echo the client's code (RFC 6455 section
                                // 5.5.1), or 1002 for one it may not send.
                                let code = close.map(|c| {
                                    if c.code_is_allowed() {
                                        c.code
                                    } else {
                                        close_code::PROTOCOL_ERROR
                                    }
                                });
                                let _ = self.write(&[frame::close(code, "")], write_timeout).await;
                                return Ok(());
                            }
                            Incoming::Text(text) => {
                                if let Err(error) = on_message(FromClient::Text(text)) {
                                    return Box::pin(self.fail(error)).await;
                                }
                            }
                            Incoming::Binary(data) => {
                                if let Err(error) = on_message(FromClient::Binary(data)) {
                                    return Box::pin(self.fail(error)).await;
                                }
                            }
                            Incoming::Pong(_) => {
                                if let Err(error) = on_message(FromClient::Pong) {
                                    return Box::pin(self.fail(error)).await;
                                }
                            }
                        }
                    }
                    // A refresh may have brought the expiry forward.
                    let wake = self.wake_at(next_ping, last_heard);
                    if wake < timer.deadline() {
                        timer.as_mut().reset(wake);
                        timer_gate.rearm();
                    }
                }
                Event::Read(Err(error)) => return Err(SessionError::Read(error.to_string())),
                Event::Timer => {
                    let now = Instant::now();
                    let expiry = session.claims().time_left().map(|left| now + left);
                    if expiry.is_some_and(|at| at <= now) {
                        hub.metrics().count_auth_rejection("token_expired");
                        return Box::pin(self.fail(SessionError::TokenExpired)).await;
                    }
                    if last_heard + config.pong_wait <= now {
                        return Err(SessionError::PongTimeout(config.pong_wait));
                    }
                    if next_ping <= now {
                        self.write(&[frame::ping()], write_timeout).await?;
                        next_ping = now + config.ping_period;
                    }
                    timer.as_mut().reset(self.wake_at(next_ping, last_heard));
                    timer_gate.rearm();
                }
            }
        }
    }

    /// When the timer must fire next: the next ping, the end of the pong
    /// wait, or the token's expiry, whichever is first.
    fn wake_at(&self, next_ping: Instant, last_heard: Instant) -> Instant {
        let config = self.hub.config();
        let pong_deadline = last_heard + config.pong_wait;
        let mut wake = next_ping.min(pong_deadline);
        if let Some(left) = self.session.claims().time_left() {
            wake = wake.min(Instant::now() + left);
        }
        wake
    }

    /// Starts writing the batch just taken (with the close, if `close`),
    /// in order: each message as this member gets it (the shared bytes
    /// themselves, lent by the message), repeats of the backlog skipped,
    /// then the close. Nothing is copied or collected: the frames are read
    /// from the batch as the write's slices are built.
    fn start_batch(&mut self, cx: &mut Context<'_>, close: Option<CloseReason>) -> Event {
        let closing = close.is_some();
        if let Some(close) = &close {
            tracing::debug!(code = close.kind.websocket_code(), reason = %close.reason, "closing");
        }
        let offsets = &mut self.offsets;
        // Repeats of what the backlog already sent go. (A batch of
        // unpositioned messages, raw groups', is not touched.)
        if self.batch.iter().any(|queued| queued.stamp().is_some()) {
            self.batch
                .retain(|queued| queued.stamp().is_none_or(|stamp| offsets.is_new(stamp)));
        }
        self.close =
            close.map(|close| frame::close(Some(close.kind.websocket_code()), &close.reason));
        self.sent = Progress::default();
        let frames = BatchFrames {
            batch: &self.batch,
            protocol: self.session.protocol(),
            compression: self.compression.as_ref(),
            close: self.close.as_ref(),
        };
        match poll_write_frames(&mut self.io, cx, &frames, &mut self.sent) {
            Poll::Ready(written) => Event::Written(written, closing),
            Poll::Pending => Event::Stalled { closing },
        }
    }

    /// Writes the rest of a batch that the socket did not take at once,
    /// failing past `limit` (counted).
    async fn finish_batch(&mut self, limit: Duration) -> Result<(), SessionError> {
        let Connection {
            io,
            batch,
            close,
            sent,
            session,
            compression,
            hub,
            ..
        } = self;
        let frames = BatchFrames {
            batch,
            protocol: session.protocol(),
            compression: compression.as_ref(),
            close: close.as_ref(),
        };
        let written = timeout(
            limit,
            poll_fn(|cx| poll_write_frames(io, cx, &frames, sent)),
        )
        .await
        .unwrap_or(Err(SessionError::WriteTimeout(limit)));
        if matches!(written, Err(SessionError::WriteTimeout(_))) {
            hub.metrics().write_timeouts.inc();
        }
        written
    }

    /// After a batch's write: its messages go (the deque is kept for the
    /// next batch, unless a burst made it large).
    fn end_batch(&mut self) {
        self.batch.clear();
        if self.batch.capacity() > SPARE_CAPACITY {
            self.batch = VecDeque::new();
        }
        self.close = None;
    }

    /// Writes `batch` (then `close`) within `limit`: for a connection that
    /// is failing, outside the loop.
    async fn write_batch(
        &mut self,
        batch: VecDeque<Queued>,
        close: Option<CloseReason>,
        limit: Duration,
    ) -> Result<(), SessionError> {
        self.end_batch();
        self.batch = batch;
        let mut close = close;
        let written = poll_fn(|cx| match self.start_batch(cx, close.take()) {
            Event::Written(written, _) => Poll::Ready(Some(written)),
            _ => Poll::Ready(None),
        })
        .await;
        let written = match written {
            Some(written) => written,
            None => self.finish_batch(limit).await,
        };
        self.end_batch();
        written
    }

    /// Writes `frames` (control frames) within `limit`.
    async fn write(&mut self, frames: &[Bytes], limit: Duration) -> Result<(), SessionError> {
        write_frames(
            &mut self.io,
            &self.hub.metrics().write_timeouts,
            frames,
            limit,
        )
        .await
    }

    /// Ends the connection for `error`: the frames queued so far, then a
    /// close frame with the error's code, if it has one. (Called boxed:
    /// a rare path whose state should not be part of every connection.)
    async fn fail(&mut self, error: SessionError) -> Result<(), SessionError> {
        if let Some(kind) = error.close_kind() {
            self.session
                .close_with(CloseReason::new(kind, error.to_string()));
            let Batch {
                frames: batch,
                close,
            } = self.session.outbound().take();
            let write_timeout = self.hub.config().write_timeout;
            let _ = self.write_batch(batch, close, write_timeout).await;
        }
        Err(error)
    }

    /// The session's error for what the reader refused, closed with the
    /// code the reader gives it (`ReadError::close_code`), counted.
    fn read_error(&self, error: ReadError) -> SessionError {
        use crate::wire::deflate::InflateError;
        let hub = self.hub;
        let too_big = |hub: &Hub| {
            let limit = hub.config().max_message_size;
            hub.count_limit(&crate::limits::LimitRejection::MessageSize { limit });
            SessionError::MessageTooBig { limit }
        };
        match error {
            ReadError::TooBig { .. } => too_big(hub),
            ReadError::Inflate(InflateError::TooBig { .. }) => {
                hub.metrics().inflate_too_big.inc();
                too_big(hub)
            }
            ReadError::Inflate(InflateError::Corrupt(reason)) => {
                SessionError::BadCompression(reason)
            }
            ReadError::InvalidUtf8 => SessionError::InvalidUtf8,
            ReadError::Protocol(reason) => SessionError::Protocol(reason.to_string()),
        }
    }

    /// After our close frame: give the client a moment to answer it, so
    /// that it sees a clean close, then let the connection go.
    async fn await_close_reply(&mut self) {
        let reply = async {
            loop {
                let read = poll_fn(|cx| {
                    poll_read_into(&mut self.io, cx, &mut self.reader, MAX_READ_CHUNK)
                })
                .await;
                if !matches!(read, Ok(n) if n > 0) {
                    return;
                }
                loop {
                    match self.reader.read() {
                        Ok(Some(Incoming::Close(_))) | Err(_) => return,
                        Ok(Some(_)) => {} // data after our close is dropped
                        Ok(None) => break,
                    }
                }
            }
        };
        let _ = timeout(CLOSE_GRACE, reply).await;
    }
}

/// Reads what the socket has (at most `chunk` bytes) into a stack buffer
/// and feeds it to the reader. Nothing is allocated while the socket has
/// nothing to read, and nothing is zeroed either: this runs on every wake
/// of the connection, and a socket that is not readable answers from its
/// readiness flags without a system call. `Ok(0)`: the client closed its
/// side.
fn poll_read_into<S: AsyncRead + Unpin>(
    io: &mut S,
    cx: &mut Context<'_>,
    reader: &mut FrameReader,
    chunk: usize,
) -> Poll<io::Result<usize>> {
    let mut buffer = [MaybeUninit::<u8>::uninit(); MAX_READ_CHUNK];
    let mut buf = ReadBuf::uninit(&mut buffer[..chunk.min(MAX_READ_CHUNK)]);
    ready!(Pin::new(io).poll_read(cx, &mut buf))?;
    let read = buf.filled();
    reader.feed(read);
    Poll::Ready(Ok(read.len()))
}

/// A batch's frames as one member gets them, then the close, if any.
struct BatchFrames<'a> {
    batch: &'a VecDeque<Queued>,
    protocol: crate::protocol::Protocol,
    compression: Option<&'a Compression>,
    close: Option<&'a Bytes>,
}

impl WriteFrames for BatchFrames<'_> {
    fn count(&self) -> usize {
        self.batch.len() + usize::from(self.close.is_some())
    }

    fn frame(&self, index: usize) -> &[u8] {
        match self.batch.get(index) {
            Some(queued) => encoding::frame_for(queued, self.protocol, self.compression),
            // `count` admits one index past the batch only with a close.
            None => self.close.map_or(&[], |close| &close[..]),
        }
    }
}
