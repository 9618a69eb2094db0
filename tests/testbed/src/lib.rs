//! testbed: an in-process Kubernetes API server emulator with a simulated in-cluster IPAM
//! provider, for the operator's integration tests, benchmarks and demo.
//!
//! ```no_run
//! # async fn demo() -> Result<(), testbed::TestbedError> {
//! let tb = testbed::Testbed::start(testbed::TestbedOptions::profile(testbed::Profile::Capi112)).await?;
//! let client = tb.client();
//! # drop(client);
//! tb.shutdown().await;
//! # Ok(()) }
//! ```

mod apply;
mod capi;
pub mod clusterctl;
mod delete;
mod discovery;
mod errors;
mod events;
mod faults;
mod fields;
mod gc;
mod gojson;
mod handlers;
mod http;
pub mod ipam;
mod jsonpatch;
mod kubeconfig;
mod loader;
mod metadata;
mod objects;
mod patch;
mod resources;
mod schema;
mod selectors;
mod server;
mod state;
mod stats;
mod store;
mod table;
pub mod topology;
mod views;
mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use faults::{ErrorRate, FaultConfig, FaultHandle, SlowRule, VerbResource};
pub use stats::{RequestCount, Stats, WriteRecord};

use state::Shared;

/// Watch events retained for resuming watches; older resourceVersions get 410 Expired.
pub const DEFAULT_HISTORY: usize = 50_000;

/// A CAPI release whose CRDs the testbed serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Cluster/ClusterClass v1beta1, IPAM claims/addresses v1beta1, pools v1alpha2.
    Capi110,
    /// Cluster/ClusterClass v1beta2, IPAM claims/addresses v1beta2, pools v1alpha2.
    Capi112,
}

/// The repository root (two levels above this crate).
fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest.to_path_buf())
}

impl Profile {
    /// Absolute path of this profile's CRD directory (`<repo>/crds/capi-v1.10|12`).
    pub fn crd_dir(&self) -> PathBuf {
        repo_root().join("crds").join(match self {
            Profile::Capi110 => "capi-v1.10",
            Profile::Capi112 => "capi-v1.12",
        })
    }
}

#[derive(Debug, Clone)]
pub struct TestbedOptions {
    pub listen: SocketAddr,
    /// Directories whose YAML/JSON files (CRDs first) are applied at start.
    pub crd_dirs: Vec<PathBuf>,
    /// Run the simulated in-cluster IPAM provider.
    pub ipam: bool,
    /// Reaction delay of the IPAM provider before each claim.
    pub ipam_delay: Duration,
    pub faults: FaultConfig,
    pub seed: u64,
    /// Where to write the kubeconfig (a temporary file when None).
    pub kubeconfig_path: Option<PathBuf>,
    /// Run the simulated CAPI topology controller (BeforeClusterCreate hooks, TestInfraCluster renders); off when
    /// None. Its CRDs (crds/runtime-sdk, crds/test) are loaded with it.
    pub topology: Option<topology::TopologyOptions>,
    /// JSON-patch `test` compares leaves like kube-apiserver: the Go-encoded stored bytes against the bytes the
    /// client sent (`"a&b"` ≠ stored `"a\u0026b"`, `1.0` ≠ `1`). On by default; off compares JSON values.
    pub bytewise_json_patch_test: bool,
    /// CAPI's Cluster webhooks for topology variables (undefined variables, schema of each value, required
    /// variables, defaults) and the ClusterClass variables reconcile they depend on. On by default.
    pub capi_cluster_webhook: bool,
    /// kube-apiserver's Event validation (note/message ≤ 1 KiB, reason/action ≤ 128, events.k8s.io/v1 required
    /// fields). On by default.
    pub event_validation: bool,
    /// CAPI's IPAddress webhook (address/prefix/gateway must parse, the pool must be the existing claim's, the spec
    /// is immutable) and IPAddressClaim webhook (the spec is immutable). On by default.
    pub capi_ipam_webhook: bool,
}

impl Default for TestbedOptions {
    fn default() -> Self {
        TestbedOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            crd_dirs: Vec::new(),
            ipam: true,
            ipam_delay: Duration::ZERO,
            faults: FaultConfig::default(),
            seed: 1,
            kubeconfig_path: None,
            topology: None,
            bytewise_json_patch_test: true,
            capi_cluster_webhook: true,
            event_validation: true,
            capi_ipam_webhook: true,
        }
    }
}

/// CRD directories the topology simulator needs: `ExtensionConfig` and `TestInfraCluster`.
pub fn topology_crd_dirs() -> Vec<PathBuf> {
    let crds = repo_root().join("crds");
    vec![crds.join("runtime-sdk"), crds.join("test")]
}

/// `crds/test`: the test-only kinds (`TestInfraCluster`, the metal3-like `IPPool` of `ipam::metal3`).
pub fn test_crd_dir() -> PathBuf {
    repo_root().join("crds").join("test")
}

