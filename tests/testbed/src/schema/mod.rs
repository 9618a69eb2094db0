//! Structural-schema handling for custom resources: pruning of unknown fields, defaulting and
//! validation with field paths, plus the list/map markers server-side apply needs.

use serde_json::{json, Value};

/// How a list merges under server-side apply.
#[derive(Debug, Clone, PartialEq)]
pub enum ListType {
    Atomic,
    Set,
    Map(Vec<String>),
}

fn preserves(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

/// Schema of an object's field, if the schema describes it.
pub fn child<'a>(schema: Option<&'a Value>, field: &str) -> Option<&'a Value> {
    let s = schema?;
    if let Some(p) = s.get("properties").and_then(|p| p.get(field)) {
        return Some(p);
    }
    s.get("additionalProperties").filter(|a| a.is_object())
}

pub fn items(schema: Option<&Value>) -> Option<&Value> {
    schema?.get("items")
}

pub fn list_type(schema: Option<&Value>) -> ListType {
    let Some(s) = schema else {
        return ListType::Atomic;
    };
    match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => ListType::Set,
        Some("map") => ListType::Map(
            s.get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
        ),
        _ => ListType::Atomic,
    }
}

pub fn is_atomic_map(schema: Option<&Value>) -> bool {
    schema
        .and_then(|s| s.get("x-kubernetes-map-type"))
        .and_then(Value::as_str)
        == Some("atomic")
}

/// Schema of `metadata` as server-side apply sees it (ObjectMeta markers).
pub fn metadata_schema() -> &'static Value {
    static META: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    META.get_or_init(|| {
        json!({"type": "object", "properties": {
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            "finalizers": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
            "ownerReferences": {"type": "array", "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["uid"], "items": {"type": "object"}},
        }})
    })
}

/// Schema used for a top-level field (metadata has fixed markers).
pub fn root_child<'a>(schema: Option<&'a Value>, field: &str) -> Option<&'a Value> {
    if field == "metadata" {
        return Some(metadata_schema());
    }
    child(schema, field)
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

mod prune;
mod regex;
mod validate;

pub use prune::prune_and_default;
pub use validate::{validate, validate_value};

#[cfg(test)]
pub(crate) fn test_schema() -> Value {
    json!({"type": "object", "properties": {
        "spec": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "minLength": 1},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 443},
            "mode": {"type": "string", "enum": ["a", "b"]},
            "vars": {"type": "array", "maxItems": 2, "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"], "items": {"type": "object", "properties": {
                    "name": {"type": "string"},
                    "value": {"x-kubernetes-preserve-unknown-fields": true}}}}
        }},
        "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}
    }})
}
