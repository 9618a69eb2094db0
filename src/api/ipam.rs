//! IPAM views: `IPAddressClaim`, `IPAddress` and pools (v1alpha1/v1beta1/v1beta2 shapes tolerated).

use std::{collections::BTreeMap, net::IpAddr};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::DynamicObject;
use serde_json::Value;

use super::{at, problem, str_at, ParseProblem};
use crate::names::LABEL_ROLE;

/// `spec.poolRef` of a claim or address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolRef {
    /// `apiGroup` (empty when unset, as v1beta1 allowed).
    pub api_group: String,
    /// Pool kind.
    pub kind: String,
    /// Pool name.
    pub name: String,
}

impl PoolRef {
    /// Whether both name the same pool (an empty `apiGroup`, as v1beta1 allowed, means the IPAM group).
    pub fn same_pool(&self, other: &PoolRef) -> bool {
        let group = |g: &str| {
            if g.is_empty() {
                crate::names::IPAM_GROUP.to_owned()
            } else {
                g.to_owned()
            }
        };
        self.kind == other.kind
            && self.name == other.name
            && group(&self.api_group) == group(&other.api_group)
    }

    fn parse(v: Option<&Value>) -> Option<Self> {
        let v = v?;
        Some(Self {
            api_group: str_at(v, &["apiGroup"]).unwrap_or_default(),
            kind: str_at(v, &["kind"])?,
            name: str_at(v, &["name"])?,
        })
    }
}

/// An `IPAddressClaim`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimView {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// UID.
    pub uid: String,
    /// `spec.poolRef` (`None` when malformed).
    pub pool_ref: Option<PoolRef>,
    /// `status.addressRef.name`, when non-empty.
    pub address_ref: Option<String>,
    /// `metadata.creationTimestamp`.
    pub created: Option<jiff::Timestamp>,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// Our role label, if present.
    pub role_label: Option<String>,
    /// `metadata.resourceVersion` (guards the adoption patch).
    pub resource_version: String,
    /// Every ownerReference, as stored (kept by the adoption patch).
    pub owner_references: Vec<OwnerReference>,
    /// Annotated `clusterctl.cluster.x-k8s.io/delete-for-move`: a move is taking it away.
    pub moving: bool,
}

impl ClaimView {
    /// Reads an IPAddressClaim.
    pub fn parse(obj: &DynamicObject) -> Result<Self, ParseProblem> {
        let meta = &obj.metadata;
        let name = meta
            .name
            .clone()
            .ok_or_else(|| problem("IPAddressClaim", obj, "no metadata.name"))?;
        let namespace = meta.namespace.clone().unwrap_or_default();
        Ok(Self {
            name,
            namespace,
            uid: meta.uid.clone().unwrap_or_default(),
            pool_ref: PoolRef::parse(at(&obj.data, &["spec", "poolRef"])),
            address_ref: str_at(&obj.data, &["status", "addressRef", "name"])
                .filter(|n| !n.is_empty()),
            created: meta.creation_timestamp.as_ref().map(|t| t.0),
            deleting: meta.deletion_timestamp.is_some(),
            role_label: meta
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_ROLE))
                .cloned(),
            resource_version: meta.resource_version.clone().unwrap_or_default(),
            owner_references: meta.owner_references.clone().unwrap_or_default(),
            moving: meta
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(crate::names::ANNOTATION_DELETE_FOR_MOVE)),
        })
    }

    /// The ownerReference with `controller: true`, if any.
    pub fn controller(&self) -> Option<&OwnerReference> {
        self.owner_references
            .iter()
            .find(|o| o.controller == Some(true))
    }
}

