//! HTTP endpoints: `/metrics` on the metrics address, `/healthz` and `/readyz` on the probe address; one axum
//! server per distinct address (one serves everything when both are equal). Graceful shutdown on the token.

use std::{net::SocketAddr, sync::Arc};

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{controller::Health, telemetry::Metrics};

/// Shared state of the handlers.
#[derive(Clone)]
pub struct HttpState {
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Readiness.
    pub health: Arc<Health>,
}

/// Parses a Go-style bind address: `:8080` (all interfaces), `host:port`, `[::1]:8080`; `0` or empty = disabled.
pub fn parse_bind_address(addr: &str) -> Result<Option<SocketAddr>, String> {
    let a = addr.trim();
    if a.is_empty() || a == "0" {
        return Ok(None);
    }
    let full = if a.starts_with(':') {
        format!("0.0.0.0{a}")
    } else {
        a.to_owned()
    };
    let full = full.replace("localhost:", "127.0.0.1:");
    full.parse::<SocketAddr>()
        .map(Some)
        .map_err(|e| format!("invalid bind address {addr:?}: {e}"))
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    match s.metrics.render() {
        Ok(text) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    if s.health.ready() {
        (StatusCode::OK, "ok")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "caches not synced or controller not running",
        )
    }
}

/// A bound listener and the routes it serves.
pub struct Server {
    listener: TcpListener,
    router: Router,
}

impl Server {
    /// The bound address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `shutdown`.
    pub async fn serve(self, shutdown: CancellationToken) -> std::io::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }
}

/// Binds the servers (fails fast when a port is taken).
pub async fn bind(
    metrics_addr: Option<SocketAddr>,
    probe_addr: Option<SocketAddr>,
    state: HttpState,
) -> std::io::Result<Vec<Server>> {
    let metrics_routes = Router::new().route("/metrics", get(metrics));
    let probe_routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    let mut plan: Vec<(SocketAddr, Router<HttpState>)> = Vec::new();
    match (metrics_addr, probe_addr) {
        (Some(m), Some(p)) if m == p => plan.push((m, metrics_routes.merge(probe_routes))),
        (m, p) => {
            plan.extend(m.map(|m| (m, metrics_routes)));
            plan.extend(p.map(|p| (p, probe_routes)));
        }
    }
    let mut servers = Vec::new();
    for (addr, router) in plan {
        let listener = TcpListener::bind(addr).await?;
        tracing::info!(addr = %listener.local_addr()?, "HTTP server listening");
        servers.push(Server {
            listener,
            router: router.with_state(state.clone()),
        });
    }
    Ok(servers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.unwrap();
        let code = buf.split_whitespace().nth(1).unwrap().parse().unwrap();
        (
            code,
            buf.split_once("\r\n\r\n")
                .map(|(_, b)| b.to_owned())
                .unwrap_or_default(),
        )
    }

    #[tokio::test]
    async fn readyz_follows_health_and_separate_servers_split_routes() {
        let state = HttpState {
            metrics: Arc::new(Metrics::new().unwrap()),
            health: Arc::new(Health::default()),
        };
        let metrics_addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let probe_addr: SocketAddr = "127.0.0.2:0".parse().unwrap();
        let servers = bind(Some(metrics_addr), Some(probe_addr), state.clone())
            .await
            .unwrap();
        assert_eq!(servers.len(), 2, "distinct addresses, distinct servers");
        let (m, p) = (
            servers[0].local_addr().unwrap(),
            servers[1].local_addr().unwrap(),
        );
        let token = CancellationToken::new();
        let tasks: Vec<_> = servers
            .into_iter()
            .map(|s| tokio::spawn(s.serve(token.clone())))
            .collect();
        assert_eq!(get(p, "/healthz").await, (200, "ok".to_owned()));
        assert_eq!(get(p, "/readyz").await.0, 503);
        state.health.set(true, true);
        assert_eq!(get(p, "/readyz").await.0, 200);
        assert_eq!(
            get(p, "/metrics").await.0,
            404,
            "metrics are not on the probe server"
        );
        let (code, body) = get(m, "/metrics").await;
        assert_eq!(code, 200);
        assert!(
            body.contains("capi_vip_allocator") || body.contains("process_"),
            "{body}"
        );
        token.cancel();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    }

    #[test]
    fn go_style_addresses_parse() {
        assert_eq!(
            parse_bind_address(":8080").unwrap(),
            Some("0.0.0.0:8080".parse().unwrap())
        );
        assert_eq!(
            parse_bind_address("127.0.0.1:9").unwrap(),
            Some("127.0.0.1:9".parse().unwrap())
        );
        assert_eq!(
            parse_bind_address("[::1]:9").unwrap(),
            Some("[::1]:9".parse().unwrap())
        );
        assert_eq!(
            parse_bind_address("localhost:9").unwrap(),
            Some("127.0.0.1:9".parse().unwrap())
        );
        assert_eq!(parse_bind_address("0").unwrap(), None);
        assert!(parse_bind_address("nonsense").is_err());
    }

    #[tokio::test]
    async fn equal_addresses_share_one_server_and_zero_disables() {
        let state = HttpState {
            metrics: Arc::new(Metrics::new().unwrap()),
            health: Arc::new(Health::default()),
        };
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let servers = bind(Some(addr), Some(addr), state.clone()).await.unwrap();
        assert_eq!(servers.len(), 1);
        let a = servers[0].local_addr().unwrap();
        let token = CancellationToken::new();
        let task = tokio::spawn(servers.into_iter().next().unwrap().serve(token.clone()));
        assert_eq!(get(a, "/healthz").await.0, 200);
        assert_eq!(get(a, "/metrics").await.0, 200);
        token.cancel();
        task.await.unwrap().unwrap();
        assert!(bind(None, None, state).await.unwrap().is_empty());
    }
}
