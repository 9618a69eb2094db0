//! `clusterctl move` between two API servers (any two `kube::Client`s), as cluster-api's
//! `cmd/clusterctl/client/cluster/mover.go` and `objectgraph.go` do it:
//!
//! 1. **Discovery**: every CRD's storage version (plus kinds the caller names, like clusterctl's Secrets and
//!    ConfigMaps); objects of the namespace (all objects of cluster-scoped kinds). `Cluster`, `ClusterClass` and
//!    CRDs labelled `clusterctl.cluster.x-k8s.io/move-hierarchy` are roots: their objects and everything they own,
//!    transitively, move; CRDs labelled `clusterctl.cluster.x-k8s.io/move` move all their objects. Objects under
//!    a cluster-scoped root (e.g. IPAddresses owned by a `GlobalInClusterIPPool`) are "global hierarchy".
//! 2. Refuses when a source Cluster or ClusterClass is already paused; pauses Clusters (`spec.paused: true`) and
//!    ClusterClasses (`cluster.x-k8s.io/paused` annotation); waits while any object carries
//!    `clusterctl.cluster.x-k8s.io/block-move`.
//! 3. **Create** in groups, owners first (an object whose owner is not moved is not moved either): the source
//!    object as read, without `resourceVersion`/`uid`/`managedFields`, owner references rebuilt from the moved
//!    owners with their *new* uids (an owner that already existed in the target keeps its source uid, as
//!    clusterctl does), namespaces created when missing. An object that already exists is skipped when it is
//!    global or global hierarchy, else updated. Status is sent as read (the server drops it for kinds with a
//!    status subresource).
//! 4. **Delete** from the source in reverse group order, except global and global-hierarchy objects: JSON patch
//!    `add /metadata/annotations {"clusterctl.cluster.x-k8s.io/delete-for-move": ""}` (which replaces all
//!    annotations), delete, then `{"metadata":{"finalizers":[]}}` if it had finalizers.
//! 5. Unpause the target ClusterClasses, then the target Clusters (`spec.paused: null`).

mod graph;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

use graph::{api, discover, discover_kinds, move_sequence, Node};

pub const DELETE_FOR_MOVE: &str = "clusterctl.cluster.x-k8s.io/delete-for-move";
pub const BLOCK_MOVE: &str = "clusterctl.cluster.x-k8s.io/block-move";
pub const MOVE_LABEL: &str = "clusterctl.cluster.x-k8s.io/move";
pub const MOVE_HIERARCHY_LABEL: &str = "clusterctl.cluster.x-k8s.io/move-hierarchy";
pub const PAUSED_ANNOTATION: &str = "cluster.x-k8s.io/paused";
const CAPI_GROUP: &str = "cluster.x-k8s.io";

/// A kind the move considers beyond the CRDs (clusterctl always adds Secrets and ConfigMaps).
#[derive(Clone, Debug)]
pub struct ExtraKind {
    pub resource: ApiResource,
    pub namespaced: bool,
}

/// How to move.
#[derive(Clone, Debug)]
pub struct MoveOptions {
    /// Kinds to discover besides every CRD; they move when owned (transitively) by a moved root.
    pub extra_kinds: Vec<ExtraKind>,
    /// How long to wait for `block-move` annotations to go (clusterctl: about 2 minutes).
    pub block_timeout: Duration,
}

impl Default for MoveOptions {
    fn default() -> Self {
        MoveOptions {
            extra_kinds: Vec::new(),
            block_timeout: Duration::from_secs(30),
        }
    }
}

/// What the move did, objects as `Kind namespace/name` (`Kind name` when cluster-scoped).
#[derive(Clone, Debug, Default)]
pub struct MoveReport {
    /// The create groups, in order.
    pub groups: Vec<Vec<String>>,
    pub created: Vec<String>,
    /// Existed in the target: global ones skipped, the others updated.
    pub skipped_existing: Vec<String>,
    pub updated_existing: Vec<String>,
    pub deleted: Vec<String>,
    /// Global or global-hierarchy objects, copied but left in the source.
    pub kept_in_source: Vec<String>,
    /// Discovered but not moved (not linked to a root, or owned by something that does not move).
    pub not_moved: Vec<String>,
    /// Source uid → target uid.
    pub uids: HashMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Refused(String),
}

