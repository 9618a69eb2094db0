//! The simulated in-cluster IPAM provider (issue 2 §"Simulated in-cluster IPAM provider",
//! contracts §4), in both profiles.

use std::time::Duration;

use kube::api::{DynamicObject, Patch, PatchParams};
use serde_json::{json, Value};
use testbed::{Profile, Testbed, TestbedOptions};

use crate::common::*;

fn claim(p: Profile, name: &str, cluster: &str, kind: &str, pool: &str) -> Value {
    json!({"apiVersion": format!("ipam.cluster.x-k8s.io/{}", cluster_version(p)), "kind": "IPAddressClaim",
        "metadata": {"name": name, "namespace": NS, "labels": {"cluster.x-k8s.io/cluster-name": cluster}},
        "spec": {"clusterName": cluster, "poolRef": {"apiGroup": "ipam.cluster.x-k8s.io", "kind": kind, "name": pool}}})
}

fn global_pool(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "ipam.cluster.x-k8s.io/v1alpha2", "kind": "GlobalInClusterIPPool", "metadata": {"name": name}, "spec": spec})
}

async fn bound(tb: &Testbed, p: Profile, name: &str) -> DynamicObject {
    let claims = api(tb, &claims(p), Some(NS));
    let c = eventually("claim bound", || async {
        claims
            .get(name)
            .await
            .ok()
            .filter(|c| c.data.pointer("/status/addressRef/name").is_some())
    })
    .await;
    assert_eq!(c.data["status"]["addressRef"]["name"], name);
    api(tb, &addresses(p), Some(NS))
        .get(name)
        .await
        .expect("IPAddress named like the claim")
}

async fn pool_status(tb: &Testbed, name: &str, want: Value) {
    let pools = api(tb, &global_pools(), None);
    eventually("pool status", || async {
        pools
            .get(name)
            .await
            .ok()
            .filter(|p| p.data.pointer("/status/ipAddresses") == Some(&want))
    })
    .await;
}

async fn allocates_lowest_free_and_keeps_pool_status(p: Profile) {
    let tb = start(p).await;
    create(
        &api(&tb, &clusters(p), Some(NS)),
        cluster_json(p, "c1", json!([])),
    )
    .await;
    let pools = api(&tb, &global_pools(), None);
    create(
        &pools,
        global_pool(
            "cp",
            json!({"addresses": ["10.0.0.0/29"], "prefix": 24, "gateway": "10.0.0.1",
        "excludedAddresses": ["10.0.0.2"]}),
        ),
    )
    .await;
    let claims = api(&tb, &claims(p), Some(NS));
    create(
        &claims,
        claim(p, "c1-a", "c1", "GlobalInClusterIPPool", "cp"),
    )
    .await;
    let a = bound(&tb, p, "c1-a").await;
    assert_eq!(
        a.data["spec"]["address"], "10.0.0.3",
        "network, gateway and excluded skipped"
    );
    assert_eq!(a.data["spec"]["prefix"], 24);
    assert_eq!(a.data["spec"]["gateway"], "10.0.0.1");
    assert_eq!(a.data["spec"]["claimRef"]["name"], "c1-a");
    assert_eq!(
        a.data["spec"]["poolRef"],
        json!({"apiGroup": "ipam.cluster.x-k8s.io", "kind": "GlobalInClusterIPPool", "name": "cp"})
    );
    assert_eq!(
        a.types.as_ref().unwrap().api_version,
        format!("ipam.cluster.x-k8s.io/{}", cluster_version(p))
    );
    assert_eq!(
        a.metadata.finalizers.as_deref(),
        Some(&["ipam.cluster.x-k8s.io/ProtectAddress".to_string()][..])
    );
    assert_eq!(
        a.metadata.labels.as_ref().unwrap()["cluster.x-k8s.io/cluster-name"],
        "c1"
    );
    let owners = a.metadata.owner_references.unwrap();
    assert_eq!(owners.len(), 2);
    assert_eq!(
        (owners[0].kind.as_str(), owners[0].controller),
        ("IPAddressClaim", Some(true))
    );
    assert_eq!(
        (owners[1].kind.as_str(), owners[1].controller),
        ("GlobalInClusterIPPool", Some(false))
    );
    assert!(owners.iter().all(|o| o.block_owner_deletion == Some(true)));
    let c = claims.get("c1-a").await.unwrap();
    assert!(c
        .metadata
        .finalizers
        .unwrap()
        .contains(&"ipam.cluster.x-k8s.io/ReleaseAddress".to_string()));
    create(
        &claims,
        claim(p, "c1-b", "c1", "GlobalInClusterIPPool", "cp"),
    )
    .await;
    assert_eq!(
        bound(&tb, p, "c1-b").await.data["spec"]["address"],
        "10.0.0.4"
    );
    // .0 (network of the /24 from the first entry), .1 (gateway), .2 (excluded) are not allocatable.
    pool_status(
        &tb,
        "cp",
        json!({"total": 5, "used": 2, "free": 3, "outOfRange": 0}),
    )
    .await;
    let stats = tb.stats();
    assert!(stats
        .writes_by("testbed-ipam")
        .any(|w| w.verb == "create" && w.resource == "ipaddresses" && w.code == 201));
    tb.shutdown().await;
}

