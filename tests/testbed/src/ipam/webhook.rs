//! CAPI's validating webhook for `IPAddress` (cluster-api `core/webhooks/admission/ipaddress.go` on main/v1.11+,
//! `exp/ipam/internal/webhooks/ipaddress.go` @v1.10):
//! - create: `spec.address` parses as an IP, `spec.prefix` is 0..32 (IPv4) / 0..128 (IPv6), a non-empty
//!   `spec.gateway` parses, (v1beta1 only) `spec.poolRef.apiGroup` is set, and when the claim named by
//!   `spec.claimRef.name` exists in the namespace its `poolRef` equals the address's;
//! - update: the whole `spec` is immutable (nothing else is checked).
//!
//! And its `IPAddressClaim` webhook (`core/webhooks/admission/ipaddressclaim.go`, `exp/ipam/internal/webhooks/
//! ipaddressclaim.go` @v1.10): the claim `spec` is immutable on update (not on `/status` writes); v1.10 also refuses
//! a create without `spec.poolRef.apiGroup`.
//!
//! Their errors are not `StatusError`s, so controller-runtime answers `Denied` (403 `Forbidden`) and kube-apiserver
//! prefixes `admission webhook "<name>" denied the request: `.

use std::net::IpAddr;

use serde_json::Value;

use super::GROUP;
use crate::errors::ApiError;
use crate::gojson::quote;
use crate::resources::ResourceInfo;
use crate::state::{meta_str, Shared};
use crate::store::GroupResource;

pub const IPADDRESS_WEBHOOK: &str = "validation.ipaddress.ipam.cluster.x-k8s.io";
pub const IPADDRESSCLAIM_WEBHOOK: &str = "validation.ipaddressclaim.ipam.cluster.x-k8s.io";

fn s<'a>(v: &'a Value, p: &str) -> Option<&'a str> {
    v.pointer(p).and_then(Value::as_str)
}

/// Go's `%#v` of the pool reference the webhook prints (v1beta2 `IPPoolReference`, v1beta1
/// `corev1.TypedLocalObjectReference`, whose `APIGroup` is a pointer: Go prints an address, here a fixed one).
fn pool_ref_go(spec: &Value, v1beta1: bool) -> String {
    let f = |k: &str| quote(s(spec, &format!("/poolRef/{k}")).unwrap_or(""));
    if v1beta1 {
        let group = match s(spec, "/poolRef/apiGroup") {
            Some(_) => "(*string)(0xc000010000)",
            None => "(*string)(nil)",
        };
        format!(
            "v1.TypedLocalObjectReference{{APIGroup:{group}, Kind:{}, Name:{}}}",
            f("kind"),
            f("name")
        )
    } else {
        format!(
            "v1beta2.IPPoolReference{{Name:{}, Kind:{}, APIGroup:{}}}",
            f("name"),
            f("kind"),
            f("apiGroup")
        )
    }
}

/// The Go field names of `IPAddressSpec`, in declaration order, with their JSON names.
const SPEC_FIELDS: [(&str, &str); 5] = [
    ("ClaimRef", "claimRef"),
    ("PoolRef", "poolRef"),
    ("Address", "address"),
    ("Prefix", "prefix"),
    ("Gateway", "gateway"),
];

/// The Go field names of `IPAddressClaimSpec`.
const CLAIM_SPEC_FIELDS: [(&str, &str); 2] =
    [("ClusterName", "clusterName"), ("PoolRef", "poolRef")];

/// A go-cmp-like diff of two specs (upstream prints `cmp.Diff`; the shape here is close, not byte-identical).
fn spec_diff(old: &Value, new: &Value, v1beta1: bool, ty: &str, fields: &[(&str, &str)]) -> String {
    let version = if v1beta1 { "v1beta1" } else { "v1beta2" };
    let mut lines = vec![format!("{version}.{ty}{{")];
    let mut same = 0;
    for &(go, json) in fields {
        let (a, b) = (old.get(json), new.get(json));
        if a == b {
            same += 1;
            continue;
        }
        let show = |v: Option<&Value>| v.map_or("nil".to_string(), |v| v.to_string());
        lines.push(format!("-   {go}: {},", show(a)));
        lines.push(format!("+   {go}: {},", show(b)));
    }
    if same > 0 {
        lines.push(format!("    ... // {same} identical fields"));
    }
    lines.push("  }".into());
    lines.join("\n")
}

fn denied(webhook: &str, errs: Vec<String>) -> ApiError {
    let msg = if errs.len() == 1 {
        errs[0].clone()
    } else {
        format!("[{}]", errs.join(", "))
    };
    ApiError::forbidden(format!(
        "admission webhook \"{webhook}\" denied the request: {msg}"
    ))
}

/// `ValidateUpdate` of both webhooks: any change of `spec` is refused.
fn immutable_spec(
    webhook: &str,
    ty: &str,
    fields: &[(&str, &str)],
    old: &Value,
    new: &Value,
    v1beta1: bool,
) -> Result<(), ApiError> {
    let null = Value::Null;
    let (old, new) = (
        old.get("spec").unwrap_or(&null),
        new.get("spec").unwrap_or(&null),
    );
    if old == new {
        return Ok(());
    }
    let kind = ty.trim_end_matches("Spec");
    Err(denied(
        webhook,
        vec![format!(
            "spec: Forbidden: {kind} spec is immutable. Diff: {}",
            spec_diff(old, new, v1beta1, ty, fields)
        )],
    ))
}

