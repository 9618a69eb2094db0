//! Every decision branch, every route, and malformed input.

use serde_json::{json, Value};

use super::{
    decision::{decide, Lookup, Sent},
    routes::{handler_name, ClusterSource, Routes, HOOKS_PATH},
};
use crate::plan::{
    tests::{bound, claim, class, cluster_json, pool, snap},
    Role, RoleInputs, Snapshot,
};

const RETRY: u32 = 2;

fn found(s: Snapshot) -> Lookup {
    Lookup::Found(Box::new(s))
}

/// The request's copy as current as the cache.
fn answer(s: Snapshot) -> super::Answer {
    let sent = Sent {
        host: s.cluster.endpoint.as_ref().and_then(|e| e.host.clone()),
        cluster_vip: s
            .cluster
            .variable("clusterVip")
            .and_then(|v| v.as_str())
            .map(str::to_owned),
    };
    decide(&found(s), &sent, "ns", "c1", RETRY)
}

fn with_endpoint(host: &str, cluster_vip: Option<&str>) -> Value {
    let mut c = cluster_json();
    c["spec"]["controlPlaneEndpoint"] = json!({"host": host, "port": 6443});
    if let Some(v) = cluster_vip {
        c["spec"]["topology"]["variables"] = json!([{"name": "clusterVip", "value": v}]);
    }
    c
}

#[test]
fn caches_not_synced_blocks_with_a_reason() {
    let a = decide(&Lookup::NotReady, &Sent::default(), "ns", "c1", RETRY);
    assert_eq!(a.retry_after_seconds, RETRY);
    assert!(a.message.contains("caches"), "{}", a.message);
}

#[test]
fn cluster_not_yet_cached_blocks() {
    let a = decide(&Lookup::Missing, &Sent::default(), "ns", "c1", RETRY);
    assert_eq!(a.retry_after_seconds, RETRY);
    assert!(a.message.contains("ns/c1"), "{}", a.message);
}

#[test]
fn new_cluster_with_a_matching_pool_waits_for_the_claim() {
    let a = answer(snap(cluster_json()));
    assert_eq!(a.retry_after_seconds, RETRY);
    assert!(a.message.contains("cp-pool"), "{}", a.message);
}

#[test]
fn pending_claim_names_the_pool_it_waits_on() {
    let mut s = snap(cluster_json());
    s.control_plane = RoleInputs {
        claim: Some(claim(Role::ControlPlane, Some("uid-1"), "cp-pool", false)),
        address: None,
        ..Default::default()
    };
    let a = answer(s);
    assert_eq!(a.retry_after_seconds, RETRY);
    assert_eq!(
        a.message,
        "waiting for IPAM pool cp-pool to assign an address to IPAddressClaim ns/vip-cp-c1"
    );
}

#[test]
fn exhausted_pool_is_named_after_the_grace_period() {
    let mut s = snap(cluster_json());
    s.pools = vec![pool("cp-pool", "control-plane", Some(0))];
    s.control_plane = RoleInputs {
        claim: Some(claim(Role::ControlPlane, Some("uid-1"), "cp-pool", false)),
        address: None,
        ..Default::default()
    };
    let a = answer(s);
    assert_eq!(a.retry_after_seconds, RETRY);
    assert!(
        a.message.starts_with("pool cp-pool is exhausted"),
        "{}",
        a.message
    );
}

#[test]
fn address_assigned_but_not_written_still_blocks() {
    let mut s = snap(cluster_json());
    bound(&mut s, Role::ControlPlane, "10.0.0.5");
    let a = answer(s);
    assert_eq!(a.retry_after_seconds, RETRY);
    assert!(a.message.contains("10.0.0.5"), "{}", a.message);
}

#[test]
fn written_host_and_variable_unblock() {
    let mut s = snap(with_endpoint("10.0.0.5", Some("10.0.0.5")));
    bound(&mut s, Role::ControlPlane, "10.0.0.5");
    assert_eq!(answer(s).retry_after_seconds, 0);
}

