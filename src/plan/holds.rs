//! Keeping the address of every VIP we wrote reserved for as long as its Cluster uses it.
//!
//! The in-cluster IPAM provider deletes a claim's IPAddress as soon as the claim is deleted, and hands the address to
//! the next claim (first fit, lowest free). So the IPAddress behind each VIP we wrote carries our finalizer: a
//! deleted claim leaves its IPAddress terminating, and a terminating IPAddress still counts as in use in its pool.
//! The claim is then recreated on the same address. A terminating object cannot be bound again (it cannot take the
//! provider's finalizer), so the address moves to a new IPAddress of the same name, without ever being free:
//!
//! 1. a holder IPAddress `<claim>-held` is created with the address (the pool counts it as in use);
//! 2. our finalizer is removed from the terminating IPAddress, which goes;
//! 3. a new IPAddress named like the claim is created with the address and the claim's pool (the provider keeps an
//!    IPAddress named like a claim, with its pool, as that claim's allocation);
//! 4. the claim is created; once it is bound, the holder is deleted.
//!
//! Every step is decided from the caches, so an interrupted sequence resumes where it stopped.

use super::{NewAddress, Plan, Report, Role, Severity, Snapshot, Step};
use crate::{
    api::{AddressView, ClusterView, PoolRef, PoolView},
    names::{reasons, ANNOTATION_INGRESS_VIP, FINALIZER_ADDRESS_PROTECTION},
};

/// The VIP of `role` the Cluster uses: the control-plane host or the ingress annotation.
pub fn in_use(cluster: &ClusterView, role: Role) -> Option<&str> {
    match role {
        Role::ControlPlane => cluster.endpoint.as_ref()?.host.as_deref(),
        Role::Ingress => cluster.annotation(ANNOTATION_INGRESS_VIP),
    }
    .filter(|v| !v.is_empty())
}

/// Whether `a` holds `vip` for us: our finalizer is on it and its address is `vip`.
fn holds(a: &AddressView, vip: &str) -> bool {
    a.protected() && !a.moving && super::rules::same_address(&a.address.to_string(), vip)
}

/// The new IPAddress `name` (for claim `claim`) carrying what `from` holds.
fn copy(from: &AddressView, name: String, claim: String) -> Option<NewAddress> {
    Some(NewAddress {
        name,
        claim,
        address: from.address.to_string(),
        prefix: from
            .prefix
            .unwrap_or(if from.address.is_ipv4() { 32 } else { 128 }),
        gateway: from.gateway.clone(),
        pool: from.pool_ref.clone()?,
    })
}

/// Our finalizer on the IPAddress behind `vip`, our bound claim's, as the VIP is (or was) written; and the holder
/// deleted once the claim is bound again.
pub(super) fn protect(snap: &Snapshot, role: Role, address: Option<&AddressView>, out: &mut Plan) {
    if let Some(a) = address.filter(|a| !a.protected() && !a.deleting && !a.moving) {
        out.finally.push(Step::ProtectAddress {
            role,
            name: a.name.clone(),
        });
    }
    if let Some(h) = snap
        .inputs(role)
        .holder
        .as_ref()
        .filter(|h| h.protected() && !h.moving)
    {
        out.finally.push(Step::ReleaseAddress {
            role,
            name: h.name.clone(),
            delete: true,
        });
    }
}

