//! The watches: one per kind, each feeding a reflector cache, and the mapping of every change to the Clusters
//! it concerns.

use std::{
    collections::{HashMap, HashSet},
    sync::{atomic::Ordering, Arc, Mutex},
};

use futures::{stream, Stream, StreamExt, TryStreamExt};
use kube::{
    api::{Api, ApiResource, DynamicObject},
    runtime::{
        controller::{trigger_self, trigger_with, ReconcileRequest},
        reflector::{reflector, store::Writer, ObjectRef},
        watcher::{self, watcher},
        WatchStreamExt,
    },
    Client, ResourceExt,
};
use serde_json::Value;

use super::{hosts, stores, views::ViewCache, Context, Health};
use crate::{
    api::{ApiShapes, PoolView},
    names::{FINALIZER_ADDRESS_PROTECTION, LABEL_CAPI_CLUSTER_NAME},
};

fn cluster_ref(ar: &ApiResource, ns: &str, name: &str) -> ObjectRef<DynamicObject> {
    ObjectRef::new_with(name, ar.clone()).within(ns)
}

pub(super) type Trigger =
    futures::stream::BoxStream<'static, Result<ReconcileRequest<DynamicObject>, watcher::Error>>;

/// Marks the controller synced once every watch delivered its initial list, and reports later relists.
///
/// (Awaiting `Store::wait_until_ready` from a second task is not reliable: the applier awaits the Cluster store
/// too, and its single-waker readiness future wakes only the last poller.)
pub(super) struct SyncTracker {
    pub(super) seen: std::sync::atomic::AtomicU64,
    /// How many watches there are: [`WATCHES`] plus one per `--pool-kinds` kind.
    pub(super) watches: u8,
    pub(super) health: Arc<Health>,
    /// Signalled when every cache has synced, and whenever a watch relists after a gap: every Cluster is looked at
    /// again (objects deleted meanwhile produced no event; Clusters listed into the store's buffer had their
    /// requests dropped as "not found", or while no reconciler term was running).
    pub(super) relisted: futures::channel::mpsc::UnboundedSender<()>,
    /// Asked for a trim after deletions and relists.
    pub(super) trimmer: super::trim::Trimmer,
}

/// The watches of the core kinds; the `--pool-kinds` watches follow (at most `api::MAX_POOL_KINDS`, so every
/// watch has a bit of the sync mask).
pub(super) const WATCHES: u8 = 6;
const CLUSTER_BIT: u8 = 0;
const _: () = assert!(WATCHES as usize + crate::api::MAX_POOL_KINDS <= 64);

impl SyncTracker {
    fn mark(&self, bit: u8) {
        let all = u64::MAX >> (64 - u32::from(self.watches));
        let before = self.seen.fetch_or(1 << bit, Ordering::SeqCst);
        self.health
            .watch(usize::from(bit), super::health::WatchSignal::ListDone);
        let relist = before & (1 << bit) != 0;
        let all_synced_now = before != all && (before | (1 << bit)) == all;
        if all_synced_now {
            self.health.set(true, true);
            tracing::info!("caches synced; controller running");
        }
        if relist {
            tracing::debug!(watch = bit, "watch relisted; re-checking every Cluster");
        }
        if relist || all_synced_now {
            let _ = self.relisted.unbounded_send(());
        }
    }

    /// Feeds what a watch reports to the probes.
    fn observe(&self, bit: u8, ev: &Result<watcher::Event<DynamicObject>, watcher::Error>) {
        use super::health::WatchSignal;
        let signal = match ev {
            Ok(watcher::Event::Init) => WatchSignal::ListStarted,
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => WatchSignal::Event,
            Ok(watcher::Event::InitApply(_) | watcher::Event::InitDone) => return,
            Err(e) => {
                tracing::debug!(watch = bit, error = %e, "watch failed");
                WatchSignal::Error
            }
        };
        self.health.watch(usize::from(bit), signal);
    }
}

type WatchStream =
    futures::stream::BoxStream<'static, Result<watcher::Event<DynamicObject>, watcher::Error>>;

