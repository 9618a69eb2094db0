//! The state shared by the HTTP handlers and the in-process controllers.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::Value;

use crate::errors::ApiError;
use crate::faults::{splitmix, FaultState};
use crate::resources::{Registry, ResourceInfo};
use crate::stats::Collector;
use crate::store::{GroupResource, Store};

/// Real-server behaviours that can be turned off (all on by default).
#[derive(Debug, Clone, Copy)]
pub struct Fidelity {
    pub bytewise_json_patch_test: bool,
    pub capi_cluster_webhook: bool,
    pub event_validation: bool,
    pub capi_ipam_webhook: bool,
}

impl Default for Fidelity {
    fn default() -> Self {
        Fidelity {
            bytewise_json_patch_test: true,
            capi_cluster_webhook: true,
            event_validation: true,
            capi_ipam_webhook: true,
        }
    }
}

pub struct Shared {
    pub fidelity: Fidelity,
    pub store: Store,
    pub registry: RwLock<Registry>,
    pub stats: Collector,
    pub faults: Arc<FaultState>,
    rng: Mutex<u64>,
    /// Interval between watch bookmarks (when the client allows them).
    pub bookmark_interval: Duration,
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// Characters Kubernetes uses for generated name suffixes.
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

impl Shared {
    pub fn new(history: usize, faults: Arc<FaultState>, seed: u64) -> Self {
        Shared {
            fidelity: Fidelity::default(),
            store: Store::new(history),
            registry: RwLock::new(Registry::with_builtins()),
            stats: Collector::default(),
            faults,
            rng: Mutex::new(seed),
            bookmark_interval: Duration::from_secs(60),
            shutdown: tokio_util::sync::CancellationToken::new(),
        }
    }

    pub fn registry(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn registry_mut(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(|e| e.into_inner())
    }

    fn next_random(&self) -> u64 {
        splitmix(&mut self.rng.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn new_uid(&self) -> String {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next_random().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next_random().to_le_bytes());
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }

    pub fn name_suffix(&self) -> String {
        let mut r = self.next_random();
        (0..5)
            .map(|_| {
                let c = NAME_ALPHABET[(r % NAME_ALPHABET.len() as u64) as usize] as char;
                r /= NAME_ALPHABET.len() as u64;
                c
            })
            .collect()
    }

    /// The served resource used for in-process access to a stored resource.
    pub fn info_for(&self, gr: &GroupResource) -> Option<Arc<ResourceInfo>> {
        self.registry().preferred_for(gr)
    }

    /// Checks that a namespace exists and accepts new content.
    pub fn check_namespace_open(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        let nsgr = GroupResource::new("", "namespaces");
        match self.store.get(&nsgr, "", ns) {
            None => Err(ApiError::not_found(&crate::errors::Subject {
                group: "",
                plural: "namespaces",
                kind: "Namespace",
                name: ns,
            })),
            Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => Err(ApiError::forbidden(format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                if info.group.is_empty() { info.plural.clone() } else { format!("{}.{}", info.plural, info.group) }
            ))),
            Some(_) => Ok(()),
        }
    }
}

/// Current time as Kubernetes `Time` (RFC 3339, seconds).
pub fn now_time() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

pub fn is_deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}
