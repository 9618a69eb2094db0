//! The reflector caches, and everything read from them: snapshots for the rules, gauge samples, and the
//! mapping from a changed object to the Clusters it concerns.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use futures::FutureExt;
use kube::{
    api::{ApiResource, DynamicObject},
    runtime::reflector::{store::Writer, ObjectRef, Store},
};
use serde_json::Value;

use super::views::ViewCache;
use crate::{
    api::{AddressView, ApiShapes, ClaimView, ClassView, ClusterView, PoolView},
    plan::{labels, Role, RoleInputs, Snapshot},
    telemetry::metrics::{GaugeSample, PoolSample, SampleSource},
};

/// A cached IPAddress: its view, or why its `spec` cannot be used.
pub type AddressEntry = Result<AddressView, String>;

fn parse_claim(obj: &DynamicObject) -> Option<ClaimView> {
    ClaimView::parse(obj)
        .map_err(|e| tracing::warn!(error = %e, "malformed IPAddressClaim ignored"))
        .ok()
}

fn parse_address(obj: &DynamicObject) -> Option<AddressEntry> {
    Some(AddressView::parse(obj).map_err(|e| {
        tracing::warn!(error = %e, "malformed IPAddress");
        e.to_string()
    }))
}

/// The index of the IPAddress cache: the address, canonically spelled.
fn address_ip(entry: &AddressEntry) -> Option<String> {
    entry.as_ref().ok().map(|a| a.address.to_string())
}

/// Why a pool's `spec.addresses` cannot be allocated from, if it cannot: each entry must be an IP address, a
/// `first-last` range or a CIDR, all of one family, and there must be at least one (read as the provider reads
/// them: `plan::ranges`).
pub fn pool_addresses_problem(pool: &DynamicObject) -> Option<String> {
    let Some(entries) = pool
        .data
        .pointer("/spec/addresses")
        .and_then(Value::as_array)
    else {
        return Some("spec.addresses is missing".to_owned());
    };
    if let Some(entry) = entries.iter().find(|e| !e.is_string()) {
        return Some(format!("entry {entry} is not a string"));
    }
    let spec = pool.data.get("spec")?;
    crate::plan::ranges::AddressSet::of_pool_spec(spec).err()
}

fn parse_pool(ar: &ApiResource, p: &DynamicObject) -> Option<PoolView> {
    PoolView::parse(&ar.group, &ar.kind, p)
        .map_err(|e| tracing::debug!(error = %e, "skipping malformed pool"))
        .ok()
}

/// Read handles of every cache.
#[derive(Clone)]
pub struct Stores {
    /// Clusters.
    pub clusters: Store<DynamicObject>,
    /// ClusterClasses.
    pub classes: Store<DynamicObject>,
    /// IPAddressClaims, parsed.
    pub claims: ViewCache<ClaimView>,
    /// IPAddresses, parsed.
    pub addresses: ViewCache<AddressEntry>,
    /// GlobalInClusterIPPools.
    pub pools: Store<DynamicObject>,
    /// InClusterIPPools (namespaced).
    pub ns_pools: Store<DynamicObject>,
    /// The `--pool-kinds` pools, one cache per kind (metadata and `status.ipAddresses` only).
    pub extra_pools: Vec<(crate::api::PoolKind, Store<DynamicObject>)>,
    /// Which Clusters share a control-plane host (kept by the Cluster watch).
    pub hosts: super::hosts::HostIndex,
    /// The API shapes the caches hold.
    pub shapes: ApiShapes,
    /// `--pool-allowlist`: when set, only these pools exist for the operator.
    pool_allowlist: Option<Arc<BTreeSet<String>>>,
    /// `--pending-claim-timeout`.
    pending_claim_timeout: std::time::Duration,
    /// Invalid pools already warned about (`name@resourceVersion`), so the warning is logged once per version.
    warned_pools: Arc<std::sync::Mutex<BTreeSet<String>>>,
}

/// Write handles, consumed by the reflectors.
pub struct Writers {
    /// Clusters.
    pub clusters: Writer<DynamicObject>,
    /// ClusterClasses.
    pub classes: Writer<DynamicObject>,
    /// IPAddressClaims.
    pub claims: ViewCache<ClaimView>,
    /// IPAddresses.
    pub addresses: ViewCache<AddressEntry>,
    /// Pools.
    pub pools: Writer<DynamicObject>,
    /// Namespaced pools.
    pub ns_pools: Writer<DynamicObject>,
    /// `--pool-kinds` pools, in `shapes.extra_pools` order.
    pub extra_pools: Vec<Writer<DynamicObject>>,
}

