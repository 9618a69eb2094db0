//! Graceful shutdown: SIGTERM while reconciles are in flight stops taking work, lets in-flight work end safely,
//! releases the lease and exits 0 within the shipped Deployment's grace period (10 s); a successor finishes the job
//! with nothing duplicated or leaked. Also: an unreachable API server at start-up.

mod common;

use std::time::{Duration, Instant};

use common::{invariants::Invariants, Env, Operator};
use futures::{stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use serde_json::json;
use testbed::Profile;

/// `terminationGracePeriodSeconds` in config/manager/manager.yaml.
const GRACE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_allocation_exits_zero_in_time_and_a_successor_finishes() {
    let le = [
        "--leader-elect",
        "--leader-election-namespace=default",
        "--leader-elect-lease-duration=6s",
        "--leader-elect-renew-deadline=4s",
        "--leader-elect-retry-period=1s",
    ];
    let mut env = Env::start_with(Profile::Capi112, &le).await;
    let ns = env.namespace("term").await;
    env.class(&ns, "term", &["clusterVip"]).await;
    env.pool(
        "term-cp",
        &["10.40.0.1-10.40.0.250"],
        24,
        "term",
        "control-plane",
    )
    .await;
    env.pool(
        "term-ing",
        &["10.41.0.1-10.41.0.250"],
        24,
        "term",
        "ingress",
    )
    .await;
    let mut inv = Invariants::new(env.client.clone(), env.shapes.clone()).await;
    inv.expect_pool("term-cp");
    inv.expect_pool("term-ing");

    // Slow API: every request takes 40 ms, so reconciles are in flight when the signal comes.
    env.tb.faults().set_latency(Duration::from_millis(40));
    let api = env.clusters(&ns);
    let topology = env.topology("term", None, None);
    let version = env.shapes.cluster.api_version.clone();
    let names: Vec<String> = (0..60).map(|i| format!("t-{i:02}")).collect();
    stream::iter(names.clone())
        .for_each_concurrent(16, |name| {
            let api = api.clone();
            let body = json!({"apiVersion": version, "kind": "Cluster",
                "metadata": {"name": name, "namespace": ns}, "spec": {"topology": topology}});
            async move {
                let obj: DynamicObject = serde_json::from_value(body).unwrap();
                api.create(&PostParams::default(), &obj)
                    .await
                    .expect("create Cluster");
            }
        })
        .await;
    env.wait_cp_vip(&ns, "t-00").await;

    let op = std::mem::replace(
        &mut env.op,
        // Placeholder successor, started only after the first one has exited (below).
        Operator::spawn(env.tb.kubeconfig_path(), &["--enable-reconciler=false"]),
    );
    let t0 = Instant::now();
    let (status, logs) = op.terminate().await;
    let took = t0.elapsed();
    eprintln!(
        "SIGTERM mid-allocation: exited with {status} after {:.2} s",
        took.as_secs_f64()
    );
    assert!(status.success(), "exit 0: {status}\n{logs}");
    assert!(took < GRACE, "exited within the grace period: {took:?}");
    for line in [
        "signal received",
        "controller stopped",
        "leader lease released",
    ] {
        assert!(logs.contains(line), "{line:?} missing:\n{logs}");
    }
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), "default");
    let spec = leases
        .get("capi-vip-allocator.gorizond.io")
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(spec.holder_identity.as_deref().unwrap_or(""), "");
    let done_before = {
        let mut n = 0;
        for name in &names {
            let c = api.get(name).await.unwrap();
            n += usize::from(!common::host(&c).is_empty());
        }
        n
    };
    eprintln!(
        "{done_before} of {} Clusters had their VIP at the signal",
        names.len()
    );

    // Whatever was half done, a successor finishes it without duplicates and nothing leaks on delete.
    env.tb.faults().clear();
    let placeholder =
        std::mem::replace(&mut env.op, Operator::spawn(env.tb.kubeconfig_path(), &le));
    drop(placeholder);
    let (summary, _) = inv.wait_vips(&|_| true, 120, common::WAIT).await;
    assert_eq!(
        (
            summary.clusters,
            summary.vips,
            summary.duplicates,
            summary.orphans
        ),
        (60, 120, 0, 0)
    );
    for name in &names {
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }
    inv.wait_released(common::WAIT).await;
}

/// An API server that is not there at start: the process keeps running (no crash loop), `/healthz` is 200,
/// `/readyz` 503, and SIGTERM still exits 0 at once.
#[tokio::test]
async fn unreachable_api_server_at_start_is_not_ready_and_does_not_crash() {
    let dead_port = common::free_port();
    let dir = std::env::temp_dir().join(format!("unreachable-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: dead\n  cluster:\n    server: http://127.0.0.1:{dead_port}\n\
             contexts:\n- name: dead\n  context:\n    cluster: dead\n    user: dead\ncurrent-context: dead\n\
             users:\n- name: dead\n  user: {{}}\n"
        ),
    )
    .unwrap();
    let op = Operator::spawn(&kubeconfig, &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while op.probe("/healthz").await.map(|(s, _)| s) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "healthz never up:\n{}",
            op.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Stay up for a few discovery retries.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        op.probe("/readyz").await.map(|(s, _)| s),
        Some(503),
        "not ready"
    );
    assert_eq!(op.probe("/healthz").await.map(|(s, _)| s), Some(200));
    let logs = op.logs();
    assert!(logs.contains("discovery failed"), "{logs}");
    let (status, logs) = op.terminate().await;
    assert!(status.success(), "{status}\n{logs}");
    std::fs::remove_dir_all(dir).unwrap();
}
