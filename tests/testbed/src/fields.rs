//! Field sets in the `FieldsV1` format of `metadata.managedFields`, built from objects with the
//! schema's list/map markers, and path operations on objects.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::schema::{self, ListType};

/// A set of field paths. A node is a member when its manager owns that field itself.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FieldSet {
    pub member: bool,
    pub children: BTreeMap<String, FieldSet>,
}

pub type Path = Vec<String>;

impl FieldSet {
    pub fn from_v1(v: &Value) -> FieldSet {
        let mut set = FieldSet::default();
        if let Some(obj) = v.as_object() {
            set.member = obj.is_empty() || obj.contains_key(".");
            for (k, c) in obj {
                if k != "." {
                    set.children.insert(k.clone(), FieldSet::from_v1(c));
                }
            }
        }
        set
    }

    pub fn to_v1(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".into(), Value::Object(Map::new()));
        }
        for (k, c) in &self.children {
            m.insert(k.clone(), c.to_v1());
        }
        Value::Object(m)
    }

    pub fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    pub fn contains(&self, path: &[String]) -> bool {
        match path.split_first() {
            None => self.member,
            Some((h, rest)) => self.children.get(h).is_some_and(|c| c.contains(rest)),
        }
    }

    pub fn remove(&mut self, path: &[String]) {
        match path.split_first() {
            None => self.member = false,
            Some((h, rest)) => {
                if let Some(c) = self.children.get_mut(h) {
                    c.remove(rest);
                    if c.is_empty() {
                        self.children.remove(h);
                    }
                }
            }
        }
    }

    /// Whether the set owns `path` or anything below it.
    pub fn touches(&self, path: &[String]) -> bool {
        match path.split_first() {
            None => !self.is_empty(),
            Some((h, rest)) => self.children.get(h).is_some_and(|c| c.touches(rest)),
        }
    }

    pub fn union(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (k, c) in &other.children {
            self.children.entry(k.clone()).or_default().union(c);
        }
    }

    pub fn difference(&mut self, other: &FieldSet) {
        if other.member {
            self.member = false;
        }
        for (k, c) in &other.children {
            if let Some(mine) = self.children.get_mut(k) {
                mine.difference(c);
                if mine.is_empty() {
                    self.children.remove(k);
                }
            }
        }
    }

    /// All member paths, deepest first within each branch.
    pub fn members(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.collect_members(&mut Vec::new(), &mut out);
        out
    }

    fn collect_members(&self, prefix: &mut Path, out: &mut Vec<Path>) {
        for (k, c) in &self.children {
            prefix.push(k.clone());
            c.collect_members(prefix, out);
            prefix.pop();
        }
        if self.member && !prefix.is_empty() {
            out.push(prefix.clone());
        }
    }
}

pub fn field_key(name: &str) -> String {
    format!("f:{name}")
}

fn item_key(item: &Value, keys: &[String]) -> String {
    let mut m = Map::new();
    let mut sorted = keys.to_vec();
    sorted.sort();
    for k in sorted {
        m.insert(k.clone(), item.get(&k).cloned().unwrap_or(Value::Null));
    }
    format!("k:{}", Value::Object(m))
}

fn set_key(item: &Value) -> String {
    format!("v:{item}")
}

/// The schema to use for a child field: the root has fixed `metadata` markers.
fn child_schema<'a>(schema: Option<&'a Value>, field: &str, root: bool) -> Option<&'a Value> {
    if root {
        schema::root_child(schema, field)
    } else {
        schema::child(schema, field)
    }
}

/// The field set an object's content makes up (what an applier of `v` would own).
pub fn collect(v: &Value, schema: Option<&Value>) -> FieldSet {
    let mut set = FieldSet::default();
    collect_into(v, schema, &mut set, true);
    set
}

fn collect_into(v: &Value, schema: Option<&Value>, node: &mut FieldSet, root: bool) {
    match v {
        Value::Object(map) if !map.is_empty() && !schema::is_atomic_map(schema) => {
            for (k, cv) in map {
                let cs = child_schema(schema, k, root);
                collect_into(
                    cv,
                    cs,
                    node.children.entry(field_key(k)).or_default(),
                    false,
                );
            }
        }
        Value::Array(items) if !items.is_empty() => match schema::list_type(schema) {
            ListType::Map(keys) => {
                let is = schema::items(schema);
                for it in items {
                    let child = node.children.entry(item_key(it, &keys)).or_default();
                    child.member = true;
                    if let Value::Object(m) = it {
                        for (k, cv) in m {
                            collect_into(
                                cv,
                                schema::child(is, k),
                                child.children.entry(field_key(k)).or_default(),
                                false,
                            );
                        }
                    }
                }
            }
            ListType::Set => {
                for it in items {
                    node.children.entry(set_key(it)).or_default().member = true;
                }
            }
            ListType::Atomic => node.member = true,
        },
        _ => node.member = true,
    }
}

