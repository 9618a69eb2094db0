//! Carrying out a plan: claims, the Cluster patch, Events and metrics.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions};
use serde_json::{json, Value};

use super::{
    error::{Error, Request},
    events::Notice,
    memory::Slot,
    Context,
};
use crate::{
    api::{ClusterView, PoolRef},
    names::{
        reasons, CONTROLLER_NAME, FINALIZER_ADDRESS_PROTECTION, LABEL_CAPI_CLUSTER_NAME, LABEL_ROLE,
    },
    plan::{build_json_patch, Allocation, NewAddress, Plan, Report, Role, Severity, Step},
};

/// What was done, for logs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Claims created, adopted or deleted.
    pub claim_writes: usize,
    /// Whether the Cluster was patched.
    pub patched: bool,
    /// A claim we just created is not in the cache yet; its watch event will bring us back.
    pub waiting_for_cache: bool,
}

/// How long a claim we created may be missing from the cache before we create it again.
const CLAIM_CACHE_LAG: std::time::Duration = std::time::Duration::from_secs(5);

/// Executes `plan` for `cluster`. Claim steps first; the Cluster writes only if they all succeeded, one JSON patch
/// per role in role order, each built against the Cluster as the previous one left it. A role whose write is
/// refused does not hold back the others; the first refusal is returned once every write was tried.
pub async fn act(
    ctx: &Context,
    cluster: &ClusterView,
    class: &str,
    plan: &Plan,
) -> Result<Outcome, Error> {
    let mut outcome = Outcome::default();
    run_steps(ctx, cluster, &plan.steps, &mut outcome).await?;

    let clusters: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &cluster.namespace, &ctx.shapes.cluster);
    let subject = format!("{}/{}", cluster.namespace, cluster.name);
    let mut current = std::borrow::Cow::Borrowed(cluster);
    // The versions our writes replaced: the cache showing any of them has not seen our writes yet.
    let mut replaced: Vec<String> = Vec::new();
    let mut refused: Option<Error> = None;
    for (role, changes) in &plan.writes {
        let ops = build_json_patch(&current, changes);
        if ops.is_empty() {
            continue;
        }
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops))
            .map_err(|e| Error::Stale(format!("building patch: {e}")))?;
        let written = match clusters
            .patch(&cluster.name, &patch_params(), &Patch::<()>::Json(patch))
            .await
        {
            Ok(obj) => obj,
            Err(e) => match Error::from_kube(Request::ClusterPatch(*role), subject.clone(), e) {
                e @ Error::PatchRejected { .. } => {
                    tracing::warn!(role = role.label(), error = %e, "Cluster write refused");
                    refused.get_or_insert(e);
                    continue;
                }
                e => {
                    ctx.memory.patched_from(&cluster.uid, replaced);
                    return Err(e);
                }
            },
        };
        outcome.patched = true;
        let written = match ClusterView::parse(&written) {
            Ok(view) => view,
            Err(e) => {
                // Only the next reconcile can build a further write safely; it comes with our write's watch event.
                tracing::debug!(error = %e, "cannot read the patched Cluster back");
                break;
            }
        };
        // A patch the server found to change nothing keeps the resourceVersion: no event of ours is to come.
        if written.resource_version != current.resource_version {
            replaced.push(current.resource_version.clone());
        }
        current = std::borrow::Cow::Owned(written);
        for a in plan.allocations.iter().filter(|a| a.role == *role) {
            allocated(ctx, cluster, class, plan, a);
        }
    }
    ctx.memory.patched_from(&cluster.uid, replaced);
    if let Some(e) = refused {
        return Err(e);
    }
    run_steps(ctx, cluster, &plan.finally, &mut outcome).await?;
    Ok(outcome)
}

