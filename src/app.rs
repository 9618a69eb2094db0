//! Wiring: client, discovery, HTTP servers and the controller, all stopped by one cancellation token, and
//! supervised: any of them ending before shutdown ends the process with a non-zero code.
//!
//! Every request is bounded. kube 5 sets no read timeout, so the operator builds two clients from one config:
//! requests (gets, writes, Events, discovery, the Lease) get a [`REQUEST_TIMEOUT`] read timeout; watches, whose
//! streams legitimately stay quiet until the server closes them after `timeoutSeconds=290`, get
//! [`WATCH_READ_TIMEOUT`], just above kube's own watch idle timeout (290 s + 5 s), which bounds their list requests.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::http::{header::USER_AGENT, HeaderValue};
use kube::{
    config::{KubeConfigOptions, Kubeconfig},
    Client, Config,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    api::{discover, discover_pool_kinds, ApiShapes},
    cli::Args,
    controller::{self, Health, Settings, Stores, SystemClock},
    http::{self, HttpState},
    leader::{self, Elector, LeaderConfig},
    names::CONTROLLER_NAME,
    telemetry::{
        metrics::{GaugeSample, SampleSource},
        CacheGauges, Metrics,
    },
};

/// Read timeout of the request client: no single get or write of ours waits longer for an answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub use crate::names::env::REQUEST_TIMEOUT as ENV_REQUEST_TIMEOUT;

/// Read timeout of the watch client: above the watch's server-side 290 s and kube's 295 s idle timeout, so it
/// only fires for a list or watch request whose answer never comes.
pub const WATCH_READ_TIMEOUT: Duration = Duration::from_secs(300);

/// How long HTTP servers get to finish open connections once the controller has stopped (they have been draining
/// since the signal).
const HTTP_SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Bound on releasing the Lease at shutdown (it expires on its own otherwise), to fit the pod's grace period.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// Start-up failures (everything later is handled and logged).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Kubeconfig or client construction.
    #[error("kubernetes client: {0}")]
    Client(String),
    /// Bad flag value.
    #[error("{0}")]
    Flag(String),
    /// Metrics registry.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// HTTP server.
    #[error("HTTP server: {0}")]
    Http(#[from] std::io::Error),
    /// Runtime SDK hook server.
    #[error(transparent)]
    Hook(#[from] crate::hook::HookError),
    /// A task ended before shutdown was requested.
    #[error("{0}")]
    Stopped(String),
}

/// The user agent on every request: `capi-vip-allocator/<version>`.
pub fn user_agent() -> String {
    format!("{CONTROLLER_NAME}/{}", env!("CARGO_PKG_VERSION"))
}

/// Builds the request client from `--kubeconfig`, else `KUBECONFIG`/`~/.kube/config`/in-cluster.
pub async fn client(args: &Args) -> Result<Client, AppError> {
    client_as(args, &user_agent()).await
}

/// [`client`] with an explicit user agent (with leader election: `capi-vip-allocator/<version> (<identity>)`).
pub async fn client_as(args: &Args, agent: &str) -> Result<Client, AppError> {
    let (requests, _) = clients_as(args, agent).await?;
    Ok(requests)
}

/// The request client and the watch client (see the module comment for their timeouts).
pub async fn clients_as(args: &Args, agent: &str) -> Result<(Client, Client), AppError> {
    let mut config = match &args.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| AppError::Client(format!("{}: {e}", path.display())))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| AppError::Client(e.to_string()))?
        }
        None => Config::infer()
            .await
            .map_err(|e| AppError::Client(e.to_string()))?,
    };
    let ua = HeaderValue::from_str(agent).map_err(|e| AppError::Client(e.to_string()))?;
    config.headers.retain(|(k, _)| k != USER_AGENT);
    config.headers.push((USER_AGENT, ua));
    let request_timeout = match std::env::var(ENV_REQUEST_TIMEOUT) {
        Ok(v) if !v.trim().is_empty() => crate::cli::parse_go_duration(&v)
            .map_err(|e| AppError::Flag(format!("{ENV_REQUEST_TIMEOUT}: {e}")))?,
        _ => REQUEST_TIMEOUT,
    };
    let with_read_timeout = |timeout: Duration| {
        let mut c = config.clone();
        c.read_timeout = Some(timeout);
        c.write_timeout = Some(timeout);
        // Count from when the request was sent, not from when its pooled connection went idle.
        c.reset_reader_on_write = true;
        Client::try_from(c).map_err(|e| AppError::Client(e.to_string()))
    };
    Ok((
        with_read_timeout(request_timeout)?,
        with_read_timeout(WATCH_READ_TIMEOUT)?,
    ))
}

struct SharedStores(Arc<Mutex<Option<Stores>>>);

impl SampleSource for SharedStores {
    fn sample(&self) -> GaugeSample {
        let stores = self.0.lock().ok().and_then(|s| s.clone());
        stores.map(|s| s.sample()).unwrap_or_default()
    }

