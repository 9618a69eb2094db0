//! The decision for one Cluster. See `docs/operator.md` for the rules in prose.

use serde_json::{json, Value};

use super::{
    labels::is_label_value,
    pools::{after_timeout, candidates, choose_pool_avoiding},
    Allocation, Plan, Report, Role, Severity, Skip, Snapshot, Step,
};
use crate::{
    api::{AddressView, ClaimView, PoolRef, PoolView},
    names::{
        reasons, ANNOTATION_DELETE_FOR_MOVE, ANNOTATION_INGRESS_ENABLED, ANNOTATION_INGRESS_VIP,
        FINALIZER_ADDRESS_PROTECTION,
    },
};

/// Decides what to do for the Cluster in `snap`.
pub fn plan(snap: &Snapshot) -> Plan {
    let mut out = Plan::default();
    let cluster = &snap.cluster;
    let skip = if cluster.deleting {
        Some(Skip::Deleting)
    } else if cluster.paused {
        Some(Skip::Paused)
    } else if cluster.class.is_none() {
        Some(Skip::NoTopology)
    } else if cluster.annotation(ANNOTATION_DELETE_FOR_MOVE).is_some()
        || Role::ALL
            .iter()
            .any(|r| snap.inputs(*r).claim.as_ref().is_some_and(|c| c.moving))
    {
        Some(Skip::MovingAway)
    } else {
        None
    };
    if skip.is_some() {
        out.skip = skip;
        return out;
    }
    if !snap.caches_synced {
        // Partial caches: our claim, its address or the class may simply not be listed yet, and deciding now
        // would take our own VIP for a manual endpoint or the class for a missing one.
        out.requeue_after = Some(super::SYNC_WAIT);
        return out;
    }
    out.collision = collision(snap);
    let Some(class_ref) = cluster.class.as_ref() else {
        return out;
    };
    let Some(class) = snap.class.as_ref() else {
        out.reports.push(Report {
            role: Role::ControlPlane,
            severity: Severity::Warning,
            reason: reasons::CLUSTER_CLASS_NOT_FOUND,
            note: format!(
                "ClusterClass {}/{} not found; waiting for it",
                class_ref.namespace, class_ref.name
            ),
            is_error: true,
        });
        return out;
    };

    control_plane(
        snap,
        &class_ref.name,
        class.declares(Role::ControlPlane.variable()),
        &mut out,
    );
    if cluster.annotation(ANNOTATION_INGRESS_ENABLED) != Some("false") {
        ingress(
            snap,
            &class_ref.name,
            class.declares(Role::Ingress.variable()),
            &mut out,
        );
    }
    in_use_elsewhere(snap, &mut out);
    for role in Role::ALL {
        let allocated = out
            .allocations
            .iter()
            .find(|a| a.role == role)
            .map(|a| a.vip.clone());
        let vip = allocated.or_else(|| super::holds::in_use(cluster, role).map(str::to_owned));
        super::holds::release_unused(snap, role, vip.as_deref(), &mut out);
    }
    out
}

/// A VIP about to be written for the first time that answered the probe: something the IPAM does not know uses
/// the address. It is not written (our claim keeps it reserved); looked at again after [`super::PROBE_RETRY`].
fn in_use_elsewhere(snap: &Snapshot, out: &mut Plan) {
    let answering: Vec<super::Allocation> = out
        .allocations
        .iter()
        .filter(|a| snap.answering.contains(&a.vip))
        .cloned()
        .collect();
    for a in answering {
        out.allocations.retain(|x| x.role != a.role);
        out.writes.remove(&a.role);
        out.finally
            .retain(|s| !matches!(s, Step::ProtectAddress { role, .. } if *role == a.role));
        out.reports.retain(|r| r.role != a.role);
        out.reports.push(Report {
            role: a.role,
            severity: Severity::Warning,
            reason: reasons::VIP_IN_USE,
            note: format!(
                "{} VIP {} answers on TCP already: a machine the IPAM provider does not know uses it; it is not \
                 written (IPAddressClaim {} keeps it reserved) and is probed again in {}s. Find the machine, or \
                 exclude the address from the pool and delete the claim",
                a.role.label(),
                a.vip,
                a.role.claim_name(&snap.cluster.name),
                super::PROBE_RETRY.as_secs()
            ),
            is_error: true,
        });
        out.requeue_after = Some(
            out.requeue_after
                .map_or(super::PROBE_RETRY, |d| d.min(super::PROBE_RETRY)),
        );
    }
}

