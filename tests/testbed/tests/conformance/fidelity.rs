//! Real-server refusals mirrored by default (README "Real-server behaviours mirrored"): JSON-patch `test` on
//! Go-encoded bytes with kube-apiserver's generic 422, CAPI's Cluster webhook for topology variables, Event
//! validation, and the black-hole / slow-response faults.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use testbed::{Profile, Testbed, TestbedOptions};

use crate::common::*;

const P: Profile = Profile::Capi112;
const GENERIC: &str = "the server rejected our request due to an error in our request";

async fn json_patch(tb: &Testbed, p: Profile, name: &str, ops: Value) -> Raw {
    raw(
        tb,
        "PATCH",
        &format!(
            "/apis/cluster.x-k8s.io/{}/namespaces/{NS}/clusters/{name}",
            cluster_version(p)
        ),
        Some("application/json-patch+json"),
        &ops.to_string(),
    )
    .await
}

fn assert_generic_422(r: &Raw) {
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["reason"], "Invalid");
    assert_eq!(r.body["message"], GENERIC);
    assert_eq!(
        r.body["details"],
        json!({}),
        "NewGenericServerResponse(422, …, isUnexpectedResponse=false) sends no causes"
    );
}

#[tokio::test]
async fn json_patch_test_compares_go_encoded_bytes_and_fails_generically() {
    let tb = start_without_ipam(P).await;
    let api = api(&tb, &clusters(P), Some(NS));
    let vars = json!([{"name": "x", "value": "a&&b"}, {"name": "clusterVip", "value": "10.0.0.1"},
        {"name": "a", "value": 1}]);
    create(&api, cluster_json(P, "j", vars)).await;
    // Equal values, but the stored leaf is Go-encoded as "a\u0026\u0026b".
    let r = json_patch(
        &tb,
        P,
        "j",
        json!([{"op": "test", "path": "/spec/topology/variables/0", "value": {"name": "x", "value": "a&&b"}},
            {"op": "add", "path": "/metadata/labels", "value": {"applied": "yes"}}]),
    )
    .await;
    assert_generic_422(&r);
    assert!(api.get("j").await.unwrap().metadata.labels.is_none());
    // The same guard spelled with Go's escapes passes; so does a value without HTML characters.
    let r = json_patch(
        &tb,
        P,
        "j",
        json!([{"op": "test", "path": "/spec/topology/variables/0/value", "value": "a\u{26}\u{26}b"}]),
    )
    .await;
    assert_generic_422(&r);
    let escaped = r#"[{"op":"test","path":"/spec/topology/variables/0/value","value":"a\u0026\u0026b"},
        {"op":"test","path":"/spec/topology/variables/1","value":{"value":"10.0.0.1","name":"clusterVip"}},
        {"op":"replace","path":"/spec/topology/variables/1/value","value":"10.0.0.2"}]"#;
    let r = raw(
        &tb,
        "PATCH",
        "/apis/cluster.x-k8s.io/v1beta2/namespaces/default/clusters/j",
        Some("application/json-patch+json"),
        escaped,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["spec"]["topology"]["variables"][1]["value"],
        "10.0.0.2"
    );
    // 1.0 is not 1; 1 is.
    let one_float = r#"[{"op":"test","path":"/spec/topology/variables/2/value","value":1.0}]"#;
    let r = raw(
        &tb,
        "PATCH",
        "/apis/cluster.x-k8s.io/v1beta2/namespaces/default/clusters/j",
        Some("application/json-patch+json"),
        one_float,
    )
    .await;
    assert_generic_422(&r);
    let r = json_patch(
        &tb,
        P,
        "j",
        json!([{"op": "test", "path": "/spec/topology/variables/2/value", "value": 1}]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // evanphx v4: a missing object key tests equal to null, a missing parent or an index out of range does not.
    let r = json_patch(
        &tb,
        P,
        "j",
        json!([{"op": "test", "path": "/metadata/finalizers", "value": null}]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    for path in ["/spec/topology/variables/9", "/spec/nothing/here"] {
        let r = json_patch(
            &tb,
            P,
            "j",
            json!([{"op": "test", "path": path, "value": null}]),
        )
        .await;
        assert_generic_422(&r);
    }
    let r = json_patch(
        &tb,
        P,
        "j",
        json!([{"op": "remove", "path": "/metadata/labels/none"}]),
    )
    .await;
    assert_generic_422(&r);
    // Not a JSON patch at all: 400.
    let r = json_patch(&tb, P, "j", json!({"op": "test"})).await;
    assert_eq!(
        (r.status, r.body["reason"].as_str()),
        (400, Some("BadRequest"))
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn json_patch_test_by_value_when_turned_off() {
    let tb = Testbed::start(TestbedOptions {
        ipam: false,
        bytewise_json_patch_test: false,
        ..TestbedOptions::profile(P)
    })
    .await
    .unwrap();
    create_demo_class(&tb, P).await;
    let api = api(&tb, &clusters(P), Some(NS));
    create(
        &api,
        cluster_json(P, "j", json!([{"name": "x", "value": "a&&b"}])),
    )
    .await;
    let r = json_patch(
        &tb,
        P,
        "j",
        json!([{"op": "test", "path": "/spec/topology/variables/0", "value": {"name": "x", "value": "a&&b"}}]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    tb.shutdown().await;
}

/// A ClusterClass whose variables exercise the schema checks.
async fn vars_class(tb: &Testbed, p: Profile) {
    let class = class_json(
        p,
        "vars",
        &[
            (
                "clusterVip",
                false,
                json!({"type": "string", "format": "ipv6"}),
            ),
            ("mode", false, json!({"type": "string", "enum": ["a", "b"]})),
            ("iface", false, json!({"type": "string", "default": "eth0"})),
            ("short", false, json!({"type": "string", "maxLength": 3})),
            ("port", false, json!({"type": "integer", "minimum": 1})),
            (
                "nic",
                false,
                json!({"type": "string", "pattern": "^(ens|eth)[0-9]+$"}),
            ),
        ],
    );
    create(&api(tb, &clusterclasses(p), Some(NS)), class).await;
}

fn with_class(mut c: Value, class: &str) -> Value {
    let topo = &mut c["spec"]["topology"];
    if topo.get("classRef").is_some() {
        topo["classRef"]["name"] = json!(class);
    } else {
        topo["class"] = json!(class);
    }
    c
}

#[tokio::test]
async fn capi_webhook_refuses_undefined_and_invalid_variables_on_every_write() {
    for p in [Profile::Capi112, Profile::Capi110] {
        let tb = start_without_ipam(p).await;
        vars_class(&tb, p).await;
        let classes = api(&tb, &clusterclasses(p), Some(NS));
        let cc = classes.get("vars").await.unwrap();
        assert_eq!(cc.data["status"]["observedGeneration"], 1, "reconciled");
        assert_eq!(
            cc.data["status"]["variables"][0]["definitions"][0]["from"],
            "inline"
        );
        let api = api(&tb, &clusters(p), Some(NS));
        let c = create(
            &api,
            with_class(
                cluster_json(p, "c1", json!([{"name": "clusterVip", "value": "fd00::1"}])),
                "vars",
            ),
        )
        .await;
        assert_eq!(
            c.data["spec"]["topology"]["variables"][1],
            json!({"name": "iface", "value": "eth0"}),
            "defaulted by the webhook"
        );
        // JSON patch: an undefined variable, plus a label that must not be applied either.
        let r = json_patch(
            &tb,
            p,
            "c1",
            json!([{"op": "add", "path": "/spec/topology/variables/-", "value": {"name": "nope", "value": "x"}},
                {"op": "add", "path": "/metadata/labels", "value": {"other": "owner"}}]),
        )
        .await;
        assert_eq!(
            (r.status, r.body["reason"].as_str()),
            (422, Some("Invalid"))
        );
        assert_eq!(
            r.body["message"],
            r#"admission webhook "default.cluster.cluster.x-k8s.io" denied the request: Cluster.cluster.x-k8s.io "c1" is invalid: spec.topology.variables[nope]: Invalid value: "\"x\"": variable is not defined"#
        );
        assert_eq!(r.body["details"]["kind"], "Cluster");
        assert_eq!(r.body["details"]["group"], "cluster.x-k8s.io");
        assert_eq!(
            r.body["details"]["causes"][0]["field"],
            "spec.topology.variables[nope]"
        );
        assert!(api.get("c1").await.unwrap().metadata.labels.is_none());
        // Server-side apply of one entry (list-map): an IPv4 address where the schema says ipv6.
        let mut applied = with_class(
            cluster_json(
                p,
                "c1",
                json!([{"name": "clusterVip", "value": "10.0.0.1"}]),
            ),
            "vars",
        );
        applied["spec"]["topology"]
            .as_object_mut()
            .unwrap()
            .remove("version");
        let e = api_err(
            api.patch(
                "c1",
                &PatchParams::apply("vip").force(),
                &Patch::Apply(applied),
            )
            .await,
        );
        assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
        assert_eq!(
            e.message,
            r#"admission webhook "default.cluster.cluster.x-k8s.io" denied the request: Cluster.cluster.x-k8s.io "c1" is invalid: spec.topology.variables[clusterVip].value: Invalid value: "\"10.0.0.1\"": must be of type ipv6: "10.0.0.1""#
        );
        let cause = &e.details.unwrap().causes[0];
        assert_eq!(cause.field, "spec.topology.variables[clusterVip].value");
        assert_eq!(cause.reason, "FieldValueTypeInvalid");
        // Merge patch (replaces the whole list) and update: enum, maxLength, minimum.
        let e = api_err(
            api.patch(
                "c1",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"topology": {"variables": [
                    {"name": "mode", "value": "c"}, {"name": "short", "value": "long"},
                    {"name": "port", "value": 0}]}}})),
            )
            .await,
        );
        let fields: Vec<String> = e
            .details
            .unwrap()
            .causes
            .iter()
            .map(|c| c.field.clone())
            .collect();
        assert_eq!(
            fields,
            [
                "spec.topology.variables[mode].value",
                "spec.topology.variables[short].value",
                "spec.topology.variables[port].value"
            ]
        );
        assert!(
            e.message
                .contains(r#"Unsupported value: "\"c\"": supported values: "a", "b""#),
            "{}",
            e.message
        );
        let e = api_err(
            api.patch(
                "c1",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"topology": {"variables": [{"name": "nic", "value": "wlan0"}]}}})),
            )
            .await,
        );
        assert!(
            e.message.ends_with(
                r#"spec.topology.variables[nic].value: Invalid value: "\"wlan0\"": should match '^(ens|eth)[0-9]+$'"#
            ),
            "{}",
            e.message
        );
        let mut cur = api.get("c1").await.unwrap();
        cur.data["spec"]["topology"]["variables"][0]["value"] = json!("not-an-ip");
        let e = api_err(api.replace("c1", &PostParams::default(), &cur).await);
        assert!(e.message.contains("must be of type ipv6"), "{}", e.message);
        tb.shutdown().await;
    }
}