    fn live_classes(&self) -> Option<std::collections::BTreeSet<String>> {
        let stores = self.0.lock().ok().and_then(|s| s.clone());
        stores.and_then(|s| s.live_classes())
    }
}

/// Cancels `token` on SIGTERM or SIGINT.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        token.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("signal received, shutting down");
        token.cancel();
    });
}

/// Discovers the API shapes, retrying (with backoff) until the CRDs are served or `shutdown`.
async fn discover_until_served(client: &Client, shutdown: &CancellationToken) -> Option<ApiShapes> {
    let mut delay = Duration::from_millis(500);
    loop {
        match discover(client).await {
            Ok(shapes) => {
                tracing::info!(
                    cluster = %shapes.cluster.api_version,
                    claim = %shapes.claim.api_version,
                    pool = %shapes.global_pool.api_version,
                    "API versions discovered"
                );
                return Some(shapes);
            }
            Err(e) => tracing::warn!(error = %e, retry_in = ?delay, "discovery failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// The leader-election settings from the flags, or `None` without `--leader-elect`.
fn leader_config(args: &Args) -> Result<Option<LeaderConfig>, AppError> {
    if !args.leader_elect {
        return Ok(None);
    }
    let cfg = LeaderConfig {
        name: args.leader_election_id.clone(),
        namespace: leader::resolve_namespace(args.leader_election_namespace.as_deref())
            .map_err(AppError::Flag)?,
        identity: leader::default_identity(),
        lease_duration: args.leader_elect_lease_duration,
        renew_deadline: args.leader_elect_renew_deadline,
        retry_period: args.leader_elect_retry_period,
    };
    cfg.validate().map_err(AppError::Flag)?;
    Ok(Some(cfg))
}

/// Runs the watches on every replica and the reconciler only while this replica leads. Followers keep their caches
/// (hooks and gauges answer from them) and report ready once synced. The lease is released only after the
/// reconciler has stopped, so no write of ours can follow the release. The elector ending on its own is a failure.
async fn run_when_leading(
    elector: Elector,
    runtime: controller::Runtime,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    let (tx, leading) = watch::channel(false);
    let stop_elector = CancellationToken::new();
    tracing::info!(identity = %elector.identity(), "leader election on; waiting for the lease");
    let mut elector_task = tokio::spawn(elector.run(tx, stop_elector.clone()));
    let result = tokio::select! {
        r = controller::run(runtime, shutdown, Some(leading)) => r.map_err(|e| AppError::Stopped(e.to_string())),
        r = &mut elector_task => {
            let why = match r {
                Ok(_) => controller::Stopped::Elector.to_string(),
                Err(e) => format!("{}: {e}", controller::Stopped::Elector),
            };
            return Err(AppError::Stopped(why));
        }
    };
    stop_elector.cancel();
    match elector_task.await {
        Ok(mut elector) => match tokio::time::timeout(RELEASE_TIMEOUT, elector.release()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot release the leader lease; it expires on its own")
            }
            Err(_) => tracing::warn!(
                timeout = ?RELEASE_TIMEOUT,
                "releasing the leader lease timed out; it expires on its own"
            ),
        },
        Err(e) => tracing::warn!(error = %e, "leader election task failed"),
    }
    result
}

/// Binds the BeforeClusterCreate hook server; it answers from the controller's caches.
async fn hook_server(
    args: &Args,
    stores: &Arc<Mutex<Option<Stores>>>,
    health: &Arc<Health>,
    metrics: &Arc<Metrics>,
) -> Result<crate::hook::HookServer, AppError> {
    let source = crate::hook::CacheSource {
        stores: stores.clone(),
        health: health.clone(),
        default_port: args.default_port,
        clock: Arc::new(SystemClock),
    };
    let routes = crate::hook::Routes {
        handler: crate::hook::handler_name(&args.runtime_extension_name),
        retry_after_seconds: args.runtime_extension_retry_after_seconds,
    };
    // Every interface of both families (dual-stack, see `http::bind_any_family`).
    let addr =
        std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, args.runtime_extension_port));
    Ok(crate::hook::HookServer::bind(
        addr,
        &args.runtime_extension_cert_dir,
        routes,
        Arc::new(source),
    )
    .await?
    .with_metrics(metrics.clone()))
}

/// Runs the operator until `shutdown` is cancelled.
pub async fn run(args: Args, shutdown: CancellationToken) -> Result<(), AppError> {
    let election = leader_config(&args)?;
    let limits = controller::Limits::from_env().map_err(AppError::Flag)?;
    let metrics_addr =
        http::parse_bind_address(&args.metrics_bind_address).map_err(AppError::Flag)?;
    let probe_addr =
        http::parse_bind_address(&args.health_probe_bind_address).map_err(AppError::Flag)?;
    let agent = match &election {
        Some(cfg) => format!("{} ({})", user_agent(), cfg.identity),
        None => user_agent(),
    };
    let (client, watch_client) = clients_as(&args, &agent).await?;
    let elector = election.map(|cfg| Elector::new(client.clone(), cfg));
    let metrics = Arc::new(Metrics::new()?);
    tracing::info!(reconcile_timeout = ?limits.reconcile_timeout, liveness = ?limits.liveness,
        watch_stall = ?limits.watch_stall, shutdown_grace = ?limits.shutdown_grace, "runtime bounds");
    let health = Arc::new(Health::new(limits));
    let gauge_stores: Arc<Mutex<Option<Stores>>> = Arc::default();
    metrics.register_gauges(CacheGauges::new(Box::new(SharedStores(
        gauge_stores.clone(),
    )))?)?;

    let servers = http::bind(
        metrics_addr,
        probe_addr,
        HttpState {
            metrics: metrics.clone(),
            health: health.clone(),
        },
    )
    .await?;
    let mut http_tasks = tokio::task::JoinSet::new();
    for server in servers {
        http_tasks.spawn(server.serve(shutdown.clone()));
    }
    if args.enable_runtime_extension {
        if args.enable_reconciler {
            let server = hook_server(&args, &gauge_stores, &health, &metrics).await?;
            http_tasks.spawn(server.serve(shutdown.clone()));
        } else {
            tracing::warn!("--enable-runtime-extension needs the reconciler's caches; the hook server is not started with --enable-reconciler=false");
        }
    }

    let work = {
        let shutdown = shutdown.clone();
        let health = health.clone();
        async move {
            if !args.enable_reconciler {
                tracing::info!("--enable-reconciler=false: serving probes and metrics only");
                health.set(true, true);
                shutdown.cancelled().await;
                return Ok(());
            }
            let Some(mut shapes) = discover_until_served(&client, &shutdown).await else {
                return Ok(());
            };
            // Unlike the core kinds (retried until CAPI's CRDs are installed), a `--pool-kinds` kind that is not
            // served ends the process: the flag names it explicitly, so a typo must not look like a slow install.
            shapes.extra_pools = discover_pool_kinds(&client, &args.pool_kinds)
                .await
                .map_err(|e| AppError::Flag(e.to_string()))?;
            for kind in &shapes.extra_pools {
                tracing::info!(kind = %kind.resource.kind, api_version = %kind.resource.api_version,
                    plural = %kind.resource.plural, namespaced = kind.namespaced, "extra pool kind discovered");
            }
            let runtime = controller::Runtime {
                client,
                watch_client,
                shapes,
                settings: Settings {
                    default_port: args.default_port,
                    pool_allowlist: args
                        .pool_allowlist
                        .iter()
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect(),
                    max_concurrent_reconciles: args.max_concurrent_reconciles,
                    vip_probe: args.vip_probe == crate::cli::VipProbe::Tcp,
                    pending_claim_timeout: args.pending_claim_timeout,
                },
                metrics,
                health,
                gauge_stores,
                clock: Arc::new(SystemClock),
            };
            match elector {
                Some(elector) => run_when_leading(elector, runtime, shutdown).await,
                None => controller::run(runtime, shutdown, None)
                    .await
                    .map_err(|e| AppError::Stopped(e.to_string())),
            }
        }
    };
    let mut work = tokio::spawn(work);

    // Any task dying (an HTTP server, or the controller before shutdown) ends the process with an error.
    let mut result = Ok(());
    let mut work_done = false;
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => {}
        res = &mut work => {
            work_done = true;
            result = match res {
                Ok(Err(e)) => Err(e),
                Ok(Ok(())) if shutdown.is_cancelled() => Ok(()),
                Ok(Ok(())) => Err(AppError::Stopped("the controller stopped on its own".to_owned())),
                Err(e) => Err(AppError::Stopped(format!("the controller task failed: {e}"))),
            };
            shutdown.cancel();
        }
        Some(res) = http_tasks.join_next() => {
            result = match res {
                Ok(Ok(())) if shutdown.is_cancelled() => Ok(()),
                Ok(Ok(())) => Err(AppError::Stopped("an HTTP server stopped on its own".to_owned())),
                Ok(Err(e)) => Err(AppError::Http(e)),
                Err(e) => Err(AppError::Http(std::io::Error::other(e))),
            };
            shutdown.cancel();
        }
    }
    if !work_done {
        match work.await {
            Ok(Err(e)) if result.is_ok() => result = Err(e),
            Err(e) if result.is_ok() => {
                result = Err(AppError::Stopped(format!(
                    "the controller task failed: {e}"
                )))
            }
            _ => {}
        }
    }
    // Open keep-alive connections must not hold the process past the pod's grace period.
    let drained = tokio::time::timeout(HTTP_SHUTDOWN_GRACE, async {
        while let Some(res) = http_tasks.join_next().await {
            if let Ok(Err(e)) = res {
                tracing::warn!(error = %e, "HTTP server ended with an error");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::debug!("HTTP connections still open after the grace; closing them");
        http_tasks.abort_all();
    }
    result
}
