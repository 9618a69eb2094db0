//! RFC 6902 JSON patch with the behaviour of evanphx/json-patch v4.12 (`gopkg.in/evanphx/json-patch.v4`, the
//! version kube-apiserver applies JSON patches with), including its error texts:
//!
//! - the document is the object as Go's `encoding/json` wrote it, so stored leaves are Go-encoded bytes, while
//!   values added by earlier operations of the same patch keep the client's bytes;
//! - `test` compares objects key by key (same number of keys), arrays item by item (same length) and leaves as
//!   compacted raw bytes: `"a&b"` sent by a client is not equal to the stored `"a\u0026b"`, `1.0` is not `1`;
//! - `test` of an object key that is missing or null passes when the value is `null`; a missing parent, or an
//!   array index out of range, is an error;
//! - negative array indexes count from the end; `replace` of a missing object key adds it;
//! - the first segment of a path is ignored (`a/b` acts as `/b`), `~1` and `~0` are decoded.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::gojson::{self, Raw};
use crate::patch::JsonPatchError;

/// A document node: `None` children are JSON nulls (Go's nil pointers).
#[derive(Debug, Clone)]
enum Node {
    Obj(BTreeMap<String, Option<Node>>),
    Arr(Vec<Option<Node>>),
    Leaf(Vec<u8>),
}

fn from_stored(v: &Value, bytewise: bool) -> Option<Node> {
    match v {
        Value::Null => None,
        Value::Object(m) => Some(Node::Obj(
            m.iter()
                .map(|(k, v)| (k.clone(), from_stored(v, bytewise)))
                .collect(),
        )),
        Value::Array(a) => Some(Node::Arr(
            a.iter().map(|v| from_stored(v, bytewise)).collect(),
        )),
        leaf if bytewise => Some(Node::Leaf(gojson::encode_leaf(leaf))),
        leaf => Some(Node::Leaf(serde_json::to_vec(leaf).unwrap_or_default())),
    }
}

fn from_raw(r: &Raw) -> Option<Node> {
    match r {
        Raw::Null => None,
        Raw::Leaf(b) => Some(Node::Leaf(b.clone())),
        Raw::Array(a) => Some(Node::Arr(a.iter().map(from_raw).collect())),
        Raw::Object(m) => Some(Node::Obj(
            m.iter().map(|(k, v)| (k.clone(), from_raw(v))).collect(),
        )),
    }
}

fn to_value(n: &Option<Node>) -> Value {
    match n {
        None => Value::Null,
        Some(Node::Leaf(b)) => serde_json::from_slice(b).unwrap_or(Value::Null),
        Some(Node::Arr(a)) => Value::Array(a.iter().map(to_value).collect()),
        Some(Node::Obj(m)) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), to_value(v))).collect())
        }
    }
}

/// What `json.Marshal` of a node gives (the deep copy of a `copy` operation): HTML characters escaped.
fn remarshal(n: &Option<Node>) -> Option<Node> {
    match n {
        None => None,
        Some(Node::Leaf(b)) => Some(Node::Leaf(gojson::html_escape_raw(b))),
        Some(Node::Arr(a)) => Some(Node::Arr(a.iter().map(remarshal).collect())),
        Some(Node::Obj(m)) => Some(Node::Obj(
            m.iter().map(|(k, v)| (k.clone(), remarshal(v))).collect(),
        )),
    }
}

