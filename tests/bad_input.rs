//! Bad-input matrix: one operator serves every case at once, each case in its own namespace with its own class
//! and pool (own address range), asserting its own Event reason and metric; at the end a fresh Cluster still gets
//! its VIP and the invariant checker runs over everything.
//!
//! Cases already covered elsewhere (not repeated here): ClusterClass missing then created
//! (`operator.rs::missing_class_is_reported_then_resolved`), claim owned by another object (`ClaimConflict`,
//! `operator.rs::claim_owned_by_someone_else_is_never_used`), exhausted pool (`operator.rs::exhaustion`), IPv6
//! ingress VIP (`operator.rs::ipv6_ingress_vip_sets_annotation_but_no_label`), manual endpoint
//! (`ManualEndpoint`), paused Clusters, a refused Cluster patch (`PatchFailed`), `ingress-enabled: "false"`,
//! an unreachable API server at start (`reliability_shutdown.rs`).

mod common;

use std::{sync::Arc, time::Duration};

use common::{annotation, host, invariants::Invariants, port, variable, Env};
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use testbed::Profile;

const CP: &str = "control-plane";
const ING: &str = "ingress";
const ERRORS: &str = "capi_vip_allocator_allocation_errors_total";
const ALLOCATIONS: &str = "capi_vip_allocator_allocations_total";
const RECONCILES: &str = "capi_vip_allocator_reconcile_total";
const CLASS_LABEL: &str = "vip.capi.gorizond.io/cluster-class";
const ROLE_LABEL: &str = "vip.capi.gorizond.io/role";
/// Clusters labelled so the invariant checker expects a control-plane VIP on them.
const WANTS_VIP: &str = "test.gorizond.io/wants-vip";

/// Whether a sample of `name` with all `labels` has a value > 0.
fn has_metric(text: &str, name: &str, labels: &[(&str, &str)]) -> bool {
    text.lines().any(|l| {
        l.starts_with(&format!("{name}{{"))
            && labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            && l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v > 0.0)
    })
}

async fn wait_metric(env: &Env, case: &str, name: &str, labels: &[(&str, &str)]) {
    env.wait_metrics(&format!("[{case}] {name} {labels:?}"), |t| {
        has_metric(t, name, labels)
    })
    .await;
}

async fn error_reported(env: &Env, case: &str, ns: &str, cluster: &str, class: &str, reason: &str) {
    let ev = env.wait_event(ns, cluster, reason).await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"), "[{case}] {ev:?}");
    wait_metric(
        env,
        case,
        ERRORS,
        &[("cluster_class", class), ("reason", reason)],
    )
    .await;
}

async fn allocated(env: &Env, case: &str, ns: &str, cluster: &str, class: &str) -> String {
    let vip = env.wait_cp_vip(ns, cluster).await;
    env.wait_event(ns, cluster, "VIPAllocated").await;
    wait_metric(
        env,
        case,
        ALLOCATIONS,
        &[("cluster_class", class), ("role", CP)],
    )
    .await;
    vip
}

/// Creates a GlobalInClusterIPPool with exactly these labels, annotations and addresses.
async fn raw_pool(
    env: &Env,
    name: &str,
    labels: Value,
    annotations: Value,
    addresses: Value,
    prefix: u8,
) {
    let body = json!({
        "apiVersion": env.shapes.global_pool.api_version, "kind": "GlobalInClusterIPPool",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {"addresses": addresses, "prefix": prefix}
    });
    env.pools()
        .create(
            &PostParams::default(),
            &serde_json::from_value(body).unwrap(),
        )
        .await
        .unwrap_or_else(|e| panic!("create pool {name}: {e}"));
}

/// A Cluster of `class` (ingress off unless `meta` says otherwise), marked as wanting a VIP or not.
async fn cluster(env: &Env, ns: &str, name: &str, class: &str, wants_vip: bool, meta: Value) {
    let mut metadata = json!({
        "labels": {WANTS_VIP: wants_vip.to_string()},
        "annotations": {"vip.capi.gorizond.io/ingress-enabled": "false"}
    });
    if let Some(a) = meta.get("annotations").and_then(Value::as_object) {
        for (k, v) in a {
            metadata["annotations"][k] = v.clone();
        }
    }
    env.cluster_with(
        ns,
        name,
        metadata,
        json!({"topology": env.topology(class, None, None)}),
    )
    .await;
}

