//! Pruning of fields the schema does not declare, and defaulting.

use serde_json::{Map, Value};

use super::{child, join, preserves};

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        super::super::test_schema()
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
}
