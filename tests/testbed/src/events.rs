//! kube-apiserver's Event validation (kubernetes `pkg/apis/core/validation/events.go`), on the stored (core/v1)
//! shape. Field paths are those of the internal type, whichever API version the client used (`message`, not
//! `note`; `reportingController`); lengths are counted in bytes although the message says "characters".
//!
//! - every request ("legacy" rules): when `eventTime` is set, `reportingController` (a qualified name),
//!   `reportingInstance` (≤ 128), `action` (≤ 128), `reason` (≤ 128) are required and `message` is ≤ 1024;
//!   the involved object's namespace must match the Event's (or the Event is in `default`/`kube-system` for
//!   cluster-scoped objects);
//! - events.k8s.io/v1 create: also `eventTime` required, `type` `Normal` or `Warning`, the deprecated fields
//!   (`deprecatedFirstTimestamp`, `…LastTimestamp`, `…Count`, `…Source`) unset, a `series` with `count` ≥ 2 and
//!   `lastObservedTime`;
//! - events.k8s.io/v1 update: those fields are immutable.

use serde_json::Value;

use crate::errors::Cause;
use crate::metadata;

pub const REPORTING_INSTANCE_LIMIT: usize = 128;
pub const ACTION_LIMIT: usize = 128;
pub const REASON_LIMIT: usize = 128;
pub const NOTE_LIMIT: usize = 1024;

fn s<'a>(ev: &'a Value, field: &str) -> &'a str {
    ev.get(field).and_then(Value::as_str).unwrap_or("")
}

fn set(ev: &Value, field: &str) -> bool {
    ev.get(field)
        .is_some_and(|v| !v.is_null() && *v != Value::String(String::new()))
}

fn invalid_blank(field: &str, detail: &str) -> Cause {
    Cause::invalid(field, &Value::String(String::new()), detail)
}

fn too_long(ev: &Value, field: &str, path: &str, limit: usize, causes: &mut Vec<Cause>) {
    if s(ev, field).len() > limit {
        causes.push(invalid_blank(
            path,
            &format!("can have at most {limit} characters"),
        ));
    }
}

fn required(ev: &Value, field: &str, path: &str, causes: &mut Vec<Cause>) {
    if s(ev, field).is_empty() {
        causes.push(Cause::required(path));
    }
}

/// Rules every Event write passes, whatever its API version.
fn legacy(ev: &Value, causes: &mut Vec<Cause>) {
    let ns = ev
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let inv_ns = ev
        .pointer("/involvedObject/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mismatch = |causes: &mut Vec<Cause>| {
        causes.push(Cause::invalid(
            "involvedObject.namespace",
            &Value::String(inv_ns.to_string()),
            "does not match event.namespace",
        ))
    };
    if !set(ev, "eventTime") {
        if inv_ns.is_empty() {
            if !ns.is_empty() && ns != "default" {
                mismatch(causes);
            }
        } else if ns != inv_ns {
            mismatch(causes);
        }
        return;
    }
    if inv_ns.is_empty() && ns != "default" && ns != "kube-system" {
        mismatch(causes);
    }
    let rc = s(ev, "reportingComponent");
    if rc.is_empty() {
        causes.push(Cause::required("reportingController"));
    }
    for msg in metadata::qualified_name_errors(rc) {
        causes.push(Cause::invalid(
            "reportingController",
            &Value::String(rc.to_string()),
            &msg,
        ));
    }
    required(ev, "reportingInstance", "reportingInstance", causes);
    too_long(
        ev,
        "reportingInstance",
        "reportingInstance",
        REPORTING_INSTANCE_LIMIT,
        causes,
    );
    required(ev, "action", "action", causes);
    too_long(ev, "action", "action", ACTION_LIMIT, causes);
    required(ev, "reason", "reason", causes);
    too_long(ev, "reason", "reason", REASON_LIMIT, causes);
    too_long(ev, "message", "message", NOTE_LIMIT, causes);
}

fn series(ev: &Value, causes: &mut Vec<Cause>) {
    let Some(series) = ev.get("series").filter(|s| !s.is_null()) else {
        return;
    };
    if series.get("count").and_then(Value::as_i64).unwrap_or(0) < 2 {
        causes.push(invalid_blank("series.count", "should be at least 2"));
    }
    if !set(series, "lastObservedTime") {
        causes.push(Cause::required("series.lastObservedTime"));
    }
}