/// Two Clusters with one control-plane host (ours or hand-set, any namespace): both answer for one address, which is
/// an outage of one of them. Told on each, naming the others.
fn collision(snap: &Snapshot) -> Option<Report> {
    let host = snap.cluster.endpoint.as_ref()?.host.as_deref()?;
    if snap.same_host.is_empty() {
        return None;
    }
    Some(Report {
        role: Role::ControlPlane,
        severity: Severity::Warning,
        reason: reasons::DUPLICATE_VIP,
        note: format!(
            "spec.controlPlaneEndpoint.host {host} is also the control-plane endpoint of Cluster {}: two clusters \
             answering for one address is an outage of one of them; give one of them another address",
            snap.same_host.join(", ")
        ),
        is_error: true,
    })
}

/// Who controls a claim, relative to the Cluster.
enum Ownership<'a> {
    Ours(&'a ClaimView),
    Ownerless(&'a ClaimView),
    Foreign(&'a ClaimView),
}

fn ownership<'a>(snap: &Snapshot, claim: &'a ClaimView) -> Ownership<'a> {
    match claim.controller() {
        Some(o) if o.uid == snap.cluster.uid => Ownership::Ours(claim),
        Some(_) => Ownership::Foreign(claim),
        None => Ownership::Ownerless(claim),
    }
}

/// The IPAddress the claim's `status.addressRef` names, if it is cached.
fn bound_address<'a>(snap: &'a Snapshot, role: Role, claim: &ClaimView) -> Option<&'a AddressView> {
    let address_name = claim.address_ref.as_ref()?;
    snap.inputs(role)
        .address
        .as_ref()
        .filter(|a| a.name == *address_name && a.namespace == claim.namespace)
}

/// Why `address` cannot be `claim`'s allocation although the claim names it: an IPAddress is trusted only when it
/// names the claim back (`spec.claimRef`) and comes from the pool the claim asked (`spec.poolRef`). Anyone allowed
/// to create IPAddresses could otherwise hand a Cluster any address.
fn untrusted(claim: &ClaimView, address: &AddressView) -> Option<String> {
    if address.claim_name.as_deref() != Some(claim.name.as_str()) {
        return Some(match &address.claim_name {
            Some(other) => format!("its spec.claimRef names {other:?}, not this claim"),
            None => "it has no spec.claimRef".to_owned(),
        });
    }
    match (&address.pool_ref, &claim.pool_ref) {
        (Some(a), Some(c)) if a.same_pool(c) => None,
        (Some(a), Some(c)) => Some(format!(
            "its spec.poolRef is {} {}, but the claim asked {} {}",
            a.kind, a.name, c.kind, c.name
        )),
        (None, _) => Some("it has no spec.poolRef".to_owned()),
        (Some(_), None) => Some("the claim has no spec.poolRef to check it against".to_owned()),
    }
}

/// The address our claim holds, if the IPAM provider answered with an IPAddress we can trust.
fn vip_of(snap: &Snapshot, role: Role, claim: &ClaimView) -> Option<String> {
    bound_address(snap, role, claim)
        .filter(|a| untrusted(claim, a).is_none())
        .map(|a| a.address.to_string())
}

/// Whether `written` (a host or annotation value) is the address `vip`, in any textual form of it.
pub(super) fn same_address(vip: &str, written: &str) -> bool {
    vip == written
        || match (
            vip.parse::<std::net::IpAddr>(),
            written.trim().parse::<std::net::IpAddr>(),
        ) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
}

/// Our live claim is bound (`status.addressRef` set) but the IPAddress it names is not cached (nor known to be
/// malformed): its address is unknown for now, not absent.
fn address_on_its_way(snap: &Snapshot, role: Role, our_claim: Option<&ClaimView>) -> bool {
    let inputs = snap.inputs(role);
    our_claim.is_some_and(|c| {
        !c.deleting
            && c.address_ref.is_some()
            && inputs.address_problem.is_none()
            && bound_address(snap, role, c).is_none()
    })
}

fn is_empty_value(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        _ => false,
    }
}

