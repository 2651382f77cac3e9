//! Polling a source only when it may be ready.
//!
//! A loop that waits on several sources at once (`tokio::select!`) polls
//! every one of them each time it wakes. For a source that is rarely ready
//! — a timer, a cancellation, a watch — that poll does nothing but register
//! the same waker again, and registering is not free: a `Notify` takes its
//! lock, a timer its waker cell. On a hot loop (a connection's per-delivery
//! wake, the subscriber's per-message wake) those polls add up to a large
//! part of the loop's own work.
//!
//! Every such source keeps the waker it was last polled with and wakes it
//! when it becomes ready. So a source need not be polled again while
//! nothing changed: the waker it holds would wake this task, and the task
//! can ask the source, cheaply and without registering anything, whether
//! it has become ready (a timer's `is_elapsed`, a token's `is_cancelled`,
//! a channel's `is_empty`). [`PollGate`] keeps that bookkeeping: poll when
//! the source was never polled, when the task's waker is not the one the
//! source holds, when the source was re-armed (a timer reset), or when the
//! source says it may be ready.

use std::task::{Context, Waker};

/// Whether one source must be polled on this wake. See the module docs.
#[derive(Debug, Default)]
pub(crate) struct PollGate {
    /// The waker the source was last polled with; `None`: poll it.
    waker: Option<Waker>,
}

impl PollGate {
    /// Whether to poll the source now: `may_be_ready` is the source's own
    /// cheap answer (true when unsure).
    pub(crate) fn should_poll(&self, cx: &Context<'_>, may_be_ready: bool) -> bool {
        may_be_ready
            || !self
                .waker
                .as_ref()
                .is_some_and(|waker| waker.will_wake(cx.waker()))
    }

    /// The source was polled with `cx` and is pending: it holds this
    /// task's waker now.
    pub(crate) fn polled(&mut self, cx: &Context<'_>) {
        if !self
            .waker
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            self.waker = Some(cx.waker().clone());
        }
    }

    /// The source was re-armed (a timer reset) or replaced: poll it next
    /// time.
    pub(crate) fn rearm(&mut self) {
        self.waker = None;
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

    #[test]
    fn polls_first_then_only_when_ready_rearmed_or_woken_differently() {
        let first = Waker::from(Arc::new(Counting(AtomicUsize::new(0))));
        let other = Waker::from(Arc::new(Counting(AtomicUsize::new(0))));
        let cx = Context::from_waker(&first);
        let mut gate = PollGate::default();
        assert!(gate.should_poll(&cx, false), "never polled");
        gate.polled(&cx);
        assert!(!gate.should_poll(&cx, false), "same waker, not ready");
        assert!(gate.should_poll(&cx, true), "the source may be ready");
        let other_cx = Context::from_waker(&other);
        assert!(gate.should_poll(&other_cx, false), "another waker");
        gate.rearm();
        assert!(gate.should_poll(&cx, false), "re-armed");
    }
}
