//! `Cluster` and `ClusterClass` views (v1beta1 and v1beta2 shapes).

use std::collections::{BTreeMap, BTreeSet};

use kube::api::DynamicObject;
use serde_json::Value;

use super::{at, map_of, problem, str_at, ParseProblem};
use crate::names::ANNOTATION_CAPI_PAUSED;

/// A ClusterClass reference with the namespace resolved (empty ⇒ the Cluster's namespace).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClassRef {
    /// ClusterClass name.
    pub name: String,
    /// ClusterClass namespace.
    pub namespace: String,
}

/// `spec.controlPlaneEndpoint` as stored (the raw object kept for `test` guards).
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// `host`, if set and non-empty.
    pub host: Option<String>,
    /// `port`, if set.
    pub port: Option<i64>,
    /// The stored object, verbatim.
    pub raw: Value,
}

/// What the operator needs to know about a Cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterView {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// UID (owner of our claims).
    pub uid: String,
    /// `metadata.resourceVersion` (used as a `test` guard when we create a missing parent).
    pub resource_version: String,
    /// The ClusterClass, when the Cluster has a topology.
    pub class: Option<ClassRef>,
    /// `spec.paused` or the paused annotation.
    pub paused: bool,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// `spec.controlPlaneEndpoint`, when present.
    pub endpoint: Option<Endpoint>,
    /// `spec.topology.variables` verbatim, when present.
    pub variables: Option<Vec<Value>>,
    /// `metadata.annotations` (`None` when the map is absent).
    pub annotations: Option<BTreeMap<String, String>>,
    /// `metadata.labels` (`None` when the map is absent).
    pub labels: Option<BTreeMap<String, String>>,
}

impl ClusterView {
    /// Reads a Cluster of either API shape. Fails only when identity fields are missing.
    pub fn parse(obj: &DynamicObject) -> Result<Self, ParseProblem> {
        let meta = &obj.metadata;
        let name = meta
            .name
            .clone()
            .ok_or_else(|| problem("Cluster", obj, "no metadata.name"))?;
        let namespace = meta
            .namespace
            .clone()
            .ok_or_else(|| problem("Cluster", obj, "no metadata.namespace"))?;
        let uid = meta
            .uid
            .clone()
            .ok_or_else(|| problem("Cluster", obj, "no metadata.uid"))?;
        let data = &obj.data;
        let topology = at(data, &["spec", "topology"]);
        let class = topology.and_then(|t| {
            // v1beta2: classRef{name,namespace}; v1beta1: class + classNamespace.
            let (name, ns) = match at(t, &["classRef"]) {
                Some(r) => (str_at(r, &["name"]), str_at(r, &["namespace"])),
                None => (str_at(t, &["class"]), str_at(t, &["classNamespace"])),
            };
            let name = name.filter(|n| !n.is_empty())?;
            let namespace = ns
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| namespace.clone());
            Some(ClassRef { name, namespace })
        });
        let annotations = meta.annotations.clone();
        let paused = at(data, &["spec", "paused"])
            .and_then(Value::as_bool)
            .unwrap_or(false)
            || map_of(&annotations).contains_key(ANNOTATION_CAPI_PAUSED);
        let endpoint = at(data, &["spec", "controlPlaneEndpoint"])
            .filter(|v| v.is_object())
            .map(|raw| Endpoint {
                host: str_at(raw, &["host"]).filter(|h| !h.is_empty()),
                port: at(raw, &["port"]).and_then(Value::as_i64),
                raw: raw.clone(),
            });
        let variables = topology
            .and_then(|t| at(t, &["variables"]))
            .and_then(Value::as_array)
            .cloned();
        Ok(Self {
            name,
            namespace,
            uid,
            resource_version: meta.resource_version.clone().unwrap_or_default(),
            class,
            paused,
            deleting: meta.deletion_timestamp.is_some(),
            endpoint,
            variables,
            annotations,
            labels: meta.labels.clone(),
        })
    }

    /// The value of topology variable `name`, if the entry exists.
    pub fn variable(&self, name: &str) -> Option<&Value> {
        self.variables
            .as_ref()?
            .iter()
            .find(|v| v.get("name").and_then(Value::as_str) == Some(name))
            .map(|v| v.get("value").unwrap_or(&Value::Null))
    }

    /// An annotation value.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }

    /// A label value.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.as_ref()?.get(key).map(String::as_str)
    }
}

/// What the operator needs to know about a ClusterClass: which variables it declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassView {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// The variables a Cluster of this class may set: the names in `status.variables` once the ClusterClass
    /// controller has written them (CAPI's Cluster webhook validates against those only: inline and
    /// runtime-extension ones), else those of `spec.variables`.
    pub variables: BTreeSet<String>,
}

