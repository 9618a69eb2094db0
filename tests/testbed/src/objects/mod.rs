//! Create, update and patch with the API server's semantics: optimistic concurrency,
//! status subresource, finalizer rules, schema handling, generation, managedFields, no-op writes.

mod create;
mod update;

use std::sync::Arc;

use serde_json::{json, Value};

use crate::apply::{self, ApplyRequest, Scope};
use crate::errors::{ApiError, Cause};
use crate::metadata;
use crate::patch::{self, PatchType};
use crate::resources::{CrdDef, ResourceInfo};
use crate::schema;
use crate::state::{finalizers, is_deleting, meta_str, now_time, Shared};
use crate::stats::WriteRecord;
use crate::store::{rv_of, ObjKey};
use crate::views::{from_view, storage_api_version, to_view};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validation {
    Ignore,
    Warn,
    Strict,
}

impl Validation {
    pub fn parse(s: Option<&str>) -> Result<Validation, ApiError> {
        match s {
            None | Some("") | Some("Warn") => Ok(Validation::Warn),
            Some("Strict") => Ok(Validation::Strict),
            Some("Ignore") => Ok(Validation::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: {other:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""
            ))),
        }
    }
}

/// Who writes and how.
#[derive(Clone, Debug)]
pub struct WriteCtx {
    pub manager: String,
    pub user_agent: String,
    pub dry_run: bool,
    pub validation: Validation,
}

impl WriteCtx {
    /// Context of an in-process controller of the testbed.
    pub fn internal(agent: &str) -> Self {
        WriteCtx {
            manager: agent.into(),
            user_agent: agent.into(),
            dry_run: false,
            validation: Validation::Ignore,
        }
    }
}

/// Result of a successful write.
#[derive(Debug, Clone)]
pub struct Written {
    pub object: Arc<Value>,
    pub code: u16,
    pub warnings: Vec<String>,
}

enum Mode {
    Update,
    Apply,
}

/// The outcome of preparing a write against the stored object.
struct Prepared {
    /// The object after the write.
    object: Option<Value>,
    /// The write removes the last finalizer of an object being deleted: it goes away.
    remove: bool,
    noop: bool,
    warnings: Vec<String>,
}

fn scope_of(info: &ResourceInfo, status: bool) -> Scope {
    match (info.status, status) {
        (false, _) => Scope::Whole,
        (true, false) => Scope::Main,
        (true, true) => Scope::Status,
    }
}

fn ensure_object(v: Value) -> Result<Value, ApiError> {
    if v.is_object() {
        Ok(v)
    } else {
        Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ))
    }
}

