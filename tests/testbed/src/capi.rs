//! CAPI's Cluster admission webhooks, as far as topology variables go (cluster-api
//! `core/webhooks/admission/cluster.go`, `internal/topology/variables/cluster_variable_{defaulting,validation}.go`),
//! and the part of the ClusterClass controller they depend on (`status.variables`, `observedGeneration`,
//! `VariablesReady`).
//!
//! On create and update of a Cluster (any API version, any write verb, not `/status`):
//! - the ClusterClass is looked up (`classRef`/`class`, `classRef.namespace`/`classNamespace`, else the Cluster's
//!   namespace). Missing or not reconciled (`generation` ≠ `status.observedGeneration`, or no `VariablesReady` /
//!   `VariablesReconciled` condition, or a False one): variables are neither defaulted nor validated, and a warning
//!   is returned; on update a missing class is refused by the validating webhook;
//! - otherwise (defaulting webhook `default.cluster.cluster.x-k8s.io`): variables with a schema `default` missing
//!   from the Cluster are added, nested defaults filled; every variable must be defined in `status.variables`
//!   ("variable is not defined"), required ones must be set, each value must match its `openAPIV3Schema` and carry
//!   no undeclared fields. Every variable is validated on every write (the old value only feeds CEL transition
//!   rules, which are not run here). Variable overrides of the control plane, MachineDeployments and
//!   MachinePools are checked the same way, without the required check and without adding new variables.

use serde_json::{json, Value};

use crate::errors::{short_value, ApiError, Cause};
use crate::gojson;
use crate::objects::WriteCtx;
use crate::patch::PatchType;
use crate::resources::ResourceInfo;
use crate::schema;
use crate::state::{is_deleting, meta_str, now_time, Shared};
use crate::store::GroupResource;

pub const GROUP: &str = "cluster.x-k8s.io";
pub const DEFAULTING_WEBHOOK: &str = "default.cluster.cluster.x-k8s.io";
pub const VALIDATING_WEBHOOK: &str = "validation.cluster.cluster.x-k8s.io";
/// User agent and field manager of the ClusterClass status writes.
pub const AGENT: &str = "testbed-capi";
const VARS: &str = "spec.topology.variables";

fn denied(webhook: &str, mut e: ApiError) -> ApiError {
    e.message = format!(
        "admission webhook \"{webhook}\" denied the request: {}",
        e.message
    );
    e
}

fn class_key(cluster: &Value) -> Option<(String, String)> {
    let topo = cluster.pointer("/spec/topology")?;
    let name = topo
        .pointer("/classRef/name")
        .or_else(|| topo.get("class"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let ns = topo
        .pointer("/classRef/namespace")
        .or_else(|| topo.get("classNamespace"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or_else(|| meta_str(cluster, "namespace"))
        .unwrap_or("");
    Some((ns.to_string(), name.to_string()))
}

/// Whether the ClusterClass controller has reconciled this generation and its variables.
pub fn reconciled(class: &Value) -> bool {
    let gen = class
        .pointer("/metadata/generation")
        .and_then(Value::as_i64);
    let observed = class
        .pointer("/status/observedGeneration")
        .and_then(Value::as_i64);
    if gen.unwrap_or(0) != observed.unwrap_or(0) {
        return false;
    }
    let lists = [
        class.pointer("/status/conditions"),
        class.pointer("/status/v1beta2/conditions"),
    ];
    let cond = lists
        .iter()
        .flatten()
        .filter_map(|l| l.as_array())
        .flatten()
        .find(|c| {
            matches!(
                c.get("type").and_then(Value::as_str),
                Some("VariablesReady" | "VariablesReconciled")
            )
        });
    cond.is_some_and(|c| c.get("status").and_then(Value::as_str) != Some("False"))
}

/// Go's rendering of a variable's raw value as a `field.Error` bad value (`%q` of the JSON bytes).
fn raw_quoted(v: &Value) -> String {
    gojson::quote(&gojson::encode_value(v))
}

fn invalid_raw(field: &str, v: &Value, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        field: field.to_string(),
        message: format!("Invalid value: {}: {detail}", raw_quoted(v)),
    }
}

/// The value at a path relative to a variable's value (`host`, `[0].name`).
fn value_at<'a>(v: &'a Value, rel: &str) -> Option<&'a Value> {
    let mut cur = v;
    let mut rest = rel;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('[') {
            let (idx, tail) = r.split_once(']')?;
            cur = cur.get(idx.parse::<usize>().ok()?)?;
            rest = tail;
        } else {
            let r = rest.strip_prefix('.').unwrap_or(rest);
            let end = r.find(['.', '[']).unwrap_or(r.len());
            cur = cur.get(&r[..end])?;
            rest = &r[end..];
        }
    }
    Some(cur)
}

