//! The BeforeClusterCreate gate scenario, shared by `tests/gate.rs` and `make bench`: a testbed with the simulated
//! topology controller, the operator with or without its hook server, the shipped ExtensionConfig, and `count`
//! Clusters created at once on a class with `clusterVip`. Returns the simulator's counts, the render latency and
//! every render that does not carry its Cluster's VIP.

use std::time::{Duration, Instant};

use base64::Engine;
use futures::future::join_all;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::json;
use testbed::{
    topology::{TopologyOptions, TopologyStats},
    Profile, Testbed, TestbedOptions,
};

use super::{free_port, host, shapes, Env, Operator};

/// One run of the scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// CAPI profile of the testbed.
    pub profile: Profile,
    /// Operator started with `--enable-runtime-extension` and the ExtensionConfig registered.
    pub gate: bool,
    /// Clusters created at once.
    pub count: usize,
    /// The IPAM simulator's reaction delay.
    pub ipam_delay: Duration,
    /// The operator's `--log-level`.
    pub log_level: &'static str,
    /// How long every Cluster may take to be rendered.
    pub deadline: Duration,
    /// The operator binary.
    pub operator_bin: std::path::PathBuf,
}

impl Scenario {
    /// `count` Clusters on the CAPI v1.12 profile with a zero-delay IPAM simulator, debug logs.
    pub fn new(gate: bool, count: usize) -> Scenario {
        Scenario {
            profile: Profile::Capi112,
            gate,
            count,
            ipam_delay: Duration::ZERO,
            log_level: "capi_vip_allocator=debug,info",
            deadline: Duration::from_secs(40),
            operator_bin: Operator::binary(),
        }
    }
}

/// What a run measured.
#[derive(Debug)]
pub struct Outcome {
    /// The simulator's counters and renders.
    pub stats: TopologyStats,
    /// Render latency (simulator first saw the Cluster → object rendered), milliseconds, sorted.
    pub latencies_ms: Vec<f64>,
    /// Renders that do not carry their Cluster's VIP, or whose Cluster does not reference them.
    pub problems: Vec<String>,
    /// The operator's `/metrics` at the end.
    pub metrics: String,
}

/// The shipped component's file, parsed.
pub fn component(file: &str) -> serde_json::Value {
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
    std::fs::create_dir_all(&dir).expect("cert dir");
    let names: Vec<String> = component("certificate.yaml")["spec"]["dnsNames"]
        .as_array()
        .expect("dnsNames")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let cert = rcgen::generate_simple_self_signed(names).expect("certificate");
    std::fs::write(dir.join("tls.crt"), cert.cert.pem()).expect("write tls.crt");
    std::fs::write(dir.join("tls.key"), cert.key_pair.serialize_pem()).expect("write tls.key");
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

/// Nearest-rank percentile of sorted values (NaN when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the scenario; panics when the set-up fails or not every Cluster is rendered by the deadline.
pub async fn run(s: &Scenario) -> Outcome {
    // The shipped ExtensionConfig names a Service; the testbed has no DNS, so map it to the operator's port.
    let ext = component("extension_config.yaml");
    let svc = &ext["spec"]["clientConfig"]["service"];
    let hook_port = free_port();
    let services = [(
        format!(
            "{}.{}.svc:{}",
            svc["name"].as_str().expect("service name"),
            svc["namespace"].as_str().expect("service namespace"),
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
        ipam_delay: s.ipam_delay,
        ..TestbedOptions::profile(s.profile)
    })
    .await
    .expect("testbed starts");
    let (cert_dir, ca_pem) = serving_cert();
    let mut flags: Vec<String> = vec![format!("--log-level={}", s.log_level)];
    if s.gate {
        flags.extend([
            "--enable-runtime-extension".into(),
            format!("--runtime-extension-port={hook_port}"),
            format!("--runtime-extension-cert-dir={}", cert_dir.display()),
        ]);
    }
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut op = Operator::spawn_with(&s.operator_bin, tb.kubeconfig_path(), &flag_refs);
    op.wait_ready().await;
    let client = tb.client();
    let env = Env {
        tb,
        op,
        client: client.clone(),
        profile: s.profile,
        shapes: shapes(s.profile),
    };

    if s.gate {
        register_extension(&env, ext, &ca_pem).await;
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
    let names: Vec<String> = (0..s.count).map(|i| format!("c{i:04}")).collect();
    join_all(names.iter().map(|n| env.cluster(&ns, n, "gate"))).await;

    let start = Instant::now();
    let stats = loop {
        let stats = env.tb.topology_stats().expect("simulator on");
        if stats.rendered as usize >= s.count {
            break stats;
        }
        assert!(
            start.elapsed() < s.deadline,
            "only {} of {} rendered (rejected {}, hook calls {}, blocked {}, errors {})\n{}",
            stats.rendered,
            s.count,
            stats.rejected,
            stats.hook_calls,
            stats.hook_blocked,
            stats.hook_errors,
            env.op.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Every rendered object carries its Cluster's VIP (the address the operator wrote), and the Cluster
    // references it.
    let clusters = env.clusters(&ns);
    let mut problems = Vec::new();
    for r in &stats.renders {
        let c = match clusters.get(&r.name).await {
            Ok(c) => c,
            Err(e) => {
                problems.push(format!("{}: {e}", r.name));
                continue;
            }
        };
        let vip = host(&c);
        if r.host.is_empty() || r.host != vip {
            problems.push(format!(
                "TestInfraCluster {} carries {:?}, its Cluster's VIP is {vip:?}",
                r.name, r.host
            ));
        }
        let kind = c.data.pointer("/spec/infrastructureRef/kind");
        if kind != Some(&json!("TestInfraCluster")) {
            problems.push(format!(
                "Cluster {} references {:?}",
                r.name,
                c.data.pointer("/spec/infrastructureRef")
            ));
        }
    }
    let mut latencies_ms: Vec<f64> = stats.renders.iter().map(|r| r.after_ms).collect();
    latencies_ms.sort_by(f64::total_cmp);
    let _ = std::fs::remove_dir_all(&cert_dir);
    Outcome {
        stats,
        latencies_ms,
        problems,
        metrics: env.op.metrics().await,
    }
}

/// Creates the shipped ExtensionConfig verbatim, plus the caBundle CAPI injects from the certificate's Secret,
/// and waits until discovery registered the handler.
async fn register_extension(env: &Env, mut ext: serde_json::Value, ca_pem: &str) {
    ext["spec"]["clientConfig"]["caBundle"] =
        json!(base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes()));
    let api = extension_configs(env.client.clone());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(ext).expect("ExtensionConfig"),
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
            return;
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