fn cp_labels(class: &str) -> Value {
    json!({CLASS_LABEL: class, ROLE_LABEL: CP})
}

fn listed(list: &str) -> (Value, Value) {
    (
        json!({CLASS_LABEL: "true", ROLE_LABEL: CP}),
        json!({CLASS_LABEL: list}),
    )
}

// ---- the cases ----

/// Case 1: Pools whose `addresses` hold nothing allocatable are ignored: alone, the Cluster is told no pool serves
/// it (and is not left waiting on a claim nobody can answer); next to a valid pool that sorts after it, the valid
/// one is used.
async fn pool_with_malformed_addresses(env: Arc<Env>) {
    let (case, class) = ("malformed-addresses", "bi-malformed");
    let ns = env.namespace(class).await;
    env.class(&ns, class, &[]).await;
    raw_pool(
        &env,
        "bi-malformed-a",
        cp_labels(class),
        json!({}),
        json!(["10.200.1.300", "not-an-ip"]),
        24,
    )
    .await;
    cluster(&env, &ns, "m", class, false, json!({})).await;
    error_reported(&env, case, &ns, "m", class, "PoolNotFound").await;
    assert!(
        env.claims(&ns).get_opt("vip-cp-m").await.unwrap().is_none(),
        "[{case}] no claim on a broken pool"
    );

    let class = "bi-malformed-2";
    env.class(&ns, class, &[]).await;
    raw_pool(
        &env,
        "bi-malformed-b1",
        cp_labels(class),
        json!({}),
        json!(["10.200.1.9-10.200.1.1"]),
        24,
    )
    .await;
    raw_pool(
        &env,
        "bi-malformed-b2",
        cp_labels(class),
        json!({}),
        json!(["10.200.1.10-10.200.1.20"]),
        24,
    )
    .await;
    cluster(&env, &ns, "m2", class, true, json!({})).await;
    assert_eq!(allocated(&env, case, &ns, "m2", class).await, "10.200.1.10");
}

/// Case 2–4: Class lists with empty items, spaces and a trailing comma still match the class.
async fn class_lists_with_empty_items_spaces_and_trailing_commas(env: Arc<Env>) {
    for (i, (case, list)) in [
        ("empty-items", ",,bi-list-0,,"),
        ("spaces", "  other ,  bi-list-1  "),
        ("trailing-comma", "other,bi-list-2,"),
    ]
    .into_iter()
    .enumerate()
    {
        let class = format!("bi-list-{i}");
        let ns = env.namespace(&class).await;
        env.class(&ns, &class, &[]).await;
        let (labels, annotations) = listed(list);
        raw_pool(
            &env,
            &class,
            labels,
            annotations,
            json!([format!("10.200.{}.10-10.200.{}.20", 2 + i, 2 + i)]),
            24,
        )
        .await;
        cluster(&env, &ns, "l", &class, true, json!({})).await;
        let vip = allocated(&env, case, &ns, "l", &class).await;
        assert!(
            vip.starts_with(&format!("10.200.{}.", 2 + i)),
            "[{case}] {vip}"
        );
    }
}

/// Case 5: Class label `"true"` without the annotation holding the list: the pool serves nothing.
async fn true_label_without_annotation(env: Arc<Env>) {
    let (case, class) = ("true-without-annotation", "bi-true");
    let ns = env.namespace(class).await;
    env.class(&ns, class, &[]).await;
    raw_pool(
        &env,
        "bi-true",
        json!({CLASS_LABEL: "true", ROLE_LABEL: CP}),
        json!({}),
        json!(["10.200.5.10-10.200.5.20"]),
        24,
    )
    .await;
    cluster(&env, &ns, "t", class, false, json!({})).await;
    error_reported(&env, case, &ns, "t", class, "PoolNotFound").await;
}

