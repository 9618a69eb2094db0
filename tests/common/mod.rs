//! Shared harness of the operator's integration tests: a testbed API server, the real operator binary pointed
//! at it with a kubeconfig, and helpers to create CAPI/IPAM objects and wait for outcomes through watches.
#![allow(dead_code)]

use std::{
    path::PathBuf,
    process::Stdio,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use capi_vip_allocator::api::ApiShapes;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::events::v1::Event;
use kube::{
    api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams},
    runtime::{wait::await_condition, watcher, WatchStreamExt},
    Client,
};
use serde_json::{json, Value};
use testbed::{Profile, Testbed, TestbedOptions};
use tokio::{io::AsyncReadExt, io::AsyncWriteExt, net::TcpStream, process::Child};

pub mod gate;
pub mod invariants;
pub mod proxy;

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A free local port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// How to start the operator beyond its flags.
#[derive(Debug, Default, Clone)]
pub struct SpawnOptions {
    /// Environment variables (the `CAPI_VIP_ALLOCATOR_*` bounds and fault switches).
    pub env: Vec<(String, String)>,
    /// `--health-probe-bind-address` (default `127.0.0.1:<free port>`); `:PORT` forms are probed on 127.0.0.1.
    pub probe_bind: Option<String>,
    /// `--metrics-bind-address` (default `127.0.0.1:<free port>`).
    pub metrics_bind: Option<String>,
}

impl SpawnOptions {
    /// With environment variable `key=value`.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// The operator process; killed on drop. Its stderr goes to a log file printed when a test fails.
pub struct Operator {
    child: std::sync::Mutex<Child>,
    /// Metrics port.
    pub metrics_port: u16,
    /// Probe port.
    pub probe_port: u16,
    log: PathBuf,
}

impl Operator {
    /// Starts the real binary against `kubeconfig` with `extra` flags, logging at debug level.
    pub fn spawn(kubeconfig: &std::path::Path, extra: &[&str]) -> Operator {
        let mut flags = vec!["--log-level=capi_vip_allocator=debug,info"];
        flags.extend_from_slice(extra);
        Self::spawn_with(&Self::binary(), kubeconfig, &flags)
    }

    /// The operator binary cargo built for this test or bench.
    pub fn binary() -> PathBuf {
        PathBuf::from(env!("CARGO_BIN_EXE_capi-vip-allocator"))
    }

    /// Starts `bin` against `kubeconfig` with exactly `flags` (plus the kubeconfig and the ports).
    pub fn spawn_with(
        bin: &std::path::Path,
        kubeconfig: &std::path::Path,
        flags: &[&str],
    ) -> Operator {
        Self::spawn_opts(bin, kubeconfig, flags, SpawnOptions::default())
    }

    /// The real binary with debug logs, `flags` and `opts`.
    pub fn spawn_debug(
        kubeconfig: &std::path::Path,
        extra: &[&str],
        opts: SpawnOptions,
    ) -> Operator {
        let mut flags = vec!["--log-level=capi_vip_allocator=debug,info"];
        flags.extend_from_slice(extra);
        Self::spawn_opts(&Self::binary(), kubeconfig, &flags, opts)
    }

