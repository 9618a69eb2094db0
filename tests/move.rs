//! `clusterctl move` between two management clusters (two testbeds, an operator on each), emulated the way
//! clusterctl does it: source Clusters paused; objects created in the target without status, with new uids and
//! owner references rewritten to the new owners; global pools created in the target when missing; source objects
//! annotated `delete-for-move`, their finalizers removed, then deleted; target Clusters unpaused. No VIP may
//! change, no claim may be deleted or created, and a new Cluster in the target gets a fresh address.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use common::{host, Env};
use k8s_openapi::api::events::v1::Event;
use kube::{
    api::{
        Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
    },
    Client,
};
use serde_json::{json, Value};
use testbed::{Profile, TestbedOptions};

const CLUSTERS: usize = 50;
const OPERATOR_AGENT: &str = "capi-vip-allocator/";

/// The object as clusterctl creates it in the target: no status, no uid/resourceVersion/managedFields/creation
/// timestamp, owner references pointing at the new owners' uids.
fn for_target(obj: &DynamicObject, uids: &HashMap<String, String>) -> DynamicObject {
    let mut o = obj.clone();
    o.metadata.uid = None;
    o.metadata.resource_version = None;
    o.metadata.managed_fields = None;
    o.metadata.creation_timestamp = None;
    o.metadata.generation = None;
    o.metadata.finalizers = None;
    if let Some(refs) = o.metadata.owner_references.as_mut() {
        for r in refs.iter_mut() {
            if let Some(new) = uids.get(&r.uid) {
                r.uid = new.clone();
            }
        }
    }
    if let Some(map) = o.data.as_object_mut() {
        map.remove("status");
    }
    o
}

async fn list(client: &Client, ar: &ApiResource, ns: Option<&str>) -> Vec<DynamicObject> {
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
        None => Api::all_with(client.clone(), ar),
    };
    api.list(&ListParams::default()).await.expect("list").items
}

/// Creates `objs` in the target and records old uid → new uid.
async fn create_all(
    client: &Client,
    ar: &ApiResource,
    objs: &[DynamicObject],
    uids: &mut HashMap<String, String>,
) {
    for o in objs {
        let ns = o.metadata.namespace.as_deref();
        let api: Api<DynamicObject> = match ns {
            Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
            None => Api::all_with(client.clone(), ar),
        };
        let created = api
            .create(&PostParams::default(), &for_target(o, uids))
            .await
            .expect("create in target");
        if let (Some(old), Some(new)) = (&o.metadata.uid, created.metadata.uid) {
            uids.insert(old.clone(), new);
        }
    }
}

/// Annotates `delete-for-move`, strips finalizers and deletes, as clusterctl does with the source objects.
async fn delete_for_move(client: &Client, ar: &ApiResource, ns: &str, objs: &[DynamicObject]) {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, ar);
    for o in objs {
        let name = o.metadata.name.as_deref().unwrap_or_default();
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {
                "annotations": {"clusterctl.cluster.x-k8s.io/delete-for-move": ""},
                "finalizers": null}})),
        )
        .await
        .expect("annotate for move");
        let _ = api.delete(name, &DeleteParams::background()).await;
    }
}

async fn set_paused(env: &Env, ns: &str, names: &[String], paused: bool) {
    for n in names {
        env.patch_cluster(ns, n, json!({"spec": {"paused": paused}}))
            .await;
    }
}

fn operator_writes(env: &Env, since: u64, resource: &str, verbs: &[&str]) -> Vec<String> {
    env.tb
        .stats_since(since)
        .writes
        .iter()
        .filter(|w| {
            w.user_agent.starts_with(OPERATOR_AGENT)
                && w.resource == resource
                && verbs.contains(&w.verb.as_str())
        })
        .map(|w| format!("{} {}/{}", w.verb, w.namespace, w.name))
        .collect()
}