/// The value of our provenance annotation for a VIP: `<claim>/<address>`.
fn provenance(claim: &str, vip: &str) -> String {
    format!("{claim}/{vip}")
}

/// Records where our VIP of `role` came from, when the Cluster does not say so already (one more key in the same
/// write as the VIP, or a one-time write for a VIP allocated before the annotation existed), and keeps its address
/// reserved for as long as the Cluster uses it (our finalizer on the IPAddress).
fn record_provenance(snap: &Snapshot, role: Role, vip: &str, out: &mut Plan) {
    let address = snap
        .inputs(role)
        .claim
        .as_ref()
        .and_then(|c| bound_address(snap, role, c));
    super::holds::protect(snap, role, address, out);
    let value = provenance(&role.claim_name(&snap.cluster.name), vip);
    if snap.cluster.annotation(role.provenance_annotation()) != Some(value.as_str()) {
        out.changes_mut(role)
            .annotations
            .push((role.provenance_annotation().to_owned(), value));
    }
}

/// What a VIP already written on the Cluster (`written`: the host, or the ingress annotation) is, when it is not
/// our bound claim's address.
enum Written<'a> {
    /// Our claim lost its status (`clusterctl move`, a restore) while its IPAddress, named like it, still carries
    /// `written`: the IPAM provider binds them again. Deleting the "pending" claim would free a running VIP.
    Rebinding(&'a ClaimView),
    /// We allocated `written` (our provenance annotation says so), but its claim is gone or now holds another
    /// address: the IPAM provider may give `written` to another Cluster.
    Released(String),
    /// Our finalizer still keeps `written` reserved although its claim was deleted: the claim is recreated on it
    /// (or, while the provider has yet to delete the old IPAddress, nothing is done yet).
    Restore(Vec<Step>, Option<Report>),
    /// Set by someone else.
    Manual,
}

fn judge_written<'a>(snap: &'a Snapshot, role: Role, written: &str) -> Written<'a> {
    let inputs = snap.inputs(role);
    let claim_name = role.claim_name(&snap.cluster.name);
    if let Some(c) = inputs.claim.as_ref().filter(|c| {
        !c.deleting
            && c.address_ref.is_none()
            && !matches!(ownership(snap, c), Ownership::Foreign(_))
    }) {
        let answered = inputs.address.as_ref().is_some_and(|a| {
            !a.deleting
                && a.name == c.name
                && a.namespace == c.namespace
                && untrusted(c, a).is_none()
                && same_address(&a.address.to_string(), written)
        });
        if answered {
            return Written::Rebinding(c);
        }
    }
    if let Some((steps, report)) = super::holds::restore(snap, role, written) {
        return Written::Restore(steps, report);
    }
    let recorded = snap
        .cluster
        .annotation(role.provenance_annotation())
        .and_then(|v| v.rsplit_once('/'))
        .is_some_and(|(claim, vip)| claim == claim_name && same_address(vip, written));
    if !recorded {
        return Written::Manual;
    }
    match inputs.claim.as_ref() {
        None => {
            let lost = format!(
                "IPAddressClaim {claim_name}, which holds {written} for this Cluster, was deleted and its IPAddress \
                 released by force (finalizer {FINALIZER_ADDRESS_PROTECTION} removed)"
            );
            match super::holds::rereserve(snap, role, written) {
                Ok(steps) => Written::Restore(
                    steps,
                    Some(released_report(
                        role,
                        format!("{lost}; {written} was still free in its pool and is reserved again for this Cluster"),
                    )),
                ),
                Err(why) => Written::Released(format!(
                    "{lost}; it cannot be reserved again ({why}): the IPAM provider may give {written} to another \
                     Cluster. Keep the claims of running Clusters"
                )),
            }
        }
        // Being deleted, pending or waiting for its IPAddress: nothing is decided about the address yet.
        Some(c) => match vip_of(snap, role, c).filter(|_| !c.deleting) {
            Some(other) => Written::Released(format!(
                "IPAddressClaim {claim_name} now holds {other} but this Cluster still uses {written}, which went \
                 back to the pool and may be given to another Cluster"
            )),
            None => Written::Rebinding(c),
        },
    }
}

