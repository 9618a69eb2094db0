//! Simulated CAPI topology controller (off by default): for each topology Cluster without refs, call the
//! `BeforeClusterCreate` handlers registered through `ExtensionConfig`s, honour `retryAfterSeconds`, then render a
//! `TestInfraCluster` whose `spec.controlPlaneEndpoint.host` is the Cluster's `clusterVip` variable — rejected, like
//! strict providers do, when that is empty — and finally set `spec.infrastructureRef`.
//!
//! Like CAPI (docs/capi-contracts.md §5.4): hooks run before anything is rendered, from the copy of the Cluster read
//! at the start of the reconcile, which is also what gets rendered; v1.12+ caches a blocking answer until its
//! `retryAfterSeconds` expire (`hook_cache`), v1.11 calls again on every change. Extension discovery runs when an
//! ExtensionConfig's spec changes and is written to its `status.handlers` as `<handler>.<config>`.

mod client;
mod rules;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use crate::objects::WriteCtx;
use crate::patch::PatchType;
use crate::state::{is_deleting, meta_str, now_time, Shared};
use crate::store::{Event, EventType, GroupResource};

use client::{Endpoint, HOOKS_API_VERSION};
use rules::{parse_discovery, request_copy, selector_matches};

/// Field manager and user agent of the simulator's writes.
pub const AGENT: &str = "testbed-topology";
/// Group of the rendered infrastructure cluster kind (crds/test).
pub const INFRA_GROUP: &str = "infrastructure.test.vip.capi.gorizond.io";
/// Kind of the rendered infrastructure cluster.
pub const INFRA_KIND: &str = "TestInfraCluster";
/// The hook called before rendering.
pub const HOOK: &str = "BeforeClusterCreate";
/// The rejection strict providers give for an empty endpoint host.
pub const REJECTION: &str = "provided endpoint address is not a valid IP or FQDN";
const VIP_VARIABLE: &str = "clusterVip";
const DEFAULT_HANDLER_TIMEOUT: u64 = 10;
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the simulator.
#[derive(Debug, Clone)]
pub struct TopologyOptions {
    /// Time between the hooks unblocking and the render (models a slow reconcile); default 0.
    pub render_delay: Duration,
    /// CAPI v1.12+ behaviour: a blocking answer is reused until its retryAfter expires (false: v1.11, call again on
    /// every change of the Cluster).
    pub hook_cache: bool,
    /// Clusters reconciled at once (CAPI's `--clustertopology-concurrency`, default 10).
    pub concurrency: usize,
    /// Where `clientConfig.service` extensions live: `"<name>.<namespace>.svc:<port>"` → address (no cluster DNS
    /// here). The TLS server name stays `<name>.<namespace>.svc`, as with CAPI.
    pub services: BTreeMap<String, std::net::SocketAddr>,
}

impl Default for TopologyOptions {
    fn default() -> Self {
        TopologyOptions {
            render_delay: Duration::ZERO,
            hook_cache: true,
            concurrency: 10,
            services: BTreeMap::new(),
        }
    }
}

/// One successful render.
#[derive(Debug, Clone, Serialize)]
pub struct Render {
    /// Cluster namespace.
    pub namespace: String,
    /// Cluster name.
    pub name: String,
    /// `spec.controlPlaneEndpoint.host` of the rendered object.
    pub host: String,
    /// From the simulator first seeing the Cluster to the render, in milliseconds.
    pub after_ms: f64,
}

/// Counters of the simulator.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TopologyStats {
    /// Infrastructure clusters created.
    pub rendered: u64,
    /// Renders refused for an empty endpoint host (each attempt counts).
    pub rejected: u64,
    /// BeforeClusterCreate calls made.
    pub hook_calls: u64,
    /// Answers that blocked (Success with retryAfterSeconds > 0).
    pub hook_blocked: u64,
    /// Failure answers and transport errors under failurePolicy Fail.
    pub hook_errors: u64,
    /// Successful discoveries.
    pub discoveries: u64,
    /// Every successful render.
    pub renders: Vec<Render>,
}

#[derive(Debug, Clone)]
struct Handler {
    name: String,
    timeout: Duration,
    ignore_failures: bool,
}

#[derive(Debug, Clone)]
struct Registered {
    endpoint: Endpoint,
    handlers: Vec<Handler>,
    settings: Value,
    namespace_selector: Value,
}

type Key = (String, String);

#[derive(Default)]
struct State {
    queue: VecDeque<Key>,
    queued: HashSet<Key>,
    busy: HashSet<Key>,
    dirty: HashSet<Key>,
    blocked_until: HashMap<Key, Instant>,
    failures: HashMap<Key, u32>,
    first_seen: HashMap<Key, Instant>,
    registry: BTreeMap<String, Registered>,
    stats: TopologyStats,
}