impl Stores {
    /// Empty caches for `shapes`.
    pub fn new(shapes: &ApiShapes) -> (Self, Writers) {
        let w = |ar: &ApiResource| Writer::<DynamicObject>::new(ar.clone());
        let writers = Writers {
            clusters: w(&shapes.cluster),
            classes: w(&shapes.cluster_class),
            claims: ViewCache::new(parse_claim),
            addresses: ViewCache::new(parse_address).with_index(address_ip),
            pools: w(&shapes.global_pool),
            ns_pools: w(&shapes.pool),
            extra_pools: shapes.extra_pools.iter().map(|k| w(&k.resource)).collect(),
        };
        let stores = Self {
            clusters: writers.clusters.as_reader(),
            classes: writers.classes.as_reader(),
            claims: writers.claims.clone(),
            addresses: writers.addresses.clone(),
            pools: writers.pools.as_reader(),
            ns_pools: writers.ns_pools.as_reader(),
            extra_pools: shapes
                .extra_pools
                .iter()
                .cloned()
                .zip(writers.extra_pools.iter().map(Writer::as_reader))
                .collect(),
            hosts: Default::default(),
            shapes: shapes.clone(),
            pool_allowlist: None,
            pending_claim_timeout: crate::plan::DEFAULT_PENDING_CLAIM_TIMEOUT,
            warned_pools: Arc::default(),
        };
        (stores, writers)
    }

    /// Restricts the pools the operator uses to `names` (empty: every pool): `name` for a global pool,
    /// `namespace/name` for a namespaced one.
    pub fn with_pool_allowlist(mut self, names: &[String]) -> Self {
        self.pool_allowlist =
            (!names.is_empty()).then(|| Arc::new(names.iter().cloned().collect()));
        self
    }

