//! The claim/pool reconciler: event-driven off the store's change stream, one claim at a time.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::alloc::Allocatable;
use super::pools::pool_spec;
use super::*;
use crate::objects::WriteCtx;
use crate::patch::PatchType;
use crate::state::{finalizers, is_deleting, meta_str, Shared};
use crate::store::{Event, EventType, GroupResource};

use super::index::{address_pool, claim_cluster, claim_pool, Index, Name, PoolId};

pub(super) fn gr(resource: &str) -> GroupResource {
    GroupResource::new(GROUP, resource)
}

pub(super) fn pool_gr(kind: &str) -> Option<GroupResource> {
    match kind {
        "InClusterIPPool" => Some(gr("inclusterippools")),
        "GlobalInClusterIPPool" => Some(gr("globalinclusterippools")),
        _ => None,
    }
}

pub(super) fn s<'a>(v: &'a Value, p: &str) -> Option<&'a str> {
    v.pointer(p).and_then(Value::as_str)
}

pub(super) fn ctx() -> WriteCtx {
    WriteCtx::internal(AGENT)
}

fn is_paused(obj: &Value) -> bool {
    obj.pointer(&format!(
        "/metadata/annotations/{}",
        PAUSED_ANNOTATION.replace('/', "~1")
    ))
    .is_some()
}

pub(super) struct Controller {
    pub(super) shared: Arc<Shared>,
    pub(super) queue: VecDeque<Name>,
    pub(super) queued: HashSet<Name>,
    pub(super) dirty_pools: BTreeSet<PoolId>,
    pub(super) delay: Duration,
    pub(super) index: Index,
    /// Claims whose reconcile failed on a write, retried after [`RETRY_AFTER`] (upstream's rate-limited requeue).
    pub(super) retrying: BTreeSet<Name>,
}

/// How soon a claim whose reconcile failed on a write is reconciled again (upstream starts its backoff at 5 ms).
const RETRY_AFTER: Duration = Duration::from_millis(20);

pub async fn run(shared: Arc<Shared>, delay: Duration) {
    let mut sub = shared.store.subscribe_from(0);
    let mut c = Controller {
        shared: shared.clone(),
        queue: VecDeque::new(),
        queued: HashSet::new(),
        dirty_pools: BTreeSet::new(),
        delay,
        index: Index::default(),
        retrying: BTreeSet::new(),
    };
    let mut since_status = 0usize;
    loop {
        sub.mark_seen();
        match shared.store.events_since(sub.last) {
            Ok(events) => {
                if let Some(last) = events.last() {
                    sub.last = last.rv;
                }
                for e in &events {
                    c.on_event(e);
                }
            }
            Err(_) => {
                sub.last = shared.store.current_rv();
                c.resync();
            }
        }
        if let Some(claim) = c.queue.pop_front() {
            c.queued.remove(&claim);
            // The reaction delay models a slow provider: only claims with work to do wait.
            if !c.delay.is_zero() && c.has_work(&claim) {
                tokio::select! {
                    _ = shared.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(c.delay) => {}
                }
            }
            c.reconcile_claim(&claim);
            since_status += 1;
            if since_status < 32 || c.dirty_pools.is_empty() {
                continue;
            }
        }
        if !c.dirty_pools.is_empty() {
            since_status = 0;
            for p in std::mem::take(&mut c.dirty_pools) {
                c.update_pool(&p);
            }
            continue;
        }
        let retry = !c.retrying.is_empty();
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            alive = sub.changed() => if !alive { return },
            _ = tokio::time::sleep(RETRY_AFTER), if retry => {
                for n in std::mem::take(&mut c.retrying) {
                    c.enqueue(n);
                }
            }
        }
    }
}

impl Controller {
    fn retry_later(&mut self, n: Name) {
        self.retrying.insert(n);
    }

    fn enqueue(&mut self, n: Name) {
        if self.queued.insert(n.clone()) {
            self.queue.push_back(n);
        }
    }

