//! Upstream behaviours around IPAddresses that someone other than the provider creates or protects: CAPI's
//! IPAddress webhook, the in-cluster provider keeping (or failing to patch) an existing IPAddress, and
//! kube-apiserver's finalizer rules. Each test fails if the behaviour is absent.

use std::time::Duration;

use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use testbed::{Profile, Testbed, TestbedOptions};

use crate::common::*;

const HOLD: &str = "example.com/hold";

fn claim(p: Profile, name: &str, pool: &str) -> Value {
    json!({"apiVersion": format!("ipam.cluster.x-k8s.io/{}", cluster_version(p)), "kind": "IPAddressClaim",
        "metadata": {"name": name, "namespace": NS, "labels": {"cluster.x-k8s.io/cluster-name": "up"}},
        "spec": {"clusterName": "up", "poolRef": {"apiGroup": "ipam.cluster.x-k8s.io", "kind": "GlobalInClusterIPPool", "name": pool}}})
}

fn address(p: Profile, name: &str, claim: &str, pool: &str, ip: &str) -> Value {
    json!({"apiVersion": format!("ipam.cluster.x-k8s.io/{}", cluster_version(p)), "kind": "IPAddress",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"address": ip, "prefix": 24, "claimRef": {"name": claim},
            "poolRef": {"apiGroup": "ipam.cluster.x-k8s.io", "kind": "GlobalInClusterIPPool", "name": pool}}})
}

/// A testbed with Cluster `up` and global pools `a` (10.9.0.10-20) and `b` (10.9.1.10-20).
async fn setup(p: Profile) -> Testbed {
    let tb = start(p).await;
    create(
        &api(&tb, &clusters(p), Some(NS)),
        cluster_json(p, "up", json!([])),
    )
    .await;
    let pools = api(&tb, &global_pools(), None);
    for (name, range) in [("a", "10.9.0.10-10.9.0.20"), ("b", "10.9.1.10-10.9.1.20")] {
        create(
            &pools,
            json!({"apiVersion": "ipam.cluster.x-k8s.io/v1alpha2", "kind": "GlobalInClusterIPPool",
                "metadata": {"name": name}, "spec": {"addresses": [range], "prefix": 24}}),
        )
        .await;
    }
    tb
}

async fn bound_to(tb: &Testbed, p: Profile, name: &str) -> String {
    let claims = api(tb, &claims(p), Some(NS));
    eventually("claim bound", || async {
        claims
            .get(name)
            .await
            .ok()
            .and_then(|c| c.data.pointer("/status/addressRef/name").cloned())
    })
    .await;
    let a = api(tb, &addresses(p), Some(NS)).get(name).await.unwrap();
    a.data["spec"]["address"].as_str().unwrap().to_string()
}

/// Gives the provider time to act, then asserts the claim is still unbound.
async fn stays_unbound(tb: &Testbed, p: Profile, name: &str, why: &str) {
    tokio::time::sleep(Duration::from_millis(600)).await;
    let c = api(tb, &claims(p), Some(NS)).get(name).await.unwrap();
    assert!(
        c.data.pointer("/status/addressRef").is_none(),
        "{why}: {:?}",
        c.data.get("status")
    );
}

/// A merge patch of the main resource.
async fn merge(
    api: &kube::Api<DynamicObject>,
    name: &str,
    v: Value,
) -> Result<DynamicObject, kube::Error> {
    api.patch(name, &PatchParams::default(), &Patch::Merge(v))
        .await
}

fn finalizers(o: &DynamicObject) -> Vec<String> {
    o.metadata.finalizers.clone().unwrap_or_default()
}