#[tokio::test]
async fn ipam_allocates_lowest_free_address_capi_v1_10() {
    allocates_lowest_free_and_keeps_pool_status(Profile::Capi110).await;
}

#[tokio::test]
async fn ipam_allocates_lowest_free_address_capi_v1_12() {
    allocates_lowest_free_and_keeps_pool_status(Profile::Capi112).await;
}

async fn exhausts_then_allocates_when_freed_or_grown(p: Profile) {
    let tb = start(p).await;
    create(
        &api(&tb, &clusters(p), Some(NS)),
        cluster_json(p, "c", json!([])),
    )
    .await;
    let pools = api(&tb, &ns_pools(), Some(NS));
    create(&pools, json!({"apiVersion": "ipam.cluster.x-k8s.io/v1alpha2", "kind": "InClusterIPPool",
        "metadata": {"name": "tiny", "namespace": NS}, "spec": {"addresses": ["192.168.5.10"], "prefix": 24}})).await;
    let claims = api(&tb, &claims(p), Some(NS));
    create(&claims, claim(p, "first", "c", "InClusterIPPool", "tiny")).await;
    assert_eq!(
        bound(&tb, p, "first").await.data["spec"]["address"],
        "192.168.5.10"
    );
    create(&claims, claim(p, "second", "c", "InClusterIPPool", "tiny")).await;
    create(&claims, claim(p, "third", "c", "InClusterIPPool", "tiny")).await;
    let ns_pool_free =
        |want: i64| {
            let pools = pools.clone();
            async move {
                eventually("pool free", || async {
                    pools.get("tiny").await.ok().filter(|p| {
                        p.data.pointer("/status/ipAddresses/free") == Some(&json!(want))
                    })
                })
                .await
            }
        };
    ns_pool_free(0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = claims.get("second").await.unwrap();
    assert!(
        second.data.pointer("/status/addressRef").is_none(),
        "exhausted pool leaves the claim unbound"
    );
    assert!(api(&tb, &addresses(p), Some(NS))
        .get_opt("second")
        .await
        .unwrap()
        .is_none());
    // Releasing the address re-triggers the waiting claim.
    claims.delete("first", &Default::default()).await.unwrap();
    eventually("first released", || async {
        claims
            .get_opt("first")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(
        bound(&tb, p, "second").await.data["spec"]["address"],
        "192.168.5.10",
        "released address reused"
    );
    // Growing the pool serves the last one.
    pools
        .patch(
            "tiny",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"addresses": ["192.168.5.10-192.168.5.11"]}})),
        )
        .await
        .unwrap();
    assert_eq!(
        bound(&tb, p, "third").await.data["spec"]["address"],
        "192.168.5.11"
    );
    ns_pool_free(0).await;
    tb.shutdown().await;
}

#[tokio::test]
async fn ipam_exhaustion_and_release_capi_v1_10() {
    exhausts_then_allocates_when_freed_or_grown(Profile::Capi110).await;
}

#[tokio::test]
async fn ipam_exhaustion_and_release_capi_v1_12() {
    exhausts_then_allocates_when_freed_or_grown(Profile::Capi112).await;
}

