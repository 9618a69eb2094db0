//! Building the Cluster patch: a JSON patch (RFC 6902) touching only our fields, each write guarded by a `test`
//! of what we based it on, so a concurrent change makes the server answer 422 instead of losing that change.
//!
//! Guards: an existing variables entry is tested as a whole before its value is replaced; appending entries tests
//! the whole variables array; an existing `controlPlaneEndpoint` is tested as a whole; creating a missing parent
//! (endpoint, variables array, annotation/label map) tests `metadata.resourceVersion`. Map keys (annotations,
//! labels) are upserted with `add` and need no guard: other keys are never touched.
//!
//! A guard must never fail on how the server encodes what it stores: kube-apiserver runs `test` (evanphx/json-patch)
//! over the object as Go's `encoding/json` wrote it and compares leaves as raw bytes, so a string holding `<`, `>`
//! or `&` (Go writes `\u003c`…), a control character or U+2028/U+2029, or a non-integer number, never equals what
//! we send back. A guard whose value holds such a leaf is replaced by the `metadata.resourceVersion` guard, which
//! protects the same write (any concurrent change moves the resourceVersion) and is plain digits.

use serde_json::{json, Value};

use crate::api::ClusterView;

/// Our desired changes to a Cluster; `None`/empty means "leave alone".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterChanges {
    /// New `spec.controlPlaneEndpoint.host`.
    pub endpoint_host: Option<String>,
    /// New `spec.controlPlaneEndpoint.port`.
    pub endpoint_port: Option<u16>,
    /// Topology variables to set: (name, value).
    pub variables: Vec<(String, Value)>,
    /// Annotations to set.
    pub annotations: Vec<(String, String)>,
    /// Labels to set.
    pub labels: Vec<(String, String)>,
}

impl ClusterChanges {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.endpoint_host.is_none()
            && self.endpoint_port.is_none()
            && self.variables.is_empty()
            && self.annotations.is_empty()
            && self.labels.is_empty()
    }
}

/// Escapes one JSON-pointer segment (RFC 6901).
pub fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Whether `v`, sent back in a `test`, compares equal to the same value stored by a real API server: null,
/// booleans, integers, and strings of characters Go's `encoding/json` writes exactly as serde_json does; objects
/// and arrays are compared member by member, so they qualify when all their leaves do.
pub fn encodes_alike(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(_) => true,
        Value::Number(n) => n.is_i64(),
        Value::String(s) => s
            .chars()
            .all(|c| !c.is_control() && !matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}')),
        Value::Array(items) => items.iter().all(encodes_alike),
        Value::Object(map) => map.values().all(encodes_alike),
    }
}

/// The guards of one patch: `test` operations, or the resourceVersion guard where a `test` could fail on encoding
/// or where a parent we create has nothing to test.
#[derive(Default)]
struct Guards {
    tests: Vec<Value>,
    resource_version: bool,
}

impl Guards {
    fn test(&mut self, path: String, value: &Value) {
        if encodes_alike(value) {
            self.tests
                .push(json!({"op": "test", "path": path, "value": value}));
        } else {
            self.resource_version = true;
        }
    }
}

