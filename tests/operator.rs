//! The real operator binary against the testbed: allocation end to end, in both CRD profiles where the API
//! shape matters.

mod common;

use common::{annotation, host, label, metric_value, port, variable, Env};
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use testbed::Profile;

const CP: &str = "control-plane";
const ING: &str = "ingress";
const INGRESS_VIP: &str = "vip.capi.gorizond.io/ingress-vip";

async fn cp_vip_end_to_end(profile: Profile) {
    let env = Env::start(profile).await;
    let ns = env.namespace("e2e").await;
    env.class(&ns, "gold", &["clusterVip"]).await;
    env.pool("cp-pool", &["10.10.0.10-10.10.0.20"], 24, "gold", CP)
        .await;
    let created = env.cluster(&ns, "alpha", "gold").await;

    let vip = env.wait_cp_vip(&ns, "alpha").await;
    assert_eq!(vip, "10.10.0.10", "first address of the pool");
    let c = env
        .wait_cluster(&ns, "alpha", "clusterVip", |c| {
            variable(c, "clusterVip").is_some()
        })
        .await;
    assert_eq!(port(&c), 6443);
    assert_eq!(variable(&c, "clusterVip"), Some(json!("10.10.0.10")));

    let claim = env
        .claims(&ns)
        .get("vip-cp-alpha")
        .await
        .expect("claim exists");
    let owners = claim.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].uid, created.metadata.uid.clone().unwrap());
    assert_eq!(owners[0].kind, "Cluster");
    assert_eq!(
        (owners[0].controller, owners[0].block_owner_deletion),
        (Some(true), Some(true))
    );
    let labels = claim.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("vip.capi.gorizond.io/role").map(String::as_str),
        Some(CP)
    );
    assert_eq!(
        labels
            .get("cluster.x-k8s.io/cluster-name")
            .map(String::as_str),
        Some("alpha")
    );
    assert_eq!(
        claim.data["spec"]["poolRef"],
        json!({"apiGroup": "ipam.cluster.x-k8s.io", "kind": "GlobalInClusterIPPool", "name": "cp-pool"})
    );
    assert_eq!(claim.data["spec"]["clusterName"], json!("alpha"));

    let ev = env.wait_event(&ns, "alpha", "VIPAllocated").await;
    assert_eq!(
        ev.reporting_controller.as_deref(),
        Some("capi-vip-allocator")
    );
    assert_eq!(ev.type_.as_deref(), Some("Normal"));
    // No ingress pool: told in the allocation's Event, not in an Event (let alone a Warning) of its own.
    assert_eq!(
        ev.note.as_deref(),
        Some("control-plane VIP 10.10.0.10 allocated; no ingress pool for class gold, so no ingress VIP")
    );
    assert!(env.events(&ns, "alpha", "PoolNotFound").await.is_empty());
    assert_eq!(
        ev.regarding.as_ref().and_then(|r| r.uid.clone()),
        created.metadata.uid.clone()
    );
    assert!(ev.event_time.is_some() && ev.reporting_instance.is_some());
    assert_eq!(ev.action.as_deref(), Some("AllocateVIP"));

    // Every request carried our user agent; the caches were listed once and never read per reconcile.
    let ua = format!("capi-vip-allocator/{}", env!("CARGO_PKG_VERSION"));
    let stats = env.tb.stats();
    let ours = |verb: &str| -> u64 {
        stats
            .requests
            .iter()
            .filter(|r| r.user_agent == ua && r.verb == verb)
            .map(|r| r.count)
            .sum()
    };
    assert_eq!(ours("list"), 6, "one initial LIST per watched kind");
    let gets: Vec<_> = stats
        .requests
        .iter()
        .filter(|r| r.user_agent == ua && r.verb == "get" && r.resource != "discovery")
        .collect();
    assert!(
        gets.is_empty(),
        "no GET per reconcile: everything comes from the caches: {gets:?}"
    );
    assert_eq!(ours("watch"), 6);
    let writes: Vec<(String, String)> = stats
        .writes_by(&ua)
        .filter(|w| w.resource != "events")
        .map(|w| (w.verb.clone(), w.resource.clone()))
        .collect();
    assert_eq!(
        writes,
        vec![
            ("create".to_owned(), "ipaddressclaims".to_owned()),
            ("patch".to_owned(), "clusters".to_owned()),
            ("patch".to_owned(), "ipaddresses".to_owned())
        ],
        "one claim, one Cluster patch, then our finalizer on the IPAddress; nothing else"
    );
    let patch = stats
        .writes_by(&ua)
        .find(|w| w.resource == "clusters")
        .unwrap();
    assert_eq!(
        patch.patch_type.as_deref(),
        Some("json"),
        "a JSON patch, never an update"
    );
}

