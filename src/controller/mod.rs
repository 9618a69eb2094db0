//! kube-runtime wiring: one watch per kind feeding reflector caches, a trigger stream mapping every change to the
//! Clusters it concerns, and the reconcile (gather → plan → act).

mod act;
pub mod error;
pub mod events;
pub mod health;
pub mod hosts;
pub mod memory;
pub mod orphans;
pub mod pool_check;
pub mod probe;
pub mod stores;
mod triggers;
pub mod trim;
pub mod views;

use std::{
    sync::{Arc, Mutex},
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
pub use health::{Health, Limits, Stopped};
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
    /// `--vip-probe=tcp`: probe a freshly bound VIP before its first write.
    pub vip_probe: bool,
    /// `--pending-claim-timeout`.
    pub pending_claim_timeout: Duration,
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
    /// IPAddresses our finalizer may hold for Clusters that are gone, offered to the leader's releaser.
    pub orphans: orphans::Orphans,
    /// Rung on every pool event: the leader's overlap checker looks again.
    pub pool_check: pool_check::PoolCheck,
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
    let uid = cluster.uid.clone();
    let mut snapshot = ctx
        .stores
        .snapshot(cluster, ctx.settings.default_port, ctx.clock.now());
    snapshot.pending_claims.passed_over = ctx.memory.passed_over(&uid);
    let mut plan = plan::plan(&snapshot);
    if ctx.settings.vip_probe && !plan.allocations.is_empty() {
        // Facts for the rules: which of the VIPs about to be written answer already (a machine the IPAM does not
        // know). Then decide again with them.
        let port = snapshot
            .cluster
            .endpoint
            .as_ref()
            .and_then(|e| e.port)
            .filter(|p| *p > 0)
            .map_or(ctx.settings.default_port, |p| {
                u16::try_from(p).unwrap_or(ctx.settings.default_port)
            });
        let vips: Vec<String> = plan.allocations.iter().map(|a| a.vip.clone()).collect();
        let answered =
            futures::future::join_all(vips.iter().map(|v| probe::answers(v, port))).await;
        snapshot.answering = vips
            .into_iter()
            .zip(answered)
            .filter_map(|(v, a)| a.then_some(v))
            .collect();
        if !snapshot.answering.is_empty() {
            plan = plan::plan(&snapshot);
        }
    }
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
    /// API client for reads and writes (bounded read timeout).
    pub client: Client,
    /// API client for the watches (read timeout longer than a watch's server-side timeout).
    pub watch_client: Client,
    /// Served versions.
    pub shapes: ApiShapes,
    /// Flags.
    pub settings: Settings,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Probe state, and the runtime's bounds.
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
/// Cluster; when leadership is lost its in-flight reconciles are cancelled at once (no write of a former leader
/// lands after it noticed the loss); on shutdown they get [`Limits::shutdown_grace`] to finish.
///
/// Returns an error when the watches, the reconciler or the elector end before `shutdown`: the caller exits.
pub async fn run(
    rt: Runtime,
    shutdown: CancellationToken,
    leading: Leadership,
) -> Result<(), Stopped> {
    let Runtime {
        client,
        watch_client,
        shapes,
        settings,
        metrics,
        health,
        gauge_stores,
        clock,
    } = rt;
    let (stores, writers) = Stores::new(&shapes);
    let stores = stores
        .with_pool_allowlist(&settings.pool_allowlist)
        .with_pending_claim_timeout(settings.pending_claim_timeout);
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
        orphans: orphans::Orphans::default(),
        pool_check: pool_check::PoolCheck::default(),
    });
    let trim_stop = shutdown.child_token();
    let trimming = ctx.trimmer.clone().run(trim_stop.clone());

    let (relisted, relists) = futures::channel::mpsc::unbounded();
    let tracker = Arc::new(triggers::SyncTracker {
        seen: Default::default(),
        watches: triggers::WATCHES + u8::try_from(shapes.extra_pools.len()).unwrap_or(u8::MAX),
        health: health.clone(),
        relisted,
        trimmer: ctx.trimmer.clone(),
    });
    let mut triggers = triggers::triggers(&watch_client, &shapes, writers, &ctx, &tracker);
    triggers.push(triggers::on_relist(relists, &ctx));

    // The watches are polled for the whole run (that is what keeps the caches current); their reconcile requests
    // reach the reconciler of the current term, and are dropped while there is none (each term starts with every
    // cached Cluster, and every completed Cluster relist or sync re-checks them all).
    let slot: RequestSlot = Arc::default();
    let pump = {
        let slot = slot.clone();
        let health = health.clone();
        let shutdown = shutdown.clone();
        async move {
            stream::select_all(triggers)
                .take_until(shutdown.clone().cancelled_owned())
                .for_each(|req| {
                    if let Some(tx) = slot.lock().ok().as_ref().and_then(|s| s.as_ref()) {
                        if tx.unbounded_send(req).is_ok() {
                            health.request_queued();
                        }
                    }
                    future::ready(())
                })
                .await;
            if shutdown.is_cancelled() {
                Ok(())
            } else {
                Err(Stopped::Watches)
            }
        }
    };
    let terms = async {
        match leading {
            None => {
                let fault = health::fault_abort_reconciler_after();
                term(&ctx, &slot, &health, shutdown.clone(), &shutdown, fault).await
            }
            Some(mut leading) => {
                let mut fault = health::fault_abort_reconciler_after();
                loop {
                    let lead = tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        r = leading.wait_for(|l| *l) => r.is_ok(),
                    };
                    if !lead {
                        return Err(Stopped::Elector);
                    }
                    let stop = shutdown.child_token();
                    let mut reconciler = std::pin::pin!(term(
                        &ctx,
                        &slot,
                        &health,
                        stop.clone(),
                        &shutdown,
                        fault.take()
                    ));
                    tokio::select! {
                        r = &mut reconciler => r?,
                        // The elector only sends transitions: any change during a term ends it, so each term
                        // starts afresh (even a loss followed at once by re-election).
                        _ = leading.changed() => {
                            stop.cancel();
                            reconciler.await?;
                            tracing::info!("leadership lost: reconciler stopped, in-flight reconciles cancelled");
                        }
                    }
                    if shutdown.is_cancelled() {
                        return Ok(());
                    }
                }
            }
        }
    };
    let work = async {
        let mut pump = std::pin::pin!(pump);
        let mut terms = std::pin::pin!(terms);
        // Whichever ends first decides; an error ends the other at once.
        let result = tokio::select! {
            r = &mut pump => match r {
                Ok(()) => terms.await,
                Err(e) => Err(e),
            },
            r = &mut terms => match r {
                Ok(()) => pump.await,
                Err(e) => Err(e),
            },
        };
        trim_stop.cancel();
        result
    };
    let (result, ()) = futures::join!(work, trimming);
    health.set(false, false);
    match &result {
        Ok(()) => tracing::info!("controller stopped"),
        Err(e) => tracing::error!(error = %e, "controller failed"),
    }
    result
}

