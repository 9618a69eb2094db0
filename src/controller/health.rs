//! What `/readyz` and `/healthz` report, computed from the watches' and the reconciler's progress rather than set
//! once: ready = every cache synced, no watch failing or relisting for longer than [`Limits::watch_stall`], and
//! not shutting down; alive = the reconciler has made progress (a reconcile started or finished) within
//! [`Limits::liveness`] whenever it has work in flight or waiting.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

/// Default per-reconcile deadline: a reconcile is a handful of requests, each bounded by the request timeout.
pub const RECONCILE_TIMEOUT: Duration = Duration::from_secs(60);

/// Default grace for in-flight reconciles on SIGTERM. The shipped Deployment gives the pod 10 s
/// (`terminationGracePeriodSeconds`): 5 s of draining, at most 2 s to release the Lease and 1 s for the HTTP
/// servers leave room.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Default time a watch may fail or relist before the replica reports not ready.
pub const WATCH_STALL: Duration = Duration::from_secs(60);

/// An error run is over when no error followed for this long (kube's default watch backoff caps at 30 s).
const ERROR_RUN_QUIET: Duration = Duration::from_secs(35);

pub use crate::names::env::{
    FAULT_ABORT_RECONCILER as ENV_FAULT_ABORT_RECONCILER, LIVENESS_BOUND as ENV_LIVENESS_BOUND,
    RECONCILE_TIMEOUT as ENV_RECONCILE_TIMEOUT, SHUTDOWN_GRACE as ENV_SHUTDOWN_GRACE,
    WATCH_STALL as ENV_WATCH_STALL,
};

/// The fault-injection delay of [`ENV_FAULT_ABORT_RECONCILER`], if set and valid.
pub fn fault_abort_reconciler_after() -> Option<Duration> {
    let v = std::env::var(ENV_FAULT_ABORT_RECONCILER).ok()?;
    crate::cli::parse_go_duration(&v).ok()
}

/// A long-running part of the controller ended before shutdown was requested; the process must exit non-zero.
#[derive(Debug, thiserror::Error)]
pub enum Stopped {
    /// Every watch stream ended.
    #[error("the watches stopped on their own")]
    Watches,
    /// The reconciler task ended or was killed.
    #[error("the reconciler stopped unexpectedly: {0}")]
    Reconciler(String),
    /// The leader elector ended.
    #[error("the leader elector stopped unexpectedly")]
    Elector,
}

/// A reconcile that ran past its deadline (reported as a transient error, so it is retried with backoff).
#[derive(Debug, thiserror::Error)]
#[error("reconcile did not finish within {0:?}; its requests were abandoned")]
pub struct DeadlineExceeded(pub Duration);

/// Aborts the task when dropped: cancelling the owner cancels the work (a plain `JoinHandle` would detach it).
#[derive(Debug)]
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The bounds the runtime enforces and the probes report against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A reconcile running longer is cancelled and retried with backoff.
    pub reconcile_timeout: Duration,
    /// `/healthz` fails when work is pending and no reconcile started or finished for this long.
    pub liveness: Duration,
    /// `/readyz` fails when a watch has been failing or relisting for this long.
    pub watch_stall: Duration,
    /// On SIGTERM, in-flight reconciles get this long before they are abandoned.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            reconcile_timeout: RECONCILE_TIMEOUT,
            liveness: RECONCILE_TIMEOUT * 2,
            watch_stall: WATCH_STALL,
            shutdown_grace: SHUTDOWN_GRACE,
        }
    }
}

