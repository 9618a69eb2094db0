//! HTTP endpoints: `/metrics` on the metrics address, `/healthz` and `/readyz` on the probe address; one axum
//! server per distinct address (one serves everything when both are equal). Graceful shutdown on the token.
//!
//! `:PORT` listens on every interface of both families, as Go's `:PORT` does: a dual-stack `[::]` socket, plus an
//! IPv4 `0.0.0.0` socket when the kernel makes IPv6 sockets IPv6-only, or IPv4 alone where IPv6 is absent.

use std::{
    future::IntoFuture,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Instant,
};

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

/// Parses a Go-style bind address: `:8080` (all interfaces of both families, returned as `[::]:8080`; see
/// [`bind_any_family`]), `host:port`, `[::1]:8080`; `0` or empty = disabled.
pub fn parse_bind_address(addr: &str) -> Result<Option<SocketAddr>, String> {
    let a = addr.trim();
    if a.is_empty() || a == "0" {
        return Ok(None);
    }
    let full = if a.starts_with(':') {
        format!("[::]{a}")
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

/// `/healthz`: fails when the reconciler has work but has made no progress for the liveness bound.
async fn healthz(State(s): State<HttpState>) -> impl IntoResponse {
    match s.health.why_not_alive(Instant::now()) {
        None => (StatusCode::OK, "ok".to_owned()),
        Some(why) => {
            tracing::warn!(reason = %why, "liveness probe failing");
            (StatusCode::SERVICE_UNAVAILABLE, why)
        }
    }
}

/// `/readyz`: caches synced, every watch working, controller running.
async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    match s.health.why_not_ready(Instant::now()) {
        None => (StatusCode::OK, "ok".to_owned()),
        Some(why) => {
            if s.health.synced() {
                // Before the first sync this is expected; afterwards it is news.
                tracing::warn!(reason = %why, "readiness probe failing");
            }
            (StatusCode::SERVICE_UNAVAILABLE, why)
        }
    }
}

/// Binds `addr`. The unspecified IPv6 address `[::]` means every interface of both families: one dual-stack socket
/// where the kernel allows IPv4 on IPv6 sockets (Linux's default `net.ipv6.bindv6only=0`), else an extra IPv4
/// socket on the same port; where IPv6 is absent, `0.0.0.0` alone.
pub async fn bind_any_family(addr: SocketAddr) -> std::io::Result<Vec<TcpListener>> {
    if addr.ip() != IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
        return Ok(vec![TcpListener::bind(addr).await?]);
    }
    let v4_addr = |port| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let v6 = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => return Err(e),
        Err(e) => {
            tracing::info!(%addr, error = %e, "no IPv6 here; listening on IPv4 only");
            return Ok(vec![TcpListener::bind(v4_addr(addr.port())).await?]);
        }
    };
    let port = v6.local_addr()?.port();
    match TcpListener::bind(v4_addr(port)).await {
        // The IPv6 socket is IPv6-only: IPv4 needs its own.
        Ok(v4) => Ok(vec![v6, v4]),
        // Our dual-stack socket holds the IPv4 port already, so IPv4 arrives on it.
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Ok(vec![v6]),
        Err(e) => {
            tracing::debug!(port, error = %e, "no separate IPv4 socket");
            Ok(vec![v6])
        }
    }
}

/// Bound listeners (one address, one or two sockets) and the routes they serve.
pub struct Server {
    listeners: Vec<TcpListener>,
    router: Router,
}

impl Server {
    /// The bound address (of the first socket).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listeners.first().and_then(|l| l.local_addr().ok())
    }

    /// Every bound socket's address.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Serves until `shutdown`.
    pub async fn serve(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let router = self.router;
        let serving = self.listeners.into_iter().map(|l| {
            axum::serve(l, router.clone())
                .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                .into_future()
        });
        futures::future::try_join_all(serving).await.map(|_| ())
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
        let listeners = bind_any_family(addr).await?;
        for l in &listeners {
            tracing::info!(addr = %l.local_addr()?, "HTTP server listening");
        }
        servers.push(Server {
            listeners,
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
            Some("[::]:8080".parse().unwrap()),
            "`:PORT` is every interface of both families"
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

    #[tokio::test]
    async fn unspecified_ipv6_answers_on_both_loopbacks() {
        let state = HttpState {
            metrics: Arc::new(Metrics::new().unwrap()),
            health: Arc::new(Health::default()),
        };
        let addr = parse_bind_address(":0").unwrap();
        let servers = bind(addr, addr, state).await.unwrap();
        let port = servers[0].local_addr().unwrap().port();
        let token = CancellationToken::new();
        let task = tokio::spawn(servers.into_iter().next().unwrap().serve(token.clone()));
        for ip in ["127.0.0.1", "::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(
                get(SocketAddr::new(ip, port), "/healthz").await.0,
                200,
                "{ip}"
            );
        }
        token.cancel();
        task.await.unwrap().unwrap();
    }
}