/// Carries out claim and address steps in order; the first failure stops them.
async fn run_steps(
    ctx: &Context,
    cluster: &ClusterView,
    steps: &[Step],
    outcome: &mut Outcome,
) -> Result<(), Error> {
    let claims: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &cluster.namespace, &ctx.shapes.claim);
    for step in steps {
        match step {
            Step::CreateClaim { role, name, pool } => {
                let recent = ctx
                    .memory
                    .claim_created_at(&cluster.uid, *role)
                    .is_some_and(|t| {
                        ctx.clock.now().duration_since(t).unsigned_abs() < CLAIM_CACHE_LAG
                    });
                if recent {
                    // Created a moment ago and not cached yet: creating again would only hit AlreadyExists.
                    outcome.waiting_for_cache = true;
                    continue;
                }
                let body = claim_body(ctx, cluster, *role, name, pool);
                let obj: DynamicObject = serde_json::from_value(body)
                    .map_err(|e| Error::Stale(format!("building claim {name}: {e}")))?;
                claims
                    .create(&params(), &obj)
                    .await
                    .map_err(|e| claim_error(*role, "create", cluster, name, e))?;
                ctx.memory
                    .claim_created(&cluster.uid, *role, ctx.clock.now());
                tracing::info!(claim = %name, pool = %pool.name, role = role.label(), "created IPAddressClaim");
            }
            Step::AdoptClaim { role, name } => {
                let patch = adopt_patch(ctx, cluster, *role, name)?;
                claims
                    .patch(name, &patch_params(), &Patch::Merge(&patch))
                    .await
                    .map_err(|e| claim_error(*role, "adopt", cluster, name, e))?;
                tracing::info!(claim = %name, role = role.label(), "adopted ownerless IPAddressClaim");
            }
            Step::DeleteClaim { role, name, uid } => {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                ctx.memory.claim_gone(&cluster.uid, *role);
                match claims.delete(name, &dp).await {
                    Ok(_) => {
                        tracing::info!(claim = %name, role = role.label(), "deleted IPAddressClaim")
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(claim_error(*role, "delete", cluster, name, e)),
                }
            }
            Step::CreateAddress { role, address } => {
                let obj: DynamicObject = serde_json::from_value(address_body(
                    ctx, cluster, *role, address,
                ))
                .map_err(|e| Error::Stale(format!("building IPAddress {}: {e}", address.name)))?;
                addresses(ctx, cluster)
                    .create(&params(), &obj)
                    .await
                    .map_err(|e| address_error(*role, "create", cluster, &address.name, e))?;
                tracing::info!(address = %address.name, ip = %address.address, pool = %address.pool.name,
                    role = role.label(), "created IPAddress to keep the VIP reserved");
            }
            Step::PassOverPool { role, pool } => {
                ctx.memory.pass_over(&cluster.uid, *role, pool);
                tracing::info!(pool = %pool.name, kind = %pool.kind, role = role.label(),
                    "pool passed over: it did not answer the claim within --pending-claim-timeout");
                continue;
            }
            Step::ProtectAddress { role, name } => {
                let Some((patch, version)) = protect_patch(ctx, cluster, name)? else {
                    continue; // our patch has not reached the cache yet; its watch event brings us back
                };
                addresses(ctx, cluster)
                    .patch(name, &patch_params(), &Patch::<()>::Json(patch))
                    .await
                    .map_err(|e| address_error(*role, "protect", cluster, name, e))?;
                ctx.memory.protected_from(&cluster.uid, name, version);
                tracing::debug!(address = %name, role = role.label(), "IPAddress protected");
            }
            Step::ReleaseAddress { role, name, delete } => {
                release_address(ctx, &cluster.namespace, *role, name, *delete).await?;
            }
        }
        outcome.claim_writes += 1;
    }
    Ok(())
}

fn params() -> PostParams {
    PostParams {
        field_manager: Some(CONTROLLER_NAME.into()),
        ..Default::default()
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(CONTROLLER_NAME.into()),
        ..Default::default()
    }
}