#[tokio::test]
async fn capi_webhook_required_missing_and_unreconciled_classes() {
    let tb = start_without_ipam(P).await;
    let classes = api(&tb, &clusterclasses(P), Some(NS));
    create(
        &classes,
        class_json(P, "strict", &[("must", true, json!({"type": "string"}))]),
    )
    .await;
    let cls = api(&tb, &clusters(P), Some(NS));
    let e = api_err(
        cls.create(
            &PostParams::default(),
            &dynobj(with_class(cluster_json(P, "r1", json!([])), "strict")),
        )
        .await,
    );
    assert_eq!(
        e.message,
        r#"admission webhook "default.cluster.cluster.x-k8s.io" denied the request: Cluster.cluster.x-k8s.io "r1" is invalid: spec.topology.variables: Required value: required variable "must" must be set"#
    );
    // The validating webhook: Cluster names are label values, versions semver; the defaulting one adds the `v`.
    let mut long = cluster_json(P, &"l".repeat(64), json!([]));
    long["spec"]["topology"]["version"] = json!("1.32");
    let e = api_err(cls.create(&PostParams::default(), &dynobj(long)).await);
    let causes = e.details.unwrap().causes;
    assert_eq!(
        (causes[0].field.as_str(), causes[1].field.as_str()),
        ("metadata.name", "spec.topology.version")
    );
    assert!(
        e.message.starts_with(r#"admission webhook "validation.cluster.cluster.x-k8s.io" denied the request: "#)
            && e.message.contains(r#"spec.topology.version: Invalid value: "v1.32": version must be a valid semantic version"#),
        "{}",
        e.message
    );
    let mut bare = cluster_json(P, "bare", json!([]));
    bare["spec"]["topology"]["version"] = json!("1.32.0");
    let c = create(&cls, bare).await;
    assert_eq!(c.data["spec"]["topology"]["version"], "v1.32.0");
    // A missing class: create is allowed with a warning, variables unchecked; updates are refused.
    let body = with_class(
        cluster_json(P, "early", json!([{"name": "anything", "value": 1}])),
        "later",
    );
    let r = raw(
        &tb,
        "POST",
        "/apis/cluster.x-k8s.io/v1beta2/namespaces/default/clusters",
        None,
        &body.to_string(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let warning = r.headers.get("warning").unwrap().to_str().unwrap();
    assert!(
        warning.contains(
            "Cluster refers to ClusterClass default/later, but this ClusterClass does not exist"
        ),
        "{warning}"
    );
    let e = api_err(
        cls.patch(
            "early",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await,
    );
    assert_eq!(
        e.message,
        r#"admission webhook "validation.cluster.cluster.x-k8s.io" denied the request: Cluster.cluster.x-k8s.io "early" is invalid: spec.topology.class: Internal error: ClusterClass default/later not found"#
    );
    // A class the controller has not reconciled (paused here): variables are not checked.
    let mut paused = class_json(
        P,
        "paused",
        &[("declared", false, json!({"type": "string"}))],
    );
    paused["metadata"]["annotations"] = json!({"cluster.x-k8s.io/paused": ""});
    create(&classes, paused).await;
    create(
        &cls,
        with_class(
            cluster_json(P, "loose", json!([{"name": "anything", "value": 1}])),
            "paused",
        ),
    )
    .await;
    tb.shutdown().await;

    let off = Testbed::start(TestbedOptions {
        ipam: false,
        capi_cluster_webhook: false,
        ..TestbedOptions::profile(P)
    })
    .await
    .unwrap();
    let cls = api(&off, &clusters(P), Some(NS));
    create(
        &cls,
        cluster_json(P, "free", json!([{"name": "anything", "value": 1}])),
    )
    .await;
    cls.patch(
        "free",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"paused": true}})),
    )
    .await
    .unwrap();
    off.shutdown().await;
}

fn event_v1(name: &str, note: &str) -> Value {
    json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": name, "namespace": NS},
        "regarding": {"kind": "Cluster", "namespace": NS, "name": "c1"},
        "eventTime": "2026-01-01T00:00:00.000000Z", "type": "Normal", "reason": "VipAllocated",
        "action": "Allocate", "reportingController": "vip.capi.gorizond.io/allocator",
        "reportingInstance": "pod-1", "note": note})
}