impl Limits {
    /// The defaults, overridden by the `CAPI_VIP_ALLOCATOR_*` environment variables above.
    pub fn from_env() -> Result<Self, String> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let read = |key: &str| -> Result<Option<Duration>, String> {
            get(key)
                .filter(|v| !v.trim().is_empty())
                .map(|v| crate::cli::parse_go_duration(&v).map_err(|e| format!("{key}: {e}")))
                .transpose()
        };
        let reconcile_timeout = read(ENV_RECONCILE_TIMEOUT)?.unwrap_or(RECONCILE_TIMEOUT);
        if reconcile_timeout.is_zero() {
            return Err(format!("{ENV_RECONCILE_TIMEOUT} must be greater than zero"));
        }
        Ok(Self {
            reconcile_timeout,
            liveness: read(ENV_LIVENESS_BOUND)?.unwrap_or(reconcile_timeout * 2),
            watch_stall: read(ENV_WATCH_STALL)?.unwrap_or(WATCH_STALL),
            shutdown_grace: read(ENV_SHUTDOWN_GRACE)?.unwrap_or(SHUTDOWN_GRACE),
        })
    }
}

/// One watch's trouble: since when it has been relisting or failing, and its last error.
#[derive(Debug, Default, Clone, Copy)]
struct WatchTrouble {
    listing_since: Option<Instant>,
    failing_since: Option<Instant>,
    last_error: Option<Instant>,
}

/// What a watch just reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchSignal {
    /// A (re)list started.
    ListStarted,
    /// The (re)list completed and the cache holds it.
    ListDone,
    /// A change arrived (the watch works).
    Event,
    /// A list or watch request failed.
    Error,
}

/// Number of watches the health tracks (one per kind).
pub const WATCH_COUNT: usize = 5;

/// The kinds of the watches, by index (the order `triggers` numbers them in), for `/readyz` answers.
const WATCH_KINDS: [&str; WATCH_COUNT] = [
    "Cluster",
    "IPAddressClaim",
    "IPAddress",
    "ClusterClass",
    "pool",
];

/// Probe state shared by the controller, the HTTP server and the hook server.
#[derive(Debug)]
pub struct Health {
    synced: AtomicBool,
    running: AtomicBool,
    limits: Limits,
    watches: Mutex<[WatchTrouble; WATCH_COUNT]>,
    /// Reconciles in flight.
    in_flight: AtomicU64,
    /// Requests handed to the reconciler not yet followed by a reconcile start (a lower bound of the queue).
    pending_since: Mutex<Option<Instant>>,
    last_progress: Mutex<Instant>,
    started: AtomicU64,
    finished: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl Health {
    /// Nothing synced yet.
    pub fn new(limits: Limits) -> Self {
        Self {
            synced: AtomicBool::new(false),
            running: AtomicBool::new(false),
            limits,
            watches: Mutex::new([WatchTrouble::default(); WATCH_COUNT]),
            in_flight: AtomicU64::new(0),
            pending_since: Mutex::new(None),
            last_progress: Mutex::new(Instant::now()),
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
        }
    }

    /// The bounds in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Every cache received its initial list.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }

    /// Caches synced, controller running, and no watch stalled.
    pub fn ready(&self) -> bool {
        self.why_not_ready(Instant::now()).is_none()
    }

    /// Why `/readyz` fails, if it does.
    pub fn why_not_ready(&self, now: Instant) -> Option<String> {
        if !self.synced.load(Ordering::SeqCst) {
            return Some("caches not synced".to_owned());
        }
        if !self.running.load(Ordering::SeqCst) {
            return Some("controller not running".to_owned());
        }
        let watches = self.watches.lock().ok()?;
        for (w, kind) in watches.iter().zip(WATCH_KINDS) {
            if let Some(since) = w.listing_since {
                if now.saturating_duration_since(since) >= self.limits.watch_stall {
                    return Some(format!(
                        "the {} watch has been relisting for {:?}",
                        kind,
                        now.saturating_duration_since(since)
                    ));
                }
            }
            if let (Some(since), Some(last)) = (w.failing_since, w.last_error) {
                let recent = now.saturating_duration_since(last) < ERROR_RUN_QUIET;
                if recent && now.saturating_duration_since(since) >= self.limits.watch_stall {
                    return Some(format!(
                        "the {} watch has been failing for {:?}",
                        kind,
                        now.saturating_duration_since(since)
                    ));
                }
            }
        }
        None
    }

    /// Marks readiness (used when the reconciler is disabled, and by the controller).
    pub fn set(&self, synced: bool, running: bool) {
        self.synced.store(synced, Ordering::SeqCst);
        self.running.store(running, Ordering::SeqCst);
    }

    /// Records what watch `index` reported.
    pub fn watch(&self, index: usize, signal: WatchSignal) {
        self.watch_at(index, signal, Instant::now());
    }

    fn watch_at(&self, index: usize, signal: WatchSignal, now: Instant) {
        let Ok(mut watches) = self.watches.lock() else {
            return;
        };
        let Some(w) = watches.get_mut(index) else {
            return;
        };
        match signal {
            WatchSignal::ListStarted => {
                w.listing_since.get_or_insert(now);
            }
            WatchSignal::ListDone => *w = WatchTrouble::default(),
            WatchSignal::Event => {
                w.failing_since = None;
                w.last_error = None;
            }
            WatchSignal::Error => {
                let run_over = w
                    .last_error
                    .is_none_or(|l| now.saturating_duration_since(l) >= ERROR_RUN_QUIET);
                if run_over {
                    w.failing_since = Some(now);
                }
                w.last_error = Some(now);
            }
        }
    }

    /// A request was handed to the reconciler (before the caches synced, waiting is expected and not counted).
    pub fn request_queued(&self) {
        if !self.synced() {
            return;
        }
        if let Ok(mut p) = self.pending_since.lock() {
            p.get_or_insert_with(Instant::now);
        }
    }

    /// A reconcile started; the guard marks it finished when dropped (also when cancelled).
    pub fn reconcile_started(self: &std::sync::Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.started.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut p) = self.pending_since.lock() {
            *p = None;
        }
        self.progress();
        InFlight(self.clone())
    }

