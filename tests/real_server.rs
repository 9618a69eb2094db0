//! The operator against the testbed's real-server behaviours (on by default): JSON-patch `test` compared as
//! kube-apiserver compares it, CAPI's variable webhook, Event validation. Each test fails on an operator that
//! relies on a kinder server (see the issue "Correct on a real API server").

mod common;

use std::time::Duration;

use common::{annotation, host, variable, Env, Operator};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use testbed::{Profile, TestbedOptions};

const OPERATOR_AGENT: &str = "capi-vip-allocator/";

/// The operator on a testbed whose simulated IPAM provider is off: the test plays the provider.
async fn env_without_ipam(profile: Profile) -> Env {
    let opts = TestbedOptions {
        ipam: false,
        ..TestbedOptions::profile(profile)
    };
    Env::start_opts(profile, opts, &[]).await
}

/// Creates a ClusterClass whose variables have these schemas.
async fn class_with(env: &Env, ns: &str, name: &str, variables: &[(&str, Value)]) {
    let variables: Vec<Value> = variables
        .iter()
        .map(|(n, schema)| json!({"name": n, "required": false, "schema": {"openAPIV3Schema": schema}}))
        .collect();
    let body = json!({
        "apiVersion": env.shapes.cluster_class.api_version, "kind": "ClusterClass",
        "metadata": {"name": name, "namespace": ns}, "spec": {"variables": variables}
    });
    let api: Api<DynamicObject> =
        Api::namespaced_with(env.client.clone(), ns, &env.shapes.cluster_class);
    api.create(
        &PostParams::default(),
        &serde_json::from_value(body).unwrap(),
    )
    .await
    .expect("create ClusterClass");
}

/// A testbed and operator with one namespace holding ClusterClass `class` (variables with these schemas) and a
/// pool per `(role, range)` listing the class.
async fn bed(class: &str, variables: &[(&str, Value)], pools: &[(&str, &str)]) -> (Env, String) {
    let env = Env::start(Profile::Capi112).await;
    let ns = env.namespace(&format!("rs-{class}")).await;
    class_with(&env, &ns, class, variables).await;
    for (role, range) in pools {
        env.pool(&format!("rs-{class}-{role}"), &[range], 24, class, role)
            .await;
    }
    (env, ns)
}

/// The operator's writes to Cluster `name` so far (successful or refused).
fn cluster_writes(env: &Env, name: &str) -> usize {
    env.tb
        .stats()
        .writes
        .iter()
        .filter(|w| {
            w.user_agent.starts_with(OPERATOR_AGENT) && w.resource == "clusters" && w.name == name
        })
        .count()
}

/// Waits until `cond` holds for the object `name` (absent: `None`).
async fn wait_object(
    api: &Api<DynamicObject>,
    name: &str,
    what: &str,
    cond: impl Fn(Option<&DynamicObject>) -> bool + Send + 'static,
    op: &Operator,
) {
    let waited = tokio::time::timeout(
        common::WAIT,
        kube::runtime::wait::await_condition(api.clone(), name, cond),
    )
    .await;
    assert!(
        matches!(waited, Ok(Ok(_))),
        "timed out waiting for {what} ({name}): {waited:?}\n{}",
        op.logs()
    );
}

fn note(e: &Event) -> &str {
    e.note.as_deref().unwrap_or_default()
}

/// Other variables holding `&&`, `<`, `>` and `&`: kube-apiserver compares `test` leaves as the raw bytes Go wrote
/// (`\u0026`…), so a guard testing them can never pass. The VIP must arrive all the same, next to an existing
/// empty `clusterVip` entry and when our entry is appended.
#[tokio::test]
async fn html_characters_in_other_variables_do_not_stop_the_vip() {
    for profile in [Profile::Capi112, Profile::Capi110] {
        let env = Env::start(profile).await;
        let ns = env.namespace("rs-html").await;
        let string = json!({"type": "string"});
        class_with(
            &env,
            &ns,
            "html",
            &[
                ("clusterVip", string.clone()),
                ("cmd", string.clone()),
                ("url", string),
            ],
        )
        .await;
        env.pool(
            "rs-html-cp",
            &["10.210.0.10-10.210.0.20"],
            24,
            "html",
            "control-plane",
        )
        .await;
        let others = json!([
            {"name": "cmd", "value": "make all && ./run < in.txt > out.txt"},
            {"name": "url", "value": "https://example.test/?a=1&b=2"}
        ]);
        let mut with_entry = others.clone();
        with_entry
            .as_array_mut()
            .unwrap()
            .insert(1, json!({"name": "clusterVip", "value": ""}));
        for (name, variables) in [("appended", others), ("in-place", with_entry)] {
            env.cluster_with(
                &ns,
                name,
                json!({}),
                json!({"topology": env.topology("html", None, Some(variables))}),
            )
            .await;
            let vip = env.wait_cp_vip(&ns, name).await;
            let c = env
                .wait_cluster(&ns, name, "clusterVip", |c| {
                    variable(c, "clusterVip").is_some()
                })
                .await;
            assert_eq!(
                variable(&c, "clusterVip"),
                Some(json!(vip)),
                "{profile:?} {name}"
            );
            assert_eq!(
                variable(&c, "cmd"),
                Some(json!("make all && ./run < in.txt > out.txt")),
                "{profile:?} {name}: other entries untouched"
            );
            assert!(
                env.events(&ns, name, "PatchFailed").await.is_empty(),
                "{profile:?} {name}"
            );
        }
        env.tb.shutdown().await;
    }
}

