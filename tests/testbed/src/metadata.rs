//! ObjectMeta rules: name and label syntax, ownerReferences, system fields, generation.

use serde_json::{Map, Value};

use crate::errors::Cause;

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain as Kubernetes checks it: ≤253 chars, no per-label length limit.
pub fn is_dns_subdomain(s: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !p.starts_with('-')
            && !p.ends_with('-')
    };
    !s.is_empty() && s.len() <= 253 && s.split('.').all(part)
}

fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric())
}

fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    prefix.is_none_or(is_dns_subdomain) && !name.is_empty() && is_label_value(name)
}

/// Go's `validation.IsValidLabelValue` messages (empty when valid).
pub fn label_value_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    let syntax_ok = s.is_empty()
        || (s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric());
    if !syntax_ok {
        errs.push("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".to_string());
    }
    errs
}

/// Go's `validation.IsQualifiedName` messages (empty when valid).
pub fn qualified_name_errors(s: &str) -> Vec<String> {
    const NAME_RULE: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
    let parts: Vec<&str> = s.split('/').collect();
    let mut errs = Vec::new();
    let name = match parts.as_slice() {
        [n] => *n,
        [p, n] => {
            if p.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else if !is_dns_subdomain(p) {
                errs.push("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string());
            }
            *n
        }
        _ => {
            return vec![format!("a qualified name {NAME_RULE} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')")];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_string());
    }
    if name.is_empty() || !is_label_value(name) {
        errs.push(format!("name part {NAME_RULE}"));
    }
    errs
}

type ShapeCheck = fn(&Value) -> bool;

/// Field errors in `metadata` (name syntax, labels, annotations keys, ownerReferences).
pub fn validate(meta: &Value, namespaced: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    let shapes: [(&str, ShapeCheck, &str); 7] = [
        ("name", Value::is_string, "string"),
        ("generateName", Value::is_string, "string"),
        ("namespace", Value::is_string, "string"),
        ("labels", Value::is_object, "object"),
        ("annotations", Value::is_object, "object"),
        ("finalizers", Value::is_array, "array"),
        ("ownerReferences", Value::is_array, "array"),
    ];
    for (field, ok, want) in shapes {
        if let Some(v) = meta.get(field).filter(|v| !v.is_null()) {
            if !ok(v) {
                causes.push(Cause::type_invalid(
                    &format!("metadata.{field}"),
                    v,
                    &format!("must be of type {want}"),
                ));
            }
        }
    }
    if let Some(fins) = meta.get("finalizers").and_then(Value::as_array) {
        for (i, f) in fins.iter().enumerate() {
            if !f.as_str().is_some_and(is_qualified_name) {
                causes.push(Cause::invalid(
                    &format!("metadata.finalizers[{i}]"),
                    f,
                    "name part must consist of alphanumeric characters, '-', '_' or '.'",
                ));
            }
        }
    }
    if let Some(name) = meta.get("name").and_then(Value::as_str) {
        if !is_dns_subdomain(name) {
            causes.push(Cause::invalid(
                "metadata.name",
                &Value::String(name.into()),
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
            ));
        }
    }
    if namespaced {
        if let Some(ns) = meta.get("namespace").and_then(Value::as_str) {
            if !is_dns_label(ns) {
                causes.push(Cause::invalid("metadata.namespace", &Value::String(ns.into()), "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'"));
            }
        }
    }
    if let Some(labels) = meta.get("labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if !is_qualified_name(k) {
                causes.push(Cause::invalid("metadata.labels", &Value::String(k.clone()), "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
            }
            match v.as_str() {
                Some(s) if is_label_value(s) => {}
                _ => causes.push(Cause::invalid(
                    "metadata.labels",
                    v,
                    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
                )),
            }
        }
    }
    if let Some(ann) = meta.get("annotations").and_then(Value::as_object) {
        for (k, v) in ann {
            if !is_qualified_name(&k.to_lowercase()) {
                causes.push(Cause::invalid(
                    "metadata.annotations",
                    &Value::String(k.clone()),
                    "name part must consist of alphanumeric characters, '-', '_' or '.'",
                ));
            }
            if !v.is_string() {
                causes.push(Cause::type_invalid(
                    "metadata.annotations",
                    v,
                    "must be a string",
                ));
            }
        }
    }
    if let Some(refs) = meta.get("ownerReferences").and_then(Value::as_array) {
        let mut controllers = 0;
        for (i, r) in refs.iter().enumerate() {
            for f in ["apiVersion", "kind", "name", "uid"] {
                if r.get(f).and_then(Value::as_str).is_none_or(str::is_empty) {
                    causes.push(Cause::invalid(
                        &format!("metadata.ownerReferences[{i}].{f}"),
                        &Value::String(String::new()),
                        &format!("{f} must not be empty"),
                    ));
                }
            }
            if r.get("controller").and_then(Value::as_bool) == Some(true) {
                controllers += 1;
            }
        }
        if controllers > 1 {
            causes.push(Cause::invalid(
                "metadata.ownerReferences",
                &Value::Array(refs.clone()),
                "Only one reference can have Controller set to true",
            ));
        }
    }
    causes
}

/// Fields of ObjectMeta only the server sets.
pub const SYSTEM_FIELDS: [&str; 8] = [
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "selfLink",
    "managedFields",
];

/// Copies server-owned metadata from the stored object onto a client's new version.
pub fn keep_system_fields(cur: &Value, new: &mut Value) {
    let cur_meta = cur
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    for f in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "name",
        "namespace",
    ] {
        match cur_meta.get(f) {
            Some(v) => {
                meta.insert(f.into(), v.clone());
            }
            None => {
                meta.remove(f);
            }
        }
    }
    meta.remove("resourceVersion");
    meta.remove("selfLink");
}

