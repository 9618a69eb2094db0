//! The BeforeClusterCreate gate against the testbed's simulated topology controller: 200 Clusters created at once
//! on a class with `clusterVip`. Without the gate the simulator renders TestInfraClusters before the VIP exists
//! and strict providers reject them (the count is reported, whatever it is); with the gate no render is rejected
//! and every rendered object carries its Cluster's VIP. Prints the rejected counts and the creation latency
//! (first seen by the simulator → rendered) of both runs; run with `--nocapture` to see them.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::{free_port, shapes, Env, Operator};
use futures::future::join_all;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::json;
use testbed::{
    topology::{TopologyOptions, TopologyStats},
    Profile, Testbed, TestbedOptions,
};

const CLUSTERS: usize = 200;
const DEADLINE: Duration = Duration::from_secs(40);

/// The shipped component's file, parsed.
fn component(file: &str) -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/runtime-extension/component")
        .join(file);
    let text = std::fs::read_to_string(&path).expect("component file");
    serde_saphyr::from_str(&text).expect("component YAML")
}

/// A self-signed serving certificate for the DNS names of the shipped Certificate, in a fresh directory;
/// returns (dir, PEM).
fn serving_cert() -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!(
        "vip-gate-certs-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let names: Vec<String> = component("certificate.yaml")["spec"]["dnsNames"]
        .as_array()
        .expect("dnsNames")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let cert = rcgen::generate_simple_self_signed(names).unwrap();
    std::fs::write(dir.join("tls.crt"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), cert.key_pair.serialize_pem()).unwrap();
    (dir, cert.cert.pem())
}

