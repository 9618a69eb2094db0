//! Structural-schema handling for custom resources: pruning of unknown fields, defaulting and
//! validation with field paths, plus the list/map markers server-side apply needs.

use serde_json::{json, Map, Value};

use crate::errors::Cause;

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

/// Drops fields the schema does not declare (recording their paths) and fills in defaults.
pub fn prune_and_default(schema: &Value, obj: &mut Value, unknown: &mut Vec<String>) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    for (k, v) in map.iter_mut() {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => {}
            _ => {
                if let Some(s) = child(Some(schema), k) {
                    walk(s, v, k, unknown);
                }
            }
        }
    }
    if !preserves(schema) {
        let props = schema.get("properties").and_then(Value::as_object);
        let drop: Vec<String> = map
            .keys()
            .filter(|k| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata"))
            .filter(|k| props.is_none_or(|p| !p.contains_key(*k)))
            .cloned()
            .collect();
        for k in drop {
            map.remove(&k);
            unknown.push(k);
        }
    }
    apply_defaults(schema, map, "", unknown);
}

fn apply_defaults(
    schema: &Value,
    map: &mut Map<String, Value>,
    path: &str,
    unknown: &mut Vec<String>,
) {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (k, s) in props {
        if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") && path.is_empty() {
            continue;
        }
        let missing = match map.get(k) {
            None => true,
            Some(Value::Null) => s.get("nullable").and_then(Value::as_bool) != Some(true),
            _ => false,
        };
        if missing {
            if let Some(d) = s.get("default") {
                let mut d = d.clone();
                walk(s, &mut d, &join(path, k), unknown);
                map.insert(k.clone(), d);
            }
        }
    }
}

fn walk(schema: &Value, v: &mut Value, path: &str, unknown: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            let embedded = schema
                .get("x-kubernetes-embedded-resource")
                .and_then(Value::as_bool)
                == Some(true);
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let keep_all =
                preserves(schema) || schema.get("additionalProperties") == Some(&Value::Bool(true));
            let mut drop = Vec::new();
            for (k, child_v) in map.iter_mut() {
                if let Some(s) = props.and_then(|p| p.get(k)).or(additional) {
                    walk(s, child_v, &join(path, k), unknown);
                } else if !(keep_all
                    || embedded && matches!(k.as_str(), "apiVersion" | "kind" | "metadata"))
                {
                    drop.push(k.clone());
                }
            }
            for k in drop {
                map.remove(&k);
                unknown.push(join(path, &k));
            }
            apply_defaults(schema, map, path, unknown);
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, it) in items.iter_mut().enumerate() {
                    walk(s, it, &format!("{path}[{i}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => true,
    }
}

/// Validates `obj` (the whole resource) against its openAPIV3Schema; returns field errors.
pub fn validate(schema: &Value, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    if let Some(map) = obj.as_object() {
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (k, s) in props {
                if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                if let Some(v) = map.get(k) {
                    check(s, v, k, &mut causes);
                }
            }
        }
        for r in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(r) = r.as_str() {
                if !map.contains_key(r) && r != "metadata" {
                    causes.push(Cause::required(r));
                }
            }
        }
    }
    causes
}

fn num(s: &Value, k: &str) -> Option<f64> {
    s.get(k).and_then(Value::as_f64)
}

fn fmt_num(f: f64) -> String {
    if f.fract() == 0.0 {
        format!("{}", f as i64)
    } else {
        f.to_string()
    }
}

