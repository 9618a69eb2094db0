//! Issue 2 §"Faults and measurements": stats endpoint and write log, injected faults.

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use serde_json::json;
use testbed::{FaultConfig, Profile, Stats};

use crate::common::*;

const P: Profile = Profile::Capi112;

#[tokio::test]
async fn stats_count_requests_by_agent_and_log_writes_in_order() {
    let tb = start_without_ipam(P).await;
    let api = api(&tb, &clusters(P), Some(NS));
    create(&api, cluster_json(P, "s1", json!([]))).await;
    api.patch(
        "s1",
        &PatchParams::apply("mgr"),
        &Patch::Apply(cluster_json(P, "s1", json!([{"name": "a", "value": 1}]))),
    )
    .await
    .unwrap();
    api.get("s1").await.unwrap();
    let _ = api.get("missing").await;
    let st = tb.stats();
    assert!(st.requests.iter().any(|r| r.verb == "get"
        && r.resource == "clusters"
        && r.group == "cluster.x-k8s.io"
        && r.user_agent == "testbed-client"
        && r.count == 2));
    assert_eq!(st.requests_for("create", "clusters"), 1);
    let mine: Vec<_> = st
        .writes_by("testbed-client")
        .filter(|w| w.resource == "clusters")
        .collect();
    assert_eq!(mine.len(), 2);
    assert_eq!((mine[0].verb.as_str(), mine[0].code), ("create", 201));
    assert_eq!(
        (mine[1].verb.as_str(), mine[1].patch_type.as_deref()),
        ("apply", Some("apply"))
    );
    assert!(mine[0].seq < mine[1].seq && mine[0].time_us <= mine[1].time_us);
    assert_eq!(mine[1].name, "s1");
    assert_eq!(mine[1].namespace, NS);
    assert_eq!(mine[1].version, "v1beta2");
    assert!(mine[1]
        .resource_version
        .as_deref()
        .is_some_and(|rv| rv.parse::<u64>().is_ok()));
    let later = tb.stats_since(mine[0].seq);
    assert!(
        later.writes.iter().all(|w| w.seq > mine[0].seq)
            && later.writes.iter().any(|w| w.seq == mine[1].seq)
    );
    let r = raw(
        &tb,
        "GET",
        &format!("/testbed/stats?since={}", mine[0].seq),
        None,
        "",
    )
    .await;
    let remote_later: Stats = serde_json::from_value(r.body).unwrap();
    assert_eq!(
        remote_later.writes, later.writes,
        "?since= filters the same way"
    );
    // The HTTP endpoint serves the same data, deserialisable as Stats.
    let r = raw(&tb, "GET", "/testbed/stats", None, "").await;
    let remote: Stats = serde_json::from_value(r.body).unwrap();
    assert_eq!(remote.writes.len(), st.writes.len());
    tb.shutdown().await;
}

#[tokio::test]
async fn error_rate_fault_fails_the_chosen_verb_with_the_chosen_status() {
    let tb = start_without_ipam(P).await;
    let api = api(&tb, &clusters(P), Some(NS));
    create(&api, cluster_json(P, "f", json!([]))).await;
    tb.faults().set_error_rate("patch", 1.0, 500);
    let e = api_err(
        api.patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (500, "InternalError"));
    assert!(api.get("f").await.is_ok(), "other verbs unaffected");
    tb.faults().set_error_rate("get", 1.0, 429);
    // kube-rs retries 429 with backoff, so check the raw answer.
    let (code, body) = bare(
        &tb,
        "GET",
        "/apis/cluster.x-k8s.io/v1beta2/namespaces/default/clusters/f",
    )
    .await;
    assert_eq!(code, 429);
    assert!(body.contains("\"reason\":\"TooManyRequests\""), "{body}");
    let stats = tb.stats();
    assert!(stats
        .requests
        .iter()
        .any(|r| r.user_agent == "bare" && r.verb == "get"));
    tb.faults().clear();
    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"paused": true}})),
    )
    .await
    .unwrap();
    tb.shutdown().await;
}

#[tokio::test]
async fn faults_can_be_posted_to_a_running_testbed() {
    let tb = start_without_ipam(P).await;
    let cfg = FaultConfig {
        latency_ms: 150,
        ..Default::default()
    };
    let r = raw(
        &tb,
        "POST",
        "/testbed/faults",
        None,
        &serde_json::to_string(&cfg).unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(tb.faults().get(), cfg);
    let api = api(&tb, &clusters(P), Some(NS));
    let t = std::time::Instant::now();
    let _ = api.get_opt("x").await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(150), "latency added");
    let bad = raw(
        &tb,
        "POST",
        "/testbed/faults",
        None,
        "{\"latency_ms\": \"no\"}",
    )
    .await;
    assert_eq!(bad.status, 400);
    tb.shutdown().await;
}