/// A moved or restored claim of ours: adopted if it lost its owner, never deleted, nothing reported.
fn wait_for_rebinding(snap: &Snapshot, claim: &ClaimView, role: Role, out: &mut Plan) {
    if matches!(ownership(snap, claim), Ownership::Ownerless(_)) && !claim.deleting {
        out.steps.push(Step::AdoptClaim {
            role,
            name: claim.name.clone(),
        });
    }
}

fn restored(steps: Vec<Step>, report: Option<Report>, out: &mut Plan) {
    out.steps.extend(steps);
    out.reports.extend(report);
}

fn released_report(role: Role, note: String) -> Report {
    Report {
        role,
        severity: Severity::Warning,
        reason: reasons::VIP_RELEASED,
        note,
        is_error: true,
    }
}

fn released(role: Role, note: String, out: &mut Plan) {
    out.reports.push(released_report(role, note));
}

/// A VIP set by hand (or by another controller): our pending claim is withdrawn so no address is burned, a bound one
/// is kept and named (its address may still be in use somewhere; the user decides), and a Normal `ManualEndpoint`
/// says so.
fn manual(
    snap: &Snapshot,
    role: Role,
    written: &str,
    mut note: String,
    our_claim: Option<&ClaimView>,
    our_vip: Option<&str>,
    out: &mut Plan,
) {
    match our_claim.filter(|c| !c.deleting) {
        Some(c) if c.address_ref.is_none() => out.steps.push(Step::DeleteClaim {
            role,
            name: c.name.clone(),
            uid: c.uid.clone(),
        }),
        Some(c) => note.push_str(&format!(
            "; IPAddressClaim {} keeps {}: delete it to release the address",
            c.name,
            our_vip.unwrap_or("its address")
        )),
        None => {}
    }
    let unreserved = super::holds::unreserved_in(snap, role, written);
    if !unreserved.is_empty() {
        let pools: Vec<String> = unreserved
            .iter()
            .map(|p| super::holds::pool_label(p))
            .collect();
        out.reports.push(Report {
            role,
            severity: Severity::Warning,
            reason: reasons::ENDPOINT_NOT_RESERVED,
            note: format!(
                "{note}; {written} lies in the range of pool {} but no IPAddress reserves it there: the IPAM \
                 provider may hand it to another Cluster. Add it to the pool's spec.excludedAddresses, or use an \
                 address outside every pool",
                pools.join(", ")
            ),
            is_error: true,
        });
        return;
    }
    out.reports.push(Report {
        role,
        severity: Severity::Normal,
        reason: reasons::MANUAL_ENDPOINT,
        note,
        is_error: false,
    });
}

fn control_plane(snap: &Snapshot, class: &str, declares_var: bool, out: &mut Plan) {
    let role = Role::ControlPlane;
    let cluster = &snap.cluster;
    let host = cluster.endpoint.as_ref().and_then(|e| e.host.clone());
    let port_unset = cluster.endpoint.as_ref().and_then(|e| e.port).unwrap_or(0) == 0;
    let claim = snap.inputs(role).claim.as_ref();
    let our_claim = claim.filter(|c| matches!(ownership(snap, c), Ownership::Ours(_)));
    let our_vip = our_claim.and_then(|c| vip_of(snap, role, c));

    if let Some(host) = host {
        let var = cluster.variable(role.variable());
        if let Some(vip) = our_vip.as_deref().filter(|v| same_address(v, &host)) {
            // Our VIP is in place: keep the port, variable and provenance in line (a retry of a half-done write).
            record_provenance(snap, role, vip, out);
            super::requested::changed_after_allocation(snap, role, vip, out);
            if port_unset {
                out.changes_mut(role).endpoint_port = Some(snap.default_port);
            }
            if declares_var && var.and_then(Value::as_str) != Some(host.as_str()) {
                out.changes_mut(role)
                    .variables
                    .push((role.variable().to_owned(), json!(host)));
            }
            return;
        }
        if address_on_its_way(snap, role, our_claim) {
            // Our claim is bound but its IPAddress is not cached yet: the host may well be our own VIP. The
            // address watch brings it; deciding now would report our own allocation as a manual endpoint.
            return;
        }
        match judge_written(snap, role, &host) {
            Written::Rebinding(c) => return wait_for_rebinding(snap, c, role, out),
            Written::Released(note) => return released(role, note, out),
            Written::Restore(steps, report) => return restored(steps, report, out),
            Written::Manual => {}
        }
        // Manual endpoint: no claim, mirror the host into an empty (or our stale) variable.
        let stale_ours = our_vip.is_some() && var.and_then(Value::as_str) == our_vip.as_deref();
        if declares_var && (is_empty_value(var) || stale_ours) {
            out.changes_mut(role)
                .variables
                .push((role.variable().to_owned(), json!(host)));
        }
        manual(
            snap,
            role,
            &host,
            format!("spec.controlPlaneEndpoint.host is already {host}; no VIP is claimed"),
            our_claim,
            our_vip.as_deref(),
            out,
        );
        return;
    }

    let Some(vip) = claimed_vip(snap, role, class, true, out) else {
        return;
    };
    out.changes_mut(role).endpoint_host = Some(vip.0.clone());
    record_provenance(snap, role, &vip.0, out);
    if port_unset {
        out.changes_mut(role).endpoint_port = Some(snap.default_port);
    }
    if declares_var
        && cluster.variable(role.variable()).and_then(Value::as_str) != Some(vip.0.as_str())
    {
        out.changes_mut(role)
            .variables
            .push((role.variable().to_owned(), json!(vip.0)));
    }
    out.allocations.push(Allocation {
        role,
        vip: vip.0,
        claim_created: vip.1,
    });
}