fn check_type_meta(info: &ResourceInfo, body: &mut Value, required: bool) -> Result<(), ApiError> {
    let av = info.api_version();
    match body.get("apiVersion").and_then(Value::as_str) {
        Some(x) if x != av => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({x}) does not match the expected API version ({av})"
            )))
        }
        None if required => return Err(ApiError::bad_request("apiVersion must be set")),
        _ => {}
    }
    match body.get("kind").and_then(Value::as_str) {
        Some(k) if k != info.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                info.kind
            )))
        }
        None if required => return Err(ApiError::bad_request("kind must be set")),
        _ => {}
    }
    body["apiVersion"] = json!(av);
    body["kind"] = json!(info.kind);
    if !body.get("metadata").is_some_and(Value::is_object) {
        body["metadata"] = json!({});
    }
    Ok(())
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record(
        &self,
        ctx: &WriteCtx,
        verb: &str,
        ptype: Option<PatchType>,
        info: &ResourceInfo,
        sub: &str,
        key: (&str, &str),
        res: &Result<Written, ApiError>,
    ) {
        let (code, rv) = match res {
            Ok(w) => (
                w.code,
                meta_str(&w.object, "resourceVersion").map(String::from),
            ),
            Err(e) => (e.code, None),
        };
        self.stats.write(WriteRecord {
            seq: 0,
            time_us: 0,
            user_agent: ctx.user_agent.clone(),
            verb: verb.into(),
            patch_type: ptype.map(|p| p.as_str().to_string()),
            group: info.group.clone(),
            version: info.version.clone(),
            resource: info.plural.clone(),
            subresource: sub.into(),
            namespace: key.0.into(),
            name: key.1.into(),
            code,
            resource_version: rv,
        });
    }

    /// Prunes, defaults and validates against the CRD schema and ObjectMeta rules.
    /// `old`: the stored object on update; `status_only`: a `/status` write (admission webhooks of the main
    /// resource do not see it).
    fn check_content(
        &self,
        info: &ResourceInfo,
        obj: &mut Value,
        ctx: &WriteCtx,
        old: Option<&Value>,
        status_only: bool,
    ) -> Result<Vec<String>, ApiError> {
        let name = meta_str(obj, "name").unwrap_or("").to_string();
        let mut warnings = Vec::new();
        let mut causes = Vec::new();
        if !status_only {
            // Mutating admission (CAPI's defaulting webhook) runs before schema validation.
            self.capi_cluster_defaulting(info, obj)?;
        }
        if let Some(s) = &info.schema {
            let mut unknown = Vec::new();
            schema::prune_and_default(s, obj, &mut unknown);
            if !unknown.is_empty() {
                match ctx.validation {
                    Validation::Strict => {
                        let list: Vec<String> = unknown
                            .iter()
                            .map(|u| format!("unknown field \"{u}\""))
                            .collect();
                        return Err(ApiError::bad_request(format!(
                            "{kind} in version \"{v}\" cannot be handled as a {kind}: strict decoding error: {}",
                            list.join(", "),
                            kind = info.kind,
                            v = info.version
                        )));
                    }
                    Validation::Warn => {
                        warnings.extend(unknown.iter().map(|u| format!("unknown field \"{u}\"")))
                    }
                    Validation::Ignore => {}
                }
            }
            causes.extend(schema::validate(s, obj));
        }
        if let Some(meta) = obj.get("metadata") {
            causes.extend(metadata::validate(meta, info.namespaced));
        }
        if self.fidelity.event_validation
            && info.storage.group.is_empty()
            && info.storage.resource == "events"
        {
            causes.extend(crate::events::validate(
                obj,
                old,
                info.view == crate::resources::View::EventsV1,
            ));
        }
        if info.plural == "customresourcedefinitions" {
            if let Err(e) = CrdDef::parse(obj) {
                causes.push(Cause::invalid("spec", &Value::Null, &e));
            }
        }
        if !causes.is_empty() {
            let mut subject = info.subject(&name);
            if info.storage.group.is_empty() {
                // Built-ins are validated as their internal type: events.k8s.io Events are core Events.
                subject.group = "";
            }
            return Err(ApiError::invalid(&subject, causes));
        }
        if !status_only {
            // Validating admission (CAPI's validating webhook) runs after schema validation.
            warnings.extend(self.capi_cluster_validation(info, obj, old)?);
            self.capi_ipaddress_validation(info, obj, old)?;
            self.capi_ipaddressclaim_validation(info, obj, old)?;
        }
        Ok(warnings)
    }

    fn prepare(
        &self,
        info: &ResourceInfo,
        cur: &Value,
        mut new: Value,
        scope: Scope,
        ctx: &WriteCtx,
        mode: Mode,
    ) -> Result<Prepared, ApiError> {
        let name = meta_str(cur, "name").unwrap_or("").to_string();
        new["apiVersion"] = json!(storage_api_version(info));
        new["kind"] = json!(info.kind);
        if !new.get("metadata").is_some_and(Value::is_object) {
            new["metadata"] = json!({});
        }
        let provided_mf = new.pointer("/metadata/managedFields").cloned();
        metadata::keep_system_fields(cur, &mut new);
        match scope {
            Scope::Whole => {}
            Scope::Main => match cur.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            },
            Scope::Status => {
                let mut s = cur.clone();
                match new.get("status") {
                    Some(st) => s["status"] = st.clone(),
                    None => {
                        if let Some(m) = s.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                new = s;
            }
        }
        if let Some(mf) = provided_mf {
            new["metadata"]["managedFields"] = mf;
        }
        if is_deleting(cur) {
            let old = finalizers(cur);
            let extra: std::collections::BTreeSet<String> = finalizers(&new)
                .into_iter()
                .filter(|f| !old.contains(f))
                .collect();
            if !extra.is_empty() {
                // apimachinery `ValidateNoNewFinalizers`: Go's `%#v` of the sorted new names.
                let list: Vec<String> = extra.iter().map(|f| crate::gojson::quote(f)).collect();
                return Err(ApiError::invalid(
                    &info.subject(&name),
                    vec![Cause::forbidden(
                        "metadata.finalizers",
                        &format!(
                            "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                            list.join(", ")
                        ),
                    )],
                ));
            }
        }
        if info.plural == "customresourcedefinitions" {
            set_crd_status(&mut new);
        }
        let warnings =
            self.check_content(info, &mut new, ctx, Some(cur), scope == Scope::Status)?;
        if metadata::spec_changed(cur, &new, info.status) {
            let gen = cur
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            new["metadata"]["generation"] = json!(gen + 1);
        }
        // Clients may leave managedFields out (keep them) or send new ones (take them).
        let mf_provided = new
            .pointer("/metadata/managedFields")
            .and_then(Value::as_array)
            .is_some_and(|l| !l.is_empty());
        let keeps_mf = (matches!(mode, Mode::Update) && !mf_provided)
            || metadata::same_managed_fields(cur, &new);
        let noop = metadata::same_object(cur, &new) && keeps_mf;
        if noop {
            return Ok(Prepared {
                object: Some(cur.clone()),
                remove: false,
                noop: true,
                warnings,
            });
        }
        if matches!(mode, Mode::Update) {
            let schema = info.schema.as_deref();
            apply::record_update(
                Some(cur),
                &mut new,
                &ctx.manager,
                &info.api_version(),
                &now_time(),
                schema,
                scope,
            );
        }
        if is_deleting(&new) && finalizers(&new).is_empty() && info.plural != "namespaces" {
            return Ok(Prepared {
                object: Some(new),
                remove: true,
                noop: false,
                warnings,
            });
        }
        Ok(Prepared {
            object: Some(new),
            remove: false,
            noop: false,
            warnings,
        })
    }

    /// Stores a prepared write; None when the object changed meanwhile.
    fn commit(
        &self,
        info: &ResourceInfo,
        key: &ObjKey,
        expected: u64,
        new: Option<Value>,
    ) -> Option<Arc<Value>> {
        let stored = self.store.swap(key, Some(expected), new).ok()?;
        self.after_commit(info, &stored, true);
        Some(stored)
    }

    /// Side effects of a stored change (CRDs start or stop being served).
    pub(crate) fn after_commit(&self, info: &ResourceInfo, stored: &Value, exists: bool) {
        if exists && info.group == crate::capi::GROUP && info.plural == "clusterclasses" {
            self.reconcile_cluster_class(stored);
            return;
        }
        if info.plural != "customresourcedefinitions" || info.group != "apiextensions.k8s.io" {
            return;
        }
        let name = meta_str(stored, "name").unwrap_or("").to_string();
        let still_there = exists && self.store.get(&info.gr(), "", &name).is_some();
        if still_there {
            if let Err(e) = self.registry_mut().register_crd(stored) {
                tracing::warn!(crd = %name, error = %e, "cannot serve CRD");
            }
        } else if let Some(gr) = self.registry_mut().unregister_crd(&name) {
            self.store.drop_resource(&gr);
        }
    }

    fn finish(
        &self,
        info: &ResourceInfo,
        key: &ObjKey,
        cur: &Arc<Value>,
        p: Prepared,
        ctx: &WriteCtx,
    ) -> Result<Option<Written>, ApiError> {
        let cur_rv = rv_of(cur).unwrap_or(0);
        if p.noop {
            return Ok(Some(Written {
                object: to_view(info, cur),
                code: 200,
                warnings: p.warnings,
            }));
        }
        if ctx.dry_run {
            let shown = p.object.unwrap_or_else(|| (**cur).clone());
            return Ok(Some(Written {
                object: to_view(info, &Arc::new(shown)),
                code: 200,
                warnings: p.warnings,
            }));
        }
        let stored = if p.remove {
            let last = p.object.unwrap_or_else(|| (**cur).clone());
            let Ok(stored) = self.store.remove_as(key, cur_rv, last) else {
                return Ok(None);
            };
            self.after_commit(info, &stored, false);
            stored
        } else {
            let Some(stored) = self.commit(info, key, cur_rv, p.object) else {
                return Ok(None);
            };
            stored
        };
        Ok(Some(Written {
            object: to_view(info, &stored),
            code: 200,
            warnings: p.warnings,
        }))
    }
}