/// The running simulator.
pub struct Sim {
    shared: Arc<Shared>,
    opts: TopologyOptions,
    state: Mutex<State>,
    work: tokio::sync::Notify,
}

enum Outcome {
    Done,
    Blocked(u64),
    Failed(String),
}

fn clusters_gr() -> GroupResource {
    GroupResource::new("cluster.x-k8s.io", "clusters")
}

fn ctx() -> WriteCtx {
    WriteCtx::internal(AGENT)
}

impl Sim {
    /// A simulator over `shared`; `run` starts it.
    pub(crate) fn new(shared: Arc<Shared>, opts: TopologyOptions) -> Arc<Sim> {
        Arc::new(Sim {
            shared,
            opts,
            state: Mutex::new(State::default()),
            work: tokio::sync::Notify::new(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Current counters.
    pub fn stats(&self) -> TopologyStats {
        self.state().stats.clone()
    }

    fn enqueue(&self, key: Key) {
        let mut st = self.state();
        st.first_seen
            .entry(key.clone())
            .or_insert_with(Instant::now);
        if st.busy.contains(&key) {
            st.dirty.insert(key);
            return;
        }
        if st.queued.insert(key.clone()) {
            st.queue.push_back(key);
            drop(st);
            self.work.notify_one();
        }
    }

    fn enqueue_after(self: &Arc<Self>, key: Key, delay: Duration) {
        let me = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = me.shared.shutdown.cancelled() => {}
                _ = tokio::time::sleep(delay) => me.enqueue(key),
            }
        });
    }

    /// Event loop plus workers, until the testbed shuts down.
    pub(crate) async fn run(self: Arc<Self>) {
        for _ in 0..self.opts.concurrency.max(1) {
            tokio::spawn(self.clone().worker());
        }
        let store = &self.shared.store;
        let mut sub = store.subscribe_from(0);
        loop {
            let batch = tokio::select! {
                _ = self.shared.shutdown.cancelled() => return,
                b = sub.next(store) => b,
            };
            match batch {
                Ok(Some(events)) => events.iter().for_each(|e| self.on_event(e)),
                Ok(None) => return,
                Err(_) => {
                    sub.last = store.current_rv();
                    self.resync();
                }
            }
        }
    }

    fn resync(self: &Arc<Self>) {
        let (clusters, _, _) = self
            .shared
            .store
            .list(&clusters_gr(), None, None, 0, &|_| true);
        for c in clusters {
            self.enqueue(name_of(&c));
        }
    }

    fn on_event(self: &Arc<Self>, e: &Event) {
        let k = &e.key;
        match (k.gr.group.as_str(), k.gr.resource.as_str()) {
            ("cluster.x-k8s.io", "clusters") if e.kind != EventType::Deleted => {
                let key = (k.namespace.clone(), k.name.clone());
                let cached = self.opts.hook_cache
                    && self
                        .state()
                        .blocked_until
                        .get(&key)
                        .is_some_and(|t| *t > Instant::now());
                if !cached {
                    self.enqueue(key);
                }
            }
            ("runtime.cluster.x-k8s.io", "extensionconfigs") => {
                if e.kind == EventType::Deleted {
                    self.state().registry.remove(&k.name);
                    return;
                }
                let spec_changed = e
                    .prev
                    .as_deref()
                    .is_none_or(|p| p.get("spec") != e.object.get("spec"));
                if spec_changed {
                    let me = self.clone();
                    let obj = e.object.clone();
                    tokio::spawn(async move { me.discover(&obj).await });
                }
            }
            _ => {}
        }
    }

    async fn discover(self: &Arc<Self>, cfg: &Value) {
        let name = meta_str(cfg, "name").unwrap_or_default().to_owned();
        let spec = cfg.get("spec").cloned().unwrap_or(Value::Null);
        let result = match Endpoint::from_client_config(
            spec.get("clientConfig").unwrap_or(&Value::Null),
            &self.opts.services,
        ) {
            Ok(ep) => {
                let req = json!({"apiVersion": HOOKS_API_VERSION, "kind": "DiscoveryRequest"});
                match ep.call("discovery", &req, DISCOVERY_TIMEOUT).await {
                    Ok(resp) => parse_discovery(&resp).map(|h| (ep, h)),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        let status = match result {
            Ok((endpoint, handlers)) => {
                let listed: Vec<Value> = handlers
                    .iter()
                    .map(|(h, hook)| {
                        json!({"name": format!("{}.{name}", h.name),
                            "requestHook": {"apiVersion": HOOKS_API_VERSION, "hook": hook},
                            "timeoutSeconds": h.timeout.as_secs(),
                            "failurePolicy": if h.ignore_failures { "Ignore" } else { "Fail" }})
                    })
                    .collect();
                let reg = Registered {
                    endpoint,
                    handlers: handlers
                        .into_iter()
                        .filter(|(_, hook)| hook == HOOK)
                        .map(|(h, _)| h)
                        .collect(),
                    settings: spec.get("settings").cloned().unwrap_or(json!({})),
                    namespace_selector: spec.get("namespaceSelector").cloned().unwrap_or(json!({})),
                };
                {
                    let mut st = self.state();
                    st.registry.insert(name.clone(), reg);
                    st.stats.discoveries += 1;
                }
                json!({"status": {"handlers": listed, "conditions": [{"type": "Discovered", "status": "True",
                    "reason": "Discovered", "lastTransitionTime": now_time()}]}})
            }
            Err(e) => {
                tracing::warn!(extension = %name, error = %e, "discovery failed");
                self.state().registry.remove(&name);
                json!({"status": {"conditions": [{"type": "Discovered", "status": "False",
                    "reason": "NotDiscovered", "message": e, "lastTransitionTime": now_time()}]}})
            }
        };
        let gr = GroupResource::new("runtime.cluster.x-k8s.io", "extensionconfigs");
        if let Some(info) = self.shared.info_for(&gr) {
            let _ = self.shared.patch(
                &info,
                "",
                &name,
                PatchType::Merge,
                status.to_string().as_bytes(),
                false,
                true,
                &ctx(),
            );
        }
        // Registration changes what every waiting Cluster gets.
        self.resync();
    }

    async fn worker(self: Arc<Self>) {
        loop {
            let key = loop {
                let next = {
                    let mut st = self.state();
                    let k = st.queue.pop_front();
                    if let Some(k) = &k {
                        st.queued.remove(k);
                        st.busy.insert(k.clone());
                    }
                    k
                };
                if let Some(k) = next {
                    break k;
                }
                tokio::select! {
                    _ = self.shared.shutdown.cancelled() => return,
                    _ = self.work.notified() => {}
                }
            };
            let outcome = self.reconcile(&key).await;
            let again = {
                let mut st = self.state();
                st.busy.remove(&key);
                let dirty = st.dirty.remove(&key);
                match &outcome {
                    Outcome::Done => {
                        st.failures.remove(&key);
                        st.blocked_until.remove(&key);
                        dirty
                    }
                    Outcome::Blocked(secs) => {
                        let wait = Duration::from_secs(*secs);
                        st.blocked_until.insert(key.clone(), Instant::now() + wait);
                        self.enqueue_after(key.clone(), wait);
                        dirty && !self.opts.hook_cache
                    }
                    Outcome::Failed(msg) => {
                        let n = st.failures.entry(key.clone()).or_insert(0);
                        *n += 1;
                        let backoff =
                            Duration::from_millis(20u64 << (*n).min(7)).min(Duration::from_secs(2));
                        tracing::debug!(cluster = %key.1, error = %msg, ?backoff, "topology reconcile failed");
                        self.enqueue_after(key.clone(), backoff);
                        false
                    }
                }
            };
            if again {
                self.enqueue(key);
            }
        }
    }

    async fn reconcile(&self, key: &Key) -> Outcome {
        let Some(cluster) = self.shared.store.get(&clusters_gr(), &key.0, &key.1) else {
            return Outcome::Done;
        };
        let spec = cluster.get("spec").cloned().unwrap_or(Value::Null);
        let paused = spec.get("paused").and_then(Value::as_bool) == Some(true)
            || cluster
                .pointer("/metadata/annotations/cluster.x-k8s.io~1paused")
                .is_some();
        let has_refs = ["infrastructureRef", "controlPlaneRef"]
            .iter()
            .any(|r| spec.get(*r).is_some_and(|v| !v.is_null()));
        if spec.get("topology").is_none() || paused || has_refs || is_deleting(&cluster) {
            return Outcome::Done;
        }
        match self.call_hooks(&cluster).await {
            Ok(0) => {}
            Ok(secs) => return Outcome::Blocked(secs),
            Err(e) => return Outcome::Failed(e),
        }
        if !self.opts.render_delay.is_zero() {
            tokio::time::sleep(self.opts.render_delay).await;
        }
        self.render(&cluster, key)
    }

    /// Calls every matching handler in order; the lowest non-zero retryAfter wins.
    async fn call_hooks(&self, cluster: &Value) -> Result<u64, String> {
        let ns = meta_str(cluster, "namespace").unwrap_or_default();
        let ns_labels = self
            .shared
            .store
            .get(&GroupResource::new("", "namespaces"), "", ns)
            .and_then(|n| n.pointer("/metadata/labels").cloned())
            .unwrap_or(json!({}));
        let registry: Vec<Registered> = self
            .state()
            .registry
            .values()
            .filter(|r| selector_matches(&r.namespace_selector, &ns_labels))
            .cloned()
            .collect();
        let body_cluster = request_copy(cluster);
        let mut retry = 0u64;
        for reg in registry {
            for h in &reg.handlers {
                let req = json!({"apiVersion": HOOKS_API_VERSION, "kind": "BeforeClusterCreateRequest",
                    "settings": reg.settings, "cluster": body_cluster});
                self.state().stats.hook_calls += 1;
                let path = format!("beforeclustercreate/{}", h.name);
                let answer = match reg.endpoint.call(&path, &req, h.timeout).await {
                    Ok(a) => a,
                    Err(_) if h.ignore_failures => continue,
                    Err(e) => {
                        self.state().stats.hook_errors += 1;
                        return Err(format!("calling {}: {e}", h.name));
                    }
                };
                if answer.get("status").and_then(Value::as_str) != Some("Success") {
                    self.state().stats.hook_errors += 1;
                    let msg = answer.get("message").and_then(Value::as_str).unwrap_or("");
                    return Err(format!("{} failed: {msg}", h.name));
                }
                let secs = answer
                    .get("retryAfterSeconds")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                if secs > 0 {
                    retry = if retry == 0 { secs } else { retry.min(secs) };
                }
            }
        }
        if retry > 0 {
            self.state().stats.hook_blocked += 1;
        }
        Ok(retry)
    }

    fn render(&self, cluster: &Value, key: &Key) -> Outcome {
        let host = cluster
            .pointer("/spec/topology/variables")
            .and_then(Value::as_array)
            .and_then(|vars| {
                vars.iter()
                    .find(|v| v.get("name").and_then(Value::as_str) == Some(VIP_VARIABLE))
            })
            .and_then(|v| v.get("value"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if host.is_empty() {
            self.state().stats.rejected += 1;
            return Outcome::Failed(format!("{INFRA_KIND} {}/{}: {REJECTION}", key.0, key.1));
        }
        let Some(info) = self
            .shared
            .info_for(&GroupResource::new(INFRA_GROUP, "testinfraclusters"))
        else {
            return Outcome::Failed(format!("{INFRA_KIND} is not served (load crds/test)"));
        };
        let infra = json!({"apiVersion": info.api_version(), "kind": INFRA_KIND,
            "metadata": {"name": key.1, "namespace": key.0,
                "labels": {"cluster.x-k8s.io/cluster-name": key.1, "topology.cluster.x-k8s.io/owned": ""},
                "ownerReferences": [{"apiVersion": cluster.get("apiVersion"), "kind": "Cluster",
                    "name": key.1, "uid": meta_str(cluster, "uid")}]},
            "spec": {"controlPlaneEndpoint": {"host": host, "port": 6443}}});
        match self.shared.create(&info, &key.0, infra, &ctx()) {
            Ok(_) => {}
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => return Outcome::Failed(format!("create {INFRA_KIND}: {}", e.message)),
        }
        let api_version = cluster
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let reference = if api_version.ends_with("v1beta1") {
            json!({"apiVersion": info.api_version(), "kind": INFRA_KIND, "name": key.1, "namespace": key.0})
        } else {
            json!({"apiGroup": INFRA_GROUP, "kind": INFRA_KIND, "name": key.1})
        };
        let Some(cinfo) = self.shared.info_for(&clusters_gr()) else {
            return Outcome::Failed("Cluster is not served".to_owned());
        };
        let patch = json!({"spec": {"infrastructureRef": reference}});
        if let Err(e) = self.shared.patch(
            &cinfo,
            &key.0,
            &key.1,
            PatchType::Merge,
            patch.to_string().as_bytes(),
            false,
            false,
            &ctx(),
        ) {
            return Outcome::Failed(format!("set infrastructureRef: {}", e.message));
        }
        let mut st = self.state();
        let after_ms = st
            .first_seen
            .get(key)
            .map(|t| t.elapsed().as_secs_f64() * 1000.0)
            .unwrap_or(0.0);
        st.stats.rendered += 1;
        st.stats.renders.push(Render {
            namespace: key.0.clone(),
            name: key.1.clone(),
            host,
            after_ms,
        });
        Outcome::Done
    }
}

fn name_of(obj: &Value) -> Key {
    (
        meta_str(obj, "namespace").unwrap_or_default().to_owned(),
        meta_str(obj, "name").unwrap_or_default().to_owned(),
    )
}