fn annotation<'a>(o: &'a DynamicObject, key: &str) -> Option<&'a String> {
    o.metadata.annotations.as_ref().and_then(|a| a.get(key))
}

async fn ensure_namespace(target: &Client, ns: &str) -> Result<(), MoveError> {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(target.clone());
    if api.get_opt(ns).await?.is_some() {
        return Ok(());
    }
    let nsobj = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    )
    .map_err(|e| MoveError::Refused(e.to_string()))?;
    match api.create(&PostParams::default(), &nsobj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Moves the Cluster API objects of `namespace` from `source` to `target`, like `clusterctl move --namespace`.
pub async fn move_namespace(
    source: &Client,
    target: &Client,
    namespace: &str,
) -> Result<MoveReport, MoveError> {
    move_namespace_with(source, target, namespace, &MoveOptions::default()).await
}

/// [`move_namespace`] with extra kinds and a `block-move` timeout.
pub async fn move_namespace_with(
    source: &Client,
    target: &Client,
    namespace: &str,
    opts: &MoveOptions,
) -> Result<MoveReport, MoveError> {
    let kinds = discover_kinds(source, opts).await?;
    let nodes = discover(source, &kinds, namespace).await?;
    let mut report = MoveReport::default();
    let is = |n: &Node, kind: &str| {
        kinds[n.kind].ar.group == CAPI_GROUP && kinds[n.kind].ar.kind == kind
    };

    // Pause the source.
    let paused: Vec<String> = nodes
        .iter()
        .filter(|n| n.moves)
        .filter(|n| {
            (is(n, "Cluster")
                && (n.obj.data.pointer("/spec/paused") == Some(&json!(true))
                    || annotation(&n.obj, PAUSED_ANNOTATION).is_some()))
                || (is(n, "ClusterClass") && annotation(&n.obj, PAUSED_ANNOTATION).is_some())
        })
        .map(|n| n.id(&kinds))
        .collect();
    if !paused.is_empty() {
        return Err(MoveError::Refused(format!(
            "cannot start the move operation while these objects are paused: {}",
            paused.join(", ")
        )));
    }
    for n in nodes.iter().filter(|n| n.moves) {
        let api = api(source, &kinds[n.kind], n.obj.metadata.namespace.as_deref());
        let patch = if is(n, "Cluster") {
            json!({"spec": {"paused": true}})
        } else if is(n, "ClusterClass") {
            json!({"metadata": {"annotations": {PAUSED_ANNOTATION: ""}}})
        } else {
            continue;
        };
        api.patch(n.name(), &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }

    // Wait while anything carries block-move.
    let deadline = tokio::time::Instant::now() + opts.block_timeout;
    for n in nodes.iter().filter(|n| n.moves) {
        let api = api(source, &kinds[n.kind], n.obj.metadata.namespace.as_deref());
        loop {
            let cur = api.get_opt(n.name()).await?;
            if cur
                .as_ref()
                .is_none_or(|o| annotation(o, BLOCK_MOVE).is_none())
            {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(MoveError::Refused(format!(
                    "move blocked by {BLOCK_MOVE} on {}",
                    n.id(&kinds)
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Create, owners first.
    let sequence = move_sequence(&nodes);
    let mut new_uid: HashMap<String, String> = HashMap::new();
    let mut namespaces: BTreeSet<String> = BTreeSet::new();
    for group in &sequence {
        report
            .groups
            .push(group.iter().map(|&i| nodes[i].id(&kinds)).collect());
        for &i in group {
            let n = &nodes[i];
            let kind = &kinds[n.kind];
            let ns = n.obj.metadata.namespace.clone();
            let src_api = api(source, kind, ns.as_deref());
            let Some(mut obj) = src_api.get_opt(n.name()).await? else {
                continue;
            };
            obj.metadata.resource_version = None;
            obj.metadata.uid = None;
            obj.metadata.managed_fields = None;
            if obj.metadata.name.is_some() {
                obj.metadata.generate_name = None;
            }
            let refs: Vec<_> = obj
                .metadata
                .owner_references
                .take()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|mut r| {
                    let new = new_uid.get(&r.uid)?;
                    r.uid = new.clone();
                    Some(r)
                })
                .collect();
            obj.metadata.owner_references = (!refs.is_empty()).then_some(refs);
            if let Some(ns) = ns.as_deref().filter(|_| kind.namespaced) {
                if namespaces.insert(ns.to_string()) {
                    ensure_namespace(target, ns).await?;
                }
            }
            let dst_api = api(target, kind, ns.as_deref());
            let id = n.id(&kinds);
            match dst_api.create(&PostParams::default(), &obj).await {
                Ok(created) => {
                    let uid = created.metadata.uid.unwrap_or_default();
                    report.uids.insert(n.uid.clone(), uid.clone());
                    new_uid.insert(n.uid.clone(), uid);
                    report.created.push(id);
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    if n.global || n.global_hierarchy {
                        // clusterctl keeps the uid it read from the source for this owner.
                        new_uid.insert(n.uid.clone(), n.uid.clone());
                        report.skipped_existing.push(id);
                    } else {
                        let existing = dst_api.get(n.name()).await?;
                        obj.metadata.uid = existing.metadata.uid.clone();
                        obj.metadata.resource_version = existing.metadata.resource_version;
                        dst_api
                            .replace(n.name(), &PostParams::default(), &obj)
                            .await?;
                        let uid = existing.metadata.uid.unwrap_or_default();
                        report.uids.insert(n.uid.clone(), uid.clone());
                        new_uid.insert(n.uid.clone(), uid);
                        report.updated_existing.push(id);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    let moved: BTreeSet<usize> = sequence.iter().flatten().copied().collect();
    report.not_moved = (0..nodes.len())
        .filter(|i| !moved.contains(i))
        .map(|i| nodes[i].id(&kinds))
        .collect();

    // Delete from the source, dependents first.
    for group in sequence.iter().rev() {
        for &i in group {
            let n = &nodes[i];
            if n.global || n.global_hierarchy {
                report.kept_in_source.push(n.id(&kinds));
                continue;
            }
            let api = api(source, &kinds[n.kind], n.obj.metadata.namespace.as_deref());
            let Some(cur) = api.get_opt(n.name()).await? else {
                continue;
            };
            let add: json_patch::Patch = serde_json::from_value(json!([
                {"op": "add", "path": "/metadata/annotations", "value": {DELETE_FOR_MOVE: ""}}
            ]))
            .map_err(|e| MoveError::Refused(e.to_string()))?;
            api.patch(n.name(), &PatchParams::default(), &Patch::Json::<()>(add))
                .await?;
            match api.delete(n.name(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            if cur
                .metadata
                .finalizers
                .as_ref()
                .is_some_and(|f| !f.is_empty())
            {
                match api
                    .patch(
                        n.name(),
                        &PatchParams::default(),
                        &Patch::Merge(json!({"metadata": {"finalizers": []}})),
                    )
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            report.deleted.push(n.id(&kinds));
        }
    }

    // Resume the target: ClusterClasses, then Clusters.
    for class in [true, false] {
        for i in sequence.iter().flatten() {
            let n = &nodes[*i];
            let (patch, wanted) = if class {
                (
                    json!({"metadata": {"annotations": {PAUSED_ANNOTATION: null}}}),
                    "ClusterClass",
                )
            } else {
                (json!({"spec": {"paused": null}}), "Cluster")
            };
            if kinds[n.kind].ar.group != CAPI_GROUP || kinds[n.kind].ar.kind != wanted {
                continue;
            }
            api(target, &kinds[n.kind], n.obj.metadata.namespace.as_deref())
                .patch(n.name(), &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
    }
    Ok(report)
}

/// Objects per kind, for reports: `Kind` → count.
pub fn count_by_kind(ids: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for id in ids {
        let k = id.split(' ').next().unwrap_or("").to_string();
        *m.entry(k).or_default() += 1;
    }
    m
}