fn check(schema: &Value, v: &Value, path: &str, causes: &mut Vec<Cause>) {
    if v.is_null() {
        if schema.get("nullable").and_then(Value::as_bool) == Some(true) || preserves(schema) {
            return;
        }
        if let Some(t) = schema.get("type").and_then(Value::as_str) {
            causes.push(Cause::type_invalid(
                path,
                &json!("null"),
                &format!("{path} in body must be of type {t}: \"null\""),
            ));
        }
        return;
    }
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true);
    if int_or_string {
        if !(v.is_string() || type_ok("integer", v)) {
            causes.push(Cause::type_invalid(
                path,
                &json!(type_name(v)),
                &format!(
                    "{path} in body must be of type integer,string: \"{}\"",
                    type_name(v)
                ),
            ));
            return;
        }
    } else if let Some(t) = schema.get("type").and_then(Value::as_str) {
        if !type_ok(t, v) {
            causes.push(Cause::type_invalid(
                path,
                &json!(type_name(v)),
                &format!("{path} in body must be of type {t}: \"{}\"", type_name(v)),
            ));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(v) {
            causes.push(Cause::not_supported(path, v, allowed));
        }
    }
    match v {
        Value::String(s) => {
            let len = s.chars().count() as f64;
            if let Some(min) = num(schema, "minLength") {
                if len < min {
                    causes.push(Cause::invalid(
                        path,
                        v,
                        &format!(
                            "{path} in body should be at least {} chars long",
                            fmt_num(min)
                        ),
                    ));
                }
            }
            if let Some(max) = num(schema, "maxLength") {
                if len > max {
                    causes.push(Cause::too_long(path, max as u64));
                }
            }
        }
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(0.0);
            let excl_min = schema.get("exclusiveMinimum").and_then(Value::as_bool) == Some(true);
            let excl_max = schema.get("exclusiveMaximum").and_then(Value::as_bool) == Some(true);
            if let Some(min) = num(schema, "minimum") {
                if f < min || (excl_min && f == min) {
                    let rel = if excl_min {
                        "greater than"
                    } else {
                        "greater than or equal to"
                    };
                    causes.push(Cause::invalid(
                        path,
                        v,
                        &format!("{path} in body should be {rel} {}", fmt_num(min)),
                    ));
                }
            }
            if let Some(max) = num(schema, "maximum") {
                if f > max || (excl_max && f == max) {
                    let rel = if excl_max {
                        "less than"
                    } else {
                        "less than or equal to"
                    };
                    causes.push(Cause::invalid(
                        path,
                        v,
                        &format!("{path} in body should be {rel} {}", fmt_num(max)),
                    ));
                }
            }
        }
        Value::Array(items) => {
            if let Some(min) = num(schema, "minItems") {
                if (items.len() as f64) < min {
                    causes.push(Cause::invalid(
                        path,
                        &json!(items.len()),
                        &format!("{path} in body should have at least {} items", fmt_num(min)),
                    ));
                }
            }
            if let Some(max) = num(schema, "maxItems") {
                if (items.len() as f64) > max {
                    causes.push(Cause::too_many(path, items.len(), max as u64));
                }
            }
            check_unique(schema, items, path, causes);
            if let Some(s) = schema.get("items") {
                for (i, it) in items.iter().enumerate() {
                    check(s, it, &format!("{path}[{i}]"), causes);
                }
            }
        }
        Value::Object(map) => {
            if let Some(min) = num(schema, "minProperties") {
                if (map.len() as f64) < min {
                    causes.push(Cause::invalid(
                        path,
                        &json!(map.len()),
                        &format!(
                            "{path} in body should have at least {} properties",
                            fmt_num(min)
                        ),
                    ));
                }
            }
            if let Some(max) = num(schema, "maxProperties") {
                if (map.len() as f64) > max {
                    causes.push(Cause::too_many(path, map.len(), max as u64));
                }
            }
            for r in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(r) = r.as_str() {
                    if !map.contains_key(r) {
                        causes.push(Cause::required(&join(path, r)));
                    }
                }
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, cv) in map {
                if let Some(s) = props.and_then(|p| p.get(k)).or(additional) {
                    check(s, cv, &join(path, k), causes);
                }
            }
        }
        _ => {}
    }
}

fn check_unique(schema: &Value, items: &[Value], path: &str, causes: &mut Vec<Cause>) {
    match list_type(Some(schema)) {
        ListType::Atomic => {}
        ListType::Set => {
            for (i, it) in items.iter().enumerate() {
                if items[..i].contains(it) {
                    causes.push(Cause::duplicate(&format!("{path}[{i}]"), it));
                }
            }
        }
        ListType::Map(keys) => {
            let key_of = |it: &Value| {
                keys.iter()
                    .map(|k| it.get(k).cloned().unwrap_or(Value::Null))
                    .collect::<Vec<_>>()
            };
            for (i, it) in items.iter().enumerate() {
                let k = key_of(it);
                if items[..i].iter().any(|o| key_of(o) == k) {
                    let shown: Map<String, Value> =
                        keys.iter().cloned().zip(k.iter().cloned()).collect();
                    causes.push(Cause::duplicate(
                        &format!("{path}[{i}]"),
                        &Value::Object(shown),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
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

    #[test]
    fn prunes_unknown_fields_and_keeps_preserved_values() {
        let mut o = json!({"apiVersion": "g/v1", "kind": "K", "metadata": {"name": "x"},
            "spec": {"name": "a", "bogus": 1, "vars": [{"name": "v", "value": {"deep": [1]}, "extra": true}]},
            "top": 1});
        let mut unknown = Vec::new();
        prune_and_default(&schema(), &mut o, &mut unknown);
        unknown.sort();
        assert_eq!(unknown, ["spec.bogus", "spec.vars[0].extra", "top"]);
        assert_eq!(o["spec"]["vars"][0]["value"], json!({"deep": [1]}));
        assert_eq!(o["spec"]["port"], 443, "default applied");
    }

    #[test]
    fn validation_reports_field_paths() {
        let o = json!({"spec": {"name": "", "port": 0, "mode": "c",
            "vars": [{"name": "a"}, {"name": "a"}, {"name": "b"}]}});
        let causes = validate(&schema(), &o);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert!(fields.contains(&"spec.name"), "{causes:?}");
        assert!(fields.contains(&"spec.port"));
        assert!(fields.contains(&"spec.mode"));
        assert!(fields.contains(&"spec.vars"), "maxItems");
        assert!(fields.contains(&"spec.vars[1]"), "duplicate key");
        let missing = validate(&schema(), &json!({"spec": {}}));
        assert_eq!(missing, vec![Cause::required("spec.name")]);
        let wrong_type = validate(&schema(), &json!({"spec": {"name": "x", "port": "p"}}));
        assert_eq!(
            wrong_type[0].message,
            "Invalid value: \"string\": spec.port in body must be of type integer: \"string\""
        );
    }
}
