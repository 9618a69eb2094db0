//! Load smoke: N Clusters + N owned IPAddressClaims pushed through a kube client, timed until
//! the simulated provider has bound them all. `cargo run -p testbed --release --example load -- 1000`

use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use kube::runtime::watcher;
use serde_json::json;
use testbed::{Profile, Testbed, TestbedOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let tb = Testbed::start(TestbedOptions::profile(Profile::Capi112)).await?;
    let client = tb.client();
    let ar = |g: &str, v: &str, k: &str, p: &str| {
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, k), p)
    };
    let pools: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ar(
            "ipam.cluster.x-k8s.io",
            "v1alpha2",
            "GlobalInClusterIPPool",
            "globalinclusterippools",
        ),
    );
    pools
        .create(&PostParams::default(), &serde_json::from_value(json!({"apiVersion": "ipam.cluster.x-k8s.io/v1alpha2",
            "kind": "GlobalInClusterIPPool", "metadata": {"name": "load"}, "spec": {"addresses": ["10.0.0.0/16"], "prefix": 16}}))?)
        .await?;
    let clusters: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ar("cluster.x-k8s.io", "v1beta2", "Cluster", "clusters"),
    );
    let claims: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ar(
            "ipam.cluster.x-k8s.io",
            "v1beta2",
            "IPAddressClaim",
            "ipaddressclaims",
        ),
    );
    let bound_claims = claims.clone();
    let done = tokio::spawn(async move {
        let mut bound = std::collections::HashSet::new();
        let mut s = watcher(bound_claims, watcher::Config::default()).boxed();
        while let Ok(Some(ev)) = s.try_next().await {
            if let watcher::Event::Apply(o) | watcher::Event::InitApply(o) = ev {
                if o.data.pointer("/status/addressRef/name").is_some() {
                    bound.insert(o.metadata.name.unwrap_or_default());
                    if bound.len() == n {
                        return Instant::now();
                    }
                }
            }
        }
        Instant::now()
    });
    let start = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(64, |i| {
            let clusters = clusters.clone();
            let claims = claims.clone();
            async move {
                let c: DynamicObject = serde_json::from_value(json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
                    "metadata": {"name": format!("c{i}")}, "spec": {"topology": {"classRef": {"name": "x"}, "version": "v1.32.0"}}}))
                .unwrap_or_else(|e| panic!("{e}"));
                let c = clusters.create(&PostParams::default(), &c).await.unwrap_or_else(|e| panic!("{e}"));
                let claim: DynamicObject = serde_json::from_value(json!({"apiVersion": "ipam.cluster.x-k8s.io/v1beta2", "kind": "IPAddressClaim",
                    "metadata": {"name": format!("c{i}-cp"), "labels": {"cluster.x-k8s.io/cluster-name": format!("c{i}")},
                        "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": format!("c{i}"),
                            "uid": c.metadata.uid, "controller": true, "blockOwnerDeletion": true}]},
                    "spec": {"clusterName": format!("c{i}"), "poolRef": {"apiGroup": "ipam.cluster.x-k8s.io", "kind": "GlobalInClusterIPPool", "name": "load"}}}))
                .unwrap_or_else(|e| panic!("{e}"));
                claims.create(&PostParams::default(), &claim).await.unwrap_or_else(|e| panic!("{e}"));
            }
        })
        .await;
    let created = start.elapsed();
    let end = done.await?;
    let total = end - start;
    let stats = tb.stats();
    println!(
        "{n} clusters+claims created in {:.2?}, all bound after {:.2?} ({:.0} claims/s); {} writes logged ({} by testbed-ipam)",
        created,
        total,
        n as f64 / total.as_secs_f64(),
        stats.writes.len(),
        stats.writes_by("testbed-ipam").count()
    );
    tb.shutdown().await;
    Ok(())
}