/// Whether anything outside metadata (and status, when it is a subresource) differs.
pub fn spec_changed(a: &Value, b: &Value, status_subresource: bool) -> bool {
    let empty = Map::new();
    let am = a.as_object().unwrap_or(&empty);
    let bm = b.as_object().unwrap_or(&empty);
    let relevant = |k: &String| {
        k != "metadata"
            && k != "apiVersion"
            && k != "kind"
            && !(status_subresource && k == "status")
    };
    let ak = am.iter().filter(|(k, _)| relevant(k));
    let bk = bm.iter().filter(|(k, _)| relevant(k));
    !ak.eq(bk)
}

/// Equal apart from resourceVersion and managedFields (a no-op write).
pub fn same_object(a: &Value, b: &Value) -> bool {
    let (Some(am), Some(bm)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    if am.len() != bm.len() {
        return false;
    }
    for (k, av) in am {
        let Some(bv) = bm.get(k) else { return false };
        if k == "metadata" {
            let (Some(x), Some(y)) = (av.as_object(), bv.as_object()) else {
                return av == bv;
            };
            let skip = |k: &String| k == "resourceVersion" || k == "managedFields";
            if !x
                .iter()
                .filter(|(k, _)| !skip(k))
                .eq(y.iter().filter(|(k, _)| !skip(k)))
            {
                return false;
            }
        } else if av != bv {
            return false;
        }
    }
    true
}

/// Equal managedFields apart from timestamps (re-applying the same configuration is a no-op).
pub fn same_managed_fields(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| -> Vec<Value> {
        v.pointer("/metadata/managedFields")
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .map(|e| {
                        let mut e = e.clone();
                        if let Some(m) = e.as_object_mut() {
                            m.remove("time");
                        }
                        e
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rejects_two_controllers_and_bad_label_values() {
        let meta = json!({"name": "ok", "labels": {"a": "x,y"}, "ownerReferences": [
            {"apiVersion": "v1", "kind": "K", "name": "a", "uid": "1", "controller": true},
            {"apiVersion": "v1", "kind": "K", "name": "b", "uid": "2", "controller": true}]});
        let causes = validate(&meta, true);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["metadata.labels", "metadata.ownerReferences"]);
        assert!(!validate(&json!({"name": "Bad_Name"}), true).is_empty());
        let shapes = validate(
            &json!({"labels": "x", "finalizers": ["ok.io/f", "no spaces"]}),
            true,
        );
        let fields: Vec<&str> = shapes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["metadata.labels", "metadata.finalizers[1]"]);
        assert!(
            validate(&json!({"name": "a".repeat(70)}), true).is_empty(),
            "subdomain labels may exceed 63"
        );
    }

    #[test]
    fn no_op_ignores_rv_and_managed_fields() {
        let a = json!({"metadata": {"name": "a", "resourceVersion": "1", "managedFields": []}, "spec": {"x": 1}});
        let b = json!({"metadata": {"name": "a", "resourceVersion": "2"}, "spec": {"x": 1}});
        assert!(same_object(&a, &b));
        assert!(spec_changed(
            &a,
            &json!({"metadata": {}, "spec": {"x": 2}}),
            true
        ));
        assert!(!spec_changed(
            &a,
            &json!({"metadata": {}, "spec": {"x": 1}, "status": {}}),
            true
        ));
    }
}