/// One variable's value against its schema, with CAPI's rewriting of kube-openapi's errors: the bad value is the
/// variable's raw JSON, a leading " in body " is trimmed from the detail.
fn validate_variable(list: &str, name: &str, value: &Value, schema: &Value) -> Vec<Cause> {
    let base = format!("{list}[{name}]");
    let vpath = format!("{base}.value");
    let raw = raw_quoted(value);
    let mut out = Vec::new();
    let causes = schema::validate_value(schema, value);
    for c in &causes {
        let field = if c.field.is_empty() {
            vpath.clone()
        } else if c.field.starts_with('[') {
            format!("{vpath}{}", c.field)
        } else {
            format!("{vpath}.{}", c.field)
        };
        let shown = value_at(value, &c.field)
            .map(short_value)
            .unwrap_or_default();
        let rewrite = |kind: &str| {
            c.message
                .strip_prefix(&format!("{kind}: {shown}"))
                .map(|detail| {
                    let detail = detail.strip_prefix(": ").unwrap_or(detail);
                    let detail = detail.strip_prefix(" in body ").unwrap_or(detail);
                    if detail.is_empty() {
                        format!("{kind}: {raw}")
                    } else {
                        format!("{kind}: {raw}: {detail}")
                    }
                })
        };
        let message = match c.reason {
            "FieldValueInvalid" | "FieldValueTypeInvalid" => rewrite("Invalid value"),
            "FieldValueNotSupported" => rewrite("Unsupported value"),
            _ => None,
        }
        .unwrap_or_else(|| c.message.clone());
        out.push(Cause {
            reason: c.reason,
            field,
            message,
        });
    }
    if !out.is_empty() {
        return out;
    }
    // Undeclared fields (pruning would drop them) are refused.
    let wrapped_schema = json!({"type": "object", "properties": {"variableValue": schema}});
    let mut wrapped = json!({ "variableValue": value });
    let mut unknown = Vec::new();
    schema::prune_and_default(&wrapped_schema, &mut wrapped, &mut unknown);
    if !unknown.is_empty() {
        let list: Vec<&str> = unknown
            .iter()
            .map(|u| u.strip_prefix("variableValue.").unwrap_or(u))
            .collect();
        out.push(invalid_raw(
            &base,
            value,
            &format!(
                "failed validation: {} field(s) are not specified in the variable schema of variable {}",
                gojson::quote(&list.join(",")),
                gojson::quote(name)
            ),
        ));
    }
    out
}

struct Definition {
    required: bool,
    schema: Value,
}

/// `status.variables` by name; errors when a variable has no or conflicting definitions.
fn definitions(class: &Value, list_path: &str) -> Result<Vec<(String, Definition)>, Cause> {
    let mut out = Vec::new();
    let mut errs = Vec::new();
    let list = class
        .pointer("/status/variables")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for v in &list {
        let name = v
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let defs = v.get("definitions").and_then(Value::as_array);
        let Some(first) = defs.and_then(|d| d.first()) else {
            errs.push(format!(
                "variable {} has no definitions",
                gojson::quote(&name)
            ));
            continue;
        };
        if v.get("definitionsConflict").and_then(Value::as_bool) == Some(true) {
            errs.push(format!(
                "variable {} has conflicting definitions",
                gojson::quote(&name)
            ));
            continue;
        }
        out.push((
            name,
            Definition {
                required: first.get("required").and_then(Value::as_bool) == Some(true),
                schema: first
                    .pointer("/schema/openAPIV3Schema")
                    .cloned()
                    .unwrap_or_else(|| json!({})),
            },
        ));
    }
    if errs.is_empty() {
        return Ok(out);
    }
    let names: Vec<String> = list
        .iter()
        .map(|v| {
            format!(
                "Name: {}",
                v.get("name").and_then(Value::as_str).unwrap_or("")
            )
        })
        .collect();
    let aggregate = if errs.len() == 1 {
        errs.remove(0)
    } else {
        format!("[{}]", errs.join(", "))
    };
    Err(Cause {
        reason: "FieldValueTypeInvalid",
        field: list_path.into(),
        message: format!(
            "Invalid value: {}: variable definitions in the ClusterClass not valid: {aggregate}",
            gojson::quote(&format!("[{}]", names.join(",")))
        ),
    })
}