/// CAPI refuses a `clusterVip` that does not fit the class's schema, for a Cluster whose name contains "test":
/// one `PatchFailed` Event that carries the webhook's message, no tight retry loop, no write of the host without it.
#[tokio::test]
async fn refused_variable_is_one_patch_failed_event_and_bounded_retries() {
    let (env, ns) = bed(
        "intvar",
        &[("clusterVip", json!({"type": "integer"}))],
        &[("control-plane", "10.210.1.10-10.210.1.20")],
    )
    .await;
    env.cluster(&ns, "test-web", "intvar").await;
    let e = env.wait_event(&ns, "test-web", "PatchFailed").await;
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    assert!(note(&e).contains("clusterVip"), "{}", note(&e));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(env.events(&ns, "test-web", "PatchFailed").await.len(), 1);
    let writes = cluster_writes(&env, "test-web");
    assert!(
        (1..=4).contains(&writes),
        "a refusal is retried rarely, not in a loop: {writes} writes in 5 s\n{}",
        env.op.logs()
    );
    let c = env.clusters(&ns).get("test-web").await.unwrap();
    assert_eq!(host(&c), "", "the refused patch wrote nothing");
    let metrics = env
        .wait_metrics("PatchFailed counted", |m| {
            m.contains(r#"reason="PatchFailed""#) && m.contains(r#"role="control-plane""#)
        })
        .await;
    assert!(metrics.contains("capi_vip_allocator_allocation_errors_total"));
    env.tb.shutdown().await;
}

/// An ingress variable the class types `format: ipv6`, with IPv4 pools: CAPI refuses the ingress write; the
/// control-plane VIP (host and `clusterVip`) is written regardless, and the refusal is told and counted for the
/// ingress role.
#[tokio::test]
async fn refused_ingress_write_does_not_block_the_control_plane() {
    let (env, ns) = bed(
        "v6ing",
        &[
            ("clusterVip", json!({"type": "string", "format": "ipv4"})),
            ("ingressVip", json!({"type": "string", "format": "ipv6"})),
        ],
        &[
            ("control-plane", "10.210.2.10-10.210.2.20"),
            ("ingress", "10.210.3.10-10.210.3.20"),
        ],
    )
    .await;
    env.cluster(&ns, "c", "v6ing").await;
    let vip = env.wait_cp_vip(&ns, "c").await;
    let c = env
        .wait_cluster(&ns, "c", "clusterVip", |c| {
            variable(c, "clusterVip").is_some()
        })
        .await;
    assert_eq!(variable(&c, "clusterVip"), Some(json!(vip)));
    let e = env.wait_event(&ns, "c", "PatchFailed").await;
    assert!(note(&e).contains("ingressVip"), "{}", note(&e));
    let c = env.clusters(&ns).get("c").await.unwrap();
    assert_eq!(annotation(&c, "vip.capi.gorizond.io/ingress-vip"), None);
    env.wait_metrics("ingress PatchFailed", |m| {
        m.lines().any(|l| {
            l.starts_with("capi_vip_allocator_allocation_errors_total")
                && l.contains(r#"reason="PatchFailed""#)
                && l.contains(r#"role="ingress""#)
        })
    })
    .await;
    assert_eq!(env.events(&ns, "c", "VIPAllocated").await.len(), 1);
    env.tb.shutdown().await;
}

/// A webhook refusal longer than an Event may carry (1 KiB on a real server): the Event is cut, not lost.
#[tokio::test]
async fn long_refusal_is_told_in_a_cut_event() {
    let allowed: Vec<String> = (0..80)
        .map(|i| format!("allowed-endpoint-value-{i:03}"))
        .collect();
    let (env, ns) = bed(
        "longmsg",
        &[("clusterVip", json!({"type": "string", "enum": allowed}))],
        &[("control-plane", "10.210.4.10-10.210.4.20")],
    )
    .await;
    env.cluster(&ns, "c", "longmsg").await;
    let e = env.wait_event(&ns, "c", "PatchFailed").await;
    assert!(note(&e).len() <= 1024, "{}", note(&e).len());
    assert!(
        note(&e).ends_with("[truncated]"),
        "the refusal was longer than an Event holds: {}",
        note(&e)
    );
    assert!(note(&e).contains("clusterVip"), "{}", note(&e));
    assert!(
        env.op.logs().contains("allowed-endpoint-value-079"),
        "the whole message stays in the log"
    );
    env.tb.shutdown().await;
}

/// An IPAddress the claim names but that does not name the claim back, or comes from another pool, is never
/// written: Warning `AddressInvalid`. The real allocation, once there, is.
#[tokio::test]
async fn forged_ipaddress_is_refused() {
    let env = env_without_ipam(Profile::Capi112).await;
    let ns = env.namespace("rs-forge").await;
    env.class(&ns, "forge", &["clusterVip"]).await;
    env.pool(
        "rs-forge-cp",
        &["10.210.5.10-10.210.5.20"],
        24,
        "forge",
        "control-plane",
    )
    .await;
    env.cluster(&ns, "c", "forge").await;
    let claim = "vip-cp-c";
    let claims = env.claims(&ns);
    wait_object(&claims, claim, "claim", |o| o.is_some(), &env.op).await;
    let address = |claim_ref: &str, pool: &str, ip: &str| {
        serde_json::from_value::<DynamicObject>(json!({
            "apiVersion": env.shapes.address.api_version, "kind": "IPAddress",
            "metadata": {"name": claim, "namespace": ns},
            "spec": {"address": ip, "prefix": 24, "claimRef": {"name": claim},
                     "poolRef": {"apiGroup": "ipam.cluster.x-k8s.io", "kind": "GlobalInClusterIPPool", "name": pool}}
        }))
        .map(|mut a| {
            a.data["spec"]["claimRef"]["name"] = json!(claim_ref);
            a
        })
        .unwrap()
    };
    let addresses = env.addresses(&ns);
    // CAPI's IPAddress webhook refuses an IPAddress whose claim exists with another pool; one naming a claim that
    // does not exist passes it (the webhook then checks no pool).
    let refused = addresses
        .create(
            &PostParams::default(),
            &address(claim, "attacker-pool", "10.66.66.66"),
        )
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403),
        "{refused:?}"
    );
    addresses
        .create(
            &PostParams::default(),
            &address("vip-cp-ghost", "attacker-pool", "10.66.66.66"),
        )
        .await
        .unwrap();
    claims
        .patch_status(
            claim,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"addressRef": {"name": claim}}})),
        )
        .await
        .unwrap();
    let e = env.wait_event(&ns, "c", "AddressInvalid").await;
    assert!(note(&e).contains("vip-cp-ghost"), "{}", note(&e));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = env.clusters(&ns).get("c").await.unwrap();
    assert_eq!(host(&c), "", "a forged address is never written");

    // Deletes the IPAddress named like the claim and creates `next` in its place.
    let replace = |next: DynamicObject| {
        let (addresses, op) = (&addresses, &env.op);
        async move {
            addresses.delete(claim, &Default::default()).await.unwrap();
            wait_object(addresses, claim, "old IPAddress gone", |o| o.is_none(), op).await;
            addresses
                .create(&PostParams::default(), &next)
                .await
                .unwrap();
        }
    };

    // Another claim's address, from the right pool: still refused.
    replace(address("vip-cp-other", "rs-forge-cp", "10.210.5.10")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(host(&env.clusters(&ns).get("c").await.unwrap()), "");

    // The genuine answer is written.
    replace(address(claim, "rs-forge-cp", "10.210.5.11")).await;
    assert_eq!(env.wait_cp_vip(&ns, "c").await, "10.210.5.11");
    env.tb.shutdown().await;
}