/// When the claim of `written` (a VIP the Cluster uses) is gone or going while our finalizer still keeps its address:
/// the steps that recreate the claim on that address, and the Warning that says so (no steps and no Warning while
/// the provider has yet to delete the old IPAddress). `None` when nothing of ours holds `written`.
pub(super) fn restore(
    snap: &Snapshot,
    role: Role,
    written: &str,
) -> Option<(Vec<Step>, Option<Report>)> {
    let inputs = snap.inputs(role);
    let claim_name = role.claim_name(&snap.cluster.name);
    let claim = inputs.claim.as_ref();
    if claim.is_some_and(|c| c.deleting || c.address_ref.is_some()) {
        return None; // still going (the provider is releasing it), or bound: nothing to restore yet
    }
    let named = inputs.named.as_ref().filter(|a| holds(a, written));
    let holder = inputs.holder.as_ref().filter(|a| holds(a, written));
    let mut steps = Vec::new();
    let source = match (named, holder) {
        (Some(n), h) if n.deleting => {
            if h.is_none() {
                steps.push(Step::CreateAddress {
                    role,
                    address: copy(
                        n,
                        role.holder_name(&snap.cluster.name),
                        role.holder_name(&snap.cluster.name),
                    )?,
                });
            }
            steps.push(Step::ReleaseAddress {
                role,
                name: n.name.clone(),
                delete: false,
            });
            steps.push(Step::CreateAddress {
                role,
                address: copy(n, claim_name.clone(), claim_name.clone())?,
            });
            n
        }
        // One we created, in place, whose claim is missing. One the provider bound to a claim that is gone is about to
        // be deleted (by the provider or the garbage collector): a claim created now would not be bound to it.
        (Some(n), _) if claim.is_none() && !n.claim_owned => n,
        (Some(_), _) if claim.is_none() => return Some((Vec::new(), None)),
        (None, Some(h)) if inputs.named.is_none() => {
            steps.push(Step::CreateAddress {
                role,
                address: copy(h, claim_name.clone(), claim_name.clone())?,
            });
            h
        }
        _ => return None,
    };
    if claim.is_none() {
        steps.push(Step::CreateClaim {
            role,
            name: claim_name.clone(),
            pool: source.pool_ref.clone()?,
        });
    }
    let report = Report {
        role,
        severity: Severity::Warning,
        reason: reasons::CLAIM_RESTORED,
        note: format!(
            "IPAddressClaim {claim_name}, which holds {written} for this Cluster, was deleted; {written} stays reserved \
             (finalizer {FINALIZER_ADDRESS_PROTECTION} on its IPAddress) and the claim is recreated on it. Keep the \
             claims of running Clusters"
        ),
        is_error: true,
    };
    Some((steps, Some(report)))
}

/// Our finalizer released from what no longer keeps a VIP of this Cluster: an IPAddress named like the claim, or the
/// holder, whose address the Cluster does not use (any more). A holder, or an IPAddress we created whose claim does
/// not exist, is deleted as well. Steps already planned for the same object win.
pub(super) fn release_unused(snap: &Snapshot, role: Role, vip: Option<&str>, out: &mut Plan) {
    let inputs = snap.inputs(role);
    let planned = |name: &str| {
        out.steps.iter().chain(&out.finally).any(|s| match s {
            Step::ProtectAddress { name: n, .. } | Step::ReleaseAddress { name: n, .. } => {
                n == name
            }
            Step::CreateAddress { address, .. } => address.name == name,
            _ => false,
        })
    };
    let mut release = Vec::new();
    for (a, is_holder) in [
        (inputs.named.as_ref(), false),
        (inputs.holder.as_ref(), true),
    ] {
        let Some(a) = a.filter(|a| a.protected() && !a.moving) else {
            continue;
        };
        if vip.is_some_and(|v| super::rules::same_address(&a.address.to_string(), v))
            || planned(&a.name)
        {
            continue;
        }
        let claimed = inputs.claim.as_ref().is_some_and(|c| !c.deleting);
        let asked = super::requested::asked(snap, role)
            .is_some_and(|v| super::rules::same_address(&a.address.to_string(), v));
        if vip.is_none() && !is_holder && (claimed || asked) {
            continue; // reserved for a VIP not written yet (a requested address, or our claim's on its way)
        }
        release.push(Step::ReleaseAddress {
            role,
            name: a.name.clone(),
            delete: !a.deleting && (is_holder || (!claimed && !a.claim_owned)),
        });
    }
    out.steps.extend(release);
}

