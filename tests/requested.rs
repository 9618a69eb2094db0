//! "Give this cluster exactly 10.0.4.20": a requested address is reserved exactly (the IPAM provider agrees, later
//! Clusters never get it); one that cannot be had is a Warning and no claim.

mod common;

use common::Env;
use serde_json::json;
use testbed::Profile;

const CP: &str = "control-plane";
const ASK: &str = "vip.capi.gorizond.io/control-plane-address";

async fn asking(env: &Env, ns: &str, name: &str, ip: &str) {
    env.gold_cp_only_cluster(ns, name, json!({ ASK: ip })).await;
}

#[tokio::test]
async fn a_requested_address_is_reserved_exactly_and_never_handed_to_another() {
    let env = Env::start(Profile::Capi112).await;
    let ns = env.namespace("ask").await;
    env.class(&ns, "gold", &[]).await;
    env.pool("ask-pool", &["10.74.0.10-10.74.0.12"], 24, "gold", CP)
        .await;
    asking(&env, &ns, "exact", "10.74.0.10").await;
    assert_eq!(env.wait_cp_vip(&ns, "exact").await, "10.74.0.10");
    let claim = env.claims(&ns).get("vip-cp-exact").await.unwrap();
    assert_eq!(
        claim.data.pointer("/status/addressRef/name"),
        Some(&json!("vip-cp-exact")),
        "the IPAM provider took our IPAddress as the claim's allocation"
    );
    env.wait_protected(&ns, "vip-cp-exact").await;
    // First fit, lowest free: without the reservation the next Cluster would get .10.
    env.gold_cp_only_cluster(&ns, "next", json!({})).await;
    assert_eq!(env.wait_cp_vip(&ns, "next").await, "10.74.0.11");

    // Taken (by "exact"), outside every pool: Warning, no claim.
    asking(&env, &ns, "taken", "10.74.0.10").await;
    asking(&env, &ns, "outside", "192.168.74.1").await;
    for (name, why) in [("taken", "already holds"), ("outside", "no candidate pool")] {
        let e = env.wait_event(&ns, name, "AddressUnavailable").await;
        assert!(
            e.note.as_deref().unwrap_or_default().contains(why),
            "{name}: {e:?}"
        );
        assert!(
            env.claims(&ns)
                .get_opt(&format!("vip-cp-{name}"))
                .await
                .unwrap()
                .is_none(),
            "{name}: no claim, no other address"
        );
    }
    // A changed annotation after allocation is refused; the VIP stays.
    env.patch_cluster(
        &ns,
        "exact",
        json!({"metadata": {"annotations": {ASK: "10.74.0.12"}}}),
    )
    .await;
    env.wait_event(&ns, "exact", "AddressUnavailable").await;
    assert_eq!(
        common::host(&env.clusters(&ns).get("exact").await.unwrap()),
        "10.74.0.10"
    );
}