fn leaf_eq(a: &[u8], b: &[u8], bytewise: bool) -> bool {
    if bytewise {
        return a == b;
    }
    match (
        serde_json::from_slice::<Value>(a),
        serde_json::from_slice::<Value>(b),
    ) {
        (Ok(Value::Number(x)), Ok(Value::Number(y))) => x.as_f64() == y.as_f64(),
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// evanphx's `lazyNode.equal`: `n` is the document's node, `o` the operation's value.
fn equal(n: &Node, o: &Option<Node>, bytewise: bool) -> bool {
    let Some(o) = o else { return false };
    match (n, o) {
        (Node::Leaf(a), Node::Leaf(b)) => leaf_eq(a, b, bytewise),
        (Node::Obj(a), Node::Obj(b)) => {
            a.len() == b.len()
                && a.iter().all(|(k, v)| match (v, b.get(k)) {
                    (_, None) => false,
                    (None, Some(None)) => true,
                    (None, Some(Some(_))) | (Some(_), Some(None)) => false,
                    (Some(v), Some(ov)) => equal(v, ov, bytewise),
                })
        }
        (Node::Arr(a), Node::Arr(b)) => {
            a.len() == b.len()
                && a.iter().zip(b).all(|(v, ov)| match v {
                    None => ov.is_none(),
                    Some(v) => equal(v, ov, bytewise),
                })
        }
        _ => false,
    }
}

fn decode_key(k: &str) -> String {
    k.replace("~1", "/").replace("~0", "~")
}

fn invalid_index(idx: i64) -> String {
    format!("Unable to access invalid index: {idx}: invalid index referenced")
}

/// `partialArray.get`'s index rules.
fn array_index(len: usize, key: &str) -> Result<usize, String> {
    let mut idx = gojson::atoi(key)?;
    let len = len as i64;
    if idx < 0 {
        if idx < -len {
            return Err(invalid_index(idx));
        }
        idx += len;
    }
    if idx >= len {
        return Err(invalid_index(idx));
    }
    Ok(idx as usize)
}

impl Node {
    fn get(&self, key: &str) -> Result<Option<&Node>, String> {
        match self {
            Node::Obj(m) => Ok(m.get(key).and_then(Option::as_ref)),
            Node::Arr(a) => Ok(a[array_index(a.len(), key)?].as_ref()),
            Node::Leaf(_) => Ok(None),
        }
    }

    fn add(&mut self, key: &str, val: Option<Node>) -> Result<(), String> {
        match self {
            Node::Obj(m) => {
                m.insert(key.to_string(), val);
                Ok(())
            }
            Node::Arr(a) => {
                if key == "-" {
                    a.push(val);
                    return Ok(());
                }
                let mut idx = gojson::atoi(key)
                    .map_err(|e| format!("value was not a proper array index: '{key}': {e}"))?;
                let size = a.len() as i64 + 1;
                if idx >= size {
                    return Err(invalid_index(idx));
                }
                if idx < 0 {
                    if idx < -size {
                        return Err(invalid_index(idx));
                    }
                    idx += size;
                }
                a.insert(idx as usize, val);
                Ok(())
            }
            Node::Leaf(_) => Ok(()),
        }
    }

    fn set(&mut self, key: &str, val: Option<Node>) -> Result<(), String> {
        match self {
            Node::Arr(a) => {
                let idx = array_index(a.len(), key)?;
                a[idx] = val;
                Ok(())
            }
            _ => self.add(key, val),
        }
    }

    fn remove(&mut self, key: &str) -> Result<(), String> {
        match self {
            Node::Obj(m) => match m.remove(key) {
                Some(_) => Ok(()),
                None => Err(format!(
                    "Unable to remove nonexistent key: {key}: missing value"
                )),
            },
            Node::Arr(a) => {
                let mut idx = gojson::atoi(key)?;
                let len = a.len() as i64;
                if idx >= len {
                    return Err(invalid_index(idx));
                }
                if idx < 0 {
                    if idx < -len {
                        return Err(invalid_index(idx));
                    }
                    idx += len;
                }
                a.remove(idx as usize);
                Ok(())
            }
            Node::Leaf(_) => Ok(()),
        }
    }
}

/// evanphx's `findObject`: the container holding the path's last segment, and that segment.
fn find_object<'a>(doc: &'a mut Node, path: &str) -> Option<(&'a mut Node, String)> {
    let split: Vec<&str> = path.split('/').collect();
    if split.len() < 2 {
        return None;
    }
    let mut cur = doc;
    for part in &split[1..split.len() - 1] {
        let key = decode_key(part);
        let next = match cur {
            Node::Obj(m) => m.get_mut(&key).and_then(Option::as_mut),
            Node::Arr(a) => {
                let idx = array_index(a.len(), &key).ok()?;
                a[idx].as_mut()
            }
            Node::Leaf(_) => None,
        }?;
        if matches!(next, Node::Leaf(_)) {
            return None;
        }
        cur = next;
    }
    Some((cur, decode_key(split[split.len() - 1])))
}

/// One operation as decoded by evanphx's `Operation` (a map of raw members).
struct Op<'a>(&'a Raw);

