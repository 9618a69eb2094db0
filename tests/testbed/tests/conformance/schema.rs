//! Issue 2, point 6: validation with field paths, pruning, defaults, fieldValidation.

use serde_json::json;
use testbed::Profile;

use crate::common::*;

#[tokio::test]
async fn schema_violations_are_invalid_with_field_paths() {
    let tb = start_without_ipam(Profile::Capi112).await;
    let api = api(&tb, &clusters(Profile::Capi112), Some(NS));
    let mut v = cluster_json(Profile::Capi112, "bad", json!([]));
    v["spec"]["controlPlaneEndpoint"] = json!({"host": "", "port": 70000});
    let e = api_err(api.create(&Default::default(), &dynobj(v)).await);
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    let causes = e.details.unwrap().causes;
    let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
    assert!(
        fields.contains(&"spec.controlPlaneEndpoint.host"),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"spec.controlPlaneEndpoint.port"),
        "{fields:?}"
    );
    assert!(
        e.message
            .starts_with("Cluster.cluster.x-k8s.io \"bad\" is invalid: ["),
        "{}",
        e.message
    );
    let mut v = cluster_json(Profile::Capi112, "bad2", json!([]));
    v["spec"]["topology"]
        .as_object_mut()
        .unwrap()
        .remove("version");
    let e = api_err(api.create(&Default::default(), &dynobj(v)).await);
    assert_eq!(
        e.message,
        "Cluster.cluster.x-k8s.io \"bad2\" is invalid: spec.topology.version: Required value"
    );
    let v = cluster_json(
        Profile::Capi112,
        "dup",
        json!([{"name": "a", "value": 1}, {"name": "a", "value": 2}]),
    );
    let e = api_err(api.create(&Default::default(), &dynobj(v)).await);
    // CAPI's defaulting webhook runs before schema validation and refuses the repeated name first.
    assert!(
        e.message.contains(
            r#"spec.topology.variables[a]: Invalid value: "2": variable "a" is set more than once"#
        ),
        "{}",
        e.message
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn unknown_fields_are_pruned_warned_or_rejected_by_field_validation() {
    let tb = start_without_ipam(Profile::Capi112).await;
    let mut v = cluster_json(
        Profile::Capi112,
        "pr",
        json!([{"name": "x", "value": {"deep": {"kept": true}}}]),
    );
    v["spec"]["bogus"] = json!(1);
    let body = v.to_string();
    let base = "/apis/cluster.x-k8s.io/v1beta2/namespaces/default/clusters";
    let strict = raw(
        &tb,
        "POST",
        &format!("{base}?fieldValidation=Strict"),
        None,
        &body,
    )
    .await;
    assert_eq!(strict.status, 400);
    assert!(
        strict.body["message"]
            .as_str()
            .unwrap()
            .contains("unknown field \"spec.bogus\""),
        "{}",
        strict.body
    );
    let warn = raw(
        &tb,
        "POST",
        &format!("{base}?fieldValidation=Warn"),
        None,
        &body,
    )
    .await;
    assert_eq!(warn.status, 201);
    let w = warn
        .headers
        .get("warning")
        .expect("Warning header")
        .to_str()
        .unwrap();
    assert!(w.starts_with("299 - ") && w.contains("spec.bogus"), "{w}");
    assert!(warn.body["spec"].get("bogus").is_none(), "pruned");
    assert_eq!(
        warn.body["spec"]["topology"]["variables"][0]["value"],
        json!({"deep": {"kept": true}}),
        "preserved"
    );
    let bad = raw(
        &tb,
        "POST",
        &format!("{base}?fieldValidation=Loud"),
        None,
        &body,
    )
    .await;
    assert_eq!(bad.status, 400);
    tb.shutdown().await;
}

#[tokio::test]
async fn defaults_from_the_schema_are_applied() {
    let tb = start_without_ipam(Profile::Capi112).await;
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.io"},
        "spec": {"group": "example.io", "scope": "Cluster", "names": {"kind": "Gadget", "plural": "gadgets"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object", "properties": {"spec": {"type": "object", "properties": {
                    "mode": {"type": "string", "default": "auto", "enum": ["auto", "manual"]},
                    "count": {"type": "integer", "minimum": 0, "default": 1}}}}}}}]}});
    let r = raw(
        &tb,
        "POST",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        None,
        &crd.to_string(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let gadgets = api(&tb, &ar("example.io", "v1", "Gadget", "gadgets"), None);
    let g = create(&gadgets, json!({"apiVersion": "example.io/v1", "kind": "Gadget", "metadata": {"name": "g"}, "spec": {}})).await;
    assert_eq!(g.data["spec"], json!({"mode": "auto", "count": 1}));
    let e = api_err(
        gadgets
            .create(
                &Default::default(),
                &dynobj(json!({"apiVersion": "example.io/v1", "kind": "Gadget",
        "metadata": {"name": "h"}, "spec": {"mode": "other"}})),
            )
            .await,
    );
    assert!(
        e.message.contains(
            "spec.mode: Unsupported value: \"other\": supported values: \"auto\", \"manual\""
        ),
        "{}",
        e.message
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn v1beta1_profile_validates_its_own_shape() {
    let tb = start_without_ipam(Profile::Capi110).await;
    let api = api(&tb, &clusters(Profile::Capi110), Some(NS));
    let c = create(
        &api,
        cluster_json(Profile::Capi110, "old", json!([{"name": "a", "value": 1}])),
    )
    .await;
    assert_eq!(c.data["spec"]["topology"]["class"], "demo-class");
    let e = api_err(
        api.create(
            &Default::default(),
            &dynobj(cluster_json(Profile::Capi112, "new-shape", json!([]))),
        )
        .await,
    );
    assert_eq!(
        e.code, 400,
        "v1beta2 apiVersion is not served by the v1.10 profile: {}",
        e.message
    );
    tb.shutdown().await;
}