#[tokio::test]
async fn control_plane_vip_end_to_end_capi_v1_12() {
    cp_vip_end_to_end(Profile::Capi112).await;
}

#[tokio::test]
async fn control_plane_vip_end_to_end_capi_v1_10() {
    cp_vip_end_to_end(Profile::Capi110).await;
}

async fn ingress_vip(profile: Profile) {
    let env = Env::start(profile).await;
    let ns = env.namespace("ingress").await;
    env.class(&ns, "gold", &["clusterVip", "ingressVip"]).await;
    env.pool("cp-pool", &["10.20.0.10-10.20.0.20"], 24, "gold", CP)
        .await;
    env.pool(
        "ing-pool",
        &["10.20.1.10-10.20.1.20"],
        24,
        "other, gold",
        ING,
    )
    .await;
    env.cluster(&ns, "web", "gold").await;
    let c = env
        .wait_cluster(&ns, "web", "ingress VIP", |c| {
            annotation(c, INGRESS_VIP).is_some() && !host(c).is_empty()
        })
        .await;
    assert_eq!(annotation(&c, INGRESS_VIP).as_deref(), Some("10.20.1.10"));
    assert_eq!(label(&c, INGRESS_VIP).as_deref(), Some("10.20.1.10"));
    assert_eq!(host(&c), "10.20.0.10");
    let c = env
        .wait_cluster(&ns, "web", "ingressVip variable", |c| {
            variable(c, "ingressVip").is_some()
        })
        .await;
    assert_eq!(variable(&c, "ingressVip"), Some(json!("10.20.1.10")));
    env.wait_event(&ns, "web", "IngressVIPAllocated").await;
    assert!(env
        .claims(&ns)
        .get_opt("vip-ingress-web")
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn ingress_vip_goes_to_annotation_label_and_variable_capi_v1_12() {
    ingress_vip(Profile::Capi112).await;
}

#[tokio::test]
async fn ingress_vip_goes_to_annotation_label_and_variable_capi_v1_10() {
    ingress_vip(Profile::Capi110).await;
}

#[tokio::test]
async fn ipv6_ingress_vip_sets_annotation_but_no_label() {
    let env = Env::start(Profile::Capi112).await;
    let ns = env.namespace("v6").await;
    env.class(&ns, "gold", &[]).await;
    env.pool("cp6", &["fd00:10::10-fd00:10::20"], 64, "gold", CP)
        .await;
    env.pool("ing6", &["fd00:20::10-fd00:20::20"], 64, "gold", ING)
        .await;
    env.cluster(&ns, "six", "gold").await;
    let c = env
        .wait_cluster(&ns, "six", "ingress VIP", |c| {
            annotation(c, INGRESS_VIP).is_some() && !host(c).is_empty()
        })
        .await;
    assert_eq!(host(&c), "fd00:10::10");
    assert_eq!(annotation(&c, INGRESS_VIP).as_deref(), Some("fd00:20::10"));
    assert_eq!(
        label(&c, INGRESS_VIP),
        None,
        "':' is not legal in a label value"
    );
}

#[tokio::test]
async fn ingress_disabled_by_annotation_claims_nothing() {
    let env = Env::start(Profile::Capi112).await;
    let ns = env.namespace("noing").await;
    env.class(&ns, "gold", &[]).await;
    env.pool("cp-pool", &["10.21.0.10-10.21.0.20"], 24, "gold", CP)
        .await;
    env.pool("ing-pool", &["10.21.1.10-10.21.1.20"], 24, "gold", ING)
        .await;
    env.cluster_with(
        &ns,
        "quiet",
        json!({"annotations": {"vip.capi.gorizond.io/ingress-enabled": "false"}}),
        json!({"topology": env.topology("gold", None, None)}),
    )
    .await;
    env.wait_cp_vip(&ns, "quiet").await;
    // A second Cluster created afterwards gets its ingress VIP: by then the first one was fully processed.
    env.cluster(&ns, "loud", "gold").await;
    env.wait_cluster(&ns, "loud", "ingress VIP", |c| {
        annotation(c, INGRESS_VIP).is_some()
    })
    .await;
    assert!(env
        .claims(&ns)
        .get_opt("vip-ingress-quiet")
        .await
        .unwrap()
        .is_none());
    let c = env.clusters(&ns).get("quiet").await.unwrap();
    assert_eq!(annotation(&c, INGRESS_VIP), None);
}

#[tokio::test]
async fn missing_ingress_pool_does_not_block_control_plane_vip() {
    let env = Env::start(Profile::Capi112).await;
    let ns = env.namespace("noingpool").await;
    env.class(&ns, "gold", &["clusterVip"]).await;
    env.pool("cp-pool", &["10.30.0.10-10.30.0.20"], 24, "gold", CP)
        .await;
    env.pool("ing-other", &["10.30.1.10-10.30.1.20"], 24, "silver", ING)
        .await;
    env.cluster(&ns, "solo", "gold").await;
    assert_eq!(env.wait_cp_vip(&ns, "solo").await, "10.30.0.10");
    assert!(env
        .claims(&ns)
        .get_opt("vip-ingress-solo")
        .await
        .unwrap()
        .is_none());
    // Adding a matching ingress pool later gives the ingress VIP without touching the Cluster.
    env.pool("ing-gold", &["10.30.2.10-10.30.2.20"], 24, "gold", ING)
        .await;
    let c = env
        .wait_cluster(&ns, "solo", "late ingress VIP", |c| {
            annotation(c, INGRESS_VIP).is_some()
        })
        .await;
    assert_eq!(annotation(&c, INGRESS_VIP).as_deref(), Some("10.30.2.10"));
    assert!(
        env.events(&ns, "solo", "PoolNotFound").await.is_empty(),
        "the missing ingress pool is told in the VIPAllocated Event"
    );
    let allocated = env.events(&ns, "solo", "VIPAllocated").await;
    assert_eq!(allocated.len(), 1);
    assert!(allocated[0]
        .note
        .as_deref()
        .is_some_and(|n| n.ends_with("; no ingress pool for class gold, so no ingress VIP")));
    env.wait_event(&ns, "solo", "IngressVIPAllocated").await;
}

#[tokio::test]
async fn restart_publishes_no_new_event_for_a_missing_ingress_pool() {
    let mut env = Env::start(Profile::Capi112).await;
    let ns = env.namespace("noingrestart").await;
    env.class(&ns, "gold", &["clusterVip"]).await;
    env.pool("cp-pool", &["10.31.0.10-10.31.0.20"], 24, "gold", CP)
        .await;
    env.cluster(&ns, "kept", "gold").await;
    env.wait_event(&ns, "kept", "VIPAllocated").await;
    let old = std::mem::replace(
        &mut env.op,
        common::Operator::spawn(env.tb.kubeconfig_path(), &[]),
    );
    let (status, _) = old.terminate().await;
    assert!(status.success());
    env.op.wait_ready().await;
    env.wait_metrics("the restarted operator reconciled the Cluster", |t| {
        metric_value(
            t,
            "capi_vip_allocator_reconcile_total{cluster_class=\"gold\",result=\"success\"}",
        )
        .is_some_and(|v| v >= 1.0)
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        env.events(&ns, "kept", "PoolNotFound").await.is_empty(),
        "{}",
        env.op.logs()
    );
    assert_eq!(env.events(&ns, "kept", "VIPAllocated").await.len(), 1);
}

async fn manual_host(profile: Profile) {
    let env = Env::start(profile).await;
    let ns = env.namespace("manual").await;
    env.class(&ns, "gold", &["clusterVip"]).await;
    env.pool("cp-pool", &["10.40.0.10-10.40.0.20"], 24, "gold", CP)
        .await;
    env.cluster_with(&ns, "hand", json!({"annotations": {"vip.capi.gorizond.io/ingress-enabled": "false"}}), json!({
        "controlPlaneEndpoint": {"host": "192.168.77.7", "port": 6443},
        "topology": env.topology("gold", None, Some(json!([{"name": "clusterVip", "value": ""}]))),
    }))
    .await;
    let c = env
        .wait_cluster(&ns, "hand", "clusterVip mirrored", |c| {
            variable(c, "clusterVip") == Some(json!("192.168.77.7"))
        })
        .await;
    assert_eq!(host(&c), "192.168.77.7");
    env.wait_event(&ns, "hand", "ManualEndpoint").await;
    assert!(
        env.claims(&ns)
            .get_opt("vip-cp-hand")
            .await
            .unwrap()
            .is_none(),
        "no claim, no IP burned"
    );
    let pool = env.pools().get("cp-pool").await.unwrap();
    assert_ne!(
        pool.data.pointer("/status/ipAddresses/used"),
        Some(&json!(1))
    );
}

#[tokio::test]
async fn manual_host_creates_no_claim_and_mirrors_cluster_vip_capi_v1_12() {
    manual_host(Profile::Capi112).await;
}

#[tokio::test]
async fn manual_host_creates_no_claim_and_mirrors_cluster_vip_capi_v1_10() {
    manual_host(Profile::Capi110).await;
}

#[tokio::test]
async fn variables_written_by_others_survive_capi_v1_12() {
    variables_written_by_others_survive(Profile::Capi112).await;
}

#[tokio::test]
async fn variables_written_by_others_survive_capi_v1_10() {
    variables_written_by_others_survive(Profile::Capi110).await;
}

async fn variables_written_by_others_survive(profile: Profile) {
    let env = Env::start(profile).await;
    let ns = env.namespace("vars").await;
    env.class(&ns, "gold", &["clusterVip", "dns", "late"]).await;
    // No pool yet: the Cluster waits, and meanwhile another writer adds a variable.
    env.cluster_with(&ns, "shared", json!({}), json!({
        "topology": env.topology("gold", None, Some(json!([{"name": "dns", "value": "10.0.0.53"}]))),
    }))
    .await;
    env.wait_event(&ns, "shared", "PoolNotFound").await;
    let add = json!([{"op": "add", "path": "/spec/topology/variables/-", "value": {"name": "late", "value": "x"}}]);
    let patch: json_patch::Patch = serde_json::from_value(add).unwrap();
    env.clusters(&ns)
        .patch("shared", &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .unwrap();
    env.pool("cp-pool", &["10.50.0.10-10.50.0.20"], 24, "gold", CP)
        .await;
    let c = env
        .wait_cluster(&ns, "shared", "clusterVip", |c| {
            variable(c, "clusterVip").is_some()
        })
        .await;
    assert_eq!(variable(&c, "dns"), Some(json!("10.0.0.53")));
    assert_eq!(variable(&c, "late"), Some(json!("x")));
    assert_eq!(variable(&c, "clusterVip"), Some(json!("10.50.0.10")));
}

async fn class_in_other_namespace(profile: Profile) {
    let env = Env::start(profile).await;
    let ns = env.namespace("team").await;
    let classes = env.namespace("classes").await;
    env.class(&classes, "gold", &["clusterVip"]).await;
    env.class(&ns, "gold", &[]).await; // same name in the Cluster's namespace, without the variable
    env.pool("cp-pool", &["10.60.0.10-10.60.0.20"], 24, "gold", CP)
        .await;
    env.cluster_with(
        &ns,
        "far",
        json!({}),
        json!({"topology": env.topology("gold", Some(&classes), None)}),
    )
    .await;
    let c = env
        .wait_cluster(&ns, "far", "clusterVip", |c| {
            variable(c, "clusterVip").is_some()
        })
        .await;
    assert_eq!(variable(&c, "clusterVip"), Some(json!(host(&c))));
}

#[tokio::test]
async fn class_in_another_namespace_is_honoured_capi_v1_12() {
    class_in_other_namespace(Profile::Capi112).await;
}

#[tokio::test]
async fn class_in_another_namespace_is_honoured_capi_v1_10() {
    class_in_other_namespace(Profile::Capi110).await;
}

#[tokio::test]
async fn missing_class_is_reported_then_resolved() {
    let env = Env::start(Profile::Capi112).await;
    let ns = env.namespace("noclass").await;
    env.pool("cp-pool", &["10.61.0.10-10.61.0.20"], 24, "ghost", CP)
        .await;
    env.cluster(&ns, "lost", "ghost").await;
    let ev = env.wait_event(&ns, "lost", "ClusterClassNotFound").await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    env.class(&ns, "ghost", &["clusterVip"]).await;
    let c = env
        .wait_cluster(&ns, "lost", "clusterVip", |c| {
            variable(c, "clusterVip").is_some()
        })
        .await;
    assert_eq!(host(&c), "10.61.0.10");
}

#[tokio::test]
async fn paused_cluster_is_untouched_until_unpaused_capi_v1_12() {
    paused_cluster_is_untouched_until_unpaused(Profile::Capi112).await;
}

#[tokio::test]
async fn paused_cluster_is_untouched_until_unpaused_capi_v1_10() {
    paused_cluster_is_untouched_until_unpaused(Profile::Capi110).await;
}

async fn paused_cluster_is_untouched_until_unpaused(profile: Profile) {
    let env = Env::start(profile).await;
    let ns = env.namespace("paused").await;
    env.class(&ns, "gold", &[]).await;
    env.pool("cp-pool", &["10.70.0.10-10.70.0.20"], 24, "gold", CP)
        .await;
    env.cluster_with(
        &ns,
        "sleepy",
        json!({}),
        json!({"paused": true, "topology": env.topology("gold", None, None)}),
    )
    .await;
    env.cluster_with(
        &ns,
        "held",
        json!({"annotations": {"cluster.x-k8s.io/paused": ""}}),
        json!({"topology": env.topology("gold", None, None)}),
    )
    .await;
    // A Cluster created after both is allocated: by then the paused ones were seen and skipped.
    env.cluster(&ns, "awake", "gold").await;
    env.wait_cp_vip(&ns, "awake").await;
    for name in ["sleepy", "held"] {
        assert!(
            env.claims(&ns)
                .get_opt(&format!("vip-cp-{name}"))
                .await
                .unwrap()
                .is_none(),
            "{name} got a claim"
        );
        assert_eq!(host(&env.clusters(&ns).get(name).await.unwrap()), "");
    }
    env.patch_cluster(&ns, "sleepy", json!({"spec": {"paused": false}}))
        .await;
    env.patch_cluster(
        &ns,
        "held",
        json!({"metadata": {"annotations": {"cluster.x-k8s.io/paused": null}}}),
    )
    .await;
    assert!(!env.wait_cp_vip(&ns, "sleepy").await.is_empty());
    assert!(!env.wait_cp_vip(&ns, "held").await.is_empty());
}

#[tokio::test]
async fn deleted_cluster_takes_claim_and_address_with_it_capi_v1_12() {
    deleted_cluster_takes_claim_and_address_with_it(Profile::Capi112).await;
}

#[tokio::test]
async fn deleted_cluster_takes_claim_and_address_with_it_capi_v1_10() {
    deleted_cluster_takes_claim_and_address_with_it(Profile::Capi110).await;
}

async fn deleted_cluster_takes_claim_and_address_with_it(profile: Profile) {
    let env = Env::start(profile).await;
    let ns = env.namespace("gc").await;
    env.class(&ns, "gold", &[]).await;
    env.pool("cp-pool", &["10.80.0.10-10.80.0.20"], 24, "gold", CP)
        .await;
    env.pool("ing-pool", &["10.80.1.10-10.80.1.20"], 24, "gold", ING)
        .await;
    env.cluster(&ns, "doomed", "gold").await;
    env.wait_cluster(&ns, "doomed", "both VIPs", |c| {
        !host(c).is_empty() && annotation(c, INGRESS_VIP).is_some()
    })
    .await;
    assert!(env
        .addresses(&ns)
        .get_opt("vip-cp-doomed")
        .await
        .unwrap()
        .is_some());
    env.delete_cluster(&ns, "doomed").await;
    for name in ["vip-cp-doomed", "vip-ingress-doomed"] {
        env.wait_gone(&env.claims(&ns), name, "claim deletion")
            .await;
        env.wait_gone(&env.addresses(&ns), name, "address deletion")
            .await;
    }
    let c = env.clusters(&ns).get_opt("doomed").await.unwrap();
    assert!(c.is_none(), "no finalizer of ours holds the Cluster");
}

async fn exhaustion(profile: Profile) {
    let env = Env::start(profile).await;
    let ns = env.namespace("full").await;
    env.class(&ns, "gold", &[]).await;
    // 10.90.0.10 only (the /24's network and broadcast are elsewhere).
    env.pool("tiny", &["10.90.0.10"], 24, "gold", CP).await;
    env.cluster_with(
        &ns,
        "first",
        json!({"annotations": {"vip.capi.gorizond.io/ingress-enabled": "false"}}),
        json!({"topology": env.topology("gold", None, None)}),
    )
    .await;
    assert_eq!(env.wait_cp_vip(&ns, "first").await, "10.90.0.10");
    env.cluster_with(
        &ns,
        "second",
        json!({"annotations": {"vip.capi.gorizond.io/ingress-enabled": "false"}}),
        json!({"topology": env.topology("gold", None, None)}),
    )
    .await;
    let ev = env.wait_event(&ns, "second", "PoolExhausted").await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert!(ev.note.unwrap_or_default().contains("tiny"));
    env.wait_metrics("PoolExhausted error", |t| {
        metric_value(t, "capi_vip_allocator_allocation_errors_total{cluster_class=\"gold\",reason=\"PoolExhausted\",role=\"control-plane\"}") == Some(1.0)
    })
    .await;
    env.wait_metrics("pool free 0", |t| {
        metric_value(
            t,
            "capi_vip_allocator_pool_addresses_free{pool_name=\"tiny\",pool_namespace=\"\"}",
        ) == Some(0.0)
    })
    .await;
    // Growing the pool releases the waiting Cluster.
    let grow = json!({"spec": {"addresses": ["10.90.0.10-10.90.0.11"]}});
    env.pools()
        .patch("tiny", &PatchParams::default(), &Patch::Merge(&grow))
        .await
        .unwrap();
    assert_eq!(env.wait_cp_vip(&ns, "second").await, "10.90.0.11");
    assert_eq!(
        env.events(&ns, "second", "PoolExhausted").await.len(),
        1,
        "no duplicate Events"
    );
}

#[tokio::test]
async fn exhausted_pool_reports_event_and_metric_capi_v1_12() {
    exhaustion(Profile::Capi112).await;
}

#[tokio::test]
async fn exhausted_pool_reports_event_and_metric_capi_v1_10() {
    exhaustion(Profile::Capi110).await;
}

#[tokio::test]
async fn claim_owned_by_someone_else_is_never_used() {
    let env = Env::start(Profile::Capi112).await;
    let ns = env.namespace("conflict").await;
    env.class(&ns, "gold", &[]).await;
    env.pool("cp-pool", &["10.95.0.10-10.95.0.20"], 24, "gold", CP)
        .await;
    // The owner must exist, or garbage collection removes the claim.
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(env.client.clone(), &ns);
    let lease = serde_json::from_value(json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "someone"}})).unwrap();
    let owner = leases.create(&PostParams::default(), &lease).await.unwrap();
    let claim = json!({
        "apiVersion": env.shapes.claim.api_version, "kind": "IPAddressClaim",
        "metadata": {"name": "vip-cp-taken", "namespace": ns, "ownerReferences": [{
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "name": "someone",
            "uid": owner.metadata.uid.unwrap(), "controller": true}]},
        "spec": {"poolRef": {"apiGroup": "ipam.cluster.x-k8s.io", "kind": "GlobalInClusterIPPool", "name": "cp-pool"}}
    });
    env.claims(&ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(claim).unwrap(),
        )
        .await
        .unwrap();
    env.cluster_with(
        &ns,
        "taken",
        json!({"annotations": {"vip.capi.gorizond.io/ingress-enabled": "false"}}),
        json!({"topology": env.topology("gold", None, None)}),
    )
    .await;
    let ev = env.wait_event(&ns, "taken", "ClaimConflict").await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    let c = env.clusters(&ns).get("taken").await.unwrap();
    assert_eq!(host(&c), "", "a foreign claim's address is never written");
    env.wait_metrics("ClaimConflict error", |t| {
        t.contains("reason=\"ClaimConflict\"")
    })
    .await;
}

#[tokio::test]
async fn ownerless_claim_is_adopted() {
    let env = Env::start(Profile::Capi112).await;
    let ns = env.namespace("adopt").await;
    env.class(&ns, "gold", &[]).await;
    env.pool("cp-pool", &["10.96.0.10-10.96.0.20"], 24, "gold", CP)
        .await;
    let claim = json!({
        "apiVersion": env.shapes.claim.api_version, "kind": "IPAddressClaim",
        "metadata": {"name": "vip-cp-orphan", "namespace": ns, "labels": {"cluster.x-k8s.io/cluster-name": "orphan"}},
        "spec": {"poolRef": {"apiGroup": "ipam.cluster.x-k8s.io", "kind": "GlobalInClusterIPPool", "name": "cp-pool"}, "clusterName": "orphan"}
    });
    env.claims(&ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(claim).unwrap(),
        )
        .await
        .unwrap();
    let cluster = env
        .cluster_with(
            &ns,
            "orphan",
            json!({"annotations": {"vip.capi.gorizond.io/ingress-enabled": "false"}}),
            json!({"topology": env.topology("gold", None, None)}),
        )
        .await;
    env.wait_cp_vip(&ns, "orphan").await;
    let claim = env.claims(&ns).get("vip-cp-orphan").await.unwrap();
    let owners = claim.metadata.owner_references.unwrap_or_default();
    assert_eq!(owners.len(), 1);
    assert_eq!(Some(owners[0].uid.clone()), cluster.metadata.uid);
}

#[tokio::test]
async fn every_seed_metric_is_live_after_an_allocation() {
    let env = Env::start(Profile::Capi112).await;
    let ns = env.namespace("metrics").await;
    env.class(&ns, "gold", &["clusterVip"]).await;
    env.pool("cp-pool", &["10.97.0.10-10.97.0.20"], 24, "gold", CP)
        .await;
    env.cluster(&ns, "measured", "gold").await; // no ingress pool: PoolNotFound (ingress) is not an error
    env.cluster(&ns, "nopool", "silver-missing").await; // class missing: an error with a reason
    env.wait_cp_vip(&ns, "measured").await;
    env.wait_event(&ns, "nopool", "ClusterClassNotFound").await;
    let text = env
        .wait_metrics("all families", |t| {
            t.contains("capi_vip_allocator_allocation_errors_total{")
                && t.contains("capi_vip_allocator_allocations_total{")
        })
        .await;
    let expect = [
        "capi_vip_allocator_allocations_total{cluster_class=\"gold\",role=\"control-plane\"}",
        "capi_vip_allocator_allocation_errors_total{cluster_class=\"silver-missing\",reason=\"ClusterClassNotFound\",role=\"control-plane\"}",
        "capi_vip_allocator_allocation_duration_seconds_count{cluster_class=\"gold\",role=\"control-plane\"}",
        "capi_vip_allocator_pools_available{cluster_class=\"gold\",role=\"control-plane\"}",
        "capi_vip_allocator_pool_addresses_total{pool_name=\"cp-pool\",pool_namespace=\"\"}",
        "capi_vip_allocator_pool_addresses_free{pool_name=\"cp-pool\",pool_namespace=\"\"}",
        "capi_vip_allocator_pool_addresses_used{pool_name=\"cp-pool\",pool_namespace=\"\"}",
        "capi_vip_allocator_claims_total{namespace=\"",
        "capi_vip_allocator_claims_ready{namespace=\"",
        "capi_vip_allocator_claims_pending{namespace=\"",
        "capi_vip_allocator_reconcile_total{cluster_class=\"gold\",result=\"success\"}",
        "capi_vip_allocator_reconcile_duration_seconds_count{cluster_class=\"gold\"}",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
    ];
    for prefix in expect {
        assert!(
            metric_value(&text, prefix).is_some(),
            "missing {prefix}\n{text}"
        );
    }
    assert_eq!(
        metric_value(
            &text,
            "capi_vip_allocator_allocations_total{cluster_class=\"gold\",role=\"control-plane\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &text,
            "capi_vip_allocator_pools_available{cluster_class=\"gold\",role=\"control-plane\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &text,
            "capi_vip_allocator_pool_addresses_total{pool_name=\"cp-pool\",pool_namespace=\"\"}"
        ),
        Some(11.0)
    );
    assert_eq!(
        metric_value(
            &text,
            "capi_vip_allocator_pool_addresses_used{pool_name=\"cp-pool\",pool_namespace=\"\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &text,
            &format!(
                "capi_vip_allocator_claims_ready{{namespace=\"{ns}\",role=\"control-plane\"}}"
            )
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &text,
            &format!(
                "capi_vip_allocator_claims_pending{{namespace=\"{ns}\",role=\"control-plane\"}}"
            )
        ),
        Some(0.0)
    );
    assert!(metric_value(&text, "process_resident_memory_bytes").unwrap() > 0.0);
}

#[tokio::test]
async fn allocation_survives_server_errors_watch_cuts_and_expired_watches() {
    let env = Env::start(Profile::Capi112).await;
    let ns = env.namespace("faults").await;
    env.class(&ns, "gold", &["clusterVip"]).await;
    let names = ["f1", "f2", "f3", "f4"];
    for name in names {
        env.cluster_with(
            &ns,
            name,
            json!({"annotations": {"vip.capi.gorizond.io/ingress-enabled": "false"}}),
            json!({"topology": env.topology("gold", None, None)}),
        )
        .await;
    }
    for name in names {
        env.wait_event(&ns, name, "PoolNotFound").await;
    }
    // From now on a third of the creates and patches fail, and every watch is cut and must resume.
    let faults = env.tb.faults();
    faults.set_error_rate("create", 0.3, 503);
    faults.set_error_rate("patch", 0.3, 500);
    faults.cut_watches();
    faults.force_next_watch_gone();
    loop {
        let body = json!({
            "apiVersion": env.shapes.global_pool.api_version, "kind": "GlobalInClusterIPPool",
            "metadata": {"name": "cp-pool", "labels": {"vip.capi.gorizond.io/cluster-class": "gold", "vip.capi.gorizond.io/role": CP}},
            "spec": {"addresses": ["10.99.0.10-10.99.0.30"], "prefix": 24}
        });
        match env
            .pools()
            .create(
                &PostParams::default(),
                &serde_json::from_value(body).unwrap(),
            )
            .await
        {
            Ok(_) => break,
            Err(kube::Error::Api(s)) if s.code == 503 => continue,
            Err(e) => panic!("create pool: {e}"),
        }
    }
    let mut vips = std::collections::BTreeSet::new();
    for name in names {
        let c = env
            .wait_cluster(&ns, name, "clusterVip", |c| {
                variable(c, "clusterVip").is_some()
            })
            .await;
        assert_eq!(variable(&c, "clusterVip"), Some(json!(host(&c))));
        vips.insert(host(&c));
    }
    assert_eq!(vips.len(), names.len(), "no VIP handed out twice");
    faults.clear();
    let claims = env.claims(&ns).list(&Default::default()).await.unwrap();
    assert_eq!(
        claims.items.len(),
        names.len(),
        "exactly one claim per Cluster despite retries"
    );
}

#[tokio::test]
async fn refused_cluster_patch_is_reported_once_and_retried_on_change() {
    let env = Env::start(Profile::Capi112).await;
    let ns = env.namespace("refused").await;
    env.class(&ns, "gold", &["clusterVip"]).await;
    env.pool("cp-pool", &["10.98.0.10-10.98.0.20"], 24, "gold", CP)
        .await;
    // Every PATCH is refused as invalid (as a webhook rejecting the value would).
    env.tb.faults().set_error_rate("patch", 1.0, 422);
    env.cluster_with(
        &ns,
        "stubborn",
        json!({"annotations": {"vip.capi.gorizond.io/ingress-enabled": "false"}}),
        json!({"topology": env.topology("gold", None, None)}),
    )
    .await;
    let ev = env.wait_event(&ns, "stubborn", "PatchFailed").await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    env.wait_metrics("PatchFailed error", |t| {
        metric_value(
            t,
            "capi_vip_allocator_allocation_errors_total{cluster_class=\"gold\",reason=\"PatchFailed\",role=\"control-plane\"}",
        ) == Some(1.0)
    })
    .await;
    // The user fixes the cause and touches the Cluster: the change triggers a new attempt.
    env.tb.faults().clear();
    env.patch_cluster(
        &ns,
        "stubborn",
        json!({"metadata": {"labels": {"fixed": "yes"}}}),
    )
    .await;
    assert_eq!(env.wait_cp_vip(&ns, "stubborn").await, "10.98.0.10");
    let events = env.events(&ns, "stubborn", "PatchFailed").await;
    assert_eq!(events.len(), 1);
    assert!(
        events[0].series.is_none(),
        "one Event for the refusal, not one per retry"
    );
}
