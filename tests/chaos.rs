//! Fault tests: many Clusters while the API server fails requests, cuts watches and forces a 410, and the operator
//! process is SIGKILLed and restarted several times; then every Cluster is deleted. The invariants in
//! `common/invariants.rs` must hold. The short form runs in `make test`; `make chaos` runs the long form
//! (`CHAOS_CLUSTERS`, `CHAOS_KILLS` override the sizes) and prints a summary table.

mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use common::{invariants::Invariants, Env, Operator};
use futures::{stream, StreamExt};
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use serde_json::json;
use testbed::Profile;

/// Retries a request the fault injector refused (500/409/429), as a user's tooling would.
async fn retrying<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    for _ in 0..100 {
        match f().await {
            Ok(v) => return v,
            Err(kube::Error::Api(s)) if [409, 429, 500, 503].contains(&s.code) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
    panic!("{what}: still failing after 100 attempts");
}

fn set_faults(env: &Env) {
    let f = env.tb.faults();
    // 5 % of reads, creates and deletes fail with 500; 2 % of updates and patches with a 409 Conflict.
    for verb in ["get", "list", "watch", "create", "delete"] {
        f.set_error_rate(verb, 0.05, 500);
    }
    for verb in ["patch", "update"] {
        f.set_error_rate(verb, 0.02, 409);
    }
    f.force_next_watch_gone();
}

/// "No address bound to two claims, no shared control-plane host", retrying the lists the injected faults refuse.
async fn no_sharing(inv: &Invariants) {
    for _ in 0..50 {
        match inv.check_no_sharing().await {
            Ok(()) => return,
            Err(e) if e.starts_with("list:") => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("sharing invariants violated:\n{e}"),
        }
    }
    panic!("sharing invariants: lists still failing after 50 attempts");
}

struct Figures {
    clusters: usize,
    kills: usize,
    vips: usize,
    duplicates: usize,
    orphans: usize,
    converge: Duration,
    release: Duration,
    total: Duration,
}

async fn chaos(clusters: usize, kills: usize) -> Figures {
    let t_start = Instant::now();
    let mut env = Env::start(Profile::Capi112).await;
    let ns = env.namespace("chaos").await;
    env.class(&ns, "chaos", &["clusterVip"]).await;
    env.pool(
        "chaos-cp",
        &["10.80.0.1-10.80.7.254"],
        21,
        "chaos",
        "control-plane",
    )
    .await;
    env.pool(
        "chaos-ing",
        &["10.90.0.1-10.90.7.254"],
        21,
        "chaos",
        "ingress",
    )
    .await;
    let mut inv = Invariants::new(env.client.clone(), env.shapes.clone()).await;
    inv.expect_pool("chaos-cp");
    inv.expect_pool("chaos-ing");

    set_faults(&env);
    let faults = env.tb.faults();
    let cutter = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(3)).await;
            faults.cut_watches();
        }
    });

    // Kills: all but one spread over creation, the last one during deletion.
    let create_kills = kills.saturating_sub(1).max(1);
    let batch = clusters.div_ceil(create_kills);
    let clusters_api: Api<DynamicObject> = env.clusters(&ns);
    let topology = env.topology("chaos", None, None);
    let api_version = env.shapes.cluster.api_version.clone();
    let names: Vec<String> = (0..clusters).map(|i| format!("c-{i:04}")).collect();
    let mut killed = 0;
    for chunk in names.chunks(batch) {
        let api = Arc::new(clusters_api.clone());
        stream::iter(chunk.iter().cloned())
            .for_each_concurrent(8, |name| {
                let api = api.clone();
                let body = json!({"apiVersion": api_version, "kind": "Cluster",
                    "metadata": {"name": name, "namespace": ns}, "spec": {"topology": topology}});
                async move {
                    let obj: DynamicObject = serde_json::from_value(body).unwrap();
                    let pp = PostParams::default();
                    retrying(&format!("create {name}"), || api.create(&pp, &obj)).await;
                }
            })
            .await;
        if killed < create_kills {
            // Let the current process get into its work, then SIGKILL it mid-flight and start a fresh one at once.
            tokio::time::sleep(Duration::from_millis(700)).await;
            let fresh = Operator::spawn(env.tb.kubeconfig_path(), &[]);
            drop(std::mem::replace(&mut env.op, fresh));
            killed += 1;
        }
    }
    let created_at = Instant::now();
    let (summary, _) = inv
        .wait_vips(&|_| true, 2 * clusters, Duration::from_secs(120))
        .await;
    let converge = created_at.elapsed();
    assert_eq!(summary.clusters, clusters);
    assert_eq!(
        summary.vips,
        2 * clusters,
        "a control-plane and an ingress VIP each"
    );
    assert_eq!((summary.duplicates, summary.orphans), (0, 0));
    no_sharing(&inv).await;

    // Delete everything, with one more kill half-way.
    let delete_at = Instant::now();
    for (i, name) in names.iter().enumerate() {
        retrying(&format!("delete {name}"), || async {
            match clusters_api.delete(name, &DeleteParams::default()).await {
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                r => r.map(|_| ()),
            }
        })
        .await;
        if i == names.len() / 2 && killed < kills {
            let fresh = Operator::spawn(env.tb.kubeconfig_path(), &[]);
            drop(std::mem::replace(&mut env.op, fresh));
            killed += 1;
        }
    }
    let release = inv.wait_released(Duration::from_secs(120)).await;
    let release = release.max(delete_at.elapsed());
    cutter.abort();
    env.tb.faults().clear();
    inv.check_released()
        .await
        .expect("released invariants hold once faults stop");
    no_sharing(&inv).await;
    let figures = Figures {
        clusters,
        kills: killed,
        vips: summary.vips,
        duplicates: summary.duplicates,
        orphans: summary.orphans,
        converge,
        release,
        total: t_start.elapsed(),
    };
    print_table(&figures);
    figures
}

