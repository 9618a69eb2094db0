//! Watch streams: one JSON event per line, shared serialised events, bookmarks, initial events,
//! 410 as an ERROR event, selector transitions, timeouts and injected cuts.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::http::Body;
use crate::resources::ResourceInfo;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::state::Shared;
use crate::store::{watch_line, EventType};
use crate::views::{is_identity, to_view};

pub struct WatchParams {
    /// None: start with the current state (rv unset or "0").
    pub rv: Option<u64>,
    pub bookmarks: bool,
    pub send_initial: bool,
    pub timeout: Duration,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// Send `PartialObjectMetadata` objects.
    pub metadata_only: bool,
}

fn expired_line(requested: u64, oldest: u64) -> Bytes {
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("too old resource version: {requested} ({oldest})"), "reason": "Expired", "code": 410});
    watch_line("ERROR", &status)
}

fn bookmark(info: &ResourceInfo, rv: u64, initial_end: bool) -> Bytes {
    let mut obj = json!({"kind": info.kind, "apiVersion": info.api_version(),
        "metadata": {"resourceVersion": rv.to_string()}});
    if initial_end {
        obj["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    watch_line("BOOKMARK", &obj)
}

/// An event line for this client (when the shared serialised line does not fit).
fn render(info: &ResourceInfo, kind: &str, obj: &Arc<Value>, metadata_only: bool) -> Bytes {
    let view = to_view(info, obj);
    if metadata_only {
        watch_line(kind, &crate::table::partial(&view))
    } else {
        watch_line(kind, &view)
    }
}

pub fn start(shared: Arc<Shared>, info: Arc<ResourceInfo>, p: WatchParams) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(512);
    tokio::spawn(run(shared, info, p, tx));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(Frame::data(b)), rx))
    });
    let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

async fn run(
    shared: Arc<Shared>,
    info: Arc<ResourceInfo>,
    p: WatchParams,
    tx: mpsc::Sender<Bytes>,
) {
    let store = &shared.store;
    let matches = |obj: &Value| p.labels.matches(obj) && p.fields.matches(obj);
    if shared.faults.take_next_watch_gone() {
        let cur = store.current_rv();
        let _ = tx.send(expired_line(p.rv.unwrap_or(cur), cur)).await;
        return;
    }
    let start = match p.rv {
        Some(rv) if !p.send_initial => {
            let compacted = store.compacted_rv();
            if rv < compacted {
                let _ = tx.send(expired_line(rv, compacted + 1)).await;
                return;
            }
            rv
        }
        _ => {
            let (items, rv, _) = store.list(&info.storage, p.namespace.as_deref(), None, 0, &|o| {
                matches(o)
            });
            for it in items {
                let line = render(&info, "ADDED", &it, p.metadata_only);
                if tx.send(line).await.is_err() {
                    return;
                }
            }
            if p.send_initial && p.bookmarks {
                let _ = tx.send(bookmark(&info, rv, true)).await;
            }
            rv
        }
    };
    let cfg = shared.faults.config();
    let mut timeout = p.timeout;
    if let Some(s) = cfg.watch_cut_seconds {
        timeout = timeout.min(Duration::from_secs(s));
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut ticker = tokio::time::interval(shared.bookmark_interval);
    ticker.tick().await;
    let mut cut = shared.faults.cut_signal();
    cut.borrow_and_update();
    let mut sub = store.subscribe_from(start);
    let mut sent: u64 = 0;
    loop {
        tokio::select! {
            batch = sub.next(store) => {
                let events = match batch {
                    Ok(Some(evs)) => evs,
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(expired_line(e.requested, e.oldest)).await;
                        return;
                    }
                };
                for e in events {
                    if e.key.gr != info.storage {
                        continue;
                    }
                    if let Some(ns) = &p.namespace {
                        if e.key.namespace != *ns {
                            continue;
                        }
                    }
                    let now = matches(&e.object);
                    let kind = match e.kind {
                        EventType::Modified => match (e.prev.as_deref().is_some_and(&matches), now) {
                            (true, true) => Some(EventType::Modified),
                            (false, true) => Some(EventType::Added),
                            (true, false) => Some(EventType::Deleted),
                            (false, false) => None,
                        },
                        k => now.then_some(k),
                    };
                    let Some(kind) = kind else { continue };
                    let line = if kind == e.kind && !p.metadata_only && is_identity(&info, &e.object) {
                        e.line()
                    } else {
                        render(&info, kind.as_str(), &e.object, p.metadata_only)
                    };
                    if tx.send(line).await.is_err() {
                        return;
                    }
                    sent += 1;
                    if cfg.watch_cut_events.is_some_and(|n| sent >= n) {
                        return;
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                if p.bookmarks {
                    let _ = tx.send(bookmark(&info, sub.last, false)).await;
                }
                return;
            }
            _ = ticker.tick(), if p.bookmarks => {
                let _ = tx.send(bookmark(&info, sub.last, false)).await;
            }
            _ = cut.changed() => return,
            _ = tx.closed() => return,
            _ = shared.shutdown.cancelled() => return,
        }
    }
}
