//! Resource requests: get, list, watch, create, update, patch, delete, deletecollection.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Response};
use serde_json::{json, Value};

use crate::delete::{DeleteOpts, Deleted};
use crate::errors::{ApiError, Cause};
use crate::http::{error, header, json, json_with, Body, Query};
use crate::objects::{parse_yaml_or_json, Validation, WriteCtx, Written};
use crate::patch::PatchType;
use crate::resources::ResourceInfo;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::state::Shared;
use crate::table;
use crate::views::to_view;
use crate::watch::{self, WatchParams};

pub struct ResourceRequest {
    pub info: Arc<ResourceInfo>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub status: bool,
    pub method: Method,
    pub query: Query,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub user_agent: String,
}

impl ResourceRequest {
    pub fn verb(&self) -> &'static str {
        match (&self.method, self.name.is_some()) {
            (&Method::GET, true) => "get",
            (&Method::GET, false) if self.query.flag("watch") => "watch",
            (&Method::GET, false) => "list",
            (&Method::POST, _) => "create",
            (&Method::PUT, _) => "update",
            (&Method::PATCH, _) => "patch",
            (&Method::DELETE, true) => "delete",
            (&Method::DELETE, false) => "deletecollection",
            _ => "unknown",
        }
    }

    fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }

    fn ctx(&self) -> Result<WriteCtx, ApiError> {
        let manager = match self.query.get("fieldManager") {
            Some(m) => m.to_string(),
            None => self.user_agent.split('/').next().unwrap_or("").to_string(),
        };
        let dry_run = match self.query.get("dryRun") {
            None | Some("") => false,
            Some("All") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "dryRun: Unsupported value: {other:?}: supported values: \"All\""
                )))
            }
        };
        Ok(WriteCtx {
            manager,
            user_agent: self.user_agent.clone(),
            dry_run,
            validation: Validation::parse(self.query.get("fieldValidation"))?,
        })
    }
}

fn field_allowed(info: &ResourceInfo) -> impl Fn(&str) -> bool + '_ {
    move |f: &str| f == "metadata.name" || f == "metadata.namespace" || !info.custom
}

fn selectors(info: &ResourceInfo, q: &Query) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or(""), &field_allowed(info))
        .map_err(ApiError::bad_request)?;
    Ok((labels, fields))
}

fn body_json(r: &ResourceRequest) -> Result<Value, ApiError> {
    let ct = header(&r.headers, "content-type");
    if ct.contains("protobuf") || ct.contains("cbor") {
        return Err(ApiError::unsupported_media_type(
            ct,
            &["application/json", "application/yaml"],
        ));
    }
    if ct.contains("yaml") {
        return parse_yaml_or_json(&r.body);
    }
    serde_json::from_slice(&r.body).map_err(|e| {
        ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {}): {e}",
            r.info.kind
        ))
    })
}

fn written(w: Written) -> Response<Body> {
    json_with(w.code, &w.object, &w.warnings)
}

pub async fn handle(shared: &Arc<Shared>, r: ResourceRequest) -> Response<Body> {
    match dispatch(shared, r).await {
        Ok(resp) => resp,
        Err(e) => error(&e),
    }
}

