//! The HTTP/1.1 server: accept loop (TCP_NODELAY on every socket), routing, non-resource paths.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

use crate::discovery;
use crate::errors::ApiError;
use crate::faults::FaultConfig;
use crate::handlers::{self, ResourceRequest};
use crate::http::{error, header, json, Body, Query};
use crate::state::Shared;

/// Marks a request caught by a black-hole fault; as an error it makes hyper close the connection unanswered.
#[derive(Debug, Clone, Copy)]
struct BlackHoled;

impl std::fmt::Display for BlackHoled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request held by a black-hole fault")
    }
}

impl std::error::Error for BlackHoled {}

pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else { continue };
        // Without this, keep-alive clients stall ~40 ms per request (Nagle + delayed ACK).
        let _ = stream.set_nodelay(true);
        let shared_for_conn = shared.clone();
        let shared = shared.clone();
        let addr = addr.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                let addr = addr.clone();
                async move {
                    let (method, uri) = (req.method().clone(), req.uri().clone());
                    let started = std::time::Instant::now();
                    let resp = route(shared.clone(), req, &addr).await;
                    if resp.extensions().get::<BlackHoled>().is_some() {
                        // Never answered: held until the client goes away (hyper drops this future) or the
                        // testbed stops (then the connection is closed without a response).
                        tracing::debug!(%method, %uri, "request held by a black-hole fault");
                        shared.shutdown.cancelled().await;
                        return Err(BlackHoled);
                    }
                    tracing::debug!(%method, %uri, status = resp.status().as_u16(), elapsed = ?started.elapsed(), "request");
                    Ok::<_, BlackHoled>(resp)
                }
            });
            let stop = shared_for_conn.shutdown.clone();
            let conn = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

async fn route(shared: Arc<Shared>, req: Request<Incoming>, addr: &str) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body: Bytes = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(&ApiError::bad_request("cannot read request body")),
    };
    let query = Query::parse(parts.uri.query());
    let path = parts.uri.path().to_string();
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let ua = header(&parts.headers, "user-agent").to_string();
    let reg_json = |f: &dyn Fn(&crate::resources::Registry) -> Option<serde_json::Value>| {
        let doc = f(&shared.registry());
        match doc {
            Some(d) => json(200, &d),
            None => error(&ApiError::path_not_found()),
        }
    };
    let non_resource = |what: &str| shared.stats.count("get", "", what, "", &ua);
    match (parts.method.clone(), segs.as_slice()) {
        (Method::GET, ["version"]) => {
            non_resource("version");
            json(200, &discovery::version())
        }
        (Method::GET, ["healthz" | "readyz" | "livez"]) => {
            let mut r = Response::new(crate::http::full("ok"));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain"),
            );
            r
        }
        (Method::GET, ["api"]) => {
            non_resource("discovery");
            json(200, &discovery::core_versions(addr))
        }
        (Method::GET, ["api", "v1"]) => {
            non_resource("discovery");
            reg_json(&|r| discovery::resource_list(r, "", "v1"))
        }
        (Method::GET, ["apis"]) => {
            non_resource("discovery");
            reg_json(&|r| Some(discovery::group_list(r)))
        }
        (Method::GET, ["apis", g]) => {
            non_resource("discovery");
            reg_json(&|r| discovery::group(r, g))
        }
        (Method::GET, ["apis", g, v]) => {
            non_resource("discovery");
            reg_json(&|r| discovery::resource_list(r, g, v))
        }
        (Method::GET, ["openapi", "v2"]) => {
            let mut r = Response::new(crate::http::full(discovery::openapi_v2_protobuf()));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(
                    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                ),
            );
            r
        }
        (Method::GET, ["openapi", "v3"]) => reg_json(&|r| Some(discovery::openapi_v3_index(r))),
        (Method::GET, ["openapi", "v3", "api", "v1"]) => {
            reg_json(&|r| discovery::openapi_v3_doc(r, "", "v1"))
        }
        (Method::GET, ["openapi", "v3", "apis", g, v]) => {
            reg_json(&|r| discovery::openapi_v3_doc(r, g, v))
        }
        (Method::GET, ["testbed", "stats"]) => {
            let since = query.get("since").and_then(|s| s.parse().ok()).unwrap_or(0);
            json(
                200,
                &serde_json::to_value(shared.stats.snapshot(since)).unwrap_or_default(),
            )
        }
        (Method::DELETE, ["testbed", "stats"]) => {
            shared.stats.reset();
            json(200, &json!({}))
        }
        (Method::GET, ["testbed", "faults"]) => json(
            200,
            &serde_json::to_value(shared.faults.config()).unwrap_or_default(),
        ),
        (Method::POST | Method::PUT, ["testbed", "faults"]) => {
            match serde_json::from_slice::<FaultConfig>(&body) {
                Ok(cfg) => {
                    crate::faults::FaultHandle(shared.faults.clone()).set(cfg.clone());
                    json(200, &serde_json::to_value(cfg).unwrap_or_default())
                }
                Err(e) => error(&ApiError::bad_request(format!("invalid FaultConfig: {e}"))),
            }
        }
        (Method::POST, ["testbed", "faults", "cut-watches"]) => {
            crate::faults::FaultHandle(shared.faults.clone()).cut_watches();
            json(200, &json!({}))
        }
        (_, ["api", "v1", rest @ ..]) if !rest.is_empty() => {
            resource(shared, "", "v1", rest, parts, query, body, ua).await
        }
        (_, ["apis", g, v, rest @ ..]) if !rest.is_empty() => {
            resource(shared, g, v, rest, parts, query, body, ua).await
        }
        _ => error(&ApiError::path_not_found()),
    }
}

