//! Polling a source only when it may be ready.
//!
//! A loop that waits on several sources at once (`tokio::select!`) polls
//! every one of them each time it wakes. For a source that is rarely ready
//! — a timer, a cancellation, a watch — that poll does nothing but register
//! the same waker again, and registering is not free: a `Notify` takes its
//! lock, a timer its waker cell. On a hot loop (a connection's
//! per-delivery wake) those polls add up to a large part of the loop's own
//! work.
//!
//! Every such source keeps the waker it was last polled with and wakes it
//! when it becomes ready. So a source need not be polled again while
//! nothing changed: the waker it holds would wake this task, and the task
//! can ask the source, cheaply and without registering anything, whether
//! it has become ready (a timer's `is_elapsed`, a token's `is_cancelled`,
//! a channel's `is_empty`). [`PollGate`] keeps that bookkeeping: poll when
//! the source was never polled, when the task's waker is not the one the
//! source holds, when the source was re-armed (a timer reset), when the
//! source says it may be ready, and after it was ready — the wake that
//! made a channel or a timer ready took the waker it held, so it holds
//! none until it is polled again.

use std::task::{Context, Poll, Waker};

/// Whether one source must be polled on this wake. See the module docs.
#[derive(Debug, Default)]
pub(crate) struct PollGate {
    /// The waker the source was last polled with; `None`: poll it.
    waker: Option<Waker>,
}

impl PollGate {
    /// Polls the source with `poll` if it must be polled on this wake
    /// (`may_be_ready` is the source's own cheap answer; true when unsure),
    /// and is pending otherwise. A pending source holds this task's waker
    /// from now on. A ready one may not: a channel's or a timer's wake
    /// takes the waker it held, so after `Ready` the gate polls the source
    /// again next time.
    pub(crate) fn poll<T>(
        &mut self,
        cx: &mut Context<'_>,
        may_be_ready: bool,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        if !may_be_ready && self.holds(cx) {
            return Poll::Pending;
        }
        let polled = poll(cx);
        match polled {
            Poll::Pending if !self.holds(cx) => self.waker = Some(cx.waker().clone()),
            Poll::Pending => {}
            Poll::Ready(_) => self.waker = None,
        }
        polled
    }

    /// The source was re-armed (a timer reset) or replaced: poll it next
    /// time.
    pub(crate) fn rearm(&mut self) {
        self.waker = None;
    }

    /// Whether the source holds this task's waker from its last poll.
    fn holds(&self, cx: &Context<'_>) -> bool {
        self.waker
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Counting(AtomicUsize);
    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Polls `gate` with a source that answers `answer`; whether the
    /// source was polled.
    fn polled(gate: &mut PollGate, cx: &mut Context<'_>, ready: bool, answer: Poll<()>) -> bool {
        let mut asked = false;
        let _ = gate.poll(cx, ready, |_| {
            asked = true;
            answer
        });
        asked
    }

    #[test]
    fn polls_first_then_only_when_ready_rearmed_woken_differently_or_after_ready() {
        let first = Waker::from(Arc::new(Counting(AtomicUsize::new(0))));
        let other = Waker::from(Arc::new(Counting(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&first);
        let mut gate = PollGate::default();
        assert!(
            polled(&mut gate, &mut cx, false, Poll::Pending),
            "never polled"
        );
        assert!(
            !polled(&mut gate, &mut cx, false, Poll::Pending),
            "same waker, not ready"
        );
        assert!(
            polled(&mut gate, &mut cx, true, Poll::Pending),
            "the source may be ready"
        );
        let mut other_cx = Context::from_waker(&other);
        assert!(
            polled(&mut gate, &mut other_cx, false, Poll::Pending),
            "another waker"
        );
        assert!(
            !polled(&mut gate, &mut other_cx, false, Poll::Pending),
            "holds the other now"
        );
        gate.rearm();
        assert!(
            polled(&mut gate, &mut other_cx, false, Poll::Pending),
            "re-armed"
        );
        // Ready: the wake may have taken the waker the source held.
        assert!(polled(&mut gate, &mut other_cx, true, Poll::Ready(())));
        assert!(
            polled(&mut gate, &mut other_cx, false, Poll::Pending),
            "polled after ready"
        );
    }
}
