//! Issue 2, points 1 (discovery), 2 (built-in kinds, CRDs served on create), 4 (reads), 7 (errors).

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, PostParams};
use kube::discovery::{Discovery, Scope};
use serde_json::json;
use testbed::Profile;

use crate::common::*;

#[tokio::test]
async fn discovery_lists_builtin_and_crd_kinds_with_status_subresource() {
    let tb = start_without_ipam(Profile::Capi112).await;
    let c = tb.client();
    let v = c.apiserver_version().await.unwrap();
    assert_eq!(v.major, "1");
    let core = c.list_core_api_resources("v1").await.unwrap();
    let names: Vec<&str> = core.resources.iter().map(|r| r.name.as_str()).collect();
    assert!(
        names.contains(&"namespaces")
            && names.contains(&"events")
            && names.contains(&"namespaces/status")
    );
    let groups = c.list_api_groups().await.unwrap();
    for g in [
        "cluster.x-k8s.io",
        "ipam.cluster.x-k8s.io",
        "coordination.k8s.io",
        "events.k8s.io",
        "apiextensions.k8s.io",
    ] {
        assert!(
            groups.groups.iter().any(|x| x.name == g),
            "group {g} served"
        );
    }
    let capi = c
        .list_api_group_resources("cluster.x-k8s.io/v1beta2")
        .await
        .unwrap();
    let cl = capi
        .resources
        .iter()
        .find(|r| r.name == "clusters")
        .unwrap();
    assert_eq!(cl.kind, "Cluster");
    assert!(cl.namespaced);
    assert_eq!(cl.short_names.as_deref(), Some(&["cl".to_string()][..]));
    assert_eq!(
        cl.categories.as_deref(),
        Some(&["cluster-api".to_string()][..])
    );
    assert!(cl.verbs.contains(&"watch".to_string()) && cl.verbs.contains(&"patch".to_string()));
    assert!(capi.resources.iter().any(|r| r.name == "clusters/status"));
    let ipam = c
        .list_api_group_resources("ipam.cluster.x-k8s.io/v1beta2")
        .await
        .unwrap();
    let addr = ipam
        .resources
        .iter()
        .find(|r| r.name == "ipaddresses")
        .unwrap();
    assert!(addr.namespaced);
    assert!(
        !ipam
            .resources
            .iter()
            .any(|r| r.name == "ipaddresses/status"),
        "IPAddress has no status subresource"
    );
    let pools = c
        .list_api_group_resources("ipam.cluster.x-k8s.io/v1alpha2")
        .await
        .unwrap();
    assert!(
        !pools
            .resources
            .iter()
            .find(|r| r.name == "globalinclusterippools")
            .unwrap()
            .namespaced
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn kube_discovery_resolves_kinds_and_scopes() {
    let tb = start_without_ipam(Profile::Capi110).await;
    let d = Discovery::new(tb.client()).run().await.unwrap();
    let (ar, caps) = d
        .resolve_gvk(&kube::core::GroupVersionKind::gvk(
            "cluster.x-k8s.io",
            "v1beta1",
            "Cluster",
        ))
        .expect("Cluster resolvable");
    assert_eq!(ar.plural, "clusters");
    assert_eq!(caps.scope, Scope::Namespaced);
    let (_, caps) = d
        .resolve_gvk(&kube::core::GroupVersionKind::gvk(
            "ipam.cluster.x-k8s.io",
            "v1alpha2",
            "GlobalInClusterIPPool",
        ))
        .unwrap();
    assert_eq!(caps.scope, Scope::Cluster);
    tb.shutdown().await;
}

#[tokio::test]
async fn aggregated_discovery_accept_header_gets_legacy_documents() {
    let tb = start_without_ipam(Profile::Capi112).await;
    let accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
    let r = raw_with(&tb, "GET", "/apis", &[("accept", accept)], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers.get("content-type").unwrap(), "application/json");
    assert_eq!(r.body["kind"], "APIGroupList");
    let r = raw_with(&tb, "GET", "/api", &[("accept", accept)], "").await;
    assert_eq!(r.body["kind"], "APIVersions");
    let idx = raw(&tb, "GET", "/openapi/v3", None, "").await;
    assert!(
        idx.body["paths"]["apis/cluster.x-k8s.io/v1beta2"].is_object(),
        "OpenAPI v3 index lists group versions"
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn create_sets_server_fields_and_duplicate_is_already_exists() {
    let tb = start_without_ipam(Profile::Capi112).await;
    let api = api(&tb, &clusters(Profile::Capi112), Some(NS));
    let c = create(&api, cluster_json(Profile::Capi112, "c1", json!([]))).await;
    assert!(c.metadata.uid.as_deref().is_some_and(|u| u.len() == 36));
    assert!(c.metadata.creation_timestamp.is_some());
    assert_eq!(c.metadata.generation, Some(1));
    assert!(c
        .metadata
        .resource_version
        .as_deref()
        .is_some_and(|rv| !rv.is_empty()));
    let dup = api_err(
        api.create(
            &PostParams::default(),
            &dynobj(cluster_json(Profile::Capi112, "c1", json!([]))),
        )
        .await,
    );
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(
        dup.message,
        "clusters.cluster.x-k8s.io \"c1\" already exists"
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn generate_name_gives_unique_names() {
    let tb = start_without_ipam(Profile::Capi112).await;
    let api = api(&tb, &clusters(Profile::Capi112), Some(NS));
    let mut names = std::collections::BTreeSet::new();
    for _ in 0..5 {
        let mut v = cluster_json(Profile::Capi112, "", json!([]));
        v["metadata"] = json!({"generateName": "gen-", "namespace": NS});
        let c = create(&api, v).await;
        let n = c.metadata.name.unwrap();
        assert!(n.starts_with("gen-") && n.len() == 9, "{n}");
        names.insert(n);
    }
    assert_eq!(names.len(), 5);
    tb.shutdown().await;
}

#[tokio::test]
async fn get_of_missing_object_is_not_found_status() {
    let tb = start_without_ipam(Profile::Capi112).await;
    let api = api(&tb, &clusters(Profile::Capi112), Some(NS));
    let e = api_err(api.get("nope").await);
    assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));
    assert_eq!(e.message, "clusters.cluster.x-k8s.io \"nope\" not found");
    let r = raw(
        &tb,
        "GET",
        "/apis/cluster.x-k8s.io/v1beta2/namespaces/default/clusters/nope",
        None,
        "",
    )
    .await;
    assert_eq!(r.body["kind"], "Status");
    assert_eq!(r.body["status"], "Failure");
    assert_eq!(r.body["details"]["kind"], "clusters");
    assert_eq!(r.body["details"]["group"], "cluster.x-k8s.io");
    let unknown = raw(&tb, "GET", "/apis/nope.io/v1/things", None, "").await;
    assert_eq!(
        (unknown.status, unknown.body["reason"].as_str()),
        (404, Some("NotFound"))
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn create_in_missing_namespace_is_not_found() {
    let tb = start_without_ipam(Profile::Capi112).await;
    let api = api(&tb, &clusters(Profile::Capi112), Some("ghost"));
    let mut v = cluster_json(Profile::Capi112, "c", json!([]));
    v["metadata"]["namespace"] = json!("ghost");
    let e = api_err(api.create(&PostParams::default(), &dynobj(v)).await);
    assert_eq!(e.code, 404);
    assert_eq!(e.message, "namespaces \"ghost\" not found");
    tb.shutdown().await;
}

#[tokio::test]
async fn list_filters_by_label_and_field_selectors() {
    let tb = start_without_ipam(Profile::Capi112).await;
    let api = api(&tb, &clusters(Profile::Capi112), Some(NS));
    for (name, env) in [("a", "prod"), ("b", "dev"), ("c", "prod"), ("d", "")] {
        let mut v = cluster_json(Profile::Capi112, name, json!([]));
        if !env.is_empty() {
            v["metadata"]["labels"] = json!({"env": env});
        }
        create(&api, v).await;
    }
    let names = |l: kube::core::ObjectList<kube::api::DynamicObject>| {
        l.items
            .into_iter()
            .map(|o| o.metadata.name.unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("env=prod"))
                .await
                .unwrap()
        ),
        ["a", "c"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("env!=prod"))
                .await
                .unwrap()
        ),
        ["b", "d"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("env in (dev,prod)"))
                .await
                .unwrap()
        ),
        ["a", "b", "c"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("!env"))
                .await
                .unwrap()
        ),
        ["d"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("metadata.name=b"))
                .await
                .unwrap()
        ),
        ["b"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("metadata.namespace=default,metadata.name!=a"))
                .await
                .unwrap()
        ),
        ["b", "c", "d"]
    );
    let e = api_err(
        api.list(&ListParams::default().fields("spec.paused=true"))
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"));
    let all = crate::common::api(&tb, &clusters(Profile::Capi112), None)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(all.items.len(), 4);
    assert!(all
        .metadata
        .resource_version
        .as_deref()
        .is_some_and(|rv| !rv.is_empty()));
    tb.shutdown().await;
}

#[tokio::test]
async fn list_pages_with_limit_and_continue() {
    let tb = start_without_ipam(Profile::Capi112).await;
    let api = crate::common::api(&tb, &clusters(Profile::Capi112), Some(NS));
    for i in 0..7 {
        create(
            &api,
            cluster_json(Profile::Capi112, &format!("p{i}"), json!([])),
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut lp = ListParams::default().limit(3);
    let mut pages = 0;
    let mut first_rv = None;
    loop {
        let page = api.list(&lp).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= 3);
        let rv = page.metadata.resource_version.clone().unwrap();
        first_rv.get_or_insert(rv.clone());
        assert_eq!(
            Some(&rv),
            first_rv.as_ref(),
            "continued pages report the first page's rv"
        );
        seen.extend(page.items.into_iter().map(|o| o.metadata.name.unwrap()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = ListParams::default().limit(3).continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ["p0", "p1", "p2", "p3", "p4", "p5", "p6"]);
    let r = raw(
        &tb,
        "GET",
        "/apis/cluster.x-k8s.io/v1beta2/namespaces/default/clusters?&limit=2&&",
        None,
        "",
    )
    .await;
    assert_eq!(
        r.status, 200,
        "kube-rs style query strings parse: {:?}",
        r.body
    );
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);
    assert!(r.body["metadata"]["continue"].is_string());
    tb.shutdown().await;
}

#[tokio::test]
async fn creating_a_crd_through_the_api_serves_its_kind_until_deleted() {
    let tb = start_without_ipam(Profile::Capi112).await;
    let crds: Api<CustomResourceDefinition> = Api::all(tb.client());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.io"},
        "spec": {"group": "example.io", "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}}}]}}))
    .unwrap();
    let created = crds.create(&PostParams::default(), &crd).await.unwrap();
    let conds = created.status.unwrap().conditions.unwrap();
    assert!(conds
        .iter()
        .any(|c| c.type_ == "Established" && c.status == "True"));
    let widgets = crate::common::api(&tb, &ar("example.io", "v1", "Widget", "widgets"), Some(NS));
    let w = create(
        &widgets,
        json!({"apiVersion": "example.io/v1", "kind": "Widget",
        "metadata": {"name": "w1"}, "spec": {"size": 3}}),
    )
    .await;
    assert_eq!(w.data["spec"]["size"], 3);
    crds.delete("widgets.example.io", &Default::default())
        .await
        .unwrap();
    let gone = raw(
        &tb,
        "GET",
        "/apis/example.io/v1/namespaces/default/widgets",
        None,
        "",
    )
    .await;
    assert_eq!(
        gone.status, 404,
        "kind no longer served after its CRD is deleted"
    );
    let ns: Api<Namespace> = Api::all(tb.client());
    let names: Vec<String> = ns
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(names.contains(&"default".to_string()) && names.contains(&"kube-system".to_string()));
    tb.shutdown().await;
}

#[tokio::test]
async fn method_not_allowed_and_wrong_media_type_are_status_bodies() {
    let tb = start_without_ipam(Profile::Capi112).await;
    let r = raw(
        &tb,
        "POST",
        "/apis/cluster.x-k8s.io/v1beta2/namespaces/default/clusters/x",
        None,
        "{}",
    )
    .await;
    assert_eq!(
        (r.status, r.body["reason"].as_str()),
        (405, Some("MethodNotAllowed"))
    );
    let r = raw(
        &tb,
        "POST",
        "/apis/cluster.x-k8s.io/v1beta2/namespaces/default/clusters",
        Some("application/vnd.kubernetes.protobuf"),
        "x",
    )
    .await;
    assert_eq!(
        (r.status, r.body["reason"].as_str()),
        (415, Some("UnsupportedMediaType"))
    );
    assert_eq!(r.body["kind"], "Status");
    tb.shutdown().await;
}

#[tokio::test]
async fn events_written_through_either_api_are_one_storage() {
    use futures::{StreamExt, TryStreamExt};
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use k8s_openapi::api::events::v1::Event;
    let tb = start_without_ipam(Profile::Capi112).await;
    let v1: Api<Event> = Api::namespaced(tb.client(), NS);
    let core: Api<CoreEvent> = Api::namespaced(tb.client(), NS);
    let mut watch = kube::runtime::watcher(v1.clone(), Default::default()).boxed();
    let e: Event = serde_json::from_value(json!({"metadata": {"name": "c1.17a"}, "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "vip.capi.gorizond.io/allocator", "reportingInstance": "pod-1", "action": "Allocate",
        "reason": "VIPAllocated", "type": "Normal", "note": "control-plane VIP 10.0.0.5",
        "regarding": {"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": "c1", "namespace": NS}}))
    .unwrap();
    let created = v1.create(&PostParams::default(), &e).await.unwrap();
    assert_eq!(created.note.as_deref(), Some("control-plane VIP 10.0.0.5"));
    let as_core = core.get("c1.17a").await.unwrap();
    assert_eq!(
        as_core.message.as_deref(),
        Some("control-plane VIP 10.0.0.5")
    );
    assert_eq!(as_core.involved_object.name.as_deref(), Some("c1"));
    assert_eq!(
        as_core.reporting_component.as_deref(),
        Some("vip.capi.gorizond.io/allocator")
    );
    let by_field = core
        .list(&ListParams::default().fields("involvedObject.name=c1"))
        .await
        .unwrap();
    assert_eq!(by_field.items.len(), 1);
    let seen = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            if let Some(
                kube::runtime::watcher::Event::Apply(ev)
                | kube::runtime::watcher::Event::InitApply(ev),
            ) = watch.try_next().await.unwrap()
            {
                return ev;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        seen.regarding.and_then(|r| r.name).as_deref(),
        Some("c1"),
        "watch of the v1 view converts"
    );
    let series = v1
        .patch(
            "c1.17a",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"series": {"count": 2, "lastObservedTime": "2026-01-01T00:00:05.000000Z"}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(series.series.unwrap().count, 2);
    tb.shutdown().await;
}

#[tokio::test]
async fn metadata_only_get_list_and_watch_return_partial_object_metadata() {
    use futures::{StreamExt, TryStreamExt};
    let tb = start_without_ipam(Profile::Capi112).await;
    let api = crate::common::api(&tb, &clusters(Profile::Capi112), Some(NS));
    let mut v = cluster_json(Profile::Capi112, "meta", json!([]));
    v["metadata"]["labels"] = json!({"a": "b"});
    create(&api, v).await;
    let m = api.get_metadata("meta").await.unwrap();
    assert_eq!(m.metadata.labels.unwrap()["a"], "b");
    assert_eq!(m.types.unwrap().kind, "PartialObjectMetadata");
    let l = api.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(l.items.len(), 1);
    let raw = raw_with(
        &tb,
        "GET",
        "/apis/cluster.x-k8s.io/v1beta2/namespaces/default/clusters",
        &[(
            "accept",
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
        )],
        "",
    )
    .await;
    assert_eq!(raw.body["kind"], "PartialObjectMetadataList");
    assert!(
        raw.body["items"][0].get("spec").is_none(),
        "no spec in metadata-only items"
    );
    let meta_api: Api<kube::core::PartialObjectMeta<kube::api::DynamicObject>> =
        Api::namespaced_with(tb.client(), NS, &clusters(Profile::Capi112));
    let mut w = kube::runtime::watcher(meta_api, Default::default()).boxed();
    let seen = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            if let Some(kube::runtime::watcher::Event::InitApply(o)) = w.try_next().await.unwrap() {
                return o;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(seen.metadata.name.as_deref(), Some("meta"));
    tb.shutdown().await;
}

#[tokio::test]
async fn malformed_requests_get_status_bodies_and_the_server_keeps_serving() {
    let tb = start_without_ipam(Profile::Capi112).await;
    let base = "/apis/cluster.x-k8s.io/v1beta2/namespaces/default/clusters";
    create(
        &crate::common::api(&tb, &clusters(Profile::Capi112), Some(NS)),
        cluster_json(Profile::Capi112, "ok", json!([])),
    )
    .await;
    let cases: Vec<(&str, String, Option<&str>, &str, u16)> = vec![
        ("POST", base.to_string(), None, "{not json", 400),
        ("POST", base.to_string(), None, "[1,2]", 400),
        (
            "PATCH",
            format!("{base}/ok"),
            Some("application/merge-patch+json"),
            r#"{"metadata":{"labels":"x"}}"#,
            422,
        ),
        (
            "PATCH",
            format!("{base}/ok"),
            Some("application/json-patch+json"),
            r#"[{"op":"explode"}]"#,
            422,
        ),
        (
            "PATCH",
            format!("{base}/ok?fieldManager=m"),
            Some("application/apply-patch+yaml"),
            ":\n- : [",
            400,
        ),
        ("PATCH", format!("{base}/ok"), Some("text/plain"), "{}", 415),
        (
            "PUT",
            format!("{base}/ok"),
            None,
            r#"{"metadata":{"name":"other"}}"#,
            400,
        ),
        (
            "DELETE",
            format!("{base}/ok?propagationPolicy=Sideways"),
            None,
            "",
            400,
        ),
        (
            "GET",
            format!("{base}?labelSelector=a%20in%20b"),
            None,
            "",
            400,
        ),
        (
            "GET",
            format!("{base}?watch=1&resourceVersion=abc"),
            None,
            "",
            400,
        ),
    ];
    for (method, uri, ct, body, code) in cases {
        let r = raw(&tb, method, &uri, ct, body).await;
        assert_eq!(r.status, code, "{method} {uri} {body}: {}", r.body);
        assert_eq!(r.body["kind"], "Status", "{method} {uri}");
        assert_eq!(r.body["code"], code);
    }
    let still = crate::common::api(&tb, &clusters(Profile::Capi112), Some(NS))
        .get("ok")
        .await
        .unwrap();
    assert!(still.metadata.labels.is_none());
    tb.shutdown().await;
}

#[tokio::test]
async fn a_crd_serving_two_versions_shows_each_object_in_the_requested_version() {
    use futures::{StreamExt, TryStreamExt};
    let tb = start_without_ipam(Profile::Capi112).await;
    let schema = json!({"openAPIV3Schema": {"type": "object", "properties": {
        "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}});
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "things.example.io"},
        "spec": {"group": "example.io", "scope": "Namespaced", "names": {"kind": "Thing", "plural": "things"},
            "conversion": {"strategy": "None"},
            "versions": [
                {"name": "v1alpha1", "served": true, "storage": false, "schema": schema},
                {"name": "v1", "served": true, "storage": true, "schema": schema}]}});
    let r = raw(
        &tb,
        "POST",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        None,
        &crd.to_string(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let groups = tb.client().list_api_groups().await.unwrap();
    let g = groups
        .groups
        .iter()
        .find(|g| g.name == "example.io")
        .unwrap();
    assert_eq!(
        g.preferred_version.as_ref().unwrap().version,
        "v1",
        "GA preferred over alpha"
    );
    let old = crate::common::api(
        &tb,
        &ar("example.io", "v1alpha1", "Thing", "things"),
        Some(NS),
    );
    let new = crate::common::api(&tb, &ar("example.io", "v1", "Thing", "things"), Some(NS));
    let mut w = new
        .watch(&kube::api::WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    create(&old, json!({"apiVersion": "example.io/v1alpha1", "kind": "Thing", "metadata": {"name": "t"}, "spec": {"a": 1}})).await;
    let seen = new.get("t").await.unwrap();
    assert_eq!(seen.types.unwrap().api_version, "example.io/v1");
    assert_eq!(seen.data["spec"]["a"], 1);
    match tokio::time::timeout(std::time::Duration::from_secs(5), w.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        kube::api::WatchEvent::Added(o) => {
            assert_eq!(o.types.unwrap().api_version, "example.io/v1")
        }
        other => panic!("unexpected {other:?}"),
    }
    let listed = old.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        listed.items[0].types.as_ref().unwrap().api_version,
        "example.io/v1alpha1"
    );
    tb.shutdown().await;
}
