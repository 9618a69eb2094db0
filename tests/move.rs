//! `clusterctl move` between two management clusters (two testbeds, an operator on each), emulated by
//! `testbed::clusterctl` the way clusterctl does it (see the testbed README). No VIP may change, no claim may be
//! deleted or created, and a new Cluster in the target gets a fresh address.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{host, Env};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DynamicObject, ListParams};
use serde_json::Value;
use testbed::{clusterctl, Profile, TestbedOptions};

const CLUSTERS: usize = 50;
const OPERATOR_AGENT: &str = "capi-vip-allocator/";

fn operator_writes(env: &Env, since: u64, resource: &str, verbs: &[&str]) -> Vec<String> {
    env.tb
        .stats_since(since)
        .writes
        .iter()
        .filter(|w| {
            w.user_agent.starts_with(OPERATOR_AGENT)
                && w.resource == resource
                && verbs.contains(&w.verb.as_str())
        })
        .map(|w| format!("{} {}/{}", w.verb, w.namespace, w.name))
        .collect()
}

#[tokio::test]
async fn move_keeps_every_vip_and_writes_no_claim() {
    let source = Env::start(Profile::Capi112).await;
    // The in-cluster provider works through its queue one claim at a time: give the target's simulated provider
    // a reaction time, so the operator sees the moved claims without status (as it would on a real cluster).
    let target = Env::start_opts(
        Profile::Capi112,
        TestbedOptions {
            ipam_delay: std::time::Duration::from_millis(40),
            // Another seed: equal seeds generate equal uids, which would hide a missed owner-reference rewrite.
            seed: 2,
            ..TestbedOptions::profile(Profile::Capi112)
        },
        &[],
    )
    .await;
    let ns = source.namespace("mv").await;
    source.class(&ns, "mv", &["clusterVip", "ingressVip"]).await;
    source
        .pool(
            "mv-cp",
            &["10.220.0.10-10.220.0.250"],
            24,
            "mv",
            "control-plane",
        )
        .await;
    source
        .pool("mv-ing", &["10.220.1.10-10.220.1.250"], 24, "mv", "ingress")
        .await;
    let names: Vec<String> = (0..CLUSTERS).map(|i| format!("c{i:02}")).collect();
    for n in &names {
        source.cluster(&ns, n, "mv").await;
    }
    let mut before = BTreeMap::new();
    for n in &names {
        let vip = source.wait_cp_vip(&ns, n).await;
        let c = source
            .wait_cluster(&ns, n, "ingress VIP", |c| {
                common::annotation(c, "vip.capi.gorizond.io/ingress-vip").is_some()
            })
            .await;
        before.insert(
            n.clone(),
            (
                vip,
                common::annotation(&c, "vip.capi.gorizond.io/ingress-vip"),
            ),
        );
    }

    // clusterctl move: pause, copy (owners first), delete the source side, unpause.
    let source_seq = source.tb.stats().writes.last().map_or(0, |w| w.seq);
    let target_seq = target.tb.stats().writes.last().map_or(0, |w| w.seq);
    let report = clusterctl::move_namespace(&source.client, &target.client, &ns)
        .await
        .expect("clusterctl move");
    let created = clusterctl::count_by_kind(&report.created);
    assert_eq!(created.get("IPAddressClaim"), Some(&(2 * CLUSTERS)));
    assert_eq!(created.get("IPAddress"), Some(&(2 * CLUSTERS)));
    assert_eq!(created.get("Cluster"), Some(&CLUSTERS));
    assert_eq!(created.get("GlobalInClusterIPPool"), Some(&2));
    assert_eq!(
        clusterctl::count_by_kind(&report.deleted).get("IPAddressClaim"),
        Some(&(2 * CLUSTERS))
    );
    // IPAddresses are owned by a global pool too: clusterctl leaves them in the source.
    assert_eq!(
        clusterctl::count_by_kind(&report.kept_in_source).get("IPAddress"),
        Some(&(2 * CLUSTERS))
    );

    // Every claim is bound again in the target, to the same address, and every VIP is unchanged.
    let target_claims: Api<DynamicObject> = target.claims(&ns);
    for n in &names {
        for claim in [format!("vip-cp-{n}"), format!("vip-ingress-{n}")] {
            let waited = tokio::time::timeout(
                common::WAIT,
                kube::runtime::wait::await_condition(
                    target_claims.clone(),
                    &claim,
                    |o: Option<&DynamicObject>| {
                        o.is_some_and(|c| c.data.pointer("/status/addressRef/name").is_some())
                    },
                ),
            )
            .await;
            assert!(
                matches!(waited, Ok(Ok(_))),
                "{claim} bound again\n{}",
                target.op.logs()
            );
        }
    }
    // Give both operators time to act on everything they saw.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    for n in &names {
        let c = target.clusters(&ns).get(n).await.unwrap();
        let ingress = common::annotation(&c, "vip.capi.gorizond.io/ingress-vip");
        assert_eq!(
            (host(&c), ingress),
            before[n].clone(),
            "{n}: VIPs unchanged"
        );
    }
    let target_addresses = target
        .addresses(&ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let by_claim: BTreeMap<String, String> = target_addresses
        .iter()
        .map(|a| {
            (
                a.metadata.name.clone().unwrap_or_default(),
                a.data
                    .pointer("/spec/address")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    for n in &names {
        assert_eq!(
            by_claim.get(&format!("vip-cp-{n}")),
            Some(&before[n].0),
            "{n}"
        );
    }
    assert_eq!(
        operator_writes(
            &target,
            target_seq,
            "ipaddressclaims",
            &["create", "delete", "patch"]
        ),
        Vec::<String>::new(),
        "the target operator neither creates, deletes nor touches a moved claim"
    );
    assert_eq!(
        operator_writes(&target, target_seq, "clusters", &["patch", "update"]),
        Vec::<String>::new(),
        "moved Clusters carry their VIPs and provenance: nothing to write"
    );
    assert_eq!(
        operator_writes(&source, source_seq, "ipaddressclaims", &["create"]),
        Vec::<String>::new(),
        "the source operator creates nothing for Clusters being moved away"
    );
    let events: Api<Event> = Api::namespaced(target.client.clone(), &ns);
    let warnings: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .map(|e| format!("{:?}: {:?}", e.reason, e.note))
        .collect();
    assert!(
        warnings.is_empty(),
        "no Warning in the target: {warnings:?}"
    );

    // A new Cluster in the target gets an address no moved Cluster holds.
    target.cluster(&ns, "fresh", "mv").await;
    let fresh = target.wait_cp_vip(&ns, "fresh").await;
    let moved: BTreeSet<&String> = before.values().map(|(cp, _)| cp).collect();
    assert!(
        !moved.contains(&fresh),
        "fresh VIP {fresh} is not a moved one"
    );
    source.tb.shutdown().await;
    target.tb.shutdown().await;
}
