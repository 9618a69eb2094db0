//! kube-runtime wiring: one watch per kind feeding reflector caches, a trigger stream mapping every change to the
//! Clusters it concerns, and the reconcile (gather → plan → act).

mod act;
pub mod error;
pub mod events;
pub mod memory;
pub mod stores;
mod triggers;
pub mod trim;
pub mod views;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use futures::{future, stream, StreamExt};
use kube::{
    api::DynamicObject,
    runtime::{
        applier,
        controller::{Action, ReconcileRequest},
        reflector::ObjectRef,
    },
    Client,
};
use tokio_util::sync::CancellationToken;

pub use error::Error;
use memory::{Memory, Slot};
pub use stores::Stores;

use crate::{
    api::{ApiShapes, ClusterView},
    plan::{self, Severity, Skip},
    telemetry::Metrics,
};

/// Long safety requeue after a successful reconcile (every input is watched; this only covers missed events).
pub const SAFETY_REQUEUE: Duration = Duration::from_secs(600);

/// Failure kind of stale-cache errors in the per-Cluster memory.
const STALE: &str = "stale";

/// Consecutive stale-cache failures after which a Cluster's write is reported (`PatchFailed`) and retried slowly:
/// a cache catches up within a few retries, so more means the write cannot succeed as built.
const STALE_LIMIT: u32 = 8;

/// Retry interval of a write that keeps failing its guard.
const STUCK_RETRY: Duration = Duration::from_secs(60);

/// Safety requeue while the cache has not caught up with our own Cluster patch.
const OWN_WRITE_WAIT: Duration = Duration::from_secs(2);

/// The source of time.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> jiff::Timestamp;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }
}

/// Settings from the command line that the rules need.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `--default-port`.
    pub default_port: u16,
    /// `--pool-allowlist`: pool names the operator may use (empty: any pool with matching labels).
    pub pool_allowlist: Vec<String>,
    /// `--max-concurrent-reconciles`.
    pub max_concurrent_reconciles: u16,
}

/// Readiness flags shared with `/readyz`.
#[derive(Debug, Default)]
pub struct Health {
    synced: AtomicBool,
    running: AtomicBool,
}

impl Health {
    /// Caches synced and controller running.
    pub fn ready(&self) -> bool {
        self.synced.load(Ordering::SeqCst) && self.running.load(Ordering::SeqCst)
    }

    /// Marks readiness (used when the reconciler is disabled, and by the controller).
    pub fn set(&self, synced: bool, running: bool) {
        self.synced.store(synced, Ordering::SeqCst);
        self.running.store(running, Ordering::SeqCst);
    }
}

/// Everything reconcile needs, shared by `Arc`.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Served versions.
    pub shapes: ApiShapes,
    /// Event publisher (events.k8s.io/v1).
    pub events: events::Publisher,
    /// Counters and histograms.
    pub metrics: Arc<Metrics>,
    /// The caches.
    pub stores: Stores,
    /// Flags.
    pub settings: Settings,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Per-Cluster Event state and failure counts.
    pub memory: Memory,
    /// Gives freed heap back after deletions.
    pub trimmer: trim::Trimmer,
}

/// The reconcile: gather → plan → act → report.
async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let cluster = match ClusterView::parse(&obj) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "skipping malformed Cluster");
            return Ok(Action::await_change());
        }
    };
    let class = cluster
        .class
        .as_ref()
        .map(|c| c.name.clone())
        .unwrap_or_default();
    let result = reconcile_cluster(&ctx, cluster.clone(), &class).await;
    let label = match &result {
        Ok((Some(_), _)) => crate::names::results::SKIPPED,
        Ok((None, _)) => crate::names::results::SUCCESS,
        Err(_) => crate::names::results::ERROR,
    };
    ctx.metrics
        .reconciled(&class, label, started.elapsed().as_secs_f64());
    match result {
        Ok((_, requeue_after)) => {
            ctx.memory.succeeded(&cluster.uid);
            ctx.memory.transition(&cluster.uid, Slot::Write, None);
            Ok(Action::requeue(requeue_after.unwrap_or(SAFETY_REQUEUE)))
        }
        Err(e) => {
            // A guard that keeps failing is no longer a cache catching up: say so, once, and slow down.
            let stuck = matches!(e, Error::Stale(_))
                && ctx.memory.failures(&cluster.uid, STALE) + 1 >= STALE_LIMIT;
            let reason = e
                .user_reason()
                .or(stuck.then_some(crate::names::reasons::PATCH_FAILED));
            if let Some(reason) = reason {
                if ctx
                    .memory
                    .transition(&cluster.uid, Slot::Write, Some(reason))
                {
                    let role = e.role().unwrap_or(plan::Role::ControlPlane);
                    ctx.metrics.error(role.label(), &class, reason);
                    let note = if stuck {
                        format!(
                            "{e} ({STALE_LIMIT} attempts in a row; retrying every {STUCK_RETRY:?})"
                        )
                    } else {
                        e.to_string()
                    };
                    act::publish(&ctx, &cluster, Severity::Warning, reason, note);
                }
            }
            Err(e)
        }
    }
}