impl ClassView {
    /// Reads a ClusterClass of either API shape.
    pub fn parse(obj: &DynamicObject) -> Result<Self, ParseProblem> {
        let name = obj
            .metadata
            .name
            .clone()
            .ok_or_else(|| problem("ClusterClass", obj, "no metadata.name"))?;
        let namespace = obj.metadata.namespace.clone().unwrap_or_default();
        let names = |path: [&str; 2]| -> BTreeSet<String> {
            at(&obj.data, &path)
                .and_then(Value::as_array)
                .map(|list| list.iter().filter_map(|v| str_at(v, &["name"])).collect())
                .unwrap_or_default()
        };
        let reconciled = names(["status", "variables"]);
        let variables = if reconciled.is_empty() {
            names(["spec", "variables"])
        } else {
            reconciled
        };
        Ok(Self {
            name,
            namespace,
            variables,
        })
    }

    /// Whether the class declares variable `name`.
    pub fn declares(&self, name: &str) -> bool {
        self.variables.contains(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> DynamicObject {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn v1beta2_class_ref_with_empty_namespace_means_cluster_namespace() {
        let c = ClusterView::parse(&obj(json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": "c1", "namespace": "team", "uid": "u1", "resourceVersion": "7"},
            "spec": {"topology": {"classRef": {"name": "gold"}, "version": "v1.33.0"}}
        })))
        .unwrap();
        assert_eq!(
            c.class,
            Some(ClassRef {
                name: "gold".into(),
                namespace: "team".into()
            })
        );
        assert_eq!(c.resource_version, "7");
        assert!(c.endpoint.is_none() && c.variables.is_none() && !c.paused);
    }

    #[test]
    fn v1beta2_class_ref_namespace_is_honoured() {
        let c = ClusterView::parse(&obj(json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": "c1", "namespace": "team", "uid": "u1"},
            "spec": {"topology": {"classRef": {"name": "gold", "namespace": "shared"}, "version": "v1"}}
        })))
        .unwrap();
        assert_eq!(c.class.unwrap().namespace, "shared");
    }

    #[test]
    fn v1beta1_class_and_class_namespace_are_read() {
        let c = ClusterView::parse(&obj(json!({
            "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Cluster",
            "metadata": {"name": "c1", "namespace": "team", "uid": "u1"},
            "spec": {"controlPlaneEndpoint": {"host": "", "port": 0},
                     "topology": {"class": "silver", "classNamespace": "classes", "version": "v1",
                                  "variables": [{"name": "a", "value": 1}]}}
        })))
        .unwrap();
        assert_eq!(
            c.class,
            Some(ClassRef {
                name: "silver".into(),
                namespace: "classes".into()
            })
        );
        let ep = c.endpoint.unwrap();
        assert_eq!(ep.host, None, "empty host counts as unset");
        assert_eq!(ep.port, Some(0));
        assert_eq!(c.variables.unwrap().len(), 1);
    }

    #[test]
    fn paused_from_spec_or_annotation_and_deleting() {
        let a = ClusterView::parse(&obj(
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": "c", "namespace": "n", "uid": "u"}, "spec": {"paused": true}}),
        ))
        .unwrap();
        assert!(a.paused);
        let b = ClusterView::parse(&obj(json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": "c", "namespace": "n", "uid": "u", "annotations": {"cluster.x-k8s.io/paused": ""},
                         "deletionTimestamp": "2026-01-01T00:00:00Z"}}))).unwrap();
        assert!(b.paused && b.deleting);
    }

    #[test]
    fn malformed_shapes_never_panic() {
        let c = ClusterView::parse(&obj(
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": "c", "namespace": "n", "uid": "u"},
            "spec": {"topology": "oops", "controlPlaneEndpoint": [1], "paused": "yes"}}),
        ))
        .unwrap();
        assert!(c.class.is_none() && c.endpoint.is_none() && !c.paused);
        let no_uid = ClusterView::parse(&obj(
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": "c", "namespace": "n"}}),
        ));
        assert!(no_uid.is_err());
    }

    #[test]
    fn class_variables_come_from_status_once_reconciled_else_from_spec() {
        let class = |status: Value| {
            ClassView::parse(&obj(
                json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "ClusterClass",
                "metadata": {"name": "gold", "namespace": "n"},
                "spec": {"variables": [{"name": "clusterVip", "required": false, "schema": {}}]},
                "status": status}),
            ))
            .unwrap()
        };
        // Reconciled: inline and runtime-extension variables, as CAPI's webhook sees them.
        let c = class(json!({"variables": [
            {"name": "clusterVip", "definitions": []}, {"name": "ingressVip", "definitions": []}]}));
        assert!(c.declares("clusterVip") && c.declares("ingressVip") && !c.declares("other"));
        // A spec variable the controller has not published yet would be refused by the webhook.
        let c = class(json!({"variables": [{"name": "ingressVip", "definitions": []}]}));
        assert!(!c.declares("clusterVip") && c.declares("ingressVip"));
        // No status yet (no ClusterClass controller): the spec.
        let c = class(json!({}));
        assert!(c.declares("clusterVip") && !c.declares("ingressVip"));
    }
}
