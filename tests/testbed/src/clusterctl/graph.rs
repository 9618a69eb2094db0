//! clusterctl's object graph (`cmd/clusterctl/client/cluster/objectgraph.go`): discovery types from the CRDs,
//! the objects of a namespace, owners and soft owners, which objects move, and the owner-first move sequence.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::core::GroupVersionKind;
use kube::Client;

use super::{MoveError, MoveOptions, CAPI_GROUP, MOVE_HIERARCHY_LABEL, MOVE_LABEL};

#[derive(Clone)]
pub(super) struct Kind {
    pub(super) ar: ApiResource,
    pub(super) namespaced: bool,
    pub(super) force_move: bool,
    pub(super) hierarchy: bool,
}

pub(super) struct Node {
    pub(super) kind: usize,
    pub(super) obj: DynamicObject,
    pub(super) uid: String,
    /// Owner uids that are discovered objects; `None` entries are owners not discovered.
    pub(super) owners: Vec<Option<String>>,
    /// clusterctl's soft owners: a Cluster's ClusterClass, the Cluster of an unowned `<cluster>-<purpose>` Secret.
    pub(super) soft_owners: Vec<String>,
    pub(super) moves: bool,
    pub(super) global: bool,
    pub(super) global_hierarchy: bool,
}

impl Node {
    pub(super) fn id(&self, kinds: &[Kind]) -> String {
        let k = &kinds[self.kind].ar.kind;
        match &self.obj.metadata.namespace {
            Some(ns) => format!("{k} {ns}/{}", self.name()),
            None => format!("{k} {}", self.name()),
        }
    }
    pub(super) fn name(&self) -> &str {
        self.obj.metadata.name.as_deref().unwrap_or("")
    }
}

pub(super) fn api(client: &Client, kind: &Kind, ns: Option<&str>) -> Api<DynamicObject> {
    match (kind.namespaced, ns) {
        (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &kind.ar),
        _ => Api::all_with(client.clone(), &kind.ar),
    }
}

/// Every CRD's storage version, with clusterctl's move flags.
pub(super) async fn discover_kinds(
    source: &Client,
    opts: &MoveOptions,
) -> Result<Vec<Kind>, MoveError> {
    let crds: Api<CustomResourceDefinition> = Api::all(source.clone());
    let mut kinds = Vec::new();
    for crd in crds.list(&ListParams::default()).await?.items {
        let labels = crd.metadata.labels.clone().unwrap_or_default();
        let spec = &crd.spec;
        let Some(v) = spec.versions.iter().find(|v| v.storage) else {
            continue;
        };
        let gvk = GroupVersionKind::gvk(&spec.group, &v.name, &spec.names.kind);
        let ar = ApiResource::from_gvk_with_plural(&gvk, &spec.names.plural);
        let root = spec.group == CAPI_GROUP
            && matches!(spec.names.kind.as_str(), "Cluster" | "ClusterClass");
        let hierarchy = root || labels.contains_key(MOVE_HIERARCHY_LABEL);
        kinds.push(Kind {
            ar,
            namespaced: spec.scope == "Namespaced",
            force_move: hierarchy || labels.contains_key(MOVE_LABEL),
            hierarchy,
        });
    }
    for e in &opts.extra_kinds {
        kinds.push(Kind {
            ar: e.resource.clone(),
            namespaced: e.namespaced,
            force_move: false,
            hierarchy: false,
        });
    }
    Ok(kinds)
}

