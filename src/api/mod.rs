//! Views of the upstream kinds we read, parsed tolerantly from `DynamicObject`s (both CAPI API shapes),
//! and start-up discovery of which versions the server serves.

mod cluster;
mod discovery;
mod ipam;

pub use cluster::{ClassRef, ClassView, ClusterView, Endpoint};
pub use discovery::{
    discover, discover_pool_kinds, ApiShapes, DiscoveryError, PoolKind, PoolKindName,
    MAX_POOL_KINDS,
};
pub use ipam::{AddressView, ClaimView, PoolRef, PoolView};

use std::collections::BTreeMap;

use kube::api::DynamicObject;
use serde_json::Value;

/// Why an object could not be read as the kind we expected. Never fatal: the object is skipped and logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name}: {message}")]
pub struct ParseProblem {
    /// Kind of the object.
    pub kind: &'static str,
    /// `namespace/name` or `name`.
    pub name: String,
    /// What is wrong.
    pub message: String,
}

pub(crate) fn problem(
    kind: &'static str,
    obj: &DynamicObject,
    message: impl Into<String>,
) -> ParseProblem {
    let name = match &obj.metadata.namespace {
        Some(ns) => format!("{ns}/{}", obj.metadata.name.as_deref().unwrap_or("")),
        None => obj.metadata.name.clone().unwrap_or_default(),
    };
    ParseProblem {
        kind,
        name,
        message: message.into(),
    }
}

/// Follows a path of object keys; `None` when any step is missing or not an object.
pub(crate) fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter()
        .try_fold(v, |cur, key| cur.as_object()?.get(*key))
}

pub(crate) fn str_at(v: &Value, path: &[&str]) -> Option<String> {
    at(v, path).and_then(Value::as_str).map(str::to_owned)
}

pub(crate) fn map_of(m: &Option<BTreeMap<String, String>>) -> BTreeMap<String, String> {
    m.clone().unwrap_or_default()
}
