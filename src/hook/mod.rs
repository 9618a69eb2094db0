//! The Runtime SDK extension: a `BeforeClusterCreate` handler that holds back the topology controller until the
//! control-plane VIP is written, so no InfrastructureCluster is ever rendered with an empty endpoint.
//!
//! HTTPS (`tls`), the protocol (`routes`) and the pure answer (`decision`). Every replica serves it from its own
//! caches; the answer is read-only, so no leadership is needed.

pub mod decision;
pub mod routes;
pub mod tls;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{body::Incoming, Request, Response};
use hyper_util::rt::TokioIo;
use kube::runtime::reflector::ObjectRef;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

pub use decision::{decide, Answer, Lookup};
pub use routes::{handler_name, ClusterSource, Routes};
pub use tls::ReloadingCert;

use crate::{
    api::ClusterView,
    controller::{Clock, Health, Stores},
    telemetry::Metrics,
};

/// Time allowed for a TLS handshake and for reading a request.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Start-up failures of the hook server.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// Certificate files.
    #[error("runtime extension certificate: {0}")]
    Tls(#[from] tls::TlsError),
    /// TLS configuration.
    #[error("runtime extension TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// Binding the port.
    #[error("runtime extension listener: {0}")]
    Io(#[from] std::io::Error),
}

/// The controller's caches, as the hook reads them.
pub struct CacheSource {
    /// Set while a controller runs on this replica (shared with the scrape-time gauges).
    pub stores: Arc<Mutex<Option<Stores>>>,
    /// Whether those caches are synced.
    pub health: Arc<Health>,
    /// `--default-port` (the rules need it).
    pub default_port: u16,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

impl ClusterSource for CacheSource {
    fn lookup(&self, ns: &str, name: &str, uid: Option<&str>) -> Lookup {
        let stores = self.stores.lock().ok().and_then(|s| s.clone());
        let Some(stores) = stores.filter(|_| self.health.ready()) else {
            return Lookup::NotReady;
        };
        let key = ObjectRef::new_with(name, stores.shapes.cluster.clone()).within(ns);
        let Some(obj) = stores.clusters.get(&key) else {
            return Lookup::Missing;
        };
        let Ok(view) = ClusterView::parse(&obj) else {
            return Lookup::Missing;
        };
        if uid.is_some_and(|u| u != view.uid) {
            return Lookup::Missing; // the cache still holds an older Cluster of the same name
        }
        Lookup::Found(Box::new(stores.snapshot(
            view,
            self.default_port,
            self.clock.now(),
        )))
    }
}

/// A bound hook server.
pub struct HookServer {
    /// One socket, or two when `[::]` needs a separate IPv4 one (see [`crate::http::bind_any_family`]).
    listeners: Vec<TcpListener>,
    acceptor: TlsAcceptor,
    routes: Arc<Routes>,
    source: Arc<dyn ClusterSource>,
    metrics: Option<Arc<Metrics>>,
}

impl HookServer {
    /// Loads the certificate from `cert_dir` and binds `addr` (`[::]`: every interface of both families).
    pub async fn bind(
        addr: SocketAddr,
        cert_dir: &std::path::Path,
        routes: Routes,
        source: Arc<dyn ClusterSource>,
    ) -> Result<Self, HookError> {
        let certs = Arc::new(ReloadingCert::new(cert_dir)?);
        let config = tls::server_config(certs)?;
        let listeners = crate::http::bind_any_family(addr).await?;
        Ok(Self {
            listeners,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            routes: Arc::new(routes),
            source,
            metrics: None,
        })
    }

    /// Counts every request in `capi_vip_allocator_runtime_extension_requests_total`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The bound address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listeners.first().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown`; a bad connection is logged and dropped, never fatal.
    pub async fn serve(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let Self {
            listeners,
            acceptor,
            routes,
            source,
            metrics,
        } = self;
        let loops = listeners.into_iter().map(|listener| {
            accept_loop(
                listener,
                acceptor.clone(),
                routes.clone(),
                source.clone(),
                metrics.clone(),
                shutdown.clone(),
            )
        });
        futures::future::try_join_all(loops).await.map(|_| ())
    }
}

/// Accepts and serves the connections of one socket until `shutdown`.
async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    routes: Arc<Routes>,
    source: Arc<dyn ClusterSource>,
    metrics: Option<Arc<Metrics>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    tracing::info!(addr = ?listener.local_addr().ok(), path = %routes.before_cluster_create_path(),
        "runtime extension serving");
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            res = listener.accept() => match res {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "hook accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let routes = routes.clone();
        let source = source.clone();
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(IO_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "hook TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper::service::service_fn(move |req| {
                let routes = routes.clone();
                let source = source.clone();
                let metrics = metrics.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(
                        respond(req, &routes, &*source, metrics.as_deref()).await,
                    )
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(IO_TIMEOUT)
                .serve_connection(TokioIo::new(tls), service);
            tokio::select! {
                res = conn => if let Err(e) = res {
                    tracing::debug!(%peer, error = %e, "hook connection ended with an error");
                },
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

async fn respond(
    req: Request<Incoming>,
    routes: &Routes,
    source: &dyn ClusterSource,
    metrics: Option<&Metrics>,
) -> Response<Full<Bytes>> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let limited = Limited::new(req.into_body(), routes::MAX_BODY_BYTES);
    let reply = match tokio::time::timeout(IO_TIMEOUT, limited.collect()).await {
        Ok(Ok(body)) => routes.handle(&method, &path, &body.to_bytes(), source),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => routes::Reply::rejected(
            413,
            routes.handler_of(&path),
            routes::refused(&format!(
                "request body exceeds {} bytes",
                routes::MAX_BODY_BYTES
            )),
        ),
        Ok(Err(e)) => routes::Reply::rejected(
            400,
            routes.handler_of(&path),
            routes::refused(&format!("cannot read request body: {e}")),
        ),
        Err(_) => routes::Reply::rejected(
            408,
            routes.handler_of(&path),
            routes::refused("request body not received in time"),
        ),
    };
    if let Some(m) = metrics {
        m.hook_request(reply.handler, reply.result);
    }
    let body = serde_json::to_vec(&reply.body).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = hyper::StatusCode::from_u16(reply.status).unwrap_or(hyper::StatusCode::OK);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}