fn addresses(ctx: &Context, cluster: &ClusterView) -> Api<DynamicObject> {
    Api::namespaced_with(ctx.client.clone(), &cluster.namespace, &ctx.shapes.address)
}

fn address_error(
    role: Role,
    action: &'static str,
    cluster: &ClusterView,
    name: &str,
    e: kube::Error,
) -> Error {
    address_error_in(role, action, &cluster.namespace, name, e)
}

fn address_error_in(
    role: Role,
    action: &'static str,
    namespace: &str,
    name: &str,
    e: kube::Error,
) -> Error {
    Error::from_kube(
        Request::Address(role, action),
        format!("{namespace}/{name}"),
        e,
    )
}

/// Lets go of an IPAddress: deletes it first when asked (uid precondition; it then stays until our finalizer is
/// gone, so a failure in between leaves it terminating and still ours, to be released on the next pass), then
/// removes our finalizer with a JSON patch whose `test` guards the entry it removes. Gone already is fine.
pub async fn release_address(
    ctx: &Context,
    namespace: &str,
    role: Role,
    name: &str,
    delete: bool,
) -> Result<(), Error> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), namespace, &ctx.shapes.address);
    let Some(cached) = ctx
        .stores
        .addresses
        .get(namespace, name)
        .and_then(|e| e.as_ref().as_ref().ok().cloned())
    else {
        return Ok(()); // gone from the cache: nothing of ours to release
    };
    if delete {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(cached.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(e) => return Err(address_error_in(role, "delete", namespace, name, e)),
        }
    }
    let Some(index) = cached
        .finalizers
        .iter()
        .position(|f| f == FINALIZER_ADDRESS_PROTECTION)
    else {
        return Ok(());
    };
    let path = format!("/metadata/finalizers/{index}");
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": path, "value": FINALIZER_ADDRESS_PROTECTION},
        {"op": "remove", "path": path},
    ]))
    .map_err(|e| Error::Stale(format!("building patch: {e}")))?;
    match api
        .patch(name, &patch_params(), &Patch::<()>::Json(patch))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(address_error_in(role, "release", namespace, name, e)),
    }
    tracing::info!(address = %name, %namespace, deleted = delete, role = role.label(), "IPAddress released");
    Ok(())
}

fn claim_error(
    role: Role,
    action: &'static str,
    cluster: &ClusterView,
    name: &str,
    e: kube::Error,
) -> Error {
    Error::from_kube(
        Request::Claim(role, action),
        format!("{}/{name}", cluster.namespace),
        e,
    )
}

/// Records a VIP written to the Cluster: the metric, the state, the Event.
fn allocated(ctx: &Context, cluster: &ClusterView, class: &str, plan: &Plan, a: &Allocation) {
    // Our own record is sub-second; creationTimestamp (whole seconds) covers claims made before a restart.
    let created = ctx
        .memory
        .take_claim_created(&cluster.uid, a.role)
        .or(a.claim_created);
    let seconds = created.map(|t| ctx.clock.now().duration_since(t).as_secs_f64());
    ctx.metrics.allocated(a.role.label(), class, seconds);
    ctx.memory.transition(
        &cluster.uid,
        Slot::Role(a.role),
        Some(a.role.allocated_reason()),
    );
    let mut note = format!("{} VIP {} allocated", a.role.label(), a.vip);
    if a.role == Role::ControlPlane && no_ingress_pool(plan).is_some() {
        // Told here instead of in an Event of its own: one Event per VIP.
        note.push_str(&format!(
            "; no ingress pool for class {class}, so no ingress VIP"
        ));
        ctx.memory.transition(
            &cluster.uid,
            Slot::Role(Role::Ingress),
            Some(reasons::POOL_NOT_FOUND),
        );
    }
    publish(
        ctx,
        cluster,
        Severity::Normal,
        a.role.allocated_reason(),
        note,
    );
    tracing::info!(role = a.role.label(), vip = %a.vip, seconds, "VIP written to Cluster");
}