/// The object graph of the namespace: which objects move, which are global hierarchy.
pub(super) async fn discover(
    source: &Client,
    kinds: &[Kind],
    namespace: &str,
) -> Result<Vec<Node>, MoveError> {
    let mut nodes = Vec::new();
    for (i, k) in kinds.iter().enumerate() {
        for obj in api(source, k, Some(namespace))
            .list(&ListParams::default())
            .await?
            .items
        {
            nodes.push(Node {
                kind: i,
                uid: obj.metadata.uid.clone().unwrap_or_default(),
                owners: Vec::new(),
                soft_owners: Vec::new(),
                moves: false,
                global: !k.namespaced,
                global_hierarchy: false,
                obj,
            });
        }
    }
    let known: BTreeSet<String> = nodes.iter().map(|n| n.uid.clone()).collect();
    for n in &mut nodes {
        n.owners = n
            .obj
            .metadata
            .owner_references
            .iter()
            .flatten()
            .map(|r| known.contains(&r.uid).then(|| r.uid.clone()))
            .collect();
    }
    set_soft_owners(&mut nodes, kinds);
    // Tenants: everything reachable from a root through owner references and soft ownership.
    let by_uid: HashMap<String, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.uid.clone(), i))
        .collect();
    let mut dependents: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for o in n.owners.iter().flatten().chain(&n.soft_owners) {
            if let Some(&oi) = by_uid.get(o) {
                dependents.entry(oi).or_default().push(i);
            }
        }
    }
    let roots: Vec<usize> = (0..nodes.len())
        .filter(|&i| kinds[nodes[i].kind].hierarchy)
        .collect();
    for r in roots {
        let global = nodes[r].global;
        let mut stack = vec![r];
        let mut seen = BTreeSet::new();
        while let Some(i) = stack.pop() {
            if !seen.insert(i) {
                continue;
            }
            nodes[i].moves = true;
            if i != r {
                nodes[i].global_hierarchy |= global;
            }
            stack.extend(dependents.get(&i).into_iter().flatten().copied());
        }
    }
    for n in &mut nodes {
        n.moves |= kinds[n.kind].force_move;
    }
    Ok(nodes)
}

/// clusterctl's `setSoftOwnership`: a Cluster is soft-owned by the ClusterClass it uses, an owner-less Secret
/// named `<cluster>-<purpose>` by that Cluster (so classes move before and are deleted after their Clusters).
fn set_soft_owners(nodes: &mut [Node], kinds: &[Kind]) {
    let is = |n: &Node, group: &str, kind: &str| {
        kinds[n.kind].ar.group == group && kinds[n.kind].ar.kind == kind
    };
    let key = |n: &Node| {
        (
            n.obj.metadata.namespace.clone().unwrap_or_default(),
            n.name().to_string(),
        )
    };
    let classes: HashMap<(String, String), String> = nodes
        .iter()
        .filter(|n| is(n, CAPI_GROUP, "ClusterClass"))
        .map(|n| (key(n), n.uid.clone()))
        .collect();
    let clusters: HashMap<(String, String), String> = nodes
        .iter()
        .filter(|n| is(n, CAPI_GROUP, "Cluster"))
        .map(|n| (key(n), n.uid.clone()))
        .collect();
    for n in nodes.iter_mut() {
        let ns = n.obj.metadata.namespace.clone().unwrap_or_default();
        if is(n, CAPI_GROUP, "Cluster") {
            let topo = n.obj.data.pointer("/spec/topology");
            let s = |p: &str| topo.and_then(|t| t.pointer(p)).and_then(|v| v.as_str());
            let Some(class) = s("/classRef/name").or_else(|| s("/class")) else {
                continue;
            };
            let class_ns = s("/classRef/namespace")
                .or_else(|| s("/classNamespace"))
                .filter(|c| !c.is_empty())
                .unwrap_or(&ns);
            if let Some(uid) = classes.get(&(class_ns.to_string(), class.to_string())) {
                n.soft_owners.push(uid.clone());
            }
        } else if is(n, "", "Secret") && n.owners.is_empty() {
            if let Some((cluster, _)) = n.name().rsplit_once('-') {
                if let Some(uid) = clusters.get(&(ns.clone(), cluster.to_string())) {
                    n.soft_owners.push(uid.clone());
                }
            }
        }
    }
}

/// clusterctl's `getMoveSequence`: groups of moving objects whose owners are all in earlier groups.
pub(super) fn move_sequence(nodes: &[Node]) -> Vec<Vec<usize>> {
    let mut placed: BTreeSet<String> = BTreeSet::new();
    let mut done: BTreeSet<usize> = BTreeSet::new();
    let mut groups = Vec::new();
    loop {
        let group: Vec<usize> = (0..nodes.len())
            .filter(|i| nodes[*i].moves && !done.contains(i))
            .filter(|i| {
                let n = &nodes[*i];
                n.owners
                    .iter()
                    .all(|o| o.as_ref().is_some_and(|o| placed.contains(o)))
                    && n.soft_owners.iter().all(|o| placed.contains(o))
            })
            .collect();
        if group.is_empty() {
            return groups;
        }
        for &i in &group {
            done.insert(i);
            placed.insert(nodes[i].uid.clone());
        }
        groups.push(group);
    }
}