enum OpValue {
    Absent,
    Present(Option<Node>),
}

impl Op<'_> {
    fn kind(&self) -> String {
        match self.0.get("op") {
            Some(Raw::Leaf(b)) => {
                serde_json::from_slice::<String>(b).unwrap_or_else(|_| "unknown".into())
            }
            _ => "unknown".into(),
        }
    }
    fn string_field(&self, name: &str, missing: &str) -> Result<String, String> {
        match self.0.get(name) {
            Some(Raw::Leaf(b)) => serde_json::from_slice::<String>(b).map_err(|_| {
                format!(
                    "json: cannot unmarshal {} into Go value of type string",
                    String::from_utf8_lossy(b)
                )
            }),
            Some(Raw::Null) | None => Err(format!("{missing}: missing value")),
            Some(_) => Err("json: cannot unmarshal object into Go value of type string".into()),
        }
    }
    fn path(&self) -> Result<String, String> {
        self.string_field("path", "operation missing path field")
    }
    fn from(&self) -> Result<String, String> {
        self.string_field("from", "operation, missing from field")
    }
    fn value(&self) -> OpValue {
        match self.0.get("value") {
            None => OpValue::Absent,
            Some(r) => OpValue::Present(from_raw(r)),
        }
    }
    fn value_node(&self) -> Option<Node> {
        match self.value() {
            OpValue::Absent => None,
            OpValue::Present(n) => n,
        }
    }
}

fn decode(body: &[u8]) -> Result<Vec<Raw>, JsonPatchError> {
    let parsed: Value =
        serde_json::from_slice(body).map_err(|e| JsonPatchError::Decode(e.to_string()))?;
    let go_type = |v: &Value| match v {
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "bool",
        Value::Null => "null",
    };
    match &parsed {
        Value::Array(items) => {
            if let Some(bad) = items.iter().find(|i| !i.is_object() && !i.is_null()) {
                return Err(JsonPatchError::Decode(format!(
                    "json: cannot unmarshal {} into Go value of type jsonpatch.Operation",
                    go_type(bad)
                )));
            }
        }
        Value::Null => return Ok(Vec::new()),
        other => {
            return Err(JsonPatchError::Decode(format!(
                "json: cannot unmarshal {} into Go value of type jsonpatch.Patch",
                go_type(other)
            )))
        }
    }
    match Raw::parse(body) {
        Some(Raw::Array(ops)) => Ok(ops),
        _ => Err(JsonPatchError::Decode("invalid JSON patch".into())),
    }
}

/// Applies `body` to `doc` (a JSON object); on error `doc` is left unchanged.
pub fn apply(doc: &mut Value, body: &[u8], bytewise: bool) -> Result<(), JsonPatchError> {
    let ops = decode(body)?;
    let Some(mut root) = from_stored(doc, bytewise) else {
        return Err(JsonPatchError::Apply("invalid state detected".into()));
    };
    for raw in &ops {
        let op = Op(raw);
        let res = match op.kind().as_str() {
            "add" => add(&mut root, &op),
            "remove" => remove(&mut root, &op),
            "replace" => replace(&mut root, &op),
            "move" => move_op(&mut root, &op),
            "test" => test(&mut root, &op, bytewise),
            "copy" => copy(&mut root, &op),
            other => Err(format!("Unexpected kind: {other}")),
        };
        res.map_err(JsonPatchError::Apply)?;
    }
    *doc = to_value(&Some(root));
    Ok(())
}

fn add(root: &mut Node, op: &Op) -> Result<(), String> {
    let path = op
        .path()
        .map_err(|_| "add operation failed to decode path: missing value".to_string())?;
    let Some((con, key)) = find_object(root, &path) else {
        return Err(format!(
            "add operation does not apply: doc is missing path: \"{path}\": missing value"
        ));
    };
    con.add(&key, op.value_node())
        .map_err(|e| format!("error in add for path: '{path}': {e}"))
}

fn remove(root: &mut Node, op: &Op) -> Result<(), String> {
    let path = op
        .path()
        .map_err(|_| "remove operation failed to decode path: missing value".to_string())?;
    let Some((con, key)) = find_object(root, &path) else {
        return Err(format!(
            "remove operation does not apply: doc is missing path: \"{path}\": missing value"
        ));
    };
    con.remove(&key)
        .map_err(|e| format!("error in remove for path: '{path}': {e}"))
}