#[tokio::test]
async fn events_are_validated_like_kube_apiserver() {
    let tb = start_without_ipam(P).await;
    let evs = api(&tb, &ar("events.k8s.io", "v1", "Event", "events"), Some(NS));
    create(&evs, event_v1("fits", &"x".repeat(1024))).await;
    let e = api_err(
        evs.create(
            &PostParams::default(),
            &dynobj(event_v1("long", &"x".repeat(1025))),
        )
        .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        e.message,
        r#"Event "long" is invalid: message: Invalid value: "": can have at most 1024 characters"#
    );
    // Bytes, not characters: 513 two-byte characters are too many.
    let e = api_err(
        evs.create(
            &PostParams::default(),
            &dynobj(event_v1("utf8", &"é".repeat(513))),
        )
        .await,
    );
    assert_eq!(e.details.unwrap().causes[0].field, "message");
    let mut bad = event_v1("bad", "ok");
    bad["type"] = json!("Info");
    bad["reason"] = json!("r".repeat(129));
    bad.as_object_mut().unwrap().remove("reportingController");
    bad.as_object_mut().unwrap().remove("eventTime");
    let e = api_err(evs.create(&PostParams::default(), &dynobj(bad)).await);
    let fields: Vec<String> = e
        .details
        .unwrap()
        .causes
        .iter()
        .map(|c| c.field.clone())
        .collect();
    assert_eq!(fields, ["eventTime", "type"], "{}", e.message);
    let mut bad = event_v1("bad2", "ok");
    bad["reason"] = json!("r".repeat(129));
    bad.as_object_mut().unwrap().remove("reportingController");
    let e = api_err(evs.create(&PostParams::default(), &dynobj(bad)).await);
    let fields: Vec<String> = e
        .details
        .unwrap()
        .causes
        .iter()
        .map(|c| c.field.clone())
        .collect();
    // Upstream also runs IsQualifiedName on the empty name: two more errors on the same field.
    assert_eq!(
        fields,
        [
            "reportingController",
            "reportingController",
            "reportingController",
            "reason"
        ],
        "{}",
        e.message
    );
    // Core v1: the limits apply to Events with an eventTime only.
    let core = api(&tb, &ar("", "v1", "Event", "events"), Some(NS));
    let legacy = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "old", "namespace": NS},
        "involvedObject": {"kind": "Cluster", "namespace": NS, "name": "c1"}, "reason": "R",
        "message": "y".repeat(2000), "type": "Normal"});
    create(&core, legacy).await;
    let mut new_style = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "new", "namespace": NS},
        "involvedObject": {"kind": "Cluster", "namespace": NS, "name": "c1"}, "reason": "R",
        "action": "A", "reportingComponent": "c", "reportingInstance": "i", "type": "Normal",
        "eventTime": "2026-01-01T00:00:00.000000Z"});
    new_style["message"] = json!("y".repeat(1025));
    let e = api_err(
        core.create(&PostParams::default(), &dynobj(new_style))
            .await,
    );
    assert_eq!(e.details.unwrap().causes[0].field, "message");
    // events.k8s.io/v1 updates keep the note immutable.
    let e = api_err(
        evs.patch(
            "fits",
            &PatchParams::default(),
            &Patch::Merge(json!({"note": "changed"})),
        )
        .await,
    );
    assert!(
        e.message.contains("message: Invalid value"),
        "{}",
        e.message
    );
    tb.shutdown().await;

    let off = Testbed::start(TestbedOptions {
        ipam: false,
        event_validation: false,
        ..TestbedOptions::profile(P)
    })
    .await
    .unwrap();
    let evs = api(
        &off,
        &ar("events.k8s.io", "v1", "Event", "events"),
        Some(NS),
    );
    create(&evs, event_v1("long", &"x".repeat(5000))).await;
    off.shutdown().await;
}