/// An `IPAddress` with a parsed address.
#[derive(Debug, Clone, PartialEq)]
pub struct AddressView {
    /// Name (equals the claim's).
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// `spec.address`.
    pub address: IpAddr,
    /// `spec.claimRef.name` (`None` when unset).
    pub claim_name: Option<String>,
    /// `spec.poolRef`.
    pub pool_ref: Option<PoolRef>,
    /// `spec.prefix` (copied into an IPAddress that re-reserves this address).
    pub prefix: Option<i64>,
    /// `spec.gateway`, when set.
    pub gateway: Option<String>,
    /// UID (precondition of our deletes).
    pub uid: String,
    /// `metadata.resourceVersion` (guards adding our finalizer).
    pub resource_version: String,
    /// `metadata.finalizers`, as stored.
    pub finalizers: Vec<String>,
    /// `metadata.deletionTimestamp` is set: the object goes once its finalizers are removed.
    pub deleting: bool,
    /// Label `cluster.x-k8s.io/cluster-name` (the provider copies it from the claim; we set it on what we create).
    pub cluster_label: Option<String>,
    /// Annotated `clusterctl.cluster.x-k8s.io/delete-for-move`: a move is taking it away.
    pub moving: bool,
    /// An ownerReference names an IPAddressClaim: the provider bound it to a claim (one we create ourselves has
    /// none until its claim is bound).
    pub claim_owned: bool,
}

impl AddressView {
    /// Whether our protection finalizer is on it.
    pub fn protected(&self) -> bool {
        self.finalizers
            .iter()
            .any(|f| f == crate::names::FINALIZER_ADDRESS_PROTECTION)
    }

    /// Reads an IPAddress; an unparsable `spec.address` is a problem, not a panic.
    pub fn parse(obj: &DynamicObject) -> Result<Self, ParseProblem> {
        let meta = &obj.metadata;
        let name = meta
            .name
            .clone()
            .ok_or_else(|| problem("IPAddress", obj, "no metadata.name"))?;
        let raw = str_at(&obj.data, &["spec", "address"])
            .ok_or_else(|| problem("IPAddress", obj, "no spec.address"))?;
        let address = raw
            .parse::<IpAddr>()
            .map_err(|e| problem("IPAddress", obj, format!("spec.address {raw:?}: {e}")))?;
        Ok(Self {
            claim_name: str_at(&obj.data, &["spec", "claimRef", "name"]).filter(|n| !n.is_empty()),
            name,
            namespace: meta.namespace.clone().unwrap_or_default(),
            address,
            pool_ref: PoolRef::parse(at(&obj.data, &["spec", "poolRef"])),
            prefix: at(&obj.data, &["spec", "prefix"]).and_then(Value::as_i64),
            gateway: str_at(&obj.data, &["spec", "gateway"]).filter(|g| !g.is_empty()),
            uid: meta.uid.clone().unwrap_or_default(),
            resource_version: meta.resource_version.clone().unwrap_or_default(),
            finalizers: meta.finalizers.clone().unwrap_or_default(),
            deleting: meta.deletion_timestamp.is_some(),
            cluster_label: meta
                .labels
                .as_ref()
                .and_then(|l| l.get(crate::names::LABEL_CAPI_CLUSTER_NAME))
                .cloned(),
            moving: meta
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(crate::names::ANNOTATION_DELETE_FOR_MOVE)),
            claim_owned: meta
                .owner_references
                .as_ref()
                .is_some_and(|o| o.iter().any(|r| r.kind == "IPAddressClaim")),
        })
    }
}

/// An IP pool (`GlobalInClusterIPPool`, `InClusterIPPool`, or a `--pool-kinds` kind).
#[derive(Debug, Clone, PartialEq)]
pub struct PoolView {
    /// API group (`ipam.cluster.x-k8s.io` for the in-cluster kinds).
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Namespace (`None` for cluster-scoped pools).
    pub namespace: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// `status.ipAddresses.total`.
    pub total: Option<i64>,
    /// `status.ipAddresses.free`.
    pub free: Option<i64>,
    /// `status.ipAddresses.used`.
    pub used: Option<i64>,
    /// Being deleted.
    pub deleting: bool,
    /// What the pool can hand out, read from an in-cluster pool `spec` (`None` when it has no such spec or it
    /// cannot be read).
    pub addresses: Option<crate::plan::ranges::AddressSet>,
    /// `spec.prefix`.
    pub prefix: Option<i64>,
    /// `spec.gateway`, when set.
    pub gateway: Option<String>,
}

