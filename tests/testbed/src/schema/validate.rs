//! Validation against an openAPIV3Schema, with field paths as a real server reports them.

use serde_json::{json, Map, Value};

use super::{join, list_type, preserves, ListType};
use crate::errors::Cause;

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

/// Validates a standalone value (not a resource) against a schema; field paths are relative to the value (`""`
/// for the value itself, `host`, `[0]`…) and messages have the shapes kube-openapi gives a root value.
pub fn validate_value(schema: &Value, v: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    check(schema, v, "", &mut causes);
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
            if let Some(f) = schema.get("format").and_then(Value::as_str) {
                if !format_ok(f, s) {
                    // kube-openapi reports a bad format as an invalid type (FieldValueTypeInvalid).
                    causes.push(Cause::type_invalid(
                        path,
                        v,
                        &format!("{path} in body must be of type {f}: {v}"),
                    ));
                }
            }
            if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
                // A pattern our matcher cannot parse is not checked.
                if super::regex::Regex::new(p).is_some_and(|re| !re.is_match(s)) {
                    causes.push(Cause::invalid(
                        path,
                        v,
                        &format!("{path} in body should match '{p}'"),
                    ));
                }
            }
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

/// String formats the API server checks (others are accepted as-is).
fn format_ok(format: &str, s: &str) -> bool {
    match format {
        "date-time" => s.parse::<jiff::Timestamp>().is_ok(),
        "date" => s.parse::<jiff::civil::Date>().is_ok() && s.len() == 10,
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => s.parse::<ipnet::IpNet>().is_ok(),
        "uuid" => uuid::Uuid::parse_str(s).is_ok(),
        _ => true,
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
        super::super::test_schema()
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
        let bad_time = validate(
            &json!({"properties": {"t": {"type": "string", "format": "date-time"}}}),
            &json!({"t": "yesterday"}),
        );
        assert_eq!(
            bad_time[0].message,
            "Invalid value: \"yesterday\": t in body must be of type date-time: \"yesterday\""
        );
        assert!(validate(
            &json!({"properties": {"t": {"type": "string", "format": "date-time"}}}),
            &json!({"t": "2026-01-01T00:00:00Z"})
        )
        .is_empty());
        let wrong_type = validate(&schema(), &json!({"spec": {"name": "x", "port": "p"}}));
        assert_eq!(
            wrong_type[0].message,
            "Invalid value: \"string\": spec.port in body must be of type integer: \"string\""
        );
    }
}
