//! `--pool-allowlist`: a pool that is not listed is ignored even when its labels claim the class, so whoever can
//! label a GlobalInClusterIPPool cannot capture the class's VIPs.

mod common;

use common::{invariants::Invariants, Env};
use serde_json::json;
use testbed::Profile;

const CP: &str = "control-plane";

#[tokio::test]
async fn pools_outside_the_allowlist_are_never_used() {
    let env = Env::start_with(Profile::Capi112, &["--pool-allowlist=official-pool, other"]).await;
    let ns = env.namespace("allow").await;
    env.class(&ns, "gold", &[]).await;
    env.class(&ns, "silver", &[]).await;
    // "a-rogue" sorts first, so without the allow-list it would be chosen for gold.
    env.pool("a-rogue", &["10.66.6.1-10.66.6.9"], 24, "gold,silver", CP)
        .await;
    env.pool("official-pool", &["10.77.0.10-10.77.0.20"], 24, "gold", CP)
        .await;
    let inv = Invariants::new(env.client.clone(), env.shapes.clone()).await;
    for (name, class) in [("g", "gold"), ("s", "silver")] {
        env.cluster_with(
            &ns,
            name,
            json!({"annotations": {"vip.capi.gorizond.io/ingress-enabled": "false"}}),
            json!({"topology": env.topology(class, None, None)}),
        )
        .await;
    }
    assert_eq!(env.wait_cp_vip(&ns, "g").await, "10.77.0.10");
    let claim = env.claims(&ns).get("vip-cp-g").await.unwrap();
    assert_eq!(
        claim.data["spec"]["poolRef"]["name"],
        json!("official-pool")
    );
    // Only the rogue pool lists silver: for the operator there is no pool.
    let ev = env.wait_event(&ns, "s", "PoolNotFound").await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    env.wait_metrics("PoolNotFound for silver", |t| {
        t.lines().any(|l| {
            l.starts_with("capi_vip_allocator_allocation_errors_total{")
                && l.contains("cluster_class=\"silver\"")
                && l.contains("reason=\"PoolNotFound\"")
        })
    })
    .await;
    assert!(env.claims(&ns).get_opt("vip-cp-s").await.unwrap().is_none());
    let (summary, _) = inv
        .wait_allocated(&|c| c.metadata.name.as_deref() == Some("g"), common::WAIT)
        .await;
    assert_eq!((summary.duplicates, summary.orphans), (0, 0));
}