    /// [`Self::spawn_with`] with environment variables and bind addresses from `opts`.
    pub fn spawn_opts(
        bin: &std::path::Path,
        kubeconfig: &std::path::Path,
        flags: &[&str],
        opts: SpawnOptions,
    ) -> Operator {
        let port_of = |bind: &Option<String>| {
            bind.as_deref()
                .and_then(|b| b.rsplit(':').next())
                .and_then(|p| p.parse::<u16>().ok())
        };
        let metrics_port = port_of(&opts.metrics_bind).unwrap_or_else(free_port);
        let probe_port = port_of(&opts.probe_bind).unwrap_or_else(free_port);
        let metrics_bind = opts
            .metrics_bind
            .clone()
            .unwrap_or_else(|| format!("127.0.0.1:{metrics_port}"));
        let probe_bind = opts
            .probe_bind
            .clone()
            .unwrap_or_else(|| format!("127.0.0.1:{probe_port}"));
        let log = std::env::temp_dir().join(format!(
            "capi-vip-allocator-test-{}-{}.log",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let file = std::fs::File::create(&log).expect("log file");
        let child = tokio::process::Command::new(bin)
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--metrics-bind-address={metrics_bind}"))
            .arg(format!("--health-probe-bind-address={probe_bind}"))
            .args(flags)
            .env_remove("RUST_LOG")
            .envs(opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn operator");
        Operator {
            child: std::sync::Mutex::new(child),
            metrics_port,
            probe_port,
            log,
        }
    }

    /// The operator's log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `path` on the probe port: (status, body).
    pub async fn probe(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.probe_port, path).await
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        http_get(self.metrics_port, "/metrics")
            .await
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    /// The exit status, if the process has ended.
    pub fn exit_status(&self) -> Option<std::process::ExitStatus> {
        self.child
            .lock()
            .ok()
            .and_then(|mut c| c.try_wait().ok().flatten())
    }

    /// What a timed-out test needs to diagnose a stall: exit status, last log lines, reconcile counters.
    pub async fn diagnostics(&self) -> String {
        let status = match self.exit_status() {
            Some(s) => format!("operator exited: {s}"),
            None => "operator still running".to_owned(),
        };
        let logs = self.logs();
        let lines: Vec<&str> = logs.lines().collect();
        let tail = lines[lines.len().saturating_sub(DIAGNOSTIC_LOG_LINES)..].join("\n");
        let metrics = self.metrics().await;
        let counters: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("capi_vip_allocator_reconcile_total"))
            .collect();
        let probes = format!(
            "healthz: {:?}; readyz: {:?}",
            self.probe("/healthz").await,
            self.probe("/readyz").await
        );
        format!(
            "---- diagnostics ----\n{status}\n{probes}\nreconcile counters:\n{}\nlast {} log lines:\n{tail}\n---- end of diagnostics ----",
            if counters.is_empty() { "(none scraped)".to_owned() } else { counters.join("\n") },
            DIAGNOSTIC_LOG_LINES,
        )
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.exit_status() {
                panic!(
                    "operator exited with {status}:\n{}",
                    self.diagnostics().await
                );
            }
            if let Some((200, _)) = self.probe("/readyz").await {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("operator not ready in time:\n{}", self.diagnostics().await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits up to `within` for the process to exit; its status.
    pub async fn wait_exit(&self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(s) = self.exit_status() {
                return Some(s);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit status; returns it with the operator's log.
    pub async fn terminate(self) -> (std::process::ExitStatus, String) {
        if let Some(pid) = self.child.lock().ok().and_then(|c| c.id()) {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        let status = match self.wait_exit(WAIT).await {
            Some(s) => s,
            None => panic!(
                "operator did not exit on SIGTERM within {WAIT:?}:\n{}",
                self.diagnostics().await
            ),
        };
        (status, self.logs())
    }
}

/// Log lines a diagnostic shows.
const DIAGNOSTIC_LOG_LINES: usize = 40;

impl Drop for Operator {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("OPERATOR_TEST_LOGS").is_some() {
            eprintln!(
                "---- operator log ----\n{}\n---- end of operator log ----",
                self.logs()
            );
        }
        if let Ok(mut c) = self.child.lock() {
            let _ = c.start_kill();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Minimal HTTP/1.0 GET on localhost.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_at(std::net::SocketAddr::from(([127, 0, 0, 1], port)), path).await
}

/// Minimal HTTP/1.0 GET on `addr`.
pub async fn http_get_at(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// A testbed with the operator running against it.
pub struct Env {
    /// The API server emulator.
    pub tb: Testbed,
    /// The operator.
    pub op: Operator,
    /// A client (user agent `testbed-client`).
    pub client: Client,
    /// Profile.
    pub profile: Profile,
    /// The kinds as served in this profile.
    pub shapes: ApiShapes,
}

/// The API shapes of a profile.
pub fn shapes(profile: Profile) -> ApiShapes {
    match profile {
        Profile::Capi110 => ApiShapes::fixed("v1beta1", "v1beta1"),
        Profile::Capi112 => ApiShapes::fixed("v1beta2", "v1beta2"),
    }
}

impl Env {
    /// Starts a testbed of `profile` and the operator, and waits until it is ready.
    pub async fn start(profile: Profile) -> Env {
        Self::start_with(profile, &[]).await
    }

    /// Same, with extra operator flags.
    pub async fn start_with(profile: Profile, extra: &[&str]) -> Env {
        Self::start_opts(profile, TestbedOptions::profile(profile), extra).await
    }

    /// Same, on a testbed started with `opts` (which must load `profile`'s CRDs).
    pub async fn start_opts(profile: Profile, opts: TestbedOptions, extra: &[&str]) -> Env {
        let tb = Testbed::start(opts).await.expect("testbed starts");
        let client = tb.client();
        let mut op = Operator::spawn(tb.kubeconfig_path(), extra);
        op.wait_ready().await;
        Env {
            tb,
            op,
            client,
            profile,
            shapes: shapes(profile),
        }
    }

    /// A unique namespace (created).
    pub async fn namespace(&self, prefix: &str) -> String {
        let name = format!("{prefix}-{}", COUNTER.fetch_add(1, Ordering::SeqCst));
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        let ns = serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
        )
        .unwrap();
        api.create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        name
    }

    fn v1beta2(&self) -> bool {
        matches!(self.profile, Profile::Capi112)
    }

    /// Api for Clusters in `ns`.
    pub fn clusters(&self, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), ns, &self.shapes.cluster)
    }

    /// Api for claims in `ns`.
    pub fn claims(&self, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), ns, &self.shapes.claim)
    }

    /// Api for addresses in `ns`.
    pub fn addresses(&self, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), ns, &self.shapes.address)
    }

    /// Api for global pools.
    pub fn pools(&self) -> Api<DynamicObject> {
        Api::all_with(self.client.clone(), &self.shapes.global_pool)
    }

    /// Creates a ClusterClass declaring `vars` (string variables, not required).
    pub async fn class(&self, ns: &str, name: &str, vars: &[&str]) {
        let variables: Vec<Value> = vars
            .iter()
            .map(|v| json!({"name": v, "required": false, "schema": {"openAPIV3Schema": {"type": "string"}}}))
            .collect();
        let mut spec = json!({});
        if !variables.is_empty() {
            spec["variables"] = json!(variables);
        }
        let body = json!({
            "apiVersion": self.shapes.cluster_class.api_version, "kind": "ClusterClass",
            "metadata": {"name": name, "namespace": ns}, "spec": spec
        });
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), ns, &self.shapes.cluster_class);
        api.create(
            &PostParams::default(),
            &serde_json::from_value(body).unwrap(),
        )
        .await
        .expect("create ClusterClass");
    }

    /// Creates a GlobalInClusterIPPool with `addresses`, listing `classes` and `roles`. A `classes` value that is
    /// not a legal label value (a comma list) goes to the annotation, with the label set to `"true"`.
    pub async fn pool(
        &self,
        name: &str,
        addresses: &[&str],
        prefix: u8,
        classes: &str,
        roles: &str,
    ) {
        self.pool_with(None, name, addresses, prefix, classes, roles, json!({}))
            .await
    }

    /// Creates a pool: an InClusterIPPool in `ns`, or a GlobalInClusterIPPool when `ns` is `None`, with extra
    /// `annotations` (priority, fall-through).
    #[allow(clippy::too_many_arguments)]
    pub async fn pool_with(
        &self,
        ns: Option<&str>,
        name: &str,
        addresses: &[&str],
        prefix: u8,
        classes: &str,
        roles: &str,
        annotations: Value,
    ) {
        let legal = |v: &str| {
            v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        let mut annotations = annotations;
        let class_label = if legal(classes) {
            classes
        } else {
            annotations["vip.capi.gorizond.io/cluster-class"] = json!(classes);
            "true"
        };
        let (ar, kind) = match ns {
            Some(_) => (&self.shapes.pool, "InClusterIPPool"),
            None => (&self.shapes.global_pool, "GlobalInClusterIPPool"),
        };
        let mut metadata = json!({"name": name, "annotations": annotations, "labels": {
            "vip.capi.gorizond.io/cluster-class": class_label, "vip.capi.gorizond.io/role": roles}});
        if let Some(ns) = ns {
            metadata["namespace"] = json!(ns);
        }
        let body = json!({
            "apiVersion": ar.api_version, "kind": kind, "metadata": metadata,
            "spec": {"addresses": addresses, "prefix": prefix}
        });
        let api: Api<DynamicObject> = match ns {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, ar),
            None => Api::all_with(self.client.clone(), ar),
        };
        api.create(
            &PostParams::default(),
            &serde_json::from_value(body).unwrap(),
        )
        .await
        .expect("create pool");
    }

    /// The topology part of a Cluster for this profile.
    pub fn topology(&self, class: &str, class_ns: Option<&str>, variables: Option<Value>) -> Value {
        let mut t = if self.v1beta2() {
            let mut r = json!({"name": class});
            if let Some(ns) = class_ns {
                r["namespace"] = json!(ns);
            }
            json!({"classRef": r, "version": "v1.33.0"})
        } else {
            let mut t = json!({"class": class, "version": "v1.33.0"});
            if let Some(ns) = class_ns {
                t["classNamespace"] = json!(ns);
            }
            t
        };
        if let Some(v) = variables {
            t["variables"] = v;
        }
        t
    }

    /// Creates a Cluster with `spec` (the profile's apiVersion and kind are added).
    pub async fn cluster_with(
        &self,
        ns: &str,
        name: &str,
        metadata: Value,
        spec: Value,
    ) -> DynamicObject {
        let mut meta = json!({"name": name, "namespace": ns});
        if let Some(m) = metadata.as_object() {
            for (k, v) in m {
                meta[k] = v.clone();
            }
        }
        let body = json!({"apiVersion": self.shapes.cluster.api_version, "kind": "Cluster", "metadata": meta, "spec": spec});
        self.clusters(ns)
            .create(
                &PostParams::default(),
                &serde_json::from_value(body).unwrap(),
            )
            .await
            .expect("create Cluster")
    }

    /// Creates a plain topology Cluster of `class`.
    pub async fn cluster(&self, ns: &str, name: &str, class: &str) -> DynamicObject {
        self.cluster_with(
            ns,
            name,
            json!({}),
            json!({"topology": self.topology(class, None, None)}),
        )
        .await
    }

    /// Waits until the Cluster satisfies `pred`; returns it.
    pub async fn wait_cluster(
        &self,
        ns: &str,
        name: &str,
        what: &str,
        pred: impl Fn(&DynamicObject) -> bool,
    ) -> DynamicObject {
        wait_for(
            &self.clusters(ns),
            name,
            what,
            |o| o.is_some_and(&pred),
            &self.op,
        )
        .await
        .expect("cluster exists")
    }

    /// Waits until the Cluster has a control-plane endpoint host; returns the host.
    pub async fn wait_cp_vip(&self, ns: &str, name: &str) -> String {
        let c = self
            .wait_cluster(ns, name, "controlPlaneEndpoint.host", |c| {
                !host(c).is_empty()
            })
            .await;
        host(&c)
    }

    /// Waits until object `name` of `api` satisfies `pred` (present); returns it.
    pub async fn wait_object(
        &self,
        api: &Api<DynamicObject>,
        name: &str,
        what: &str,
        pred: impl Fn(&DynamicObject) -> bool,
    ) -> DynamicObject {
        wait_for(api, name, what, |o| o.is_some_and(&pred), &self.op)
            .await
            .expect("object exists")
    }

    /// Creates a Cluster of class `gold` (in its own namespace) with the ingress VIP turned off, plus the extra
    /// `annotations`.
    pub async fn gold_cp_only_cluster(&self, ns: &str, name: &str, annotations: Value) {
        let mut a = json!({"vip.capi.gorizond.io/ingress-enabled": "false"});
        if let (Some(map), Some(extra)) = (a.as_object_mut(), annotations.as_object()) {
            map.extend(extra.clone());
        }
        self.cluster_with(
            ns,
            name,
            json!({ "annotations": a }),
            json!({"topology": self.topology("gold", None, None)}),
        )
        .await;
    }

    /// Waits until the IPAddress named `name` (our claim's) carries the operator's protection finalizer and is not
    /// being deleted: the last write of an allocation.
    pub async fn wait_protected(&self, ns: &str, name: &str) -> DynamicObject {
        self.wait_object(&self.addresses(ns), name, "our finalizer", |a| {
            a.metadata.deletion_timestamp.is_none()
                && a.metadata
                    .finalizers
                    .iter()
                    .flatten()
                    .any(|f| f == "vip.capi.gorizond.io/address-protection")
        })
        .await
    }

    /// Waits until the object is gone.
    pub async fn wait_gone(&self, api: &Api<DynamicObject>, name: &str, what: &str) {
        wait_for(api, name, what, |o| o.is_none(), &self.op).await;
    }

    /// Waits for an Event with `reason` about Cluster `name`; returns it.
    pub async fn wait_event(&self, ns: &str, cluster: &str, reason: &str) -> Event {
        let api: Api<Event> = Api::namespaced(self.client.clone(), ns);
        let mut stream = watcher(api, watcher::Config::default())
            .applied_objects()
            .try_filter(|e| {
                futures::future::ready(
                    e.reason.as_deref() == Some(reason)
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(cluster),
                )
            })
            .boxed();
        match tokio::time::timeout(WAIT, stream.try_next()).await {
            Ok(Ok(Some(e))) => e,
            other => panic!(
                "no {reason} Event for {ns}/{cluster}: {other:?}\n{}",
                self.op.logs()
            ),
        }
    }

    /// Events about Cluster `name` with `reason`, as listed now.
    pub async fn events(&self, ns: &str, cluster: &str, reason: &str) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), ns);
        api.list(&Default::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(cluster)
            })
            .collect()
    }

    /// Merge-patches a Cluster as a user would.
    pub async fn patch_cluster(&self, ns: &str, name: &str, patch: Value) {
        self.clusters(ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch Cluster");
    }

    /// Deletes a Cluster (background propagation).
    pub async fn delete_cluster(&self, ns: &str, name: &str) {
        self.clusters(ns)
            .delete(name, &DeleteParams::background())
            .await
            .expect("delete Cluster");
    }

    /// Waits until the metrics text satisfies `pred`.
    pub async fn wait_metrics(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let text = self.op.metrics().await;
            if pred(&text) {
                return text;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "metrics never showed {what}:\n{text}\n{}",
                    self.op.diagnostics().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn wait_for(
    api: &Api<DynamicObject>,
    name: &str,
    what: &str,
    cond: impl Fn(Option<&DynamicObject>) -> bool,
    op: &Operator,
) -> Option<DynamicObject> {
    match tokio::time::timeout(
        WAIT,
        await_condition(api.clone(), name, move |o: Option<&DynamicObject>| cond(o)),
    )
    .await
    {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => panic!("watch of {name} failed: {e}"),
        Err(_) => {
            let current = api.get_opt(name).await.ok().flatten();
            panic!(
                "timed out waiting for {what} on {name}; now: {current:#?}\n{}",
                op.diagnostics().await
            )
        }
    }
}

/// `spec.controlPlaneEndpoint.host` ("" when unset).
pub fn host(c: &DynamicObject) -> String {
    c.data
        .pointer("/spec/controlPlaneEndpoint/host")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// `spec.controlPlaneEndpoint.port` (0 when unset).
pub fn port(c: &DynamicObject) -> i64 {
    c.data
        .pointer("/spec/controlPlaneEndpoint/port")
        .and_then(Value::as_i64)
        .unwrap_or_default()
}

/// The value of topology variable `name`.
pub fn variable(c: &DynamicObject, name: &str) -> Option<Value> {
    c.data
        .pointer("/spec/topology/variables")?
        .as_array()?
        .iter()
        .find(|v| v["name"] == name)
        .map(|v| v["value"].clone())
}

/// An annotation.
pub fn annotation(c: &DynamicObject, key: &str) -> Option<String> {
    c.metadata.annotations.as_ref()?.get(key).cloned()
}

/// A label.
pub fn label(c: &DynamicObject, key: &str) -> Option<String> {
    c.metadata.labels.as_ref()?.get(key).cloned()
}

/// The value of a metric series line starting with `prefix` (name plus labels), if present.
pub fn metric_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