/// What changed between two versions of an object: paths set or modified in `new`, and
/// paths present in `old` that `new` no longer has.
pub fn diff(old: &Value, new: &Value, schema: Option<&Value>) -> (FieldSet, FieldSet) {
    let mut changed = FieldSet::default();
    let mut removed = FieldSet::default();
    diff_into(old, new, schema, &mut changed, &mut removed, true);
    (changed, removed)
}

fn diff_into(
    old: &Value,
    new: &Value,
    schema: Option<&Value>,
    ch: &mut FieldSet,
    rm: &mut FieldSet,
    root: bool,
) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(o), Value::Object(n))
            if !n.is_empty() && !o.is_empty() && !schema::is_atomic_map(schema) =>
        {
            for (k, nv) in n {
                let cs = child_schema(schema, k, root);
                let key = field_key(k);
                match o.get(k) {
                    Some(ov) => {
                        let mut c = FieldSet::default();
                        let mut r = FieldSet::default();
                        diff_into(ov, nv, cs, &mut c, &mut r, false);
                        if !c.is_empty() {
                            ch.children.entry(key.clone()).or_default().union(&c);
                        }
                        if !r.is_empty() {
                            rm.children.entry(key).or_default().union(&r);
                        }
                    }
                    None => collect_into(nv, cs, ch.children.entry(key).or_default(), false),
                }
            }
            for (k, ov) in o {
                if !n.contains_key(k) {
                    let mut sub = FieldSet::default();
                    collect_into(ov, child_schema(schema, k, root), &mut sub, false);
                    sub.member = true;
                    rm.children.entry(field_key(k)).or_default().union(&sub);
                }
            }
        }
        (Value::Array(o), Value::Array(n)) if !n.is_empty() && !o.is_empty() => {
            match schema::list_type(schema) {
                ListType::Map(keys) => {
                    let is = schema::items(schema);
                    let okeys: Vec<String> = o.iter().map(|it| item_key(it, &keys)).collect();
                    let nkeys: Vec<String> = n.iter().map(|it| item_key(it, &keys)).collect();
                    for (it, k) in n.iter().zip(&nkeys) {
                        match okeys.iter().position(|x| x == k) {
                            Some(i) => {
                                let mut c = FieldSet::default();
                                let mut r = FieldSet::default();
                                diff_into(&o[i], it, is, &mut c, &mut r, false);
                                if !c.is_empty() {
                                    ch.children.entry(k.clone()).or_default().union(&c);
                                }
                                if !r.is_empty() {
                                    rm.children.entry(k.clone()).or_default().union(&r);
                                }
                            }
                            None => {
                                let mut sub = FieldSet::default();
                                collect_into(
                                    &Value::Array(vec![it.clone()]),
                                    schema,
                                    &mut sub,
                                    false,
                                );
                                ch.union(&sub);
                            }
                        }
                    }
                    for (it, k) in o.iter().zip(&okeys) {
                        if !nkeys.contains(k) {
                            let mut sub = FieldSet::default();
                            collect_into(&Value::Array(vec![it.clone()]), schema, &mut sub, false);
                            rm.union(&sub);
                        }
                    }
                }
                ListType::Set => {
                    for it in n.iter().filter(|it| !o.contains(it)) {
                        ch.children.entry(set_key(it)).or_default().member = true;
                    }
                    for it in o.iter().filter(|it| !n.contains(it)) {
                        rm.children.entry(set_key(it)).or_default().member = true;
                    }
                }
                ListType::Atomic => ch.member = true,
            }
        }
        _ => {
            // Replaced wholesale: everything the old value held is gone.
            if old.is_object() || old.is_array() {
                collect_into(old, schema, rm, root);
            }
            collect_into(new, schema, ch, root);
        }
    }
}

fn find_item(items: &[Value], seg: &str) -> Option<usize> {
    if let Some(k) = seg.strip_prefix("k:") {
        let want: Map<String, Value> = serde_json::from_str(k).ok()?;
        items.iter().position(|it| {
            want.iter()
                .all(|(f, v)| it.get(f).unwrap_or(&Value::Null) == v)
        })
    } else if let Some(v) = seg.strip_prefix("v:") {
        let want: Value = serde_json::from_str(v).ok()?;
        items.iter().position(|it| *it == want)
    } else if let Some(i) = seg.strip_prefix("i:") {
        i.parse().ok().filter(|i: &usize| *i < items.len())
    } else {
        None
    }
}

