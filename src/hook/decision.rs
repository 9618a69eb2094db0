//! The BeforeClusterCreate answer, decided from the operator's caches. Pure: the caller looks the Cluster up.
//!
//! Block (`retryAfterSeconds > 0`) only while the VIP is on its way; answer 0 whenever we owe the Cluster
//! nothing, have written everything, or cannot serve it for a reason that time will not fix (the controller
//! publishes the Event for those).

use crate::{
    names::reasons,
    plan::{self, pools::choose_pool, Role, Snapshot, Step},
};

/// What the cache holds for the Cluster named in the request.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// The caches are not synced yet (start-up, or this replica's controller is not running).
    NotReady,
    /// The Cluster is not in the cache (just created, the watch has not delivered it yet).
    Missing,
    /// The Cluster and everything it depends on.
    Found(Box<Snapshot>),
}

/// The hook's answer (status is always `Success`: a `Failure` is for malformed requests only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// 0 = let the topology controller create the Cluster's objects now.
    pub retry_after_seconds: u32,
    /// Shown by CAPI in the Cluster's `TopologyReconciled` condition when blocking.
    pub message: String,
}

impl Answer {
    fn proceed(message: impl Into<String>) -> Self {
        Self {
            retry_after_seconds: 0,
            message: message.into(),
        }
    }

    fn wait(retry: u32, message: impl Into<String>) -> Self {
        Self {
            retry_after_seconds: retry.max(1),
            message: message.into(),
        }
    }
}

/// What the request body says about our fields: the copy of the Cluster the topology controller renders from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sent {
    /// `spec.controlPlaneEndpoint.host` (same path in v1beta1 and v1beta2).
    pub host: Option<String>,
    /// The `clusterVip` entry of `spec.topology.variables`, when a string.
    pub cluster_vip: Option<String>,
}

