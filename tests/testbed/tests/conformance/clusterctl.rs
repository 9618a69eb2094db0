//! `testbed::clusterctl::move_namespace` between two testbeds: what moves, in which order, what stays behind.

use kube::api::{ApiResource, Patch, PatchParams};
use kube::core::GroupVersionKind;
use serde_json::json;
use testbed::clusterctl::{self, ExtraKind, MoveOptions};
use testbed::{Profile, Testbed, TestbedOptions};

/// A source and a target; different seeds, so their uids differ (equal seeds generate equal uids).
async fn two(p: Profile) -> (Testbed, Testbed) {
    let target = Testbed::start(TestbedOptions {
        seed: 2,
        ..TestbedOptions::profile(p)
    })
    .await
    .expect("target starts");
    create_demo_class(&target, p).await;
    (start(p).await, target)
}

use crate::common::*;

#[tokio::test]
async fn move_copies_the_tree_owners_first_and_clears_the_source() {
    let p = Profile::Capi112;
    let (src, dst) = two(p).await;
    let cluster = create(
        &api(&src, &clusters(p), Some(NS)),
        cluster_json(p, "m1", json!([])),
    )
    .await;
    create(
        &api(&src, &global_pools(), None),
        json!({"apiVersion": "ipam.cluster.x-k8s.io/v1alpha2", "kind": "GlobalInClusterIPPool",
            "metadata": {"name": "mp"}, "spec": {"addresses": ["10.7.0.10-10.7.0.20"], "prefix": 24}}),
    )
    .await;
    let owner = json!([{"apiVersion": cluster.types.as_ref().unwrap().api_version, "kind": "Cluster",
        "name": "m1", "uid": cluster.metadata.uid, "controller": true, "blockOwnerDeletion": true}]);
    create(
        &api(&src, &claims(p), Some(NS)),
        json!({"apiVersion": "ipam.cluster.x-k8s.io/v1beta2", "kind": "IPAddressClaim",
            "metadata": {"name": "m1-cp", "namespace": NS, "ownerReferences": owner,
                "labels": {"cluster.x-k8s.io/cluster-name": "m1"}},
            "spec": {"clusterName": "m1", "poolRef": {"apiGroup": "ipam.cluster.x-k8s.io",
                "kind": "GlobalInClusterIPPool", "name": "mp"}}}),
    )
    .await;
    let leases = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("coordination.k8s.io", "v1", "Lease"),
        "leases",
    );
    create(
        &api(&src, &leases, Some(NS)),
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "owned", "namespace": NS, "ownerReferences": owner}}),
    )
    .await;
    create(
        &api(&src, &leases, Some(NS)),
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "loose", "namespace": NS}}),
    )
    .await;
    let addresses_src = api(&src, &addresses(p), Some(NS));
    let ip = eventually("bound in the source", || async {
        addresses_src
            .get_opt("m1-cp")
            .await
            .unwrap()
            .and_then(|a| a.data["spec"]["address"].as_str().map(String::from))
    })
    .await;
    let report = clusterctl::move_namespace_with(
        &src.client(),
        &dst.client(),
        NS,
        &MoveOptions {
            extra_kinds: vec![ExtraKind {
                resource: leases.clone(),
                namespaced: true,
            }],
            ..Default::default()
        },
    )
    .await
    .expect("move");
    let ids = |g: &[String]| {
        g.iter()
            .map(|s| s.split(' ').next().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let kinds_per_group: Vec<Vec<String>> = report.groups.iter().map(|g| ids(g)).collect();
    assert_eq!(
        kinds_per_group,
        vec![
            vec!["ClusterClass".to_string(), "GlobalInClusterIPPool".into()],
            vec!["Cluster".into()],
            vec!["IPAddressClaim".into(), "Lease".into()],
            vec!["IPAddress".into()],
        ],
        "{report:?}"
    );
    assert_eq!(report.not_moved, vec![format!("Lease {NS}/loose")]);
    assert_eq!(
        report.kept_in_source,
        vec![
            format!("IPAddress {NS}/m1-cp"),
            "GlobalInClusterIPPool mp".to_string()
        ],
        "objects under a global pool are not deleted from the source"
    );
    // Target: unpaused, claim re-bound to the same address, owner references pointing at the new uids.
    let c = api(&dst, &clusters(p), Some(NS)).get("m1").await.unwrap();
    assert!(c.data.pointer("/spec/paused").is_none(), "unpaused");
    let claims_dst = api(&dst, &claims(p), Some(NS));
    let claim = eventually("re-bound in the target", || async {
        claims_dst
            .get("m1-cp")
            .await
            .ok()
            .filter(|c| c.data.pointer("/status/addressRef/name").is_some())
    })
    .await;
    assert_eq!(
        claim.metadata.owner_references.unwrap()[0].uid,
        c.metadata.uid.unwrap()
    );
    let a = api(&dst, &addresses(p), Some(NS))
        .get("m1-cp")
        .await
        .unwrap();
    assert_eq!(a.data["spec"]["address"].as_str(), Some(ip.as_str()));
    // Source: the Cluster tree is gone, the IPAddress stays.
    assert!(api(&src, &clusters(p), Some(NS))
        .get_opt("m1")
        .await
        .unwrap()
        .is_none());
    assert!(api(&src, &claims(p), Some(NS))
        .get_opt("m1-cp")
        .await
        .unwrap()
        .is_none());
    assert!(api(&src, &leases, Some(NS))
        .get_opt("owned")
        .await
        .unwrap()
        .is_none());
    assert!(addresses_src.get_opt("m1-cp").await.unwrap().is_some());
    src.shutdown().await;
    dst.shutdown().await;
}

#[tokio::test]
async fn move_refuses_paused_clusters_and_waits_for_block_move() {
    let p = Profile::Capi112;
    let (src, dst) = two(p).await;
    let clusters_src = api(&src, &clusters(p), Some(NS));
    create(&clusters_src, cluster_json(p, "b1", json!([]))).await;
    clusters_src
        .patch(
            "b1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await
        .unwrap();
    let e = clusterctl::move_namespace(&src.client(), &dst.client(), NS)
        .await
        .expect_err("paused Cluster");
    assert!(e.to_string().contains("paused"), "{e}");
    clusters_src
        .patch(
            "b1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": null},
                "metadata": {"annotations": {clusterctl::BLOCK_MOVE: ""}}})),
        )
        .await
        .unwrap();
    let e = clusterctl::move_namespace_with(
        &src.client(),
        &dst.client(),
        NS,
        &MoveOptions {
            block_timeout: std::time::Duration::from_millis(300),
            ..Default::default()
        },
    )
    .await
    .expect_err("blocked");
    assert!(e.to_string().contains("block-move"), "{e}");
    let c = clusters_src.get("b1").await.unwrap();
    assert_eq!(
        c.data.pointer("/spec/paused"),
        Some(&json!(true)),
        "paused before waiting, as clusterctl does"
    );
    src.shutdown().await;
    dst.shutdown().await;
}