/// Validates an Event in storage shape. `events_v1`: the request came through events.k8s.io/v1; `old`: the
/// stored Event on update.
pub fn validate(ev: &Value, old: Option<&Value>, events_v1: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    legacy(ev, &mut causes);
    if !events_v1 {
        return causes;
    }
    match old {
        None => {
            series(ev, &mut causes);
            if !set(ev, "eventTime") {
                causes.push(Cause::required("eventTime"));
            }
            let ty = s(ev, "type");
            if ty != "Normal" && ty != "Warning" {
                causes.push(invalid_blank("type", &format!("has invalid value: {ty}")));
            }
            for (field, path) in [
                ("firstTimestamp", "firstTimestamp"),
                ("lastTimestamp", "lastTimestamp"),
            ] {
                if set(ev, field) {
                    causes.push(invalid_blank(path, "needs to be unset"));
                }
            }
            if ev.get("count").and_then(Value::as_i64).unwrap_or(0) != 0 {
                causes.push(invalid_blank("count", "needs to be unset"));
            }
            let src = ev.get("source");
            let src_set = |k: &str| {
                src.and_then(|s| s.get(k))
                    .and_then(Value::as_str)
                    .is_some_and(|v| !v.is_empty())
            };
            if src_set("component") || src_set("host") {
                causes.push(invalid_blank("source", "needs to be unset"));
            }
        }
        Some(old) => {
            if ev.get("series") != old.get("series") {
                series(ev, &mut causes);
            }
            for (field, path) in [
                ("involvedObject", "involvedObject"),
                ("reason", "reason"),
                ("message", "message"),
                ("source", "source"),
                ("firstTimestamp", "firstTimestamp"),
                ("lastTimestamp", "lastTimestamp"),
                ("count", "count"),
                ("type", "type"),
                ("eventTime", "eventTime"),
                ("action", "action"),
                ("related", "related"),
                ("reportingComponent", "reportingController"),
                ("reportingInstance", "reportingInstance"),
            ] {
                let norm = |v: Option<&Value>| v.filter(|v| !v.is_null()).cloned();
                if norm(ev.get(field)) != norm(old.get(field)) {
                    let shown = ev.get(field).cloned().unwrap_or(Value::Null);
                    causes.push(Cause::invalid(path, &shown, "field is immutable"));
                }
            }
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v1_event() -> Value {
        json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"},
            "involvedObject": {"kind": "Cluster", "namespace": "default", "name": "c"},
            "eventTime": "2026-01-01T00:00:00.000000Z", "type": "Normal", "reason": "Allocated",
            "action": "Allocate", "reportingComponent": "vip.capi.gorizond.io/allocator",
            "reportingInstance": "pod-1", "message": "ok"})
    }

    #[test]
    fn limits_are_bytes_and_paths_are_internal() {
        let mut e = v1_event();
        assert!(validate(&e, None, true).is_empty());
        e["message"] = json!("é".repeat(513));
        let c = validate(&e, None, true);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].field, "message");
        assert_eq!(
            c[0].message,
            "Invalid value: \"\": can have at most 1024 characters"
        );
        e["message"] = json!("x".repeat(1024));
        e["reason"] = json!("r".repeat(129));
        e["type"] = json!("Info");
        let c = validate(&e, None, true);
        let fields: Vec<&str> = c.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["reason", "type"]);
    }

    #[test]
    fn core_events_without_event_time_are_not_limited() {
        let e = json!({"metadata": {"name": "e", "namespace": "default"},
            "involvedObject": {"namespace": "default"}, "message": "x".repeat(5000)});
        assert!(validate(&e, None, false).is_empty());
        let mut v1 = v1_event();
        v1["message"] = json!("x".repeat(1025));
        assert_eq!(validate(&v1, None, false).len(), 1);
        let c = validate(&e, None, true);
        let fields: Vec<&str> = c.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["eventTime", "type"]);
    }

    #[test]
    fn events_v1_update_keeps_fields_immutable() {
        let old = v1_event();
        let mut new = old.clone();
        new["message"] = json!("changed");
        let c = validate(&new, Some(&old), true);
        assert_eq!(c[0].field, "message");
        assert!(c[0].message.ends_with("field is immutable"));
        assert!(validate(&new, Some(&old), false).is_empty());
    }
}