#[tracing::instrument(name = "reconcile", skip_all, fields(cluster = %cluster.name, ns = %cluster.namespace))]
async fn reconcile_cluster(
    ctx: &Context,
    cluster: ClusterView,
    class: &str,
) -> Result<(Option<Skip>, Option<Duration>), Error> {
    if ctx
        .memory
        .cache_behind_our_write(&cluster.uid, &cluster.resource_version)
    {
        // Our last patch has not reached the cache; acting on the older copy would only fail its guards.
        // The watch event of that patch triggers the next reconcile; the requeue is a safety net.
        tracing::debug!("cache behind our own write; waiting for it");
        return Ok((None, Some(OWN_WRITE_WAIT)));
    }
    let snapshot = ctx
        .stores
        .snapshot(cluster, ctx.settings.default_port, ctx.clock.now());
    let plan = plan::plan(&snapshot);
    if let Some(skip) = plan.skip {
        tracing::debug!(?skip, "cluster skipped");
        return Ok((Some(skip), None));
    }
    let outcome = act::act(ctx, &snapshot.cluster, class, &plan).await?;
    act::report(ctx, &snapshot.cluster, class, &plan).await;
    if outcome.claim_writes > 0 || outcome.patched {
        tracing::debug!(
            claim_writes = outcome.claim_writes,
            patched = outcome.patched,
            "reconciled"
        );
    }
    let requeue_after = if outcome.waiting_for_cache {
        Some(
            plan.requeue_after
                .map_or(OWN_WRITE_WAIT, |d| d.min(OWN_WRITE_WAIT)),
        )
    } else {
        plan.requeue_after
    };
    Ok((None, requeue_after))
}

fn error_policy(obj: Arc<DynamicObject>, err: &Error, ctx: Arc<Context>) -> Action {
    let uid = obj.metadata.uid.clone().unwrap_or_default();
    let kind = match err {
        Error::Stale(_) => STALE,
        Error::Transient { .. } => "transient",
        Error::PatchRejected { .. } | Error::ClaimRejected { .. } => "rejected",
    };
    let attempt = ctx.memory.failed(&uid, kind);
    let name = obj.metadata.name.as_deref().unwrap_or_default();
    match err {
        // The watch brings the newer object at once; retry soon.
        Error::Stale(_) if attempt + 1 < STALE_LIMIT => {
            tracing::debug!(cluster = name, error = %err, "stale cache, retrying");
            Action::requeue(error::backoff(
                attempt,
                Duration::from_millis(50),
                Duration::from_secs(5),
            ))
        }
        Error::Stale(_) => {
            tracing::warn!(cluster = name, error = %err, attempts = attempt + 1, "write keeps failing its guard");
            Action::requeue(STUCK_RETRY)
        }
        Error::Transient { .. } => {
            tracing::warn!(cluster = name, error = %err, "transient error, backing off");
            Action::requeue(error::backoff(
                attempt,
                Duration::from_millis(200),
                Duration::from_secs(300),
            ))
        }
        // The user has to change something; the change will trigger us. Retry rarely meanwhile.
        Error::PatchRejected { .. } | Error::ClaimRejected { .. } => {
            tracing::warn!(cluster = name, error = %err, "request refused");
            Action::requeue(SAFETY_REQUEUE)
        }
    }
}