/// One reconciler term: every cached Cluster once (work may have been left by a previous leader, and requests were
/// dropped while not leading), then every request the watches produce, until `stop`. The reconciler runs as its
/// own task: when it ends before `stop` (panic, abort) the term fails. On `stop` during shutdown, in-flight
/// reconciles get the shutdown grace; on `stop` for a lost leadership they are cancelled at once.
async fn term(
    ctx: &Arc<Context>,
    slot: &RequestSlot,
    health: &Arc<Health>,
    stop: CancellationToken,
    shutdown: &CancellationToken,
    fault_abort_after: Option<Duration>,
) -> Result<(), Stopped> {
    let limits = health.limits();
    let (tx, rx) = futures::channel::mpsc::unbounded();
    // The slot first: a list that completes from now on re-checks every Cluster through it, so none falls between
    // the snapshot below and the slot.
    if let Ok(mut s) = slot.lock() {
        *s = Some(tx.clone());
    }
    let clusters = ctx.stores.clusters.state();
    tracing::info!(
        clusters = clusters.len(),
        caches_synced = health.synced(),
        "reconciler started"
    );
    if !health.synced() {
        tracing::info!(
            "reconciler waiting for the caches to sync; every Cluster is re-checked once they are"
        );
    }
    for c in clusters {
        let _ = tx.unbounded_send(Ok(ReconcileRequest::from(ObjectRef::from_obj_with(
            c.as_ref(),
            ctx.shapes.cluster.clone(),
        ))));
    }
    drop(tx);
    let deadline = limits.reconcile_timeout;
    let reconcile_health = health.clone();
    let progress_health = health.clone();
    let reconciler = applier(
        move |obj, ctx| {
            let cluster = format!(
                "{}/{}",
                obj.metadata.namespace.as_deref().unwrap_or_default(),
                obj.metadata.name.as_deref().unwrap_or_default()
            );
            // A reconcile cut off at its deadline never reports itself; count it as reconcile does an error.
            let class = ClusterView::parse(&obj)
                .ok()
                .and_then(|c| c.class.map(|r| r.name))
                .unwrap_or_default();
            let metrics = ctx.metrics.clone();
            let on_timeout = move |seconds: f64| {
                metrics.reconciled(&class, crate::names::results::ERROR, seconds)
            };
            Box::pin(spawned(
                reconcile(obj, ctx),
                reconcile_health.clone(),
                deadline,
                cluster,
                on_timeout,
            ))
        },
        error_policy,
        ctx.clone(),
        ctx.stores.clusters.clone(),
        rx.take_until(stop.clone().cancelled_owned()),
        kube::runtime::Config::default().concurrency(ctx.settings.max_concurrent_reconciles),
    )
    .for_each(move |res| {
        progress_health.reconciler_progressed();
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
    });
    let mut task = health::AbortOnDrop(tokio::spawn(reconciler));
    let _fault = fault_abort_after.map(|after| {
        let handle = task.0.abort_handle();
        health::AbortOnDrop(tokio::spawn(async move {
            tokio::time::sleep(after).await;
            tracing::warn!(
                env = health::ENV_FAULT_ABORT_RECONCILER,
                "fault injection: aborting the reconciler task"
            );
            handle.abort();
        }))
    });
    let mut releaser = health::AbortOnDrop(tokio::spawn(orphans::run(ctx.clone(), stop.clone())));
    let mut checker = health::AbortOnDrop(tokio::spawn(pool_check::run(ctx.clone(), stop.clone())));
    let ended = tokio::select! {
        r = &mut task.0 => Some(r),
        r = &mut checker.0 => side_task_ended(&stop, slot, "the pool overlap checker", r)?,
        r = &mut releaser.0 => side_task_ended(&stop, slot, "the IPAddress releaser", r)?,
        _ = stop.cancelled() => None,
    };
    if let Ok(mut s) = slot.lock() {
        *s = None;
    }
    let result = match ended {
        Some(_) if stop.is_cancelled() => Ok(()),
        Some(Ok(())) => Err(Stopped::Reconciler("its request stream ended".to_owned())),
        Some(Err(e)) => Err(Stopped::Reconciler(e.to_string())),
        None if shutdown.is_cancelled() => {
            // Shutdown: no new requests; in-flight reconciles get the grace, then are abandoned.
            match tokio::time::timeout(limits.shutdown_grace, &mut task.0).await {
                Ok(_) => {}
                Err(_) => {
                    let (started, finished) = health.reconcile_counts();
                    tracing::warn!(grace = ?limits.shutdown_grace, in_flight = started.saturating_sub(finished),
                        "shutdown grace passed; abandoning in-flight reconciles");
                    task.0.abort();
                }
            }
            Ok(())
        }
        None => {
            // Leadership lost: cancel in-flight reconciles (their requests are dropped) instead of finishing them.
            task.0.abort();
            let _ = (&mut task.0).await;
            Ok(())
        }
    };
    health.reconciler_progressed();
    result
}