#[test]
fn a_host_another_cluster_answers_for_is_held_naming_it() {
    let mut s = snap(with_endpoint("192.168.1.9", Some("192.168.1.9")));
    s.same_host = vec!["other-ns/prod-db".into()];
    let a = answer(s.clone());
    assert_eq!(a.retry_after_seconds, RETRY);
    assert!(
        a.message.contains("other-ns/prod-db") && a.message.contains("192.168.1.9"),
        "{}",
        a.message
    );
    s.same_host.clear();
    assert_eq!(
        answer(s).retry_after_seconds,
        0,
        "alone on its address: let through"
    );
}

#[test]
fn a_request_copy_older_than_our_write_still_blocks() {
    let mut s = snap(with_endpoint("10.0.0.5", Some("10.0.0.5")));
    bound(&mut s, Role::ControlPlane, "10.0.0.5");
    for sent in [
        Sent::default(),
        Sent {
            host: Some("10.0.0.5".into()),
            cluster_vip: None,
        },
    ] {
        let a = decide(&found(s.clone()), &sent, "ns", "c1", RETRY);
        assert_eq!(a.retry_after_seconds, RETRY, "{sent:?}");
        assert!(a.message.contains("topology controller"), "{}", a.message);
    }
}

#[test]
fn request_fields_are_read_from_either_api_version() {
    let body = json!({"spec": {"controlPlaneEndpoint": {"host": "10.0.0.5", "port": 6443},
        "topology": {"class": "gold", "variables": [{"name": "other", "value": 1}, {"name": "clusterVip", "value": "10.0.0.5"}]}}});
    assert_eq!(
        Sent::from_request_cluster(Some(&body)),
        Sent {
            host: Some("10.0.0.5".into()),
            cluster_vip: Some("10.0.0.5".into())
        }
    );
    assert_eq!(Sent::from_request_cluster(None), Sent::default());
    let odd = json!({"spec": {"controlPlaneEndpoint": "x", "topology": {"variables": {"a": 1}}}});
    assert_eq!(Sent::from_request_cluster(Some(&odd)), Sent::default());
}

#[test]
fn host_written_but_variable_missing_blocks() {
    let mut s = snap(with_endpoint("10.0.0.5", None));
    bound(&mut s, Role::ControlPlane, "10.0.0.5");
    let a = answer(s);
    assert_eq!(a.retry_after_seconds, RETRY);
    assert!(a.message.contains("clusterVip"), "{}", a.message);
}

#[test]
fn host_written_and_class_without_variable_unblocks() {
    let mut s = snap(with_endpoint("10.0.0.5", None));
    s.class = Some(class(&[]));
    bound(&mut s, Role::ControlPlane, "10.0.0.5");
    assert_eq!(answer(s).retry_after_seconds, 0);
}

#[test]
fn manual_endpoint_waits_only_for_the_variable_mirror() {
    let s = snap(with_endpoint("192.168.1.1", None));
    assert_eq!(answer(s).retry_after_seconds, RETRY);
    let s = snap(with_endpoint("192.168.1.1", Some("192.168.1.1")));
    assert_eq!(answer(s).retry_after_seconds, 0);
    // A user's own clusterVip that differs is left alone, so it must not block forever.
    let s = snap(with_endpoint("192.168.1.1", Some("api.example.com")));
    assert_eq!(answer(s).retry_after_seconds, 0);
}

#[test]
fn no_matching_pool_does_not_block() {
    let mut s = snap(cluster_json());
    s.pools = vec![pool("ing-pool", "ingress", Some(5))];
    assert_eq!(answer(s).retry_after_seconds, 0);
}

#[test]
fn ingress_only_pool_matters_nothing() {
    let mut s = snap(with_endpoint("10.0.0.5", Some("10.0.0.5")));
    s.pools = vec![pool("ing-pool", "ingress", Some(0))];
    bound(&mut s, Role::ControlPlane, "10.0.0.5");
    assert_eq!(answer(s).retry_after_seconds, 0);
}

#[test]
fn unknown_class_does_not_block() {
    let mut s = snap(cluster_json());
    s.class = None;
    assert_eq!(answer(s).retry_after_seconds, 0);
}