    /// Claims of a pool still waiting for an address.
    fn enqueue_waiting(&mut self, pool: &PoolId) {
        for n in self.index.waiting_on(pool) {
            self.enqueue(n);
        }
    }

    /// Rebuilds the indexes from the store (after falling behind the change history).
    fn resync(&mut self) {
        self.index.clear();
        let name_of = |o: &Value| {
            (
                meta_str(o, "namespace").unwrap_or("").to_string(),
                meta_str(o, "name").unwrap_or("").to_string(),
            )
        };
        let (claims, _, _) = self
            .shared
            .store
            .list(&gr("ipaddressclaims"), None, None, 0, &|_| true);
        for c in &claims {
            let n = name_of(c);
            self.index.set_claim(&n, Some(c));
            self.enqueue(n);
        }
        let (addrs, _, _) = self
            .shared
            .store
            .list(&gr("ipaddresses"), None, None, 0, &|_| true);
        for a in &addrs {
            self.index.set_address(&name_of(a), Some(a));
        }
        for kind in ["InClusterIPPool", "GlobalInClusterIPPool"] {
            if let Some(g) = pool_gr(kind) {
                let (pools, _, _) = self.shared.store.list(&g, None, None, 0, &|_| true);
                for p in pools {
                    let (ns, name) = name_of(&p);
                    self.dirty_pools.insert((kind.to_string(), ns, name));
                }
            }
        }
    }

    fn on_event(&mut self, e: &Event) {
        let k = &e.key;
        let name = (k.namespace.clone(), k.name.clone());
        match (k.gr.group.as_str(), k.gr.resource.as_str()) {
            (GROUP, "ipaddressclaims") => {
                let gone = e.kind == EventType::Deleted;
                self.index.set_claim(&name, (!gone).then_some(&*e.object));
                if !gone {
                    self.enqueue(name);
                }
            }
            (GROUP, "ipaddresses") => {
                let gone = e.kind == EventType::Deleted;
                self.index.set_address(&name, (!gone).then_some(&*e.object));
                if let Some(p) = address_pool(&e.object, &k.namespace) {
                    if e.kind == EventType::Deleted {
                        self.enqueue_waiting(&p);
                    }
                    self.dirty_pools.insert(p);
                }
                // The provider `Owns` IPAddresses and retries failed claims: the claim named like the address is
                // reconciled when the change can matter (a new address once it is gone, a kept one re-protected or
                // re-owned, a waiting claim retried); its own writes of a settled address are skipped.
                let unprotected = !finalizers(&e.object)
                    .iter()
                    .any(|f| f == PROTECT_ADDRESS_FINALIZER);
                let owners_changed = e.prev.as_deref().is_some_and(|p| {
                    p.pointer("/metadata/ownerReferences")
                        != e.object.pointer("/metadata/ownerReferences")
                });
                let waiting = || {
                    self.shared
                        .store
                        .get(&gr("ipaddressclaims"), &name.0, &name.1)
                        .is_some_and(|c| s(&c, "/status/addressRef/name").is_none())
                };
                if gone || unprotected || owners_changed || waiting() {
                    self.enqueue(name);
                }
            }
            (GROUP, res @ ("inclusterippools" | "globalinclusterippools")) => {
                let kind = if res == "inclusterippools" {
                    "InClusterIPPool"
                } else {
                    "GlobalInClusterIPPool"
                };
                let id = (kind.to_string(), k.namespace.clone(), k.name.clone());
                if e.kind == EventType::Deleted {
                    return;
                }
                let prev = e.prev.as_deref();
                let spec_changed = prev.is_none_or(|p| p.get("spec") != e.object.get("spec"));
                let unpaused = prev.is_some_and(is_paused) && !is_paused(&e.object);
                if spec_changed || unpaused {
                    self.dirty_pools.insert(id.clone());
                    self.enqueue_waiting(&id);
                } else if prev.is_some_and(|p| {
                    p.get("metadata").map(finalizers_of)
                        != e.object.get("metadata").map(finalizers_of)
                }) || is_deleting(&e.object)
                {
                    self.dirty_pools.insert(id);
                }
            }
            ("cluster.x-k8s.io", "clusters") => {
                let paused = |c: &Value| {
                    is_paused(c) || c.pointer("/spec/paused").and_then(Value::as_bool) == Some(true)
                };
                if e.kind == EventType::Deleted {
                    // Upstream enqueues the claims of a deleted, unpaused Cluster (their deletion may proceed).
                    if !paused(&e.object) {
                        let claims = self.index.claims_of_cluster(&k.namespace, &k.name);
                        claims.into_iter().for_each(|n| self.enqueue(n));
                    }
                    return;
                }
                let was_paused = e.prev.as_deref().map(paused);
                if was_paused == Some(paused(&e.object)) || paused(&e.object) {
                    return;
                }
                let claims = self.index.claims_of_cluster(&k.namespace, &k.name);
                claims.into_iter().for_each(|n| self.enqueue(n));
            }
            _ => {}
        }
    }