/// Publishes the plan's reports that are a change of state; counts the errors among them.
pub async fn report(ctx: &Context, cluster: &ClusterView, class: &str, plan: &Plan) {
    let collision = plan.collision.as_ref();
    if ctx
        .memory
        .transition(&cluster.uid, Slot::Collision, collision.map(|r| r.reason))
    {
        if let Some(r) = collision {
            ctx.metrics.error(r.role.label(), class, r.reason);
            tracing::warn!(reason = r.reason, "{}", r.note);
            publish(ctx, cluster, r.severity, r.reason, r.note.clone());
        }
    }
    let allocated: Vec<Role> = plan.allocations.iter().map(|a| a.role).collect();
    for role in Role::ALL {
        if allocated.contains(&role) {
            continue; // the allocation itself is the new state
        }
        let report: Option<&Report> = plan.reports.iter().find(|r| r.role == role);
        if role == Role::Ingress && report.is_some() && report == no_ingress_pool(plan) {
            match control_plane_state(cluster, plan) {
                ControlPlaneState::Underway => {
                    // The control-plane allocation will carry this note (see `act`); nothing recorded yet.
                    tracing::debug!(
                        role = role.label(),
                        "no ingress pool; told with the control-plane VIP"
                    );
                    continue;
                }
                ControlPlaneState::InPlace => {
                    // The VIPs were written before (e.g. by a previous process): a log line, not a new Event.
                    if ctx.memory.transition(
                        &cluster.uid,
                        Slot::Role(role),
                        report.map(|r| r.reason),
                    ) {
                        tracing::debug!(
                            role = role.label(),
                            reason = reasons::POOL_NOT_FOUND,
                            "no ingress pool; no ingress VIP"
                        );
                    }
                    continue;
                }
                ControlPlaneState::Other => {}
            }
        }
        if ctx
            .memory
            .transition(&cluster.uid, Slot::Role(role), report.map(|r| r.reason))
        {
            if let Some(r) = report {
                if r.is_error {
                    ctx.metrics.error(role.label(), class, r.reason);
                }
                match r.severity {
                    Severity::Warning => {
                        tracing::warn!(role = role.label(), reason = r.reason, "{}", r.note)
                    }
                    Severity::Normal => {
                        tracing::debug!(role = role.label(), reason = r.reason, "{}", r.note)
                    }
                }
                publish(ctx, cluster, r.severity, r.reason, r.note.clone());
            }
        }
    }
}

/// The ingress role's Normal `PoolNotFound` (optional ingress without a pool), if the plan has it.
fn no_ingress_pool(plan: &Plan) -> Option<&Report> {
    plan.reports.iter().find(|r| {
        r.role == Role::Ingress
            && r.severity == Severity::Normal
            && r.reason == reasons::POOL_NOT_FOUND
    })
}

/// Where the control-plane VIP stands, for deciding how the missing ingress pool is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ControlPlaneState {
    /// No host yet and no problem reported: its allocation will come and carry the note.
    Underway,
    /// A host is set and the control plane has nothing to report: our VIP was written earlier.
    InPlace,
    /// Anything else (a manual endpoint, a control-plane problem): the ingress state is told on its own.
    Other,
}

fn control_plane_state(cluster: &ClusterView, plan: &Plan) -> ControlPlaneState {
    let host = cluster.endpoint.as_ref().and_then(|e| e.host.as_deref());
    let report = plan.reports.iter().find(|r| r.role == Role::ControlPlane);
    match (host, report) {
        (None, None) => ControlPlaneState::Underway,
        (None, Some(r)) if r.severity == Severity::Normal => ControlPlaneState::Underway,
        (Some(_), None) => ControlPlaneState::InPlace,
        _ => ControlPlaneState::Other,
    }
}

