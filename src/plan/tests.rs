//! Tests of the decision for each situation.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::DynamicObject;
use serde_json::{json, Value};

use super::*;
use crate::{
    api::{AddressView, ClaimView, ClassView, ClusterView, PoolView},
    names::{
        ANNOTATION_CONTROL_PLANE_CLAIM, ANNOTATION_DELETE_FOR_MOVE, ANNOTATION_INGRESS_CLAIM,
        ANNOTATION_INGRESS_ENABLED, ANNOTATION_INGRESS_VIP, LABEL_CLUSTER_CLASS, LABEL_ROLE,
    },
};

pub(crate) fn cluster_json() -> Value {
    json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
        "metadata": {"name": "c1", "namespace": "ns", "uid": "uid-1", "resourceVersion": "5"},
        "spec": {"topology": {"classRef": {"name": "gold"}, "version": "v1.33.0"}}
    })
}

pub(crate) fn cluster(v: Value) -> ClusterView {
    let obj: DynamicObject = serde_json::from_value(v).unwrap();
    ClusterView::parse(&obj).unwrap()
}

pub(crate) fn class(vars: &[&str]) -> ClassView {
    ClassView {
        name: "gold".into(),
        namespace: "ns".into(),
        variables: vars
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<BTreeSet<_>>(),
    }
}

pub(crate) fn pool(name: &str, roles: &str, free: Option<i64>) -> PoolView {
    PoolView {
        group: crate::names::IPAM_GROUP.into(),
        kind: "GlobalInClusterIPPool".into(),
        name: name.into(),
        namespace: None,
        labels: [
            (LABEL_CLUSTER_CLASS.to_owned(), "gold".to_owned()),
            (LABEL_ROLE.to_owned(), roles.to_owned()),
        ]
        .into_iter()
        .collect(),
        annotations: Default::default(),
        total: Some(10),
        free,
        used: Some(0),
        deleting: false,
        addresses: None,
        prefix: None,
        gateway: None,
    }
}

pub(crate) fn claim(role: Role, owner_uid: Option<&str>, pool: &str, bound: bool) -> ClaimView {
    let name = role.claim_name("c1");
    ClaimView {
        name: name.clone(),
        namespace: "ns".into(),
        uid: format!("claim-{name}"),
        pool_ref: Some(PoolRef {
            api_group: "ipam.cluster.x-k8s.io".into(),
            kind: "GlobalInClusterIPPool".into(),
            name: pool.into(),
        }),
        address_ref: bound.then(|| name.clone()),
        created: Some("2026-01-01T00:00:00Z".parse().unwrap()),
        deleting: false,
        role_label: Some(role.label().into()),
        resource_version: "1".into(),
        owner_references: owner_uid
            .map(|u| OwnerReference {
                api_version: "cluster.x-k8s.io/v1beta2".into(),
                kind: "Cluster".into(),
                name: "c1".into(),
                uid: u.into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            })
            .into_iter()
            .collect(),
        moving: false,
    }
}

pub(crate) fn address(role: Role, ip: &str) -> AddressView {
    AddressView {
        name: role.claim_name("c1"),
        namespace: "ns".into(),
        address: ip.parse().unwrap(),
        claim_name: Some(role.claim_name("c1")),
        pool_ref: Some(PoolRef {
            api_group: "ipam.cluster.x-k8s.io".into(),
            kind: "GlobalInClusterIPPool".into(),
            name: if role == Role::ControlPlane {
                "cp-pool"
            } else {
                "ing-pool"
            }
            .into(),
        }),
        prefix: Some(24),
        gateway: Some("10.0.0.1".into()),
        uid: format!("addr-{}", role.claim_name("c1")),
        resource_version: "3".into(),
        finalizers: vec!["ipam.cluster.x-k8s.io/ProtectAddress".into()],
        deleting: false,
        cluster_label: Some("c1".into()),
        moving: false,
        claim_owned: true,
    }
}

pub(crate) fn snap(c: Value) -> Snapshot {
    Snapshot {
        cluster: cluster(c),
        class: Some(class(&["clusterVip"])),
        pools: vec![
            pool("cp-pool", "control-plane", Some(5)),
            pool("ing-pool", "ingress", Some(5)),
        ],
        control_plane: RoleInputs::default(),
        ingress: RoleInputs::default(),
        default_port: 6443,
        now: "2026-01-01T00:01:00Z".parse().unwrap(),
        caches_synced: true,
        same_host: Vec::new(),
        answering: Default::default(),
        pending_claims: Default::default(),
    }
}

pub(crate) fn bound(s: &mut Snapshot, role: Role, ip: &str) {
    let pool = if role == Role::ControlPlane {
        "cp-pool"
    } else {
        "ing-pool"
    };
    let inputs = RoleInputs {
        claim: Some(claim(role, Some("uid-1"), pool, true)),
        address: Some(address(role, ip)),
        named: Some(address(role, ip)),
        ..Default::default()
    };
    match role {
        Role::ControlPlane => s.control_plane = inputs,
        Role::Ingress => s.ingress = inputs,
    }
}

/// Our finalizer on the role's IPAddress, as after the first pass.
pub(crate) fn held(s: &mut Snapshot, role: Role) {
    let inputs = match role {
        Role::ControlPlane => &mut s.control_plane,
        Role::Ingress => &mut s.ingress,
    };
    for a in [inputs.address.as_mut(), inputs.named.as_mut()]
        .into_iter()
        .flatten()
    {
        a.finalizers
            .push(crate::names::FINALIZER_ADDRESS_PROTECTION.into());
    }
}

fn reasons_of(p: &Plan) -> Vec<&'static str> {
    p.reports.iter().map(|r| r.reason).collect()
}

#[test]
fn new_cluster_gets_both_claims_on_matching_pools() {
    let p = plan(&snap(cluster_json()));
    assert_eq!(
        p.steps,
        vec![
            Step::CreateClaim {
                role: Role::ControlPlane,
                name: "vip-cp-c1".into(),
                pool: PoolRef {
                    api_group: "ipam.cluster.x-k8s.io".into(),
                    kind: "GlobalInClusterIPPool".into(),
                    name: "cp-pool".into()
                }
            },
            Step::CreateClaim {
                role: Role::Ingress,
                name: "vip-ingress-c1".into(),
                pool: PoolRef {
                    api_group: "ipam.cluster.x-k8s.io".into(),
                    kind: "GlobalInClusterIPPool".into(),
                    name: "ing-pool".into()
                }
            },
        ]
    );
    assert!(p.writes_nothing() && p.reports.is_empty());
}

#[test]
fn bound_claim_writes_host_default_port_and_declared_variable() {
    let mut s = snap(cluster_json());
    bound(&mut s, Role::ControlPlane, "10.0.0.5");
    let p = plan(&s);
    assert_eq!(
        p.changes(Role::ControlPlane).endpoint_host.as_deref(),
        Some("10.0.0.5")
    );
    assert_eq!(p.changes(Role::ControlPlane).endpoint_port, Some(6443));
    assert_eq!(
        p.changes(Role::ControlPlane).variables,
        vec![("clusterVip".to_owned(), json!("10.0.0.5"))]
    );
    assert_eq!(p.allocations.len(), 1);
    assert_eq!(p.allocations[0].role, Role::ControlPlane);
}

#[test]
fn variable_not_written_when_class_does_not_declare_it() {
    let mut s = snap(cluster_json());
    s.class = Some(class(&[]));
    bound(&mut s, Role::ControlPlane, "10.0.0.5");
    let p = plan(&s);
    assert!(p.changes(Role::ControlPlane).variables.is_empty());
    assert_eq!(
        p.changes(Role::ControlPlane).endpoint_host.as_deref(),
        Some("10.0.0.5")
    );
}