impl Sent {
    /// Reads the fields from the request's `cluster` (either API version; anything missing is `None`).
    pub fn from_request_cluster(cluster: Option<&serde_json::Value>) -> Self {
        let text = |v: Option<&serde_json::Value>| {
            v.and_then(serde_json::Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let Some(c) = cluster else {
            return Self::default();
        };
        let cluster_vip = c
            .pointer("/spec/topology/variables")
            .and_then(serde_json::Value::as_array)
            .and_then(|vars| {
                vars.iter().find(|v| {
                    v.get("name").and_then(serde_json::Value::as_str)
                        == Some(Role::ControlPlane.variable())
                })
            })
            .and_then(|v| text(v.get("value")));
        Self {
            host: text(c.pointer("/spec/controlPlaneEndpoint/host")),
            cluster_vip,
        }
    }
}

/// Decides for the Cluster `ns/name`; `retry` is `--runtime-extension-retry-after-seconds`.
///
/// Unblocking needs our fields written in the cache *and* in the request's copy: the topology controller renders
/// from the copy it sent, so a copy older than our write would still produce an empty endpoint.
pub fn decide(lookup: &Lookup, sent: &Sent, ns: &str, name: &str, retry: u32) -> Answer {
    let snap = match lookup {
        Lookup::NotReady => {
            return Answer::wait(
                retry,
                "capi-vip-allocator is starting and its caches are not synced yet; the control-plane VIP follows",
            )
        }
        Lookup::Missing => {
            return Answer::wait(
                retry,
                format!("capi-vip-allocator has not seen Cluster {ns}/{name} yet; the control-plane VIP follows"),
            )
        }
        Lookup::Found(snap) => snap,
    };
    let cluster = &snap.cluster;
    if cluster.deleting || cluster.paused {
        return Answer::proceed("");
    }
    let Some(class_ref) = cluster.class.as_ref() else {
        return Answer::proceed(""); // not a topology Cluster: nothing to wait for
    };
    if snap.class.is_none() {
        // Time will not make an unknown class ours to serve; the controller reports it.
        return Answer::proceed("");
    }
    let role = Role::ControlPlane;
    let var_name = role.variable();
    let host = cluster
        .endpoint
        .as_ref()
        .and_then(|e| e.host.as_deref())
        .filter(|h| !h.is_empty());
    let planned = plan::plan(snap);
    if let (Some(host), Some(collision)) = (host, planned.collision.as_ref()) {
        // Creating it would put a second cluster on an address another one answers for.
        return Answer::wait(
            retry,
            format!(
                "control-plane endpoint {host} is also the endpoint of Cluster {}; give this Cluster another address ({})",
                snap.same_host.join(", "),
                collision.reason
            ),
        );
    }
    if let Some(host) = host {
        // Ours or manual, the host is written; wait only for the variable copy the controller still owes.
        if planned
            .changes(role)
            .variables
            .iter()
            .any(|(n, _)| n == var_name)
        {
            return Answer::wait(
                retry,
                format!("capi-vip-allocator is copying control-plane endpoint {host} into topology variable {var_name}"),
            );
        }
        let declares = snap.class.as_ref().is_some_and(|c| c.declares(var_name));
        let cached_var = cluster
            .variable(var_name)
            .and_then(serde_json::Value::as_str);
        let copy_current = sent.host.as_deref() == Some(host)
            && (!declares || cached_var.is_none() || sent.cluster_vip.as_deref() == cached_var);
        if !copy_current {
            return Answer::wait(
                retry,
                format!("control-plane endpoint {host} is written; waiting for the topology controller to read the updated Cluster"),
            );
        }
        return Answer::proceed("");
    }

    // No endpoint yet: wait only while a pool can give us one.
    let cp_reasons: Vec<&str> = planned
        .reports
        .iter()
        .filter(|r| r.role == role)
        .map(|r| r.reason)
        .collect();
    let unservable = [
        reasons::POOL_NOT_FOUND,
        reasons::CLAIM_CONFLICT,
        reasons::CLUSTER_CLASS_NOT_FOUND,
    ];
    if cp_reasons.iter().any(|r| unservable.contains(r)) {
        return Answer::proceed("");
    }
    let claim_name = role.claim_name(&cluster.name);
    let claim = snap.inputs(role).claim.as_ref();
    let claim_pool = claim
        .and_then(|c| c.pool_ref.as_ref())
        .map(|p| p.name.clone());
    if cp_reasons.contains(&reasons::POOL_EXHAUSTED) {
        let pool = claim_pool.unwrap_or_default();
        return Answer::wait(
            retry,
            format!("pool {pool} is exhausted: IPAddressClaim {ns}/{claim_name} waits for a free address (free one or add a pool labelled for class {})", class_ref.name),
        );
    }
    if let Some(vip) = planned.changes(role).endpoint_host.as_deref() {
        return Answer::wait(
            retry,
            format!("capi-vip-allocator is writing control-plane VIP {vip} to the Cluster"),
        );
    }
    let creating = planned.steps.iter().find_map(|s| match s {
        Step::CreateClaim { role: r, pool, .. } if *r == role => Some(pool.name.clone()),
        _ => None,
    });
    if let Some(pool) = creating {
        return Answer::wait(
            retry,
            format!("capi-vip-allocator is claiming a control-plane VIP from IPAM pool {pool}"),
        );
    }
    match claim {
        Some(c) if c.address_ref.is_some() => Answer::wait(
            retry,
            format!("IPAM assigned an address to IPAddressClaim {ns}/{claim_name}; capi-vip-allocator writes it next"),
        ),
        Some(_) => {
            let pool = claim_pool
                .or_else(|| {
                    choose_pool(&snap.pools, ns, &class_ref.name, role.label()).map(|p| p.name.clone())
                })
                .unwrap_or_default();
            Answer::wait(
                retry,
                format!("waiting for IPAM pool {pool} to assign an address to IPAddressClaim {ns}/{claim_name}"),
            )
        }
        None => Answer::wait(
            retry,
            format!("capi-vip-allocator is preparing the control-plane VIP of Cluster {ns}/{name}"),
        ),
    }
}
