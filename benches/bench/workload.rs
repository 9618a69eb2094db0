//! The workload driver: creates and deletes namespaces, pools, ClusterClasses and Clusters as a user (user agent
//! `testbed-client`), follows the Clusters through one watch to see when each gets its VIP, and checks the end
//! state (every Cluster has the address its claim got, no VIP twice).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capi_vip_allocator::api::ApiShapes;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::common::host;

/// A Cluster by namespace and name.
pub type Key = (String, String);

/// The control-plane claim of a Cluster (the operator's naming, `vip-cp-<cluster>`).
pub fn claim_name(cluster: &str) -> String {
    format!(
        "{}{cluster}",
        capi_vip_allocator::names::CLAIM_PREFIX_CONTROL_PLANE
    )
}

pub struct Workload {
    client: Client,
    shapes: ApiShapes,
    concurrency: usize,
}

fn err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

fn object(body: Value) -> Result<DynamicObject, String> {
    serde_json::from_value(body).map_err(|e| err("building an object", e))
}

impl Workload {
    pub fn new(client: Client, shapes: ApiShapes, concurrency: usize) -> Workload {
        Workload {
            client,
            shapes,
            concurrency,
        }
    }

    fn clusters(&self, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), ns, &self.shapes.cluster)
    }

    pub async fn namespace(&self, name: &str) -> Result<(), String> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns = serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
        )
        .map_err(|e| err("namespace", e))?;
        api.create(&PostParams::default(), &ns)
            .await
            .map_err(|e| err(format!("create namespace {name}"), e))?;
        Ok(())
    }

    pub async fn delete_namespace(&self, name: &str) -> Result<(), String> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        api.delete(name, &DeleteParams::background())
            .await
            .map_err(|e| err(format!("delete namespace {name}"), e))?;
        Ok(())
    }

    /// A ClusterClass declaring the `clusterVip` variable, so the operator writes it too.
    pub async fn class(&self, ns: &str, name: &str) -> Result<(), String> {
        let body = json!({
            "apiVersion": self.shapes.cluster_class.api_version, "kind": "ClusterClass",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"variables": [{"name": capi_vip_allocator::names::VARIABLE_CLUSTER_VIP, "required": false,
                                    "schema": {"openAPIV3Schema": {"type": "string"}}}]}
        });
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), ns, &self.shapes.cluster_class);
        api.create(&PostParams::default(), &object(body)?)
            .await
            .map_err(|e| err(format!("create ClusterClass {ns}/{name}"), e))?;
        Ok(())
    }

    pub async fn delete_class(&self, ns: &str, name: &str) -> Result<(), String> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), ns, &self.shapes.cluster_class);
        api.delete(name, &DeleteParams::background())
            .await
            .map_err(|e| err(format!("delete ClusterClass {ns}/{name}"), e))?;
        Ok(())
    }

    /// A control-plane GlobalInClusterIPPool for `class` with the addresses of `cidr`.
    pub async fn pool(&self, name: &str, cidr: &str, class: &str) -> Result<(), String> {
        let prefix: u8 = cidr
            .split_once('/')
            .and_then(|(_, p)| p.parse().ok())
            .ok_or_else(|| format!("pool {name}: {cidr} is not a CIDR"))?;
        let body = json!({
            "apiVersion": self.shapes.global_pool.api_version, "kind": self.shapes.global_pool.kind,
            "metadata": {"name": name, "labels": {
                capi_vip_allocator::names::LABEL_CLUSTER_CLASS: class,
                capi_vip_allocator::names::LABEL_ROLE: capi_vip_allocator::names::ROLE_CONTROL_PLANE}},
            "spec": {"addresses": [cidr], "prefix": prefix}
        });
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &self.shapes.global_pool);
        api.create(&PostParams::default(), &object(body)?)
            .await
            .map_err(|e| err(format!("create pool {name}"), e))?;
        Ok(())
    }

    pub async fn delete_pool(&self, name: &str) -> Result<(), String> {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &self.shapes.global_pool);
        api.delete(name, &DeleteParams::background())
            .await
            .map_err(|e| err(format!("delete pool {name}"), e))?;
        Ok(())
    }

    fn cluster_body(&self, ns: &str, name: &str, class: &str) -> Result<DynamicObject, String> {
        let topology = if self.shapes.cluster.version == "v1beta1" {
            json!({"class": class, "version": "v1.33.0"})
        } else {
            json!({"classRef": {"name": class}, "version": "v1.33.0"})
        };
        object(json!({
            "apiVersion": self.shapes.cluster.api_version, "kind": "Cluster",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"topology": topology}
        }))
    }

    pub async fn create_cluster(&self, ns: &str, name: &str, class: &str) -> Result<(), String> {
        let body = self.cluster_body(ns, name, class)?;
        self.clusters(ns)
            .create(&PostParams::default(), &body)
            .await
            .map_err(|e| err(format!("create Cluster {ns}/{name}"), e))?;
        Ok(())
    }

    /// Creates the Clusters with up to `concurrency` requests in flight (as fast as the server accepts them).
    pub async fn create_clusters(
        &self,
        ns: &str,
        names: &[String],
        class: &str,
    ) -> Result<(), String> {
        futures::stream::iter(names)
            .map(|n| self.create_cluster(ns, n, class))
            .buffer_unordered(self.concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    pub async fn delete_clusters(&self, ns: &str, names: &[String]) -> Result<(), String> {
        let api = self.clusters(ns);
        futures::stream::iter(names)
            .map(|n| {
                let api = api.clone();
                async move {
                    api.delete(n, &DeleteParams::background())
                        .await
                        .map(|_| ())
                        .map_err(|e| err(format!("delete Cluster {ns}/{n}"), e))
                }
            })
            .buffer_unordered(self.concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Events in `ns` by reason.
    pub async fn event_reasons(
        &self,
        ns: &str,
    ) -> Result<std::collections::BTreeMap<String, u64>, String> {
        let api: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client.clone(), ns);
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| err("list Events", e))?;
        let mut m = std::collections::BTreeMap::new();
        for e in list.items {
            *m.entry(e.reason.unwrap_or_default()).or_insert(0) += 1;
        }
        Ok(m)
    }

    async fn any_left(&self, api: Api<DynamicObject>) -> Result<bool, String> {
        let list = api
            .list(&ListParams::default().limit(1))
            .await
            .map_err(|e| err("list", e))?;
        Ok(!list.items.is_empty())
    }

    /// Waits until `ns` holds no Clusters, claims or addresses (owner GC and the IPAM finalizers done).
    pub async fn wait_namespace_empty(&self, ns: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut left = Vec::new();
            for (what, ar) in [
                ("Clusters", &self.shapes.cluster),
                ("IPAddressClaims", &self.shapes.claim),
                ("IPAddresses", &self.shapes.address),
            ] {
                if self
                    .any_left(Api::namespaced_with(self.client.clone(), ns, ar))
                    .await?
                {
                    left.push(what);
                }
            }
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{ns} still holds {} after {timeout:?}",
                    left.join(", ")
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the pool (which the IPAM provider holds with a finalizer while addresses exist) is gone.
    pub async fn wait_pool_gone(&self, name: &str, timeout: Duration) -> Result<(), String> {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &self.shapes.global_pool);
        let deadline = Instant::now() + timeout;
        while api
            .get_opt(name)
            .await
            .map_err(|e| err(format!("get pool {name}"), e))?
            .is_some()
        {
            if Instant::now() > deadline {
                return Err(format!("pool {name} still exists after {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Checks the end state in `ns`: each of `names` has a control-plane endpoint host equal to the address its
    /// claim was given, and no two Clusters share a VIP. Returns the VIPs and the problems found.
    pub async fn verify(&self, ns: &str, names: &[String]) -> Result<Verified, String> {
        let clusters = self
            .clusters(ns)
            .list(&ListParams::default())
            .await
            .map_err(|e| err("list Clusters", e))?;
        let addresses: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), ns, &self.shapes.address);
        let addresses = addresses
            .list(&ListParams::default())
            .await
            .map_err(|e| err("list IPAddresses", e))?;
        let by_claim: HashMap<&str, &str> = addresses
            .items
            .iter()
            .filter_map(|a| {
                Some((
                    a.data.pointer("/spec/claimRef/name")?.as_str()?,
                    a.data.pointer("/spec/address")?.as_str()?,
                ))
            })
            .collect();
        let hosts: HashMap<&str, String> = clusters
            .items
            .iter()
            .filter_map(|c| Some((c.metadata.name.as_deref()?, host(c))))
            .collect();
        let mut v = Verified {
            vips: Vec::with_capacity(names.len()),
            problems: Vec::new(),
        };
        for name in names {
            let Some(h) = hosts.get(name.as_str()) else {
                v.problems.push(format!("{ns}/{name}: Cluster missing"));
                continue;
            };
            let claimed = by_claim.get(claim_name(name).as_str());
            if h.is_empty() {
                v.problems.push(format!("{ns}/{name}: no VIP"));
            } else if claimed != Some(&h.as_str()) {
                v.problems.push(format!(
                    "{ns}/{name}: VIP {h} but its claim holds {claimed:?}"
                ));
            }
            v.vips.push(h.clone());
        }
        v.problems.extend(duplicates(&v.vips));
        Ok(v)
    }
}

/// The outcome of [`Workload::verify`].
pub struct Verified {
    pub vips: Vec<String>,
    pub problems: Vec<String>,
}

/// One problem per VIP held by more than one Cluster.
pub fn duplicates(vips: &[String]) -> Vec<String> {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for v in vips.iter().filter(|v| !v.is_empty()) {
        *count.entry(v).or_default() += 1;
    }
    let mut d: Vec<String> = count
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(v, n)| format!("VIP {v} held by {n} Clusters"))
        .collect();
    d.sort();
    d
}

/// The first version of a Cluster seen with a VIP.
#[derive(Debug, Clone)]
pub struct Seen {
    pub host: String,
    pub resource_version: String,
}

#[derive(Default)]
struct TrackerState {
    vips: HashMap<Key, Seen>,
    /// Clusters whose VIP changed after it was first written (must stay 0).
    changed: Vec<String>,
}

/// Watches all Clusters and records, per Cluster, the first version that carries a VIP.
pub struct VipTracker {
    state: Arc<Mutex<TrackerState>>,
    updates: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl VipTracker {
    /// Starts the watch and waits until its initial list is done.
    pub async fn start(client: Client, shapes: &ApiShapes) -> Result<VipTracker, String> {
        let api: Api<DynamicObject> = Api::all_with(client, &shapes.cluster);
        let state = Arc::new(Mutex::new(TrackerState::default()));
        let (tx, updates) = watch::channel(0u64);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let st = state.clone();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut events = watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(ev) = events.next().await {
                let Ok(ev) = ev else { continue };
                let mut s = st.lock().unwrap_or_else(|e| e.into_inner());
                match ev {
                    watcher::Event::Apply(c) | watcher::Event::InitApply(c) => {
                        let h = host(&c);
                        let key = (
                            c.metadata.namespace.clone().unwrap_or_default(),
                            c.metadata.name.clone().unwrap_or_default(),
                        );
                        if h.is_empty() {
                            continue;
                        }
                        match s.vips.get(&key).map(|seen| seen.host.clone()) {
                            Some(first) if first != h => s
                                .changed
                                .push(format!("{}/{}: {first} -> {h}", key.0, key.1)),
                            Some(_) => {}
                            None => {
                                let rv = c.metadata.resource_version.clone().unwrap_or_default();
                                s.vips.insert(
                                    key,
                                    Seen {
                                        host: h,
                                        resource_version: rv,
                                    },
                                );
                            }
                        }
                    }
                    watcher::Event::Delete(c) => {
                        let key = (
                            c.metadata.namespace.clone().unwrap_or_default(),
                            c.metadata.name.clone().unwrap_or_default(),
                        );
                        s.vips.remove(&key);
                    }
                    watcher::Event::Init => {}
                    watcher::Event::InitDone => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                }
                drop(s);
                tx.send_modify(|n| *n += 1);
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .map_err(|_| "the bench's Cluster watch did not sync in 10 s".to_string())?
            .map_err(|_| "the bench's Cluster watch ended".to_string())?;
        Ok(VipTracker {
            state,
            updates,
            task,
        })
    }

    pub fn get(&self, key: &Key) -> Option<Seen> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .vips
            .get(key)
            .cloned()
    }

    /// Clusters whose VIP changed after it was first seen.
    pub fn changed(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .changed
            .clone()
    }

    /// How many of `keys` have a VIP.
    pub fn count_with_vip(&self, keys: &[Key]) -> usize {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        keys.iter().filter(|k| s.vips.contains_key(*k)).count()
    }

    /// Waits until every one of `keys` has been seen with a VIP.
    pub async fn wait_all(&self, keys: &[Key], timeout: Duration) -> Result<(), String> {
        let mut rx = self.updates.clone();
        let all = |_: &u64| self.count_with_vip(keys) == keys.len();
        let outcome = tokio::time::timeout(timeout, rx.wait_for(all))
            .await
            .map(|r| r.is_ok());
        match outcome {
            Ok(true) => Ok(()),
            Ok(false) => Err("the bench's Cluster watch ended".into()),
            Err(_) => Err(format!(
                "only {} of {} Clusters got a VIP within {timeout:?}",
                self.count_with_vip(keys),
                keys.len()
            )),
        }
    }
}

impl Drop for VipTracker {
    fn drop(&mut self) {
        self.task.abort();
    }
}
