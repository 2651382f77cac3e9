//! Giving memory back after a load has gone.
//!
//! Why: every connection allocates (its task, its buffers, its queue), and
//! glibc's allocator keeps what was freed in its arenas for the next
//! allocation rather than returning it to the kernel. After a burst of
//! thousands of connections has left, a node's RSS would stay at the
//! burst's high-water mark for good (measured: 8 MiB idle, 18 MiB after
//! 120,000 short connections had come and gone). `malloc_trim(0)` hands
//! the free pages back.
//!
//! When: not on a timer alone — trimming locks each arena briefly, and a
//! node under steady load gains nothing from it. The trimmer samples the
//! session count every few seconds and trims once the count has fallen
//! well below its high-water mark since the last trim: after a burst
//! leaves, after a drain, when the last client goes.

use std::time::Duration;

use crate::Hub;

/// How often the session count is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Trim once this many sessions (or a tenth of the high-water mark,
/// whichever is larger) have gone since the high-water mark.
const MIN_DROP: usize = 100;

/// Starts the trimmer for `hub`; it ends when the hub shuts down. Does
/// nothing where the allocator is not glibc's.
pub fn spawn_trimmer(hub: &Hub) {
    if !SUPPORTED {
        return;
    }
    let hub = hub.clone();
    let stop = hub.shutdown_token();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(SAMPLE_EVERY);
        let mut high = 0usize;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = stop.cancelled() => return,
            }
            let now = hub.session_count();
            high = high.max(now);
            if should_trim(high, now) {
                high = now;
                // Can take milliseconds on a large heap: not on a runtime
                // worker.
                let _ = tokio::task::spawn_blocking(trim).await;
            }
        }
    });
}

/// Whether the session count has fallen far enough below its high-water
/// mark for a trim to be worth it.
fn should_trim(high: usize, now: usize) -> bool {
    let dropped = high.saturating_sub(now);
    dropped > 0 && dropped >= MIN_DROP.max(high / 10)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
const SUPPORTED: bool = true;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
const SUPPORTED: bool = false;

fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim has no preconditions; 0 keeps no extra
        // padding at the top of the heap.
        let released = unsafe { libc::malloc_trim(0) };
        tracing::debug!(
            released = released != 0,
            "returned free memory to the kernel"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::should_trim;

    #[test]
    fn trims_only_after_a_real_drop() {
        assert!(!should_trim(0, 0));
        assert!(!should_trim(50, 0), "fewer than MIN_DROP sessions left");
        assert!(should_trim(100, 0));
        assert!(should_trim(2_000, 1_000));
        assert!(!should_trim(20_000, 19_000), "less than a tenth");
        assert!(should_trim(20_000, 17_000));
        assert!(!should_trim(1_000, 1_000));
    }
}
