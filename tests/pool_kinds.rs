//! `--pool-kinds`: pools of another IPAM provider (the testbed's metal3-like `IPPool`) serve VIPs, claims carry the
//! provider's group, a claim such a pool never answers moves on after `--pending-claim-timeout`, and a kind the
//! server does not serve stops the operator at start with a message naming it.

mod common;

use std::time::Duration;

use common::{Env, Operator};
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::{json, Value};
use testbed::{Profile, Testbed, TestbedOptions};

const METAL3: &str = "IPPool.v1alpha1.ipam.metal3.io";

fn ippools() -> ApiResource {
    ApiResource {
        group: "ipam.metal3.io".into(),
        version: "v1alpha1".into(),
        api_version: "ipam.metal3.io/v1alpha1".into(),
        kind: "IPPool".into(),
        plural: "ippools".into(),
    }
}

fn options(profile: Profile) -> TestbedOptions {
    TestbedOptions {
        crd_dirs: vec![profile.crd_dir(), testbed::test_crd_dir()],
        ..TestbedOptions::default()
    }
}

/// A metal3-like IPPool in `ns` serving class `gold` for the control plane, with one `start`-`end` range.
async fn metal3_pool(env: &Env, ns: &str, name: &str, range: (&str, &str), annotations: Value) {
    let api: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), ns, &ippools());
    let body = json!({"apiVersion": "ipam.metal3.io/v1alpha1", "kind": "IPPool",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations,
            "labels": {"vip.capi.gorizond.io/cluster-class": "gold", "vip.capi.gorizond.io/role": "control-plane"}},
        "spec": {"pools": [{"start": range.0, "end": range.1}], "prefix": 24, "gateway": "10.80.0.1"}});
    api.create(
        &PostParams::default(),
        &serde_json::from_value(body).unwrap(),
    )
    .await
    .expect("create IPPool");
}

async fn cp_only(env: &Env, ns: &str, name: &str) {
    env.gold_cp_only_cluster(ns, name, json!({})).await;
}

#[tokio::test]
async fn extra_kind_pool_serves_vips_and_an_unanswered_claim_moves_on_after_the_timeout() {
    let profile = Profile::Capi112;
    let env = Env::start_opts(
        profile,
        options(profile),
        &[
            &format!("--pool-kinds={METAL3}"),
            "--pending-claim-timeout=2s",
        ],
    )
    .await;
    let ns = env.namespace("metal3").await;
    env.class(&ns, "gold", &[]).await;
    metal3_pool(&env, &ns, "m-pool", ("10.80.0.10", "10.80.0.11"), json!({})).await;

    cp_only(&env, &ns, "c1").await;
    assert_eq!(env.wait_cp_vip(&ns, "c1").await, "10.80.0.10");
    let claim = env.claims(&ns).get("vip-cp-c1").await.unwrap();
    assert_eq!(
        claim.data["spec"]["poolRef"],
        json!({"apiGroup": "ipam.metal3.io", "kind": "IPPool", "name": "m-pool"})
    );

    // A pool tried first (priority) whose only address is taken: it never answers, and says nothing about it.
    metal3_pool(
        &env,
        &ns,
        "full",
        ("10.81.0.10", "10.81.0.10"),
        json!({"vip.capi.gorizond.io/priority": "5"}),
    )
    .await;
    let taken = json!({"apiVersion": env.shapes.address.api_version, "kind": "IPAddress",
        "metadata": {"name": "someone-else", "namespace": ns},
        "spec": {"address": "10.81.0.10", "prefix": 24, "claimRef": {"name": "someone-else"},
            "poolRef": {"apiGroup": "ipam.metal3.io", "kind": "IPPool", "name": "full"}}});
    env.addresses(&ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(taken).unwrap(),
        )
        .await
        .expect("create IPAddress");
    let started = std::time::Instant::now();
    cp_only(&env, &ns, "c2").await;
    let replaced = env.wait_event(&ns, "c2", "ClaimReplaced").await;
    let note = replaced.note.unwrap_or_default();
    assert!(note.contains("full") && note.contains("m-pool"), "{note}");
    assert_eq!(env.wait_cp_vip(&ns, "c2").await, "10.80.0.11");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2),
        "moved after {waited:?}, before the timeout"
    );
    let claim = env.claims(&ns).get("vip-cp-c2").await.unwrap();
    assert_eq!(claim.data["spec"]["poolRef"]["name"], "m-pool");
    // The bound claim of c1 never moved.
    assert_eq!(env.wait_cp_vip(&ns, "c1").await, "10.80.0.10");
    eprintln!("timed-out claim moved and bound after {waited:?}");
}

#[tokio::test]
async fn a_pool_kind_the_server_does_not_serve_stops_the_operator_naming_it() {
    let tb = Testbed::start(options(Profile::Capi112))
        .await
        .expect("testbed starts");
    for kind in [
        "NoSuchPool.v1alpha2.ipam.cluster.x-k8s.io",
        "IPPool.v1alpha1.ipam.example.com",
    ] {
        let op = Operator::spawn(
            tb.kubeconfig_path(),
            &[&format!("--pool-kinds={METAL3},{kind}")],
        );
        let status = op
            .wait_exit(Duration::from_secs(30))
            .await
            .expect("the operator exits");
        assert!(!status.success());
        let logs = op.logs();
        assert!(logs.contains(&format!("does not serve {kind}")), "{logs}");
    }
    let op = Operator::spawn(tb.kubeconfig_path(), &["--pool-kinds=ippool"]);
    let status = op
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("a malformed item exits");
    assert_eq!(status.code(), Some(2));
    assert!(
        op.logs().contains("<Kind>.<version>.<group>"),
        "{}",
        op.logs()
    );
    tb.shutdown().await;
}
