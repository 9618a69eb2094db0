//! A second simulated IPAM provider: metal3's ip-address-manager answering CAPI `IPAddressClaim`s whose `poolRef`
//! is `{apiGroup: ipam.metal3.io, kind: IPPool}` (the pool in the claim's namespace), as the CAPI IPAM contract
//! asks (docs/capi-contracts.md §3.4): claims of paused or missing Clusters are skipped; an `IPAddress` named like
//! the claim, with the claim's `poolRef`, the claim as controller owner and the pool as non-controller owner, the
//! lowest free address of the pool's `spec.pools[]` `start`-`end` ranges (first fit), the range's `prefix` and
//! `gateway` (else the pool's); then `status.addressRef` on the claim and `status.indexes` / `lastUpdated` on the
//! pool. The pool reports no `status.ipAddresses` counters. A pool with no free address leaves the claim pending,
//! retried on the next change. The claim gets the finalizer `ipam.metal3.io`; when it is deleted the provider
//! deletes its `IPAddress` and removes the finalizer.

use std::{collections::BTreeSet, net::IpAddr, sync::Arc};

use serde_json::{json, Value};

use super::alloc::{to_int, Allocatable, PoolSpec};
use crate::objects::WriteCtx;
use crate::patch::PatchType;
use crate::state::{finalizers, is_deleting, meta_str, now_time, Shared};
use crate::store::{EventType, GroupResource};

/// The pool group and kind this provider answers.
pub const METAL3_GROUP: &str = "ipam.metal3.io";
/// Its pool kind.
pub const METAL3_POOL_KIND: &str = "IPPool";
const AGENT: &str = "testbed-ipam-metal3";
/// The finalizer the provider puts on the claims it answers (metal3 names its finalizers after its group).
pub const CLAIM_FINALIZER: &str = "ipam.metal3.io";

fn s<'a>(v: &'a Value, p: &str) -> Option<&'a str> {
    v.pointer(p).and_then(Value::as_str)
}

fn capi(resource: &str) -> GroupResource {
    GroupResource::new(super::GROUP, resource)
}

fn pools_gr() -> GroupResource {
    GroupResource::new(METAL3_GROUP, "ippools")
}

/// The metal3 pool a claim or address references (its name), if any.
fn pool_of(obj: &Value) -> Option<&str> {
    (s(obj, "/spec/poolRef/apiGroup") == Some(METAL3_GROUP)
        && s(obj, "/spec/poolRef/kind") == Some(METAL3_POOL_KIND))
    .then(|| s(obj, "/spec/poolRef/name"))
    .flatten()
}

fn paused(obj: &Value) -> bool {
    obj.pointer("/metadata/annotations/cluster.x-k8s.io~1paused")
        .is_some()
        || obj.pointer("/spec/paused").and_then(Value::as_bool) == Some(true)
}

/// Runs until shutdown, off the store's change stream. Claims not yet bound are kept in a small set and retried
/// when a pool, an address or a Cluster changes.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut sub = shared.store.subscribe_from(0);
    let mut pending: BTreeSet<(String, String)> = BTreeSet::new();
    loop {
        sub.mark_seen();
        match shared.store.events_since(sub.last) {
            Ok(events) => {
                if let Some(last) = events.last() {
                    sub.last = last.rv;
                }
                for e in &events {
                    let k = &e.key;
                    match (k.gr.group.as_str(), k.gr.resource.as_str()) {
                        (super::GROUP, "ipaddressclaims") if pool_of(&e.object).is_some() => {
                            let name = (k.namespace.clone(), k.name.clone());
                            if e.kind == EventType::Deleted {
                                pending.remove(&name);
                            } else {
                                pending.insert(name);
                            }
                        }
                        _ => {}
                    }
                }
            }
            Err(_) => {
                sub.last = shared.store.current_rv();
                let (claims, _, _) =
                    shared
                        .store
                        .list(&capi("ipaddressclaims"), None, None, 0, &|c| {
                            pool_of(c).is_some()
                        });
                pending = claims
                    .iter()
                    .map(|c| {
                        (
                            meta_str(c, "namespace").unwrap_or("").to_owned(),
                            meta_str(c, "name").unwrap_or("").to_owned(),
                        )
                    })
                    .collect();
            }
        }
        // Any change (a freed address, a pool edit, an unpaused Cluster) retries every pending claim: there are few.
        pending.retain(|(ns, name)| !reconcile(&shared, ns, name));
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            alive = sub.changed() => if !alive { return },
        }
    }
}