fn ingress(snap: &Snapshot, class: &str, declares_var: bool, out: &mut Plan) {
    let role = Role::Ingress;
    let cluster = &snap.cluster;
    let current = cluster
        .annotation(ANNOTATION_INGRESS_VIP)
        .filter(|v| !v.is_empty())
        .map(str::to_owned);
    let claim = snap.inputs(role).claim.as_ref();
    let our_claim = claim.filter(|c| matches!(ownership(snap, c), Ownership::Ours(_)));
    let our_vip = our_claim.and_then(|c| vip_of(snap, role, c));
    let var = cluster.variable(role.variable());

    if let Some(current) = current {
        if address_on_its_way(snap, role, our_claim) {
            return; // as for the control plane: wait for our claim's address before judging the annotation
        }
        if !our_vip
            .as_deref()
            .is_some_and(|v| same_address(v, &current))
        {
            match judge_written(snap, role, &current) {
                Written::Rebinding(c) => return wait_for_rebinding(snap, c, role, out),
                Written::Released(note) => return released(role, note, out),
                Written::Restore(steps, report) => return restored(steps, report, out),
                Written::Manual => {}
            }
            // Set by someone else: respect it, never claim.
            if declares_var && is_empty_value(var) {
                out.changes_mut(role)
                    .variables
                    .push((role.variable().to_owned(), json!(current)));
            }
            manual(
                snap,
                role,
                &current,
                format!(
                    "annotation {ANNOTATION_INGRESS_VIP} is already {current}; no {} VIP is claimed",
                    role.label()
                ),
                our_claim,
                our_vip.as_deref(),
                out,
            );
            return;
        }
        // Ours and written: finish a half-done write (label, variable, provenance).
        record_provenance(snap, role, &current, out);
        super::requested::changed_after_allocation(snap, role, &current, out);
        if is_label_value(&current)
            && cluster.label(ANNOTATION_INGRESS_VIP) != Some(current.as_str())
        {
            out.changes_mut(role)
                .labels
                .push((ANNOTATION_INGRESS_VIP.to_owned(), current.clone()));
        }
        if declares_var && var.and_then(Value::as_str) != Some(current.as_str()) {
            out.changes_mut(role)
                .variables
                .push((role.variable().to_owned(), json!(current)));
        }
        return;
    }

    let Some((vip, created)) = claimed_vip(snap, role, class, false, out) else {
        return;
    };
    out.changes_mut(role)
        .annotations
        .push((ANNOTATION_INGRESS_VIP.to_owned(), vip.clone()));
    record_provenance(snap, role, &vip, out);
    // A label value cannot hold ':' (IPv6): the label is only a compatibility copy, so skip it then.
    if is_label_value(&vip) {
        out.changes_mut(role)
            .labels
            .push((ANNOTATION_INGRESS_VIP.to_owned(), vip.clone()));
    }
    if declares_var && var.and_then(Value::as_str) != Some(vip.as_str()) {
        out.changes_mut(role)
            .variables
            .push((role.variable().to_owned(), json!(vip)));
    }
    out.allocations.push(Allocation {
        role,
        vip,
        claim_created: created,
    });
}