    /// Sets `--pending-claim-timeout` for the snapshots.
    pub fn with_pending_claim_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.pending_claim_timeout = timeout;
        self
    }

    fn pool_allowed(&self, p: &DynamicObject) -> bool {
        let name = p.metadata.name.as_deref().unwrap_or_default();
        let key = match p.metadata.namespace.as_deref() {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_owned(),
        };
        self.pool_allowlist
            .as_ref()
            .is_none_or(|allowed| allowed.contains(&key))
    }

    fn get(
        store: &Store<DynamicObject>,
        ar: &ApiResource,
        ns: Option<&str>,
        name: &str,
    ) -> Option<Arc<DynamicObject>> {
        let mut r = ObjectRef::new_with(name, ar.clone());
        if let Some(ns) = ns {
            r = r.within(ns);
        }
        store.get(&r)
    }

    /// The cached Cluster `namespace/name`.
    pub fn cluster(&self, namespace: &str, name: &str) -> Option<Arc<DynamicObject>> {
        Self::get(&self.clusters, &self.shapes.cluster, Some(namespace), name)
    }

    /// All pools, parsed: the global ones, and the namespaced ones of `namespace` (of every namespace when `None`).
    /// Malformed ones, including pools whose `spec.addresses` the IPAM provider could never allocate from, are
    /// logged and skipped, so a Cluster is not left waiting on them.
    pub fn pool_views_in(&self, namespace: Option<&str>) -> Vec<PoolView> {
        let in_namespace = |p: &&Arc<DynamicObject>| {
            namespace.is_none_or(|ns| p.metadata.namespace.as_deref() == Some(ns))
        };
        let global = self.pools.state();
        let namespaced = self.ns_pools.state();
        let mut views: Vec<PoolView> = global
            .iter()
            .map(|p| (&self.shapes.global_pool, p))
            .chain(
                namespaced
                    .iter()
                    .filter(in_namespace)
                    .map(|p| (&self.shapes.pool, p)),
            )
            .filter(|(_, p)| self.pool_allowed(p))
            .filter(|(_, p)| self.allocatable(p))
            .filter_map(|(ar, p)| parse_pool(ar, p))
            .collect();
        // `--pool-kinds` pools: their spec is not cached (nor read: each provider has its own shape).
        for (kind, store) in &self.extra_pools {
            let state = store.state();
            views.extend(
                state
                    .iter()
                    .filter(|p| !kind.namespaced || in_namespace(p))
                    .filter(|p| self.pool_allowed(p))
                    .filter_map(|p| parse_pool(&kind.resource, p)),
            );
        }
        views
    }

    /// Whether an in-cluster pool's `spec.addresses` can be allocated from (else warned about once per version).
    fn allocatable(&self, p: &DynamicObject) -> bool {
        let Some(problem) = pool_addresses_problem(p) else {
            return true;
        };
        let name = p.metadata.name.as_deref().unwrap_or_default();
        let version = p.metadata.resource_version.as_deref().unwrap_or_default();
        let first = self
            .warned_pools
            .lock()
            .map(|mut w| {
                w.insert(format!(
                    "{}/{name}@{version}",
                    p.metadata.namespace.as_deref().unwrap_or_default()
                ))
            })
            .unwrap_or(false);
        if first {
            tracing::warn!(pool = name, namespace = p.metadata.namespace.as_deref(), %problem,
                "pool ignored: its spec.addresses cannot be allocated from");
        }
        false
    }

    /// Every pool, global and namespaced.
    pub fn pool_views(&self) -> Vec<PoolView> {
        self.pool_views_in(None)
    }

    /// A snapshot for the rules.
    pub fn snapshot(
        &self,
        cluster: ClusterView,
        default_port: u16,
        now: jiff::Timestamp,
    ) -> Snapshot {
        let class = cluster.class.as_ref().and_then(|r| {
            Self::get(
                &self.classes,
                &self.shapes.cluster_class,
                Some(&r.namespace),
                &r.name,
            )
            .and_then(|o| ClassView::parse(&o).ok())
        });
        let inputs = |role: Role| {
            let claim = self
                .claims
                .get(&cluster.namespace, &role.claim_name(&cluster.name))
                .map(|c| ClaimView::clone(&c));
            let entry = claim.as_ref().and_then(|c| {
                let name = c.address_ref.as_ref().unwrap_or(&c.name);
                self.addresses.get(&c.namespace, name)
            });
            let (address, address_problem) = match entry.as_deref() {
                Some(Ok(a)) => (Some(a.clone()), None),
                Some(Err(e)) => (None, Some(e.clone())),
                None => (None, None),
            };
            let view = |name: &str| {
                self.addresses
                    .get(&cluster.namespace, name)
                    .and_then(|e| e.as_ref().as_ref().ok().cloned())
            };
            let holding = |value: Option<&str>| -> Vec<AddressView> {
                value
                    .and_then(|v| v.trim().parse::<std::net::IpAddr>().ok())
                    .map(|ip| {
                        self.addresses
                            .indexed(&ip.to_string())
                            .iter()
                            .filter_map(|e| e.as_ref().as_ref().ok().cloned())
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let same_ip = holding(crate::plan::holds::in_use(&cluster, role));
            let requested_holders = holding(cluster.annotation(role.requested_annotation()));
            RoleInputs {
                claim,
                address,
                address_problem,
                named: view(&role.claim_name(&cluster.name)),
                holder: view(&role.holder_name(&cluster.name)),
                same_ip,
                requested_holders,
            }
        };
        let same_host = self
            .hosts
            .peers(&(cluster.namespace.clone(), cluster.name.clone()));
        Snapshot {
            same_host,
            control_plane: inputs(Role::ControlPlane),
            ingress: inputs(Role::Ingress),
            class,
            pools: self.pool_views_in(Some(&cluster.namespace)),
            cluster,
            default_port,
            now,
            answering: Default::default(),
            caches_synced: self.secondary_caches_synced(),
            pending_claims: crate::plan::PendingClaims {
                timeout: self.pending_claim_timeout,
                passed_over: Vec::new(),
            },
        }
    }

    /// Whether the caches other than the Clusters' have received their initial list. (Checked without waiting:
    /// nothing else awaits these stores' readiness, so the throwaway waker this registers displaces no one.)
    pub fn secondary_caches_synced(&self) -> bool {
        self.claims.ready()
            && self.addresses.ready()
            && [&self.classes, &self.pools, &self.ns_pools]
                .into_iter()
                .chain(self.extra_pools.iter().map(|(_, s)| s))
                .all(|s| matches!(s.wait_until_ready().now_or_never(), Some(Ok(()))))
    }

    /// Clusters (`namespace`, `name`) whose class is `class` (any namespace when `class_ns` is `None`).
    pub fn clusters_of_class(&self, class: &str, class_ns: Option<&str>) -> Vec<(String, String)> {
        self.clusters
            .state()
            .iter()
            .filter_map(|c| ClusterView::parse(c).ok())
            .filter(|c| {
                c.class
                    .as_ref()
                    .is_some_and(|r| r.name == class && class_ns.is_none_or(|ns| ns == r.namespace))
            })
            .map(|c| (c.namespace, c.name))
            .collect()
    }

    /// Clusters with a pending claim on `pool`.
    pub fn clusters_waiting_on_pool(&self, pool: &PoolView) -> Vec<(String, String)> {
        self.claims
            .state()
            .iter()
            .filter(|c| {
                c.address_ref.is_none()
                    && c.pool_ref
                        .as_ref()
                        .is_some_and(|r| pool.is_referenced_by(r, &c.namespace))
            })
            .filter_map(|c| cluster_of_claim_name(&c.name).map(|n| (c.namespace.clone(), n)))
            .collect()
    }
}

/// The Cluster a claim of ours belongs to, from its name; `None` for other consumers' claims.
pub fn cluster_of_claim_name(claim_name: &str) -> Option<String> {
    Role::cluster_of_claim(claim_name)
        .map(|(_, c)| c.to_owned())
        .filter(|c| !c.is_empty())
}

/// The claim an IPAddress answers: `spec.claimRef.name`, else its own name (the provider uses the claim's).
pub fn claim_of_address(obj: &DynamicObject) -> Option<String> {
    obj.data
        .pointer("/spec/claimRef/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .or_else(|| obj.metadata.name.clone())
}

/// What about a pool can change the rules' decisions (not its counters, which move on every allocation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSignature {
    labels: BTreeMap<String, String>,
    class_annotation: Option<String>,
    role_annotation: Option<String>,
    priority: Option<String>,
    fallthrough: Option<String>,
    exhausted: bool,
    deleting: bool,
}

impl PoolSignature {
    /// The signature of a pool.
    pub fn of(p: &PoolView) -> Self {
        Self {
            labels: p.labels.clone(),
            class_annotation: p
                .annotations
                .get(crate::names::LABEL_CLUSTER_CLASS)
                .cloned(),
            role_annotation: p.annotations.get(crate::names::LABEL_ROLE).cloned(),
            priority: p
                .annotations
                .get(crate::names::ANNOTATION_POOL_PRIORITY)
                .cloned(),
            fallthrough: p
                .annotations
                .get(crate::names::ANNOTATION_POOL_FALLTHROUGH)
                .cloned(),
            exhausted: p.exhausted(),
            deleting: p.deleting,
        }
    }
}

impl SampleSource for Stores {
    fn live_classes(&self) -> Option<BTreeSet<String>> {
        let mut live: BTreeSet<String> = self
            .classes
            .state()
            .iter()
            .filter_map(|c| c.metadata.name.clone())
            .collect();
        live.extend(
            self.clusters
                .state()
                .iter()
                .filter_map(|c| ClusterView::parse(c).ok())
                .filter_map(|c| c.class.map(|r| r.name)),
        );
        Some(live)
    }

    fn sample(&self) -> GaugeSample {
        let now = jiff::Timestamp::now();
        let mut sample = GaugeSample {
            duplicate_vips: self.hosts.duplicated(),
            ..Default::default()
        };
        let pools = self.pool_views();
        sample.overlapping_pools = crate::plan::ranges::overlaps(&pools).len() as u64;
        let mut classes: BTreeSet<String> = self
            .classes
            .state()
            .iter()
            .filter_map(|c| c.metadata.name.clone())
            .collect();
        for p in &pools {
            classes.extend(
                labels::listed_classes(&p.labels, &p.annotations)
                    .into_iter()
                    .map(str::to_owned),
            );
            sample.pools.push(PoolSample {
                name: p.name.clone(),
                namespace: p.namespace.clone().unwrap_or_default(),
                total: p.total,
                free: p.free,
                used: p.used,
            });
        }
        for class in &classes {
            for role in Role::ALL {
                let n = pools
                    .iter()
                    .filter(|p| {
                        !p.deleting
                            && labels::pool_matches(&p.labels, &p.annotations, class, role.label())
                    })
                    .count() as u64;
                sample
                    .pools_available
                    .insert((class.clone(), role.label().to_owned()), n);
            }
        }
        for claim in self.claims.state() {
            let Some(role) = claim.role_label.as_deref().and_then(Role::from_label) else {
                continue;
            };
            let entry = sample
                .claims
                .entry((role.label().to_owned(), claim.namespace.clone()))
                .or_default();
            entry.0 += 1;
            entry.1 += u64::from(claim.address_ref.is_some());
            // 0 while none of the namespace's claims of this role waits, so the series exists alongside the counts.
            let age = match (&claim.address_ref, claim.created) {
                (None, Some(created)) => now.duration_since(created).as_secs_f64().max(0.0),
                _ => 0.0,
            };
            let oldest = sample
                .pending_oldest
                .entry((role.label().to_owned(), claim.namespace.clone()))
                .or_insert(age);
            *oldest = oldest.max(age);
        }
        sample
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_our_claim_names_map_to_clusters() {
        assert_eq!(
            cluster_of_claim_name("vip-cp-alpha").as_deref(),
            Some("alpha")
        );
        assert_eq!(
            cluster_of_claim_name("vip-ingress-alpha").as_deref(),
            Some("alpha")
        );
        assert_eq!(cluster_of_claim_name("node-ip-claim-1"), None);
        assert_eq!(cluster_of_claim_name("vip-cp-"), None);
    }

    #[test]
    fn address_maps_through_claim_ref_or_name() {
        let with_ref: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "ipam.cluster.x-k8s.io/v1beta2", "kind": "IPAddress",
            "metadata": {"name": "x", "namespace": "n"}, "spec": {"claimRef": {"name": "vip-cp-a"}}})).unwrap();
        assert_eq!(claim_of_address(&with_ref).as_deref(), Some("vip-cp-a"));
        let bare: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "ipam.cluster.x-k8s.io/v1beta2", "kind": "IPAddress",
            "metadata": {"name": "vip-ingress-b", "namespace": "n"}, "spec": {}}))
        .unwrap();
        assert_eq!(claim_of_address(&bare).as_deref(), Some("vip-ingress-b"));
    }

    #[test]
    fn pool_addresses_are_validated_like_the_ipam_provider_would() {
        let pool = |addresses: Value| -> DynamicObject {
            serde_json::from_value(json!({
                "apiVersion": "ipam.cluster.x-k8s.io/v1alpha2", "kind": "GlobalInClusterIPPool",
                "metadata": {"name": "p"}, "spec": {"addresses": addresses, "prefix": 24}}))
            .unwrap()
        };
        for ok in [
            json!(["10.0.0.1"]),
            json!(["10.0.0.1-10.0.0.9", "10.0.1.0/28"]),
            json!(["fd00::1-fd00::9", "fd01::/120"]),
        ] {
            assert_eq!(pool_addresses_problem(&pool(ok.clone())), None, "{ok}");
        }
        for bad in [
            json!([]),
            json!(["10.0.0.300"]),
            json!(["not-an-ip"]),
            json!(["10.0.0.9-10.0.0.1"]),
            json!(["10.0.0.1-fd00::1"]),
            json!(["10.0.0.0/33"]),
            json!(["10.0.0.1", "fd00::1"]),
            json!([7]),
        ] {
            assert!(
                pool_addresses_problem(&pool(bad.clone())).is_some(),
                "{bad}"
            );
        }
        let no_spec: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "ipam.cluster.x-k8s.io/v1alpha2", "kind": "GlobalInClusterIPPool",
            "metadata": {"name": "p"}}))
        .unwrap();
        assert!(pool_addresses_problem(&no_spec).is_some());
    }

    #[test]
    fn pool_signature_ignores_counters_but_not_exhaustion_or_labels() {
        let mut p = PoolView {
            group: crate::names::IPAM_GROUP.into(),
            kind: "GlobalInClusterIPPool".into(),
            name: "p".into(),
            namespace: None,
            labels: [("a".to_owned(), "b".to_owned())].into_iter().collect(),
            annotations: Default::default(),
            total: Some(10),
            free: Some(5),
            used: Some(5),
            deleting: false,
            addresses: None,
            prefix: None,
            gateway: None,
        };
        let before = PoolSignature::of(&p);
        p.free = Some(4);
        p.used = Some(6);
        assert_eq!(
            PoolSignature::of(&p),
            before,
            "counter moves do not re-trigger Clusters"
        );
        p.free = Some(0);
        assert_ne!(PoolSignature::of(&p), before, "exhaustion does");
        p.free = Some(4);
        p.labels.insert("c".into(), "d".into());
        assert_ne!(PoolSignature::of(&p), before, "label changes do");
    }
}