fn print_table(f: &Figures) {
    eprintln!(
        "\n| chaos run | value |\n|---|---|\n\
         | Clusters | {} |\n| operator kills (SIGKILL + restart) | {} |\n\
         | faults | 5 % 500 on get/list/watch/create/delete, 2 % 409 on patch/update, watches cut every 3 s, one forced 410 |\n\
         | VIPs allocated (control plane + ingress) | {} |\n| duplicate VIPs | {} |\n| orphan claims/addresses | {} |\n\
         | time to converge after the last create | {:.1} s |\n\
         | time to release everything after deleting | {:.1} s |\n| whole run | {:.1} s |\n",
        f.clusters,
        f.kills,
        f.vips,
        f.duplicates,
        f.orphans,
        f.converge.as_secs_f64(),
        f.release.as_secs_f64(),
        f.total.as_secs_f64()
    );
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Short form (`make test`): 200 Clusters, 5 kills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clusters_survive_faults_and_five_kills() {
    let f = chaos(200, 5).await;
    assert_eq!(f.kills, 5);
}

/// Long form (`make chaos`): 500 Clusters, 10 kills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long form; run by `make chaos`"]
async fn chaos_long_form() {
    let f = chaos(
        env_usize("CHAOS_CLUSTERS", 500),
        env_usize("CHAOS_KILLS", 10),
    )
    .await;
    assert_eq!(f.duplicates + f.orphans, 0);
}

/// The checker is not vacuous: it reports a shared VIP, a missing VIP and an orphan claim.
#[tokio::test]
async fn invariant_checker_reports_violations() {
    let env = Env::start_with(Profile::Capi112, &["--enable-reconciler=false"]).await;
    let ns = env.namespace("inv").await;
    env.class(&ns, "inv", &[]).await;
    let inv = Invariants::new(env.client.clone(), env.shapes.clone()).await;
    let manual = |host: &str| json!({"topology": env.topology("inv", None, None), "controlPlaneEndpoint": {"host": host, "port": 6443}});
    env.cluster_with(&ns, "a", json!({}), manual("10.1.1.1"))
        .await;
    env.cluster_with(&ns, "b", json!({}), manual("10.1.1.1"))
        .await;
    env.cluster(&ns, "c", "inv").await;
    let claim = json!({"apiVersion": env.shapes.claim.api_version, "kind": "IPAddressClaim",
        "metadata": {"name": "vip-cp-ghost", "namespace": ns},
        "spec": {"poolRef": {"apiGroup": "ipam.cluster.x-k8s.io", "kind": "GlobalInClusterIPPool", "name": "none"}}});
    env.claims(&ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(claim).unwrap(),
        )
        .await
        .expect("create claim");
    let err = inv.check_allocated(&|_| true).await.unwrap_err();
    assert!(err.contains("VIP 10.1.1.1 is held by"), "{err}");
    assert!(err.contains("has no control-plane VIP"), "{err}");
    assert!(err.contains("has no live owner"), "{err}");
    let err = inv.check_no_sharing().await.unwrap_err();
    assert!(
        err.contains("control-plane host 10.1.1.1 is shared by Clusters"),
        "{err}"
    );
    let err = inv.check_released().await.unwrap_err();
    assert!(
        err.contains("Clusters remain") && err.contains("claims of ours remain"),
        "{err}"
    );
}

fn obj(v: serde_json::Value) -> DynamicObject {
    serde_json::from_value(v).unwrap()
}

fn address(name: &str, claim: &str, ip: &str) -> DynamicObject {
    obj(
        json!({"apiVersion": "ipam.cluster.x-k8s.io/v1beta2", "kind": "IPAddress",
        "metadata": {"name": name, "namespace": "ns", "labels": {"vip.capi.gorizond.io/role": "control-plane"}},
        "spec": {"address": ip, "prefix": 24, "claimRef": {"name": claim},
            "poolRef": {"apiGroup": "ipam.cluster.x-k8s.io", "kind": "GlobalInClusterIPPool", "name": "p"}}}),
    )
}

fn claim(name: &str) -> DynamicObject {
    obj(
        json!({"apiVersion": "ipam.cluster.x-k8s.io/v1beta2", "kind": "IPAddressClaim",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"poolRef": {"apiGroup": "ipam.cluster.x-k8s.io", "kind": "GlobalInClusterIPPool", "name": "p"}}}),
    )
}

