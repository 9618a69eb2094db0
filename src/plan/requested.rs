//! A Cluster asking for an exact VIP: annotation `vip.capi.gorizond.io/control-plane-address` (or
//! `vip.capi.gorizond.io/ingress-address`), read before the first claim is made.
//!
//! The CAPI IPAM contract has no field for a requested address. The in-cluster provider, though, keeps an
//! `IPAddress` named like a claim, in its namespace and with its `poolRef`, as that claim's allocation (its
//! `EnsureAddress` allocates only when no such address is listed for the pool). So the address is reserved by
//! creating that `IPAddress` (with our finalizer) before the claim. Only an address a candidate pool can hand out and
//! that no `IPAddress` holds is reserved; anything else is a Warning and no claim at all: another address is never
//! handed out silently instead.

use std::net::IpAddr;

use super::{holds, NewAddress, Plan, Report, Role, Severity, Snapshot, Step};
use crate::{
    api::{PoolRef, PoolView},
    names::{reasons, IPAM_GROUP},
};

/// The address the Cluster asks for in `role`, as written.
pub fn asked(snap: &Snapshot, role: Role) -> Option<&str> {
    snap.cluster
        .annotation(role.requested_annotation())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn unavailable(role: Role, note: String) -> Report {
    Report {
        role,
        severity: Severity::Warning,
        reason: reasons::ADDRESS_UNAVAILABLE,
        note,
        is_error: true,
    }
}

/// Where `ip` can be reserved among `candidates`, or why it cannot.
fn pool_for<'a>(ip: IpAddr, candidates: &[&'a PoolView]) -> Result<&'a PoolView, String> {
    if let Some(p) = candidates
        .iter()
        .find(|p| p.addresses.as_ref().is_some_and(|a| a.contains(ip)))
    {
        return Ok(p);
    }
    let names: Vec<String> = candidates.iter().map(|p| holds::pool_label(p)).collect();
    if let Some(p) = candidates
        .iter()
        .find(|p| p.gateway.as_deref().and_then(|g| g.parse::<IpAddr>().ok()) == Some(ip))
    {
        return Err(format!(
            "it is the gateway of pool {}",
            holds::pool_label(p)
        ));
    }
    Err(if names.is_empty() {
        "no pool serves this Cluster's class and role".to_owned()
    } else {
        format!(
            "no candidate pool can hand it out (pools {}: outside their ranges, excluded, or a network/broadcast \
             address)",
            names.join(", ")
        )
    })
}

/// The first claim of `role`, when the Cluster asks for an exact address: the steps that reserve it, or a Warning
/// and nothing. Returns false when the Cluster asks for nothing (the usual pool choice applies).
pub(super) fn first_claim(
    snap: &Snapshot,
    role: Role,
    candidates: &[&PoolView],
    out: &mut Plan,
) -> bool {
    let Some(asked) = asked(snap, role) else {
        return false;
    };
    let key = role.requested_annotation();
    let Ok(ip) = asked.parse::<IpAddr>() else {
        out.reports.push(unavailable(
            role,
            format!("annotation {key} is {asked:?}, not an IP address; no VIP is claimed"),
        ));
        return true;
    };
    let claim = role.claim_name(&snap.cluster.name);
    let inputs = snap.inputs(role);
    // Reserved by an earlier pass whose claim creation did not go through: only the claim is missing.
    if let Some(a) = inputs.named.as_ref().filter(|a| {
        a.address == ip && a.protected() && !a.deleting && !a.claim_owned && a.pool_ref.is_some()
    }) {
        if let Some(pool) = a.pool_ref.clone() {
            out.steps.push(Step::CreateClaim {
                role,
                name: claim,
                pool,
            });
        }
        return true;
    }
    if let Some(other) = inputs.requested_holders.first() {
        out.reports.push(unavailable(
            role,
            format!(
                "annotation {key} asks for {ip}, which IPAddress {}/{} already holds; no VIP is claimed",
                other.namespace, other.name
            ),
        ));
        return true;
    }
    let pool = match pool_for(ip, candidates) {
        Ok(p) => p,
        Err(why) => {
            out.reports.push(unavailable(
                role,
                format!("annotation {key} asks for {ip}, but {why}; no VIP is claimed"),
            ));
            return true;
        }
    };
    let pool_ref = PoolRef {
        api_group: IPAM_GROUP.to_owned(),
        kind: pool.kind.clone(),
        name: pool.name.clone(),
    };
    out.steps.push(Step::CreateAddress {
        role,
        address: NewAddress {
            name: claim.clone(),
            claim: claim.clone(),
            address: ip.to_string(),
            prefix: pool.prefix.unwrap_or(if ip.is_ipv4() { 32 } else { 128 }),
            gateway: pool.gateway.clone(),
            pool: pool_ref.clone(),
        },
    });
    out.steps.push(Step::CreateClaim {
        role,
        name: claim,
        pool: pool_ref,
    });
    true
}

/// The annotation asks for another address than the VIP already written: endpoints are immutable, so it is refused.
pub(super) fn changed_after_allocation(snap: &Snapshot, role: Role, vip: &str, out: &mut Plan) {
    let Some(asked) = asked(snap, role) else {
        return;
    };
    if super::rules::same_address(vip, asked) {
        return;
    }
    out.reports.push(unavailable(
        role,
        format!(
            "annotation {} asks for {asked}, but this Cluster's {} VIP is already {vip}; a VIP is not changed once \
             written (endpoints are immutable): remove the annotation or set it to {vip}",
            role.requested_annotation(),
            role.label()
        ),
    ));
}
