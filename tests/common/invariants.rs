//! The reliability invariants, checked against the API server's state (never against the operator's word):
//!
//! 1. every live topology Cluster that should get a VIP has exactly one control-plane VIP: a host in
//!    `spec.controlPlaneEndpoint`, exactly one `vip-cp-<name>` claim owned by it, and that claim's `IPAddress`
//!    carries the same address;
//! 2. no two Clusters share a VIP (control-plane hosts and ingress VIPs together), and no address of a pool is bound
//!    to two claims: two IPAddresses of one pool may share an address (the operator's temporary "holder" next to
//!    the claim's new IPAddress), but not while they name two different claims that both exist;
//! 3. every claim of ours has a live owner (a Cluster with the owner reference's uid), and every `IPAddress` bound
//!    to a claim of ours has that claim;
//! 4. after all Clusters are deleted, no claim or `IPAddress` of ours remains and every pool's `status.ipAddresses.used`
//!    is back to its value at the start.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use capi_vip_allocator::api::ApiShapes;
use kube::{
    api::{Api, DynamicObject, ListParams},
    Client,
};
use serde_json::Value;

const PREFIXES: [&str; 2] = ["vip-cp-", "vip-ingress-"];
const INGRESS_VIP: &str = "vip.capi.gorizond.io/ingress-vip";

/// What the last successful check saw.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Live topology Clusters.
    pub clusters: usize,
    /// Distinct VIPs held by Clusters (control plane + ingress).
    pub vips: usize,
    /// VIPs held by more than one Cluster, or addresses handed out twice by a pool.
    pub duplicates: usize,
    /// Claims without a live owner plus addresses without their claim.
    pub orphans: usize,
    /// Claims of ours.
    pub claims: usize,
    /// IPAddresses bound to claims of ours.
    pub addresses: usize,
}

/// Clusters, claims, IPAddresses.
type Snapshot = (Vec<DynamicObject>, Vec<DynamicObject>, Vec<DynamicObject>);

/// Checks the invariants; remembers the pools' `used` counts at creation as the baseline for [`Self::check_released`].
pub struct Invariants {
    client: Client,
    shapes: ApiShapes,
    baseline: BTreeMap<String, i64>,
}

fn is_ours(name: &str) -> bool {
    PREFIXES.iter().any(|p| name.starts_with(p))
}

fn ptr<'a>(o: &'a DynamicObject, path: &str) -> Option<&'a Value> {
    o.data.pointer(path)
}