/// What to do with an IPAddress carrying our finalizer whose Cluster is gone (`None`) or being deleted: let go of it,
/// and delete it when we created it and no live claim is bound to it (a holder, an IPAddress we created for a claim
/// that never came). One the provider bound to a claim is never deleted here: its claim's deletion deletes it, and
/// after `clusterctl move` the source keeps the IPAddresses of global pools (cluster-scoped owner), which keep the
/// moved addresses reserved there.
/// `None` while a move takes it away (clusterctl removes finalizers itself) or when it is not ours to release.
pub fn release_orphan(
    address: &AddressView,
    cluster: Option<&ClusterView>,
    claim_alive: bool,
) -> Option<Step> {
    if !address.protected() || address.moving || cluster.is_some_and(|c| !c.deleting) {
        return None;
    }
    let role = address
        .claim_name
        .as_deref()
        .and_then(Role::cluster_of_claim)
        .map_or(Role::ControlPlane, |(r, _)| r);
    Some(Step::ReleaseAddress {
        role,
        name: address.name.clone(),
        delete: !address.deleting && !claim_alive && !address.claim_owned,
    })
}

/// Whether `a` is an IPAddress of pool `p`.
fn of_pool(a: &AddressView, p: &PoolView) -> bool {
    a.pool_ref
        .as_ref()
        .is_some_and(|r| r.kind == p.kind && r.name == p.name)
        && p.namespace.as_ref().is_none_or(|ns| *ns == a.namespace)
}

/// `namespace/name` of a namespaced pool, else its name.
pub(super) fn pool_label(p: &PoolView) -> String {
    match &p.namespace {
        Some(ns) => format!("{ns}/{}", p.name),
        None => p.name.clone(),
    }
}

/// The pools this Cluster sees whose range holds `written` while no IPAddress of theirs reserves it: the IPAM
/// provider may hand the address to another claim.
pub(super) fn unreserved_in<'a>(
    snap: &'a Snapshot,
    role: Role,
    written: &str,
) -> Vec<&'a PoolView> {
    let Ok(ip) = written.trim().parse::<std::net::IpAddr>() else {
        return Vec::new();
    };
    let held = &snap.inputs(role).same_ip;
    snap.pools
        .iter()
        .filter(|p| !p.deleting && p.addresses.as_ref().is_some_and(|a| a.contains(ip)))
        .filter(|p| !held.iter().any(|a| of_pool(a, p)))
        .collect()
}

/// A VIP whose address went back to its pool by force (our finalizer removed by hand, the IPAddress deleted): the
/// steps that reserve it again, when a pool serving the Cluster (the candidates first, then any pool it sees) holds
/// it and nothing reserves it there; else why not.
pub(super) fn rereserve(snap: &Snapshot, role: Role, written: &str) -> Result<Vec<Step>, String> {
    let ip: std::net::IpAddr = written
        .trim()
        .parse()
        .map_err(|_| format!("{written:?} is not an IP address"))?;
    let held = &snap.inputs(role).same_ip;
    if let Some(other) = held.first() {
        return Err(format!(
            "IPAddress {}/{} already holds it",
            other.namespace, other.name
        ));
    }
    let class = snap
        .cluster
        .class
        .as_ref()
        .map(|c| c.name.as_str())
        .unwrap_or_default();
    let candidates =
        super::pools::candidates(&snap.pools, &snap.cluster.namespace, class, role.label());
    let pool = candidates
        .into_iter()
        .chain(snap.pools.iter())
        .find(|p| !p.deleting && p.addresses.as_ref().is_some_and(|a| a.contains(ip)))
        .ok_or_else(|| "no pool this Cluster sees holds it".to_owned())?;
    let claim = role.claim_name(&snap.cluster.name);
    let pool_ref = PoolRef {
        api_group: crate::names::IPAM_GROUP.to_owned(),
        kind: pool.kind.clone(),
        name: pool.name.clone(),
    };
    Ok(vec![
        Step::CreateAddress {
            role,
            address: NewAddress {
                name: claim.clone(),
                claim: claim.clone(),
                address: ip.to_string(),
                prefix: pool.prefix.unwrap_or(if ip.is_ipv4() { 32 } else { 128 }),
                gateway: pool.gateway.clone(),
                pool: pool_ref.clone(),
            },
        },
        Step::CreateClaim {
            role,
            name: claim,
            pool: pool_ref,
        },
    ])
}