/// A hand-set ingress annotation behaves like a hand-set host: our pending ingress claim is withdrawn (no address
/// burned) and a Normal `ManualEndpoint` names the ingress role.
#[tokio::test]
async fn manual_ingress_annotation_withdraws_the_pending_claim() {
    let env = env_without_ipam(Profile::Capi112).await;
    let ns = env.namespace("rs-maning").await;
    env.class(&ns, "maning", &["clusterVip", "ingressVip"])
        .await;
    env.pool(
        "rs-maning-cp",
        &["10.210.6.10-10.210.6.20"],
        24,
        "maning",
        "control-plane",
    )
    .await;
    env.pool(
        "rs-maning-ing",
        &["10.210.7.10-10.210.7.20"],
        24,
        "maning",
        "ingress",
    )
    .await;
    env.cluster(&ns, "c", "maning").await;
    let claims = env.claims(&ns);
    wait_object(
        &claims,
        "vip-ingress-c",
        "ingress claim",
        |o| o.is_some(),
        &env.op,
    )
    .await;
    env.patch_cluster(
        &ns,
        "c",
        json!({"metadata": {"annotations": {"vip.capi.gorizond.io/ingress-vip": "192.168.77.7"}}}),
    )
    .await;
    env.wait_gone(&claims, "vip-ingress-c", "withdrawn ingress claim")
        .await;
    let e = env.wait_event(&ns, "c", "ManualEndpoint").await;
    assert!(
        note(&e).contains("192.168.77.7") && note(&e).contains("ingress"),
        "{}",
        note(&e)
    );
    let c = env
        .wait_cluster(&ns, "c", "ingressVip mirrored", |c| {
            variable(c, "ingressVip").is_some()
        })
        .await;
    assert_eq!(variable(&c, "ingressVip"), Some(json!("192.168.77.7")));
    assert!(
        claims.get_opt("vip-cp-c").await.unwrap().is_some(),
        "the control plane still waits"
    );
    env.tb.shutdown().await;
}