/// Reconciles one claim; true when it needs nothing more (gone, or released). Bound claims stay in the pending
/// set (it is small in tests) so their deletion is seen.
fn reconcile(shared: &Shared, ns: &str, name: &str) -> bool {
    let store = &shared.store;
    let Some(claim) = store.get(&capi("ipaddressclaims"), ns, name) else {
        return true;
    };
    let Some(pool_name) = pool_of(&claim) else {
        return true;
    };
    let ctx = WriteCtx::internal(AGENT);
    let ours = finalizers(&claim).iter().any(|f| f == CLAIM_FINALIZER);
    if is_deleting(&claim) {
        // The provider deletes the claim's IPAddress (the pool, a second owner, would keep it from the garbage
        // collector), then lets the claim go.
        if let Some(info) = shared.info_for(&capi("ipaddresses")) {
            if store
                .get(&capi("ipaddresses"), ns, name)
                .as_deref()
                .and_then(pool_of)
                == Some(pool_name)
            {
                let _ = shared.delete(&info, ns, name, &Default::default(), &ctx);
            }
        }
        if ours {
            let rest: Vec<String> = finalizers(&claim)
                .into_iter()
                .filter(|f| f != CLAIM_FINALIZER)
                .collect();
            let body = json!({"metadata": {"finalizers": rest}}).to_string();
            if let Some(info) = shared.info_for(&capi("ipaddressclaims")) {
                return shared
                    .patch(
                        &info,
                        ns,
                        name,
                        PatchType::Merge,
                        body.as_bytes(),
                        false,
                        false,
                        &ctx,
                    )
                    .is_ok();
            }
        }
        return true;
    }
    if s(&claim, "/status/addressRef/name").is_some_and(|n| !n.is_empty()) {
        return false; // bound: kept in view for its deletion
    }
    if !ours {
        let mut with = finalizers(&claim);
        with.push(CLAIM_FINALIZER.to_owned());
        let body = json!({"metadata": {"finalizers": with}}).to_string();
        let Some(info) = shared.info_for(&capi("ipaddressclaims")) else {
            return false;
        };
        if shared
            .patch(
                &info,
                ns,
                name,
                PatchType::Merge,
                body.as_bytes(),
                false,
                false,
                &ctx,
            )
            .is_err()
        {
            return false;
        }
    }
    let cluster = s(&claim, "/spec/clusterName")
        .filter(|c| !c.is_empty())
        .or_else(|| s(&claim, "/metadata/labels/cluster.x-k8s.io~1cluster-name"));
    if let Some(cluster) = cluster {
        match store.get(
            &GroupResource::new("cluster.x-k8s.io", "clusters"),
            ns,
            cluster,
        ) {
            Some(c) if !paused(&c) => {}
            _ => return false, // contract: a missing or paused Cluster stops the provider
        }
    }
    let Some(pool) = store.get(&pools_gr(), ns, pool_name) else {
        return false;
    };
    if is_deleting(&pool) {
        return false;
    }
    let existing = store.get(&capi("ipaddresses"), ns, name);
    if existing.is_none() {
        let Some((ip, prefix, gateway)) = first_free(shared, ns, pool_name, &pool) else {
            tracing::debug!(claim = name, pool = pool_name, "metal3: no free address");
            return false;
        };
        let Some(info) = shared.info_for(&capi("ipaddresses")) else {
            return false;
        };
        let owner = |o: &Value, controller: bool| {
            json!({"apiVersion": o.get("apiVersion"), "kind": o.get("kind"), "name": meta_str(o, "name"),
                "uid": meta_str(o, "uid"), "controller": controller, "blockOwnerDeletion": true})
        };
        let mut addr = json!({"apiVersion": info.api_version(), "kind": "IPAddress",
            "metadata": {"name": name, "namespace": ns,
                "ownerReferences": [owner(&claim, true), owner(&pool, false)]},
            "spec": {"address": ip.to_string(), "prefix": prefix, "claimRef": {"name": name},
                "poolRef": {"apiGroup": METAL3_GROUP, "kind": METAL3_POOL_KIND, "name": pool_name}}});
        if let Some(gw) = gateway {
            addr["spec"]["gateway"] = json!(gw);
        }
        if let Some(cl) = claim.pointer("/metadata/labels/cluster.x-k8s.io~1cluster-name") {
            addr["metadata"]["labels"] = json!({"cluster.x-k8s.io/cluster-name": cl});
        }
        match shared.create(&info, ns, addr, &ctx) {
            Ok(_) => {}
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => {
                tracing::warn!(claim = name, error = %e.message, "metal3: cannot create IPAddress");
                return false;
            }
        }
        let indexes =
            json!({"status": {"lastUpdated": now_time(), "indexes": {name: ip.to_string()}}});
        if let Some(pinfo) = shared.info_for(&pools_gr()) {
            let body = indexes.to_string();
            let _ = shared.patch(
                &pinfo,
                ns,
                pool_name,
                PatchType::Merge,
                body.as_bytes(),
                false,
                true,
                &ctx,
            );
        }
    } else if existing.as_deref().and_then(pool_of) != Some(pool_name) {
        return false; // another pool's IPAddress holds the name
    }
    let Some(cinfo) = shared.info_for(&capi("ipaddressclaims")) else {
        return false;
    };
    let body = json!({"status": {"addressRef": {"name": name}}}).to_string();
    shared
        .patch(
            &cinfo,
            ns,
            name,
            PatchType::Merge,
            body.as_bytes(),
            false,
            true,
            &ctx,
        )
        .is_ok()
}