/// The watch of one kind, its objects slimmed, and the sync tracker told when each list completes (after `cache`
/// applied it). Deletions and relists, which leave freed memory behind, ask for a trim.
fn watch_into(
    client: &Client,
    ar: &ApiResource,
    cache: impl FnOnce(WatchStream) -> WatchStream,
    tracker: &Arc<SyncTracker>,
    bit: u8,
) -> impl Stream<Item = Result<watcher::Event<DynamicObject>, watcher::Error>> + Send + 'static {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), ar);
    let tracker = tracker.clone();
    let trimmer = tracker.trimmer.clone();
    let raw = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(move |obj| {
            if bit == CLUSTER_BIT {
                slim_cluster(obj);
            } else if bit >= WATCHES {
                slim_extra_pool(obj);
            } else {
                slim(obj);
            }
        })
        .boxed();
    let observer = tracker.clone();
    cache(raw)
        .inspect(move |ev| observer.observe(bit, ev))
        .inspect_ok(move |ev| match ev {
            watcher::Event::InitDone => {
                tracker.mark(bit);
                trimmer.request();
            }
            watcher::Event::Delete(_) => trimmer.request(),
            _ => {}
        })
}

/// A watch feeding a kube reflector store (the kinds whose objects the controller or the rules read whole).
fn watch(
    client: &Client,
    ar: &ApiResource,
    writer: Writer<DynamicObject>,
    tracker: &Arc<SyncTracker>,
    bit: u8,
) -> impl Stream<Item = Result<watcher::Event<DynamicObject>, watcher::Error>> + Send + 'static {
    watch_into(
        client,
        ar,
        move |raw| reflector(writer, raw).boxed(),
        tracker,
        bit,
    )
}

/// A watch feeding a cache of parsed views.
fn watch_views<V: Send + Sync + 'static>(
    client: &Client,
    ar: &ApiResource,
    views: ViewCache<V>,
    tracker: &Arc<SyncTracker>,
    bit: u8,
) -> impl Stream<Item = Result<watcher::Event<DynamicObject>, watcher::Error>> + Send + 'static {
    watch_into(
        client,
        ar,
        move |raw| raw.inspect_ok(move |ev| views.apply(ev)).boxed(),
        tracker,
        bit,
    )
}

