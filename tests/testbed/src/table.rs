//! `as=Table` responses for kubectl, with CRD additionalPrinterColumns.

use std::sync::Arc;

use http::HeaderMap;
use serde_json::{json, Value};

use crate::resources::ResourceInfo;

pub fn wants_table(h: &HeaderMap) -> bool {
    h.get_all(http::header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.contains("as=Table")))
}

/// Whether the client asked for `PartialObjectMetadata` (kube-rs `*_metadata` calls).
pub fn wants_metadata(h: &HeaderMap) -> bool {
    h.get_all(http::header::ACCEPT).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.contains("as=PartialObjectMetadata"))
    })
}

/// The `PartialObjectMetadata` form of an object.
pub fn partial(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({}))})
}

/// Human duration as kubectl shows ages ("45s", "3m12s", "2d").
pub fn human_age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 8 * 3600 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s if s < 8 * 86400 => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn age_of(ts: Option<&str>) -> String {
    let Some(t) = ts.and_then(|t| t.parse::<jiff::Timestamp>().ok()) else {
        return "<unknown>".into();
    };
    human_age(jiff::Timestamp::now().as_second() - t.as_second())
}

/// Evaluates the simple JSONPath forms printer columns use: `.a.b`, `[0]`, `[?(@.k=="v")]`.
pub fn jsonpath<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    let mut rest = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim_start_matches('$');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            cur = cur.get(&r[..end])?;
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = &r[..end];
            rest = &r[end + 1..];
            if let Ok(i) = inner.parse::<usize>() {
                cur = cur.get(i)?;
            } else if let Some(f) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (k, want) = f.split_once("==")?;
                let want = want.trim().trim_matches('"').trim_matches('\'');
                cur = cur
                    .as_array()?
                    .iter()
                    .find(|it| it.get(k.trim()).and_then(Value::as_str) == Some(want))?;
            } else {
                return None;
            }
        } else {
            return None;
        }
    }
    Some(cur)
}

fn builtin_columns(info: &ResourceInfo) -> Vec<Value> {
    let col = |name: &str, path: &str| json!({"name": name, "type": "string", "jsonPath": path});
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "namespaces") => vec![col("Status", ".status.phase")],
        ("coordination.k8s.io", "leases") => vec![col("Holder", ".spec.holderIdentity")],
        _ => Vec::new(),
    }
}

/// Events are listed like kubectl shows them: LAST SEEN, TYPE, REASON, OBJECT, MESSAGE (NAME when wide).
fn event_table(info: &ResourceInfo, items: &[Arc<Value>], meta: &Value) -> Value {
    let v1 = info.group == "events.k8s.io";
    let (regarding, message, last) = if v1 {
        ("regarding", "note", "deprecatedLastTimestamp")
    } else {
        ("involvedObject", "message", "lastTimestamp")
    };
    let col = |name: &str, kind: &str, priority: u8| json!({"name": name, "type": kind, "format": "", "priority": priority, "description": ""});
    let defs = vec![
        col("Last Seen", "string", 0),
        col("Type", "string", 0),
        col("Reason", "string", 0),
        col("Object", "string", 0),
        col("Message", "string", 0),
        json!({"name": "Name", "type": "string", "format": "name", "priority": 1, "description": ""}),
    ];
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let s = |p: &str| o.pointer(p).and_then(Value::as_str);
            let seen = s("/series/lastObservedTime")
                .or_else(|| s(&format!("/{last}")))
                .or_else(|| s("/eventTime"));
            let object = format!(
                "{}/{}",
                s(&format!("/{regarding}/kind"))
                    .unwrap_or("")
                    .to_lowercase(),
                s(&format!("/{regarding}/name")).unwrap_or("")
            );
            let cells = json!([
                age_of(seen),
                s("/type"),
                s("/reason"),
                object,
                s(&format!("/{message}")),
                s("/metadata/name")
            ]);
            json!({"cells": cells, "object": **o})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": defs, "rows": rows})
}

pub fn render(info: &ResourceInfo, items: &[Arc<Value>], meta: &Value) -> Value {
    if info.kind == "Event" && !info.custom {
        return event_table(info, items, meta);
    }
    let mut columns = if info.custom {
        info.printer_columns.clone()
    } else {
        builtin_columns(info)
    };
    let has_age = columns
        .iter()
        .any(|c| c.get("jsonPath").and_then(Value::as_str) == Some(".metadata.creationTimestamp"));
    if !has_age {
        columns.push(
            json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}),
        );
    }
    let mut defs = vec![
        json!({"name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace."}),
    ];
    for c in &columns {
        defs.push(json!({"name": c.get("name"), "type": c.get("type").cloned().unwrap_or(json!("string")),
            "format": c.get("format").cloned().unwrap_or(json!("")), "priority": c.get("priority").cloned().unwrap_or(json!(0)),
            "description": c.get("description").cloned().unwrap_or(json!(""))}));
    }
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut cells = vec![o.pointer("/metadata/name").cloned().unwrap_or(Value::Null)];
            for c in &columns {
                let path = c.get("jsonPath").and_then(Value::as_str).unwrap_or("");
                let v = jsonpath(o, path);
                let cell = match (c.get("type").and_then(Value::as_str), v) {
                    (Some("date"), Some(Value::String(t))) => json!(age_of(Some(t))),
                    (_, Some(v)) => v.clone(),
                    (_, None) => Value::Null,
                };
                cells.push(cell);
            }
            json!({"cells": cells, "object": **o})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": defs, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_handles_fields_indexes_and_filters() {
        let v = json!({"spec": {"a": [{"t": "Ready", "s": "True"}, {"t": "X", "s": "False"}]}});
        assert_eq!(jsonpath(&v, ".spec.a[1].s"), Some(&json!("False")));
        assert_eq!(
            jsonpath(&v, ".spec.a[?(@.t==\"Ready\")].s"),
            Some(&json!("True"))
        );
        assert_eq!(jsonpath(&v, ".spec.b"), None);
        assert_eq!(human_age(75), "75s");
        assert_eq!(human_age(400), "6m40s");
    }
}