/// A term's side task (releaser, overlap checker) ended: fine when the term is stopping, else the term fails (and the
/// process exits, so the Deployment restarts it).
fn side_task_ended(
    stop: &CancellationToken,
    slot: &RequestSlot,
    what: &str,
    r: Result<(), tokio::task::JoinError>,
) -> Result<Option<Result<(), tokio::task::JoinError>>, Stopped> {
    if stop.is_cancelled() {
        return Ok(None);
    }
    if let Ok(mut s) = slot.lock() {
        *s = None;
    }
    let why = match r {
        Ok(()) => "it ended".to_owned(),
        Err(e) => e.to_string(),
    };
    Err(Stopped::Reconciler(format!("{what} stopped: {why}")))
}

/// Runs the reconcile on the multi-threaded runtime, bounded by `deadline`. A panic becomes a stale-cache error
/// (retried soon), a reconcile past its deadline a transient one (retried with backoff); either way the reconcile
/// task is aborted, so none of its requests outlives it, and dropping this future (a cancelled term) aborts it too.
async fn spawned(
    fut: impl std::future::Future<Output = Result<Action, Error>> + Send + 'static,
    health: Arc<Health>,
    deadline: Duration,
    cluster: String,
    on_timeout: impl FnOnce(f64),
) -> Result<Action, Error> {
    let _in_flight = health.reconcile_started();
    let mut task = health::AbortOnDrop(tokio::spawn(fut));
    match tokio::time::timeout(deadline, &mut task.0).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(Error::Stale(format!("reconcile task failed: {e}"))),
        Err(_) => {
            task.0.abort();
            on_timeout(deadline.as_secs_f64());
            tracing::warn!(%cluster, ?deadline, "reconcile deadline passed; cancelled, retrying with backoff");
            Err(Error::Transient {
                action: format!("reconcile {cluster}"),
                source: Box::new(kube::Error::Service(Box::new(health::DeadlineExceeded(
                    deadline,
                )))),
            })
        }
    }
}