#[tokio::test]
async fn black_hole_never_answers_applies_nothing_and_blocks_nothing() {
    let tb = start_without_ipam(P).await;
    tb.faults().black_hole("create", Some("events"));
    let evs = api(&tb, &ar("events.k8s.io", "v1", "Event", "events"), Some(NS));
    let started = Instant::now();
    let held = tokio::time::timeout(
        Duration::from_secs(2),
        evs.create(&PostParams::default(), &dynobj(event_v1("lost", "hi"))),
    )
    .await;
    assert!(held.is_err(), "no answer within 2 s: {held:?}");
    assert!(started.elapsed() >= Duration::from_secs(2));
    // Another request is answered meanwhile, and the event was never created.
    let ns: Api<Namespace> = Api::all(tb.client());
    ns.get("default").await.unwrap();
    assert!(evs.get_opt("lost").await.unwrap().is_none());
    // A request still held does not delay shutdown.
    let client = tb.client();
    let pending = tokio::spawn(async move {
        let evs: Api<kube::api::DynamicObject> =
            Api::namespaced_with(client, NS, &ar("events.k8s.io", "v1", "Event", "events"));
        evs.create(&PostParams::default(), &dynobj(event_v1("lost2", "hi")))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Set through the runtime endpoint too; `clear` removes it.
    let r = raw(
        &tb,
        "POST",
        "/testbed/faults",
        None,
        r#"{"black_holes":[{"verb":"create","resource":"events"}],"slow":[{"verb":"get","resource":"namespaces","delay_ms":300}]}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let t = Instant::now();
    ns.get("default").await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300), "slow get");
    let t = Instant::now();
    evs.get_opt("x").await.unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "other resources are not slowed"
    );
    tb.faults().clear();
    assert!(tb.faults().get().black_holes.is_empty() && tb.faults().get().slow.is_empty());
    create(&evs, event_v1("after", "hi")).await;
    tokio::time::timeout(Duration::from_secs(10), tb.shutdown())
        .await
        .expect("shutdown is not blocked by a held request");
    let res = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("the held request ends when the testbed stops")
        .unwrap();
    assert!(res.is_err(), "it never got an answer: {res:?}");
}