fn str_at(o: &DynamicObject, path: &str) -> String {
    ptr(o, path)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn key(o: &DynamicObject) -> String {
    format!(
        "{}/{}",
        o.metadata.namespace.as_deref().unwrap_or(""),
        o.metadata.name.as_deref().unwrap_or("")
    )
}

impl Invariants {
    /// Records the baseline (pools' `used`) now.
    pub async fn new(client: Client, shapes: ApiShapes) -> Invariants {
        let mut inv = Invariants {
            client,
            shapes,
            baseline: BTreeMap::new(),
        };
        inv.baseline = inv.pool_used().await.expect("list pools for the baseline");
        inv
    }

    /// Adds pools created after the baseline (their `used` starts at 0).
    pub fn expect_pool(&mut self, name: &str) {
        self.baseline.entry(name.to_owned()).or_insert(0);
    }

    async fn list(&self, api: Api<DynamicObject>) -> Result<Vec<DynamicObject>, String> {
        api.list(&ListParams::default())
            .await
            .map(|l| l.items)
            .map_err(|e| format!("list: {e}"))
    }

    /// Clusters, claims and IPAddresses of every namespace.
    async fn snapshot(&self) -> Result<Snapshot, String> {
        let all = |ar| Api::all_with(self.client.clone(), ar);
        Ok((
            self.list(all(&self.shapes.cluster)).await?,
            self.list(all(&self.shapes.claim)).await?,
            self.list(all(&self.shapes.address)).await?,
        ))
    }

    async fn pool_used(&self) -> Result<BTreeMap<String, i64>, String> {
        let pools = self
            .list(Api::all_with(self.client.clone(), &self.shapes.global_pool))
            .await?;
        Ok(pools
            .iter()
            .map(|p| {
                (
                    p.metadata.name.clone().unwrap_or_default(),
                    ptr(p, "/status/ipAddresses/used")
                        .and_then(Value::as_i64)
                        .unwrap_or(0),
                )
            })
            .collect())
    }

    /// Invariants 1–3. `wants_vip` says which live topology Clusters must have a control-plane VIP (those with a
    /// matching pool that has room).
    pub async fn check_allocated(
        &self,
        wants_vip: &dyn Fn(&DynamicObject) -> bool,
    ) -> Result<Summary, String> {
        let (clusters, all_claims, addresses) = self.snapshot().await?;
        let claims: Vec<_> = all_claims
            .iter()
            .filter(|c| is_ours(c.metadata.name.as_deref().unwrap_or("")))
            .cloned()
            .collect();
        let mut problems = Vec::new();
        let mut summary = Summary::default();

        let live: BTreeMap<String, &DynamicObject> = clusters
            .iter()
            .filter_map(|c| c.metadata.uid.clone().map(|u| (u, c)))
            .collect();
        // Claim → its address (by claim namespace/name).
        let mut address_of_claim: BTreeMap<String, String> = BTreeMap::new();
        let claim_keys: BTreeSet<String> = claims.iter().map(key).collect();
        let shared = address_violations(&addresses, &all_claims);
        summary.duplicates += shared.len();
        problems.extend(shared);
        for a in &addresses {
            let ns = a.metadata.namespace.clone().unwrap_or_default();
            let claim = str_at(a, "/spec/claimRef/name");
            let ip = str_at(a, "/spec/address");
            if !is_ours(&claim) {
                continue;
            }
            summary.addresses += 1;
            let ck = format!("{ns}/{claim}");
            if !claim_keys.contains(&ck) {
                summary.orphans += 1;
                problems.push(format!("IPAddress {} ({ip}) has no claim {ck}", key(a)));
            }
            address_of_claim.insert(ck, ip);
        }
        // Invariant 3: live owners.
        summary.claims = claims.len();
        let mut cp_claims_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for c in &claims {
            let owners: Vec<_> = c
                .metadata
                .owner_references
                .iter()
                .flatten()
                .filter(|o| o.kind == "Cluster")
                .collect();
            let live_owner = owners.iter().find(|o| live.contains_key(&o.uid));
            match live_owner {
                Some(o) => {
                    if c.metadata
                        .name
                        .as_deref()
                        .is_some_and(|n| n.starts_with("vip-cp-"))
                    {
                        cp_claims_of.entry(o.uid.clone()).or_default().push(key(c));
                    }
                }
                None => {
                    summary.orphans += 1;
                    problems.push(format!("claim {} has no live owner", key(c)));
                }
            }
        }
        // Invariants 1 and 2.
        let mut holders: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for c in &clusters {
            if ptr(c, "/spec/topology").is_none() || c.metadata.deletion_timestamp.is_some() {
                continue;
            }
            summary.clusters += 1;
            let host = str_at(c, "/spec/controlPlaneEndpoint/host");
            if !host.is_empty() {
                holders.entry(host.clone()).or_default().push(key(c));
            }
            if let Some(ing) = c
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(INGRESS_VIP))
                .filter(|v| !v.is_empty())
            {
                holders.entry(ing.clone()).or_default().push(key(c));
            }
            if !wants_vip(c) {
                continue;
            }
            let uid = c.metadata.uid.clone().unwrap_or_default();
            let cp = cp_claims_of.get(&uid).cloned().unwrap_or_default();
            if host.is_empty() {
                problems.push(format!("Cluster {} has no control-plane VIP", key(c)));
            } else if cp.len() != 1 {
                problems.push(format!(
                    "Cluster {} has {} control-plane claims: {cp:?}",
                    key(c),
                    cp.len()
                ));
            } else if address_of_claim.get(&cp[0]) != Some(&host) {
                problems.push(format!(
                    "Cluster {} host {host} is not the address of its claim {} ({:?})",
                    key(c),
                    cp[0],
                    address_of_claim.get(&cp[0])
                ));
            }
        }
        summary.vips = holders.len();
        for (vip, who) in &holders {
            if who.len() > 1 {
                summary.duplicates += who.len() - 1;
                problems.push(format!("VIP {vip} is held by {who:?}"));
            }
        }
        if problems.is_empty() {
            Ok(summary)
        } else {
            problems.truncate(10);
            Err(problems.join("\n"))
        }
    }

    /// The two sharing rules alone ([`address_violations`], [`host_violations`]), at any moment: during a run,
    /// after convergence, at the end.
    pub async fn check_no_sharing(&self) -> Result<(), String> {
        let (clusters, claims, addresses) = self.snapshot().await?;
        let mut problems = address_violations(&addresses, &claims);
        problems.extend(host_violations(&clusters));
        if problems.is_empty() {
            Ok(())
        } else {
            problems.truncate(10);
            Err(problems.join("\n"))
        }
    }

    /// Invariant 4 (call once all Clusters are gone).
    pub async fn check_released(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        let clusters = self
            .list(Api::all_with(self.client.clone(), &self.shapes.cluster))
            .await?;
        if !clusters.is_empty() {
            problems.push(format!("{} Clusters remain", clusters.len()));
        }
        let claims: Vec<String> = self
            .list(Api::all_with(self.client.clone(), &self.shapes.claim))
            .await?
            .iter()
            .filter(|c| is_ours(c.metadata.name.as_deref().unwrap_or("")))
            .map(key)
            .collect();
        if !claims.is_empty() {
            problems.push(format!("claims of ours remain: {claims:?}"));
        }
        let addresses: Vec<String> = self
            .list(Api::all_with(self.client.clone(), &self.shapes.address))
            .await?
            .iter()
            .filter(|a| is_ours(&str_at(a, "/spec/claimRef/name")))
            .map(|a| {
                let fin = a.metadata.finalizers.clone().unwrap_or_default();
                let deleting = a.metadata.deletion_timestamp.is_some();
                format!("{} (finalizers {fin:?}, deleting {deleting})", key(a))
            })
            .collect();
        if !addresses.is_empty() {
            problems.push(format!("IPAddresses of ours remain: {addresses:?}"));
        }
        let used = self.pool_used().await?;
        for (pool, start) in &self.baseline {
            let now = used.get(pool).copied().unwrap_or(0);
            if now != *start {
                problems.push(format!("pool {pool}: used {now}, was {start} at the start"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            problems.truncate(10);
            Err(problems.join("\n"))
        }
    }

    /// Retries [`Self::check_allocated`] until it passes (returns the summary and the time it took) or `within`
    /// passes (panics with the last violations).
    pub async fn wait_allocated(
        &self,
        wants_vip: &dyn Fn(&DynamicObject) -> bool,
        within: Duration,
    ) -> (Summary, Duration) {
        self.wait_vips(wants_vip, 0, within).await
    }

    /// Same, and also until `vips` VIPs (control-plane and ingress) are written: the invariants only require the
    /// control-plane ones, and an ingress VIP may land in a later reconcile. Returns the last summary when the
    /// count is not reached in time, for the caller's assertion to report.
    pub async fn wait_vips(
        &self,
        wants_vip: &dyn Fn(&DynamicObject) -> bool,
        vips: usize,
        within: Duration,
    ) -> (Summary, Duration) {
        let t0 = Instant::now();
        loop {
            let res = self.check_allocated(wants_vip).await;
            match res {
                Ok(s) if s.vips >= vips || t0.elapsed() > within => return (s, t0.elapsed()),
                Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                Err(e) if t0.elapsed() > within => {
                    panic!("allocation invariants still violated after {within:?}:\n{e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Retries [`Self::check_released`] until it passes (returns the time it took) or `within` passes (panics).
    pub async fn wait_released(&self, within: Duration) -> Duration {
        let t0 = Instant::now();
        // An injected fault refusing the last check's list says nothing: report the last real finding.
        let mut finding = String::new();
        loop {
            match self.check_released().await {
                Ok(()) => return t0.elapsed(),
                Err(e) => {
                    if !e.contains("injected fault") || finding.is_empty() {
                        finding = e;
                    }
                    if t0.elapsed() > within {
                        panic!("release invariants still violated after {within:?}:\n{finding}")
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
            }
        }
    }
}

/// A pool: kind, namespace (empty for cluster-scoped pools), name.
type PoolKey = (String, String, String);

/// The pool an IPAddress comes from.
fn pool_of(a: &DynamicObject) -> PoolKey {
    let kind = str_at(a, "/spec/poolRef/kind");
    let ns = if kind.starts_with("Global") {
        String::new()
    } else {
        a.metadata.namespace.clone().unwrap_or_default()
    };
    (kind, ns, str_at(a, "/spec/poolRef/name"))
}

/// "No address is bound to two claims": IPAddresses of one pool holding the same address are a violation only
/// when they name (`spec.claimRef`, in their namespace) at least two different claims that exist. A "holder"
/// whose claim does not exist, or two IPAddresses of the same claim, are not.
pub fn address_violations(addresses: &[DynamicObject], claims: &[DynamicObject]) -> Vec<String> {
    let existing: BTreeSet<String> = claims.iter().map(key).collect();
    let mut by_address: BTreeMap<(PoolKey, String), BTreeSet<String>> = BTreeMap::new();
    for a in addresses {
        let claim = format!(
            "{}/{}",
            a.metadata.namespace.as_deref().unwrap_or(""),
            str_at(a, "/spec/claimRef/name")
        );
        let set = by_address
            .entry((pool_of(a), str_at(a, "/spec/address")))
            .or_default();
        if existing.contains(&claim) {
            set.insert(claim);
        }
    }
    by_address
        .into_iter()
        .filter(|(_, claims)| claims.len() > 1)
        .map(|(((kind, ns, pool), ip), claims)| {
            let pool = if ns.is_empty() {
                pool
            } else {
                format!("{ns}/{pool}")
            };
            format!("address {ip} of {kind} {pool} is bound to two claims: {claims:?}")
        })
        .collect()
}

/// "No control-plane host is shared by two Clusters" (live Clusters, `spec.controlPlaneEndpoint.host`).
pub fn host_violations(clusters: &[DynamicObject]) -> Vec<String> {
    let mut holders: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in clusters
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
    {
        let host = str_at(c, "/spec/controlPlaneEndpoint/host");
        if !host.is_empty() {
            holders.entry(host).or_default().push(key(c));
        }
    }
    holders
        .into_iter()
        .filter(|(_, who)| who.len() > 1)
        .map(|(host, who)| format!("control-plane host {host} is shared by Clusters {who:?}"))
        .collect()
}
