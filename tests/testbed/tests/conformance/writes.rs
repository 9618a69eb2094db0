//! Issue 2, point 4 (writes): update concurrency, status subresource, generation, no-op writes,
//! JSON/merge/strategic patches, server-side apply with field ownership, dryRun, finalizers, delete.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use testbed::Profile;

use crate::common::*;

const P: Profile = Profile::Capi112;

#[tokio::test]
async fn update_needs_resource_version_and_stale_one_conflicts() {
    let tb = start_without_ipam(P).await;
    let api = api(&tb, &clusters(P), Some(NS));
    let c = create(&api, cluster_json(P, "u", json!([]))).await;
    let mut no_rv = c.clone();
    no_rv.metadata.resource_version = None;
    let e = api_err(api.replace("u", &PostParams::default(), &no_rv).await);
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(
        e.message.contains(
            "metadata.resourceVersion: Invalid value: \"0x0\": must be specified for an update"
        ),
        "{}",
        e.message
    );
    let mut changed = c.clone();
    changed.data["spec"]["paused"] = json!(true);
    let updated = api
        .replace("u", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert_eq!(
        updated.metadata.generation,
        Some(2),
        "spec change bumps generation"
    );
    let e = api_err(api.replace("u", &PostParams::default(), &changed).await);
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(e.message.starts_with("Operation cannot be fulfilled on clusters.cluster.x-k8s.io \"u\": the object has been modified"));
    let missing = api_err(
        api.replace("ghost", &PostParams::default(), &{
            let mut g = changed.clone();
            g.metadata.name = Some("ghost".into());
            g
        })
        .await,
    );
    assert_eq!(missing.code, 404);
    tb.shutdown().await;
}

#[tokio::test]
async fn status_subresource_splits_spec_and_status_writes() {
    let tb = start_without_ipam(P).await;
    let api = api(&tb, &clusters(P), Some(NS));
    let mut v = cluster_json(P, "s", json!([]));
    v["status"] = json!({"phase": "Provisioned"});
    let c = create(&api, v).await;
    assert!(c.data.get("status").is_none(), "create ignores status");
    let st = api
        .patch_status(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Provisioning"}, "spec": {"paused": true}})),
        )
        .await
        .unwrap();
    assert_eq!(st.data["status"]["phase"], "Provisioning");
    assert!(
        st.data["spec"].get("paused").is_none(),
        "status write ignores spec"
    );
    assert_eq!(
        st.metadata.generation,
        Some(1),
        "status writes do not bump generation"
    );
    let main = api
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Deleted"}, "spec": {"paused": true}})),
        )
        .await
        .unwrap();
    assert_eq!(
        main.data["status"]["phase"], "Provisioning",
        "main write keeps stored status"
    );
    assert_eq!(main.data["spec"]["paused"], true);
    assert_eq!(main.metadata.generation, Some(2));
    let mut whole = main.clone();
    whole.data["status"]["phase"] = json!("Failed");
    let replaced = api
        .replace_status("s", &PostParams::default(), &whole)
        .await
        .unwrap();
    assert_eq!(replaced.data["status"]["phase"], "Failed");
    tb.shutdown().await;
}

