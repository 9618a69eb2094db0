//! Issue 2, point 4 (watch, contracts §8.1): event lines, initial events, bookmarks, 410 as an
//! ERROR event, selector transitions, timeouts, and kube-runtime's watcher surviving a 410.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::api::{Patch, PatchParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use serde_json::json;
use testbed::{Profile, Testbed, TestbedOptions};

use crate::common::*;

const P: Profile = Profile::Capi112;

async fn next<S, T, E>(s: &mut S) -> T
where
    S: futures::Stream<Item = Result<T, E>> + Unpin,
    E: std::fmt::Debug,
{
    tokio::time::timeout(Duration::from_secs(5), s.try_next())
        .await
        .expect("event in time")
        .unwrap()
        .expect("stream open")
}

#[tokio::test]
async fn watch_streams_changes_after_the_given_resource_version() {
    let tb = start_without_ipam(P).await;
    let api = api(&tb, &clusters(P), Some(NS));
    let first = create(&api, cluster_json(P, "before", json!([]))).await;
    let rv = first.metadata.resource_version.unwrap();
    let mut s = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    create(&api, cluster_json(P, "w", json!([]))).await;
    api.patch(
        "w",
        &PatchParams::default(),
        &kube::api::Patch::Merge(json!({"spec": {"paused": true}})),
    )
    .await
    .unwrap();
    api.delete("w", &Default::default()).await.unwrap();
    let mut rvs = Vec::new();
    for want in ["ADDED", "MODIFIED", "DELETED"] {
        let (kind, o) = match next(&mut s).await {
            WatchEvent::Added(o) => ("ADDED", o),
            WatchEvent::Modified(o) => ("MODIFIED", o),
            WatchEvent::Deleted(o) => ("DELETED", o),
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(kind, want);
        assert_eq!(
            o.metadata.name.as_deref(),
            Some("w"),
            "events before the rv are not replayed"
        );
        rvs.push(o.metadata.resource_version.unwrap().parse::<u64>().unwrap());
    }
    assert!(
        rvs.windows(2).all(|w| w[0] < w[1]),
        "DELETED carries the deletion's rv: {rvs:?}"
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn watch_from_zero_starts_with_current_objects() {
    let tb = start_without_ipam(P).await;
    let api = api(&tb, &clusters(P), Some(NS));
    create(&api, cluster_json(P, "a", json!([]))).await;
    create(&api, cluster_json(P, "b", json!([]))).await;
    let mut s = api
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let mut names = Vec::new();
    for _ in 0..2 {
        match next(&mut s).await {
            WatchEvent::Added(o) => names.push(o.metadata.name.unwrap()),
            other => panic!("unexpected {other:?}"),
        }
    }
    names.sort();
    assert_eq!(names, ["a", "b"]);
    tb.shutdown().await;
}

#[tokio::test]
async fn send_initial_events_ends_with_marked_bookmark() {
    let tb = start_without_ipam(P).await;
    let api = api(&tb, &clusters(P), Some(NS));
    create(&api, cluster_json(P, "a", json!([]))).await;
    let r = raw(&tb, "GET",
        "/apis/cluster.x-k8s.io/v1beta2/namespaces/default/clusters?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&resourceVersion=0&timeoutSeconds=1",
        None, "").await;
    let text = r.body.as_str().expect("several JSON lines").to_string();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["type"], "ADDED");
    assert_eq!(lines[1]["type"], "BOOKMARK");
    assert_eq!(
        lines[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert_eq!(lines[1]["object"]["kind"], "Cluster");
    assert_eq!(lines[1]["object"]["apiVersion"], "cluster.x-k8s.io/v1beta2");
    assert!(
        lines.iter().skip(2).all(|l| l["type"] == "BOOKMARK"),
        "timeout ends the stream (with a bookmark)"
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn too_old_resource_version_gets_error_event_410_inside_http_200() {
    let tb = Testbed::start_with_history(
        TestbedOptions {
            ipam: false,
            ..TestbedOptions::profile(P)
        },
        16,
    )
    .await
    .unwrap();
    let api = api(&tb, &clusters(P), Some(NS));
    for i in 0..20 {
        create(&api, cluster_json(P, &format!("h{i}"), json!([]))).await;
    }
    let r = raw(
        &tb,
        "GET",
        "/apis/cluster.x-k8s.io/v1beta2/namespaces/default/clusters?watch=true&resourceVersion=2",
        None,
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    let ev = &r.body;
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(ev["object"]["kind"], "Status");
    assert_eq!(ev["object"]["code"], 410);
    assert_eq!(ev["object"]["reason"], "Expired");
    assert!(ev["object"]["message"]
        .as_str()
        .unwrap()
        .starts_with("too old resource version: 2 ("));
    let mut s = api
        .watch(&WatchParams::default(), "1")
        .await
        .unwrap()
        .boxed();
    match next(&mut s).await {
        WatchEvent::Error(e) => assert_eq!(e.code, 410),
        other => panic!("unexpected {other:?}"),
    }
    tb.shutdown().await;
}

#[tokio::test]
async fn label_selector_watch_sees_object_that_stops_matching_as_deleted() {
    let tb = start_without_ipam(P).await;
    let api = api(&tb, &clusters(P), Some(NS));
    let mut v = cluster_json(P, "l", json!([]));
    v["metadata"]["labels"] = json!({"team": "a"});
    let c = create(&api, v).await;
    let mut s = api
        .watch(
            &WatchParams::default().labels("team=a"),
            c.metadata.resource_version.as_deref().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    api.patch(
        "l",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "b"}}})),
    )
    .await
    .unwrap();
    match next(&mut s).await {
        WatchEvent::Deleted(o) => assert_eq!(o.metadata.labels.unwrap()["team"], "b"),
        other => panic!("unexpected {other:?}"),
    }
    api.patch(
        "l",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}})),
    )
    .await
    .unwrap();
    assert!(
        matches!(next(&mut s).await, WatchEvent::Added(_)),
        "matching again is ADDED"
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn watch_ends_after_timeout_seconds() {
    let tb = start_without_ipam(P).await;
    let api = api(&tb, &clusters(P), Some(NS));
    let mut s = api
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .unwrap()
        .boxed();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.try_next().await {
                Ok(None) => return true,
                Ok(Some(WatchEvent::Bookmark(_))) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(closed, Ok(true), "stream closes after timeoutSeconds");
    tb.shutdown().await;
}

#[tokio::test]
async fn kube_runtime_watcher_relists_after_forced_410_and_keeps_going() {
    let tb = start_without_ipam(P).await;
    let api = api(&tb, &clusters(P), Some(NS));
    create(&api, cluster_json(P, "x", json!([]))).await;
    let mut s = watcher(api.clone(), watcher::Config::default()).boxed();
    let mut inits = 0;
    let mut saw_x = false;
    // First list: Init, InitApply(x), InitDone.
    while inits < 1 || !saw_x {
        match next(&mut s).await {
            watcher::Event::Init => inits += 1,
            watcher::Event::InitApply(o) => saw_x |= o.metadata.name.as_deref() == Some("x"),
            _ => {}
        }
    }
    loop {
        if let watcher::Event::InitDone = next(&mut s).await {
            break;
        }
    }
    tb.faults().force_next_watch_gone();
    tb.faults().cut_watches();
    // The re-watch gets 410: the watcher must relist (a second Init) and then see new objects.
    let mut relisted = false;
    let mut created = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut saw_410 = false;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "watcher recovered");
        let ev = match tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .expect("event in time")
            .expect("open")
        {
            Ok(ev) => ev,
            Err(watcher::Error::WatchError(e)) if e.code == 410 => {
                saw_410 = true;
                continue;
            }
            Err(e) => panic!("unexpected watcher error {e:?}"),
        };
        match ev {
            watcher::Event::Init => relisted = true,
            watcher::Event::InitDone if relisted && !created => {
                create(&api, cluster_json(P, "after", json!([]))).await;
                created = true;
            }
            watcher::Event::Apply(o) if o.metadata.name.as_deref() == Some("after") => break,
            _ => {}
        }
    }
    assert!(
        relisted && saw_410,
        "410 surfaced as a watch error, then a relist"
    );
    let stats = tb.stats();
    assert!(
        stats.requests_for("list", "clusters") >= 2,
        "relisted: {:?}",
        stats.requests
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn watch_cut_fault_closes_streams_after_n_events() {
    let mut opts = TestbedOptions {
        ipam: false,
        ..TestbedOptions::profile(P)
    };
    opts.faults.watch_cut_events = Some(2);
    let tb = Testbed::start(opts).await.unwrap();
    let api = api(&tb, &clusters(P), Some(NS));
    let c = create(&api, cluster_json(P, "c0", json!([]))).await;
    let mut s = api
        .watch(
            &WatchParams::default(),
            c.metadata.resource_version.as_deref().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    for i in 1..=3 {
        create(&api, cluster_json(P, &format!("c{i}"), json!([]))).await;
    }
    assert!(matches!(next(&mut s).await, WatchEvent::Added(_)));
    assert!(matches!(next(&mut s).await, WatchEvent::Added(_)));
    let end = tokio::time::timeout(Duration::from_secs(5), s.try_next())
        .await
        .unwrap();
    assert!(matches!(end, Ok(None)), "cut after 2 events: {end:?}");
    tb.shutdown().await;
}

#[tokio::test]
async fn watch_cut_seconds_fault_closes_quiet_streams() {
    let mut opts = TestbedOptions {
        ipam: false,
        ..TestbedOptions::profile(P)
    };
    opts.faults.watch_cut_seconds = Some(1);
    let tb = Testbed::start(opts).await.unwrap();
    let api = api(&tb, &clusters(P), Some(NS));
    let started = std::time::Instant::now();
    let mut s = api
        .watch(&WatchParams::default().timeout(290), "0")
        .await
        .unwrap()
        .boxed();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(ev)) = s.try_next().await {
            assert!(
                matches!(ev, WatchEvent::Bookmark(_)),
                "only a closing bookmark: {ev:?}"
            );
        }
    })
    .await;
    assert!(closed.is_ok(), "stream cut long before its 290 s timeout");
    assert!(started.elapsed() >= Duration::from_millis(900));
    tb.shutdown().await;
}