impl PoolView {
    /// Reads a pool of kind `kind` in `group`.
    pub fn parse(group: &str, kind: &str, obj: &DynamicObject) -> Result<Self, ParseProblem> {
        let meta = &obj.metadata;
        let name = meta
            .name
            .clone()
            .ok_or_else(|| problem("pool", obj, "no metadata.name"))?;
        let count =
            |key: &str| at(&obj.data, &["status", "ipAddresses", key]).and_then(Value::as_i64);
        Ok(Self {
            group: group.to_owned(),
            kind: kind.to_owned(),
            name,
            namespace: meta.namespace.clone(),
            labels: meta.labels.clone().unwrap_or_default(),
            annotations: meta.annotations.clone().unwrap_or_default(),
            total: count("total"),
            free: count("free"),
            used: count("used"),
            deleting: meta.deletion_timestamp.is_some(),
            addresses: at(&obj.data, &["spec"])
                .and_then(|spec| crate::plan::ranges::AddressSet::of_pool_spec(spec).ok()),
            prefix: at(&obj.data, &["spec", "prefix"]).and_then(Value::as_i64),
            gateway: str_at(&obj.data, &["spec", "gateway"]).filter(|g| !g.is_empty()),
        })
    }

    /// Known to have no free address (`status.ipAddresses.free == 0`).
    pub fn exhausted(&self) -> bool {
        self.free == Some(0)
    }

    /// One of the two in-cluster kinds, whose provider always reports `status.ipAddresses`.
    pub fn in_cluster(&self) -> bool {
        self.group == crate::names::IPAM_GROUP
            && (self.kind == crate::names::KIND_POOL || self.kind == crate::names::KIND_GLOBAL_POOL)
    }

    /// Capacity unknown: a `--pool-kinds` pool without the in-cluster `status.ipAddresses.free` counter. A claim on
    /// it that stays unbound past `--pending-claim-timeout` moves on.
    pub fn capacity_unknown(&self) -> bool {
        self.free.is_none() && !self.in_cluster()
    }

    /// Whether `r` (a claim's `spec.poolRef`, the claim in `namespace`) names this pool: group (empty = the IPAM
    /// group, as v1beta1 allowed), kind, name, and for a namespaced pool the claim's namespace.
    pub fn is_referenced_by(&self, r: &PoolRef, namespace: &str) -> bool {
        let group = if r.api_group.is_empty() {
            crate::names::IPAM_GROUP
        } else {
            r.api_group.as_str()
        };
        self.group == group
            && self.kind == r.kind
            && self.name == r.name
            && self.namespace.as_deref().is_none_or(|ns| ns == namespace)
    }