/// Case 6: A pool without the role label serves no role; class names are case-sensitive.
async fn pool_without_role_label_and_case_mismatch(env: Arc<Env>) {
    let ns = env.namespace("bi-role").await;
    env.class(&ns, "bi-norole", &[]).await;
    raw_pool(
        &env,
        "bi-norole",
        json!({CLASS_LABEL: "bi-norole"}),
        json!({}),
        json!(["10.200.6.10-10.200.6.20"]),
        24,
    )
    .await;
    cluster(&env, &ns, "r", "bi-norole", false, json!({})).await;
    error_reported(&env, "no-role-label", &ns, "r", "bi-norole", "PoolNotFound").await;

    env.class(&ns, "bi-case", &[]).await;
    raw_pool(
        &env,
        "bi-case",
        cp_labels("BI-CASE"),
        json!({}),
        json!(["10.200.7.10-10.200.7.20"]),
        24,
    )
    .await;
    cluster(&env, &ns, "c", "bi-case", false, json!({})).await;
    error_reported(
        &env,
        "class-case-mismatch",
        &ns,
        "c",
        "bi-case",
        "PoolNotFound",
    )
    .await;
}

/// Case 7: `classRef.namespace` naming a namespace that does not exist.
async fn class_namespace_missing(env: Arc<Env>) {
    let (case, class) = ("class-namespace-missing", "bi-nsclass");
    let ns = env.namespace(class).await;
    raw_pool(
        &env,
        "bi-nsclass",
        cp_labels(class),
        json!({}),
        json!(["10.200.8.10-10.200.8.20"]),
        24,
    )
    .await;
    env.cluster_with(
        &ns,
        "n",
        json!({"labels": {WANTS_VIP: "false"}}),
        json!({"topology": env.topology(class, Some("bi-no-such-namespace"), None)}),
    )
    .await;
    error_reported(&env, case, &ns, "n", class, "ClusterClassNotFound").await;
}

/// Case 8: Our claim exists (left by a crash, ownerless) but points at a pool that was deleted: it is adopted, replaced
/// on the live pool, and the Cluster gets its VIP.
async fn claim_pointing_to_a_deleted_pool(env: Arc<Env>) {
    let (case, class) = ("claim-on-deleted-pool", "bi-stale");
    let ns = env.namespace(class).await;
    env.class(&ns, class, &[]).await;
    raw_pool(
        &env,
        "bi-stale",
        cp_labels(class),
        json!({}),
        json!(["10.200.9.10-10.200.9.20"]),
        24,
    )
    .await;
    let claim = json!({
        "apiVersion": env.shapes.claim.api_version, "kind": "IPAddressClaim",
        "metadata": {"name": "vip-cp-s", "namespace": ns},
        "spec": {"poolRef": {"apiGroup": "ipam.cluster.x-k8s.io", "kind": "GlobalInClusterIPPool", "name": "bi-vanished"}}
    });
    env.claims(&ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(claim).unwrap(),
        )
        .await
        .unwrap();
    cluster(&env, &ns, "s", class, true, json!({})).await;
    let ev = env.wait_event(&ns, "s", "ClaimReplaced").await;
    assert_eq!(ev.type_.as_deref(), Some("Normal"), "[{case}]");
    let vip = allocated(&env, case, &ns, "s", class).await;
    assert!(vip.starts_with("10.200.9."), "[{case}] {vip}");
    let claim = env.claims(&ns).get("vip-cp-s").await.unwrap();
    assert_eq!(
        claim.data["spec"]["poolRef"]["name"],
        json!("bi-stale"),
        "[{case}]"
    );
}

/// Case 9: IPv6 control-plane VIP (the endpoint host is a bare IPv6 address).
async fn ipv6_control_plane(env: Arc<Env>) {
    let (case, class) = ("ipv6-control-plane", "bi-v6");
    let ns = env.namespace(class).await;
    env.class(&ns, class, &["clusterVip"]).await;
    raw_pool(
        &env,
        "bi-v6",
        cp_labels(class),
        json!({}),
        json!(["fd00:200::10-fd00:200::20"]),
        64,
    )
    .await;
    cluster(&env, &ns, "six", class, true, json!({})).await;
    let vip = allocated(&env, case, &ns, "six", class).await;
    assert_eq!(vip, "fd00:200::10", "[{case}]");
    let c = env
        .wait_cluster(&ns, "six", "clusterVip", |c| {
            variable(c, "clusterVip").is_some()
        })
        .await;
    assert_eq!(variable(&c, "clusterVip"), Some(json!("fd00:200::10")));
}

