//! `metadata.managedFields` bookkeeping: server-side apply (per-manager ownership, list-map merge
//! by key, conflicts) and ownership tracking of ordinary updates.

use serde_json::{json, Map, Value};

use crate::fields::{self, FieldSet, Path};
use crate::schema::{self, ListType};

#[derive(Debug, Clone)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: Option<String>,
    pub set: FieldSet,
}

pub fn read_entries(obj: &Value) -> Vec<Entry> {
    let Some(list) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    list.iter()
        .map(|e| {
            let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            Entry {
                manager: s("manager"),
                operation: s("operation"),
                api_version: s("apiVersion"),
                time: s("time"),
                subresource: e
                    .get("subresource")
                    .and_then(Value::as_str)
                    .map(String::from),
                set: e.get("fieldsV1").map(FieldSet::from_v1).unwrap_or_default(),
            }
        })
        .collect()
}

pub fn write_entries(obj: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.set.is_empty())
        .map(|e| {
            let mut v = json!({"manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": e.set.to_v1()});
            if let Some(s) = &e.subresource {
                v["subresource"] = json!(s);
            }
            v
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// Where a write lands: the main resource or its `status` subresource (when enabled).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Scope {
    /// No status subresource: every field belongs to the main resource.
    Whole,
    Main,
    Status,
}

/// The part of an object that managers can own in this scope.
pub fn ownable(obj: &Value, scope: Scope) -> Value {
    let mut out = Map::new();
    let Some(map) = obj.as_object() else {
        return Value::Object(out);
    };
    for (k, v) in map {
        match (k.as_str(), scope) {
            ("apiVersion" | "kind", _) => {}
            ("status", Scope::Main) => {}
            ("status", _) => {
                out.insert(k.clone(), v.clone());
            }
            (_, Scope::Status) => {}
            ("metadata", _) => {
                let mut meta = v.as_object().cloned().unwrap_or_default();
                for f in [
                    "name",
                    "namespace",
                    "uid",
                    "resourceVersion",
                    "generation",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "managedFields",
                    "selfLink",
                    "generateName",
                ] {
                    meta.remove(f);
                }
                if !meta.is_empty() {
                    out.insert(k.clone(), Value::Object(meta));
                }
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

fn subresource_name(scope: Scope) -> Option<String> {
    (scope == Scope::Status).then(|| "status".to_string())
}

/// Records an Update-operation write by `manager`: it takes the fields it changed from others.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    now: &str,
    schema: Option<&Value>,
    scope: Scope,
) {
    // A request may set managedFields directly (kubectl does when it migrates client-side apply
    // ownership); `[{}]` strips them. An empty or missing list keeps the stored ones.
    let provided = new
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .is_some_and(|l| !l.is_empty());
    let mut entries = if provided && scope != Scope::Status {
        read_entries(new)
            .into_iter()
            .filter(|e| !e.set.is_empty())
            .collect()
    } else {
        old.map(read_entries).unwrap_or_default()
    };
    let old_c = old.map(|o| ownable(o, scope)).unwrap_or_else(|| json!({}));
    let new_c = ownable(new, scope);
    let (changed, removed) = fields::diff(&old_c, &new_c, schema);
    if !changed.is_empty() || !removed.is_empty() {
        for e in entries.iter_mut() {
            e.set.difference(&changed);
            e.set.difference(&removed);
        }
        let sub = subresource_name(scope);
        let idx = entries
            .iter()
            .position(|e| e.manager == manager && e.operation == "Update" && e.subresource == sub);
        let idx = match idx {
            Some(i) => i,
            None => {
                entries.push(Entry {
                    manager: manager.to_string(),
                    operation: "Update".into(),
                    api_version: api_version.to_string(),
                    time: now.to_string(),
                    subresource: sub,
                    set: FieldSet::default(),
                });
                entries.len() - 1
            }
        };
        entries[idx].set.union(&changed);
        entries[idx].time = now.to_string();
        entries[idx].api_version = api_version.to_string();
    }
    write_entries(new, &entries);
}

/// A field another manager owns with a different value.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub path: Path,
}

pub struct ApplyRequest<'a> {
    pub current: Option<&'a Value>,
    pub applied: &'a Value,
    pub manager: &'a str,
    pub force: bool,
    pub schema: Option<&'a Value>,
    pub scope: Scope,
    pub api_version: &'a str,
    pub now: &'a str,
}

/// Server-side apply: merges the applied configuration into the current object (or a new one).
pub fn apply(req: ApplyRequest) -> Result<Value, Vec<Conflict>> {
    let mut result = match req.current {
        Some(c) => c.clone(),
        None => {
            let mut base = json!({"apiVersion": req.applied.get("apiVersion"), "kind": req.applied.get("kind"),
                "metadata": {}});
            for f in ["name", "namespace"] {
                if let Some(v) = req.applied.pointer(&format!("/metadata/{f}")) {
                    base["metadata"][f] = v.clone();
                }
            }
            base
        }
    };
    let applied = ownable(req.applied, req.scope);
    let new_set = fields::collect(&applied, req.schema);
    let mut entries = read_entries(&result);
    let sub = subresource_name(req.scope);
    let is_mine =
        |e: &Entry| e.manager == req.manager && e.operation == "Apply" && e.subresource == sub;
    let mut conflicts = Vec::new();
    let members = new_set.members();
    for e in entries.iter().filter(|e| !is_mine(e)) {
        for p in &members {
            if !e.set.contains(p) {
                continue;
            }
            let (Some(cur), Some(want)) = (fields::get(&result, p), fields::get(&applied, p))
            else {
                continue;
            };
            if is_container_item(p) {
                continue;
            }
            if cur != want {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    api_version: e.api_version.clone(),
                    path: p.clone(),
                });
            }
        }
    }
    if !conflicts.is_empty() {
        if !req.force {
            return Err(conflicts);
        }
        for c in &conflicts {
            for e in entries
                .iter_mut()
                .filter(|e| e.manager == c.manager && !is_mine(e))
            {
                e.set.remove(&c.path);
            }
        }
    }
    let mut stale = entries
        .iter()
        .find(|e| is_mine(e))
        .map(|e| e.set.clone())
        .unwrap_or_default();
    stale.difference(&new_set);
    let mut stale_paths = stale.members();
    // Shallow first: removing a list item takes its fields with it.
    stale_paths.sort_by_key(Vec::len);
    for p in stale_paths {
        if !entries.iter().any(|e| !is_mine(e) && e.set.touches(&p)) {
            fields::remove(&mut result, &p);
        }
    }
    merge(&mut result, &applied, req.schema, true);
    entries.retain(|e| !is_mine(e));
    entries.push(Entry {
        manager: req.manager.to_string(),
        operation: "Apply".into(),
        api_version: req.api_version.to_string(),
        time: req.now.to_string(),
        subresource: sub,
        set: new_set,
    });
    write_entries(&mut result, &entries);
    Ok(result)
}