async fn ipaddress_webhook_checks_pool_and_values(p: Profile) {
    let tb = Testbed::start(TestbedOptions {
        ipam: false,
        ..TestbedOptions::profile(p)
    })
    .await
    .unwrap();
    create_demo_class(&tb, p).await;
    let (claims, addrs) = (
        api(&tb, &claims(p), Some(NS)),
        api(&tb, &addresses(p), Some(NS)),
    );
    create(&claims, claim(p, "c1", "a")).await;
    let e = api_err(
        addrs
            .create(
                &PostParams::default(),
                &dynobj(address(p, "c1", "c1", "b", "10.9.1.10")),
            )
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"), "{e:?}");
    assert!(
        e.message.starts_with(
            "admission webhook \"validation.ipaddress.ipam.cluster.x-k8s.io\" denied the request: spec.poolRef: Invalid value: "
        ) && e.message.ends_with(
            ": the referenced pool is different from the pool referenced by the claim this address should fulfill"
        ),
        "{}",
        e.message
    );
    // A holder naming a claim that does not exist is not compared with any pool.
    create(
        &addrs,
        address(p, "holder", "no-such-claim", "b", "10.9.1.10"),
    )
    .await;
    let e = api_err(
        addrs
            .create(
                &PostParams::default(),
                &dynobj(address(p, "bad", "bad", "a", "10.9.0.999")),
            )
            .await,
    );
    assert!(
        e.message
            .ends_with("spec.address: Invalid value: \"10.9.0.999\": not a valid IP address"),
        "{}",
        e.message
    );
    let mut v = address(p, "bad", "bad", "a", "10.9.0.11");
    v["spec"]["poolRef"]
        .as_object_mut()
        .unwrap()
        .remove("apiGroup");
    let e = api_err(addrs.create(&PostParams::default(), &dynobj(v)).await);
    if p == Profile::Capi110 {
        assert!(
            e.code == 403 && e.message.ends_with("spec.poolRef.apiGroup: Invalid value: \"null\": the pool reference needs to contain a group"),
            "{e:?}"
        );
    } else {
        assert_eq!(
            (e.code, e.reason.as_str()),
            (422, "Invalid"),
            "v1beta2 schema requires it: {e:?}"
        );
        assert!(
            e.message.contains("spec.poolRef.apiGroup: Required value"),
            "{}",
            e.message
        );
    }
    let mut v = address(p, "bad", "bad", "a", "10.9.0.11");
    v["spec"]["prefix"] = json!(33);
    v["spec"]["gateway"] = json!("nope");
    let e = api_err(addrs.create(&PostParams::default(), &dynobj(v)).await);
    assert!(
        e.message.ends_with(": [spec.prefix: Invalid value: 33: prefix is too large for an IPv4 address, spec.gateway: Invalid value: \"nope\": not a valid IP address]"),
        "{}",
        e.message
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn ipaddress_webhook_checks_pool_and_values_capi_v1_10() {
    ipaddress_webhook_checks_pool_and_values(Profile::Capi110).await;
}

#[tokio::test]
async fn ipaddress_webhook_checks_pool_and_values_capi_v1_12() {
    ipaddress_webhook_checks_pool_and_values(Profile::Capi112).await;
}

#[tokio::test]
async fn ipaddress_spec_is_immutable_but_metadata_is_not() {
    let p = Profile::Capi112;
    let tb = setup(p).await;
    let addrs = api(&tb, &addresses(p), Some(NS));
    create(&addrs, address(p, "x", "x", "a", "10.9.0.15")).await;
    let e = api_err(merge(&addrs, "x", json!({"spec": {"address": "10.9.0.16"}})).await);
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"), "{e:?}");
    assert!(
        e.message.starts_with("admission webhook \"validation.ipaddress.ipam.cluster.x-k8s.io\" denied the request: spec: Forbidden: IPAddress spec is immutable. Diff: ")
            && e.message.contains("10.9.0.16"),
        "{}",
        e.message
    );
    merge(
        &addrs,
        "x",
        json!({"metadata": {"labels": {"l": "v"}, "finalizers": [HOLD]}}),
    )
    .await
    .expect("metadata may change");
    tb.shutdown().await;
}

#[tokio::test]
async fn provider_keeps_a_precreated_address_of_the_claims_pool_capi_v1_10() {
    provider_keeps_a_precreated_address_of_the_claims_pool(Profile::Capi110).await;
}

#[tokio::test]
async fn provider_keeps_a_precreated_address_of_the_claims_pool_capi_v1_12() {
    provider_keeps_a_precreated_address_of_the_claims_pool(Profile::Capi112).await;
}

async fn provider_keeps_a_precreated_address_of_the_claims_pool(p: Profile) {
    let tb = setup(p).await;
    let addrs = api(&tb, &addresses(p), Some(NS));
    // Not the lowest free address: first-fit would pick 10.9.0.10.
    create(&addrs, address(p, "kept", "kept", "a", "10.9.0.17")).await;
    create(&api(&tb, &claims(p), Some(NS)), claim(p, "kept", "a")).await;
    assert_eq!(bound_to(&tb, p, "kept").await, "10.9.0.17");
    let a = eventually("address adopted", || async {
        addrs
            .get("kept")
            .await
            .ok()
            .filter(|a| finalizers(a).contains(&"ipam.cluster.x-k8s.io/ProtectAddress".into()))
    })
    .await;
    let owners: Vec<(String, bool)> = a
        .metadata
        .owner_references
        .unwrap_or_default()
        .into_iter()
        .map(|r| (r.kind, r.controller == Some(true)))
        .collect();
    assert_eq!(
        owners,
        vec![
            ("IPAddressClaim".to_string(), true),
            ("GlobalInClusterIPPool".to_string(), false)
        ]
    );
    // The next claim does not get the kept address.
    create(&api(&tb, &claims(p), Some(NS)), claim(p, "next", "a")).await;
    assert_eq!(bound_to(&tb, p, "next").await, "10.9.0.10");
    tb.shutdown().await;
}

#[tokio::test]
async fn claim_never_binds_to_an_address_of_another_pool() {
    let p = Profile::Capi112;
    let tb = setup(p).await;
    let addrs = api(&tb, &addresses(p), Some(NS));
    // Created before the claim exists, so the webhook has no claim to compare with.
    create(&addrs, address(p, "other", "other", "b", "10.9.1.13")).await;
    create(&api(&tb, &claims(p), Some(NS)), claim(p, "other", "a")).await;
    stays_unbound(
        &tb,
        p,
        "other",
        "the provider's patch would change an immutable spec",
    )
    .await;
    let a = addrs.get("other").await.unwrap();
    assert_eq!(a.data["spec"]["address"], "10.9.1.13", "spec untouched");
    assert_eq!(a.data["spec"]["poolRef"]["name"], "b");
    addrs
        .delete("other", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(bound_to(&tb, p, "other").await, "10.9.0.10");
    tb.shutdown().await;
}

#[tokio::test]
async fn claim_waits_for_a_terminating_address_of_its_name() {
    let p = Profile::Capi112;
    let tb = setup(p).await;
    let addrs = api(&tb, &addresses(p), Some(NS));
    let mut held = address(p, "t", "t", "a", "10.9.0.14");
    held["metadata"]["finalizers"] = json!([HOLD]);
    create(&addrs, held).await;
    addrs.delete("t", &DeleteParams::default()).await.unwrap();
    create(&api(&tb, &claims(p), Some(NS)), claim(p, "t", "a")).await;
    stays_unbound(
        &tb,
        p,
        "t",
        "ProtectAddress cannot be added to a terminating IPAddress",
    )
    .await;
    let a = addrs.get("t").await.unwrap();
    assert_eq!(finalizers(&a), vec![HOLD.to_string()]);
    merge(&addrs, "t", json!({"metadata": {"finalizers": null}}))
        .await
        .unwrap();
    assert_eq!(
        bound_to(&tb, p, "t").await,
        "10.9.0.10",
        "a fresh first-fit allocation once it is gone"
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn foreign_finalizer_keeps_a_released_address_in_use() {
    let p = Profile::Capi112;
    let tb = setup(p).await;
    let (claims, addrs) = (
        api(&tb, &claims(p), Some(NS)),
        api(&tb, &addresses(p), Some(NS)),
    );
    create(&claims, claim(p, "c1", "a")).await;
    assert_eq!(bound_to(&tb, p, "c1").await, "10.9.0.10");
    addrs
        .patch(
            "c1",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(
                    json!([{"op": "add", "path": "/metadata/finalizers/-", "value": HOLD}]),
                )
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    claims.delete("c1", &DeleteParams::default()).await.unwrap();
    eventually("claim released", || async {
        claims.get_opt("c1").await.unwrap().is_none().then_some(())
    })
    .await;
    let a = addrs.get("c1").await.expect("still there, terminating");
    assert!(a.metadata.deletion_timestamp.is_some());
    assert_eq!(finalizers(&a), vec![HOLD.to_string()]);
    create(&claims, claim(p, "c2", "a")).await;
    assert_eq!(
        bound_to(&tb, p, "c2").await,
        "10.9.0.11",
        "a terminating IPAddress still holds its address"
    );
    merge(&addrs, "c1", json!({"metadata": {"finalizers": null}}))
        .await
        .unwrap();
    eventually("address gone", || async {
        addrs.get_opt("c1").await.unwrap().is_none().then_some(())
    })
    .await;
    create(&claims, claim(p, "c3", "a")).await;
    assert_eq!(bound_to(&tb, p, "c3").await, "10.9.0.10", "freed at last");
    tb.shutdown().await;
}

#[tokio::test]
async fn terminating_object_refuses_new_finalizers_and_goes_with_the_last() {
    let p = Profile::Capi112;
    let tb = setup(p).await;
    let addrs = api(&tb, &addresses(p), Some(NS));
    let mut v = address(p, "f", "f", "a", "10.9.0.19");
    v["metadata"]["finalizers"] = json!([HOLD]);
    create(&addrs, v).await;
    addrs.delete("f", &DeleteParams::default()).await.unwrap();
    let e = api_err(
        merge(
            &addrs,
            "f",
            json!({"metadata": {"finalizers": [HOLD, "z.io/b", "a.io/a"]}}),
        )
        .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(
        e.message.ends_with("metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{\"a.io/a\", \"z.io/b\"}"),
        "{}",
        e.message
    );
    let last = merge(&addrs, "f", json!({"metadata": {"finalizers": []}}))
        .await
        .expect("removing the last finalizer");
    assert!(last.metadata.deletion_timestamp.is_some());
    assert!(
        addrs.get_opt("f").await.unwrap().is_none(),
        "gone in the same request"
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn paused_cluster_holds_back_claim_deletion() {
    let p = Profile::Capi112;
    let tb = setup(p).await;
    let (claims, addrs) = (
        api(&tb, &claims(p), Some(NS)),
        api(&tb, &addresses(p), Some(NS)),
    );
    create(&claims, claim(p, "pd", "a")).await;
    bound_to(&tb, p, "pd").await;
    let clusters = api(&tb, &clusters(p), Some(NS));
    let pause = |v: Value| {
        let clusters = clusters.clone();
        async move {
            merge(&clusters, "up", json!({"spec": {"paused": v}}))
                .await
                .unwrap();
        }
    };
    pause(json!(true)).await;
    claims.delete("pd", &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = claims.get("pd").await.expect("held by ReleaseAddress");
    assert_eq!(
        finalizers(&c),
        vec!["ipam.cluster.x-k8s.io/ReleaseAddress".to_string()]
    );
    assert!(addrs
        .get("pd")
        .await
        .unwrap()
        .metadata
        .deletion_timestamp
        .is_none());
    pause(Value::Null).await;
    eventually("released after unpause", || async {
        (claims.get_opt("pd").await.unwrap().is_none()
            && addrs.get_opt("pd").await.unwrap().is_none())
        .then_some(())
    })
    .await;
    tb.shutdown().await;
}

async fn claim_spec_is_immutable(p: Profile) {
    let tb = setup(p).await;
    let claims = api(&tb, &claims(p), Some(NS));
    create(&claims, claim(p, "im", "a")).await;
    let e = api_err(merge(&claims, "im", json!({"spec": {"poolRef": {"name": "b"}}})).await);
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"), "{e:?}");
    assert!(
        e.message.starts_with("admission webhook \"validation.ipaddressclaim.ipam.cluster.x-k8s.io\" denied the request: spec: Forbidden: IPAddressClaim spec is immutable. Diff: "),
        "{}",
        e.message
    );
    merge(&claims, "im", json!({"metadata": {"labels": {"l": "v"}}}))
        .await
        .expect("metadata may change");
    claims
        .patch_status(
            "im",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"addressRef": {"name": "elsewhere"}}})),
        )
        .await
        .expect("status writes do not go through the webhook");
    let mut bare = claim(p, "nogroup", "a");
    bare["spec"]["poolRef"]
        .as_object_mut()
        .unwrap()
        .remove("apiGroup");
    let res = claims.create(&PostParams::default(), &dynobj(bare)).await;
    if p == Profile::Capi110 {
        let e = api_err(res);
        assert!(
            e.code == 403 && e.message.ends_with("spec.poolRef.apiGroup: Invalid value: \"null\": the pool reference needs to contain a group"),
            "{e:?}"
        );
    } else {
        assert_eq!(
            api_err(res).code,
            422,
            "v1beta2: the schema requires apiGroup"
        );
    }
    tb.shutdown().await;
}

#[tokio::test]
async fn claim_spec_is_immutable_capi_v1_10() {
    claim_spec_is_immutable(Profile::Capi110).await;
}

#[tokio::test]
async fn claim_spec_is_immutable_capi_v1_12() {
    claim_spec_is_immutable(Profile::Capi112).await;
}

#[tokio::test]
async fn a_holder_address_is_in_use_for_allocation() {
    let p = Profile::Capi112;
    let tb = setup(p).await;
    let addrs = api(&tb, &addresses(p), Some(NS));
    // A holder: the pool's lowest address, for a claim that does not exist.
    create(
        &addrs,
        address(p, "holder", "vip-cp-none", "a", "10.9.0.10"),
    )
    .await;
    create(&api(&tb, &claims(p), Some(NS)), claim(p, "h1", "a")).await;
    assert_eq!(
        bound_to(&tb, p, "h1").await,
        "10.9.0.11",
        "every IPAddress referencing the pool is in use"
    );
    let pools = api(&tb, &global_pools(), None);
    eventually("pool counts the holder", || async {
        pools
            .get("a")
            .await
            .ok()
            .filter(|p| p.data.pointer("/status/ipAddresses/used") == Some(&json!(2)))
    })
    .await;
    let h = addrs.get("holder").await.unwrap();
    assert!(
        finalizers(&h).is_empty() && h.metadata.owner_references.is_none(),
        "nobody adopts a holder"
    );
    tb.shutdown().await;
}