/// Publishes one Event on the Cluster in the background; failures are logged, never fatal.
pub fn publish(
    ctx: &Context,
    cluster: &ClusterView,
    severity: Severity,
    reason: &'static str,
    note: String,
) {
    let notice = Notice {
        regarding: ObjectReference {
            api_version: Some(ctx.shapes.cluster.api_version.clone()),
            kind: Some(ctx.shapes.cluster.kind.clone()),
            name: Some(cluster.name.clone()),
            namespace: Some(cluster.namespace.clone()),
            uid: Some(cluster.uid.clone()),
            resource_version: Some(cluster.resource_version.clone()),
            ..Default::default()
        },
        severity,
        reason,
        note,
    };
    ctx.events.send(notice, ctx.clock.now());
}

fn owner_ref(ctx: &Context, cluster: &ClusterView) -> Value {
    json!({
        "apiVersion": ctx.shapes.cluster.api_version,
        "kind": ctx.shapes.cluster.kind,
        "name": cluster.name,
        "uid": cluster.uid,
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

fn claim_body(
    ctx: &Context,
    cluster: &ClusterView,
    role: Role,
    name: &str,
    pool: &PoolRef,
) -> Value {
    let mut spec =
        json!({"poolRef": {"apiGroup": pool.api_group, "kind": pool.kind, "name": pool.name}});
    if ctx.shapes.claim_has_cluster_name() {
        spec["clusterName"] = json!(cluster.name);
    }
    json!({
        "apiVersion": ctx.shapes.claim.api_version,
        "kind": ctx.shapes.claim.kind,
        "metadata": {
            "name": name,
            "namespace": cluster.namespace,
            "labels": {LABEL_ROLE: role.label(), LABEL_CAPI_CLUSTER_NAME: cluster.name},
            "ownerReferences": [owner_ref(ctx, cluster)],
        },
        "spec": spec,
    })
}

/// The IPAddress we create to keep `a.address` reserved: our finalizer, our labels, the pool's `poolRef`.
fn address_body(ctx: &Context, cluster: &ClusterView, role: Role, a: &NewAddress) -> Value {
    let mut spec = json!({
        "address": a.address,
        "prefix": a.prefix,
        "claimRef": {"name": a.claim},
        "poolRef": {"apiGroup": a.pool.api_group, "kind": a.pool.kind, "name": a.pool.name},
    });
    if let Some(g) = &a.gateway {
        spec["gateway"] = json!(g);
    }
    json!({
        "apiVersion": ctx.shapes.address.api_version,
        "kind": ctx.shapes.address.kind,
        "metadata": {
            "name": a.name,
            "namespace": cluster.namespace,
            "labels": {LABEL_ROLE: role.label(), LABEL_CAPI_CLUSTER_NAME: cluster.name},
            "finalizers": [FINALIZER_ADDRESS_PROTECTION],
        },
        "spec": spec,
    })
}

/// A JSON patch appending our finalizer to an IPAddress, guarded by a `test` of the finalizer list it extends (or,
/// when the list is absent, of the resourceVersion), so a finalizer added meanwhile (the provider's) is never lost,
/// while changes elsewhere on the object (owner references, labels) do not make it fail. Finalizer names are
/// qualified names, which every JSON encoder spells alike.
fn protect_patch(
    ctx: &Context,
    cluster: &ClusterView,
    name: &str,
) -> Result<Option<(json_patch::Patch, String)>, Error> {
    let cached = ctx
        .stores
        .addresses
        .get(&cluster.namespace, name)
        .and_then(|e| e.as_ref().as_ref().ok().cloned())
        .ok_or_else(|| Error::Stale(format!("IPAddress {name} left the cache")))?;
    if ctx
        .memory
        .protect_behind(&cluster.uid, name, &cached.resource_version)
    {
        return Ok(None);
    }
    let ops = if cached.finalizers.is_empty() {
        json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": cached.resource_version},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER_ADDRESS_PROTECTION]},
        ])
    } else {
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": cached.finalizers},
            {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER_ADDRESS_PROTECTION},
        ])
    };
    let patch =
        serde_json::from_value(ops).map_err(|e| Error::Stale(format!("building patch: {e}")))?;
    Ok(Some((patch, cached.resource_version)))
}