fn extension_configs(client: kube::Client) -> Api<DynamicObject> {
    let ar = ApiResource {
        group: "runtime.cluster.x-k8s.io".into(),
        version: "v1alpha1".into(),
        api_version: "runtime.cluster.x-k8s.io/v1alpha1".into(),
        kind: "ExtensionConfig".into(),
        plural: "extensionconfigs".into(),
    };
    Api::all_with(client, &ar)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Run {
    stats: TopologyStats,
    p50_ms: f64,
    p99_ms: f64,
}

async fn run(gate: bool) -> Run {
    run_on(Profile::Capi112, gate, CLUSTERS, Duration::ZERO).await
}

async fn run_on(profile: Profile, gate: bool, count: usize, ipam_delay: Duration) -> Run {
    // The shipped ExtensionConfig names a Service; the testbed has no DNS, so map it to the operator's port.
    let ext = component("extension_config.yaml");
    let svc = &ext["spec"]["clientConfig"]["service"];
    let hook_port = free_port();
    let services = [(
        format!(
            "{}.{}.svc:{}",
            svc["name"].as_str().unwrap(),
            svc["namespace"].as_str().unwrap(),
            svc["port"].as_u64().unwrap_or(443)
        ),
        std::net::SocketAddr::from(([127, 0, 0, 1], hook_port)),
    )]
    .into_iter()
    .collect();
    let tb = Testbed::start(TestbedOptions {
        topology: Some(TopologyOptions {
            services,
            ..Default::default()
        }),
        ipam_delay,
        ..TestbedOptions::profile(profile)
    })
    .await
    .expect("testbed starts");
    let (cert_dir, ca_pem) = serving_cert();
    let flags: Vec<String> = if gate {
        vec![
            "--enable-runtime-extension".into(),
            format!("--runtime-extension-port={hook_port}"),
            format!("--runtime-extension-cert-dir={}", cert_dir.display()),
        ]
    } else {
        vec![]
    };
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut op = Operator::spawn(tb.kubeconfig_path(), &flag_refs);
    op.wait_ready().await;
    let client = tb.client();
    let env = Env {
        tb,
        op,
        client: client.clone(),
        profile,
        shapes: shapes(profile),
    };

    if gate {
        // The shipped ExtensionConfig verbatim, plus the caBundle CAPI injects from the certificate's Secret.
        let mut ext = ext.clone();
        ext["spec"]["clientConfig"]["caBundle"] =
            json!(base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes()));
        let api = extension_configs(client.clone());
        api.create(
            &PostParams::default(),
            &serde_json::from_value(ext).unwrap(),
        )
        .await
        .expect("create ExtensionConfig");
        let start = Instant::now();
        loop {
            let got = api
                .get("capi-vip-allocator")
                .await
                .expect("get ExtensionConfig");
            let handlers = got.data.pointer("/status/handlers").cloned();
            if let Some(h) = handlers.filter(|h| h.as_array().is_some_and(|a| !a.is_empty())) {
                assert_eq!(h[0]["name"], "vip-allocator.capi-vip-allocator");
                assert_eq!(h[0]["requestHook"]["hook"], "BeforeClusterCreate");
                assert_eq!(h[0]["failurePolicy"], "Fail");
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "discovery did not register the handler: {:?}\n{}",
                got.data.get("status"),
                env.op.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let ns = env.namespace("gate").await;
    env.class(&ns, "gate", &["clusterVip"]).await;
    env.pool(
        "gate-cp",
        &["10.70.0.1-10.70.3.254"],
        22,
        "gate",
        "control-plane",
    )
    .await;
    let names: Vec<String> = (0..count).map(|i| format!("c{i:03}")).collect();
    join_all(names.iter().map(|n| env.cluster(&ns, n, "gate"))).await;

    let start = Instant::now();
    let stats = loop {
        let stats = env.tb.topology_stats().expect("simulator on");
        if stats.rendered as usize >= count {
            break stats;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "only {} of {count} rendered (rejected {}, hook calls {}, blocked {}, errors {})\n{}",
            stats.rendered,
            stats.rejected,
            stats.hook_calls,
            stats.hook_blocked,
            stats.hook_errors,
            env.op.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Every rendered object carries its Cluster's VIP (the address the operator wrote).
    let clusters = env.clusters(&ns);
    for r in &stats.renders {
        let c = clusters.get(&r.name).await.expect("cluster");
        assert_eq!(
            r.host,
            common::host(&c),
            "TestInfraCluster {} carries another address than its Cluster's VIP",
            r.name
        );
        assert!(!r.host.is_empty());
        let reference = c.data.pointer("/spec/infrastructureRef").cloned();
        let kind = reference.as_ref().and_then(|v| v.get("kind"));
        assert_eq!(kind, Some(&json!("TestInfraCluster")), "{reference:?}");
    }
    let mut lat: Vec<f64> = stats.renders.iter().map(|r| r.after_ms).collect();
    lat.sort_by(f64::total_cmp);
    let _ = std::fs::remove_dir_all(&cert_dir);
    Run {
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
        stats,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_prevents_renders_without_a_vip_for_200_clusters() {
    let without = run(false).await;
    println!(
        "gate: without the gate: {} rejected renders for {CLUSTERS} Clusters; render latency p50 {:.0} ms, p99 {:.0} ms",
        without.stats.rejected, without.p50_ms, without.p99_ms
    );
    assert_eq!(without.stats.rendered as usize, CLUSTERS);
    assert_eq!(without.stats.hook_calls, 0, "no extension registered");

    let with = run(true).await;
    println!(
        "gate: with the gate: {} rejected renders; render latency p50 {:.0} ms, p99 {:.0} ms; {} hook calls, {} blocking answers",
        with.stats.rejected, with.p50_ms, with.p99_ms, with.stats.hook_calls, with.stats.hook_blocked
    );
    println!(
        "gate: added creation latency p50 {:.0} ms, p99 {:.0} ms",
        with.p50_ms - without.p50_ms,
        with.p99_ms - without.p99_ms
    );
    assert_eq!(
        with.stats.rejected, 0,
        "the gate let a render through before the VIP"
    );
    assert_eq!(with.stats.rendered as usize, CLUSTERS);
    assert_eq!(with.stats.hook_errors, 0);
    assert!(
        with.stats.hook_calls >= CLUSTERS as u64,
        "every Cluster went through the hook"
    );
}

/// CAPI v1.10-v1.12 send the Cluster as v1beta1 (`topology.class`); the gate reads it the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_holds_v1beta1_clusters_too() {
    // A slow IPAM provider makes sure the first answers block.
    let with = run_on(Profile::Capi110, true, 20, Duration::from_millis(50)).await;
    assert_eq!(with.stats.rejected, 0);
    assert_eq!(with.stats.rendered, 20);
    assert!(with.stats.hook_blocked > 0, "{:?}", with.stats);
}