/// An API server that accepts Event creates and never answers them (a stuck proxy, an overloaded aggregator):
/// Events are told in the background, so 40 Clusters all get their VIPs, promptly.
#[tokio::test]
async fn black_holed_events_never_hold_back_a_vip() {
    let env = Env::start(Profile::Capi112).await;
    let ns = env.namespace("rs-bh").await;
    env.class(&ns, "bh", &["clusterVip"]).await;
    env.pool(
        "rs-bh-cp",
        &["10.210.8.10-10.210.8.250"],
        24,
        "bh",
        "control-plane",
    )
    .await;
    env.tb.faults().black_hole("create", Some("events"));
    let started = std::time::Instant::now();
    let names: Vec<String> = (0..40).map(|i| format!("c{i:02}")).collect();
    for n in &names {
        env.cluster(&ns, n, "bh").await;
    }
    let mut vips = std::collections::BTreeSet::new();
    for n in &names {
        vips.insert(env.wait_cp_vip(&ns, n).await);
    }
    assert_eq!(vips.len(), names.len(), "40 distinct VIPs");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "Events that never return must not delay the VIPs: {:?}",
        started.elapsed()
    );
    // Each Event is sent after its VIP's patch, in the background: give the last ones a moment to go out.
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while env.tb.stats().requests_for("create", "events") < 40 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "every VIPAllocated Event was attempted: {} of 40",
            env.tb.stats().requests_for("create", "events")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.tb.faults().clear();
    env.tb.shutdown().await;
}

/// Two Clusters answering for one address (hand-set hosts, different namespaces): each gets Warning
/// `DuplicateVIP` naming the other, the gauge counts the address, and moving one away clears the gauge.
#[tokio::test]
async fn clusters_sharing_a_host_are_told_on_each_side() {
    let env = Env::start(Profile::Capi112).await;
    let (a, b) = (
        env.namespace("rs-dup-a").await,
        env.namespace("rs-dup-b").await,
    );
    for ns in [&a, &b] {
        env.class(ns, "dup", &[]).await;
    }
    let manual = |host: &str| json!({"topology": env.topology("dup", None, None), "controlPlaneEndpoint": {"host": host, "port": 6443}});
    env.cluster_with(&a, "one", json!({}), manual("192.168.40.4"))
        .await;
    env.cluster_with(&b, "two", json!({}), manual("192.168.40.4"))
        .await;
    let e = env.wait_event(&a, "one", "DuplicateVIP").await;
    assert!(note(&e).contains(&format!("{b}/two")), "{}", note(&e));
    let e = env.wait_event(&b, "two", "DuplicateVIP").await;
    assert!(note(&e).contains(&format!("{a}/one")), "{}", note(&e));
    env.wait_metrics("one duplicated host", |m| {
        common::metric_value(m, "capi_vip_allocator_duplicate_vips") == Some(1.0)
    })
    .await;
    env.patch_cluster(
        &b,
        "two",
        json!({"spec": {"controlPlaneEndpoint": {"host": "192.168.40.5"}}}),
    )
    .await;
    env.wait_metrics("no duplicated host", |m| {
        common::metric_value(m, "capi_vip_allocator_duplicate_vips") == Some(0.0)
    })
    .await;
    assert_eq!(
        env.events(&a, "one", "DuplicateVIP").await.len(),
        1,
        "told once"
    );
    env.tb.shutdown().await;
}