/// Case 10: `controlPlaneEndpoint.port` already set (no host): the VIP is claimed, the user's port is kept.
async fn port_already_set(env: Arc<Env>) {
    let (case, class) = ("port-already-set", "bi-port");
    let ns = env.namespace(class).await;
    env.class(&ns, class, &[]).await;
    raw_pool(
        &env,
        "bi-port",
        cp_labels(class),
        json!({}),
        json!(["10.200.10.10-10.200.10.20"]),
        24,
    )
    .await;
    env.cluster_with(
        &ns,
        "p",
        json!({"labels": {WANTS_VIP: "true"}, "annotations": {"vip.capi.gorizond.io/ingress-enabled": "false"}}),
        json!({"topology": env.topology(class, None, None), "controlPlaneEndpoint": {"port": 7443}}),
    )
    .await;
    allocated(&env, case, &ns, "p", class).await;
    assert_eq!(
        port(&env.clusters(&ns).get("p").await.unwrap()),
        7443,
        "[{case}]"
    );
}

/// Case 11: A Cluster without topology is skipped: no claim, no Event, a `skipped` reconcile.
async fn cluster_without_topology(env: Arc<Env>) {
    let case = "no-topology";
    let ns = env.namespace("bi-notopo").await;
    env.cluster_with(
        &ns,
        "plain",
        json!({}),
        json!({"clusterNetwork": {"serviceDomain": "cluster.local"}}),
    )
    .await;
    wait_metric(
        &env,
        case,
        RECONCILES,
        &[("cluster_class", ""), ("result", "skipped")],
    )
    .await;
    // Give it time to (wrongly) act, then check it did not.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        env.claims(&ns)
            .get_opt("vip-cp-plain")
            .await
            .unwrap()
            .is_none(),
        "[{case}]"
    );
    assert!(
        env.events(&ns, "plain", "PoolNotFound").await.is_empty(),
        "[{case}]"
    );
    assert_eq!(host(&env.clusters(&ns).get("plain").await.unwrap()), "");
}

/// Case 12–14: One-address pools: a Cluster deleted while its claim is pending leaves nothing behind; a pool deleted
/// while a claim is pending makes the Cluster report PoolNotFound; a pool that is grown lets the waiting Cluster
/// through without a restart.
async fn pending_claims(env: Arc<Env>) {
    // Deleted while pending.
    let class = "bi-delpending";
    let ns = env.namespace(class).await;
    env.class(&ns, class, &[]).await;
    raw_pool(
        &env,
        class,
        cp_labels(class),
        json!({}),
        json!(["10.200.12.1"]),
        24,
    )
    .await;
    cluster(&env, &ns, "first", class, true, json!({})).await;
    allocated(&env, "deleted-while-pending", &ns, "first", class).await;
    cluster(&env, &ns, "second", class, false, json!({})).await;
    error_reported(
        &env,
        "deleted-while-pending",
        &ns,
        "second",
        class,
        "PoolExhausted",
    )
    .await;
    env.delete_cluster(&ns, "second").await;
    env.wait_gone(&env.clusters(&ns), "second", "Cluster deleted")
        .await;
    env.wait_gone(&env.claims(&ns), "vip-cp-second", "pending claim removed")
        .await;

    // Grown.
    let class = "bi-grow";
    let ns = env.namespace(class).await;
    env.class(&ns, class, &[]).await;
    raw_pool(
        &env,
        class,
        cp_labels(class),
        json!({}),
        json!(["10.200.13.1"]),
        24,
    )
    .await;
    cluster(&env, &ns, "first", class, true, json!({})).await;
    allocated(&env, "exhausted-then-grown", &ns, "first", class).await;
    cluster(&env, &ns, "second", class, true, json!({})).await;
    error_reported(
        &env,
        "exhausted-then-grown",
        &ns,
        "second",
        class,
        "PoolExhausted",
    )
    .await;
    env.pools()
        .patch(
            class,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"addresses": ["10.200.13.1-10.200.13.2"]}})),
        )
        .await
        .unwrap();
    assert_eq!(env.wait_cp_vip(&ns, "second").await, "10.200.13.2");

    // Pool deleted while a claim is pending.
    let class = "bi-poolgone";
    let ns = env.namespace(class).await;
    env.class(&ns, class, &[]).await;
    raw_pool(
        &env,
        class,
        cp_labels(class),
        json!({}),
        json!(["10.200.14.1"]),
        24,
    )
    .await;
    cluster(&env, &ns, "first", class, true, json!({})).await;
    allocated(&env, "pool-deleted-while-pending", &ns, "first", class).await;
    cluster(&env, &ns, "second", class, false, json!({})).await;
    error_reported(
        &env,
        "pool-deleted-while-pending",
        &ns,
        "second",
        class,
        "PoolExhausted",
    )
    .await;
    env.pools()
        .delete(class, &Default::default())
        .await
        .unwrap();
    error_reported(
        &env,
        "pool-deleted-while-pending",
        &ns,
        "second",
        class,
        "PoolNotFound",
    )
    .await;
    assert_eq!(host(&env.clusters(&ns).get("second").await.unwrap()), "");
}