/// Drives the claim of `role` and returns its address once the IPAM provider answered.
/// `required`: a missing pool is a Warning and an error (control plane) or a Normal note (ingress).
fn claimed_vip(
    snap: &Snapshot,
    role: Role,
    class: &str,
    required: bool,
    out: &mut Plan,
) -> Option<(String, Option<jiff::Timestamp>)> {
    let name = role.claim_name(&snap.cluster.name);
    let candidates = candidates(&snap.pools, &snap.cluster.namespace, class, role.label());
    let passed_over = snap.pending_claims.passed_over(role);
    let choice = choose_pool_avoiding(
        &snap.pools,
        &snap.cluster.namespace,
        class,
        role.label(),
        &passed_over,
    );
    let claim = match snap.inputs(role).claim.as_ref().map(|c| ownership(snap, c)) {
        None => {
            if super::requested::first_claim(snap, role, &candidates, out) {
                return None;
            }
            match choice {
                Some(pool) => out.steps.push(Step::CreateClaim {
                    role,
                    name,
                    pool: pool_ref(pool),
                }),
                None => out.reports.push(pool_not_found(role, class, required)),
            }
            return None;
        }
        Some(Ownership::Foreign(c)) => {
            let owner = c
                .controller()
                .map(|o| format!("{} {} (uid {})", o.kind, o.name, o.uid))
                .unwrap_or_default();
            out.reports.push(Report {
                role,
                severity: Severity::Warning,
                reason: reasons::CLAIM_CONFLICT,
                note: format!("IPAddressClaim {}/{} is controlled by {owner}, not by this Cluster; it is not used", c.namespace, c.name),
                is_error: true,
            });
            return None;
        }
        Some(Ownership::Ownerless(c)) => {
            out.steps.push(Step::AdoptClaim {
                role,
                name: c.name.clone(),
            });
            c
        }
        Some(Ownership::Ours(c)) => c,
    };
    if claim.deleting {
        return None;
    }
    if let Some(vip) = vip_of(snap, role, claim) {
        return Some((vip, claim.created));
    }
    if let Some(ref_name) = &claim.address_ref {
        let problem = snap
            .inputs(role)
            .address_problem
            .clone()
            .or_else(|| bound_address(snap, role, claim).and_then(|a| untrusted(claim, a)));
        if let Some(problem) = &problem {
            out.reports.push(Report {
                role,
                severity: Severity::Warning,
                reason: reasons::ADDRESS_INVALID,
                note: format!(
                    "IPAddress {ref_name} answering IPAddressClaim {} is unusable ({problem}); delete \
                     IPAddressClaim {} (the operator creates it again) so the IPAM provider allocates anew",
                    claim.name, claim.name
                ),
                is_error: true,
            });
        }
        return None; // bound; the IPAddress is on its way through the watch
    }
    // Pending: the spec is immutable, so a claim on a pool that no longer fits is replaced (no IP is held yet).
    let current = claim
        .pool_ref
        .as_ref()
        .and_then(|r| find_pool(&snap.pools, r, &claim.namespace));
    let fits = current.is_some_and(|p| candidates.iter().any(|c| std::ptr::eq(*c, p)));
    let better = choice.filter(|c| !current.is_some_and(|p| std::ptr::eq(*c, p)));
    // A claim made for an address the Cluster asked for stays where that address is.
    let asked = super::requested::asked(snap, role).is_some();
    let mut replace = !asked
        && match (fits, current, better) {
            (false, _, Some(_)) => true,
            (true, Some(p), Some(b)) => p.exhausted() && !b.exhausted(),
            _ => false,
        };
    let mut to = better.map(|b| b.name.clone()).unwrap_or_default();
    let mut timed_out = None;
    // A pool of unknown capacity (a `--pool-kinds` kind) never says it is exhausted: a claim it has not answered
    // within the timeout moves on to the next candidate, and the pool is remembered as passed over.
    if let Some(p) = current.filter(|p| !asked && !replace && fits && p.capacity_unknown()) {
        let answered = snap
            .inputs(role)
            .address
            .as_ref()
            .is_some_and(|a| a.claim_name.as_deref() == Some(claim.name.as_str()));
        // `creationTimestamp` is truncated to the second: count from the latest instant it may stand for.
        let age = claim
            .created
            .map(|c| {
                let age = snap.now.duration_since(c).unsigned_abs();
                match c.subsec_nanosecond() {
                    0 => age.saturating_sub(std::time::Duration::from_secs(1)),
                    _ => age,
                }
            })
            .unwrap_or(snap.pending_claims.timeout);
        let timeout = snap.pending_claims.timeout;
        match after_timeout(&candidates, p, &passed_over, age, timeout).filter(|_| !answered) {
            Some(Ok(next)) => {
                replace = true;
                to = next.name.clone();
                timed_out = Some(p);
            }
            Some(Err(remaining)) => {
                out.requeue_after = Some(out.requeue_after.map_or(remaining, |r| r.min(remaining)));
            }
            None => {}
        }
    }
    if replace {
        if let Some(p) = timed_out {
            out.steps.push(Step::PassOverPool {
                role,
                pool: p.reference(),
            });
        }
        out.steps.push(Step::DeleteClaim {
            role,
            name: claim.name.clone(),
            uid: claim.uid.clone(),
        });
        let why = match timed_out {
            Some(p) => format!(
                " (pool {} did not answer it within {:?})",
                p.name, snap.pending_claims.timeout
            ),
            None => String::new(),
        };
        out.reports.push(Report {
            role,
            severity: Severity::Normal,
            reason: reasons::CLAIM_REPLACED,
            note: format!(
                "pending IPAddressClaim {} is recreated on pool {to}{why}",
                claim.name
            ),
            is_error: false,
        });
    } else if !fits && choice.is_none() {
        out.reports.push(pool_not_found(role, class, required));
    } else if let Some(p) = current.filter(|p| p.exhausted()) {
        let answered = snap
            .inputs(role)
            .address
            .as_ref()
            .is_some_and(|a| a.claim_name.as_deref() == Some(claim.name.as_str()));
        if answered {
            return None; // the address exists; `addressRef` follows
        }
        let age = claim
            .created
            .map(|c| snap.now.duration_since(c).unsigned_abs())
            .unwrap_or(super::EXHAUSTION_GRACE);
        if age < super::EXHAUSTION_GRACE {
            out.requeue_after = Some(super::EXHAUSTION_GRACE - age);
            return None;
        }
        out.reports.push(Report {
            role,
            severity: Severity::Warning,
            reason: reasons::POOL_EXHAUSTED,
            note: if candidates.len() > 1 {
                format!(
                    "every candidate pool is exhausted (tried, in order: {}); IPAddressClaim {} waits on pool {}",
                    pool_names(&candidates),
                    claim.name,
                    p.name
                )
            } else {
                format!(
                    "pool {} has no free address; IPAddressClaim {} is waiting",
                    p.name, claim.name
                )
            },
            is_error: true,
        });
    }
    None
}

