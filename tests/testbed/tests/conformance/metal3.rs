//! The second simulated IPAM provider (`testbed::ipam::metal3`): CAPI claims on a metal3-like `IPPool` are
//! answered as the CAPI IPAM contract asks, first fit from the pool's ranges, and left pending when it is full.

use kube::api::DeleteParams;
use serde_json::{json, Value};
use testbed::{Profile, Testbed, TestbedOptions};

use crate::common::*;

fn ippools() -> kube::api::ApiResource {
    ar("ipam.metal3.io", "v1alpha1", "IPPool", "ippools")
}

fn metal3_claim(p: Profile, name: &str, pool: &str) -> Value {
    json!({"apiVersion": format!("ipam.cluster.x-k8s.io/{}", cluster_version(p)), "kind": "IPAddressClaim",
        "metadata": {"name": name, "namespace": NS, "labels": {"cluster.x-k8s.io/cluster-name": "c1"}},
        "spec": {"clusterName": "c1", "poolRef": {"apiGroup": "ipam.metal3.io", "kind": "IPPool", "name": pool}}})
}

async fn start_with_metal3(p: Profile) -> Testbed {
    let tb = Testbed::start(TestbedOptions {
        crd_dirs: vec![p.crd_dir(), testbed::test_crd_dir()],
        ..TestbedOptions::default()
    })
    .await
    .expect("testbed starts");
    create_demo_class(&tb, p).await;
    tb
}

async fn address_of(tb: &Testbed, p: Profile, name: &str) -> Value {
    let claims = api(tb, &claims(p), Some(NS));
    eventually("claim bound", || async {
        claims
            .get(name)
            .await
            .ok()
            .filter(|c| c.data.pointer("/status/addressRef/name").is_some())
    })
    .await;
    api(tb, &addresses(p), Some(NS))
        .get(name)
        .await
        .expect("IPAddress")
        .data["spec"]
        .clone()
}

async fn metal3_claims_bind_first_fit_and_wait_when_full(p: Profile) {
    let tb = start_with_metal3(p).await;
    create(
        &api(&tb, &clusters(p), Some(NS)),
        cluster_json(p, "c1", json!([])),
    )
    .await;
    let pools = api(&tb, &ippools(), Some(NS));
    create(
        &pools,
        json!({"apiVersion": "ipam.metal3.io/v1alpha1", "kind": "IPPool", "metadata": {"name": "m", "namespace": NS},
            "spec": {"pools": [{"start": "10.9.0.10", "end": "10.9.0.10"}, {"start": "10.9.1.5", "end": "10.9.1.6", "prefix": 25, "gateway": "10.9.1.1"}],
                     "prefix": 24, "gateway": "10.9.0.1"}}),
    )
    .await;
    let claims = api(&tb, &claims(p), Some(NS));
    for n in ["a", "b", "c", "d"] {
        create(&claims, metal3_claim(p, n, "m")).await;
    }
    let a = address_of(&tb, p, "a").await;
    assert_eq!(a["address"], "10.9.0.10");
    assert_eq!(
        (a["prefix"].clone(), a["gateway"].clone()),
        (json!(24), json!("10.9.0.1"))
    );
    assert_eq!(
        a["poolRef"],
        json!({"apiGroup": "ipam.metal3.io", "kind": "IPPool", "name": "m"})
    );
    let b = address_of(&tb, p, "b").await;
    assert_eq!(
        (b["address"].clone(), b["prefix"].clone()),
        (json!("10.9.1.5"), json!(25))
    );
    assert_eq!(address_of(&tb, p, "c").await["address"], "10.9.1.6");
    // Full: d stays pending — no addressRef, no IPAddress — like an exhausted provider.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let d = claims.get("d").await.unwrap();
    assert!(d.data.pointer("/status/addressRef").is_none());
    let pool = pools.get("m").await.unwrap();
    assert!(
        pool.data.pointer("/status/ipAddresses").is_none(),
        "no in-cluster counters"
    );
    assert!(pool.data.pointer("/status/indexes").is_some());
    // Freeing an address (the claim goes, its IPAddress with it) answers the waiting claim.
    claims.delete("b", &DeleteParams::default()).await.unwrap();
    assert_eq!(address_of(&tb, p, "d").await["address"], "10.9.1.5");
    tb.shutdown().await;
}

#[tokio::test]
async fn metal3_claims_bind_first_fit_and_wait_when_full_v112() {
    metal3_claims_bind_first_fit_and_wait_when_full(Profile::Capi112).await;
}

#[tokio::test]
async fn metal3_claims_bind_first_fit_and_wait_when_full_v110() {
    metal3_claims_bind_first_fit_and_wait_when_full(Profile::Capi110).await;
}