/// Case 15: Two Clusters with the same name in two namespaces get two different VIPs and two claims.
async fn same_name_in_two_namespaces(env: Arc<Env>) {
    let (case, class) = ("same-name-two-namespaces", "bi-twin");
    raw_pool(
        &env,
        class,
        cp_labels(class),
        json!({}),
        json!(["10.200.15.10-10.200.15.20"]),
        24,
    )
    .await;
    let ns1 = env.namespace(class).await;
    let ns2 = env.namespace(class).await;
    for ns in [&ns1, &ns2] {
        env.class(ns, class, &[]).await;
        cluster(&env, ns, "twin", class, true, json!({})).await;
    }
    let a = allocated(&env, case, &ns1, "twin", class).await;
    let b = allocated(&env, case, &ns2, "twin", class).await;
    assert_ne!(a, b, "[{case}]");
    for ns in [&ns1, &ns2] {
        assert!(env
            .claims(ns)
            .get_opt("vip-cp-twin")
            .await
            .unwrap()
            .is_some());
    }
}

/// Case 16: A class name far longer than a label value may be (the pool lists it in the annotation).
async fn very_long_class_name(env: Arc<Env>) {
    let case = "very-long-class-name";
    let class = format!("bi-{}", "long-class-name-".repeat(14))
        .trim_end_matches('-')
        .to_owned();
    assert!(class.len() > 200);
    let ns = env.namespace("bi-long").await;
    env.class(&ns, &class, &[]).await;
    let (labels, annotations) = listed(&format!("other,{class}"));
    raw_pool(
        &env,
        "bi-long",
        labels,
        annotations,
        json!(["10.200.16.10-10.200.16.20"]),
        24,
    )
    .await;
    cluster(&env, &ns, "long", &class, true, json!({})).await;
    allocated(&env, case, &ns, "long", &class).await;
}

/// Case 17: No `variables` anywhere (class and Cluster): the VIP is written, no variables list appears.
async fn variables_absent(env: Arc<Env>) {
    let (case, class) = ("variables-absent", "bi-novars");
    let ns = env.namespace(class).await;
    env.class(&ns, class, &[]).await;
    raw_pool(
        &env,
        class,
        cp_labels(class),
        json!({}),
        json!(["10.200.17.10-10.200.17.20"]),
        24,
    )
    .await;
    cluster(&env, &ns, "v", class, true, json!({})).await;
    allocated(&env, case, &ns, "v", class).await;
    let c = env.clusters(&ns).get("v").await.unwrap();
    assert_eq!(c.data.pointer("/spec/topology/variables"), None, "[{case}]");
}

