//! DELETE: preconditions, finalizers and deletionTimestamp, propagation policies.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::errors::{success_status, ApiError};
use crate::objects::{key_of, WriteCtx, Written};
use crate::resources::ResourceInfo;
use crate::state::{finalizers, is_deleting, meta_str, now_time, Shared};
use crate::store::rv_of;
use crate::views::to_view;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
    Orphan,
}

pub const FOREGROUND: &str = "foregroundDeletion";
pub const ORPHAN: &str = "orphan";

#[derive(Clone, Debug, Default)]
pub struct DeleteOpts {
    pub propagation: Option<Propagation>,
    pub orphan_dependents: Option<bool>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    /// `dryRun: [All]` in the DeleteOptions body.
    pub dry_run: bool,
}

impl DeleteOpts {
    /// Reads DeleteOptions from the query and the (optional) JSON body.
    pub fn parse(
        query_policy: Option<&str>,
        query_orphan: Option<&str>,
        body: &[u8],
    ) -> Result<Self, ApiError> {
        let mut o = DeleteOpts::default();
        let parse_policy = |s: &str| {
            match s {
            "Background" => Ok(Propagation::Background),
            "Foreground" => Ok(Propagation::Foreground),
            "Orphan" => Ok(Propagation::Orphan),
            other => Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
            ))),
        }
        };
        if let Some(p) = query_policy.filter(|p| !p.is_empty()) {
            o.propagation = Some(parse_policy(p)?);
        }
        o.orphan_dependents = query_orphan.and_then(|s| s.parse().ok());
        if !body.iter().all(u8::is_ascii_whitespace) {
            let v: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?;
            if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
                o.propagation = Some(parse_policy(p)?);
            }
            if let Some(b) = v.get("orphanDependents").and_then(Value::as_bool) {
                o.orphan_dependents = Some(b);
            }
            o.dry_run = v
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|x| x == "All"));
            o.precondition_uid = v
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(String::from);
            o.precondition_rv = v
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(String::from);
        }
        if o.propagation.is_some() && o.orphan_dependents.is_some() {
            return Err(ApiError::bad_request(
                "orphanDependents and propagationPolicy cannot both be set",
            ));
        }
        Ok(o)
    }

    fn policy(&self) -> Propagation {
        match (self.propagation, self.orphan_dependents) {
            (Some(p), _) => p,
            (None, Some(true)) => Propagation::Orphan,
            _ => Propagation::Background,
        }
    }
}

/// What a delete produced: the object still being deleted, or a Status for one that is gone.
pub enum Deleted {
    Pending(Written),
    Gone(Value),
}

impl Shared {
    pub fn delete(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
        ctx: &WriteCtx,
    ) -> Result<Deleted, ApiError> {
        let res = self.delete_inner(info, ns, name, opts, ctx);
        let rec = match &res {
            Ok(Deleted::Pending(w)) => Ok(w.clone()),
            Ok(Deleted::Gone(_)) => Ok(Written {
                object: Arc::new(json!({})),
                code: 200,
                warnings: vec![],
            }),
            Err(e) => Err(e.clone()),
        };
        self.record(ctx, "delete", None, info, "", (ns, name), &rec);
        res
    }

    fn delete_inner(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
        ctx: &WriteCtx,
    ) -> Result<Deleted, ApiError> {
        let key = key_of(info, ns, name);
        loop {
            let Some(cur) = self.store.get(&key.gr, &key.namespace, &key.name) else {
                return Err(ApiError::not_found(&info.subject(name)));
            };
            let uid = meta_str(&cur, "uid").unwrap_or("").to_string();
            if let Some(want) = &opts.precondition_uid {
                if *want != uid {
                    return Err(ApiError::conflict_msg(
                        &info.subject(name),
                        format!("Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"),
                        vec![],
                    ));
                }
            }
            if let Some(want) = &opts.precondition_rv {
                let have = meta_str(&cur, "resourceVersion").unwrap_or("");
                if want != have {
                    return Err(ApiError::conflict_msg(
                        &info.subject(name),
                        format!("Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {have}"),
                        vec![],
                    ));
                }
            }
            let mut fins = finalizers(&cur);
            let policy = opts.policy();
            let wanted = match policy {
                Propagation::Foreground => Some(crate::delete::FOREGROUND),
                Propagation::Orphan => Some(crate::delete::ORPHAN),
                Propagation::Background => None,
            };
            if let Some(f) = wanted {
                if !fins.iter().any(|x| x == f) && (!is_deleting(&cur) || !fins.is_empty()) {
                    fins.push(f.to_string());
                }
            }
            let is_namespace = info.plural == "namespaces" && info.group.is_empty();
            let keep = !fins.is_empty() || is_namespace;
            if ctx.dry_run || opts.dry_run {
                return Ok(if keep {
                    Deleted::Pending(Written {
                        object: to_view(info, &cur),
                        code: 200,
                        warnings: vec![],
                    })
                } else {
                    Deleted::Gone(success_status(&info.group, &info.plural, name, &uid))
                });
            }
            let cur_rv = rv_of(&cur);
            if keep {
                let mut new = (*cur).clone();
                if !is_deleting(&cur) {
                    new["metadata"]["deletionTimestamp"] = json!(now_time());
                    new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                    let gen = cur
                        .pointer("/metadata/generation")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    new["metadata"]["generation"] = json!(gen + 1);
                }
                if !fins.is_empty() {
                    new["metadata"]["finalizers"] = json!(fins);
                }
                if is_namespace {
                    if !new.get("status").is_some_and(Value::is_object) {
                        new["status"] = json!({});
                    }
                    new["status"]["phase"] = json!("Terminating");
                }
                if new == *cur {
                    return Ok(Deleted::Pending(Written {
                        object: to_view(info, &cur),
                        code: 200,
                        warnings: vec![],
                    }));
                }
                match self.store.swap(&key, cur_rv, Some(new)) {
                    Ok(stored) => {
                        let code = if opts.orphan_dependents == Some(false) {
                            202
                        } else {
                            200
                        };
                        return Ok(Deleted::Pending(Written {
                            object: to_view(info, &stored),
                            code,
                            warnings: vec![],
                        }));
                    }
                    Err(_) => continue,
                }
            }
            match self.store.swap(&key, cur_rv, None) {
                Ok(last) => {
                    self.after_commit(info, &last, false);
                    return Ok(Deleted::Gone(success_status(
                        &info.group,
                        &info.plural,
                        name,
                        &uid,
                    )));
                }
                Err(_) => continue,
            }
        }
    }
}