/// A list-map item path: its existence is owned, its content is compared field by field.
fn is_container_item(p: &Path) -> bool {
    p.last().is_some_and(|s| s.starts_with("k:"))
}

fn merge(dst: &mut Value, src: &Value, schema: Option<&Value>, root: bool) {
    match (dst, src) {
        (Value::Object(d), Value::Object(s)) if !schema::is_atomic_map(schema) => {
            for (k, sv) in s {
                let cs = if root {
                    schema::root_child(schema, k)
                } else {
                    schema::child(schema, k)
                };
                match d.get_mut(k) {
                    Some(dv) => merge(dv, sv, cs, false),
                    None => {
                        d.insert(k.clone(), sv.clone());
                    }
                }
            }
        }
        (Value::Array(d), Value::Array(s)) => match schema::list_type(schema) {
            ListType::Map(keys) => {
                let is = schema::items(schema);
                for it in s {
                    let same = |x: &Value| keys.iter().all(|k| x.get(k) == it.get(k));
                    match d.iter_mut().find(|x| same(x)) {
                        Some(existing) => merge(existing, it, is, false),
                        None => d.push(it.clone()),
                    }
                }
            }
            ListType::Set => {
                for it in s {
                    if !d.contains(it) {
                        d.push(it.clone());
                    }
                }
            }
            ListType::Atomic => *d = s.clone(),
        },
        (d, s) => *d = s.clone(),
    }
}