// Case 18 (a `clusterVip` of a non-string schema) is in tests/real_server.rs: CAPI's webhook refuses the write.

/// Case 19: `ingress-enabled` with odd values: only the exact string `false` turns ingress off; anything else
/// (`False`, `no`, `0`, empty) leaves it on, as in the Go operator.
async fn ingress_enabled_odd_values(env: Arc<Env>) {
    let (case, class) = ("ingress-enabled-odd-values", "bi-ingodd");
    let ns = env.namespace(class).await;
    env.class(&ns, class, &[]).await;
    raw_pool(
        &env,
        "bi-ingodd-cp",
        cp_labels(class),
        json!({}),
        json!(["10.200.19.10-10.200.19.30"]),
        24,
    )
    .await;
    raw_pool(
        &env,
        "bi-ingodd-ing",
        json!({CLASS_LABEL: class, ROLE_LABEL: ING}),
        json!({}),
        json!(["10.200.20.10-10.200.20.30"]),
        24,
    )
    .await;
    let values = [
        ("upper", "False"),
        ("no", "no"),
        ("zero", "0"),
        ("empty", ""),
        ("exact", "false"),
    ];
    for (name, value) in values {
        cluster(
            &env,
            &ns,
            name,
            class,
            true,
            json!({"annotations": {"vip.capi.gorizond.io/ingress-enabled": value}}),
        )
        .await;
    }
    for (name, value) in values {
        env.wait_cp_vip(&ns, name).await;
        if value == "false" {
            continue;
        }
        let c = env
            .wait_cluster(&ns, name, "ingress VIP", |c| {
                annotation(c, "vip.capi.gorizond.io/ingress-vip").is_some()
            })
            .await;
        assert!(
            annotation(&c, "vip.capi.gorizond.io/ingress-vip")
                .is_some_and(|v| v.starts_with("10.200.20.")),
            "[{case}] {value:?}"
        );
        env.wait_event(&ns, name, "IngressVIPAllocated").await;
    }
    wait_metric(
        &env,
        case,
        ALLOCATIONS,
        &[("cluster_class", class), ("role", ING)],
    )
    .await;
    assert!(
        env.claims(&ns)
            .get_opt("vip-ingress-exact")
            .await
            .unwrap()
            .is_none(),
        "[{case}]"
    );
}

/// Case 21: the IPAddress answering our claim holds no IP (`spec.address` is a string the CRD admits but no
/// address parser does): Warning `AddressInvalid` + metric, nothing written; once our claim is deleted (as the Warning
/// says) the operator creates it again, the IPAM provider allocates anew and the Cluster gets a real VIP.
async fn ipaddress_with_an_invalid_address(env: Arc<Env>) {
    let (case, class) = ("invalid-ipaddress", "bi-badaddr");
    let ns = env.namespace(class).await;
    env.class(&ns, class, &["clusterVip"]).await;
    raw_pool(
        &env,
        "bi-badaddr",
        cp_labels(class),
        json!({}),
        json!(["10.200.21.10-10.200.21.20"]),
        24,
    )
    .await;
    // Left behind under our claim's name (a broken provider or a hand-made object): the provider keeps an
    // existing IPAddress of that name and points the claim at it.
    let broken = json!({
        "apiVersion": env.shapes.address.api_version, "kind": "IPAddress",
        "metadata": {"name": "vip-cp-bad", "namespace": ns},
        "spec": {"address": "10.200.21.999", "prefix": 24, "claimRef": {"name": "vip-cp-bad"},
                 "poolRef": {"apiGroup": "ipam.cluster.x-k8s.io", "kind": "GlobalInClusterIPPool", "name": "bi-badaddr"}}
    });
    env.addresses(&ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(broken).unwrap(),
        )
        .await
        .unwrap_or_else(|e| panic!("[{case}] create broken IPAddress: {e}"));
    cluster(&env, &ns, "bad", class, true, json!({})).await;
    error_reported(&env, case, &ns, "bad", class, "AddressInvalid").await;
    let c = env.clusters(&ns).get("bad").await.unwrap();
    assert_eq!(
        host(&c),
        "",
        "[{case}] nothing written from a broken IPAddress"
    );
    // As the Warning says: the claim, not the IPAddress (the provider's finalizer keeps that until its claim goes).
    env.claims(&ns)
        .delete("vip-cp-bad", &Default::default())
        .await
        .unwrap_or_else(|e| panic!("[{case}] delete the claim: {e}"));
    let vip = allocated(&env, case, &ns, "bad", class).await;
    assert!(vip.starts_with("10.200.21."), "[{case}] {vip}");
}