    /// The reconciler handled a request (reconciled it, or found its object gone), or its term ended: nothing
    /// handed to it before is waiting unseen any more.
    pub fn reconciler_progressed(&self) {
        if let Ok(mut p) = self.pending_since.lock() {
            *p = None;
        }
        self.progress();
    }

    fn progress(&self) {
        if let Ok(mut t) = self.last_progress.lock() {
            *t = Instant::now();
        }
    }

    /// (started, finished) reconciles since start.
    pub fn reconcile_counts(&self) -> (u64, u64) {
        (
            self.started.load(Ordering::SeqCst),
            self.finished.load(Ordering::SeqCst),
        )
    }

    /// `/healthz`: why the reconciler is considered stuck, if it is.
    pub fn why_not_alive(&self, now: Instant) -> Option<String> {
        let in_flight = self.in_flight.load(Ordering::SeqCst);
        let pending = self.pending_since.lock().ok().and_then(|p| *p);
        if in_flight == 0 && pending.is_none() {
            return None;
        }
        let last = self.last_progress.lock().ok().map(|t| *t)?;
        let stalled_for = now.saturating_duration_since(last);
        if stalled_for < self.limits.liveness {
            return None;
        }
        let waiting = in_flight > 0
            || pending.is_some_and(|p| now.saturating_duration_since(p) >= self.limits.liveness);
        waiting.then(|| {
            format!(
                "reconciler made no progress for {stalled_for:?} with {in_flight} reconcile(s) in flight"
            )
        })
    }

    /// Whether `/healthz` should answer 200.
    pub fn alive(&self) -> bool {
        self.why_not_alive(Instant::now()).is_none()
    }
}

/// A reconcile in flight; dropping it records the reconcile as finished (progress).
#[derive(Debug)]
pub struct InFlight(std::sync::Arc<Health>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.finished.fetch_add(1, Ordering::SeqCst);
        self.0.progress();
    }
}

#[cfg(test)]
mod tests;