#[tokio::test]
async fn move_keeps_every_vip_and_writes_no_claim() {
    let source = Env::start(Profile::Capi112).await;
    // The in-cluster provider works through its queue one claim at a time: give the target's simulated provider
    // a reaction time, so the operator sees the moved claims without status (as it would on a real cluster).
    let target = Env::start_opts(
        Profile::Capi112,
        TestbedOptions {
            ipam_delay: std::time::Duration::from_millis(40),
            ..TestbedOptions::profile(Profile::Capi112)
        },
        &[],
    )
    .await;
    let ns = source.namespace("mv").await;
    source.class(&ns, "mv", &["clusterVip", "ingressVip"]).await;
    source
        .pool(
            "mv-cp",
            &["10.220.0.10-10.220.0.250"],
            24,
            "mv",
            "control-plane",
        )
        .await;
    source
        .pool("mv-ing", &["10.220.1.10-10.220.1.250"], 24, "mv", "ingress")
        .await;
    let names: Vec<String> = (0..CLUSTERS).map(|i| format!("c{i:02}")).collect();
    for n in &names {
        source.cluster(&ns, n, "mv").await;
    }
    let mut before = BTreeMap::new();
    for n in &names {
        let vip = source.wait_cp_vip(&ns, n).await;
        let c = source
            .wait_cluster(&ns, n, "ingress VIP", |c| {
                common::annotation(c, "vip.capi.gorizond.io/ingress-vip").is_some()
            })
            .await;
        before.insert(
            n.clone(),
            (
                vip,
                common::annotation(&c, "vip.capi.gorizond.io/ingress-vip"),
            ),
        );
    }

    // clusterctl move: pause, copy (owners first), delete the source side, unpause.
    let source_seq = source.tb.stats().writes.last().map_or(0, |w| w.seq);
    let target_seq = target.tb.stats().writes.last().map_or(0, |w| w.seq);
    set_paused(&source, &ns, &names, true).await;
    let shapes = &source.shapes;
    let classes = list(&source.client, &shapes.cluster_class, Some(&ns)).await;
    let pools = list(&source.client, &shapes.global_pool, None).await;
    let clusters = list(&source.client, &shapes.cluster, Some(&ns)).await;
    let claims = list(&source.client, &shapes.claim, Some(&ns)).await;
    let addresses = list(&source.client, &shapes.address, Some(&ns)).await;
    assert_eq!(claims.len(), 2 * CLUSTERS);
    let target_ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(target.client.clone());
    target_ns
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )
            .unwrap(),
        )
        .await
        .expect("target namespace");
    let mut uids = HashMap::new();
    create_all(&target.client, &shapes.global_pool, &pools, &mut uids).await;
    create_all(&target.client, &shapes.cluster_class, &classes, &mut uids).await;
    create_all(&target.client, &shapes.cluster, &clusters, &mut uids).await;
    create_all(&target.client, &shapes.claim, &claims, &mut uids).await;
    create_all(&target.client, &shapes.address, &addresses, &mut uids).await;
    delete_for_move(&source.client, &shapes.address, &ns, &addresses).await;
    delete_for_move(&source.client, &shapes.claim, &ns, &claims).await;
    delete_for_move(&source.client, &shapes.cluster, &ns, &clusters).await;
    set_paused(&target, &ns, &names, false).await;

    // Every claim is bound again in the target, to the same address, and every VIP is unchanged.
    let target_claims: Api<DynamicObject> = target.claims(&ns);
    for n in &names {
        for claim in [format!("vip-cp-{n}"), format!("vip-ingress-{n}")] {
            let waited = tokio::time::timeout(
                common::WAIT,
                kube::runtime::wait::await_condition(
                    target_claims.clone(),
                    &claim,
                    |o: Option<&DynamicObject>| {
                        o.is_some_and(|c| c.data.pointer("/status/addressRef/name").is_some())
                    },
                ),
            )
            .await;
            assert!(
                matches!(waited, Ok(Ok(_))),
                "{claim} bound again\n{}",
                target.op.logs()
            );
        }
    }
    // Give both operators time to act on everything they saw.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    for n in &names {
        let c = target.clusters(&ns).get(n).await.unwrap();
        let ingress = common::annotation(&c, "vip.capi.gorizond.io/ingress-vip");
        assert_eq!(
            (host(&c), ingress),
            before[n].clone(),
            "{n}: VIPs unchanged"
        );
    }
    let target_addresses = list(&target.client, &shapes.address, Some(&ns)).await;
    let by_claim: BTreeMap<String, String> = target_addresses
        .iter()
        .map(|a| {
            (
                a.metadata.name.clone().unwrap_or_default(),
                a.data
                    .pointer("/spec/address")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    for n in &names {
        assert_eq!(
            by_claim.get(&format!("vip-cp-{n}")),
            Some(&before[n].0),
            "{n}"
        );
    }
    assert_eq!(
        operator_writes(
            &target,
            target_seq,
            "ipaddressclaims",
            &["create", "delete", "patch"]
        ),
        Vec::<String>::new(),
        "the target operator neither creates, deletes nor touches a moved claim"
    );
    assert_eq!(
        operator_writes(&target, target_seq, "clusters", &["patch", "update"]),
        Vec::<String>::new(),
        "moved Clusters carry their VIPs and provenance: nothing to write"
    );
    assert_eq!(
        operator_writes(&source, source_seq, "ipaddressclaims", &["create"]),
        Vec::<String>::new(),
        "the source operator creates nothing for Clusters being moved away"
    );
    let events: Api<Event> = Api::namespaced(target.client.clone(), &ns);
    let warnings: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .map(|e| format!("{:?}: {:?}", e.reason, e.note))
        .collect();
    assert!(
        warnings.is_empty(),
        "no Warning in the target: {warnings:?}"
    );

    // A new Cluster in the target gets an address no moved Cluster holds.
    target.cluster(&ns, "fresh", "mv").await;
    let fresh = target.wait_cp_vip(&ns, "fresh").await;
    let moved: BTreeSet<&String> = before.values().map(|(cp, _)| cp).collect();
    assert!(
        !moved.contains(&fresh),
        "fresh VIP {fresh} is not a moved one"
    );
    source.tb.shutdown().await;
    target.tb.shutdown().await;
}