impl TestbedOptions {
    /// Defaults plus the CRD directory of a profile.
    pub fn profile(p: Profile) -> Self {
        TestbedOptions {
            crd_dirs: vec![p.crd_dir()],
            ..Default::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot load {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("cannot write kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot build a client: {0}")]
    Client(String),
}

/// A running testbed. Dropping it stops the server too; `shutdown` also waits for it.
pub struct Testbed {
    shared: Arc<Shared>,
    addr: SocketAddr,
    kubeconfig: PathBuf,
    temp_kubeconfig: bool,
    client: kube::Client,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    topology: Option<Arc<topology::Sim>>,
}

impl Testbed {
    pub async fn start(opts: TestbedOptions) -> Result<Testbed, TestbedError> {
        Self::start_with_history(opts, DEFAULT_HISTORY).await
    }

    /// Like `start`, with a chosen number of retained watch events (tests of 410 handling).
    #[doc(hidden)]
    pub async fn start_with_history(
        opts: TestbedOptions,
        history: usize,
    ) -> Result<Testbed, TestbedError> {
        let faults = Arc::new(faults::FaultState::new(opts.faults.clone(), opts.seed));
        let mut shared = Shared::new(history, faults, opts.seed);
        shared.fidelity = state::Fidelity {
            bytewise_json_patch_test: opts.bytewise_json_patch_test,
            capi_cluster_webhook: opts.capi_cluster_webhook,
            event_validation: opts.event_validation,
            capi_ipam_webhook: opts.capi_ipam_webhook,
        };
        let shared = Arc::new(shared);
        loader::create_default_namespaces(&shared);
        let mut dirs = opts.crd_dirs.clone();
        if opts.topology.is_some() {
            for d in topology_crd_dirs() {
                if !dirs.contains(&d) {
                    dirs.push(d);
                }
            }
        }
        for dir in &dirs {
            loader::load_dir(&shared, dir)?;
        }
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|source| TestbedError::Bind {
                addr: opts.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| TestbedError::Bind {
            addr: opts.listen,
            source,
        })?;
        let mut tasks = vec![
            tokio::spawn(server::serve(listener, shared.clone())),
            tokio::spawn(gc::run(shared.clone())),
        ];
        if opts.ipam {
            tasks.push(tokio::spawn(ipam::run(shared.clone(), opts.ipam_delay)));
            tasks.push(tokio::spawn(ipam::metal3::run(shared.clone())));
        }
        let topology = opts
            .topology
            .clone()
            .map(|o| topology::Sim::new(shared.clone(), o));
        if let Some(sim) = &topology {
            tasks.push(tokio::spawn(sim.clone().run()));
        }
        let url = format!("http://{addr}");
        let (kubeconfig, temp_kubeconfig) = match &opts.kubeconfig_path {
            Some(p) => (p.clone(), false),
            None => (
                std::env::temp_dir().join(format!(
                    "testbed-{}-{}.kubeconfig",
                    std::process::id(),
                    addr.port()
                )),
                true,
            ),
        };
        kubeconfig::write(&kubeconfig, &url).map_err(|source| TestbedError::Kubeconfig {
            path: kubeconfig.clone(),
            source,
        })?;
        let client = client_for(&url)?;
        Ok(Testbed {
            shared,
            addr,
            kubeconfig,
            temp_kubeconfig,
            client,
            tasks,
            topology,
        })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A kubeconfig file for kubectl or the operator.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// A kube client (user agent `testbed-client`).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Request counters and the write log (same data as `GET /testbed/stats`).
    pub fn stats(&self) -> Stats {
        self.shared.stats.snapshot(0)
    }

    /// Like `stats`, with only the writes whose `seq` is greater than `seq` (cheap polling).
    pub fn stats_since(&self, seq: u64) -> Stats {
        self.shared.stats.snapshot(seq)
    }

    /// Counters of the topology simulator (`None` when it is off).
    pub fn topology_stats(&self) -> Option<topology::TopologyStats> {
        self.topology.as_ref().map(|t| t.stats())
    }

    /// Changes faults at run time.
    pub fn faults(&self) -> FaultHandle {
        FaultHandle(self.shared.faults.clone())
    }

    pub async fn shutdown(mut self) {
        self.shared.shutdown.cancel();
        for t in std::mem::take(&mut self.tasks) {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
        if self.temp_kubeconfig {
            let _ = std::fs::remove_file(&self.kubeconfig);
        }
    }
}

/// A kube client for a testbed URL with user agent `testbed-client`.
pub fn client_for(url: &str) -> Result<kube::Client, TestbedError> {
    let uri: ::http::Uri = url
        .parse()
        .map_err(|e| TestbedError::Client(format!("{url}: {e}")))?;
    let mut config = kube::Config::new(uri);
    config.headers.push((
        ::http::header::USER_AGENT,
        ::http::HeaderValue::from_static("testbed-client"),
    ));
    kube::Client::try_from(config).map_err(|e| TestbedError::Client(e.to_string()))
}