/// The 409 message a real server gives for apply conflicts.
pub fn conflict_message(conflicts: &[Conflict]) -> (String, Vec<Value>) {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| {
            json!({"reason": "FieldManagerConflict",
                "message": format!("conflict with \"{}\" using {}", c.manager, c.api_version),
                "field": fields::render(&c.path)})
        })
        .collect();
    let msg = if conflicts.len() == 1 {
        let c = &conflicts[0];
        format!(
            "Apply failed with 1 conflict: conflict with \"{}\" using {}: {}",
            c.manager,
            c.api_version,
            fields::render(&c.path)
        )
    } else {
        let lines: Vec<String> = conflicts
            .iter()
            .map(|c| {
                format!(
                    "conflict with \"{}\" using {}: {}",
                    c.manager,
                    c.api_version,
                    fields::render(&c.path)
                )
            })
            .collect();
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    (msg, causes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
        json!({"properties": {"spec": {"properties": {"variables": {"type": "array",
            "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
            "items": {"properties": {"name": {"type": "string"}, "value": {"x-kubernetes-preserve-unknown-fields": true}}}},
            "host": {"type": "string"}}}}})
    }

    fn apply_as(
        cur: Option<&Value>,
        applied: Value,
        manager: &str,
        force: bool,
    ) -> Result<Value, Vec<Conflict>> {
        let s = schema();
        apply(ApplyRequest {
            current: cur,
            applied: &applied,
            manager,
            force,
            schema: Some(&s),
            scope: Scope::Whole,
            api_version: "g/v1",
            now: "2026-01-01T00:00:00Z",
        })
    }

    #[test]
    fn two_managers_own_separate_list_map_entries() {
        let a = apply_as(
            None,
            json!({"apiVersion": "g/v1", "kind": "K", "metadata": {"name": "x"},
            "spec": {"variables": [{"name": "a", "value": 1}]}}),
            "one",
            false,
        )
        .unwrap();
        let b = apply_as(
            Some(&a),
            json!({"apiVersion": "g/v1", "kind": "K", "metadata": {"name": "x"},
            "spec": {"variables": [{"name": "b", "value": 2}]}}),
            "two",
            false,
        )
        .unwrap();
        assert_eq!(
            b["spec"]["variables"],
            json!([{"name": "a", "value": 1}, {"name": "b", "value": 2}])
        );
        // "two" drops its entry: only its own entry goes away.
        let c = apply_as(
            Some(&b),
            json!({"apiVersion": "g/v1", "kind": "K", "metadata": {"name": "x"}, "spec": {}}),
            "two",
            false,
        )
        .unwrap();
        assert_eq!(c["spec"]["variables"], json!([{"name": "a", "value": 1}]));
        assert_eq!(c["metadata"]["managedFields"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn different_value_for_owned_field_conflicts_unless_forced() {
        let a = apply_as(
            None,
            json!({"apiVersion": "g/v1", "kind": "K", "metadata": {"name": "x"},
            "spec": {"host": "h1"}}),
            "one",
            false,
        )
        .unwrap();
        let err = apply_as(
            Some(&a),
            json!({"apiVersion": "g/v1", "kind": "K", "metadata": {"name": "x"},
            "spec": {"host": "h2"}}),
            "two",
            false,
        )
        .unwrap_err();
        assert_eq!(err[0].manager, "one");
        assert_eq!(
            conflict_message(&err).0,
            "Apply failed with 1 conflict: conflict with \"one\" using g/v1: .spec.host"
        );
        let same = apply_as(
            Some(&a),
            json!({"apiVersion": "g/v1", "kind": "K", "metadata": {"name": "x"},
            "spec": {"host": "h1"}}),
            "two",
            false,
        );
        assert!(same.is_ok(), "same value is shared ownership");
        let forced = apply_as(
            Some(&a),
            json!({"apiVersion": "g/v1", "kind": "K", "metadata": {"name": "x"},
            "spec": {"host": "h2"}}),
            "two",
            true,
        )
        .unwrap();
        assert_eq!(forced["spec"]["host"], "h2");
        let owners: Vec<&str> = forced["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        assert_eq!(owners, ["two"]);
    }

    #[test]
    fn update_takes_ownership_of_changed_fields() {
        let a = apply_as(
            None,
            json!({"apiVersion": "g/v1", "kind": "K", "metadata": {"name": "x"},
            "spec": {"host": "h1"}}),
            "one",
            false,
        )
        .unwrap();
        let mut b = a.clone();
        b["spec"]["host"] = json!("h9");
        record_update(
            Some(&a),
            &mut b,
            "editor",
            "g/v1",
            "now",
            Some(&schema()),
            Scope::Whole,
        );
        let mf = b["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(mf.len(), 1);
        assert_eq!(mf[0]["manager"], "editor");
        assert_eq!(mf[0]["operation"], "Update");
    }
}