/// A merge patch adding our controller ownerReference and labels; carries the cached resourceVersion so a
/// concurrent change (someone else adopting it) makes it fail with 409 instead of being overwritten.
fn adopt_patch(
    ctx: &Context,
    cluster: &ClusterView,
    role: Role,
    name: &str,
) -> Result<Value, Error> {
    let claim = ctx
        .stores
        .claims
        .get(&cluster.namespace, name)
        .ok_or_else(|| Error::Stale(format!("claim {name} left the cache")))?;
    let mut owners: Vec<Value> = claim
        .owner_references
        .iter()
        .filter_map(|o| serde_json::to_value(o).ok())
        .collect();
    owners.push(owner_ref(ctx, cluster));
    Ok(json!({
        "metadata": {
            "resourceVersion": claim.resource_version,
            "ownerReferences": owners,
            "labels": {LABEL_ROLE: role.label(), LABEL_CAPI_CLUSTER_NAME: cluster.name},
        }
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::plan::{
        plan,
        tests::{bound, cluster_json, snap},
    };

    /// A snapshot whose class has a control-plane pool only.
    fn without_ingress_pool(c: serde_json::Value) -> crate::plan::Snapshot {
        let mut s = snap(c);
        s.pools.retain(|p| p.name != "ing-pool");
        s
    }

    #[test]
    fn missing_ingress_pool_waits_for_the_control_plane_allocation() {
        let s = without_ingress_pool(cluster_json());
        let p = plan(&s);
        assert!(no_ingress_pool(&p).is_some());
        assert_eq!(
            control_plane_state(&s.cluster, &p),
            ControlPlaneState::Underway
        );
        let mut s = s;
        bound(&mut s, Role::ControlPlane, "10.0.0.10");
        let p = plan(&s);
        assert_eq!(p.allocations.len(), 1, "the allocation carries the note");
        assert!(no_ingress_pool(&p).is_some());
    }

    #[test]
    fn missing_ingress_pool_after_the_vip_was_written_is_not_a_new_event() {
        let mut c = cluster_json();
        c["spec"]["controlPlaneEndpoint"] = json!({"host": "10.0.0.10", "port": 6443});
        let mut s = without_ingress_pool(c);
        bound(&mut s, Role::ControlPlane, "10.0.0.10");
        let p = plan(&s);
        assert!(no_ingress_pool(&p).is_some());
        assert_eq!(
            control_plane_state(&s.cluster, &p),
            ControlPlaneState::InPlace
        );
    }

    #[test]
    fn missing_ingress_pool_is_told_alone_with_a_manual_endpoint_or_a_control_plane_problem() {
        let mut c = cluster_json();
        c["spec"]["controlPlaneEndpoint"] = json!({"host": "192.168.1.1", "port": 6443});
        let s = without_ingress_pool(c);
        let p = plan(&s);
        assert!(no_ingress_pool(&p).is_some());
        assert_eq!(
            control_plane_state(&s.cluster, &p),
            ControlPlaneState::Other
        );

        let mut s = without_ingress_pool(cluster_json());
        s.pools.clear();
        let p = plan(&s);
        assert_eq!(
            control_plane_state(&s.cluster, &p),
            ControlPlaneState::Other
        );
        assert!(no_ingress_pool(&p).is_some());
    }

    #[test]
    fn only_the_optional_ingress_pool_not_found_is_folded() {
        let mut s = without_ingress_pool(cluster_json());
        s.pools.clear();
        let p = plan(&s);
        let folded = no_ingress_pool(&p).expect("ingress report");
        assert_eq!(folded.role, Role::Ingress);
        assert_eq!(folded.severity, Severity::Normal);
        assert!(p
            .reports
            .iter()
            .any(|r| r.role == Role::ControlPlane && r.reason == reasons::POOL_NOT_FOUND));
    }
}
