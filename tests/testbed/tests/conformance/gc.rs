//! Issue 2, point 5: garbage collection (background, foreground with blockOwnerDeletion, orphan),
//! namespaced dependents of cluster-scoped owners, namespace deletion.

use kube::api::{DeleteParams, PropagationPolicy};
use serde_json::{json, Value};
use testbed::Profile;

use crate::common::*;

const P: Profile = Profile::Capi112;

fn owner_ref(o: &kube::api::DynamicObject, kind: &str, api_version: &str, block: bool) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "name": o.metadata.name, "uid": o.metadata.uid,
        "controller": true, "blockOwnerDeletion": block})
}

fn claim_json(name: &str, cluster: &str, owner: Option<Value>, pool: &str) -> Value {
    let mut v = json!({"apiVersion": "ipam.cluster.x-k8s.io/v1beta2", "kind": "IPAddressClaim",
        "metadata": {"name": name, "namespace": NS, "labels": {"cluster.x-k8s.io/cluster-name": cluster}},
        "spec": {"clusterName": cluster, "poolRef": {"apiGroup": "ipam.cluster.x-k8s.io", "kind": "GlobalInClusterIPPool", "name": pool}}});
    if let Some(o) = owner {
        v["metadata"]["ownerReferences"] = json!([o]);
    }
    v
}

fn pool_json(name: &str, addresses: Value, prefix: u8) -> Value {
    json!({"apiVersion": "ipam.cluster.x-k8s.io/v1alpha2", "kind": "GlobalInClusterIPPool",
        "metadata": {"name": name}, "spec": {"addresses": addresses, "prefix": prefix}})
}