/// The JSON patch operations for `changes` against the cached `cluster`. Empty when nothing changes.
pub fn build_json_patch(cluster: &ClusterView, changes: &ClusterChanges) -> Vec<Value> {
    let mut guards = Guards::default();
    let mut ops: Vec<Value> = Vec::new();

    // spec.controlPlaneEndpoint
    if changes.endpoint_host.is_some() || changes.endpoint_port.is_some() {
        match &cluster.endpoint {
            Some(ep) => {
                guards.test("/spec/controlPlaneEndpoint".into(), &ep.raw);
                if let Some(host) = &changes.endpoint_host {
                    ops.push(json!({"op": "add", "path": "/spec/controlPlaneEndpoint/host", "value": host}));
                }
                if let Some(port) = changes.endpoint_port {
                    ops.push(json!({"op": "add", "path": "/spec/controlPlaneEndpoint/port", "value": port}));
                }
            }
            None => {
                guards.resource_version = true;
                let mut ep = serde_json::Map::new();
                if let Some(host) = &changes.endpoint_host {
                    ep.insert("host".into(), json!(host));
                }
                if let Some(port) = changes.endpoint_port {
                    ep.insert("port".into(), json!(port));
                }
                ops.push(json!({"op": "add", "path": "/spec/controlPlaneEndpoint", "value": ep}));
            }
        }
    }

    // spec.topology.variables: replace our entries in place, append missing ones.
    if !changes.variables.is_empty() {
        match &cluster.variables {
            Some(list) => {
                let mut appended = Vec::new();
                for (name, value) in &changes.variables {
                    let idx = list
                        .iter()
                        .position(|v| v.get("name").and_then(Value::as_str) == Some(name.as_str()));
                    match idx {
                        Some(i) => {
                            guards.test(format!("/spec/topology/variables/{i}"), &list[i]);
                            ops.push(json!({"op": "add", "path": format!("/spec/topology/variables/{i}/value"), "value": value}));
                        }
                        None => appended.push(json!({"name": name, "value": value})),
                    }
                }
                if !appended.is_empty() {
                    // No entry of ours may appear meanwhile (a duplicate name): the array as a whole is the guard.
                    guards.test(
                        "/spec/topology/variables".into(),
                        &Value::Array(list.clone()),
                    );
                    for entry in appended {
                        ops.push(json!({"op": "add", "path": "/spec/topology/variables/-", "value": entry}));
                    }
                }
            }
            None => {
                guards.resource_version = true;
                let entries: Vec<Value> = changes
                    .variables
                    .iter()
                    .map(|(n, v)| json!({"name": n, "value": v}))
                    .collect();
                ops.push(
                    json!({"op": "add", "path": "/spec/topology/variables", "value": entries}),
                );
            }
        }
    }

    for (field, present, items) in [
        (
            "annotations",
            cluster.annotations.is_some(),
            &changes.annotations,
        ),
        ("labels", cluster.labels.is_some(), &changes.labels),
    ] {
        if items.is_empty() {
            continue;
        }
        if present {
            for (k, v) in items {
                ops.push(json!({"op": "add", "path": format!("/metadata/{field}/{}", escape(k)), "value": v}));
            }
        } else {
            guards.resource_version = true;
            let map: serde_json::Map<String, Value> =
                items.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            ops.push(json!({"op": "add", "path": format!("/metadata/{field}"), "value": map}));
        }
    }

    if ops.is_empty() {
        return ops;
    }
    let mut patch = Vec::with_capacity(guards.tests.len() + ops.len() + 1);
    if guards.resource_version {
        patch.push(json!({"op": "test", "path": "/metadata/resourceVersion", "value": cluster.resource_version}));
    }
    patch.extend(guards.tests);
    patch.extend(ops);
    patch
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::DynamicObject;

    fn cluster(v: Value) -> (Value, ClusterView) {
        let obj: DynamicObject = serde_json::from_value(v.clone()).unwrap();
        (v, ClusterView::parse(&obj).unwrap())
    }

    fn apply(doc: &Value, ops: &[Value]) -> Result<Value, json_patch::PatchError> {
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops.to_vec())).unwrap();
        let mut out = doc.clone();
        json_patch::patch(&mut out, &patch)?;
        Ok(out)
    }

    fn base() -> Value {
        json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": "c", "namespace": "n", "uid": "u", "resourceVersion": "10",
                         "annotations": {"keep": "me"}, "labels": {"team": "a"}},
            "spec": {"topology": {"classRef": {"name": "gold"}, "version": "v1.33.0",
                     "variables": [{"name": "first", "value": {"x": 1}}, {"name": "clusterVip", "value": ""},
                                   {"name": "last", "value": [1, 2]}]}}
        })
    }

    #[test]
    fn other_variables_survive_replacing_ours() {
        let (doc, view) = cluster(base());
        let changes = ClusterChanges {
            endpoint_host: Some("10.0.0.5".into()),
            endpoint_port: Some(6443),
            variables: vec![("clusterVip".into(), json!("10.0.0.5"))],
            ..Default::default()
        };
        let out = apply(&doc, &build_json_patch(&view, &changes)).unwrap();
        let vars = &out["spec"]["topology"]["variables"];
        assert_eq!(vars[0], json!({"name": "first", "value": {"x": 1}}));
        assert_eq!(vars[1], json!({"name": "clusterVip", "value": "10.0.0.5"}));
        assert_eq!(vars[2], json!({"name": "last", "value": [1, 2]}));
        assert_eq!(
            out["spec"]["controlPlaneEndpoint"],
            json!({"host": "10.0.0.5", "port": 6443})
        );
        assert_eq!(out["metadata"]["annotations"], json!({"keep": "me"}));
    }

    #[test]
    fn appending_keeps_existing_entries_and_concurrent_additions_fail_the_guard() {
        let mut v = base();
        v["spec"]["topology"]["variables"] = json!([{"name": "first", "value": 1}]);
        let (doc, view) = cluster(v);
        let changes = ClusterChanges {
            variables: vec![
                ("clusterVip".into(), json!("10.0.0.5")),
                ("ingressVip".into(), json!("10.0.1.5")),
            ],
            ..Default::default()
        };
        let ops = build_json_patch(&view, &changes);
        let out = apply(&doc, &ops).unwrap();
        assert_eq!(
            out["spec"]["topology"]["variables"],
            json!([{"name": "first", "value": 1}, {"name": "clusterVip", "value": "10.0.0.5"}, {"name": "ingressVip", "value": "10.0.1.5"}])
        );
        // Someone else added an entry after our snapshot: the test guard refuses, nothing is lost.
        let mut concurrent = doc.clone();
        concurrent["spec"]["topology"]["variables"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "theirs", "value": true}));
        assert!(apply(&concurrent, &ops).is_err());
    }

    #[test]
    fn concurrent_change_of_our_entry_fails_the_guard() {
        let (doc, view) = cluster(base());
        let ops = build_json_patch(
            &view,
            &ClusterChanges {
                variables: vec![("clusterVip".into(), json!("10.0.0.5"))],
                ..Default::default()
            },
        );
        let mut moved = doc.clone();
        moved["spec"]["topology"]["variables"] =
            json!([{"name": "clusterVip", "value": ""}, {"name": "first", "value": {"x": 1}}]);
        assert!(
            apply(&moved, &ops).is_err(),
            "entry moved: index-based replace must not apply"
        );
        let mut set_by_user = doc.clone();
        set_by_user["spec"]["topology"]["variables"][1]["value"] = json!("192.168.1.1");
        assert!(
            apply(&set_by_user, &ops).is_err(),
            "value set concurrently must not be overwritten"
        );
    }

    #[test]
    fn missing_variables_and_endpoint_are_created_under_a_resource_version_guard() {
        let mut v = base();
        v["spec"]["topology"]
            .as_object_mut()
            .unwrap()
            .remove("variables");
        let (doc, view) = cluster(v);
        let changes = ClusterChanges {
            endpoint_host: Some("fd00::5".into()),
            endpoint_port: Some(6443),
            variables: vec![("clusterVip".into(), json!("fd00::5"))],
            ..Default::default()
        };
        let ops = build_json_patch(&view, &changes);
        assert_eq!(
            ops[0],
            json!({"op": "test", "path": "/metadata/resourceVersion", "value": "10"})
        );
        let out = apply(&doc, &ops).unwrap();
        assert_eq!(
            out["spec"]["topology"]["variables"],
            json!([{"name": "clusterVip", "value": "fd00::5"}])
        );
        assert_eq!(out["spec"]["controlPlaneEndpoint"]["host"], "fd00::5");
        let mut newer = doc.clone();
        newer["metadata"]["resourceVersion"] = json!("11");
        assert!(apply(&newer, &ops).is_err());
    }

    #[test]
    fn existing_endpoint_is_guarded_and_port_kept_when_not_changed() {
        let mut v = base();
        v["spec"]["controlPlaneEndpoint"] = json!({"host": "", "port": 7443});
        let (doc, view) = cluster(v);
        let ops = build_json_patch(
            &view,
            &ClusterChanges {
                endpoint_host: Some("10.0.0.9".into()),
                ..Default::default()
            },
        );
        let out = apply(&doc, &ops).unwrap();
        assert_eq!(
            out["spec"]["controlPlaneEndpoint"],
            json!({"host": "10.0.0.9", "port": 7443})
        );
        let mut raced = doc.clone();
        raced["spec"]["controlPlaneEndpoint"]["host"] = json!("1.2.3.4");
        assert!(
            apply(&raced, &ops).is_err(),
            "a host set concurrently is never overwritten"
        );
    }

    #[test]
    fn annotation_and_label_keys_with_slashes_are_escaped_and_others_kept() {
        let (doc, view) = cluster(base());
        let changes = ClusterChanges {
            annotations: vec![("vip.capi.gorizond.io/ingress-vip".into(), "10.0.1.5".into())],
            labels: vec![("vip.capi.gorizond.io/ingress-vip".into(), "10.0.1.5".into())],
            ..Default::default()
        };
        let out = apply(&doc, &build_json_patch(&view, &changes)).unwrap();
        assert_eq!(
            out["metadata"]["annotations"],
            json!({"keep": "me", "vip.capi.gorizond.io/ingress-vip": "10.0.1.5"})
        );
        assert_eq!(
            out["metadata"]["labels"],
            json!({"team": "a", "vip.capi.gorizond.io/ingress-vip": "10.0.1.5"})
        );
    }

    #[test]
    fn missing_annotation_map_is_created() {
        let mut v = base();
        v["metadata"].as_object_mut().unwrap().remove("annotations");
        let (doc, view) = cluster(v);
        let changes = ClusterChanges {
            annotations: vec![("a/b".into(), "1".into())],
            ..Default::default()
        };
        let out = apply(&doc, &build_json_patch(&view, &changes)).unwrap();
        assert_eq!(out["metadata"]["annotations"], json!({"a/b": "1"}));
    }

    #[test]
    fn values_go_encodes_differently_are_never_tested() {
        for v in [
            json!("10.0.0.5"),
            json!("fd00::5"),
            json!(""),
            json!(null),
            json!(6443),
            json!(-1),
            json!(true),
            json!({"name": "x", "value": ["a", 1, {"b": "ü"}]}),
        ] {
            assert!(encodes_alike(&v), "{v}");
        }
        for v in [
            json!("make && run"),
            json!("a<b"),
            json!("x>y"),
            json!("tab\there"),
            json!("line\u{2028}sep"),
            json!(1.5),
            json!(u64::MAX),
            json!({"name": "x", "value": "https://h/?a=1&b=2"}),
            json!([1, "<"]),
        ] {
            assert!(!encodes_alike(&v), "{v}");
        }
    }

    #[test]
    fn appending_next_to_html_characters_guards_the_resource_version_only() {
        let mut v = base();
        v["spec"]["topology"]["variables"] = json!([{"name": "cmd", "value": "a && b < c"}, {"name": "url", "value": "https://x/?a=1&b=2"}]);
        let (doc, view) = cluster(v);
        let ops = build_json_patch(
            &view,
            &ClusterChanges {
                variables: vec![("clusterVip".into(), json!("10.0.0.5"))],
                ..Default::default()
            },
        );
        let tests: Vec<&Value> = ops.iter().filter(|o| o["op"] == "test").collect();
        assert_eq!(
            tests,
            vec![&json!({"op": "test", "path": "/metadata/resourceVersion", "value": "10"})],
            "no test may carry a value the server stores in another spelling"
        );
        let out = apply(&doc, &ops).unwrap();
        assert_eq!(
            out["spec"]["topology"]["variables"][0]["value"],
            "a && b < c"
        );
        assert_eq!(
            out["spec"]["topology"]["variables"][2],
            json!({"name": "clusterVip", "value": "10.0.0.5"})
        );
        let mut newer = doc.clone();
        newer["metadata"]["resourceVersion"] = json!("11");
        assert!(
            apply(&newer, &ops).is_err(),
            "a concurrent change still fails the guard"
        );
    }

    #[test]
    fn replacing_an_entry_whose_value_go_escapes_guards_the_resource_version() {
        let mut v = base();
        v["spec"]["topology"]["variables"][1]["value"] = json!("<unset>");
        let (doc, view) = cluster(v);
        let ops = build_json_patch(
            &view,
            &ClusterChanges {
                variables: vec![("clusterVip".into(), json!("10.0.0.5"))],
                ..Default::default()
            },
        );
        assert_eq!(
            ops[0],
            json!({"op": "test", "path": "/metadata/resourceVersion", "value": "10"})
        );
        assert!(ops
            .iter()
            .all(|o| o["op"] != "test" || o["path"] == "/metadata/resourceVersion"));
        let out = apply(&doc, &ops).unwrap();
        assert_eq!(out["spec"]["topology"]["variables"][1]["value"], "10.0.0.5");
    }

    #[test]
    fn no_changes_no_ops() {
        let (_, view) = cluster(base());
        assert!(build_json_patch(&view, &ClusterChanges::default()).is_empty());
    }
}