/// Drops what the rules never read before an object enters a cache: `managedFields` and kubectl's
/// last-applied annotation (together often larger than the rest of the object).
fn slim(obj: &mut DynamicObject) {
    obj.metadata.managed_fields = None;
    if let Some(a) = obj.metadata.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

/// A Cluster keeps only what `ClusterView` reads: identity, labels, annotations, deletion, and of its spec
/// `paused`, `controlPlaneEndpoint` and the topology's class reference and variables. Real Clusters carry large
/// topologies (worker classes, overrides) and a status the operator never looks at; there is one per Cluster in
/// the cache, so this is most of the operator's memory at scale.
fn slim_cluster(obj: &mut DynamicObject) {
    slim(obj);
    let meta = &mut obj.metadata;
    meta.owner_references = None;
    meta.finalizers = None;
    meta.creation_timestamp = None;
    meta.generation = None;
    const SPEC: [&str; 3] = ["paused", "controlPlaneEndpoint", "topology"];
    const TOPOLOGY: [&str; 4] = ["class", "classNamespace", "classRef", "variables"];
    let Some(top) = obj.data.as_object_mut() else {
        return;
    };
    top.retain(|k, _| k == "spec");
    if let Some(spec) = top.get_mut("spec").and_then(Value::as_object_mut) {
        spec.retain(|k, _| SPEC.contains(&k.as_str()));
        if let Some(topology) = spec.get_mut("topology").and_then(Value::as_object_mut) {
            topology.retain(|k, _| TOPOLOGY.contains(&k.as_str()));
        }
    }
}

/// A `--pool-kinds` pool keeps its metadata (name, namespace, labels, annotations, deletion) and
/// `status.ipAddresses` (the in-cluster counters, when a provider reports them): its spec (address ranges, and for
/// metal3 pre-allocations) and the rest of its status (metal3: one entry per allocated address) are never read.
/// kube-rs cannot watch "metadata and status" only (a metadata watch drops the status), so the whole object is
/// received and trimmed here before it enters the cache.
fn slim_extra_pool(obj: &mut DynamicObject) {
    slim(obj);
    obj.metadata.managed_fields = None;
    obj.metadata.owner_references = None;
    obj.metadata.finalizers = None;
    let Some(top) = obj.data.as_object_mut() else {
        return;
    };
    top.retain(|k, _| k == "status");
    if let Some(status) = top.get_mut("status").and_then(Value::as_object_mut) {
        status.retain(|k, _| k == "ipAddresses");
    }
}

fn cluster_key(o: &DynamicObject) -> hosts::ClusterKey {
    (
        o.metadata.namespace.clone().unwrap_or_default(),
        o.metadata.name.clone().unwrap_or_default(),
    )
}

fn endpoint_host(o: &DynamicObject) -> Option<&str> {
    o.data
        .pointer("/spec/controlPlaneEndpoint/host")
        .and_then(Value::as_str)
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Every cached Cluster, each time a secondary watch relists.
pub(super) fn on_relist(
    relisted: futures::channel::mpsc::UnboundedReceiver<()>,
    ctx: &Arc<Context>,
) -> Trigger {
    let st = ctx.stores.clone();
    let ar = ctx.shapes.cluster.clone();
    let ctx = ctx.clone();
    relisted
        .flat_map(move |()| {
            // Objects deleted during a gap produced no event: their Clusters' IPAddresses are looked at again too.
            super::orphans::offer_cached(&ctx, None);
            let refs: Vec<Result<ReconcileRequest<DynamicObject>, watcher::Error>> = st
                .clusters
                .state()
                .iter()
                .map(|c| {
                    Ok(ReconcileRequest::from(ObjectRef::from_obj_with(
                        c.as_ref(),
                        ar.clone(),
                    )))
                })
                .collect();
            stream::iter(refs)
        })
        .boxed()
}

pub(super) fn triggers(
    client: &Client,
    shapes: &ApiShapes,
    writers: stores::Writers,
    ctx: &Arc<Context>,
    tracker: &Arc<SyncTracker>,
) -> Vec<Trigger> {
    let cluster_ar = shapes.cluster.clone();
    let cluster_ar_for_peers = shapes.cluster.clone();

    // Clusters: themselves; prune the per-Cluster memory on delete and after a relist; keep the host index, and
    // look again at the Clusters whose host a change joins or leaves (their DuplicateVIP state changes with it).
    let mem_ctx = ctx.clone();
    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let seen_keys: Arc<Mutex<HashSet<hosts::ClusterKey>>> = Arc::default();
    let hosts = ctx.stores.hosts.clone();
    let (peers_tx, peers_rx) = futures::channel::mpsc::unbounded::<hosts::ClusterKey>();
    let tell = move |keys: Vec<hosts::ClusterKey>| {
        for k in keys {
            let _ = peers_tx.unbounded_send(k);
        }
    };
    let clusters = watch(
        client,
        &shapes.cluster,
        writers.clusters,
        tracker,
        CLUSTER_BIT,
    )
    .inspect_ok(move |ev| match ev {
        watcher::Event::Delete(o) => {
            if let Some(uid) = &o.metadata.uid {
                mem_ctx.memory.forget(uid);
            }
            let key = cluster_key(o);
            // Its IPAddresses may already be terminating (claims deleted first, as in a namespace deletion).
            super::orphans::offer_cached(&mem_ctx, Some((&key.0, &key.1)));
            tell(hosts.remove(&key));
        }
        watcher::Event::Init => {
            if let Ok(mut s) = seen.lock() {
                s.clear();
            }
            if let Ok(mut s) = seen_keys.lock() {
                s.clear();
            }
        }
        watcher::Event::InitApply(o) => {
            if let (Ok(mut s), Some(uid)) = (seen.lock(), &o.metadata.uid) {
                s.insert(uid.clone());
            }
            if let Ok(mut s) = seen_keys.lock() {
                s.insert(cluster_key(o));
            }
            tell(hosts.set(&cluster_key(o), endpoint_host(o)));
        }
        watcher::Event::InitDone => {
            if let Ok(s) = seen.lock() {
                mem_ctx.memory.retain(&s);
            }
            if let Ok(s) = seen_keys.lock() {
                tell(hosts.retain(&s));
            }
        }
        watcher::Event::Apply(o) => tell(hosts.set(&cluster_key(o), endpoint_host(o))),
    });
    let clusters = trigger_self(clusters.applied_objects(), cluster_ar.clone()).boxed();

    // Claims → their Cluster. Only our names (`vip-cp-<cluster>`, `vip-ingress-<cluster>`) matter: other
    // consumers' claims never trigger a reconcile.
    let ar = cluster_ar.clone();
    let claims = watch_views(client, &shapes.claim, writers.claims, tracker, 1).touched_objects();
    let claims = trigger_with(claims, move |o: DynamicObject| {
        let ns = o.metadata.namespace.clone().unwrap_or_default();
        o.metadata
            .name
            .as_deref()
            .and_then(stores::cluster_of_claim_name)
            .map(|c| ReconcileRequest::from(cluster_ref(&ar, &ns, &c)))
    })
    .boxed();

    // IPAddresses → the Cluster of the claim they answer (`spec.claimRef.name`, else the same name).
    let ar = cluster_ar.clone();
    let addresses =
        watch_views(client, &shapes.address, writers.addresses, tracker, 2).touched_objects();
    let orphans = ctx.orphans.clone();
    let addresses = trigger_with(addresses, move |o: DynamicObject| {
        let ns = o.metadata.namespace.clone().unwrap_or_default();
        if o.finalizers()
            .iter()
            .any(|f| f == FINALIZER_ADDRESS_PROTECTION)
        {
            orphans.offer(&ns, o.metadata.name.as_deref().unwrap_or_default());
        }
        // The Cluster label first: our holder `<claim>-held` names itself as its claim.
        o.labels()
            .get(LABEL_CAPI_CLUSTER_NAME)
            .filter(|c| !c.is_empty())
            .cloned()
            .or_else(|| {
                stores::claim_of_address(&o)
                    .as_deref()
                    .and_then(stores::cluster_of_claim_name)
            })
            .map(|c| ReconcileRequest::from(cluster_ref(&ar, &ns, &c)))
    })
    .boxed();

    // ClusterClasses → Clusters using them.
    let ar = cluster_ar.clone();
    let st = ctx.stores.clone();
    let classes =
        watch(client, &shapes.cluster_class, writers.classes, tracker, 3).touched_objects();
    let classes = trigger_with(classes, move |o: DynamicObject| {
        let name = o.metadata.name.clone().unwrap_or_default();
        st.clusters_of_class(&name, o.metadata.namespace.as_deref())
            .into_iter()
            .map(|(ns, n)| ReconcileRequest::from(cluster_ref(&ar, &ns, &n)))
            .collect::<Vec<_>>()
    })
    .boxed();

    // Pools → Clusters of the classes they list (a namespaced pool: in its namespace only) and Clusters with a
    // pending claim on them, but only when something that can change a decision changed (labels, priority,
    // exhaustion, deletion) — not on every counter move.
    let pools = pool_trigger(
        client,
        &shapes.global_pool,
        writers.pools,
        tracker,
        4,
        ctx,
        &cluster_ar,
    );
    let ns_pools = pool_trigger(
        client,
        &shapes.pool,
        writers.ns_pools,
        tracker,
        5,
        ctx,
        &cluster_ar,
    );
    let extra_pools: Vec<Trigger> = shapes
        .extra_pools
        .iter()
        .zip(writers.extra_pools)
        .zip(WATCHES..)
        .map(|((kind, writer), bit)| {
            pool_trigger(
                client,
                &kind.resource,
                writer,
                tracker,
                bit,
                ctx,
                &cluster_ar,
            )
        })
        .collect();

    let ar = cluster_ar_for_peers;
    let peers = peers_rx
        .map(move |(ns, name)| Ok(ReconcileRequest::from(cluster_ref(&ar, &ns, &name))))
        .boxed();

    let mut all = vec![clusters, claims, addresses, classes, pools, ns_pools, peers];
    all.extend(extra_pools);
    all
}

/// The watch of one pool kind, as reconcile requests (see `triggers`).
fn pool_trigger(
    client: &Client,
    pool_ar: &ApiResource,
    writer: Writer<DynamicObject>,
    tracker: &Arc<SyncTracker>,
    bit: u8,
    ctx: &Arc<Context>,
    cluster_ar: &ApiResource,
) -> Trigger {
    let ar = cluster_ar.clone();
    let st = ctx.stores.clone();
    let (group, kind) = (pool_ar.group.clone(), pool_ar.kind.clone());
    type Key = (Option<String>, String);
    let signatures: Arc<Mutex<HashMap<Key, stores::PoolSignature>>> = Arc::default();
    let pools = watch(client, pool_ar, writer, tracker, bit)
        .map_ok(|ev| {
            let deleted = matches!(ev, watcher::Event::Delete(_));
            let objs: Vec<(DynamicObject, bool)> = match ev {
                watcher::Event::Apply(o)
                | watcher::Event::InitApply(o)
                | watcher::Event::Delete(o) => vec![(o, deleted)],
                _ => Vec::new(),
            };
            stream::iter(objs.into_iter().map(Ok))
        })
        .try_flatten();
    let pool_check = ctx.pool_check.clone();
    trigger_with(pools, move |(o, deleted): (DynamicObject, bool)| {
        // Any change (addresses included) may make or end an overlap.
        pool_check.poke();
        let Ok(pool) = PoolView::parse(&group, &kind, &o) else {
            return Vec::new();
        };
        let key = (pool.namespace.clone(), pool.name.clone());
        let changed = {
            let Ok(mut sigs) = signatures.lock() else {
                return Vec::new();
            };
            if deleted {
                sigs.remove(&key);
                true
            } else {
                let sig = stores::PoolSignature::of(&pool);
                sigs.insert(key, sig.clone()).as_ref() != Some(&sig)
            }
        };
        if !changed {
            return Vec::new();
        }
        let mut targets: Vec<(String, String)> =
            crate::plan::labels::listed_classes(&pool.labels, &pool.annotations)
                .into_iter()
                .flat_map(|class| st.clusters_of_class(class, None))
                .filter(|(ns, _)| pool.namespace.as_ref().is_none_or(|p| p == ns))
                .collect();
        targets.extend(st.clusters_waiting_on_pool(&pool));
        targets.sort();
        targets.dedup();
        targets
            .into_iter()
            .map(|(ns, n)| ReconcileRequest::from(cluster_ref(&ar, &ns, &n)))
            .collect()
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_after_every_initial_list_and_every_sync_or_relist_rechecks_all_clusters() {
        let (tx, mut rx) = futures::channel::mpsc::unbounded();
        let health = Arc::new(Health::default());
        let t = SyncTracker {
            seen: Default::default(),
            watches: WATCHES,
            health: health.clone(),
            relisted: tx,
            trimmer: Default::default(),
        };
        for bit in 0..WATCHES - 1 {
            t.mark(bit);
            assert!(
                !health.ready(),
                "not ready before watch {bit}'s siblings listed"
            );
            assert!(rx.try_recv().is_err(), "initial lists are not relists");
        }
        t.mark(WATCHES - 1);
        assert!(health.ready());
        assert_eq!(
            rx.try_recv().ok(),
            Some(()),
            "the first full sync re-checks every Cluster (a term may have started before it)"
        );
        t.mark(CLUSTER_BIT);
        assert_eq!(
            rx.try_recv().ok(),
            Some(()),
            "a Cluster relist re-checks every Cluster: requests for Clusters listed into the buffer were dropped"
        );
        t.mark(2);
        assert_eq!(
            rx.try_recv().ok(),
            Some(()),
            "a claim/address/pool/class relist re-checks all"
        );
    }

    #[test]
    fn slim_drops_bookkeeping_but_keeps_what_the_rules_read() {
        let mut obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": "c", "namespace": "ns", "uid": "u1", "resourceVersion": "7",
                "labels": {"team": "a"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "x", "uid": "ux"}],
                "finalizers": ["cluster.cluster.x-k8s.io"],
                "deletionTimestamp": "2026-01-01T00:00:00Z",
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
                "annotations": {LAST_APPLIED: "{}", "cluster.x-k8s.io/paused": "true"}},
            "spec": {
                "paused": false,
                "controlPlaneEndpoint": {"host": "10.0.0.1", "port": 6443},
                "clusterNetwork": {"pods": {"cidrBlocks": ["192.168.0.0/16"]}},
                "infrastructureRef": {"kind": "TestInfraCluster", "name": "c"},
                "topology": {"classRef": {"name": "gold"}, "version": "v1.33.0",
                    "variables": [{"name": "clusterVip", "value": "10.0.0.1"}],
                    "workers": {"machineDeployments": [{"class": "w", "name": "md-0"}]}}},
            "status": {"phase": "Provisioned"}
        }))
        .unwrap();
        let mut pool = obj.clone();
        let mut before = crate::api::ClusterView::parse(&obj).unwrap();
        if let Some(a) = before.annotations.as_mut() {
            a.remove(LAST_APPLIED);
        }
        slim_cluster(&mut obj);
        assert_eq!(
            crate::api::ClusterView::parse(&obj).unwrap(),
            before,
            "the view reads the same from the slimmed Cluster"
        );
        assert!(obj.metadata.managed_fields.is_none());
        assert!(obj.metadata.owner_references.is_none());
        assert!(obj.metadata.finalizers.is_none());
        let ann = obj.metadata.annotations.as_ref().unwrap();
        assert!(!ann.contains_key(LAST_APPLIED));
        assert!(obj.data.get("status").is_none());
        assert!(obj.data.pointer("/spec/clusterNetwork").is_none());
        assert!(obj.data.pointer("/spec/topology/workers").is_none());
        assert!(obj.data.pointer("/spec/topology/version").is_none());
        // Other kinds keep their spec and status (pools' counters, class variables).
        slim(&mut pool);
        assert!(pool.metadata.managed_fields.is_none());
        assert!(pool.data.pointer("/status/phase").is_some());
        assert!(pool.data.pointer("/spec/clusterNetwork").is_some());
        assert!(pool.metadata.owner_references.is_some());
    }

    #[test]
    fn extra_kind_pools_keep_metadata_and_the_in_cluster_counters_only() {
        let mut obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "ipam.metal3.io/v1alpha1", "kind": "IPPool",
            "metadata": {"name": "m", "namespace": "ns", "uid": "u", "labels": {"a": "b"},
                "annotations": {"vip.capi.gorizond.io/priority": "3", LAST_APPLIED: "{}"},
                "managedFields": [{"manager": "kubectl"}], "finalizers": ["ipam.metal3.io"]},
            "spec": {"pools": [{"start": "10.0.0.1", "end": "10.0.0.9"}], "prefix": 24},
            "status": {"indexes": {"c1": "10.0.0.1"}, "ipAddresses": {"free": 3}}
        }))
        .unwrap();
        let before = PoolView::parse("ipam.metal3.io", "IPPool", &obj).unwrap();
        slim_extra_pool(&mut obj);
        let after = PoolView::parse("ipam.metal3.io", "IPPool", &obj).unwrap();
        assert_eq!(after.labels, before.labels);
        assert_eq!(after.free, Some(3));
        assert_eq!(
            after.annotations.len(),
            1,
            "last-applied dropped, ours kept"
        );
        assert!(obj.data.get("spec").is_none());
        assert!(obj.data.pointer("/status/indexes").is_none());
        assert!(obj.metadata.finalizers.is_none() && obj.metadata.managed_fields.is_none());
    }
}