fn check_name(applied: &Value, name: &str) -> Result<(), ApiError> {
    match meta_str(applied, "name") {
        Some(n) if n != name => Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        ))),
        _ => Ok(()),
    }
}

fn conflict_error(info: &ResourceInfo, name: &str, c: &[apply::Conflict]) -> ApiError {
    let (msg, causes) = apply::conflict_message(c);
    ApiError::conflict_msg(&info.subject(name), msg, causes)
}

pub fn key_of(info: &ResourceInfo, ns: &str, name: &str) -> ObjKey {
    ObjKey {
        gr: info.storage.clone(),
        namespace: if info.namespaced {
            ns.to_string()
        } else {
            String::new()
        },
        name: name.to_string(),
    }
}

/// Parses an apply body: JSON, else YAML.
pub fn parse_yaml_or_json(body: &[u8]) -> Result<Value, ApiError> {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return Ok(v);
    }
    let text =
        std::str::from_utf8(body).map_err(|_| ApiError::bad_request("apply body is not UTF-8"))?;
    serde_saphyr::from_str::<Value>(text)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
}

/// A served CRD reports itself established at once.
fn set_crd_status(obj: &mut Value) {
    let Ok(def) = CrdDef::parse(obj) else { return };
    let now = now_time();
    // A condition that stays True keeps its transition time, so re-applying a CRD is a no-op.
    let since = |t: &str| {
        obj.pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.get("type").and_then(Value::as_str) == Some(t))
            })
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| json!(now))
    };
    let cond = |t: &str, reason: &str, msg: &str| json!({"type": t, "status": "True", "lastTransitionTime": since(t), "reason": reason, "message": msg});
    obj["status"] = json!({
        "conditions": [
            cond("NamesAccepted", "NoConflicts", "no conflicts found"),
            cond("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "acceptedNames": obj.pointer("/spec/names").cloned().unwrap_or_else(|| json!({})),
        "storedVersions": def.storage_version.map(|v| vec![v]).unwrap_or_default(),
    });
}