#[tokio::test]
async fn ipam_skips_claims_of_paused_or_missing_clusters_until_they_resume() {
    let p = Profile::Capi112;
    let tb = start(p).await;
    create(
        &api(&tb, &global_pools(), None),
        global_pool(
            "gp",
            json!({"addresses": ["10.5.0.10-10.5.0.20"], "prefix": 24}),
        ),
    )
    .await;
    let claims = api(&tb, &claims(p), Some(NS));
    create(
        &claims,
        claim(p, "late-cp", "late", "GlobalInClusterIPPool", "gp"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = claims.get("late-cp").await.unwrap();
    assert!(
        c.data.pointer("/status/addressRef").is_none(),
        "missing Cluster: claim skipped"
    );
    assert!(c.metadata.finalizers.is_none(), "skipped before any write");
    let cl = api(&tb, &clusters(p), Some(NS));
    let mut v = cluster_json(p, "late", json!([]));
    v["spec"]["paused"] = json!(true);
    create(&cl, v).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        claims
            .get("late-cp")
            .await
            .unwrap()
            .data
            .pointer("/status/addressRef")
            .is_none(),
        "paused Cluster: skipped"
    );
    cl.patch(
        "late",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"paused": false}})),
    )
    .await
    .unwrap();
    assert_eq!(
        bound(&tb, p, "late-cp").await.data["spec"]["address"],
        "10.5.0.10",
        "un-pausing re-enqueues"
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn ipam_serves_ipv6_pools() {
    let p = Profile::Capi112;
    let tb = start(p).await;
    create(
        &api(&tb, &clusters(p), Some(NS)),
        cluster_json(p, "v6", json!([])),
    )
    .await;
    create(
        &api(&tb, &global_pools(), None),
        global_pool(
            "v6pool",
            json!({"addresses": ["fd00:10::/125"], "prefix": 64,
        "gateway": "fd00:10::1"}),
        ),
    )
    .await;
    create(
        &api(&tb, &claims(p), Some(NS)),
        claim(p, "v6-cp", "v6", "GlobalInClusterIPPool", "v6pool"),
    )
    .await;
    let a = bound(&tb, p, "v6-cp").await;
    assert_eq!(a.data["spec"]["address"], "fd00:10::2");
    assert_eq!(a.data["spec"]["prefix"], 64);
    pool_status(
        &tb,
        "v6pool",
        json!({"total": 6, "used": 1, "free": 5, "outOfRange": 0}),
    )
    .await;
    tb.shutdown().await;
}

#[tokio::test]
async fn ipam_delay_holds_back_the_answer() {
    let p = Profile::Capi112;
    let tb = Testbed::start(TestbedOptions {
        ipam_delay: Duration::from_millis(400),
        ..TestbedOptions::profile(p)
    })
    .await
    .unwrap();
    create(
        &api(&tb, &clusters(p), Some(NS)),
        cluster_json(p, "slow", json!([])),
    )
    .await;
    create(
        &api(&tb, &global_pools(), None),
        global_pool(
            "sp",
            json!({"addresses": ["10.7.0.10-10.7.0.20"], "prefix": 24}),
        ),
    )
    .await;
    let start = std::time::Instant::now();
    create(
        &api(&tb, &claims(p), Some(NS)),
        claim(p, "slow-cp", "slow", "GlobalInClusterIPPool", "sp"),
    )
    .await;
    bound(&tb, p, "slow-cp").await;
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "answered after the configured delay: {:?}",
        start.elapsed()
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn ipam_ignores_claims_for_other_providers_and_when_disabled() {
    let p = Profile::Capi112;
    let tb = start(p).await;
    create(
        &api(&tb, &clusters(p), Some(NS)),
        cluster_json(p, "o", json!([])),
    )
    .await;
    let other_claims = api(&tb, &claims(p), Some(NS));
    let mut other = claim(p, "other", "o", "MetalPool", "m");
    other["spec"]["poolRef"]["apiGroup"] = json!("metal.example.io");
    create(&other_claims, other).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(other_claims
        .get("other")
        .await
        .unwrap()
        .metadata
        .finalizers
        .is_none());
    tb.shutdown().await;
    let tb = start_without_ipam(p).await;
    create(
        &api(&tb, &clusters(p), Some(NS)),
        cluster_json(p, "o", json!([])),
    )
    .await;
    create(
        &api(&tb, &global_pools(), None),
        global_pool("gp", json!({"addresses": ["10.5.0.10"], "prefix": 24})),
    )
    .await;
    let off_claims = api(&tb, &claims(p), Some(NS));
    create(
        &off_claims,
        claim(p, "off", "o", "GlobalInClusterIPPool", "gp"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        off_claims
            .get("off")
            .await
            .unwrap()
            .data
            .pointer("/status/addressRef")
            .is_none(),
        "--no-ipam: nobody answers"
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn ipam_recreates_an_address_deleted_under_a_bound_claim() {
    let p = Profile::Capi112;
    let tb = start(p).await;
    create(
        &api(&tb, &clusters(p), Some(NS)),
        cluster_json(p, "re", json!([])),
    )
    .await;
    create(
        &api(&tb, &global_pools(), None),
        global_pool(
            "rp",
            json!({"addresses": ["10.8.0.10-10.8.0.20"], "prefix": 24}),
        ),
    )
    .await;
    create(
        &api(&tb, &claims(p), Some(NS)),
        claim(p, "re-cp", "re", "GlobalInClusterIPPool", "rp"),
    )
    .await;
    let first = bound(&tb, p, "re-cp").await;
    let addrs = api(&tb, &addresses(p), Some(NS));
    // Deleted first, then freed of its finalizers (as clusterctl does): removing `ProtectAddress` from a live
    // IPAddress would only have the provider put it back.
    addrs.delete("re-cp", &Default::default()).await.unwrap();
    addrs
        .patch(
            "re-cp",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    let again = eventually("address recreated", || async {
        addrs
            .get_opt("re-cp")
            .await
            .unwrap()
            .filter(|a| a.metadata.uid != first.metadata.uid)
    })
    .await;
    assert_eq!(
        again.data["spec"]["address"], "10.8.0.10",
        "lowest free address again"
    );
    tb.shutdown().await;
}