#[allow(clippy::too_many_arguments)]
async fn resource(
    shared: Arc<Shared>,
    group: &str,
    version: &str,
    rest: &[&str],
    parts: http::request::Parts,
    query: Query,
    body: Bytes,
    ua: String,
) -> Response<Body> {
    let is_ns_sub = rest.len() == 3
        && rest[0] == "namespaces"
        && matches!(rest[2], "status" | "finalize")
        && group.is_empty();
    let (namespace, plural, name, sub) = if rest[0] == "namespaces" && rest.len() >= 3 && !is_ns_sub
    {
        (
            Some(rest[1].to_string()),
            rest[2],
            rest.get(3).copied(),
            rest.get(4).copied(),
        )
    } else {
        (None, rest[0], rest.get(1).copied(), rest.get(2).copied())
    };
    if rest.len() > 5 {
        return error(&ApiError::path_not_found());
    }
    let Some(info) = shared.registry().lookup(group, version, plural) else {
        return error(&ApiError::path_not_found());
    };
    if namespace.is_some() && !info.namespaced {
        return error(&ApiError::path_not_found());
    }
    let status = match sub {
        None => false,
        Some("status") if info.status => true,
        Some(_) => return error(&ApiError::path_not_found()),
    };
    let r = ResourceRequest {
        info: info.clone(),
        namespace,
        name: name.map(String::from),
        status,
        method: parts.method,
        query,
        headers: parts.headers,
        body,
        user_agent: ua,
    };
    let verb = r.verb();
    shared.stats.count(
        verb,
        &info.group,
        &info.plural,
        if status { "status" } else { "" },
        &r.user_agent,
    );
    if shared.faults.black_holed(verb, &info.plural) {
        let mut r = Response::new(crate::http::full(""));
        r.extensions_mut().insert(BlackHoled);
        return r;
    }
    let latency = shared.faults.latency() + shared.faults.slow_for(verb, &info.plural);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(code) = shared.faults.error_for(verb) {
        let e = match code {
            409 => ApiError::conflict(&info.subject(r.name.as_deref().unwrap_or(""))),
            429 => ApiError::too_many_requests(
                "injected fault: too many requests, please try again later",
            ),
            500 => ApiError::internal("injected fault"),
            c => ApiError::new(
                c,
                "InternalError",
                format!("injected fault with status {c}"),
            ),
        };
        return error(&e);
    }
    handlers::handle(&shared, r).await
}