#[tokio::test]
async fn no_op_patch_keeps_resource_version_and_emits_no_event() {
    let tb = start_without_ipam(P).await;
    let api = api(&tb, &clusters(P), Some(NS));
    let c = create(&api, cluster_json(P, "n", json!([]))).await;
    let rv = c.metadata.resource_version.clone().unwrap();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let same = api
        .patch(
            "n",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"topology": {"version": "v1.32.0"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        same.metadata.resource_version.as_deref(),
        Some(rv.as_str()),
        "no-op keeps rv"
    );
    let changed = api
        .patch(
            "n",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_ne!(
        changed.metadata.resource_version.as_deref(),
        Some(rv.as_str())
    );
    assert_eq!(
        changed.metadata.generation,
        Some(1),
        "metadata-only change keeps generation"
    );
    match stream.try_next().await.unwrap().unwrap() {
        WatchEvent::Modified(o) => assert_eq!(
            o.metadata.labels.unwrap()["x"],
            "y",
            "first event is the real change"
        ),
        other => panic!("unexpected {other:?}"),
    }
    tb.shutdown().await;
}

#[tokio::test]
async fn json_patch_test_failure_is_invalid_and_null_test_on_missing_path_passes() {
    let tb = start_without_ipam(P).await;
    let api = api(&tb, &clusters(P), Some(NS));
    create(&api, cluster_json(P, "j", json!([]))).await;
    let fin: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers", "value": null},
        {"op": "add", "path": "/metadata/finalizers", "value": ["example.io/f"]}]))
    .unwrap();
    let c = api
        .patch("j", &PatchParams::default(), &Patch::Json::<()>(fin))
        .await
        .unwrap();
    assert_eq!(
        c.metadata.finalizers.as_deref(),
        Some(&["example.io/f".to_string()][..])
    );
    let bad: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/topology/version", "value": "v9"},
        {"op": "replace", "path": "/spec/topology/version", "value": "v1.33.0"}]))
    .unwrap();
    let e = api_err(
        api.patch("j", &PatchParams::default(), &Patch::Json::<()>(bad))
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        api.get("j").await.unwrap().data["spec"]["topology"]["version"],
        "v1.32.0",
        "nothing applied"
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn merge_patch_null_deletes_and_lists_replace_whole() {
    let tb = start_without_ipam(P).await;
    let api = api(&tb, &clusters(P), Some(NS));
    create(
        &api,
        cluster_json(
            P,
            "m",
            json!([{"name": "a", "value": 1}, {"name": "b", "value": 2}]),
        ),
    )
    .await;
    let c = api
        .patch("m", &PatchParams::default(), &Patch::Merge(json!({"spec": {"topology": {"variables": [{"name": "c", "value": 3}]}, "paused": null}})))
        .await
        .unwrap();
    assert_eq!(
        c.data["spec"]["topology"]["variables"],
        json!([{"name": "c", "value": 3}])
    );
    let c = api
        .patch(
            "m",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"topology": {"variables": null}}})),
        )
        .await
        .unwrap();
    assert!(c.data["spec"]["topology"].get("variables").is_none());
    tb.shutdown().await;
}

#[tokio::test]
async fn strategic_merge_is_unsupported_for_custom_resources_but_merges_leases() {
    let tb = start_without_ipam(P).await;
    let api = api(&tb, &clusters(P), Some(NS));
    create(&api, cluster_json(P, "sm", json!([]))).await;
    let e = api_err(
        api.patch(
            "sm",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"paused": true}})),
        )
        .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (415, "UnsupportedMediaType"));
    let leases: Api<Lease> = Api::namespaced(tb.client(), NS);
    let l: Lease = serde_json::from_value(json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}})).unwrap();
    leases.create(&PostParams::default(), &l).await.unwrap();
    let patched = leases
        .patch(
            "l",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"holderIdentity": "b"}})),
        )
        .await
        .unwrap();
    let spec = patched.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_duration_seconds, Some(15), "other fields kept");
    tb.shutdown().await;
}