#[test]
fn existing_port_is_kept() {
    let mut c = cluster_json();
    c["spec"]["controlPlaneEndpoint"] = json!({"host": "", "port": 7443});
    let mut s = snap(c);
    bound(&mut s, Role::ControlPlane, "10.0.0.5");
    assert_eq!(plan(&s).changes(Role::ControlPlane).endpoint_port, None);
}

#[test]
fn manual_endpoint_creates_no_claim_and_mirrors_into_empty_variable() {
    let mut c = cluster_json();
    c["spec"]["controlPlaneEndpoint"] = json!({"host": "192.168.0.10", "port": 6443});
    c["spec"]["topology"]["variables"] = json!([{"name": "clusterVip", "value": ""}]);
    let p = plan(&snap(c));
    assert!(!p.steps.iter().any(|s| matches!(
        s,
        Step::CreateClaim {
            role: Role::ControlPlane,
            ..
        }
    )));
    assert_eq!(
        p.changes(Role::ControlPlane).variables,
        vec![("clusterVip".to_owned(), json!("192.168.0.10"))]
    );
    assert!(
        p.changes(Role::ControlPlane).endpoint_host.is_none()
            && p.changes(Role::ControlPlane).endpoint_port.is_none()
    );
    assert!(reasons_of(&p).contains(&"ManualEndpoint"));
}

#[test]
fn manual_endpoint_keeps_a_user_variable() {
    let mut c = cluster_json();
    c["spec"]["controlPlaneEndpoint"] = json!({"host": "192.168.0.10", "port": 6443});
    c["spec"]["topology"]["variables"] = json!([{"name": "clusterVip", "value": "192.168.0.11"}]);
    assert!(plan(&snap(c))
        .changes(Role::ControlPlane)
        .variables
        .is_empty());
}

#[test]
fn manual_endpoint_releases_our_unused_claim() {
    let mut c = cluster_json();
    c["spec"]["controlPlaneEndpoint"] = json!({"host": "192.168.0.10", "port": 6443});
    let mut s = snap(c);
    s.control_plane.claim = Some(claim(Role::ControlPlane, Some("uid-1"), "cp-pool", false));
    let p = plan(&s);
    assert!(p.steps.contains(&Step::DeleteClaim {
        role: Role::ControlPlane,
        name: "vip-cp-c1".into(),
        uid: "claim-vip-cp-c1".into()
    }));
}

#[test]
fn already_allocated_cluster_needs_nothing() {
    let mut c = cluster_json();
    c["spec"]["controlPlaneEndpoint"] = json!({"host": "10.0.0.5", "port": 6443});
    c["spec"]["topology"]["variables"] = json!([{"name": "clusterVip", "value": "10.0.0.5"}]);
    c["metadata"]["annotations"] = json!({ANNOTATION_INGRESS_VIP: "10.0.1.5",
        ANNOTATION_CONTROL_PLANE_CLAIM: "vip-cp-c1/10.0.0.5", ANNOTATION_INGRESS_CLAIM: "vip-ingress-c1/10.0.1.5"});
    c["metadata"]["labels"] = json!({ANNOTATION_INGRESS_VIP: "10.0.1.5"});
    let mut s = snap(c);
    bound(&mut s, Role::ControlPlane, "10.0.0.5");
    bound(&mut s, Role::Ingress, "10.0.1.5");
    held(&mut s, Role::ControlPlane);
    held(&mut s, Role::Ingress);
    let p = plan(&s);
    assert_eq!(
        p,
        Plan::default(),
        "steady state: no steps, no writes, no reports"
    );
}

#[test]
fn half_done_write_is_completed_with_the_variable() {
    let mut c = cluster_json();
    c["spec"]["controlPlaneEndpoint"] = json!({"host": "10.0.0.5", "port": 6443});
    let mut s = snap(c);
    s.class = Some(class(&["clusterVip"]));
    s.cluster.annotations = Some(
        [(ANNOTATION_INGRESS_ENABLED.to_owned(), "false".to_owned())]
            .into_iter()
            .collect(),
    );
    bound(&mut s, Role::ControlPlane, "10.0.0.5");
    let p = plan(&s);
    assert_eq!(
        p.changes(Role::ControlPlane).variables,
        vec![("clusterVip".to_owned(), json!("10.0.0.5"))]
    );
    assert!(p.allocations.is_empty() && p.changes(Role::ControlPlane).endpoint_host.is_none());
}

#[test]
fn ingress_vip_goes_to_annotation_label_and_declared_variable() {
    let mut s = snap(cluster_json());
    s.class = Some(class(&["ingressVip"]));
    bound(&mut s, Role::Ingress, "10.0.1.5");
    let p = plan(&s);
    assert_eq!(
        p.changes(Role::Ingress).annotations,
        vec![
            (ANNOTATION_INGRESS_VIP.to_owned(), "10.0.1.5".to_owned()),
            (
                ANNOTATION_INGRESS_CLAIM.to_owned(),
                "vip-ingress-c1/10.0.1.5".to_owned()
            )
        ]
    );
    assert_eq!(
        p.changes(Role::Ingress).labels,
        vec![(ANNOTATION_INGRESS_VIP.to_owned(), "10.0.1.5".to_owned())]
    );
    assert_eq!(
        p.changes(Role::Ingress).variables,
        vec![("ingressVip".to_owned(), json!("10.0.1.5"))]
    );
    assert!(p.allocations.iter().any(|a| a.role == Role::Ingress));
}

#[test]
fn ipv6_ingress_vip_gets_no_label() {
    let mut s = snap(cluster_json());
    bound(&mut s, Role::Ingress, "fd00::15");
    let p = plan(&s);
    assert_eq!(
        p.changes(Role::Ingress).annotations,
        vec![
            (ANNOTATION_INGRESS_VIP.to_owned(), "fd00::15".to_owned()),
            (
                ANNOTATION_INGRESS_CLAIM.to_owned(),
                "vip-ingress-c1/fd00::15".to_owned()
            )
        ]
    );
    assert!(p.changes(Role::Ingress).labels.is_empty());
}

#[test]
fn missing_ingress_pool_never_blocks_the_control_plane() {
    let mut s = snap(cluster_json());
    s.pools.retain(|p| p.name == "cp-pool");
    bound(&mut s, Role::ControlPlane, "10.0.0.5");
    let p = plan(&s);
    assert_eq!(
        p.changes(Role::ControlPlane).endpoint_host.as_deref(),
        Some("10.0.0.5")
    );
    let r = p.reports.iter().find(|r| r.role == Role::Ingress).unwrap();
    assert_eq!(
        (r.reason, r.severity, r.is_error),
        ("PoolNotFound", Severity::Normal, false)
    );
}

#[test]
fn missing_control_plane_pool_is_a_warning_and_an_error() {
    let mut s = snap(cluster_json());
    s.pools.retain(|p| p.name == "ing-pool");
    let p = plan(&s);
    let r = p
        .reports
        .iter()
        .find(|r| r.role == Role::ControlPlane)
        .unwrap();
    assert_eq!(
        (r.reason, r.severity, r.is_error),
        ("PoolNotFound", Severity::Warning, true)
    );
    assert!(
        p.steps.iter().any(|s| matches!(
            s,
            Step::CreateClaim {
                role: Role::Ingress,
                ..
            }
        )),
        "ingress proceeds"
    );
}

#[test]
fn ingress_disabled_by_annotation() {
    let mut c = cluster_json();
    c["metadata"]["annotations"] = json!({ANNOTATION_INGRESS_ENABLED: "false"});
    let p = plan(&snap(c));
    assert!(!p.steps.iter().any(|s| matches!(
        s,
        Step::CreateClaim {
            role: Role::Ingress,
            ..
        }
    )));
    assert!(p.steps.iter().any(|s| matches!(
        s,
        Step::CreateClaim {
            role: Role::ControlPlane,
            ..
        }
    )));
}

#[test]
fn ingress_enabled_for_any_other_annotation_value() {
    let mut c = cluster_json();
    c["metadata"]["annotations"] = json!({ANNOTATION_INGRESS_ENABLED: "False"});
    assert!(plan(&snap(c)).steps.iter().any(|s| matches!(
        s,
        Step::CreateClaim {
            role: Role::Ingress,
            ..
        }
    )));
}