/// What the controller runs with; cheap to clone so a leadership gate can start it again.
#[derive(Clone)]
pub struct Runtime {
    /// API client.
    pub client: Client,
    /// Served versions.
    pub shapes: ApiShapes,
    /// Flags.
    pub settings: Settings,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Readiness flags.
    pub health: Arc<Health>,
    /// Where the scrape-time gauges find the current caches.
    pub gauge_stores: Arc<Mutex<Option<Stores>>>,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

/// Whether this replica may reconcile: `None` without leader election (always), else the elector's verdict.
pub type Leadership = Option<tokio::sync::watch::Receiver<bool>>;

type Request = Result<ReconcileRequest<DynamicObject>, kube::runtime::watcher::Error>;
type RequestSlot = Arc<Mutex<Option<futures::channel::mpsc::UnboundedSender<Request>>>>;

/// Runs the watches until `shutdown` is cancelled, and the reconciler whenever `leading` allows it.
///
/// The caches are kept on every replica (followers answer Runtime SDK hooks and serve gauges from them); only
/// reconciles, the sole writers, are gated. Each leadership term gets its own reconciler, started with every cached
/// Cluster and stopped (in-flight reconciles finished) as soon as leadership is lost or on shutdown.
pub async fn run(rt: Runtime, shutdown: CancellationToken, leading: Leadership) {
    let Runtime {
        client,
        shapes,
        settings,
        metrics,
        health,
        gauge_stores,
        clock,
    } = rt;
    let (stores, writers) = Stores::new(&shapes);
    let stores = stores.with_pool_allowlist(&settings.pool_allowlist);
    if let Ok(mut slot) = gauge_stores.lock() {
        *slot = Some(stores.clone());
    }
    let ctx = Arc::new(Context {
        events: events::Publisher::new(client.clone(), events::reporting_instance()),
        client: client.clone(),
        shapes: shapes.clone(),
        metrics,
        stores: stores.clone(),
        settings,
        clock,
        memory: Memory::default(),
        trimmer: trim::Trimmer::default(),
    });
    let trimming = ctx.trimmer.clone().run(shutdown.clone());

    let (relisted, relists) = futures::channel::mpsc::unbounded();
    let tracker = Arc::new(triggers::SyncTracker {
        seen: Default::default(),
        health: health.clone(),
        relisted,
        trimmer: ctx.trimmer.clone(),
    });
    let mut triggers = triggers::triggers(&client, &shapes, writers, &ctx, &tracker);
    triggers.push(triggers::on_relist(relists, &ctx));

    // The watches are polled for the whole run (that is what keeps the caches current); their reconcile requests
    // reach the reconciler of the current term, and are dropped while there is none.
    let slot: RequestSlot = Arc::default();
    let pump = {
        let slot = slot.clone();
        stream::select_all(triggers)
            .take_until(shutdown.clone().cancelled_owned())
            .for_each(move |req| {
                if let Some(tx) = slot.lock().ok().as_ref().and_then(|s| s.as_ref()) {
                    let _ = tx.unbounded_send(req);
                }
                future::ready(())
            })
    };
    let terms = async {
        match leading {
            None => term(&ctx, &slot, shutdown.clone()).await,
            Some(mut leading) => loop {
                let lead = tokio::select! {
                    _ = shutdown.cancelled() => false,
                    r = leading.wait_for(|l| *l) => r.is_ok(),
                };
                if !lead {
                    break;
                }
                let stop = shutdown.child_token();
                let mut reconciler = std::pin::pin!(term(&ctx, &slot, stop.clone()));
                tokio::select! {
                    _ = &mut reconciler => {}
                    // The elector only sends transitions: any change during a term ends it, so each term starts
                    // afresh (even a loss followed at once by re-election).
                    _ = leading.changed() => {
                        stop.cancel();
                        reconciler.await;
                        tracing::info!("leadership lost: reconciler stopped");
                    }
                }
                if shutdown.is_cancelled() {
                    break;
                }
            },
        }
    };
    futures::join!(pump, terms, trimming);
    health.set(false, false);
    tracing::info!("controller stopped");
}

/// One reconciler term: every cached Cluster once (work may have been left by a previous leader, and requests were
/// dropped while not leading), then every request the watches produce, until `stop`.
async fn term(ctx: &Arc<Context>, slot: &RequestSlot, stop: CancellationToken) {
    let (tx, rx) = futures::channel::mpsc::unbounded();
    for c in ctx.stores.clusters.state() {
        let _ = tx.unbounded_send(Ok(ReconcileRequest::from(ObjectRef::from_obj_with(
            c.as_ref(),
            ctx.shapes.cluster.clone(),
        ))));
    }
    if let Ok(mut s) = slot.lock() {
        *s = Some(tx);
    }
    applier(
        |obj, ctx| Box::pin(spawned(reconcile(obj, ctx))),
        error_policy,
        ctx.clone(),
        ctx.stores.clusters.clone(),
        rx.take_until(stop.cancelled_owned()),
        kube::runtime::Config::default().concurrency(ctx.settings.max_concurrent_reconciles),
    )
    .for_each(|res| {
        match res {
            Ok((obj, _)) => tracing::trace!(cluster = %obj.name, "reconciled"),
            Err(kube::runtime::controller::Error::ObjectNotFound(r)) => {
                tracing::debug!(%r, "object gone before reconcile")
            }
            Err(kube::runtime::controller::Error::ReconcilerFailed(e, r)) => {
                tracing::debug!(%r, error = %e, "reconcile failed")
            }
            Err(e) => tracing::warn!(error = %e, "controller error"),
        }
        future::ready(())
    })
    .await;
    if let Ok(mut s) = slot.lock() {
        *s = None;
    }
}

/// Runs the reconcile on the multi-threaded runtime; a panic becomes a transient error, not a dead controller.
async fn spawned(
    fut: impl std::future::Future<Output = Result<Action, Error>> + Send + 'static,
) -> Result<Action, Error> {
    match tokio::spawn(fut).await {
        Ok(r) => r,
        Err(e) => Err(Error::Stale(format!("reconcile task failed: {e}"))),
    }
}
