//! HA: two operator processes with `--leader-elect`. Only the lease holder writes; when it is killed the other
//! takes over and finishes allocation; a SIGTERMed leader releases its lease and exits 0.

mod common;

use std::time::{Duration, Instant};

use common::{host, invariants::Invariants, Env, Operator};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use testbed::Profile;

const LEASE: &str = "capi-vip-allocator.gorizond.io";
const LE_FLAGS: &[&str] = &[
    "--leader-elect",
    "--leader-election-namespace=default",
    "--leader-elect-lease-duration=5s",
    "--leader-elect-renew-deadline=4s",
    "--leader-elect-retry-period=500ms",
];

async fn holder(env: &Env) -> String {
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), "default");
    leases
        .get_opt(LEASE)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .unwrap_or_default()
}

/// Waits until the lease holder satisfies `pred`; returns it.
async fn wait_holder(env: &Env, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + common::WAIT;
    loop {
        let h = holder(env).await;
        if pred(&h) {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "lease holder never {what} (last: {h:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Identities (user-agent suffixes) of the operator's non-lease writes since `seq`.
fn writers_since(env: &Env, seq: u64) -> Vec<String> {
    let mut who: Vec<String> = env
        .tb
        .stats_since(seq)
        .writes
        .into_iter()
        .filter(|w| w.user_agent.starts_with("capi-vip-allocator/") && w.resource != "leases")
        .map(|w| w.user_agent)
        .collect();
    who.sort();
    who.dedup();
    who
}

fn last_seq(env: &Env) -> u64 {
    env.tb.stats().writes.last().map(|w| w.seq).unwrap_or(0)
}

async fn make_clusters(env: &Env, ns: &str, prefix: &str, n: usize) -> Vec<String> {
    let mut names = Vec::new();
    for i in 0..n {
        let name = format!("{prefix}-{i}");
        env.cluster(ns, &name, "ha").await;
        names.push(name);
    }
    names
}

#[tokio::test]
async fn only_the_leader_writes_and_the_follower_takes_over_when_it_dies() {
    let mut env = Env::start_with(Profile::Capi112, LE_FLAGS).await;
    let mut second = Operator::spawn(env.tb.kubeconfig_path(), LE_FLAGS);
    second.wait_ready().await; // followers are ready too

    let ns = env.namespace("ha").await;
    env.class(&ns, "ha", &[]).await;
    env.pool(
        "ha-pool",
        &["10.60.0.1-10.60.0.100"],
        24,
        "ha",
        "control-plane",
    )
    .await;
    let start_seq = last_seq(&env);
    let first_batch = make_clusters(&env, &ns, "a", 5).await;
    for name in &first_batch {
        env.wait_cp_vip(&ns, name).await;
        // The allocation's last write (our finalizer on the IPAddress) is done too.
        env.wait_protected(&ns, &format!("vip-cp-{name}")).await;
    }
    let leader = wait_holder(&env, "set", |h| !h.is_empty()).await;
    let writers = writers_since(&env, start_seq);
    assert_eq!(
        writers,
        vec![format!(
            "capi-vip-allocator/{} ({leader})",
            env!("CARGO_PKG_VERSION")
        )],
        "exactly one replica — the lease holder — writes"
    );
    // Both replicas keep live caches (the follower answers hooks and serves gauges from them): each reports the
    // five addresses the leader's claims hold in the pool.
    for (who, op) in [("first", &env.op), ("second", &second)] {
        let deadline = Instant::now() + common::WAIT;
        loop {
            let text = op.metrics().await;
            if text.lines().any(|l| {
                l.starts_with("capi_vip_allocator_claims_ready{")
                    && l.contains(&format!("namespace=\"{ns}\""))
                    && l.ends_with(" 5")
            }) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the {who} replica's caches never showed 5 ready claims:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Kill the leader (SIGKILL: no release), whichever of the two it is.
    let first_leads = env.op.logs().contains(&leader);
    let survivor_logs_have_leader = second.logs().contains(&leader);
    assert!(
        first_leads ^ survivor_logs_have_leader,
        "the leader identity is in exactly one log"
    );
    if first_leads {
        let dead = std::mem::replace(&mut env.op, second);
        drop(dead);
    } else {
        drop(second);
    }
    let killed_at = Instant::now();
    let kill_seq = last_seq(&env);
    let second_batch = make_clusters(&env, &ns, "b", 5).await;
    let new_leader = wait_holder(&env, "changed", |h| !h.is_empty() && h != leader).await;
    let failover = killed_at.elapsed();
    for name in &second_batch {
        env.wait_cp_vip(&ns, name).await;
    }
    let finished = killed_at.elapsed();
    eprintln!(
        "HA failover: new leader after {:.2} s, allocation of 5 new Clusters finished {:.2} s after the kill \
         (lease 5 s, renew deadline 4 s, retry 500 ms)",
        failover.as_secs_f64(),
        finished.as_secs_f64()
    );
    assert!(
        finished < Duration::from_secs(20),
        "took over and finished within 20 s"
    );
    assert_eq!(
        writers_since(&env, kill_seq),
        vec![format!(
            "capi-vip-allocator/{} ({new_leader})",
            env!("CARGO_PKG_VERSION")
        )],
        "after the kill only the new leader writes"
    );
    let inv = Invariants::new(env.client.clone(), env.shapes.clone()).await;
    let (summary, _) = inv.wait_allocated(&|_| true, common::WAIT).await;
    assert_eq!(
        (summary.clusters, summary.duplicates, summary.orphans),
        (10, 0, 0)
    );
    // No VIP handed out twice.
    let mut vips = Vec::new();
    for name in first_batch.iter().chain(&second_batch) {
        let c = env.clusters(&ns).get(name).await.unwrap();
        vips.push(host(&c));
    }
    let n = vips.len();
    vips.sort();
    vips.dedup();
    assert_eq!(vips.len(), n, "distinct VIPs: {vips:?}");

    // Graceful shutdown of the leader: exit 0 and the lease is released (empty holder).
    let Env { op, tb, client, .. } = env;
    let (status, logs) = op.terminate().await;
    assert!(status.success(), "exit 0 on SIGTERM: {status}\n{logs}");
    assert!(logs.contains("leader lease released"), "{logs}");
    let leases: Api<Lease> = Api::namespaced(client, "default");
    let spec = leases.get(LEASE).await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref().unwrap_or(""), "");
    assert_eq!(
        spec.lease_transitions,
        Some(1),
        "one holder change: first leader → second"
    );
    drop(tb);
}

#[tokio::test]
async fn sigterm_releases_the_lease_so_a_standby_leads_at_once() {
    let mut env = Env::start_with(Profile::Capi112, LE_FLAGS).await;
    let leader = wait_holder(&env, "set", |h| !h.is_empty()).await;
    let mut standby = Operator::spawn(
        env.tb.kubeconfig_path(),
        &[
            "--leader-elect",
            "--leader-election-namespace=default",
            // Long lease: without the release the standby would wait 30 s.
            "--leader-elect-lease-duration=30s",
            "--leader-elect-renew-deadline=20s",
            "--leader-elect-retry-period=200ms",
        ],
    );
    standby.wait_ready().await;
    let ns = env.namespace("ha-term").await;
    env.class(&ns, "ha", &[]).await;
    env.pool(
        "ha-term-pool",
        &["10.61.0.1-10.61.0.50"],
        24,
        "ha",
        "control-plane",
    )
    .await;
    make_clusters(&env, &ns, "a", 2).await;
    env.wait_cp_vip(&ns, "a-0").await;

    let op = std::mem::replace(&mut env.op, standby);
    let t0 = Instant::now();
    let (status, logs) = op.terminate().await;
    assert!(status.success(), "exit 0 on SIGTERM: {status}\n{logs}");
    assert!(logs.contains("controller stopped"), "{logs}");
    assert!(logs.contains("leader lease released"), "{logs}");
    let stop_logs_pos = logs.find("controller stopped").unwrap();
    let release_pos = logs.find("leader lease released").unwrap();
    assert!(
        stop_logs_pos < release_pos,
        "the controller stops before the lease is released"
    );
    let took = wait_holder(&env, "taken by the standby", |h| {
        !h.is_empty() && h != leader
    })
    .await;
    let elapsed = t0.elapsed();
    assert!(
        elapsed < Duration::from_secs(10),
        "standby led after {elapsed:?}, well before the 30 s lease would expire"
    );
    make_clusters(&env, &ns, "b", 1).await;
    env.wait_cp_vip(&ns, "b-0").await;
    assert!(env.op.logs().contains(&took));
}

#[tokio::test]
async fn leader_election_outside_a_pod_needs_a_namespace() {
    let tb = testbed::Testbed::start(testbed::TestbedOptions::profile(Profile::Capi112))
        .await
        .expect("testbed");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_capi-vip-allocator"))
        .env_remove("POD_NAMESPACE")
        .arg(format!("--kubeconfig={}", tb.kubeconfig_path().display()))
        .args([
            "--leader-elect",
            "--metrics-bind-address=0",
            "--health-probe-bind-address=0",
        ])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if std::path::Path::new(capi_vip_allocator::leader::SERVICE_ACCOUNT_NAMESPACE_FILE).exists() {
        return; // running inside a pod: the namespace is known
    }
    assert!(!out.status.success());
    assert!(stderr.contains("--leader-election-namespace"), "{stderr}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_capi-vip-allocator"))
        .env_remove("POD_NAMESPACE")
        .arg(format!("--kubeconfig={}", tb.kubeconfig_path().display()))
        .args([
            "--leader-elect",
            "--leader-election-namespace=default",
            "--leader-elect-lease-duration=2s",
            "--leader-elect-renew-deadline=5s",
        ])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("must be greater than --leader-elect-renew-deadline"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_leader_that_cannot_renew_stops_writing_before_its_lease_can_be_taken() {
    let env = Env::start_with(Profile::Capi112, LE_FLAGS).await;
    let leader = wait_holder(&env, "set", |h| !h.is_empty()).await;
    let agent = format!(
        "capi-vip-allocator/{} ({leader})",
        env!("CARGO_PKG_VERSION")
    );
    let ns = env.namespace("ha-renew").await;
    env.class(&ns, "ha", &[]).await;
    env.pool(
        "ha-renew-pool",
        &["10.62.0.1-10.62.0.200"],
        24,
        "ha",
        "control-plane",
    )
    .await;
    make_clusters(&env, &ns, "a", 2).await;
    env.wait_cp_vip(&ns, "a-1").await;

    // Lease renewals are PUTs; the operator itself never PUTs. Fail them all: the leader must give up.
    env.tb.faults().set_error_rate("update", 1.0, 500);
    let t0 = Instant::now();
    let mut created = 2;
    let lost_at = loop {
        // Keep work coming so the leader would write if it still believed it leads.
        env.cluster(&ns, &format!("a-{created}"), "ha").await;
        created += 1;
        if env.op.logs().contains("leadership lost") {
            break Instant::now();
        }
        assert!(
            t0.elapsed() < common::WAIT,
            "leadership never lost:\n{}",
            env.op.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Give any straggling write time to land, then compare with the last successful renewal.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), "default");
    let spec = leases.get(LEASE).await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some(leader.as_str()));
    let renewed_us = spec.renew_time.unwrap().0.as_microsecond();
    let lease_us = i64::from(spec.lease_duration_seconds.unwrap()) * 1_000_000;
    let last_write_us = env
        .tb
        .stats()
        .writes
        .iter()
        .filter(|w| w.user_agent == agent && w.resource != "leases" && w.code < 300)
        .map(|w| w.time_us as i64)
        .max()
        .unwrap();
    eprintln!(
        "renewal failing: leadership dropped {:.2} s after the faults began; last write {:.2} s after the last \
         renewal (the lease could be taken {:.0} s after it)",
        (lost_at - t0).as_secs_f64(),
        (last_write_us - renewed_us) as f64 / 1e6,
        lease_us as f64 / 1e6
    );
    assert!(
        last_write_us < renewed_us + lease_us,
        "the leader wrote after its lease could have been taken"
    );
    assert!(
        env.op.logs().contains("reconciler stopped"),
        "{}",
        env.op.logs()
    );

    // Renewals work again: it leads again and serves the Clusters created meanwhile.
    env.tb.faults().clear();
    let inv = Invariants::new(env.client.clone(), env.shapes.clone()).await;
    let (summary, took) = inv.wait_allocated(&|_| true, common::WAIT).await;
    assert_eq!((summary.clusters, summary.duplicates), (created, 0));
    eprintln!(
        "allocation resumed {:.2} s after renewals succeed again",
        took.as_secs_f64()
    );
}