/// Case 21 needs an IPAddress CAPI's webhook refuses: it can only exist when the webhook was down when it was
/// written (or predates it), so this testbed runs without it.
#[tokio::test]
async fn ipaddress_written_while_the_webhook_was_down() {
    let opts = testbed::TestbedOptions {
        capi_ipam_webhook: false,
        ..testbed::TestbedOptions::profile(Profile::Capi112)
    };
    ipaddress_with_an_invalid_address(Arc::new(Env::start_opts(Profile::Capi112, opts, &[]).await))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_matrix() {
    let env = Arc::new(Env::start(Profile::Capi112).await);
    let inv = Invariants::new(env.client.clone(), env.shapes.clone()).await;
    let cases: Vec<(&str, tokio::task::JoinHandle<()>)> = vec![
        (
            "pools with malformed addresses",
            tokio::spawn(pool_with_malformed_addresses(env.clone())),
        ),
        (
            "class lists: empty items, spaces, trailing comma",
            tokio::spawn(class_lists_with_empty_items_spaces_and_trailing_commas(
                env.clone(),
            )),
        ),
        (
            "\"true\" label without annotation",
            tokio::spawn(true_label_without_annotation(env.clone())),
        ),
        (
            "pool without role label; class case mismatch",
            tokio::spawn(pool_without_role_label_and_case_mismatch(env.clone())),
        ),
        (
            "class namespace missing",
            tokio::spawn(class_namespace_missing(env.clone())),
        ),
        (
            "claim pointing to a deleted pool",
            tokio::spawn(claim_pointing_to_a_deleted_pool(env.clone())),
        ),
        (
            "IPv6 control-plane VIP",
            tokio::spawn(ipv6_control_plane(env.clone())),
        ),
        (
            "controlPlaneEndpoint.port already set",
            tokio::spawn(port_already_set(env.clone())),
        ),
        (
            "Cluster without topology",
            tokio::spawn(cluster_without_topology(env.clone())),
        ),
        (
            "pending claims: Cluster deleted, pool grown, pool deleted",
            tokio::spawn(pending_claims(env.clone())),
        ),
        (
            "same name in two namespaces",
            tokio::spawn(same_name_in_two_namespaces(env.clone())),
        ),
        (
            "very long class name",
            tokio::spawn(very_long_class_name(env.clone())),
        ),
        (
            "variables list absent",
            tokio::spawn(variables_absent(env.clone())),
        ),
        (
            "ingress-enabled odd values",
            tokio::spawn(ingress_enabled_odd_values(env.clone())),
        ),
    ];
    let mut failed = Vec::new();
    for (name, handle) in cases {
        if let Err(e) = handle.await {
            failed.push(format!("{name}: {e}"));
        }
    }
    assert!(failed.is_empty(), "failed cases:\n{}", failed.join("\n"));

    // The operator still serves a new, ordinary Cluster after all of the above.
    let ns = env.namespace("bi-canary").await;
    env.class(&ns, "bi-canary", &[]).await;
    raw_pool(
        &env,
        "bi-canary",
        cp_labels("bi-canary"),
        json!({}),
        json!(["10.200.99.10-10.200.99.20"]),
        24,
    )
    .await;
    cluster(&env, &ns, "canary", "bi-canary", true, json!({})).await;
    allocated(&env, "canary", &ns, "canary", "bi-canary").await;

    let wants = |c: &DynamicObject| {
        c.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(WANTS_VIP))
            .is_some_and(|v| v == "true")
    };
    let (summary, _) = inv.wait_allocated(&wants, common::WAIT).await;
    assert_eq!((summary.duplicates, summary.orphans), (0, 0));
}