/// The pool `r` names for a claim in `namespace` (group, kind, name; a namespaced kind in the claim's namespace).
fn find_pool<'a>(pools: &'a [PoolView], r: &PoolRef, namespace: &str) -> Option<&'a PoolView> {
    pools.iter().find(|p| p.is_referenced_by(r, namespace))
}

/// `a, b and c` for Event notes (pools as `namespace/name` when namespaced).
fn pool_names(pools: &[&PoolView]) -> String {
    let names: Vec<String> = pools
        .iter()
        .map(|p| match &p.namespace {
            Some(ns) => format!("{ns}/{}", p.name),
            None => p.name.clone(),
        })
        .collect();
    names.join(", ")
}

fn pool_ref(pool: &PoolView) -> PoolRef {
    pool.reference()
}

fn pool_not_found(role: Role, class: &str, required: bool) -> Report {
    let what = format!(
        "no pool has labels vip.capi.gorizond.io/cluster-class listing {class:?} and vip.capi.gorizond.io/role listing {:?}",
        role.label()
    );
    Report {
        role,
        severity: if required {
            Severity::Warning
        } else {
            Severity::Normal
        },
        reason: reasons::POOL_NOT_FOUND,
        note: if required {
            what
        } else {
            format!("{what}; no ingress VIP is allocated")
        },
        is_error: required,
    }
}