    /// Whether reconciling the claim would write something (finalizers, address, addressRef).
    fn has_work(&self, (ns, name): &Name) -> bool {
        let Some(claim) = self.shared.store.get(&gr("ipaddressclaims"), ns, name) else {
            return false;
        };
        let ours = finalizers(&claim).iter().any(|f| f == RELEASE_FINALIZER);
        if is_deleting(&claim) {
            return ours;
        }
        !ours || s(&claim, "/status/addressRef/name").is_none()
    }

    pub(super) fn json_patch(
        &self,
        g: &GroupResource,
        ns: &str,
        name: &str,
        patch: Value,
        status: bool,
    ) -> bool {
        let Some(info) = self.shared.info_for(g) else {
            return false;
        };
        let body = patch.to_string();
        let pt = if patch.is_array() {
            PatchType::Json
        } else {
            PatchType::Merge
        };
        self.shared
            .patch(&info, ns, name, pt, body.as_bytes(), false, status, &ctx())
            .is_ok()
    }

    /// Upstream removes a finalizer with `controllerutil.RemoveFinalizer` and a `client.MergeFrom` patch: the list
    /// as the controller last read it, minus `fin`, written whole with no optimistic lock (a finalizer another
    /// client removed meanwhile comes back, one added meanwhile is lost). Returns whether the write succeeded;
    /// upstream returns the error (and goes no further) when it does not.
    pub(super) fn remove_finalizer(&self, g: &GroupResource, obj: &Value, fin: &str) -> bool {
        let fins = finalizers(obj);
        if !fins.iter().any(|f| f == fin) {
            return true;
        }
        let rest: Vec<&String> = fins.iter().filter(|f| *f != fin).collect();
        let (ns, name) = (
            meta_str(obj, "namespace").unwrap_or(""),
            meta_str(obj, "name").unwrap_or(""),
        );
        self.json_patch(
            g,
            ns,
            name,
            json!({"metadata": {"finalizers": rest}}),
            false,
        )
    }