impl Shared {
    /// Whether a webhook for `resource` applies to this write, and then whether it is CAPI ≤ v1.10's v1beta1 one
    /// (no v1beta2 served; later releases convert every request to v1beta2 first).
    fn ipam_webhook(&self, info: &ResourceInfo, resource: &str) -> Option<bool> {
        if !self.fidelity.capi_ipam_webhook
            || info.storage.group != GROUP
            || info.storage.resource != resource
        {
            return None;
        }
        Some(self.registry().lookup(GROUP, "v1beta2", resource).is_none())
    }

    /// CAPI's IPAddress validating webhook, on create (`old` None) and update of an IPAddress in storage shape.
    pub(crate) fn capi_ipaddress_validation(
        &self,
        info: &ResourceInfo,
        obj: &Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        let Some(v1beta1) = self.ipam_webhook(info, "ipaddresses") else {
            return Ok(());
        };
        if let Some(old) = old {
            return immutable_spec(
                IPADDRESS_WEBHOOK,
                "IPAddressSpec",
                &SPEC_FIELDS,
                old,
                obj,
                v1beta1,
            );
        }
        let null = Value::Null;
        let spec = obj.get("spec").unwrap_or(&null);
        let mut errs = Vec::new();
        let address = s(spec, "/address").unwrap_or("");
        let ip = address.parse::<IpAddr>().ok();
        if ip.is_none() {
            errs.push(format!(
                "spec.address: Invalid value: {}: not a valid IP address",
                quote(address)
            ));
        }
        let prefix = spec.get("prefix").and_then(Value::as_i64).unwrap_or(0);
        if prefix < 0 {
            errs.push(format!(
                "spec.prefix: Invalid value: {prefix}: prefix cannot be negative"
            ));
        }
        match ip {
            Some(IpAddr::V4(_)) if prefix > 32 => errs.push(format!(
                "spec.prefix: Invalid value: {prefix}: prefix is too large for an IPv4 address"
            )),
            Some(IpAddr::V6(_)) if prefix > 128 => errs.push(format!(
                "spec.prefix: Invalid value: {prefix}: prefix is too large for an IPv6 address"
            )),
            _ => {}
        }
        if let Some(gw) = s(spec, "/gateway").filter(|g| !g.is_empty()) {
            if gw.parse::<IpAddr>().is_err() {
                errs.push(format!(
                    "spec.gateway: Invalid value: {}: not a valid IP address",
                    quote(gw)
                ));
            }
        }
        if v1beta1 && s(spec, "/poolRef/apiGroup").is_none() {
            errs.push(
                "spec.poolRef.apiGroup: Invalid value: \"null\": the pool reference needs to contain a group"
                    .into(),
            );
        }
        let ns = meta_str(obj, "namespace").unwrap_or("");
        let claim_name = s(spec, "/claimRef/name").unwrap_or("");
        let claims = GroupResource::new(GROUP, "ipaddressclaims");
        if let Some(claim) = self.store.get(&claims, ns, claim_name) {
            let field = |v: &Value, k: &str| s(v, &format!("/spec/poolRef/{k}")).map(String::from);
            let group_differs = if v1beta1 {
                field(obj, "apiGroup").is_none()
                    || field(&claim, "apiGroup").is_none()
                    || field(obj, "apiGroup") != field(&claim, "apiGroup")
            } else {
                field(obj, "apiGroup").unwrap_or_default()
                    != field(&claim, "apiGroup").unwrap_or_default()
            };
            if group_differs
                || field(obj, "kind") != field(&claim, "kind")
                || field(obj, "name") != field(&claim, "name")
            {
                errs.push(format!(
                    "spec.poolRef: Invalid value: {}: the referenced pool is different from the pool referenced by the claim this address should fulfill",
                    pool_ref_go(spec, v1beta1)
                ));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(denied(IPADDRESS_WEBHOOK, errs))
        }
    }

    /// CAPI's IPAddressClaim validating webhook, on create (`old` None) and main-resource update.
    pub(crate) fn capi_ipaddressclaim_validation(
        &self,
        info: &ResourceInfo,
        obj: &Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        let Some(v1beta1) = self.ipam_webhook(info, "ipaddressclaims") else {
            return Ok(());
        };
        match old {
            Some(old) => immutable_spec(
                IPADDRESSCLAIM_WEBHOOK,
                "IPAddressClaimSpec",
                &CLAIM_SPEC_FIELDS,
                old,
                obj,
                v1beta1,
            ),
            None if v1beta1 && s(obj, "/spec/poolRef/apiGroup").is_none() => Err(denied(
                IPADDRESSCLAIM_WEBHOOK,
                vec!["spec.poolRef.apiGroup: Invalid value: \"null\": the pool reference needs to contain a group".into()],
            )),
            None => Ok(()),
        }
    }
}