fn replace(root: &mut Node, op: &Op) -> Result<(), String> {
    let path = op
        .path()
        .map_err(|e| format!("replace operation failed to decode path: {e}"))?;
    if path.is_empty() {
        return match op.value_node() {
            Some(n @ (Node::Obj(_) | Node::Arr(_))) => {
                *root = n;
                Ok(())
            }
            _ => Err("replace operation value must be object or array".into()),
        };
    }
    let Some((con, key)) = find_object(root, &path) else {
        return Err(format!(
            "replace operation does not apply: doc is missing path: {path}: missing value"
        ));
    };
    if con.get(&key).is_err() {
        return Err(format!(
            "replace operation does not apply: doc is missing key: {path}: missing value"
        ));
    }
    con.set(&key, op.value_node())
        .map_err(|e| format!("error in remove for path: '{path}': {e}"))
}

fn move_op(root: &mut Node, op: &Op) -> Result<(), String> {
    let from = op
        .from()
        .map_err(|e| format!("move operation failed to decode from: {e}"))?;
    let Some((con, key)) = find_object(root, &from) else {
        return Err(format!(
            "move operation does not apply: doc is missing from path: {from}: missing value"
        ));
    };
    let val = con
        .get(&key)
        .map_err(|e| format!("error in move for path: '{key}': {e}"))?
        .cloned();
    con.remove(&key)
        .map_err(|e| format!("error in move for path: '{key}': {e}"))?;
    let path = op
        .path()
        .map_err(|e| format!("move operation failed to decode path: {e}"))?;
    let Some((con, key)) = find_object(root, &path) else {
        return Err(format!(
            "move operation does not apply: doc is missing destination path: {path}: missing value"
        ));
    };
    con.add(&key, val)
        .map_err(|e| format!("error in move for path: '{path}': {e}"))
}

fn copy(root: &mut Node, op: &Op) -> Result<(), String> {
    let from = op
        .from()
        .map_err(|e| format!("copy operation failed to decode from: {e}"))?;
    let Some((con, key)) = find_object(root, &from) else {
        return Err(format!(
            "copy operation does not apply: doc is missing from path: {from}: missing value"
        ));
    };
    let val = con
        .get(&key)
        .map_err(|e| format!("error in copy for from: '{from}': {e}"))?
        .cloned();
    let path = op
        .path()
        .map_err(|_| "copy operation failed to decode path: missing value".to_string())?;
    let Some((con, key)) = find_object(root, &path) else {
        return Err(format!(
            "copy operation does not apply: doc is missing destination path: {path}: missing value"
        ));
    };
    con.add(&key, remarshal(&val))
        .map_err(|e| format!("error while adding value during copy: {e}"))
}

