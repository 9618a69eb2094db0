//! Runtime robustness of the real binary: bounded requests and reconciles, cancellation on leadership loss,
//! bounded shutdown, probes computed from progress, supervision, and no lost reconcile requests across
//! paginated lists and relists. A proxy between the operator and the testbed plays the stuck API server.

mod common;

use std::time::{Duration, Instant};

use common::{
    host,
    proxy::{Action, Proxy, RuleHandle},
    Env, Operator, SpawnOptions,
};
use kube::api::ListParams;
use testbed::{Profile, Testbed, TestbedOptions};

const CP: &str = "control-plane";
const WRITES: [&str; 3] = ["POST", "PATCH", "PUT"];
const LE: [&str; 5] = [
    "--leader-elect",
    "--leader-election-namespace=default",
    "--leader-elect-lease-duration=3s",
    "--leader-elect-renew-deadline=2s",
    "--leader-elect-retry-period=500ms",
];

/// A testbed and a proxy in front of it; the operator is a placeholder (reconciler off) until [`run`] starts one.
async fn bed(profile: Profile) -> (Env, Proxy) {
    let tb = Testbed::start(TestbedOptions::profile(profile))
        .await
        .expect("testbed starts");
    let proxy = Proxy::start(tb.addr(), tb.kubeconfig_path()).await;
    let client = tb.client();
    let op = Operator::spawn(tb.kubeconfig_path(), &["--enable-reconciler=false"]);
    let env = Env {
        tb,
        op,
        client,
        profile,
        shapes: common::shapes(profile),
    };
    (env, proxy)
}

/// Replaces the operator with one talking through the proxy.
fn run(env: &mut Env, proxy: &Proxy, flags: &[&str], opts: SpawnOptions) {
    env.op = Operator::spawn_debug(proxy.kubeconfig(), flags, opts);
}

/// Starts the operator through the proxy and waits until it is ready (and, with `LE`, leads).
async fn start(env: &mut Env, proxy: &Proxy, flags: &[&str], opts: SpawnOptions) {
    run(env, proxy, flags, opts);
    env.op.wait_ready().await;
    if flags.contains(&"--leader-elect") {
        wait_log(&env.op, "became leader", common::WAIT).await;
        // The term starts right after.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A testbed with class `gold` and a small pool, and the operator started through the proxy; the namespace.
async fn started(flags: &[&str], opts: SpawnOptions) -> (Env, Proxy, String) {
    let (mut env, proxy) = bed(Profile::Capi112).await;
    let ns = setup(&env, 10).await;
    start(&mut env, &proxy, flags, opts).await;
    (env, proxy, ns)
}

/// Swallows claim writes from now on, creates Cluster `stuck` and waits until its claim create is swallowed.
async fn stuck_claim_create(env: &Env, proxy: &Proxy, ns: &str) -> RuleHandle {
    let hole = proxy.add(&WRITES, &["ipaddressclaims"], Action::Swallow);
    env.cluster(ns, "stuck", "gold").await;
    proxy.wait_matched(&hole, 1, common::WAIT).await;
    hole
}

/// A namespace with class `gold` and a control-plane pool of `size` addresses.
async fn setup(env: &Env, size: u32) -> String {
    let ns = env.namespace("rt").await;
    env.class(&ns, "gold", &[]).await;
    let last =
        std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 20, 0, 1)) + size - 1);
    env.pool("cp", &[&format!("10.20.0.1-{last}")], 16, "gold", CP)
        .await;
    ns
}

/// Clusters of `ns` with a control-plane endpoint.
async fn with_vip(env: &Env, ns: &str) -> (usize, usize) {
    let list = env
        .clusters(ns)
        .list(&ListParams::default())
        .await
        .expect("list Clusters");
    let done = list.items.iter().filter(|c| !host(c).is_empty()).count();
    (done, list.items.len())
}