#[test]
fn paused_deleting_and_classless_clusters_are_skipped() {
    let mut c = cluster_json();
    c["spec"]["paused"] = json!(true);
    assert_eq!(plan(&snap(c)).skip, Some(Skip::Paused));
    let mut d = cluster_json();
    d["metadata"]["annotations"] = json!({"cluster.x-k8s.io/paused": "true"});
    assert_eq!(plan(&snap(d)).skip, Some(Skip::Paused));
    let mut e = cluster_json();
    e["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    let pe = plan(&snap(e));
    assert_eq!(pe.skip, Some(Skip::Deleting));
    assert!(pe.steps.is_empty());
    let mut f = cluster_json();
    f["spec"].as_object_mut().unwrap().remove("topology");
    assert_eq!(plan(&snap(f)).skip, Some(Skip::NoTopology));
}

#[test]
fn missing_class_blocks_with_a_warning() {
    let mut s = snap(cluster_json());
    s.class = None;
    let p = plan(&s);
    assert!(p.steps.is_empty());
    assert_eq!(reasons_of(&p), vec!["ClusterClassNotFound"]);
}

#[test]
fn claim_controlled_by_another_uid_is_never_used() {
    let mut s = snap(cluster_json());
    s.control_plane = RoleInputs {
        claim: Some(claim(
            Role::ControlPlane,
            Some("other-uid"),
            "cp-pool",
            true,
        )),
        address: Some(address(Role::ControlPlane, "10.0.0.5")),
        ..Default::default()
    };
    let p = plan(&s);
    assert!(p.changes(Role::ControlPlane).endpoint_host.is_none());
    assert!(!p.steps.iter().any(|s| matches!(
        s,
        Step::CreateClaim {
            role: Role::ControlPlane,
            ..
        } | Step::DeleteClaim { .. }
    )));
    assert!(reasons_of(&p).contains(&"ClaimConflict"));
}

#[test]
fn ownerless_claim_is_adopted_and_used() {
    let mut s = snap(cluster_json());
    s.control_plane = RoleInputs {
        claim: Some(claim(Role::ControlPlane, None, "cp-pool", true)),
        address: Some(address(Role::ControlPlane, "10.0.0.5")),
        ..Default::default()
    };
    let p = plan(&s);
    assert!(p.steps.contains(&Step::AdoptClaim {
        role: Role::ControlPlane,
        name: "vip-cp-c1".into()
    }));
    assert_eq!(
        p.changes(Role::ControlPlane).endpoint_host.as_deref(),
        Some("10.0.0.5")
    );
}

#[test]
fn pending_claim_on_exhausted_pool_reports_exhaustion() {
    let mut s = snap(cluster_json());
    s.pools[0].free = Some(0);
    s.control_plane.claim = Some(claim(Role::ControlPlane, Some("uid-1"), "cp-pool", false));
    let p = plan(&s);
    let r = p
        .reports
        .iter()
        .find(|r| r.role == Role::ControlPlane)
        .unwrap();
    assert_eq!(
        (r.reason, r.severity, r.is_error),
        ("PoolExhausted", Severity::Warning, true)
    );
    assert!(!p
        .steps
        .iter()
        .any(|s| matches!(s, Step::DeleteClaim { .. })));
}

#[test]
fn pending_claim_moves_from_exhausted_pool_to_one_with_room() {
    let mut s = snap(cluster_json());
    s.pools[0].free = Some(0);
    s.pools.push(pool("cp-pool-2", "control-plane", Some(3)));
    s.control_plane.claim = Some(claim(Role::ControlPlane, Some("uid-1"), "cp-pool", false));
    let p = plan(&s);
    assert!(p.steps.contains(&Step::DeleteClaim {
        role: Role::ControlPlane,
        name: "vip-cp-c1".into(),
        uid: "claim-vip-cp-c1".into()
    }));
    assert!(reasons_of(&p).contains(&"ClaimReplaced"));
}

#[test]
fn pending_claim_on_vanished_pool_is_replaced_when_another_matches() {
    let mut s = snap(cluster_json());
    s.control_plane.claim = Some(claim(Role::ControlPlane, Some("uid-1"), "gone", false));
    let p = plan(&s);
    assert!(p.steps.iter().any(|s| matches!(
        s,
        Step::DeleteClaim {
            role: Role::ControlPlane,
            ..
        }
    )));
}

#[test]
fn pending_claim_on_vanished_pool_waits_when_nothing_matches() {
    let mut s = snap(cluster_json());
    s.pools.clear();
    s.control_plane.claim = Some(claim(Role::ControlPlane, Some("uid-1"), "gone", false));
    let p = plan(&s);
    assert!(p.steps.is_empty());
    assert!(reasons_of(&p).contains(&"PoolNotFound"));
}

#[test]
fn bound_claim_is_used_even_if_its_pool_no_longer_matches() {
    let mut s = snap(cluster_json());
    s.pools.clear();
    bound(&mut s, Role::ControlPlane, "10.0.0.5");
    let p = plan(&s);
    assert_eq!(
        p.changes(Role::ControlPlane).endpoint_host.as_deref(),
        Some("10.0.0.5")
    );
    assert!(!p
        .steps
        .iter()
        .any(|s| matches!(s, Step::DeleteClaim { .. })));
}

#[test]
fn address_of_another_claim_is_ignored() {
    let mut s = snap(cluster_json());
    let mut c = claim(Role::ControlPlane, Some("uid-1"), "cp-pool", true);
    c.address_ref = Some("something-else".into());
    s.control_plane = RoleInputs {
        claim: Some(c),
        address: Some(address(Role::ControlPlane, "10.0.0.5")),
        ..Default::default()
    };
    assert!(plan(&s).changes(Role::ControlPlane).endpoint_host.is_none());
}

#[test]
fn address_that_does_not_name_our_claim_or_pool_is_not_trusted() {
    type Forgery = fn(&mut AddressView);
    let forged: [(&str, Forgery); 4] = [
        ("claimRef", |a| a.claim_name = Some("vip-cp-other".into())),
        ("claimRef", |a| a.claim_name = None),
        ("poolRef", |a| {
            a.pool_ref.as_mut().unwrap().name = "attacker-pool".into()
        }),
        ("poolRef", |a| a.pool_ref = None),
    ];
    for (what, forge) in forged {
        let mut s = snap(cluster_json());
        bound(&mut s, Role::ControlPlane, "10.0.0.5");
        forge(s.control_plane.address.as_mut().unwrap());
        let p = plan(&s);
        assert!(
            p.changes(Role::ControlPlane).endpoint_host.is_none(),
            "{what}"
        );
        assert!(p.allocations.is_empty(), "{what}");
        let r = p
            .reports
            .iter()
            .find(|r| r.role == Role::ControlPlane)
            .expect("a report");
        assert_eq!(
            (r.reason, r.severity),
            ("AddressInvalid", Severity::Warning),
            "{what}"
        );
        assert!(r.note.contains(what), "{what}: {}", r.note);
    }
    // An empty apiGroup (v1beta1) names the IPAM group.
    let mut s = snap(cluster_json());
    bound(&mut s, Role::ControlPlane, "10.0.0.5");
    s.control_plane
        .address
        .as_mut()
        .unwrap()
        .pool_ref
        .as_mut()
        .unwrap()
        .api_group = String::new();
    assert_eq!(
        plan(&s)
            .changes(Role::ControlPlane)
            .endpoint_host
            .as_deref(),
        Some("10.0.0.5")
    );
}

#[test]
fn manual_ingress_annotation_withdraws_our_pending_claim_and_says_so() {
    let mut c = cluster_json();
    c["metadata"]["annotations"] = json!({ANNOTATION_INGRESS_VIP: "192.168.5.5"});
    let mut s = snap(c);
    s.ingress.claim = Some(claim(Role::Ingress, Some("uid-1"), "ing-pool", false));
    let p = plan(&s);
    assert!(p.steps.contains(&Step::DeleteClaim {
        role: Role::Ingress,
        name: "vip-ingress-c1".into(),
        uid: "claim-vip-ingress-c1".into(),
    }));
    let r = p
        .reports
        .iter()
        .find(|r| r.role == Role::Ingress)
        .expect("a report");
    assert_eq!((r.reason, r.severity), ("ManualEndpoint", Severity::Normal));
    assert!(
        r.note.contains("192.168.5.5") && r.note.contains("ingress"),
        "{}",
        r.note
    );
    // A bound claim of ours is kept and named.
    let mut s = s.clone();
    bound(&mut s, Role::Ingress, "10.0.1.5");
    let p = plan(&s);
    assert!(!p
        .steps
        .iter()
        .any(|s| matches!(s, Step::DeleteClaim { .. })));
    assert!(p
        .reports
        .iter()
        .any(|r| r.reason == "ManualEndpoint" && r.note.contains("vip-ingress-c1")));
}

#[test]
fn deleting_claim_is_waited_for() {
    let mut s = snap(cluster_json());
    let mut c = claim(Role::ControlPlane, Some("uid-1"), "cp-pool", true);
    c.deleting = true;
    s.control_plane = RoleInputs {
        claim: Some(c),
        address: Some(address(Role::ControlPlane, "10.0.0.5")),
        ..Default::default()
    };
    let p = plan(&s);
    assert!(p.changes(Role::ControlPlane).endpoint_host.is_none());
    assert!(!p.steps.iter().any(|s| matches!(
        s,
        Step::CreateClaim {
            role: Role::ControlPlane,
            ..
        }
    )));
}

#[test]
fn manual_ingress_annotation_is_respected() {
    let mut c = cluster_json();
    c["metadata"]["annotations"] = json!({ANNOTATION_INGRESS_VIP: "192.168.5.5"});
    let mut s = snap(c);
    s.class = Some(class(&["ingressVip"]));
    let p = plan(&s);
    assert!(!p.steps.iter().any(|s| matches!(
        s,
        Step::CreateClaim {
            role: Role::Ingress,
            ..
        }
    )));
    assert_eq!(
        p.changes(Role::Ingress).variables,
        vec![("ingressVip".to_owned(), json!("192.168.5.5"))]
    );
}

#[test]
fn claim_names_round_trip() {
    assert_eq!(Role::ControlPlane.claim_name("a"), "vip-cp-a");
    assert_eq!(Role::Ingress.claim_name("a"), "vip-ingress-a");
    assert_eq!(
        Role::cluster_of_claim("vip-cp-a"),
        Some((Role::ControlPlane, "a"))
    );
    assert_eq!(
        Role::cluster_of_claim("vip-ingress-cp-x"),
        Some((Role::Ingress, "cp-x"))
    );
    assert_eq!(Role::cluster_of_claim("other"), None);
}

#[test]
fn exhaustion_waits_a_grace_period_for_a_fresh_claim() {
    let mut s = snap(cluster_json());
    s.pools[0].free = Some(0);
    s.control_plane.claim = Some(claim(Role::ControlPlane, Some("uid-1"), "cp-pool", false));
    s.now = "2026-01-01T00:00:01Z".parse().unwrap();
    let p = plan(&s);
    assert!(
        p.reports.iter().all(|r| r.reason != "PoolExhausted"),
        "too early to tell"
    );
    assert_eq!(
        p.requeue_after,
        Some(std::time::Duration::from_secs(1)),
        "look again when the grace ends"
    );
}

#[test]
fn exhaustion_is_not_reported_when_the_address_already_exists() {
    let mut s = snap(cluster_json());
    s.pools[0].free = Some(0); // our own claim took the last address
    s.control_plane = RoleInputs {
        claim: Some(claim(Role::ControlPlane, Some("uid-1"), "cp-pool", false)),
        address: Some(address(Role::ControlPlane, "10.0.0.5")),
        ..Default::default()
    };
    let p = plan(&s);
    assert!(p.reports.iter().all(|r| r.reason != "PoolExhausted"));
    assert!(
        p.changes(Role::ControlPlane).endpoint_host.is_none(),
        "the VIP is written only once addressRef is set"
    );
}

#[test]
fn manual_endpoint_keeps_a_bound_claim_of_ours() {
    let mut c = cluster_json();
    c["spec"]["controlPlaneEndpoint"] = json!({"host": "192.168.0.10", "port": 6443});
    let mut s = snap(c);
    bound(&mut s, Role::ControlPlane, "10.0.0.5");
    let p = plan(&s);
    assert!(
        !p.steps
            .iter()
            .any(|s| matches!(s, Step::DeleteClaim { .. })),
        "an allocated address is never released behind the user's back"
    );
    let r = p
        .reports
        .iter()
        .find(|r| r.reason == "ManualEndpoint")
        .unwrap();
    assert!(
        r.note.contains("vip-cp-c1") && r.note.contains("10.0.0.5"),
        "{}",
        r.note
    );
    assert!(p.changes(Role::ControlPlane).endpoint_host.is_none());
}

#[test]
fn malformed_address_is_reported_and_nothing_is_written() {
    let mut s = snap(cluster_json());
    s.control_plane = RoleInputs {
        claim: Some(claim(Role::ControlPlane, Some("uid-1"), "cp-pool", true)),
        address: None,
        address_problem: Some("spec.address \"10.0.0.999\" is not an IP address".into()),
        ..Default::default()
    };
    let p = plan(&s);
    assert!(p.changes(Role::ControlPlane).endpoint_host.is_none());
    let report = p
        .reports
        .iter()
        .find(|r| r.reason == "AddressInvalid")
        .expect("an AddressInvalid report");
    assert_eq!(report.severity, Severity::Warning);
    assert!(report.is_error);
    assert!(report.note.contains("10.0.0.999"), "{}", report.note);
    // The ingress VIP is unaffected by a broken control-plane address.
    bound(&mut s, Role::Ingress, "10.0.1.5");
    let annotations = plan(&s).changes(Role::Ingress).annotations.clone();
    assert!(
        annotations.contains(&(ANNOTATION_INGRESS_VIP.to_owned(), "10.0.1.5".to_owned())),
        "{annotations:?}"
    );
}

/// After a restart: a host equal to our bound claim's address (in any textual form) is our allocation, already
/// written: no ManualEndpoint, no claim operation; only what is still missing (the empty variable) is written.
#[test]
fn host_equal_to_our_claims_address_is_ours_not_manual() {
    for (written, claimed) in [("10.0.0.5", "10.0.0.5"), ("fd00:0:0::5", "fd00::5")] {
        let mut c = cluster_json();
        c["spec"]["controlPlaneEndpoint"] = json!({"host": written, "port": 6443});
        c["spec"]["topology"]["variables"] = json!([{"name": "clusterVip", "value": ""}]);
        c["metadata"]["annotations"] = json!({ANNOTATION_INGRESS_ENABLED: "false"});
        let mut s = snap(c);
        bound(&mut s, Role::ControlPlane, claimed);
        let p = plan(&s);
        assert!(p.reports.is_empty(), "{written}: {:?}", p.reports);
        assert!(p.steps.is_empty() && p.allocations.is_empty(), "{p:?}");
        assert_eq!(
            *p.changes(Role::ControlPlane),
            ClusterChanges {
                variables: vec![("clusterVip".to_owned(), json!(written))],
                // A VIP written before provenance was recorded gets its record (once).
                annotations: vec![(
                    ANNOTATION_CONTROL_PLANE_CLAIM.to_owned(),
                    format!("vip-cp-c1/{claimed}")
                )],
                ..Default::default()
            }
        );
    }
}

#[test]
fn host_differing_from_our_claims_address_stays_manual() {
    let mut c = cluster_json();
    c["spec"]["controlPlaneEndpoint"] = json!({"host": "10.0.0.9", "port": 6443});
    c["metadata"]["annotations"] = json!({ANNOTATION_INGRESS_ENABLED: "false"});
    let mut s = snap(c);
    bound(&mut s, Role::ControlPlane, "10.0.0.5");
    let p = plan(&s);
    assert_eq!(reasons_of(&p), vec!["ManualEndpoint"]);
    assert!(p.changes(Role::ControlPlane).endpoint_host.is_none() && p.allocations.is_empty());
}

/// Our claim is bound but its IPAddress is not cached yet: the host is not judged until it is.
#[test]
fn host_is_not_judged_while_our_claims_address_is_unknown() {
    let mut c = cluster_json();
    c["spec"]["controlPlaneEndpoint"] = json!({"host": "10.0.0.5", "port": 6443});
    c["metadata"]["annotations"] = json!({ANNOTATION_INGRESS_VIP: "10.0.1.5"});
    let mut s = snap(c);
    bound(&mut s, Role::ControlPlane, "10.0.0.5");
    bound(&mut s, Role::Ingress, "10.0.1.5");
    s.control_plane.address = None;
    s.ingress.address = None;
    let p = plan(&s);
    assert_eq!(p, Plan::default());
    // Once cached and different, the host is manual again.
    s.control_plane.address = Some(address(Role::ControlPlane, "10.0.0.6"));
    assert_eq!(reasons_of(&plan(&s)), vec!["ManualEndpoint"]);
}

#[test]
fn ingress_annotation_equal_to_our_claims_address_is_ours() {
    let mut c = cluster_json();
    c["spec"]["controlPlaneEndpoint"] = json!({"host": "10.0.0.5", "port": 6443});
    c["metadata"]["annotations"] = json!({ANNOTATION_INGRESS_VIP: "10.0.1.5"});
    let mut s = snap(c);
    s.class = Some(class(&["clusterVip", "ingressVip"]));
    bound(&mut s, Role::ControlPlane, "10.0.0.5");
    bound(&mut s, Role::Ingress, "10.0.1.5");
    let p = plan(&s);
    assert!(p.reports.is_empty() && p.steps.is_empty() && p.allocations.is_empty());
    // Missing pieces only: both variables and the ingress label copy.
    assert_eq!(
        *p.changes(Role::ControlPlane),
        ClusterChanges {
            variables: vec![("clusterVip".to_owned(), json!("10.0.0.5"))],
            annotations: vec![(
                ANNOTATION_CONTROL_PLANE_CLAIM.to_owned(),
                "vip-cp-c1/10.0.0.5".to_owned()
            )],
            ..Default::default()
        }
    );
    assert_eq!(
        *p.changes(Role::Ingress),
        ClusterChanges {
            variables: vec![("ingressVip".to_owned(), json!("10.0.1.5"))],
            annotations: vec![(
                ANNOTATION_INGRESS_CLAIM.to_owned(),
                "vip-ingress-c1/10.0.1.5".to_owned()
            )],
            labels: vec![(ANNOTATION_INGRESS_VIP.to_owned(), "10.0.1.5".to_owned())],
            ..Default::default()
        }
    );
    // A different annotation is the user's: respected, never overwritten, no claim operation.
    s.cluster.annotations = Some(
        [(ANNOTATION_INGRESS_VIP.to_owned(), "192.168.5.5".to_owned())]
            .into_iter()
            .collect(),
    );
    let p = plan(&s);
    assert!(
        p.changes(Role::Ingress).annotations.is_empty()
            && p.changes(Role::Ingress).labels.is_empty()
    );
    assert!(p.steps.is_empty() && p.allocations.is_empty());
    // The empty variable mirrors the user's address, as for any manual ingress VIP.
    assert!(p
        .changes(Role::Ingress)
        .variables
        .contains(&("ingressVip".to_owned(), json!("192.168.5.5"))));
}

/// Right after a restart the secondary caches may be empty: nothing is decided (no claim, no report, no write),
/// the Cluster is looked at again shortly.
#[test]
fn nothing_is_decided_on_partial_caches() {
    let mut c = cluster_json();
    c["spec"]["controlPlaneEndpoint"] = json!({"host": "10.0.0.5", "port": 6443});
    let mut s = snap(c);
    s.caches_synced = false;
    let p = plan(&s);
    assert_eq!(
        p,
        Plan {
            requeue_after: Some(SYNC_WAIT),
            ..Default::default()
        }
    );
    s.class = None;
    assert!(
        plan(&s).reports.is_empty(),
        "no ClusterClassNotFound either"
    );
    s.caches_synced = true;
    assert_eq!(reasons_of(&plan(&s)), vec!["ClusterClassNotFound"]);
}

/// A Cluster as `clusterctl move` (or a restore) recreates it: host and provenance set, our claim without status.
fn moved(owner: Option<&str>) -> Snapshot {
    let mut c = cluster_json();
    c["spec"]["controlPlaneEndpoint"] = json!({"host": "10.0.0.5", "port": 6443});
    c["spec"]["topology"]["variables"] = json!([{"name": "clusterVip", "value": "10.0.0.5"}]);
    c["metadata"]["annotations"] = json!({ANNOTATION_INGRESS_ENABLED: "false",
        ANNOTATION_CONTROL_PLANE_CLAIM: "vip-cp-c1/10.0.0.5"});
    let mut s = snap(c);
    s.control_plane = RoleInputs {
        claim: Some(claim(Role::ControlPlane, owner, "cp-pool", false)),
        address: Some(address(Role::ControlPlane, "10.0.0.5")),
        ..Default::default()
    };
    s
}

#[test]
fn moved_claim_without_status_is_waited_for_never_deleted() {
    let p = plan(&moved(Some("uid-1")));
    assert_eq!(
        p,
        Plan::default(),
        "no delete, no write, no Event: the IPAM provider re-binds"
    );
    // Restored without its owner reference: adopted, still never deleted.
    let p = plan(&moved(None));
    assert_eq!(
        p.steps,
        vec![Step::AdoptClaim {
            role: Role::ControlPlane,
            name: "vip-cp-c1".into()
        }]
    );
    assert!(p.reports.is_empty() && p.writes_nothing());
    // Without a provenance annotation (a Cluster allocated by an older version): the IPAddress named like the
    // claim, carrying the host, is enough.
    let mut s = moved(Some("uid-1"));
    s.cluster.annotations = Some(
        [(ANNOTATION_INGRESS_ENABLED.to_owned(), "false".to_owned())]
            .into_iter()
            .collect(),
    );
    assert_eq!(plan(&s), Plan::default());
    // Provenance alone (the IPAddress not restored yet): still waited for.
    let mut s = moved(Some("uid-1"));
    s.control_plane.address = None;
    assert_eq!(plan(&s), Plan::default());
}

#[test]
fn deleted_claim_of_a_running_vip_is_reported_released_not_manual() {
    let mut s = moved(Some("uid-1"));
    s.control_plane = RoleInputs::default();
    let p = plan(&s);
    let r = p
        .reports
        .iter()
        .find(|r| r.role == Role::ControlPlane)
        .expect("a report");
    assert_eq!(
        (r.reason, r.severity, r.is_error),
        ("VIPReleased", Severity::Warning, true)
    );
    assert!(
        r.note.contains("vip-cp-c1") && r.note.contains("10.0.0.5"),
        "{}",
        r.note
    );
    assert!(p.steps.is_empty() && p.writes_nothing(), "{p:?}");
    // Recreated and bound to another address: also released, and that other address is not written.
    let mut s = moved(Some("uid-1"));
    bound(&mut s, Role::ControlPlane, "10.0.0.6");
    let p = plan(&s);
    assert_eq!(reasons_of(&p), vec!["VIPReleased"]);
    assert!(p.writes_nothing());
    // A host nobody recorded stays manual.
    let mut s = moved(Some("uid-1"));
    s.control_plane = RoleInputs::default();
    s.cluster.annotations = None;
    assert_eq!(reasons_of(&plan(&s)), vec!["ManualEndpoint"]);
}

#[test]
fn objects_being_moved_away_are_left_alone() {
    let mut c = cluster_json();
    c["metadata"]["annotations"] = json!({ANNOTATION_DELETE_FOR_MOVE: ""});
    assert_eq!(plan(&snap(c)).skip, Some(Skip::MovingAway));
    let mut s = snap(cluster_json());
    let mut pending = claim(Role::Ingress, Some("uid-1"), "ing-pool", false);
    pending.moving = true;
    s.ingress.claim = Some(pending);
    assert_eq!(plan(&s).skip, Some(Skip::MovingAway));
}

#[test]
fn allocation_records_its_provenance_in_the_same_write() {
    let mut s = snap(cluster_json());
    bound(&mut s, Role::ControlPlane, "10.0.0.5");
    let p = plan(&s);
    assert_eq!(
        p.changes(Role::ControlPlane).annotations,
        vec![(
            ANNOTATION_CONTROL_PLANE_CLAIM.to_owned(),
            "vip-cp-c1/10.0.0.5".to_owned()
        )]
    );
    assert_eq!(
        p.changes(Role::ControlPlane).endpoint_host.as_deref(),
        Some("10.0.0.5")
    );
}

#[test]
fn a_host_shared_with_other_clusters_is_a_collision_on_its_own_slot() {
    let mut c = cluster_json();
    c["spec"]["controlPlaneEndpoint"] = json!({"host": "192.168.0.10", "port": 6443});
    let mut s = snap(c);
    s.same_host = vec!["b/two".into(), "c/three".into()];
    let p = plan(&s);
    let r = p.collision.as_ref().expect("a collision");
    assert_eq!(
        (r.reason, r.severity, r.is_error),
        ("DuplicateVIP", Severity::Warning, true)
    );
    assert!(
        r.note.contains("b/two, c/three") && r.note.contains("192.168.0.10"),
        "{}",
        r.note
    );
    // The per-role state is told as before (a hand-set host is still a manual endpoint).
    assert_eq!(reasons_of(&p), vec!["ManualEndpoint"]);
    // No host, no collision, whatever the index says.
    let mut s = snap(cluster_json());
    s.same_host = vec!["b/two".into()];
    assert_eq!(plan(&s).collision, None);
}

/// `moved`'s Cluster after its claim was deleted: the IPAddress named like the claim is terminating, our finalizer
/// keeping it (and 10.0.0.5) in the pool.
fn claim_deleted_while_held() -> Snapshot {
    let mut s = moved(Some("uid-1"));
    let mut held = address(Role::ControlPlane, "10.0.0.5");
    held.finalizers = vec![crate::names::FINALIZER_ADDRESS_PROTECTION.into()];
    held.deleting = true;
    s.control_plane = RoleInputs {
        named: Some(held),
        ..Default::default()
    };
    s
}

fn protected(mut a: AddressView) -> AddressView {
    a.finalizers
        .push(crate::names::FINALIZER_ADDRESS_PROTECTION.into());
    a
}

fn holder_of(a: &AddressView) -> AddressView {
    let mut h = a.clone();
    h.name = Role::ControlPlane.holder_name("c1");
    h.claim_name = Some(h.name.clone());
    h.deleting = false;
    h.claim_owned = false;
    h
}

fn new_address(name: &str) -> NewAddress {
    NewAddress {
        name: name.into(),
        claim: name.into(),
        address: "10.0.0.5".into(),
        prefix: 24,
        gateway: Some("10.0.0.1".into()),
        pool: address(Role::ControlPlane, "10.0.0.5").pool_ref.unwrap(),
    }
}

#[test]
fn the_ipaddress_of_a_vip_is_protected_after_the_vip_is_written() {
    let mut s = snap(cluster_json());
    bound(&mut s, Role::ControlPlane, "10.0.0.10");
    let p = plan(&s);
    assert_eq!(p.allocations.len(), 1);
    let protect = Step::ProtectAddress {
        role: Role::ControlPlane,
        name: "vip-cp-c1".into(),
    };
    assert_eq!(
        p.finally,
        vec![protect.clone()],
        "after the write, never before it"
    );
    assert!(!p.steps.contains(&protect));
    // Written earlier (an older version): protected now; once protected, nothing more.
    let mut c = cluster_json();
    c["spec"]["controlPlaneEndpoint"] = json!({"host": "10.0.0.10", "port": 6443});
    c["metadata"]["annotations"] = json!({ANNOTATION_INGRESS_ENABLED: "false",
        ANNOTATION_CONTROL_PLANE_CLAIM: "vip-cp-c1/10.0.0.10"});
    let mut s = snap(c);
    s.class = Some(class(&[]));
    bound(&mut s, Role::ControlPlane, "10.0.0.10");
    assert_eq!(plan(&s).finally, vec![protect]);
    held(&mut s, Role::ControlPlane);
    assert_eq!(plan(&s), Plan::default());
}

#[test]
fn a_deleted_claim_of_a_running_vip_is_recreated_on_the_same_address_never_freed() {
    let s = claim_deleted_while_held();
    let p = plan(&s);
    let holder = Role::ControlPlane.holder_name("c1");
    assert_eq!(
        p.steps,
        vec![
            Step::CreateAddress {
                role: Role::ControlPlane,
                address: new_address(&holder)
            },
            Step::ReleaseAddress {
                role: Role::ControlPlane,
                name: "vip-cp-c1".into(),
                delete: false
            },
            Step::CreateAddress {
                role: Role::ControlPlane,
                address: new_address("vip-cp-c1")
            },
            Step::CreateClaim {
                role: Role::ControlPlane,
                name: "vip-cp-c1".into(),
                pool: new_address("x").pool
            },
        ],
        "the holder takes the address before the terminating IPAddress lets go of it"
    );
    assert_eq!(reasons_of(&p), vec!["ClaimRestored"]);
    assert_eq!(p.reports[0].severity, Severity::Warning);
    assert!(p.writes_nothing(), "the Cluster keeps its host");

    // Resumed after the holder was created: the holder is not created twice.
    let mut s = claim_deleted_while_held();
    s.control_plane.holder = Some(holder_of(s.control_plane.named.as_ref().unwrap()));
    let p = plan(&s);
    assert!(
        matches!(p.steps[0], Step::ReleaseAddress { delete: false, .. }),
        "{p:?}"
    );
    assert_eq!(p.steps.len(), 3);

    // The terminating IPAddress is gone: the holder's address goes to a new one named like the claim.
    s.control_plane.named = None;
    let p = plan(&s);
    assert_eq!(
        p.steps,
        vec![
            Step::CreateAddress {
                role: Role::ControlPlane,
                address: new_address("vip-cp-c1")
            },
            Step::CreateClaim {
                role: Role::ControlPlane,
                name: "vip-cp-c1".into(),
                pool: new_address("x").pool
            },
        ]
    );

    // Someone recreated the claim meanwhile (GitOps): it cannot bind to a terminating IPAddress, so the address
    // still moves, but no second claim is created.
    let mut s = claim_deleted_while_held();
    s.control_plane.claim = Some(claim(Role::ControlPlane, Some("uid-1"), "cp-pool", false));
    let p = plan(&s);
    assert!(
        !p.steps
            .iter()
            .any(|s| matches!(s, Step::CreateClaim { .. })),
        "{p:?}"
    );
    assert!(p
        .steps
        .iter()
        .any(|s| matches!(s, Step::ReleaseAddress { .. })));
}

#[test]
fn the_holder_goes_once_the_claim_is_bound_again() {
    let mut c = cluster_json();
    c["spec"]["controlPlaneEndpoint"] = json!({"host": "10.0.0.5", "port": 6443});
    c["metadata"]["annotations"] = json!({ANNOTATION_INGRESS_ENABLED: "false",
        ANNOTATION_CONTROL_PLANE_CLAIM: "vip-cp-c1/10.0.0.5"});
    let mut s = snap(c);
    s.class = Some(class(&[]));
    bound(&mut s, Role::ControlPlane, "10.0.0.5");
    held(&mut s, Role::ControlPlane);
    s.control_plane.holder = Some(holder_of(s.control_plane.named.as_ref().unwrap()));
    let p = plan(&s);
    assert_eq!(
        p.finally,
        vec![Step::ReleaseAddress {
            role: Role::ControlPlane,
            name: Role::ControlPlane.holder_name("c1"),
            delete: true
        }]
    );
    assert!(p.steps.is_empty() && p.reports.is_empty() && p.writes_nothing());
}

#[test]
fn an_address_the_cluster_no_longer_uses_is_let_go() {
    // The host was changed by hand; our bound claim is kept (ManualEndpoint), its address no longer protected.
    let mut c = cluster_json();
    c["spec"]["controlPlaneEndpoint"] = json!({"host": "192.168.1.1", "port": 6443});
    c["metadata"]["annotations"] = json!({ANNOTATION_INGRESS_ENABLED: "false"});
    let mut s = snap(c);
    bound(&mut s, Role::ControlPlane, "10.0.0.5");
    held(&mut s, Role::ControlPlane);
    let p = plan(&s);
    assert!(p.steps.contains(&Step::ReleaseAddress {
        role: Role::ControlPlane,
        name: "vip-cp-c1".into(),
        delete: false
    }));
    assert_eq!(reasons_of(&p), vec!["ManualEndpoint"]);
    // Without a claim, an IPAddress we created and hold for nothing is deleted as well.
    s.control_plane.claim = None;
    s.control_plane.address = None;
    s.control_plane.named.as_mut().unwrap().claim_owned = false;
    let p = plan(&s);
    assert!(p.steps.contains(&Step::ReleaseAddress {
        role: Role::ControlPlane,
        name: "vip-cp-c1".into(),
        delete: true
    }));
}

#[test]
fn a_just_deleted_claim_is_waited_for_until_the_provider_deletes_its_ipaddress() {
    // The claim is gone, the provider has not deleted the IPAddress yet: a claim created now would get a fresh
    // address once the provider deletes the old one. Nothing is done until it is terminating.
    let mut s = claim_deleted_while_held();
    s.control_plane.named.as_mut().unwrap().deleting = false;
    assert_eq!(
        plan(&s),
        Plan::default(),
        "no step, no Event: not released, not manual"
    );
    // One we created ourselves (no claim owner yet): only its claim is missing.
    s.control_plane.named.as_mut().unwrap().claim_owned = false;
    let p = plan(&s);
    assert!(
        matches!(p.steps.as_slice(), [Step::CreateClaim { .. }]),
        "{p:?}"
    );
}

#[test]
fn forced_release_is_still_told_as_released() {
    // Finalizer removed and IPAddress deleted by hand: nothing of ours holds the address.
    let mut s = claim_deleted_while_held();
    s.control_plane.named = None;
    assert_eq!(reasons_of(&plan(&s)), vec!["VIPReleased"]);
    // Still being deleted by the provider: nothing is decided yet.
    let mut s = claim_deleted_while_held();
    let mut going = claim(Role::ControlPlane, Some("uid-1"), "cp-pool", true);
    going.deleting = true;
    s.control_plane.claim = Some(going);
    assert_eq!(plan(&s), Plan::default());
}

#[test]
fn orphaned_addresses_are_released_only_when_their_cluster_is_gone_or_going() {
    let a = protected(address(Role::ControlPlane, "10.0.0.5"));
    let live = cluster(cluster_json());
    assert_eq!(holds::release_orphan(&a, Some(&live), true), None);
    let mut going = cluster(cluster_json());
    going.deleting = true;
    let release = |delete| {
        Some(Step::ReleaseAddress {
            role: Role::ControlPlane,
            name: "vip-cp-c1".into(),
            delete,
        })
    };
    assert_eq!(
        holds::release_orphan(&a, Some(&going), true),
        release(false)
    );
    assert_eq!(holds::release_orphan(&a, None, true), release(false));
    assert_eq!(
        holds::release_orphan(&a, None, false),
        release(false),
        "bound by the provider: its own claim's deletion deletes it (or, after a move, the source keeps it)"
    );
    let mut ours = a.clone();
    ours.claim_owned = false;
    assert_eq!(
        holds::release_orphan(&ours, None, false),
        release(true),
        "ours, answering nothing: deleted"
    );
    let mut terminating = ours.clone();
    terminating.deleting = true;
    assert_eq!(
        holds::release_orphan(&terminating, None, false),
        release(false)
    );
    let mut moving = a.clone();
    moving.moving = true;
    assert_eq!(
        holds::release_orphan(&moving, None, false),
        None,
        "clusterctl removes finalizers itself"
    );
    assert_eq!(
        holds::release_orphan(&address(Role::ControlPlane, "10.0.0.5"), None, false),
        None,
        "not ours"
    );
}

/// `cp-pool` with the range 10.0.0.2–10.0.0.254 (what the IPAM provider hands out).
fn with_cp_range(s: &mut Snapshot) {
    let p = s.pools.iter_mut().find(|p| p.name == "cp-pool").unwrap();
    p.addresses = Some(
        ranges::AddressSet::of_pool_spec(
            &json!({"addresses": ["10.0.0.0/24"], "prefix": 24, "gateway": "10.0.0.1"}),
        )
        .unwrap(),
    );
    p.prefix = Some(24);
    p.gateway = Some("10.0.0.1".into());
}

#[test]
fn a_hand_set_host_inside_a_pool_that_nothing_reserves_is_a_warning() {
    let manual = |host: &str| {
        let mut c = cluster_json();
        c["spec"]["controlPlaneEndpoint"] = json!({"host": host, "port": 6443});
        c["metadata"]["annotations"] = json!({ANNOTATION_INGRESS_ENABLED: "false"});
        let mut s = snap(c);
        with_cp_range(&mut s);
        s
    };
    let p = plan(&manual("10.0.0.77"));
    assert_eq!(reasons_of(&p), vec!["EndpointNotReserved"]);
    assert!(
        p.reports[0].note.contains("cp-pool") && p.reports[0].is_error,
        "{:?}",
        p.reports
    );
    assert!(p.steps.is_empty(), "nothing is claimed for a hand-set host");
    // Reserved there (an IPAddress of that pool holds it): only the manual endpoint is told.
    let mut s = manual("10.0.0.77");
    let mut reserved = address(Role::ControlPlane, "10.0.0.77");
    reserved.name = "someone-else".into();
    s.control_plane.same_ip = vec![reserved];
    assert_eq!(reasons_of(&plan(&s)), vec!["ManualEndpoint"]);
    // Outside every pool, or the gateway (never handed out): a manual endpoint.
    assert_eq!(
        reasons_of(&plan(&manual("192.168.1.1"))),
        vec!["ManualEndpoint"]
    );
    assert_eq!(
        reasons_of(&plan(&manual("10.0.0.1"))),
        vec!["ManualEndpoint"]
    );
}

#[test]
fn a_force_released_vip_still_free_in_its_pool_is_reserved_again() {
    let mut s = claim_deleted_while_held();
    s.control_plane.named = None;
    with_cp_range(&mut s);
    let p = plan(&s);
    assert_eq!(
        reasons_of(&p),
        vec!["VIPReleased"],
        "still told: the address was free for a while"
    );
    assert!(
        p.reports[0].note.contains("reserved again"),
        "{}",
        p.reports[0].note
    );
    assert_eq!(
        p.steps,
        vec![
            Step::CreateAddress {
                role: Role::ControlPlane,
                address: new_address("vip-cp-c1")
            },
            Step::CreateClaim {
                role: Role::ControlPlane,
                name: "vip-cp-c1".into(),
                pool: new_address("x").pool
            },
        ]
    );
    // Taken meanwhile by someone else: told, never reserved twice.
    let mut taken = address(Role::ControlPlane, "10.0.0.5");
    taken.name = "vip-cp-other".into();
    s.control_plane.same_ip = vec![taken];
    let p = plan(&s);
    assert!(p.steps.is_empty(), "{p:?}");
    assert!(
        p.reports[0].note.contains("vip-cp-other"),
        "{}",
        p.reports[0].note
    );
}

#[test]
fn a_vip_that_answers_the_probe_is_not_written() {
    let mut s = snap(cluster_json());
    bound(&mut s, Role::ControlPlane, "10.0.0.10");
    bound(&mut s, Role::Ingress, "10.0.1.10");
    s.answering = ["10.0.0.10".to_owned()].into_iter().collect();
    let p = plan(&s);
    assert!(p.changes(Role::ControlPlane).is_empty(), "{p:?}");
    assert!(!p.allocations.iter().any(|a| a.role == Role::ControlPlane));
    let r = p
        .reports
        .iter()
        .find(|r| r.role == Role::ControlPlane)
        .unwrap();
    assert_eq!((r.reason, r.severity), ("VIPInUse", Severity::Warning));
    assert_eq!(p.requeue_after, Some(PROBE_RETRY));
    assert!(
        p.allocations.iter().any(|a| a.role == Role::Ingress),
        "the silent ingress VIP is still written"
    );
}

fn asking(ip: &str) -> Snapshot {
    let mut c = cluster_json();
    c["metadata"]["annotations"] = json!({ANNOTATION_INGRESS_ENABLED: "false",
        crate::names::ANNOTATION_CONTROL_PLANE_ADDRESS: ip});
    let mut s = snap(c);
    with_cp_range(&mut s);
    s
}

#[test]
fn a_requested_address_is_reserved_exactly_before_the_claim() {
    let p = plan(&asking("10.0.0.5"));
    assert_eq!(
        p.steps,
        vec![
            Step::CreateAddress {
                role: Role::ControlPlane,
                address: new_address("vip-cp-c1")
            },
            Step::CreateClaim {
                role: Role::ControlPlane,
                name: "vip-cp-c1".into(),
                pool: new_address("x").pool
            },
        ]
    );
    assert!(p.reports.is_empty(), "{:?}", p.reports);
    // Reserved, but the claim creation failed: only the claim is made.
    let mut s = asking("10.0.0.5");
    let mut ours = protected(address(Role::ControlPlane, "10.0.0.5"));
    ours.claim_owned = false;
    s.control_plane.named = Some(ours);
    assert!(matches!(
        plan(&s).steps.as_slice(),
        [Step::CreateClaim { .. }]
    ));
}

#[test]
fn a_requested_address_that_cannot_be_had_is_a_warning_and_no_claim() {
    for (ip, why) in [
        ("banana", "not an IP address"),
        ("192.168.9.9", "no candidate pool can hand it out"),
        ("10.0.0.1", "gateway of pool cp-pool"),
        ("10.0.0.0", "no candidate pool can hand it out"),
    ] {
        let p = plan(&asking(ip));
        assert!(p.steps.is_empty(), "{ip}: {p:?}");
        assert_eq!(reasons_of(&p), vec!["AddressUnavailable"], "{ip}");
        assert!(
            p.reports[0].note.contains(why),
            "{ip}: {}",
            p.reports[0].note
        );
    }
    let mut s = asking("10.0.0.5");
    let mut taken = address(Role::ControlPlane, "10.0.0.5");
    taken.namespace = "other".into();
    s.control_plane.requested_holders = vec![taken];
    let p = plan(&s);
    assert!(p.steps.is_empty());
    assert!(
        p.reports[0].note.contains("other/vip-cp-c1 already holds"),
        "{}",
        p.reports[0].note
    );
}

#[test]
fn a_requested_address_changed_after_allocation_is_refused() {
    let mut c = cluster_json();
    c["spec"]["controlPlaneEndpoint"] = json!({"host": "10.0.0.5", "port": 6443});
    c["metadata"]["annotations"] = json!({ANNOTATION_INGRESS_ENABLED: "false",
        ANNOTATION_CONTROL_PLANE_CLAIM: "vip-cp-c1/10.0.0.5",
        crate::names::ANNOTATION_CONTROL_PLANE_ADDRESS: "10.0.0.9"});
    let mut s = snap(c);
    s.class = Some(class(&[]));
    bound(&mut s, Role::ControlPlane, "10.0.0.5");
    held(&mut s, Role::ControlPlane);
    let p = plan(&s);
    assert_eq!(reasons_of(&p), vec!["AddressUnavailable"]);
    assert!(
        p.writes_nothing() && p.steps.is_empty(),
        "the written VIP stays"
    );
}

/// A metal3-like pool (unknown capacity) named to come first, and the in-cluster `cp-pool` after it.
fn with_metal3_pool() -> (Snapshot, PoolRef) {
    let mut s = snap(cluster_json());
    let mut m = pool("a-metal3", "control-plane", None);
    m.group = "ipam.metal3.io".into();
    m.kind = "IPPool".into();
    let r = m.reference();
    s.pools.push(m);
    (s, r)
}

#[test]
fn new_claim_on_an_extra_kind_pool_names_its_group() {
    let (s, r) = with_metal3_pool();
    let p = plan(&s);
    assert!(
        p.steps.iter().any(|st| matches!(st, Step::CreateClaim { role: Role::ControlPlane, pool, .. } if *pool == r)),
        "{:?}",
        p.steps
    );
}

#[test]
fn claim_on_a_pool_of_unknown_capacity_moves_on_after_the_pending_claim_timeout() {
    let (mut s, r) = with_metal3_pool();
    let mut c = claim(Role::ControlPlane, Some("uid-1"), "a-metal3", false);
    c.pool_ref = Some(r.clone());
    s.control_plane.claim = Some(c.clone());
    // 60 s old (59 s counting from the end of its creationTimestamp's second), timeout 2 m: wait the rest.
    let cp_steps = |p: &Plan| -> Vec<Step> {
        p.steps
            .iter()
            .filter(|st| {
                !matches!(
                    st,
                    Step::CreateClaim {
                        role: Role::Ingress,
                        ..
                    }
                )
            })
            .cloned()
            .collect()
    };
    let p = plan(&s);
    assert!(cp_steps(&p).is_empty(), "{:?}", p.steps);
    assert_eq!(p.requeue_after, Some(std::time::Duration::from_secs(61)));
    // Past the timeout: passed over, deleted (uid precondition), ClaimReplaced names the next candidate.
    s.pending_claims.timeout = std::time::Duration::from_secs(30);
    let p = plan(&s);
    assert_eq!(
        cp_steps(&p),
        vec![
            Step::PassOverPool {
                role: Role::ControlPlane,
                pool: r.clone()
            },
            Step::DeleteClaim {
                role: Role::ControlPlane,
                name: c.name.clone(),
                uid: c.uid.clone()
            }
        ]
    );
    let note = &p
        .reports
        .iter()
        .find(|r| r.reason == "ClaimReplaced")
        .unwrap()
        .note;
    assert!(
        note.contains("cp-pool") && note.contains("a-metal3"),
        "{note}"
    );
    // The replacement avoids the pool passed over.
    let mut after = s.clone();
    after.control_plane.claim = None;
    after.pending_claims.passed_over = vec![(Role::ControlPlane, r.clone())];
    assert!(plan(&after)
        .steps
        .iter()
        .any(|st| matches!(st, Step::CreateClaim { pool, .. } if pool.name == "cp-pool")));
    // A bound claim never moves.
    let mut bound_claim = c;
    bound_claim.address_ref = Some(bound_claim.name.clone());
    s.control_plane.claim = Some(bound_claim);
    assert!(!plan(&s)
        .steps
        .iter()
        .any(|st| matches!(st, Step::DeleteClaim { .. })));
}
