//! The IPAddress the provider writes: created for a new allocation, or the patch half of `CreateOrPatch` on an
//! existing one (cluster-api-ipam-provider-in-cluster `pkg/ipamutil/reconciler.go`, `pkg/ipamutil/address.go`).

use serde_json::{json, Value};

use super::controller::{ctx, gr, s, Controller};
use super::index::PoolId;
use super::*;
use crate::patch::PatchType;
use crate::state::{finalizers, meta_str};

impl Controller {
    pub(super) fn create_address(
        &mut self,
        claim: &Value,
        pool: &Value,
        pool_id: &PoolId,
        ns: &str,
        name: &str,
        ip: std::net::IpAddr,
    ) -> bool {
        let Some(info) = self.shared.info_for(&gr("ipaddresses")) else {
            return false;
        };
        let mut refs = Vec::new();
        ensure_owner_refs(&mut refs, claim, pool);
        let mut addr = json!({"apiVersion": info.api_version(), "kind": "IPAddress",
            "metadata": {"name": name, "namespace": ns, "finalizers": [PROTECT_ADDRESS_FINALIZER],
                "ownerReferences": refs},
            "spec": {"address": ip.to_string(), "prefix": pool.pointer("/spec/prefix").cloned().unwrap_or(json!(0)),
                "claimRef": {"name": name}, "poolRef": {"apiGroup": GROUP, "kind": pool_id.0, "name": pool_id.2}}});
        if let Some(gw) = s(pool, "/spec/gateway") {
            addr["spec"]["gateway"] = json!(gw);
        }
        if let Some(cl) = claim.pointer(&format!(
            "/metadata/labels/{}",
            CLUSTER_NAME_LABEL.replace('/', "~1")
        )) {
            addr["metadata"]["labels"] = json!({CLUSTER_NAME_LABEL: cl});
        }
        match self.shared.create(&info, ns, addr.clone(), &ctx()) {
            Ok(_) => {
                // Indexed now, so the next allocation sees it before its watch event arrives.
                self.index
                    .set_address(&(ns.to_string(), name.to_string()), Some(&addr));
                true
            }
            Err(e) if e.reason == "AlreadyExists" => true,
            Err(e) => {
                tracing::warn!(claim = %name, error = %e.message, "cannot create IPAddress");
                false
            }
        }
    }
    /// The patch half of the provider's `CreateOrPatch` on an existing IPAddress: a new address when it is not
    /// one of the pool's (`ip`), owner references to the claim and the pool, the cluster-name label, the
    /// `ProtectAddress` finalizer — sent as a merge patch through the API, so CAPI's webhook (spec immutable) and
    /// kube-apiserver (no new finalizer on a terminating object) refuse what they refuse upstream. Whether the
    /// claim may be bound.
    pub(super) fn patch_address(
        &self,
        cur: &Value,
        claim: &Value,
        pool: &Value,
        ip: Option<std::net::IpAddr>,
    ) -> bool {
        let mut patch = json!({});
        if let Some(ip) = ip {
            let mut spec = json!({});
            let set = |spec: &mut Value, k: &str, v: Value| {
                if cur.pointer(&format!("/spec/{k}")).unwrap_or(&Value::Null) != &v {
                    spec[k] = v;
                }
            };
            set(&mut spec, "address", json!(ip.to_string()));
            set(
                &mut spec,
                "prefix",
                pool.pointer("/spec/prefix").cloned().unwrap_or(json!(0)),
            );
            let gw = s(pool, "/spec/gateway").filter(|g| !g.is_empty());
            set(&mut spec, "gateway", gw.map_or(Value::Null, |g| json!(g)));
            if spec.as_object().is_some_and(|m| !m.is_empty()) {
                patch["spec"] = spec;
            }
        }
        let mut refs: Vec<Value> = cur
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let before = refs.clone();
        ensure_owner_refs(&mut refs, claim, pool);
        if refs != before {
            patch["metadata"]["ownerReferences"] = json!(refs);
        }
        let label = format!("/metadata/labels/{}", CLUSTER_NAME_LABEL.replace('/', "~1"));
        if let Some(cl) = claim
            .pointer(&label)
            .filter(|v| cur.pointer(&label) != Some(*v))
        {
            patch["metadata"]["labels"] = json!({CLUSTER_NAME_LABEL: cl});
        }
        let mut fins = finalizers(cur);
        if !fins.iter().any(|f| f == PROTECT_ADDRESS_FINALIZER) {
            fins.push(PROTECT_ADDRESS_FINALIZER.to_string());
            patch["metadata"]["finalizers"] = json!(fins);
        }
        if patch.as_object().is_some_and(|m| m.is_empty()) {
            return true;
        }
        let Some(info) = self.shared.info_for(&gr("ipaddresses")) else {
            return false;
        };
        let (ns, name) = (
            meta_str(cur, "namespace").unwrap_or(""),
            meta_str(cur, "name").unwrap_or(""),
        );
        let body = patch.to_string();
        match self.shared.patch(
            &info,
            ns,
            name,
            PatchType::Merge,
            body.as_bytes(),
            false,
            false,
            &ctx(),
        ) {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!(claim = %name, error = %e.message, "failed to create or patch address");
                false
            }
        }
    }
}

fn api_group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

/// controller-runtime's `referSameObject`: same group, kind and name (the uid may differ).
fn same_owner(a: &Value, b: &Value) -> bool {
    let f = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    api_group(&f(a, "apiVersion")) == api_group(&f(b, "apiVersion"))
        && f(a, "kind") == f(b, "kind")
        && f(a, "name") == f(b, "name")
}

fn upsert_owner(refs: &mut Vec<Value>, r: Value) {
    match refs.iter().position(|x| same_owner(x, &r)) {
        Some(i) => refs[i] = r,
        None => refs.push(r),
    }
}

/// The in-cluster provider's `ensureIPAddressOwnerReferences`: the claim as controller unless another object
/// already is (`AlreadyOwnedError` is ignored), the pool as a non-controller owner blocking deletion.
pub(super) fn ensure_owner_refs(refs: &mut Vec<Value>, claim: &Value, pool: &Value) {
    let owner = |o: &Value| {
        json!({"apiVersion": o.get("apiVersion"), "kind": o.get("kind"), "name": meta_str(o, "name"),
            "uid": meta_str(o, "uid")})
    };
    let mut claim_ref = owner(claim);
    claim_ref["controller"] = json!(true);
    claim_ref["blockOwnerDeletion"] = json!(true);
    let owned_by_other = refs
        .iter()
        .any(|r| r.get("controller") == Some(&json!(true)) && !same_owner(r, &claim_ref));
    if !owned_by_other {
        upsert_owner(refs, claim_ref);
    }
    let pool_ref = owner(pool);
    upsert_owner(refs, pool_ref.clone());
    let idx = refs
        .iter()
        .rposition(|r| {
            r.get("apiVersion") == pool_ref.get("apiVersion")
                && r.get("kind") == pool_ref.get("kind")
                && r.get("name") == pool_ref.get("name")
        })
        .unwrap_or(0);
    refs[idx]["controller"] = json!(false);
    refs[idx]["blockOwnerDeletion"] = json!(true);
}