#[test]
fn non_topology_paused_and_deleting_clusters_do_not_block() {
    let mut c = cluster_json();
    c["spec"] = json!({"controlPlaneRef": {"apiGroup": "x", "kind": "Y", "name": "z"}});
    assert_eq!(answer(snap(c)).retry_after_seconds, 0);
    let mut c = cluster_json();
    c["spec"]["paused"] = json!(true);
    assert_eq!(answer(snap(c)).retry_after_seconds, 0);
    let mut c = cluster_json();
    c["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    c["metadata"]["finalizers"] = json!(["x"]);
    assert_eq!(answer(snap(c)).retry_after_seconds, 0);
}

#[test]
fn claim_of_another_owner_does_not_block() {
    let mut s = snap(cluster_json());
    s.control_plane = RoleInputs {
        claim: Some(claim(
            Role::ControlPlane,
            Some("someone-else"),
            "cp-pool",
            false,
        )),
        address: None,
        ..Default::default()
    };
    assert_eq!(answer(s).retry_after_seconds, 0);
}

#[test]
fn retry_is_never_zero_when_blocking() {
    let a = decide(&Lookup::NotReady, &Sent::default(), "ns", "c1", 0);
    assert_eq!(a.retry_after_seconds, 1);
}

// ---- routes ----

struct Fixed(
    fn() -> Lookup,
    std::sync::Mutex<Vec<(String, String, Option<String>)>>,
);

impl ClusterSource for Fixed {
    fn lookup(&self, ns: &str, name: &str, uid: Option<&str>) -> Lookup {
        if let Ok(mut seen) = self.1.lock() {
            seen.push((ns.into(), name.into(), uid.map(str::to_owned)));
        }
        (self.0)()
    }
}

fn routes() -> Routes {
    Routes {
        handler: handler_name("vip-allocator"),
        retry_after_seconds: RETRY,
    }
}

fn waiting() -> Fixed {
    Fixed(|| Lookup::Missing, Default::default())
}

const BCC: &str = "/hooks.runtime.cluster.x-k8s.io/v1alpha1/beforeclustercreate/vip-allocator";

#[test]
fn handler_names_are_dns_labels() {
    assert_eq!(handler_name("vip-allocator"), "vip-allocator");
    assert_eq!(handler_name("VIP_Allocator.v2"), "vip-allocator-v2");
    assert_eq!(handler_name("--"), "vip-allocator");
    let long = handler_name(&"a-".repeat(80));
    assert!(long.len() <= 63 && !long.ends_with('-'), "{long}");
}

#[test]
fn discovery_declares_one_failing_handler() {
    let r = routes().handle(
        "POST",
        &format!("{HOOKS_PATH}/discovery"),
        br#"{"apiVersion":"hooks.runtime.cluster.x-k8s.io/v1alpha1","kind":"DiscoveryRequest"}"#,
        &waiting(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body["status"], "Success");
    assert_eq!((r.handler, r.result), ("discovery", "success"));
    let handlers = r.body["handlers"].as_array().unwrap();
    assert_eq!(handlers.len(), 1);
    assert_eq!(handlers[0]["name"], "vip-allocator");
    assert_eq!(handlers[0]["requestHook"]["hook"], "BeforeClusterCreate");
    assert_eq!(handlers[0]["failurePolicy"], "Fail");
    assert!(handlers[0]["timeoutSeconds"].as_u64().unwrap() <= 10);
}

#[test]
fn before_cluster_create_reads_the_cache_by_name_for_both_api_versions() {
    for cluster in [
        json!({"apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Cluster",
               "metadata": {"name": "c1", "namespace": "ns", "uid": "u1"},
               "spec": {"topology": {"class": "gold", "version": "v1.30.0"}}}),
        json!({"metadata": {"name": "c1", "namespace": "ns"},
               "spec": {"topology": {"classRef": {"name": "gold"}, "version": "v1.33.0"}}}),
    ] {
        let src = waiting();
        let body = json!({"apiVersion": "hooks.runtime.cluster.x-k8s.io/v1alpha1",
            "kind": "BeforeClusterCreateRequest", "settings": {}, "cluster": cluster});
        let r = routes().handle("POST", BCC, body.to_string().as_bytes(), &src);
        assert_eq!(r.status, 200);
        assert_eq!(r.body["kind"], "BeforeClusterCreateResponse");
        assert_eq!(r.body["status"], "Success");
        assert_eq!(r.body["retryAfterSeconds"], RETRY);
        assert_eq!((r.handler, r.result), ("BeforeClusterCreate", "blocked"));
        let seen = src.1.lock().unwrap();
        assert_eq!((seen[0].0.as_str(), seen[0].1.as_str()), ("ns", "c1"));
    }
}

#[test]
fn the_decision_from_the_cache_reaches_the_response() {
    let src = Fixed(
        || {
            let mut s = snap(with_endpoint("10.0.0.5", Some("10.0.0.5")));
            bound(&mut s, Role::ControlPlane, "10.0.0.5");
            found(s)
        },
        Default::default(),
    );
    let body = json!({"kind": "BeforeClusterCreateRequest",
        "cluster": {"metadata": {"name": "c1", "namespace": "ns", "uid": "uid-1"},
            "spec": {"controlPlaneEndpoint": {"host": "10.0.0.5", "port": 6443},
                "topology": {"classRef": {"name": "gold"}, "variables": [{"name": "clusterVip", "value": "10.0.0.5"}]}}}});
    let r = routes().handle(
        "POST",
        &format!("{BCC}/"),
        body.to_string().as_bytes(),
        &src,
    );
    assert_eq!(r.body["status"], "Success");
    assert_eq!(r.body["retryAfterSeconds"], 0);
    assert_eq!((r.handler, r.result), ("BeforeClusterCreate", "success"));
    assert_eq!(src.1.lock().unwrap()[0].2.as_deref(), Some("uid-1"));
}

#[test]
fn malformed_requests_get_failure_responses() {
    let r = routes();
    for body in [
        &b"{not json"[..],
        b"[]",
        b"\"x\"",
        br#"{"kind":"DiscoveryRequest"}"#,
        br#"{"kind":"BeforeClusterCreateRequest"}"#,
        br#"{"kind":"BeforeClusterCreateRequest","cluster":{"metadata":{"name":"c1"}}}"#,
        br#"{"kind":"BeforeClusterCreateRequest","cluster":{"metadata":{"name":7,"namespace":[]}}}"#,
        b"",
        &[0xff, 0xfe, 0x00],
    ] {
        let reply = r.handle("POST", BCC, body, &waiting());
        assert_eq!(reply.status, 200, "{body:?}");
        assert_eq!(reply.body["status"], "Failure", "{body:?}");
        assert!(!reply.body["message"].as_str().unwrap().is_empty());
        assert_eq!((reply.handler, reply.result), ("BeforeClusterCreate", "failure"));
    }
    let reply = r.handle(
        "POST",
        &format!("{HOOKS_PATH}/discovery"),
        b"nope",
        &waiting(),
    );
    assert_eq!(reply.body["status"], "Failure");
    assert_eq!((reply.handler, reply.result), ("discovery", "failure"));
}

#[test]
fn unknown_routes_are_404_and_other_methods_405() {
    let r = routes();
    for path in [
        "/",
        "/hooks.runtime.cluster.x-k8s.io/v1alpha1/beforeclustercreate/other",
        "/hooks.runtime.cluster.x-k8s.io/v1alpha1/afterclusterupgrade/vip-allocator",
        "/hooks.runtime.cluster.x-k8s.io/v1alpha1/beforeclustercreate",
    ] {
        let reply = r.handle("POST", path, b"{}", &waiting());
        assert_eq!(reply.status, 404, "{path}");
        assert_eq!((reply.handler, reply.result), ("other", "rejected"));
    }
    let reply = r.handle("GET", BCC, b"", &waiting());
    assert_eq!(reply.status, 405);
    assert_eq!(
        (reply.handler, reply.result),
        ("BeforeClusterCreate", "rejected")
    );
}
