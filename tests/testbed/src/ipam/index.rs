//! In-memory indexes of the IPAM controller, kept from the change stream, so no reconcile
//! scans the store: claims per Cluster, unbound claims per pool, addresses per pool.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use serde_json::Value;

use super::CLUSTER_NAME_LABEL;

/// Namespace and name.
pub type Name = (String, String);

/// A pool identity: (kind, namespace — "" for the global pool, name).
pub type PoolId = (String, String, String);

fn s<'a>(v: &'a Value, p: &str) -> Option<&'a str> {
    v.pointer(p).and_then(Value::as_str)
}

/// The Cluster a claim belongs to: `spec.clusterName`, else the cluster-name label.
pub fn claim_cluster(claim: &Value) -> Option<&str> {
    s(claim, "/spec/clusterName")
        .filter(|c| !c.is_empty())
        .or_else(|| {
            claim
                .pointer(&format!(
                    "/metadata/labels/{}",
                    CLUSTER_NAME_LABEL.replace('/', "~1")
                ))
                .and_then(Value::as_str)
        })
}

/// The pool a claim points at, if it is one of ours.
pub fn claim_pool(claim: &Value, ns: &str) -> Option<PoolId> {
    if s(claim, "/spec/poolRef/apiGroup") != Some(super::GROUP) {
        return None;
    }
    let kind = s(claim, "/spec/poolRef/kind")?;
    let name = s(claim, "/spec/poolRef/name")?;
    let pool_ns = match kind {
        "InClusterIPPool" => ns,
        "GlobalInClusterIPPool" => "",
        _ => return None,
    };
    Some((kind.to_string(), pool_ns.to_string(), name.to_string()))
}

/// The pool an IPAddress was allocated from (the provider's poolRef index: an empty apiGroup counts as
/// `ipam.cluster.x-k8s.io`, another group is another provider's pool).
pub fn address_pool(addr: &Value, ns: &str) -> Option<PoolId> {
    if !matches!(
        s(addr, "/spec/poolRef/apiGroup"),
        None | Some("") | Some(super::GROUP)
    ) {
        return None;
    }
    let kind = s(addr, "/spec/poolRef/kind")?;
    let name = s(addr, "/spec/poolRef/name")?;
    let pool_ns = match kind {
        "InClusterIPPool" => ns,
        "GlobalInClusterIPPool" => "",
        _ => return None,
    };
    Some((kind.to_string(), pool_ns.to_string(), name.to_string()))
}

#[derive(Default)]
pub struct Index {
    claim_cluster: HashMap<Name, Name>,
    by_cluster: HashMap<Name, BTreeSet<Name>>,
    claim_pool: HashMap<Name, PoolId>,
    waiting: HashMap<PoolId, BTreeSet<Name>>,
    address_pool: HashMap<Name, (PoolId, Option<IpAddr>)>,
    addresses: HashMap<PoolId, HashMap<Name, Option<IpAddr>>>,
    /// Per pool: address (as integer) → number of IPAddresses holding it.
    in_use: HashMap<PoolId, BTreeMap<u128, usize>>,
}

impl Index {
    pub fn clear(&mut self) {
        *self = Index::default();
    }

    /// Records a claim's current state (None: gone).
    pub fn set_claim(&mut self, name: &Name, claim: Option<&Value>) {
        if let Some(cl) = self.claim_cluster.remove(name) {
            if let Some(set) = self.by_cluster.get_mut(&cl) {
                set.remove(name);
            }
        }
        if let Some(p) = self.claim_pool.remove(name) {
            if let Some(set) = self.waiting.get_mut(&p) {
                set.remove(name);
            }
        }
        let Some(claim) = claim else { return };
        if let Some(cl) = claim_cluster(claim) {
            let key = (name.0.clone(), cl.to_string());
            self.by_cluster
                .entry(key.clone())
                .or_default()
                .insert(name.clone());
            self.claim_cluster.insert(name.clone(), key);
        }
        if let Some(pool) = claim_pool(claim, &name.0) {
            if claim.pointer("/status/addressRef/name").is_none() {
                self.waiting
                    .entry(pool.clone())
                    .or_default()
                    .insert(name.clone());
            }
            self.claim_pool.insert(name.clone(), pool);
        }
    }

    pub fn claims_of_cluster(&self, ns: &str, cluster: &str) -> Vec<Name> {
        self.by_cluster
            .get(&(ns.to_string(), cluster.to_string()))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Claims of a pool that have no address yet.
    pub fn waiting_on(&self, pool: &PoolId) -> Vec<Name> {
        self.waiting
            .get(pool)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Records an IPAddress's current state (None: gone).
    pub fn set_address(&mut self, name: &Name, addr: Option<&Value>) {
        if let Some((p, ip)) = self.address_pool.remove(name) {
            if let Some(m) = self.addresses.get_mut(&p) {
                m.remove(name);
            }
            if let (Some(ip), Some(set)) = (ip, self.in_use.get_mut(&p)) {
                let k = super::alloc::to_int(ip);
                if let Some(n) = set.get_mut(&k) {
                    *n -= 1;
                    if *n == 0 {
                        set.remove(&k);
                    }
                }
            }
        }
        let Some(addr) = addr else { return };
        let Some(pool) = address_pool(addr, &name.0) else {
            return;
        };
        let ip = s(addr, "/spec/address").and_then(|a| a.parse().ok());
        self.addresses
            .entry(pool.clone())
            .or_default()
            .insert(name.clone(), ip);
        if let Some(ip) = ip {
            *self
                .in_use
                .entry(pool.clone())
                .or_default()
                .entry(super::alloc::to_int(ip))
                .or_default() += 1;
        }
        self.address_pool.insert(name.clone(), (pool, ip));
    }

    /// Addresses in use in a pool, as integers.
    pub fn in_use(&self, pool: &PoolId) -> Option<&BTreeMap<u128, usize>> {
        self.in_use.get(pool)
    }

    /// Number of IPAddresses referencing the pool, and those that parse.
    pub fn used(&self, pool: &PoolId) -> (usize, Vec<IpAddr>) {
        match self.addresses.get(pool) {
            None => (0, Vec::new()),
            Some(m) => (m.len(), m.values().flatten().copied().collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claims_are_indexed_by_cluster_and_waiting_pool() {
        let mut ix = Index::default();
        let n = ("ns".to_string(), "c1-cp".to_string());
        let claim = json!({"metadata": {"labels": {"cluster.x-k8s.io/cluster-name": "c1"}},
            "spec": {"poolRef": {"apiGroup": "ipam.cluster.x-k8s.io", "kind": "InClusterIPPool", "name": "p"}}});
        ix.set_claim(&n, Some(&claim));
        let pool = (
            "InClusterIPPool".to_string(),
            "ns".to_string(),
            "p".to_string(),
        );
        assert_eq!(ix.claims_of_cluster("ns", "c1"), vec![n.clone()]);
        assert_eq!(ix.waiting_on(&pool), vec![n.clone()]);
        let mut bound = claim.clone();
        bound["status"] = json!({"addressRef": {"name": "c1-cp"}});
        ix.set_claim(&n, Some(&bound));
        assert!(ix.waiting_on(&pool).is_empty());
        ix.set_address(&n, Some(&json!({"spec": {"address": "10.0.0.1", "poolRef": {"kind": "InClusterIPPool", "name": "p"}}})));
        assert_eq!(ix.used(&pool).0, 1);
        ix.set_address(&n, None);
        ix.set_claim(&n, None);
        assert_eq!(ix.used(&pool).0, 0);
        assert!(ix.claims_of_cluster("ns", "c1").is_empty());
    }
}