fn test(root: &mut Node, op: &Op, bytewise: bool) -> Result<(), String> {
    let path = op
        .path()
        .map_err(|e| format!("test operation failed to decode path: {e}"))?;
    let failed = || format!("testing value {path} failed: test failed");
    if path.is_empty() {
        return match op.value() {
            OpValue::Present(v) if equal(root, &v, bytewise) => Ok(()),
            _ => Err(failed()),
        };
    }
    let Some((con, key)) = find_object(root, &path) else {
        return Err(format!(
            "test operation does not apply: is missing path: {path}: missing value"
        ));
    };
    let val = con
        .get(&key)
        .map_err(|e| format!("error in test for path: '{path}': {e}"))?;
    match (val, op.value()) {
        // v4.12 dereferences the missing value here; treat it like `null`.
        (None, OpValue::Absent) | (None, OpValue::Present(None)) => Ok(()),
        (None, OpValue::Present(Some(_))) | (Some(_), OpValue::Absent) => Err(failed()),
        (Some(n), OpValue::Present(v)) => {
            if equal(n, &v, bytewise) {
                Ok(())
            } else {
                Err(failed())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(doc: &Value, patch: &str) -> Result<Value, JsonPatchError> {
        let mut d = doc.clone();
        apply(&mut d, patch.as_bytes(), true).map(|_| d)
    }

    fn err(doc: &Value, patch: &str) -> String {
        match run(doc, patch) {
            Err(JsonPatchError::Apply(e)) => e,
            other => panic!("expected an apply error, got {other:?}"),
        }
    }

    #[test]
    fn test_compares_leaves_as_go_bytes() {
        let d = json!({"v": [{"name": "x", "value": "a&&b"}, {"name": "y", "value": "10.0.0.1"}], "n": 1, "f": 1.5});
        assert_eq!(
            err(
                &d,
                r#"[{"op":"test","path":"/v/0","value":{"name":"x","value":"a&&b"}}]"#
            ),
            "testing value /v/0 failed: test failed"
        );
        run(
            &d,
            r#"[{"op":"test","path":"/v/0","value":{"name":"x","value":"a\u0026\u0026b"}}]"#,
        )
        .unwrap();
        run(
            &d,
            r#"[{"op":"test","path":"/v/1","value":{"value":"10.0.0.1", "name":"y"}}]"#,
        )
        .unwrap();
        assert!(run(&d, r#"[{"op":"test","path":"/n","value":1.0}]"#).is_err());
        run(&d, r#"[{"op":"test","path":"/n","value":1}]"#).unwrap();
        run(&d, r#"[{"op":"test","path":"/f","value":1.5}]"#).unwrap();
        assert!(run(&d, r#"[{"op":"test","path":"/v/1","value":{"name":"y"}}]"#).is_err());
        // A value added earlier in the same patch keeps the client's bytes.
        run(
            &d,
            r#"[{"op":"add","path":"/s","value":"p&q"},{"op":"test","path":"/s","value":"p&q"}]"#,
        )
        .unwrap();
        let mut lenient = d.clone();
        apply(
            &mut lenient,
            br#"[{"op":"test","path":"/v/0/value","value":"a&&b"},{"op":"test","path":"/n","value":1.0}]"#,
            false,
        )
        .unwrap();
    }

    #[test]
    fn missing_paths_follow_v4() {
        let d = json!({"metadata": {"name": "x", "labels": null}, "list": [1]});
        run(
            &d,
            r#"[{"op":"test","path":"/metadata/finalizers","value":null}]"#,
        )
        .unwrap();
        run(
            &d,
            r#"[{"op":"test","path":"/metadata/labels","value":null}]"#,
        )
        .unwrap();
        assert_eq!(
            err(&d, r#"[{"op":"test","path":"/spec/x","value":null}]"#),
            "test operation does not apply: is missing path: /spec/x: missing value"
        );
        assert_eq!(
            err(&d, r#"[{"op":"test","path":"/list/3","value":null}]"#),
            "error in test for path: '/list/3': Unable to access invalid index: 3: invalid index referenced"
        );
        run(&d, r#"[{"op":"test","path":"/list/-1","value":1}]"#).unwrap();
        assert_eq!(
            err(&d, r#"[{"op":"remove","path":"/metadata/nope"}]"#),
            "error in remove for path: '/metadata/nope': Unable to remove nonexistent key: nope: missing value"
        );
        assert_eq!(
            err(&d, r#"[{"op":"add","path":"/a/b","value":1}]"#),
            "add operation does not apply: doc is missing path: \"/a/b\": missing value"
        );
        assert_eq!(
            err(&d, r#"[{"op":"replace","path":"/list/5","value":1}]"#),
            "replace operation does not apply: doc is missing key: /list/5: missing value"
        );
        assert_eq!(
            err(&d, r#"[{"op":"add","path":"/list/x","value":1}]"#),
            "error in add for path: '/list/x': value was not a proper array index: 'x': strconv.Atoi: parsing \"x\": invalid syntax"
        );
        assert_eq!(
            err(&d, r#"[{"op":"nope","path":"/a"}]"#),
            "Unexpected kind: nope"
        );
        let out = run(&d, r#"[{"op":"replace","path":"/metadata/new","value":"v"},{"op":"add","path":"/list/-","value":2},{"op":"copy","from":"/list","path":"/copy"},{"op":"move","from":"/copy","path":"/moved"}]"#).unwrap();
        assert_eq!(out["metadata"]["new"], "v");
        assert_eq!(out["moved"], json!([1, 2]));
        assert!(out.get("copy").is_none());
        assert!(matches!(
            run(&d, r#"{"op":"add"}"#),
            Err(JsonPatchError::Decode(_))
        ));
    }
}
