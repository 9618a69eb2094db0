//! Lifecycle regressions: a restarted operator recognises the VIPs it already wrote (no `ManualEndpoint`, no
//! writes), and metric series of deleted ClusterClasses, pools and namespaces disappear from `/metrics`.

mod common;

use common::{host, Env, Operator};
use kube::api::{Api, DeleteParams, DynamicObject};
use testbed::Profile;

const N: usize = 12;

fn operator_writes_since(env: &Env, seq: u64) -> Vec<String> {
    env.tb
        .stats_since(seq)
        .writes
        .into_iter()
        .filter(|w| w.user_agent.starts_with("capi-vip-allocator/") && w.resource != "leases")
        .map(|w| format!("{} {} {}", w.verb, w.resource, w.user_agent))
        .collect()
}

#[tokio::test]
async fn restart_recognises_its_own_vips() {
    let mut env = Env::start(Profile::Capi112).await;
    let ns = env.namespace("restart").await;
    env.class(&ns, "again", &["clusterVip", "ingressVip"]).await;
    env.pool(
        "again-cp",
        &["10.71.0.1-10.71.0.50"],
        24,
        "again",
        "control-plane",
    )
    .await;
    env.pool(
        "again-ing",
        &["10.72.0.1-10.72.0.50"],
        24,
        "again",
        "ingress",
    )
    .await;
    let names: Vec<String> = (0..N).map(|i| format!("r-{i}")).collect();
    for name in &names {
        env.cluster(&ns, name, "again").await;
    }
    for name in &names {
        env.wait_cp_vip(&ns, name).await;
        env.wait_cluster(&ns, name, "ingress VIP", |c| {
            common::annotation(c, "vip.capi.gorizond.io/ingress-vip").is_some()
        })
        .await;
    }
    let before: Vec<String> = {
        let mut v = Vec::new();
        for name in &names {
            v.push(host(&env.clusters(&ns).get(name).await.unwrap()));
        }
        v
    };

    // Restart: the new process starts with empty caches.
    let old = std::mem::replace(&mut env.op, Operator::spawn(env.tb.kubeconfig_path(), &[]));
    let (status, _) = old.terminate().await;
    assert!(status.success(), "old operator exits cleanly");
    let seq = env.tb.stats().writes.last().map(|w| w.seq).unwrap_or(0);
    env.op.wait_ready().await;
    // Every Cluster has been looked at by the new process.
    env.wait_metrics("a successful reconcile of every Cluster", |t| {
        common::metric_value(
            t,
            "capi_vip_allocator_reconcile_total{cluster_class=\"again\",result=\"success\"}",
        )
        .is_some_and(|v| v >= N as f64)
    })
    .await;
    // Let any late reconcile (triggered by the secondary caches filling) run too.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    for name in &names {
        assert!(
            env.events(&ns, name, "ManualEndpoint").await.is_empty(),
            "{name}: our own VIP was taken for a manual endpoint\n{}",
            env.op.logs()
        );
    }
    let writes = operator_writes_since(&env, seq);
    let mut reasons = Vec::new();
    if !writes.is_empty() {
        let api: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(env.client.clone(), &ns);
        for e in api.list(&Default::default()).await.unwrap().items {
            reasons.push(format!("{:?}: {:?}", e.reason, e.note));
        }
    }
    assert_eq!(
        writes,
        Vec::<String>::new(),
        "a restart writes nothing when everything is allocated; events: {reasons:#?}"
    );
    for (name, was) in names.iter().zip(&before) {
        assert_eq!(&host(&env.clusters(&ns).get(name).await.unwrap()), was);
    }
}

#[tokio::test]
async fn series_of_deleted_classes_pools_and_namespaces_disappear() {
    let env = Env::start(Profile::Capi112).await;
    let ns = env.namespace("gone").await;
    env.class(&ns, "vanishing", &[]).await;
    env.pool(
        "vanishing-pool",
        &["10.73.0.1-10.73.0.9"],
        24,
        "vanishing",
        "control-plane",
    )
    .await;
    // A class that stays, to show pruning keeps live series.
    let keep_ns = env.namespace("kept").await;
    env.class(&keep_ns, "staying", &[]).await;
    env.pool(
        "staying-pool",
        &["10.74.0.1-10.74.0.9"],
        24,
        "staying",
        "control-plane",
    )
    .await;
    env.cluster(&ns, "doomed", "vanishing").await;
    env.cluster(&keep_ns, "kept", "staying").await;
    env.wait_cp_vip(&ns, "doomed").await;
    env.wait_cp_vip(&keep_ns, "kept").await;
    env.wait_metrics("allocation series of both classes", |t| {
        t.contains("capi_vip_allocator_allocations_total{cluster_class=\"vanishing\"")
            && t.contains("capi_vip_allocator_allocations_total{cluster_class=\"staying\"")
            && t.contains(&format!("namespace=\"{ns}\""))
            && t.contains("pool_name=\"vanishing-pool\"")
    })
    .await;

    env.delete_cluster(&ns, "doomed").await;
    env.wait_gone(&env.clusters(&ns), "doomed", "Cluster deletion")
        .await;
    let classes: Api<DynamicObject> =
        Api::namespaced_with(env.client.clone(), &ns, &env.shapes.cluster_class);
    classes
        .delete("vanishing", &DeleteParams::background())
        .await
        .expect("delete ClusterClass");
    env.pools()
        .delete("vanishing-pool", &DeleteParams::background())
        .await
        .expect("delete pool");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(env.client.clone());
    namespaces
        .delete(&ns, &DeleteParams::background())
        .await
        .expect("delete namespace");

    let text = env
        .wait_metrics("no series of the deleted class, pool or namespace", |t| {
            !t.contains("cluster_class=\"vanishing\"")
                && !t.contains("pool_name=\"vanishing-pool\"")
                && !t.contains(&format!("namespace=\"{ns}\""))
        })
        .await;
    for series in [
        "capi_vip_allocator_allocations_total{cluster_class=\"staying\"",
        "capi_vip_allocator_reconcile_total{cluster_class=\"staying\"",
        "capi_vip_allocator_reconcile_duration_seconds_count{cluster_class=\"staying\"",
        "pool_name=\"staying-pool\"",
    ] {
        assert!(text.contains(series), "live series {series} kept:\n{text}");
    }
}
