//! Pools as fleets run them: a tenant's namespaced pools first, then the global ones; priorities; fall-through
//! when a tier is exhausted, and the opt-out; `PoolExhausted` naming every candidate.

mod common;

use common::Env;
use serde_json::json;
use testbed::Profile;

const CP: &str = "control-plane";

/// A Cluster of class `gold` without ingress VIP; returns its control-plane VIP.
async fn cp_only(env: &Env, ns: &str, name: &str) -> String {
    create_cp_only(env, ns, name).await;
    env.wait_cp_vip(ns, name).await
}

async fn create_cp_only(env: &Env, ns: &str, name: &str) {
    env.gold_cp_only_cluster(ns, name, json!({})).await;
}

#[tokio::test]
async fn namespaced_pools_first_then_global_priority_and_fallthrough() {
    let env = Env::start(Profile::Capi112).await;
    let tenant = env.namespace("tenant").await;
    let other = env.namespace("other").await;
    for ns in [&tenant, &other] {
        env.class(ns, "gold", &[]).await;
    }
    // Two global pools: the higher priority one is used first, whatever the names say.
    env.pool_with(
        None,
        "a-global",
        &["10.70.0.10-10.70.0.20"],
        24,
        "gold",
        CP,
        json!({}),
    )
    .await;
    env.pool_with(
        None,
        "z-global",
        &["10.70.1.10-10.70.1.20"],
        24,
        "gold",
        CP,
        json!({"vip.capi.gorizond.io/priority": "10"}),
    )
    .await;
    // The tenant's own pool: one address.
    env.pool_with(
        Some(&tenant),
        "tenant-pool",
        &["10.70.9.10"],
        24,
        "gold",
        CP,
        json!({}),
    )
    .await;
    // The operator sees all three before the first Cluster (a Cluster reconciled earlier would rightly take what
    // it sees then).
    env.wait_metrics("three pools", |t| {
        t.contains(
            "capi_vip_allocator_pools_available{cluster_class=\"gold\",role=\"control-plane\"} 3",
        )
    })
    .await;

    assert_eq!(
        cp_only(&env, &tenant, "first").await,
        "10.70.9.10",
        "the tenant's pool first"
    );
    let claim = env.claims(&tenant).get("vip-cp-first").await.unwrap();
    assert_eq!(
        claim.data.pointer("/spec/poolRef"),
        Some(
            &json!({"apiGroup": "ipam.cluster.x-k8s.io", "kind": "InClusterIPPool", "name": "tenant-pool"})
        )
    );
    assert_eq!(
        cp_only(&env, &other, "elsewhere").await,
        "10.70.1.10",
        "another namespace never uses the tenant's pool; priority 10 beats the name"
    );
    // The tenant's pool is full: the next Cluster falls through to the global pools.
    assert_eq!(cp_only(&env, &tenant, "second").await, "10.70.1.11");
}

#[tokio::test]
async fn a_namespace_can_keep_its_clusters_off_the_global_pools() {
    let env = Env::start(Profile::Capi112).await;
    let tenant = env.namespace("closed").await;
    env.class(&tenant, "gold", &[]).await;
    env.pool("global", &["10.71.0.10-10.71.0.20"], 24, "gold", CP)
        .await;
    env.pool_with(
        Some(&tenant),
        "own",
        &["10.71.9.10"],
        24,
        "gold",
        CP,
        json!({"vip.capi.gorizond.io/fallthrough": "false"}),
    )
    .await;
    env.wait_metrics("two pools", |t| {
        t.contains(
            "capi_vip_allocator_pools_available{cluster_class=\"gold\",role=\"control-plane\"} 2",
        )
    })
    .await;
    assert_eq!(cp_only(&env, &tenant, "first").await, "10.71.9.10");
    create_cp_only(&env, &tenant, "second").await;
    let e = env.wait_event(&tenant, "second", "PoolExhausted").await;
    let note = e.note.unwrap_or_default();
    assert!(note.contains("own"), "{note}");
    let c = env.clusters(&tenant).get("second").await.unwrap();
    assert_eq!(common::host(&c), "", "never a global address");
    // The waiting claim's age and the namespaced pool's counters are on /metrics.
    let pending = format!(
        "capi_vip_allocator_claim_pending_oldest_seconds{{namespace=\"{tenant}\",role=\"control-plane\"}}"
    );
    let pool = format!(
        "capi_vip_allocator_pool_addresses_free{{pool_name=\"own\",pool_namespace=\"{tenant}\"}} 0"
    );
    env.wait_metrics("the pending claim's age and the tenant pool", |t| {
        t.contains(&pending) && t.contains(&pool)
    })
    .await;
}

#[tokio::test]
async fn every_exhausted_candidate_is_named() {
    let env = Env::start(Profile::Capi112).await;
    let ns = env.namespace("full").await;
    env.class(&ns, "gold", &[]).await;
    env.pool("one", &["10.72.0.10"], 24, "gold", CP).await;
    env.pool_with(
        Some(&ns),
        "mine",
        &["10.72.9.10"],
        24,
        "gold",
        CP,
        json!({}),
    )
    .await;
    env.wait_metrics("two pools", |t| {
        t.contains(
            "capi_vip_allocator_pools_available{cluster_class=\"gold\",role=\"control-plane\"} 2",
        )
    })
    .await;
    cp_only(&env, &ns, "a").await;
    cp_only(&env, &ns, "b").await;
    create_cp_only(&env, &ns, "c").await;
    let e = env.wait_event(&ns, "c", "PoolExhausted").await;
    let note = e.note.unwrap_or_default();
    assert!(
        note.contains(&format!("{ns}/mine, one")),
        "in order: {note}"
    );
}

#[tokio::test]
async fn overlapping_vip_pools_are_told_on_each_pool_and_counted() {
    let env = Env::start(Profile::Capi112).await;
    env.pool("ov-a", &["10.73.0.10-10.73.0.20"], 24, "gold", CP)
        .await;
    env.pool("ov-b", &["10.73.0.0/24"], 24, "silver", "ingress")
        .await;
    env.pool("ov-c", &["10.73.1.10-10.73.1.20"], 24, "gold", CP)
        .await;
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(env.client.clone(), "default");
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let list = events.list(&Default::default()).await.unwrap().items;
        let on = |pool: &str| {
            list.iter().find(|e| {
                e.reason.as_deref() == Some("PoolOverlap")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pool)
            })
        };
        if let (Some(a), Some(b)) = (on("ov-a"), on("ov-b")) {
            let (a, b) = (
                a.note.clone().unwrap_or_default(),
                b.note.clone().unwrap_or_default(),
            );
            assert!(a.contains("ov-b (from 10.73.0.10)"), "{a}");
            assert!(b.contains("ov-a (from 10.73.0.10)"), "{b}");
            assert!(on("ov-c").is_none(), "a disjoint pool is not told");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no PoolOverlap Events: {list:#?}\n{}",
            env.op.diagnostics().await
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    env.wait_metrics("two overlapping pools", |t| {
        t.contains("capi_vip_allocator_overlapping_pools 2")
    })
    .await;
    // Made disjoint: the gauge goes back to 0.
    env.pools()
        .patch(
            "ov-b",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"addresses": ["10.73.0.100-10.73.0.200"]}})),
        )
        .await
        .unwrap();
    env.wait_metrics("no overlap", |t| {
        t.contains("capi_vip_allocator_overlapping_pools 0")
    })
    .await;
}
