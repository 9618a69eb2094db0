//! Standalone testbed: `testbed --listen 127.0.0.1:6443 --kubeconfig /tmp/tb.kubeconfig [--crds DIR]…`

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use testbed::{ErrorRate, FaultConfig, SlowRule, Testbed, TestbedOptions, VerbResource};

#[derive(Parser, Debug)]
#[command(
    name = "testbed",
    about = "A Kubernetes API emulator with a simulated in-cluster IPAM provider"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Where to write a kubeconfig for kubectl and the operator.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Directory of CRDs (and other objects) to apply at start; repeatable.
    #[arg(long = "crds")]
    crds: Vec<PathBuf>,
    /// Reaction delay of the simulated IPAM provider, per claim.
    #[arg(long, default_value_t = 0)]
    ipam_delay_ms: u64,
    /// Do not run the simulated IPAM provider.
    #[arg(long)]
    no_ipam: bool,
    /// Seed for generated names, uids and fault draws.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Fail a share of requests: VERB=RATE:CODE (e.g. patch=0.1:500, *=0.05:429); repeatable.
    #[arg(long = "fault-error-rate", value_parser = ErrorRate::parse)]
    fault_error_rate: Vec<ErrorRate>,
    /// Latency added to every API request.
    #[arg(long, default_value_t = 0)]
    fault_latency_ms: u64,
    /// Close watch streams after this many events.
    #[arg(long)]
    fault_watch_cut_events: Option<u64>,
    /// Close watch streams after this many seconds.
    #[arg(long)]
    fault_watch_cut_seconds: Option<u64>,
    /// Answer the next watch with an ERROR event (410 Expired).
    #[arg(long)]
    fault_next_watch_gone: bool,
    /// Hold requests with this verb (and resource plural) forever, unanswered and not applied: VERB[:RESOURCE]
    /// (e.g. create:events, patch, *:clusters); repeatable.
    #[arg(long = "fault-black-hole", value_parser = VerbResource::parse)]
    fault_black_hole: Vec<VerbResource>,
    /// Delay requests with this verb (and resource plural): VERB[:RESOURCE]=MS (e.g. patch:clusters=500);
    /// repeatable.
    #[arg(long = "fault-slow", value_parser = SlowRule::parse)]
    fault_slow: Vec<SlowRule>,
    /// JSON-patch `test` compares JSON values instead of kube-apiserver's raw bytes (Go-encoded stored leaves vs
    /// the client's bytes).
    #[arg(long)]
    no_bytewise_json_patch_test: bool,
    /// Do not run CAPI's Cluster webhooks for topology variables, nor the ClusterClass variables reconcile.
    #[arg(long)]
    no_capi_cluster_webhook: bool,
    /// Do not validate Events (note/message length, events.k8s.io/v1 required fields).
    #[arg(long)]
    no_event_validation: bool,
    /// Do not run CAPI's IPAddress and IPAddressClaim webhooks (IPAddress values parse, its pool is the claim's,
    /// both specs immutable).
    #[arg(long)]
    no_capi_ipam_webhook: bool,
    /// Run the simulated CAPI topology controller (calls BeforeClusterCreate hooks of ExtensionConfigs, renders
    /// TestInfraClusters from the clusterVip variable); loads crds/runtime-sdk and crds/test.
    #[arg(long)]
    topology_sim: bool,
    /// Delay between the hooks unblocking and the render, in the topology simulator.
    #[arg(long, default_value_t = 0)]
    topology_render_delay_ms: u64,
    /// Address of an ExtensionConfig `clientConfig.service` for the topology simulator (there is no cluster DNS):
    /// `<name>.<namespace>.svc:<port>=<ip:port>`; repeatable.
    #[arg(long = "topology-service", value_parser = parse_service)]
    topology_services: Vec<(String, SocketAddr)>,
}

fn parse_service(s: &str) -> Result<(String, SocketAddr), String> {
    let (svc, addr) = s
        .split_once('=')
        .ok_or("expected <name>.<namespace>.svc:<port>=<ip:port>")?;
    if !svc.contains(".svc:") {
        return Err(format!("{svc:?} is not <name>.<namespace>.svc:<port>"));
    }
    let addr = addr
        .parse::<SocketAddr>()
        .map_err(|e| format!("{addr:?}: {e}"))?;
    Ok((svc.to_owned(), addr))
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let opts = TestbedOptions {
        listen: args.listen,
        crd_dirs: args.crds,
        ipam: !args.no_ipam,
        ipam_delay: Duration::from_millis(args.ipam_delay_ms),
        faults: FaultConfig {
            error_rates: args.fault_error_rate,
            latency_ms: args.fault_latency_ms,
            watch_cut_events: args.fault_watch_cut_events,
            watch_cut_seconds: args.fault_watch_cut_seconds,
            next_watch_gone: args.fault_next_watch_gone,
            black_holes: args.fault_black_hole,
            slow: args.fault_slow,
        },
        bytewise_json_patch_test: !args.no_bytewise_json_patch_test,
        capi_cluster_webhook: !args.no_capi_cluster_webhook,
        event_validation: !args.no_event_validation,
        capi_ipam_webhook: !args.no_capi_ipam_webhook,
        seed: args.seed,
        kubeconfig_path: args.kubeconfig,
        topology: args
            .topology_sim
            .then(|| testbed::topology::TopologyOptions {
                render_delay: Duration::from_millis(args.topology_render_delay_ms),
                services: args.topology_services.iter().cloned().collect(),
                ..Default::default()
            }),
    };
    let tb = match Testbed::start(opts).await {
        Ok(tb) => tb,
        Err(e) => {
            eprintln!("testbed: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "testbed ready at {} kubeconfig {}",
        tb.url(),
        tb.kubeconfig_path().display()
    );
    let _ = std::io::stdout().flush();
    wait_for_signal().await;
    tb.shutdown().await;
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