/// The value at a field path, if present.
pub fn get<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let Some((h, rest)) = path.split_first() else {
        return Some(v);
    };
    let next = if let Some(f) = h.strip_prefix("f:") {
        v.as_object()?.get(f)?
    } else {
        let items = v.as_array()?;
        &items[find_item(items, h)?]
    };
    get(next, rest)
}

/// Removes the value at a field path (a whole list item for `k:`/`v:` segments).
pub fn remove(v: &mut Value, path: &[String]) {
    let Some((h, rest)) = path.split_first() else {
        return;
    };
    if let Some(f) = h.strip_prefix("f:") {
        let Some(obj) = v.as_object_mut() else { return };
        if rest.is_empty() {
            obj.remove(f);
        } else if let Some(c) = obj.get_mut(f) {
            remove(c, rest);
        }
    } else if let Some(items) = v.as_array_mut() {
        if let Some(i) = find_item(items, h) {
            if rest.is_empty() {
                items.remove(i);
            } else {
                remove(&mut items[i], rest);
            }
        }
    }
}

/// Renders a path the way conflict messages show it: `.spec.topology.variables[name="x"].value`.
pub fn render(path: &[String]) -> String {
    let mut s = String::new();
    for seg in path {
        if let Some(f) = seg.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = seg.strip_prefix("k:") {
            let m: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = seg.strip_prefix("v:") {
            s.push_str(&format!("[{v}]"));
        } else {
            s.push_str(&format!("[{seg}]"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars_schema() -> Value {
        json!({"properties": {"spec": {"properties": {"variables": {"type": "array",
            "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
            "items": {"properties": {"name": {"type": "string"}, "value": {"x-kubernetes-preserve-unknown-fields": true}}}}}}}})
    }

    #[test]
    fn collect_keys_list_map_items_by_name_and_round_trips_v1() {
        let o = json!({"metadata": {"labels": {"a": "1"}, "finalizers": ["x"]},
            "spec": {"variables": [{"name": "vip", "value": "1.2.3.4"}]}});
        let s = collect(&o, Some(&vars_schema()));
        let v1 = s.to_v1();
        assert_eq!(
            v1,
            json!({"f:metadata": {"f:finalizers": {"v:\"x\"": {}}, "f:labels": {"f:a": {}}},
                "f:spec": {"f:variables": {"k:{\"name\":\"vip\"}": {".": {}, "f:name": {}, "f:value": {}}}}})
        );
        assert_eq!(FieldSet::from_v1(&v1), s);
        let p: Path = vec![
            "f:spec".into(),
            "f:variables".into(),
            "k:{\"name\":\"vip\"}".into(),
            "f:value".into(),
        ];
        assert!(s.contains(&p));
        assert_eq!(get(&o, &p), Some(&json!("1.2.3.4")));
        assert_eq!(render(&p), ".spec.variables[name=\"vip\"].value");
    }

    #[test]
    fn diff_reports_changed_and_removed_entries() {
        let a = json!({"spec": {"variables": [{"name": "a", "value": 1}, {"name": "b", "value": 2}]}, "x": 1});
        let b = json!({"spec": {"variables": [{"name": "a", "value": 5}]}, "y": 1});
        let (ch, rm) = diff(&a, &b, Some(&vars_schema()));
        assert!(ch.contains(&[
            "f:spec".into(),
            "f:variables".into(),
            "k:{\"name\":\"a\"}".into(),
            "f:value".into()
        ]));
        assert!(ch.contains(&["f:y".into()]));
        assert!(rm.contains(&[
            "f:spec".into(),
            "f:variables".into(),
            "k:{\"name\":\"b\"}".into()
        ]));
        assert!(rm.contains(&["f:x".into()]));
        let (_, rm) = diff(
            &json!({"metadata": {"finalizers": ["x"]}}),
            &json!({"metadata": {"finalizers": []}}),
            None,
        );
        assert!(
            rm.contains(&["f:metadata".into(), "f:finalizers".into(), "v:\"x\"".into()]),
            "emptied set"
        );
        let mut c = json!({"spec": {"variables": [{"name": "a"}, {"name": "b"}]}});
        remove(
            &mut c,
            &[
                "f:spec".into(),
                "f:variables".into(),
                "k:{\"name\":\"a\"}".into(),
            ],
        );
        assert_eq!(c, json!({"spec": {"variables": [{"name": "b"}]}}));
    }
}