#[tokio::test]
async fn move_keeps_an_existing_global_pool_and_points_at_its_source_uid() {
    let p = Profile::Capi112;
    let (src, dst) = two(p).await;
    let pool = json!({"apiVersion": "ipam.cluster.x-k8s.io/v1alpha2", "kind": "GlobalInClusterIPPool",
        "metadata": {"name": "gp"}, "spec": {"addresses": ["10.6.0.10-10.6.0.20"], "prefix": 24}});
    let src_pool = create(&api(&src, &global_pools(), None), pool.clone()).await;
    let dst_pool = create(&api(&dst, &global_pools(), None), pool).await;
    create(
        &api(&src, &clusters(p), Some(NS)),
        cluster_json(p, "g1", json!([])),
    )
    .await;
    let cluster = api(&src, &clusters(p), Some(NS)).get("g1").await.unwrap();
    create(
        &api(&src, &claims(p), Some(NS)),
        json!({"apiVersion": "ipam.cluster.x-k8s.io/v1beta2", "kind": "IPAddressClaim",
            "metadata": {"name": "g1-cp", "namespace": NS, "labels": {"cluster.x-k8s.io/cluster-name": "g1"},
                "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": "g1",
                    "uid": cluster.metadata.uid, "controller": true}]},
            "spec": {"clusterName": "g1", "poolRef": {"apiGroup": "ipam.cluster.x-k8s.io",
                "kind": "GlobalInClusterIPPool", "name": "gp"}}}),
    )
    .await;
    let src_addrs = api(&src, &addresses(p), Some(NS));
    eventually("bound", || async {
        src_addrs.get_opt("g1-cp").await.unwrap()
    })
    .await;
    let report = clusterctl::move_namespace(&src.client(), &dst.client(), NS)
        .await
        .expect("move");
    assert_eq!(
        report.skipped_existing,
        vec!["GlobalInClusterIPPool gp".to_string()]
    );
    let dst_addrs = api(&dst, &addresses(p), Some(NS));
    let pool_uid = |a: &kube::api::DynamicObject| {
        a.metadata
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.kind == "GlobalInClusterIPPool")
            .map(|r| r.uid.clone())
    };
    // Created with the source pool's uid (clusterctl never reads the target's); the provider, once the Cluster is
    // unpaused, re-owns it to the target pool (GC may drop the dangling reference first).
    let fixed = eventually("pool owner fixed", || async {
        dst_addrs
            .get_opt("g1-cp")
            .await
            .unwrap()
            .filter(|a| pool_uid(a) == dst_pool.metadata.uid)
    })
    .await;
    assert_ne!(pool_uid(&fixed), src_pool.metadata.uid);
    src.shutdown().await;
    dst.shutdown().await;
}