#[tokio::test]
async fn owned_claim_is_collected_after_its_cluster_is_deleted_and_address_released() {
    let tb = start(P).await;
    let pools = api(&tb, &global_pools(), None);
    create(
        &pools,
        pool_json("gc-pool", json!(["10.1.0.10-10.1.0.20"]), 24),
    )
    .await;
    let cl = api(&tb, &clusters(P), Some(NS));
    let cluster = create(&cl, cluster_json(P, "owner", json!([]))).await;
    let claims = api(&tb, &claims(P), Some(NS));
    create(
        &claims,
        claim_json(
            "owner-cp",
            "owner",
            Some(owner_ref(
                &cluster,
                "Cluster",
                "cluster.x-k8s.io/v1beta2",
                true,
            )),
            "gc-pool",
        ),
    )
    .await;
    let addrs = api(&tb, &addresses(P), Some(NS));
    eventually("address allocated", || async {
        addrs.get_opt("owner-cp").await.unwrap()
    })
    .await;
    cl.delete("owner", &DeleteParams::default()).await.unwrap();
    eventually("claim collected", || async {
        claims
            .get_opt("owner-cp")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    eventually("address released", || async {
        addrs
            .get_opt("owner-cp")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let stats = tb.stats();
    assert!(stats
        .writes_by("testbed-gc")
        .any(|w| w.verb == "delete" && w.resource == "ipaddressclaims" && w.name == "owner-cp"));
    tb.shutdown().await;
}

#[tokio::test]
async fn foreground_deletion_waits_for_blocking_dependents() {
    let tb = start_without_ipam(P).await;
    let cl = api(&tb, &clusters(P), Some(NS));
    let owner = create(&cl, cluster_json(P, "fg", json!([]))).await;
    let claims = api(&tb, &claims(P), Some(NS));
    let mut dep = claim_json(
        "fg-dep",
        "fg",
        Some(owner_ref(
            &owner,
            "Cluster",
            "cluster.x-k8s.io/v1beta2",
            true,
        )),
        "p",
    );
    dep["metadata"]["finalizers"] = json!(["example.io/slow"]);
    create(&claims, dep).await;
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..Default::default()
    };
    let pending = cl
        .delete("fg", &dp)
        .await
        .unwrap()
        .left()
        .expect("owner kept while dependents exist");
    assert!(pending
        .metadata
        .finalizers
        .unwrap()
        .contains(&"foregroundDeletion".to_string()));
    let dependent = eventually("dependent deleting", || async {
        claims
            .get("fg-dep")
            .await
            .ok()
            .filter(|c| c.metadata.deletion_timestamp.is_some())
    })
    .await;
    assert!(dependent.metadata.deletion_timestamp.is_some());
    assert!(
        cl.get("fg").await.is_ok(),
        "owner waits for the blocking dependent"
    );
    claims
        .patch(
            "fg-dep",
            &Default::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    eventually("owner gone", || async {
        cl.get_opt("fg").await.unwrap().is_none().then_some(())
    })
    .await;
    tb.shutdown().await;
}

#[tokio::test]
async fn orphan_deletion_strips_owner_references() {
    let tb = start_without_ipam(P).await;
    let cl = api(&tb, &clusters(P), Some(NS));
    let owner = create(&cl, cluster_json(P, "or", json!([]))).await;
    let claims = api(&tb, &claims(P), Some(NS));
    create(
        &claims,
        claim_json(
            "or-dep",
            "or",
            Some(owner_ref(
                &owner,
                "Cluster",
                "cluster.x-k8s.io/v1beta2",
                false,
            )),
            "p",
        ),
    )
    .await;
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..Default::default()
    };
    cl.delete("or", &dp).await.unwrap();
    eventually("owner gone", || async {
        cl.get_opt("or").await.unwrap().is_none().then_some(())
    })
    .await;
    let dep = claims.get("or-dep").await.expect("dependent kept");
    assert!(dep.metadata.owner_references.unwrap_or_default().is_empty());
    tb.shutdown().await;
}

#[tokio::test]
async fn namespaced_dependent_of_cluster_scoped_owner_is_collected() {
    let tb = start_without_ipam(P).await;
    let pools = api(&tb, &global_pools(), None);
    let pool = create(&pools, pool_json("owner-pool", json!(["10.9.0.0/24"]), 24)).await;
    let addrs = api(&tb, &addresses(P), Some(NS));
    let mut a = json!({"apiVersion": "ipam.cluster.x-k8s.io/v1beta2", "kind": "IPAddress",
        "metadata": {"name": "a1", "namespace": NS},
        "spec": {"address": "10.9.0.5", "prefix": 24, "claimRef": {"name": "a1"},
            "poolRef": {"apiGroup": "ipam.cluster.x-k8s.io", "kind": "GlobalInClusterIPPool", "name": "owner-pool"}}});
    a["metadata"]["ownerReferences"] = json!([owner_ref(
        &pool,
        "GlobalInClusterIPPool",
        "ipam.cluster.x-k8s.io/v1alpha2",
        false
    )]);
    create(&addrs, a).await;
    pools
        .delete("owner-pool", &DeleteParams::default())
        .await
        .unwrap();
    eventually("address collected", || async {
        addrs.get_opt("a1").await.unwrap().is_none().then_some(())
    })
    .await;
    tb.shutdown().await;
}

#[tokio::test]
async fn deleting_a_namespace_removes_its_content() {
    let tb = start_without_ipam(P).await;
    let ns_api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(tb.client());
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": "doomed"}})).unwrap();
    let created = ns_api.create(&Default::default(), &ns).await.unwrap();
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Active"));
    let cl = api(&tb, &clusters(P), Some("doomed"));
    let mut v = cluster_json(P, "inside", json!([]));
    v["metadata"]["namespace"] = json!("doomed");
    // Its class lives in `default`: CAPI refuses updates (here the finalizer removal) of a Cluster whose class is
    // gone, and the namespace's own content is deleted in no particular order.
    v["spec"]["topology"]["classRef"]["namespace"] = json!(NS);
    v["metadata"]["finalizers"] = json!(["example.io/hold"]);
    create(&cl, v).await;
    ns_api
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    let terminating = ns_api.get("doomed").await.unwrap();
    assert_eq!(
        terminating.status.unwrap().phase.as_deref(),
        Some("Terminating")
    );
    let mut again = cluster_json(P, "late", json!([]));
    again["metadata"]["namespace"] = json!("doomed");
    let e = api_err(cl.create(&Default::default(), &dynobj(again)).await);
    assert_eq!(e.code, 403, "no new content in a terminating namespace");
    eventually("content deleting", || async {
        cl.get("inside")
            .await
            .ok()
            .filter(|c| c.metadata.deletion_timestamp.is_some())
    })
    .await;
    cl.patch(
        "inside",
        &Default::default(),
        &kube::api::Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually("namespace gone", || async {
        ns_api
            .get_opt("doomed")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    tb.shutdown().await;
}

#[tokio::test]
async fn dangling_owner_of_served_kind_is_collected_but_unknown_kinds_are_left_alone() {
    let tb = start_without_ipam(P).await;
    let claims = api(&tb, &claims(P), Some(NS));
    let ghost = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": "ghost",
        "uid": "00000000-0000-4000-8000-000000000001", "controller": true});
    create(&claims, claim_json("orphaned", "ghost", Some(ghost), "p")).await;
    let unknown = json!({"apiVersion": "controlplane.cluster.x-k8s.io/v1beta2", "kind": "KubeadmControlPlane",
        "name": "kcp", "uid": "00000000-0000-4000-8000-000000000002", "controller": true});
    create(&claims, claim_json("kept", "x", Some(unknown), "p")).await;
    eventually("dangling owner collected", || async {
        claims
            .get_opt("orphaned")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        claims.get_opt("kept").await.unwrap().is_some(),
        "owner kind not served: cannot be verified, kept"
    );
    tb.shutdown().await;
}