    fn reconcile_claim(&mut self, (ns, name): &Name) {
        let store = &self.shared.store;
        let claims = gr("ipaddressclaims");
        let addresses = gr("ipaddresses");
        let Some(claim) = store.get(&claims, ns, name) else {
            return;
        };
        if is_paused(&claim) {
            return;
        }
        let Some(pool_id) = claim_pool(&claim, ns) else {
            return;
        };
        // Upstream `Reconcile`: a paused Cluster stops everything, deletion included; a missing one stops all but
        // deletion.
        let deleting = is_deleting(&claim);
        if let Some(cn) = claim_cluster(&claim) {
            match store.get(&GroupResource::new("cluster.x-k8s.io", "clusters"), ns, cn) {
                None if !deleting => return,
                Some(cluster)
                    if is_paused(&cluster)
                        || cluster.pointer("/spec/paused").and_then(Value::as_bool)
                            == Some(true) =>
                {
                    return
                }
                _ => {}
            }
        }
        if deleting {
            // A paused pool stops deletion too; a missing one does not.
            let pool = pool_gr(&pool_id.0).and_then(|g| store.get(&g, &pool_id.1, &pool_id.2));
            if pool.as_deref().is_some_and(is_paused) {
                return;
            }
            if let Some(addr) = store.get(&addresses, ns, name) {
                // Upstream `reconcileDelete` returns the error (the claim keeps its finalizer and is retried).
                if !self.remove_finalizer(&addresses, &addr, PROTECT_ADDRESS_FINALIZER) {
                    self.retry_later((ns.clone(), name.clone()));
                    return;
                }
                if let Some(info) = self.shared.info_for(&addresses) {
                    let _ = self
                        .shared
                        .delete(&info, ns, name, &Default::default(), &ctx());
                }
                // Another finalizer may keep it terminating: its address stays in use until it is gone.
                let left = store.get(&addresses, ns, name);
                self.index
                    .set_address(&(ns.clone(), name.clone()), left.as_deref());
                self.dirty_pools.insert(pool_id);
            }
            self.remove_finalizer(&claims, &claim, RELEASE_FINALIZER);
            return;
        }
        if !finalizers(&claim).iter().any(|f| f == RELEASE_FINALIZER) {
            let fins = finalizers(&claim);
            let mut with = fins.clone();
            with.push(RELEASE_FINALIZER.to_string());
            let test = if fins.is_empty() {
                Value::Null
            } else {
                json!(fins)
            };
            if !self.json_patch(
                &claims,
                ns,
                name,
                json!([{"op": "test", "path": "/metadata/finalizers", "value": test},
                {"op": "add", "path": "/metadata/finalizers", "value": with}]),
                false,
            ) {
                return;
            }
        }
        let Some(pool_gr) = pool_gr(&pool_id.0) else {
            return;
        };
        let Some(pool) = store.get(&pool_gr, &pool_id.1, &pool_id.2) else {
            return;
        };
        if is_paused(&pool) || is_deleting(&pool) {
            return;
        }
        // EnsureAddress: an IPAddress of this name among those listed for the claim's pool (terminating ones
        // included) keeps its address; otherwise the lowest free one is chosen.
        let existing = store.get(&addresses, ns, name);
        let kept = existing
            .as_deref()
            .is_some_and(|a| address_pool(a, ns).as_ref() == Some(&pool_id));
        let ip = if kept {
            None
        } else {
            let Ok(alloc) = Allocatable::new(&pool_spec(&pool)) else {
                tracing::warn!(pool = %pool_id.2, "pool spec cannot be parsed; claim left pending");
                return;
            };
            // The gateway is never in the allocatable set, so only IPAddresses count.
            let empty = std::collections::BTreeMap::<u128, usize>::new();
            let in_use = self.index.in_use(&pool_id).unwrap_or(&empty);
            let Some(ip) = alloc.first_free(in_use) else {
                tracing::debug!(claim = %name, pool = %pool_id.2, "failed to find free address: no address available");
                return;
            };
            Some(ip)
        };
        match (existing, ip) {
            (None, Some(ip)) => {
                if !self.create_address(&claim, &pool, &pool_id, ns, name, ip) {
                    return;
                }
                self.dirty_pools.insert(pool_id);
            }
            (Some(cur), ip) => {
                if !self.patch_address(&cur, &claim, &pool, ip) {
                    return;
                }
            }
            (None, None) => return,
        }
        if s(&claim, "/status/addressRef/name") != Some(name.as_str()) {
            self.json_patch(
                &claims,
                ns,
                name,
                json!({"status": {"addressRef": {"name": name}}}),
                true,
            );
        }
    }
}

fn finalizers_of(meta: &Value) -> Option<Value> {
    meta.get("finalizers").cloned()
}