#[tokio::test]
async fn apply_requires_field_manager_and_creates_missing_objects() {
    let tb = start_without_ipam(P).await;
    let r = raw(
        &tb,
        "PATCH",
        "/apis/cluster.x-k8s.io/v1beta2/namespaces/default/clusters/x",
        Some("application/apply-patch+yaml"),
        &cluster_json(P, "x", json!([])).to_string(),
    )
    .await;
    assert_eq!(r.status, 422);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("fieldManager: Required value"),
        "{}",
        r.body
    );
    let yaml = "apiVersion: cluster.x-k8s.io/v1beta2\nkind: Cluster\nmetadata:\n  name: x\nspec:\n  topology:\n    classRef:\n      name: demo-class\n    version: v1.32.0\n";
    let r = raw(
        &tb,
        "PATCH",
        "/apis/cluster.x-k8s.io/v1beta2/namespaces/default/clusters/x?fieldManager=me",
        Some("application/apply-patch+yaml"),
        yaml,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["metadata"]["managedFields"][0]["manager"], "me");
    assert_eq!(r.body["metadata"]["managedFields"][0]["operation"], "Apply");
    let again = raw(
        &tb,
        "PATCH",
        "/apis/cluster.x-k8s.io/v1beta2/namespaces/default/clusters/x?fieldManager=me",
        Some("application/apply-patch+yaml"),
        yaml,
    )
    .await;
    assert_eq!(again.status, 200);
    assert_eq!(
        again.body["metadata"]["resourceVersion"], r.body["metadata"]["resourceVersion"],
        "re-apply is a no-op"
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn ssa_on_topology_variables_keeps_other_managers_entries() {
    let tb = start_without_ipam(P).await;
    let api = api(&tb, &clusters(P), Some(NS));
    let user = PatchParams::apply("user");
    api.patch(
        "v",
        &user,
        &Patch::Apply(cluster_json(
            P,
            "v",
            json!([{"name": "kubeVipInterface", "value": "ens192"}]),
        )),
    )
    .await
    .unwrap();
    let ours = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "metadata": {"name": "v", "namespace": NS},
        "spec": {"topology": {"variables": [{"name": "clusterVip", "value": "10.0.0.5"}]}}});
    let c = api
        .patch(
            "v",
            &PatchParams::apply("vip-allocator"),
            &Patch::Apply(&ours),
        )
        .await
        .unwrap();
    assert_eq!(
        c.data["spec"]["topology"]["variables"],
        json!([{"name": "kubeVipInterface", "value": "ens192"}, {"name": "clusterVip", "value": "10.0.0.5"}])
    );
    let managers: Vec<String> = c
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(managers.contains(&"user".into()) && managers.contains(&"vip-allocator".into()));
    // The user re-applies its own config: our entry survives.
    let c = api
        .patch(
            "v",
            &user,
            &Patch::Apply(cluster_json(
                P,
                "v",
                json!([{"name": "kubeVipInterface", "value": "eth0"}]),
            )),
        )
        .await
        .unwrap();
    assert_eq!(
        c.data["spec"]["topology"]["variables"][1],
        json!({"name": "clusterVip", "value": "10.0.0.5"})
    );
    assert_eq!(c.data["spec"]["topology"]["variables"][0]["value"], "eth0");
    // Another manager setting our entry to a different value conflicts, unless forced.
    let steal = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "metadata": {"name": "v"},
        "spec": {"topology": {"variables": [{"name": "clusterVip", "value": "10.0.0.9"}]}}});
    let e = api_err(
        api.patch("v", &PatchParams::apply("intruder"), &Patch::Apply(&steal))
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(
        e.message.contains("conflict with \"vip-allocator\""),
        "{}",
        e.message
    );
    let forced = api
        .patch(
            "v",
            &PatchParams::apply("intruder").force(),
            &Patch::Apply(&steal),
        )
        .await
        .unwrap();
    assert_eq!(
        forced.data["spec"]["topology"]["variables"][1]["value"],
        "10.0.0.9"
    );
    // Dropping the entry from our apply removes only what we still own.
    let c = api
        .patch(
            "v",
            &PatchParams::apply("vip-allocator"),
            &Patch::Apply(json!({"apiVersion": "cluster.x-k8s.io/v1beta2",
            "kind": "Cluster", "metadata": {"name": "v"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        c.data["spec"]["topology"]["variables"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "entry now owned by intruder stays"
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn ssa_lease_takeover_without_force_conflicts() {
    let tb = start_without_ipam(P).await;
    let leases: Api<Lease> = Api::namespaced(tb.client(), NS);
    let lease = |holder: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "le"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15}})
    };
    leases
        .patch(
            "le",
            &PatchParams::apply("pod-a"),
            &Patch::Apply(lease("pod-a")),
        )
        .await
        .unwrap();
    let e = api_err(
        leases
            .patch(
                "le",
                &PatchParams::apply("pod-b"),
                &Patch::Apply(lease("pod-b")),
            )
            .await,
    );
    assert_eq!(e.code, 409);
    let l = leases
        .patch(
            "le",
            &PatchParams::apply("pod-b").force(),
            &Patch::Apply(lease("pod-b")),
        )
        .await
        .unwrap();
    assert_eq!(l.spec.unwrap().holder_identity.as_deref(), Some("pod-b"));
    tb.shutdown().await;
}

#[tokio::test]
async fn dry_run_persists_nothing() {
    let tb = start_without_ipam(P).await;
    let api = api(&tb, &clusters(P), Some(NS));
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let c = api
        .create(&pp, &dynobj(cluster_json(P, "d", json!([]))))
        .await
        .unwrap();
    assert_eq!(c.metadata.name.as_deref(), Some("d"));
    assert_eq!(api_err(api.get("d").await).code, 404);
    create(&api, cluster_json(P, "d", json!([]))).await;
    let pp = PatchParams {
        dry_run: true,
        ..Default::default()
    };
    let p = api
        .patch("d", &pp, &Patch::Merge(json!({"spec": {"paused": true}})))
        .await
        .unwrap();
    assert_eq!(p.data["spec"]["paused"], true);
    assert!(api.get("d").await.unwrap().data["spec"]
        .get("paused")
        .is_none());
    let dp = DeleteParams {
        dry_run: true,
        ..Default::default()
    };
    api.delete("d", &dp).await.unwrap();
    assert!(
        api.get("d").await.is_ok(),
        "dry-run delete keeps the object"
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let tb = start_without_ipam(P).await;
    let api = api(&tb, &clusters(P), Some(NS));
    let mut v = cluster_json(P, "f", json!([]));
    v["metadata"]["finalizers"] = json!(["example.io/hold"]);
    let c = create(&api, v).await;
    let mut events = api
        .watch(
            &WatchParams::default(),
            c.metadata.resource_version.as_deref().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    let pending = api.delete("f", &DeleteParams::default()).await.unwrap();
    let obj = pending
        .left()
        .expect("object returned while finalizers remain");
    assert!(obj.metadata.deletion_timestamp.is_some());
    assert_eq!(obj.metadata.generation, Some(2));
    let e = api_err(
        api.patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"finalizers": ["example.io/hold", "example.io/new"]}}),
            ),
        )
        .await,
    );
    assert_eq!(e.code, 422);
    assert!(e
        .message
        .contains("no new finalizers can be added if the object is being deleted"));
    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"paused": true}})),
    )
    .await
    .unwrap();
    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(api_err(api.get("f").await).code, 404);
    let mut kinds = Vec::new();
    while let Some(ev) = events.try_next().await.unwrap() {
        kinds.push(match ev {
            WatchEvent::Modified(_) => "MODIFIED",
            WatchEvent::Deleted(o) => {
                assert!(
                    o.metadata.finalizers.is_none(),
                    "DELETED carries the final state"
                );
                "DELETED"
            }
            _ => "OTHER",
        });
        if kinds.len() == 3 {
            break;
        }
    }
    assert_eq!(kinds, ["MODIFIED", "MODIFIED", "DELETED"]);
    tb.shutdown().await;
}