/// Duplicate names in the Cluster's variables.
fn duplicates(values: &[Value], list: &str) -> Vec<Cause> {
    let mut seen: Vec<&str> = Vec::new();
    let mut causes = Vec::new();
    for v in values {
        let name = v.get("name").and_then(Value::as_str).unwrap_or("");
        if seen.contains(&name) {
            causes.push(invalid_raw(
                &format!("{list}[{name}]"),
                v.get("value").unwrap_or(&Value::Null),
                &format!("variable {} is set more than once", gojson::quote(name)),
            ));
        }
        seen.push(name);
    }
    causes
}

/// `DefaultVariables` then `Validate{Cluster,ControlPlane,Machine}Variables` of the defaulting webhook, for
/// `spec.topology.variables` and the variable overrides of the control plane, MachineDeployments and
/// MachinePools; mutates `cluster` (defaults) only when nothing is wrong with a list.
fn default_and_validate(cluster: &mut Value, class: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let mut lists: Vec<(String, String, bool)> =
        vec![("/spec/topology/variables".into(), VARS.into(), true)];
    lists.push((
        "/spec/topology/controlPlane/variables/overrides".into(),
        "spec.topology.controlPlane.variables.overrides".into(),
        false,
    ));
    for kind in ["machineDeployments", "machinePools"] {
        let workers = cluster
            .pointer(&format!("/spec/topology/workers/{kind}"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (i, w) in workers.iter().enumerate() {
            let name = w.get("name").and_then(Value::as_str).unwrap_or("");
            lists.push((
                format!("/spec/topology/workers/{kind}/{i}/variables/overrides"),
                format!("spec.topology.workers.{kind}[{name}].variables.overrides"),
                false,
            ));
        }
    }
    for (pointer, path, cluster_wide) in lists {
        let values = cluster.pointer(&pointer).and_then(Value::as_array).cloned();
        if !cluster_wide && values.as_ref().is_none_or(Vec::is_empty) {
            continue;
        }
        let values = values.unwrap_or_default();
        let (defaulted, errs) = default_and_validate_list(&values, class, &path, cluster_wide);
        causes.extend(errs);
        if let Some(d) = defaulted.filter(|d| *d != values) {
            if let Some(slot) = cluster.pointer_mut(&pointer) {
                *slot = Value::Array(d);
            } else if cluster_wide
                && cluster
                    .pointer("/spec/topology")
                    .is_some_and(Value::is_object)
            {
                cluster["spec"]["topology"]["variables"] = Value::Array(d);
            }
        }
    }
    causes
}

/// One variables list: defaulting (new variables only for the cluster-wide list), then validation (required
/// variables only for the cluster-wide list). Returns the defaulted list when defaulting succeeded.
fn default_and_validate_list(
    values: &[Value],
    class: &Value,
    list: &str,
    cluster_wide: bool,
) -> (Option<Vec<Value>>, Vec<Cause>) {
    let name_of = |v: &Value| {
        v.get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let value_of = |v: &Value| v.get("value").cloned().unwrap_or(Value::Null);
    let dups = duplicates(values, list);
    if !dups.is_empty() {
        let mut all = dups.clone();
        all.extend(dups);
        return (None, all);
    }
    let defs = match definitions(class, list) {
        Ok(d) => d,
        Err(c) => return (None, vec![c.clone(), c]),
    };
    let def = |n: &str| defs.iter().find(|(k, _)| k == n).map(|(_, d)| d);
    let mut causes = Vec::new();
    // Defaulting: top-level defaults for missing variables, nested defaults inside set ones.
    let mut defaulted: Vec<Value> = Vec::new();
    for v in values {
        let name = name_of(v);
        match def(&name) {
            None => causes.push(invalid_raw(
                &format!("{list}[{name}]"),
                &value_of(v),
                "variable is not defined",
            )),
            Some(d) => {
                let mut entry = v.clone();
                if let Some(val) = entry.get("value").filter(|x| !x.is_null()).cloned() {
                    let wrapped_schema =
                        json!({"type": "object", "properties": {"variableValue": d.schema}});
                    let mut wrapped = json!({ "variableValue": val });
                    schema::prune_and_default(&wrapped_schema, &mut wrapped, &mut Vec::new());
                    // Keep undeclared fields: validation reports them.
                    let mut filled = value_of(v);
                    merge_defaults(&mut filled, &wrapped["variableValue"]);
                    entry["value"] = filled;
                }
                defaulted.push(entry);
            }
        }
    }
    if cluster_wide {
        for (name, d) in &defs {
            if values.iter().any(|v| name_of(v) == *name) {
                continue;
            }
            if let Some(default) = d.schema.get("default") {
                defaulted.push(json!({"name": name, "value": default}));
            }
        }
    }
    let (values, result) = if causes.is_empty() {
        (defaulted.clone(), Some(defaulted))
    } else {
        (values.to_vec(), None)
    };
    // Validation.
    if cluster_wide {
        for (name, d) in &defs {
            if d.required && !values.iter().any(|v| name_of(v) == *name) {
                causes.push(Cause {
                    reason: "FieldValueRequired",
                    field: list.into(),
                    message: format!(
                        "Required value: required variable {} must be set",
                        gojson::quote(name)
                    ),
                });
            }
        }
    }
    for v in &values {
        let name = name_of(v);
        match def(&name) {
            None => causes.push(invalid_raw(
                &format!("{list}[{name}]"),
                &value_of(v),
                "variable is not defined",
            )),
            Some(d) => causes.extend(validate_variable(list, &name, &value_of(v), &d.schema)),
        }
    }
    (result, causes)
}

/// Adds fields of `defaulted` missing from `v` (objects only).
/// blang/semver `Parse`: `MAJOR.MINOR.PATCH[-pre][+build]`, numbers without leading zeros.
fn is_semver(v: &str) -> bool {
    let num = |p: &str| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (p == "0" || !p.starts_with('0'))
    };
    let ident =
        |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let (rest, build) = match v.split_once('+') {
        Some((r, b)) => (r, Some(b)),
        None => (v, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (rest, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| num(p))
        && pre.is_none_or(|p| {
            p.split('.')
                .all(|i| ident(i) && (!i.bytes().all(|b| b.is_ascii_digit()) || num(i)))
        })
        && build.is_none_or(|b| b.split('.').all(ident))
}

fn merge_defaults(v: &mut Value, defaulted: &Value) {
    match (v, defaulted) {
        (Value::Object(m), Value::Object(d)) => {
            for (k, dv) in d {
                match m.get_mut(k) {
                    Some(cur) => merge_defaults(cur, dv),
                    None => {
                        m.insert(k.clone(), dv.clone());
                    }
                }
            }
        }
        (Value::Array(a), Value::Array(d)) => {
            for (cur, dv) in a.iter_mut().zip(d) {
                merge_defaults(cur, dv);
            }
        }
        _ => {}
    }
}

impl Shared {
    fn capi_cluster(&self, info: &ResourceInfo, obj: &Value) -> Option<(String, String, String)> {
        if !self.fidelity.capi_cluster_webhook || info.group != GROUP || info.kind != "Cluster" {
            return None;
        }
        let (ns, class) = class_key(obj)?;
        Some((ns, class, meta_str(obj, "name").unwrap_or("").to_string()))
    }

    /// CAPI's defaulting webhook (`default.cluster.cluster.x-k8s.io`) on a main-resource create (`old` None) or
    /// update of a Cluster in storage shape: `v` prefix of the version, class name required, variables defaulted
    /// and validated when the class exists and is reconciled. Runs before schema validation.
    pub(crate) fn capi_cluster_defaulting(
        &self,
        info: &ResourceInfo,
        obj: &mut Value,
    ) -> Result<(), ApiError> {
        let Some((ns, class, name)) = self.capi_cluster(info, obj) else {
            return Ok(());
        };
        let subject = crate::errors::Subject {
            kind: "Cluster",
            ..info.subject(&name)
        };
        if let Some(v) = obj
            .pointer("/spec/topology/version")
            .and_then(Value::as_str)
            .filter(|v| !v.starts_with('v'))
        {
            obj["spec"]["topology"]["version"] = json!(format!("v{v}"));
        }
        if class.is_empty() {
            return Err(denied(
                DEFAULTING_WEBHOOK,
                ApiError::invalid(
                    &subject,
                    vec![Cause {
                        reason: "FieldValueRequired",
                        field: "spec.topology.classRef.name".into(),
                        message: "Required value: cannot be empty".into(),
                    }],
                ),
            ));
        }
        let gr = GroupResource::new(GROUP, "clusterclasses");
        if let Some(cc) = self.store.get(&gr, &ns, &class).filter(|cc| reconciled(cc)) {
            let causes = default_and_validate(obj, &cc);
            if !causes.is_empty() {
                return Err(denied(
                    DEFAULTING_WEBHOOK,
                    ApiError::invalid(&subject, causes),
                ));
            }
        }
        Ok(())
    }

    /// CAPI's validating webhook (`validation.cluster.cluster.x-k8s.io`), after schema validation: the Cluster
    /// name is a label value, the version is semver, the class exists on update. Returns its warnings (class
    /// missing on create, or not reconciled).
    pub(crate) fn capi_cluster_validation(
        &self,
        info: &ResourceInfo,
        obj: &Value,
        old: Option<&Value>,
    ) -> Result<Vec<String>, ApiError> {
        let Some((ns, class, name)) = self.capi_cluster(info, obj) else {
            return Ok(Vec::new());
        };
        let subject = crate::errors::Subject {
            kind: "Cluster",
            ..info.subject(&name)
        };
        let mut causes = Vec::new();
        for msg in crate::metadata::label_value_errors(&name) {
            causes.push(Cause::invalid(
                "metadata.name",
                &json!(name),
                &format!("must be a valid label value {msg}"),
            ));
        }
        let version = obj
            .pointer("/spec/topology/version")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !version.starts_with('v') {
            causes.push(Cause::invalid(
                "spec.topology.version",
                &json!(version),
                "must start with v",
            ));
        }
        if !is_semver(version.trim_start_matches('v')) {
            causes.push(Cause::invalid(
                "spec.topology.version",
                &json!(version),
                "version must be a valid semantic version",
            ));
        }
        let key = format!("{ns}/{class}");
        let gr = GroupResource::new(GROUP, "clusterclasses");
        let mut warnings = Vec::new();
        match self.store.get(&gr, &ns, &class) {
            None if old.is_some() => causes.push(Cause {
                reason: "InternalError",
                field: "spec.topology.class".into(),
                message: format!("Internal error: ClusterClass {key} not found"),
            }),
            None => warnings.push(format!(
                "Cluster refers to ClusterClass {key}, but this ClusterClass does not exist. Cluster topology has not been fully validated. The ClusterClass must be created to reconcile the Cluster"
            )),
            Some(cc) if !reconciled(&cc) => warnings.push(format!(
                "Cluster refers to ClusterClass {key}, but this ClusterClass hasn't been successfully reconciled. Cluster topology has not been fully validated. Please take a look at the ClusterClass status"
            )),
            Some(_) => {}
        }
        if !causes.is_empty() {
            return Err(denied(
                VALIDATING_WEBHOOK,
                ApiError::invalid(&subject, causes),
            ));
        }
        Ok(warnings)
    }

    /// The ClusterClass controller's variables reconcile: `status.variables` from `spec.variables` (`from:
    /// inline`, definitions of other origins kept), `observedGeneration`, a True `VariablesReady` condition
    /// (`VariablesReconciled` for v1beta1). Paused classes (`cluster.x-k8s.io/paused`) are left alone.
    pub(crate) fn reconcile_cluster_class(&self, stored: &Value) {
        if !self.fidelity.capi_cluster_webhook || is_deleting(stored) {
            return;
        }
        if stored
            .pointer("/metadata/annotations/cluster.x-k8s.io~1paused")
            .is_some()
        {
            return;
        }
        let gr = GroupResource::new(GROUP, "clusterclasses");
        let Some(info) = self.info_for(&gr) else {
            return;
        };
        let v1beta1 = stored
            .get("apiVersion")
            .and_then(Value::as_str)
            .is_some_and(|a| a.ends_with("/v1beta1"));
        let status = desired_class_status(stored, v1beta1);
        if stored.get("status") == Some(&status) {
            return;
        }
        let ns = meta_str(stored, "namespace").unwrap_or("").to_string();
        let name = meta_str(stored, "name").unwrap_or("").to_string();
        let body = json!({"status": status}).to_string();
        let ctx = WriteCtx::internal(AGENT);
        if let Err(e) = self.patch(
            &info,
            &ns,
            &name,
            PatchType::Merge,
            body.as_bytes(),
            false,
            true,
            &ctx,
        ) {
            tracing::warn!(class = %name, error = %e.message, "cannot write ClusterClass status");
        }
    }
}

fn desired_class_status(class: &Value, v1beta1: bool) -> Value {
    let mut status = class.get("status").cloned().unwrap_or_else(|| json!({}));
    if !status.is_object() {
        status = json!({});
    }
    let gen = class
        .pointer("/metadata/generation")
        .cloned()
        .unwrap_or(json!(1));
    let meta_key = if v1beta1 {
        "metadata"
    } else {
        "deprecatedV1Beta1Metadata"
    };
    let mut vars: Vec<Value> = Vec::new();
    for v in class
        .pointer("/spec/variables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let mut d = json!({
            "from": "inline",
            "required": v.get("required").cloned().unwrap_or(json!(false)),
            "schema": v.get("schema").cloned().unwrap_or_else(|| json!({"openAPIV3Schema": {}})),
        });
        if let Some(m) = v.get(meta_key) {
            d[meta_key] = m.clone();
        }
        vars.push(json!({"name": v.get("name").cloned().unwrap_or(json!("")), "definitions": [d]}));
    }
    // Definitions discovered from runtime extensions (any `from` but inline) are kept.
    for old in status
        .get("variables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = old.get("name").cloned().unwrap_or(json!(""));
        for d in old
            .get("definitions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|d| d.get("from").and_then(Value::as_str) != Some("inline"))
        {
            match vars.iter_mut().find(|v| v["name"] == name) {
                Some(v) => {
                    if let Some(a) = v["definitions"].as_array_mut() {
                        a.push(d.clone());
                    }
                }
                None => vars.push(json!({"name": name, "definitions": [d]})),
            }
        }
    }
    for v in &mut vars {
        let defs = v["definitions"].as_array().cloned().unwrap_or_default();
        let conflict = defs.windows(2).any(|w| {
            w[0].get("schema") != w[1].get("schema") || w[0].get("required") != w[1].get("required")
        });
        v["definitionsConflict"] = json!(conflict);
    }
    if vars.is_empty() {
        if let Some(m) = status.as_object_mut() {
            m.remove("variables");
        }
    } else {
        status["variables"] = Value::Array(vars);
    }
    status["observedGeneration"] = gen.clone();
    let ty = if v1beta1 {
        "VariablesReconciled"
    } else {
        "VariablesReady"
    };
    let mut conds: Vec<Value> = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let since = conds
        .iter()
        .find(|c| c["type"] == ty && c["status"] == "True")
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(now_time()));
    conds.retain(|c| c["type"] != ty);
    let cond = if v1beta1 {
        json!({"type": ty, "status": "True", "lastTransitionTime": since})
    } else {
        json!({"type": ty, "status": "True", "reason": "VariablesReady", "message": "",
            "observedGeneration": gen, "lastTransitionTime": since})
    };
    conds.push(cond);
    status["conditions"] = Value::Array(conds);
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class() -> Value {
        let mut c = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "ClusterClass",
            "metadata": {"name": "cc", "namespace": "default", "generation": 1},
            "spec": {"variables": [
                {"name": "clusterVip", "required": false, "schema": {"openAPIV3Schema": {"type": "string", "format": "ipv6"}}},
                {"name": "iface", "required": false, "schema": {"openAPIV3Schema": {"type": "string", "default": "eth0"}}},
                {"name": "must", "required": true, "schema": {"openAPIV3Schema": {"type": "object",
                    "properties": {"port": {"type": "integer", "maximum": 10, "default": 5}}}}}]}});
        c["status"] = desired_class_status(&c, false);
        c
    }

    fn cluster(vars: Value) -> Value {
        json!({"metadata": {"name": "c1", "namespace": "default"},
            "spec": {"topology": {"classRef": {"name": "cc"}, "variables": vars}}})
    }

    #[test]
    fn semver_like_blang() {
        assert!(is_semver("1.32.0") && is_semver("1.32.0-rc.1+build.5"));
        assert!(!is_semver("1.32") && !is_semver("01.2.3") && !is_semver("1.2.3-01"));
    }

    #[test]
    fn class_status_is_reconciled() {
        let c = class();
        assert!(reconciled(&c));
        assert_eq!(
            c["status"]["variables"][0]["definitions"][0]["from"],
            "inline"
        );
        let mut stale = c.clone();
        stale["metadata"]["generation"] = json!(2);
        assert!(!reconciled(&stale));
    }

    #[test]
    fn variables_are_defaulted_and_validated_like_capi() {
        let mut ok = cluster(
            json!([{"name": "must", "value": {}}, {"name": "clusterVip", "value": "fd00::1"}]),
        );
        assert!(default_and_validate(&mut ok, &class()).is_empty());
        let vars = ok["spec"]["topology"]["variables"].as_array().unwrap();
        assert_eq!(vars[0]["value"], json!({"port": 5}));
        assert_eq!(vars[2], json!({"name": "iface", "value": "eth0"}));

        let mut bad = cluster(
            json!([{"name": "clusterVip", "value": "10.0.0.1"}, {"name": "nope", "value": "x"}]),
        );
        let causes = default_and_validate(&mut bad, &class());
        let shown: Vec<(&str, &str)> = causes
            .iter()
            .map(|c| (c.field.as_str(), c.message.as_str()))
            .collect();
        assert_eq!(
            shown,
            [
                (
                    "spec.topology.variables[nope]",
                    r#"Invalid value: "\"x\"": variable is not defined"#
                ),
                (
                    "spec.topology.variables",
                    r#"Required value: required variable "must" must be set"#
                ),
                (
                    "spec.topology.variables[clusterVip].value",
                    r#"Invalid value: "\"10.0.0.1\"": must be of type ipv6: "10.0.0.1""#
                ),
                (
                    "spec.topology.variables[nope]",
                    r#"Invalid value: "\"x\"": variable is not defined"#
                ),
            ]
        );
        let mut nested = cluster(json!([{"name": "must", "value": {"port": 11, "extra": 1}}]));
        let causes = default_and_validate(&mut nested, &class());
        assert_eq!(causes[0].field, "spec.topology.variables[must].value.port");
        assert_eq!(
            causes[0].message,
            r#"Invalid value: "{\"extra\":1,\"port\":11}": port in body should be less than or equal to 10"#
        );
        let mut overrides = cluster(json!([{"name": "must", "value": {}}]));
        overrides["spec"]["topology"]["workers"] = json!({"machineDeployments": [{"name": "md-0", "class": "w",
            "variables": {"overrides": [{"name": "nope", "value": 1}, {"name": "clusterVip", "value": "fd00::2"}]}}]});
        let causes = default_and_validate(&mut overrides, &class());
        assert_eq!(causes.len(), 2, "{causes:?}");
        assert_eq!(
            causes[0].field,
            "spec.topology.workers.machineDeployments[md-0].variables.overrides[nope]"
        );
        let mut extra = cluster(json!([{"name": "must", "value": {"extra": 1}}]));
        let causes = default_and_validate(&mut extra, &class());
        assert_eq!(
            causes[0].message,
            r#"Invalid value: "{\"extra\":1,\"port\":5}": failed validation: "extra" field(s) are not specified in the variable schema of variable "must""#
        );
    }
}