async fn wait_all_vips(env: &Env, ns: &str, n: usize, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (done, total) = with_vip(env, ns).await;
        if done == n && total == n {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "{done} of {total} Clusters have a VIP after {within:?} (want {n})\n{}",
                env.op.diagnostics().await
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_probe(op: &Operator, path: &str, status: u16, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if op.probe(path).await.map(|(s, _)| s) == Some(status) {
            return start.elapsed();
        }
        if start.elapsed() >= within {
            panic!(
                "{path} never answered {status} within {within:?}\n{}",
                op.diagnostics().await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_log(op: &Operator, needle: &str, within: Duration) -> Duration {
    let start = Instant::now();
    while !op.logs().contains(needle) {
        if start.elapsed() >= within {
            panic!(
                "no log line {needle:?} within {within:?}\n{}",
                op.diagnostics().await
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// A claim create that never gets an answer holds the only reconcile slot; the per-reconcile deadline abandons it
/// and the retry (with backoff) allocates. Without the deadline the slot is pinned forever.
#[tokio::test]
async fn a_black_holed_write_is_abandoned_at_the_reconcile_deadline_and_retried() {
    let (env, proxy, ns) = started(
        &["--max-concurrent-reconciles=1"],
        SpawnOptions::default().env("CAPI_VIP_ALLOCATOR_RECONCILE_TIMEOUT", "2s"),
    )
    .await;
    let hole = stuck_claim_create(&env, &proxy, &ns).await;
    let swallowed_at = Instant::now();
    proxy.remove(&hole);
    // A second Cluster needs the same single slot.
    env.cluster(&ns, "next", "gold").await;
    env.wait_cp_vip(&ns, "stuck").await;
    let recovered = swallowed_at.elapsed();
    env.wait_cp_vip(&ns, "next").await;
    let logs = env.op.logs();
    assert!(
        logs.contains("reconcile deadline passed"),
        "the stuck reconcile was cancelled at its deadline:\n{logs}"
    );
    let errors = common::metric_value(
        &env.op.metrics().await,
        "capi_vip_allocator_reconcile_total{cluster_class=\"gold\",result=\"error\"}",
    );
    assert!(
        errors.is_some_and(|n| n >= 1.0),
        "the cancelled reconcile is counted as an error: {errors:?}"
    );
    eprintln!(
        "black-holed claim create abandoned and the Cluster allocated {:.2} s after the request was swallowed \
         (deadline 2 s)",
        recovered.as_secs_f64()
    );
    assert!(
        recovered < Duration::from_secs(10),
        "recovered in {recovered:?}"
    );
}

/// `/healthz` fails when a reconcile is stuck longer than the liveness bound (here the deadline is set far above
/// the bound so the stall is visible); before, it was a constant "ok".
#[tokio::test]
async fn healthz_fails_when_the_reconciler_makes_no_progress() {
    let (env, proxy, ns) = started(
        &[],
        SpawnOptions::default()
            .env("CAPI_VIP_ALLOCATOR_RECONCILE_TIMEOUT", "600s")
            .env("CAPI_VIP_ALLOCATOR_LIVENESS_BOUND", "2s"),
    )
    .await;
    assert_eq!(env.op.probe("/healthz").await.map(|(s, _)| s), Some(200));
    stuck_claim_create(&env, &proxy, &ns).await;
    let took = wait_probe(&env.op, "/healthz", 503, common::WAIT).await;
    let (_, body) = env.op.probe("/healthz").await.unwrap_or_default();
    assert!(body.contains("no progress"), "{body}");
    eprintln!(
        "/healthz failed {:.2} s after the claim create was swallowed (liveness bound 2 s): {body}",
        took.as_secs_f64()
    );
}

/// The reconciler task dying (here aborted by the documented fault-injection switch) ends the process non-zero,
/// so the Deployment restarts it; before, the watches kept running and the probes stayed green.
#[tokio::test]
async fn a_killed_reconciler_ends_the_process_with_a_non_zero_code() {
    for leader in [false, true] {
        let (mut env, proxy) = bed(Profile::Capi112).await;
        let flags: &[&str] = if leader { &LE } else { &[] };
        run(
            &mut env,
            &proxy,
            flags,
            SpawnOptions::default().env("CAPI_VIP_ALLOCATOR_FAULT_ABORT_RECONCILER_AFTER", "1s"),
        );
        let status = env.op.wait_exit(common::WAIT).await;
        let Some(status) = status else {
            panic!(
                "the operator kept running without its reconciler (leader election {leader})\n{}",
                env.op.diagnostics().await
            );
        };
        assert!(!status.success(), "non-zero exit expected, got {status}");
        let logs = env.op.logs();
        assert!(
            logs.contains("the reconciler stopped unexpectedly"),
            "{logs}"
        );
        eprintln!("leader election {leader}: aborted reconciler → exit {status}");
    }
}

/// Watches failing for longer than the stall bound withdraw readiness; it comes back once they work again.
#[tokio::test]
async fn readyz_is_withdrawn_while_watches_keep_failing() {
    let (mut env, proxy) = bed(Profile::Capi112).await;
    start(
        &mut env,
        &proxy,
        &[],
        SpawnOptions::default().env("CAPI_VIP_ALLOCATOR_WATCH_STALL", "2s"),
    )
    .await;
    env.tb.faults().set_error_rate("watch", 1.0, 500);
    env.tb.faults().set_error_rate("list", 1.0, 500);
    env.tb.faults().cut_watches();
    let took = wait_probe(&env.op, "/readyz", 503, common::WAIT).await;
    let (_, body) = env.op.probe("/readyz").await.unwrap_or_default();
    assert!(body.contains("failing"), "{body}");
    assert_eq!(
        env.op.probe("/healthz").await.map(|(s, _)| s),
        Some(200),
        "an idle reconciler is alive"
    );
    eprintln!(
        "/readyz failed {:.2} s after every watch request started failing (stall bound 2 s): {body}",
        took.as_secs_f64()
    );
    env.tb.faults().clear();
    let back = wait_probe(&env.op, "/readyz", 200, Duration::from_secs(60)).await;
    eprintln!(
        "/readyz back {:.2} s after the faults were cleared",
        back.as_secs_f64()
    );
}

/// With leader election, leadership arriving while the Cluster list is between pages (the store still buffers
/// the first page) used to drop every Cluster of that page: their requests came before the term, and the term's
/// snapshot of the store was empty. Now every Cluster is re-checked once the caches sync.
#[tokio::test]
async fn leadership_arriving_mid_paginated_cluster_list_loses_no_cluster() {
    const N: usize = 503;
    let (mut env, proxy) = bed(Profile::Capi112).await;
    let ns = setup(&env, N as u32 + 10).await;
    for i in 0..N {
        env.cluster(&ns, &format!("c-{i}"), "gold").await;
    }
    // Order the start: first Cluster page listed, then leadership, then the second page.
    let lease = proxy.add(&[], &["/leases"], Action::Hold);
    let page2 = proxy.add(&["GET"], &["/clusters?", "continue="], Action::Hold);
    run(&mut env, &proxy, &LE, SpawnOptions::default());
    proxy.wait_matched(&page2, 1, common::WAIT).await;
    proxy.remove(&lease);
    wait_log(&env.op, "became leader", common::WAIT).await;
    // The term starts right after; give it a moment, with the second page still held.
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.remove(&page2);
    let start = Instant::now();
    wait_all_vips(&env, &ns, N, Duration::from_secs(120)).await;
    eprintln!(
        "{N} Clusters listed in two pages around the leadership start: all allocated in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert!(
        env.op
            .logs()
            .contains("reconciler waiting for the caches to sync"),
        "the wait is visible in the log"
    );
}

/// A Cluster created while the Cluster watch is down is seen only through the relist that a 410 forces. Its
/// request comes with the relist's first page, while the store still serves the old list (a relist is swapped in
/// only when complete), so the reconciler dropped it as "not found" and nothing asked again. Every completed
/// Cluster relist now re-checks every Cluster. (501 Clusters make the relist two pages; the second is held so the
/// first page's requests are handled before the swap, deterministically.)
async fn cluster_created_during_a_watch_gap_is_reconciled(leader: bool) {
    const N: usize = 501;
    let (mut env, proxy) = bed(Profile::Capi112).await;
    let ns = setup(&env, N as u32 + 10).await;
    for i in 0..N {
        env.cluster(&ns, &format!("c-{i:03}"), "gold").await;
    }
    let flags: &[&str] = if leader { &LE } else { &[] };
    start(&mut env, &proxy, flags, SpawnOptions::default()).await;
    wait_all_vips(&env, &ns, N, Duration::from_secs(120)).await;

    // Hold the Cluster watch's reconnect, cut every watch, and make the held request the next watch to arrive.
    let gap = proxy.add(&["GET"], &["/clusters?", "watch=true"], Action::Hold);
    let page2 = proxy.add(&["GET"], &["/clusters?", "continue="], Action::Hold);
    let seen = gap.matched();
    env.tb.faults().cut_watches();
    proxy.wait_matched(&gap, seen + 1, common::WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // the other kinds re-watched
    env.tb.faults().force_next_watch_gone();
    // Sorts first, so it is on the relist's first page.
    env.cluster(&ns, "a-in-gap", "gold").await;
    proxy.remove(&gap);
    proxy.wait_matched(&page2, 1, common::WAIT).await;
    tokio::time::sleep(Duration::from_secs(1)).await; // the first page's requests are handled meanwhile
    proxy.remove(&page2);
    env.wait_cp_vip(&ns, "a-in-gap").await;
    let logs = env.op.logs();
    assert!(
        logs.contains("watch relisted; re-checking every Cluster"),
        "the relist happened:\n{logs}"
    );
}

#[tokio::test]
async fn cluster_created_during_a_watch_gap_is_reconciled_after_the_relist() {
    cluster_created_during_a_watch_gap_is_reconciled(false).await;
}

#[tokio::test]
async fn cluster_created_during_a_watch_gap_is_reconciled_after_the_relist_with_leader_election() {
    cluster_created_during_a_watch_gap_is_reconciled(true).await;
}

/// A leader whose write is stuck and which then loses its lease cancels the write instead of waiting for it (it
/// could land after another replica took over); before, the term waited for the in-flight reconcile forever.
#[tokio::test]
async fn leadership_loss_cancels_in_flight_reconciles() {
    let (env, proxy, ns) = started(
        &LE,
        SpawnOptions::default().env("CAPI_VIP_ALLOCATOR_RECONCILE_TIMEOUT", "600s"),
    )
    .await;
    let hole = stuck_claim_create(&env, &proxy, &ns).await;
    // Renewals now never get an answer: the elector's bounded requests fail and the renew deadline (2 s) passes.
    let renewals = proxy.add(&["PUT", "GET"], &["/leases"], Action::Swallow);
    let lost = wait_log(
        &env.op,
        "leadership lost, stopping the controller",
        common::WAIT,
    )
    .await;
    // (The line's prefix is the same before and after the change, so the old code fails on the wait, not the text.)
    let cancelled = wait_log(&env.op, "leadership lost: reconciler stopped", common::WAIT).await;
    eprintln!(
        "lease renewals black-holed: leadership dropped after {:.2} s; the term with the stuck write ended {:.3} s \
         after that log line was seen",
        lost.as_secs_f64(),
        cancelled.as_secs_f64()
    );
    proxy.remove(&renewals);
    proxy.remove(&hole);
    // Leadership comes back and the new term allocates.
    env.wait_cp_vip(&ns, "stuck").await;
}

/// SIGTERM while a write is stuck: in-flight work gets the shutdown grace, then is abandoned, and the process
/// exits 0 well within the Deployment's 10 s grace period; before, it waited for the stuck write forever.
#[tokio::test]
async fn sigterm_with_a_stuck_write_exits_within_the_grace() {
    let (mut env, proxy, ns) = started(
        &LE,
        SpawnOptions::default()
            .env("CAPI_VIP_ALLOCATOR_RECONCILE_TIMEOUT", "600s")
            .env("CAPI_VIP_ALLOCATOR_SHUTDOWN_GRACE", "2s"),
    )
    .await;
    stuck_claim_create(&env, &proxy, &ns).await;
    let op = std::mem::replace(
        &mut env.op,
        Operator::spawn(env.tb.kubeconfig_path(), &["--enable-reconciler=false"]),
    );
    let start = Instant::now();
    let (status, logs) = op.terminate().await;
    let took = start.elapsed();
    assert!(status.success(), "exit 0 after SIGTERM: {status}\n{logs}");
    assert!(
        logs.contains("shutdown grace passed; abandoning in-flight reconciles"),
        "{logs}"
    );
    assert!(took < Duration::from_secs(10), "exited after {took:?}");
    eprintln!(
        "SIGTERM with a black-holed write: exit {status} after {:.2} s (grace 2 s)",
        took.as_secs_f64()
    );
}

/// kube 5's client has no read timeout; ours does. A discovery request that never gets an answer fails at the
/// request timeout and is retried, instead of keeping the operator unready forever.
#[tokio::test]
async fn a_black_holed_request_fails_at_the_client_read_timeout() {
    let (mut env, proxy) = bed(Profile::Capi112).await;
    let hole = proxy.add(&["GET"], &["/apis/cluster.x-k8s.io/"], Action::Swallow);
    run(
        &mut env,
        &proxy,
        &[],
        SpawnOptions::default().env("CAPI_VIP_ALLOCATOR_REQUEST_TIMEOUT", "1s"),
    );
    proxy.wait_matched(&hole, 1, common::WAIT).await;
    let swallowed_at = Instant::now();
    let failed = wait_log(&env.op, "discovery failed", common::WAIT).await;
    proxy.remove(&hole);
    env.op.wait_ready().await;
    eprintln!(
        "black-holed discovery GET failed {:.2} s after it was sent (request timeout 1 s); ready {:.2} s after",
        failed.as_secs_f64(),
        swallowed_at.elapsed().as_secs_f64()
    );
    assert!(failed < Duration::from_secs(5), "failed after {failed:?}");
}