#[tokio::test]
async fn continue_token_older_than_history_is_410_expired() {
    let tb = Testbed::start_with_history(
        TestbedOptions {
            ipam: false,
            ..TestbedOptions::profile(P)
        },
        16,
    )
    .await
    .unwrap();
    let api = api(&tb, &clusters(P), Some(NS));
    for i in 0..4 {
        create(&api, cluster_json(P, &format!("k{i}"), json!([]))).await;
    }
    let page = api
        .list(&kube::api::ListParams::default().limit(2))
        .await
        .unwrap();
    let token = page.metadata.continue_.expect("more pages");
    for i in 0..20 {
        create(&api, cluster_json(P, &format!("later{i}"), json!([]))).await;
    }
    let e = api_err(
        api.list(
            &kube::api::ListParams::default()
                .limit(2)
                .continue_token(&token),
        )
        .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
    tb.shutdown().await;
}

#[tokio::test]
async fn kube_runtime_streaming_list_watcher_gets_initial_events_then_changes() {
    let tb = start_without_ipam(P).await;
    let api = api(&tb, &clusters(P), Some(NS));
    create(&api, cluster_json(P, "s1", json!([]))).await;
    let mut s = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut initial = Vec::new();
    loop {
        match next(&mut s).await {
            watcher::Event::InitApply(o) => initial.push(o.metadata.name.unwrap()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(initial, ["s1"]);
    create(&api, cluster_json(P, "s2", json!([]))).await;
    loop {
        if let watcher::Event::Apply(o) = next(&mut s).await {
            assert_eq!(o.metadata.name.as_deref(), Some("s2"));
            break;
        }
    }
    let stats = tb.stats();
    assert_eq!(
        stats.requests_for("list", "clusters"),
        0,
        "streaming lists use watch only"
    );
    tb.shutdown().await;
}