fn cluster(name: &str, host: &str) -> DynamicObject {
    obj(
        json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"controlPlaneEndpoint": {"host": host, "port": 6443}}}),
    )
}

/// The sharing rules fail on a violating state and pass the operator's legitimate holder.
#[test]
fn sharing_checker_tells_two_claims_on_one_address_from_a_holder() {
    use common::invariants::{address_violations, host_violations};
    let claims = [claim("vip-cp-a"), claim("vip-cp-b")];
    // A holder naming a claim that does not exist, next to the claim's new IPAddress: fine.
    let holder = [
        address("vip-cp-a", "vip-cp-a", "10.0.0.5"),
        address("vip-hold-a", "vip-cp-gone", "10.0.0.5"),
    ];
    assert_eq!(address_violations(&holder, &claims), Vec::<String>::new());
    // Two existing claims bound to one address of one pool: a violation.
    let twice = [
        address("vip-cp-a", "vip-cp-a", "10.0.0.5"),
        address("vip-cp-b", "vip-cp-b", "10.0.0.5"),
    ];
    let v = address_violations(&twice, &claims);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].contains("10.0.0.5") && v[0].contains("ns/vip-cp-b"),
        "{v:?}"
    );
    // The same address in two pools is two addresses.
    let mut other_pool = address("vip-cp-b", "vip-cp-b", "10.0.0.5");
    other_pool.data["spec"]["poolRef"]["name"] = json!("q");
    let two_pools = [address("vip-cp-a", "vip-cp-a", "10.0.0.5"), other_pool];
    assert!(address_violations(&two_pools, &claims).is_empty());
    // Two Clusters on one control-plane host: a violation; distinct hosts are not.
    let v = host_violations(&[
        cluster("a", "10.0.0.5"),
        cluster("b", "10.0.0.5"),
        cluster("c", "10.0.0.6"),
    ]);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("ns/a") && v[0].contains("ns/b"), "{v:?}");
}