    /// The `spec.poolRef` a claim on this pool carries.
    pub fn reference(&self) -> PoolRef {
        PoolRef {
            api_group: self.group.clone(),
            kind: self.kind.clone(),
            name: self.name.clone(),
        }
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
    fn claim_owner_pool_and_address_ref_are_read() {
        let c = ClaimView::parse(&obj(json!({
            "apiVersion": "ipam.cluster.x-k8s.io/v1beta2", "kind": "IPAddressClaim",
            "metadata": {"name": "vip-cp-a", "namespace": "n", "uid": "cu", "creationTimestamp": "2026-01-01T00:00:00Z",
                         "labels": {"vip.capi.gorizond.io/role": "control-plane"},
                         "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": "a", "uid": "u1", "controller": true}]},
            "spec": {"poolRef": {"apiGroup": "ipam.cluster.x-k8s.io", "kind": "GlobalInClusterIPPool", "name": "p"}, "clusterName": "a"},
            "status": {"addressRef": {"name": "vip-cp-a"}}
        })))
        .unwrap();
        assert_eq!(c.controller().unwrap().uid, "u1");
        assert_eq!(c.pool_ref.as_ref().unwrap().name, "p");
        assert_eq!(c.address_ref.as_deref(), Some("vip-cp-a"));
        assert_eq!(c.role_label.as_deref(), Some("control-plane"));
        assert!(c.created.is_some());
    }

    #[test]
    fn v1alpha1_claim_with_empty_address_ref_is_pending() {
        let c = ClaimView::parse(&obj(json!({
            "apiVersion": "ipam.cluster.x-k8s.io/v1beta1", "kind": "IPAddressClaim",
            "metadata": {"name": "x", "namespace": "n"},
            "spec": {"poolRef": {"kind": "GlobalInClusterIPPool", "name": "p"}},
            "status": {"addressRef": {"name": ""}}
        })))
        .unwrap();
        assert_eq!(c.address_ref, None);
        assert_eq!(c.pool_ref.as_ref().unwrap().api_group, "");
        assert!(c.controller().is_none());
    }

    #[test]
    fn address_ipv4_ipv6_and_garbage() {
        let mk = |a: &str| {
            obj(
                json!({"apiVersion": "ipam.cluster.x-k8s.io/v1beta2", "kind": "IPAddress",
                "metadata": {"name": "vip-cp-a", "namespace": "n"},
                "spec": {"address": a, "prefix": 24, "claimRef": {"name": "vip-cp-a"},
                         "poolRef": {"apiGroup": "ipam.cluster.x-k8s.io", "kind": "GlobalInClusterIPPool", "name": "p"}}}),
            )
        };
        assert_eq!(
            AddressView::parse(&mk("10.0.0.5"))
                .unwrap()
                .address
                .to_string(),
            "10.0.0.5"
        );
        assert_eq!(
            AddressView::parse(&mk("fd00::5"))
                .unwrap()
                .address
                .to_string(),
            "fd00::5"
        );
        assert!(AddressView::parse(&mk("not-an-ip")).is_err());
    }

    #[test]
    fn pool_status_counts() {
        let p = PoolView::parse("ipam.cluster.x-k8s.io", "GlobalInClusterIPPool", &obj(json!({
            "apiVersion": "ipam.cluster.x-k8s.io/v1alpha2", "kind": "GlobalInClusterIPPool",
            "metadata": {"name": "p"}, "spec": {"addresses": ["10.0.0.1-10.0.0.2"], "prefix": 24},
            "status": {"ipAddresses": {"total": 2, "used": 2, "free": 0, "outOfRange": 0}}
        })))
        .unwrap();
        assert!(p.exhausted());
        assert_eq!((p.total, p.used), (Some(2), Some(2)));
        let fresh = PoolView::parse("ipam.cluster.x-k8s.io", "GlobalInClusterIPPool", &obj(json!({
            "apiVersion": "ipam.cluster.x-k8s.io/v1alpha2", "kind": "GlobalInClusterIPPool", "metadata": {"name": "q"}
        })))
        .unwrap();
        assert!(!fresh.exhausted(), "unknown status is not exhaustion");
        assert!(
            !fresh.capacity_unknown(),
            "the in-cluster provider reports counters"
        );
    }

    #[test]
    fn extra_kind_pool_carries_its_group_and_matches_refs_by_group_kind_name_namespace() {
        let p = PoolView::parse("ipam.metal3.io", "IPPool", &obj(json!({
            "apiVersion": "ipam.metal3.io/v1alpha1", "kind": "IPPool",
            "metadata": {"name": "m", "namespace": "ns"}, "status": {"lastUpdated": "2026-01-01T00:00:00Z"}
        })))
        .unwrap();
        assert!(p.capacity_unknown());
        let r = p.reference();
        assert_eq!(r.api_group, "ipam.metal3.io");
        assert!(p.is_referenced_by(&r, "ns"));
        assert!(
            !p.is_referenced_by(&r, "other"),
            "a namespaced pool of another namespace"
        );
        let in_cluster_group = PoolRef {
            api_group: String::new(),
            ..r.clone()
        };
        assert!(
            !p.is_referenced_by(&in_cluster_group, "ns"),
            "an empty group is the IPAM group"
        );
        let other_kind = PoolRef {
            kind: "InClusterIPPool".into(),
            ..r
        };
        assert!(!p.is_referenced_by(&other_kind, "ns"));
    }
}