#[tokio::test]
async fn delete_without_finalizers_returns_success_status() {
    let tb = start_without_ipam(P).await;
    let api = api(&tb, &clusters(P), Some(NS));
    let c = create(&api, cluster_json(P, "g", json!([]))).await;
    let st = api
        .delete("g", &DeleteParams::default())
        .await
        .unwrap()
        .right()
        .expect("Status when gone at once");
    assert_eq!(
        st.status,
        Some(kube::core::response::StatusSummary::Success)
    );
    let d = st.details.unwrap();
    assert_eq!(
        (d.name.as_str(), d.kind.as_str(), d.uid),
        ("g", "clusters", c.metadata.uid.unwrap())
    );
    assert_eq!(
        api_err(api.delete("g", &DeleteParams::default()).await).code,
        404
    );
    create(&api, cluster_json(P, "g", json!([]))).await;
    let stale = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("other".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    assert_eq!(api_err(api.delete("g", &stale).await).code, 409);
    assert_eq!(
        api.list(&Default::default()).await.unwrap().items.len(),
        1,
        "failed precondition keeps it"
    );
    api.delete_collection(&DeleteParams::default(), &Default::default())
        .await
        .unwrap();
    assert!(
        api.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "deletecollection removes all"
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn managed_fields_can_be_stripped_with_a_single_empty_entry() {
    let tb = start_without_ipam(P).await;
    let api = api(&tb, &clusters(P), Some(NS));
    api.patch(
        "mf",
        &PatchParams::apply("owner"),
        &Patch::Apply(cluster_json(P, "mf", json!([]))),
    )
    .await
    .unwrap();
    let kept = api
        .patch(
            "mf",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"managedFields": []}})),
        )
        .await
        .unwrap();
    assert!(
        kept.metadata.managed_fields.is_some_and(|m| !m.is_empty()),
        "an empty list keeps them"
    );
    let stripped = api
        .patch(
            "mf",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"managedFields": [{}]}})),
        )
        .await
        .unwrap();
    assert!(
        stripped
            .metadata
            .managed_fields
            .is_none_or(|m| m.is_empty()),
        "[{{}}] strips them"
    );
    tb.shutdown().await;
}