async fn dispatch(shared: &Arc<Shared>, r: ResourceRequest) -> Result<Response<Body>, ApiError> {
    let info = r.info.clone();
    let verb = r.verb();
    if r.namespace.is_none() && info.namespaced && r.name.is_some() {
        return Err(ApiError::path_not_found());
    }
    match verb {
        "get" => {
            let name = r.name.as_deref().unwrap_or("");
            let obj = shared
                .store
                .get(
                    &info.storage,
                    if info.namespaced { r.ns() } else { "" },
                    name,
                )
                .ok_or_else(|| ApiError::not_found(&info.subject(name)))?;
            let view = to_view(&info, &obj);
            if table::wants_table(&r.headers) {
                return Ok(json(
                    200,
                    &table::render(&info, &[view], &json!({"resourceVersion": ""})),
                ));
            }
            if table::wants_metadata(&r.headers) {
                return Ok(json(200, &table::partial(&view)));
            }
            Ok(json(200, &view))
        }
        "list" => list(shared, &r),
        "watch" => {
            validate_list_options(&r.query, true)?;
            let (labels, fields) = selectors(&info, &r.query)?;
            let rv = match r.query.get("resourceVersion") {
                None | Some("") | Some("0") => None,
                Some(s) => Some(s.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version: {s:?}"))
                })?),
            };
            let timeout = r
                .query
                .get("timeoutSeconds")
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(1800);
            let p = WatchParams {
                rv,
                bookmarks: r.query.flag("allowWatchBookmarks"),
                send_initial: r.query.flag("sendInitialEvents"),
                timeout: Duration::from_secs(timeout),
                namespace: r.namespace.clone(),
                labels,
                fields,
                metadata_only: table::wants_metadata(&r.headers),
            };
            Ok(watch::start(shared.clone(), info, p))
        }
        "create" => {
            if r.name.is_some() {
                return Err(ApiError::method_not_allowed());
            }
            if info.namespaced && r.namespace.is_none() {
                return Err(ApiError::method_not_allowed());
            }
            let ctx = r.ctx()?;
            let body = body_json(&r)?;
            Ok(written(shared.create(&info, r.ns(), body, &ctx)?))
        }
        "update" => {
            let ctx = r.ctx()?;
            let body = body_json(&r)?;
            let name = r.name.as_deref().unwrap_or("");
            Ok(written(shared.update(
                &info,
                r.ns(),
                name,
                body,
                r.status,
                &ctx,
            )?))
        }
        "patch" => {
            let ct = header(&r.headers, "content-type");
            let ptype = PatchType::from_content_type(ct).ok_or_else(|| {
                ApiError::unsupported_media_type(
                    ct,
                    &[
                        "application/json-patch+json",
                        "application/merge-patch+json",
                        "application/apply-patch+yaml",
                        "application/strategic-merge-patch+json",
                    ],
                )
            })?;
            let mut ctx = r.ctx()?;
            if ptype == PatchType::Apply {
                ctx.manager = r.query.get("fieldManager").unwrap_or("").to_string();
            }
            let force = r.query.flag("force");
            let name = r.name.as_deref().unwrap_or("");
            Ok(written(shared.patch(
                &info,
                r.ns(),
                name,
                ptype,
                &r.body,
                force,
                r.status,
                &ctx,
            )?))
        }
        "delete" => {
            if r.status {
                return Err(ApiError::method_not_allowed());
            }
            let ctx = r.ctx()?;
            let opts = DeleteOpts::parse(
                r.query.get("propagationPolicy"),
                r.query.get("orphanDependents"),
                &r.body,
            )?;
            let name = r.name.as_deref().unwrap_or("");
            Ok(match shared.delete(&info, r.ns(), name, &opts, &ctx)? {
                Deleted::Pending(w) => written(w),
                Deleted::Gone(status) => json(200, &status),
            })
        }
        "deletecollection" => {
            let ctx = r.ctx()?;
            let opts = DeleteOpts::parse(
                r.query.get("propagationPolicy"),
                r.query.get("orphanDependents"),
                &r.body,
            )?;
            let (labels, fields) = selectors(&info, &r.query)?;
            let ns = if info.namespaced {
                r.namespace.as_deref()
            } else {
                None
            };
            let (items, _, _) = shared.store.list(&info.storage, ns, None, 0, &|o| {
                labels.matches(o) && fields.matches(o)
            });
            for it in items {
                let name = it
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let ns = it
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                match shared.delete(&info, ns, name, &opts, &ctx) {
                    Ok(_) => {}
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(json(
                200,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
            ))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// Continue tokens: hex-encoded JSON {rv, ns, name} of the last item returned.
fn encode_continue(rv: u64, key: &(String, String)) -> String {
    let raw = json!({"rv": rv, "ns": key.0, "name": key.1}).to_string();
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> Option<(u64, (String, String))> {
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    let v: Value = serde_json::from_slice(&bytes?).ok()?;
    Some((
        v.get("rv")?.as_u64()?,
        (
            v.get("ns")?.as_str()?.to_string(),
            v.get("name")?.as_str()?.to_string(),
        ),
    ))
}

/// ListOptions rules of the API server (`resourceVersionMatch`, `sendInitialEvents`).
fn validate_list_options(q: &Query, watch: bool) -> Result<(), ApiError> {
    let rv = q.get("resourceVersion").filter(|v| !v.is_empty());
    let rv_match = q.get("resourceVersionMatch").filter(|v| !v.is_empty());
    let initial = q.get("sendInitialEvents").filter(|v| !v.is_empty());
    let mut causes = Vec::new();
    let forbidden = |f: &str, m: &str| Cause::forbidden(f, m);
    if let Some(m) = rv_match {
        if !matches!(m, "NotOlderThan" | "Exact") {
            causes.push(Cause::not_supported(
                "resourceVersionMatch",
                &json!(m),
                &[json!("Exact"), json!("NotOlderThan")],
            ));
        }
    }
    if watch {
        if initial.is_some() {
            if rv_match != Some("NotOlderThan") {
                causes.push(forbidden(
                    "resourceVersionMatch",
                    "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                ));
            }
            if initial == Some("true") && !q.flag("allowWatchBookmarks") {
                causes.push(forbidden(
                    "allowWatchBookmarks",
                    "sendInitialEvents requires setting allowWatchBookmarks to true",
                ));
            }
        } else if rv_match.is_some() {
            causes.push(forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ));
        }
    } else {
        if initial.is_some() {
            causes.push(forbidden(
                "sendInitialEvents",
                "sendInitialEvents is forbidden for list",
            ));
        }
        match (rv_match, rv) {
            (Some(_), None) => causes.push(forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            )),
            (Some("Exact"), Some("0")) => causes.push(forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
            )),
            _ => {}
        }
        if q.get("continue").is_some_and(|c| !c.is_empty()) && rv.is_some_and(|v| v != "0") {
            causes.push(forbidden(
                "resourceVersion",
                "specifying resource version is not allowed when using continue",
            ));
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            &crate::errors::Subject {
                group: "meta.k8s.io",
                plural: "",
                kind: "ListOptions",
                name: "",
            },
            causes,
        ))
    }
}

fn list(shared: &Arc<Shared>, r: &ResourceRequest) -> Result<Response<Body>, ApiError> {
    validate_list_options(&r.query, false)?;
    let info = &r.info;
    let (labels, fields) = selectors(info, &r.query)?;
    let limit = match r.query.get("limit") {
        None | Some("") => 0,
        Some(l) => l
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?
            .max(0) as usize,
    };
    let mut after = None;
    let mut list_rv = None;
    if let Some(token) = r.query.get("continue").filter(|t| !t.is_empty()) {
        let (rv, key) = decode_continue(token)
            .ok_or_else(|| ApiError::bad_request("continue key is not valid"))?;
        if rv < shared.store.compacted_rv() {
            return Err(ApiError::expired(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
            ));
        }
        after = Some(key);
        list_rv = Some(rv);
    }
    let ns = if info.namespaced {
        r.namespace.as_deref()
    } else {
        None
    };
    let (items, rv, next) = shared
        .store
        .list(&info.storage, ns, after.as_ref(), limit, &|o| {
            labels.matches(o) && fields.matches(o)
        });
    let rv = list_rv.unwrap_or(rv);
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(k) = &next {
        meta["continue"] = json!(encode_continue(rv, k));
    }
    let views: Vec<Arc<Value>> = items.iter().map(|o| to_view(info, o)).collect();
    if table::wants_table(&r.headers) {
        return Ok(json(200, &table::render(info, &views, &meta)));
    }
    if table::wants_metadata(&r.headers) {
        let items: Vec<Value> = views.iter().map(|v| table::partial(v)).collect();
        let body = json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": meta,
            "items": items});
        return Ok(json(200, &body));
    }
    let body = json!({"apiVersion": info.api_version(), "kind": info.list_kind, "metadata": meta,
        "items": views.iter().map(|v| (**v).clone()).collect::<Vec<_>>()});
    Ok(json(200, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_token_round_trips() {
        let t = encode_continue(42, &("ns".into(), "a-b".into()));
        assert_eq!(decode_continue(&t), Some((42, ("ns".into(), "a-b".into()))));
        assert_eq!(decode_continue("zz"), None);
    }
}
