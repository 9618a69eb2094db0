//! Gives freed heap back to the operating system once the caches have shrunk.
//!
//! glibc's allocator keeps freed memory mapped in its per-thread arenas. After a burst of deletions or a relist
//! (when a whole cache generation is dropped), and once things are quiet, `malloc_trim` releases the free pages.
//! Measured with the `make bench` soak (ten cycles of 1,000 Clusters created and deleted): RSS after each cycle
//! settles at about 19 MiB with the trim and 26 MiB without. Elsewhere (the static musl release build returns freed
//! memory by itself) this does nothing.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Time without a new request before trimming: deletions come in bursts (a namespace, a garbage-collected tree).
const QUIET: Duration = Duration::from_secs(1);

/// Asks for a trim once the current burst is over; cheap to clone and to call on every deletion.
#[derive(Debug, Clone)]
pub struct Trimmer {
    notify: Arc<Notify>,
    trims: Arc<AtomicU64>,
    release: fn() -> bool,
    quiet: Duration,
}

impl Default for Trimmer {
    fn default() -> Self {
        Self {
            notify: Arc::default(),
            trims: Arc::default(),
            release: release_free_memory,
            quiet: QUIET,
        }
    }
}

impl Trimmer {
    /// Trims done so far.
    pub fn trims(&self) -> u64 {
        self.trims.load(Ordering::Relaxed)
    }

    /// Requests a trim after the next quiet second.
    pub fn request(&self) {
        self.notify.notify_one();
    }

    /// Serves requests until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.notify.notified() => {}
            }
            // Wait for a quiet second: every request during the wait restarts it.
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.notify.notified() => continue,
                    _ = tokio::time::sleep(self.quiet) => break,
                }
            }
            let released = (self.release)();
            self.trims.fetch_add(1, Ordering::Relaxed);
            let (in_use, free) = heap_usage();
            tracing::debug!(
                released,
                heap_in_use_bytes = in_use,
                heap_free_bytes = free,
                "returned freed heap to the OS"
            );
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_memory() -> bool {
    // SAFETY: malloc_trim takes no pointers and only walks the allocator's own free lists under its locks.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() -> bool {
    false
}

/// Bytes allocated and bytes free inside the allocator's arenas.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap_usage() -> (usize, usize) {
    // SAFETY: mallinfo2 takes no arguments and returns a plain struct by value.
    let info = unsafe { libc::mallinfo2() };
    (info.uordblks, info.fordblks)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap_usage() -> (usize, usize) {
    (0, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_of_requests_trims_once_after_a_quiet_second() {
        const QUIET: Duration = Duration::from_millis(300);
        let t = Trimmer {
            release: || true,
            quiet: QUIET,
            ..Trimmer::default()
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(t.clone().run(shutdown.clone()));
        for _ in 0..30 {
            t.request();
            tokio::time::sleep(QUIET / 30).await;
        }
        assert_eq!(t.trims(), 0, "no trim while deletions keep coming");
        tokio::time::sleep(QUIET * 3).await;
        assert_eq!(t.trims(), 1, "one trim for the whole burst");
        tokio::time::sleep(QUIET * 4).await;
        assert_eq!(t.trims(), 1, "nothing without a request");
        t.request();
        tokio::time::sleep(QUIET * 2).await;
        assert_eq!(t.trims(), 2);
        shutdown.cancel();
        task.await.unwrap();
    }

    #[test]
    fn trimming_is_safe_to_call_any_time() {
        let v: Vec<Vec<u8>> = (0..1000).map(|i| vec![0u8; 1000 + i]).collect();
        drop(v);
        let _ = release_free_memory();
    }
}