/// The lowest address of the pool's ranges not held by an IPAddress of the pool, with the range's prefix and
/// gateway (else the pool's).
fn first_free(
    shared: &Shared,
    ns: &str,
    pool_name: &str,
    pool: &Value,
) -> Option<(IpAddr, u64, Option<String>)> {
    let (addrs, _, _) = shared
        .store
        .list(&capi("ipaddresses"), Some(ns), None, 0, &|a| {
            pool_of(a) == Some(pool_name)
        });
    let in_use: std::collections::BTreeMap<u128, ()> = addrs
        .iter()
        .filter_map(|a| s(a, "/spec/address")?.parse::<IpAddr>().ok())
        .map(|ip| (to_int(ip), ()))
        .collect();
    let pool_prefix = pool.pointer("/spec/prefix").and_then(Value::as_u64);
    let pool_gateway = s(pool, "/spec/gateway");
    for range in pool.pointer("/spec/pools").and_then(Value::as_array)? {
        let (Some(start), Some(end)) = (s(range, "/start"), s(range, "/end")) else {
            continue;
        };
        let spec = PoolSpec {
            addresses: vec![format!("{start}-{end}")],
            prefix: 0,
            gateway: None,
            excluded: Vec::new(),
            allocate_reserved: true,
        };
        let Ok(alloc) = Allocatable::new(&spec) else {
            continue;
        };
        if let Some(ip) = alloc.first_free(&in_use) {
            let prefix = range
                .pointer("/prefix")
                .and_then(Value::as_u64)
                .or(pool_prefix)
                .unwrap_or(0);
            let gateway = s(range, "/gateway").or(pool_gateway).map(str::to_owned);
            return Some((ip, prefix, gateway));
        }
    }
    None
}
