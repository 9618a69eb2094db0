//! Registry of served kinds: the built-in ones and those defined by CustomResourceDefinitions.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::errors::Subject;
use crate::store::GroupResource;

/// How stored objects are shown through a resource (events.k8s.io/v1 is a view of core v1 events).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Native,
    EventsV1,
}

#[derive(Debug, Clone)]
pub struct ResourceInfo {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub list_kind: String,
    pub status: bool,
    /// `openAPIV3Schema` of this version (custom resources only).
    pub schema: Option<Arc<Value>>,
    pub custom: bool,
    pub storage: GroupResource,
    pub view: View,
    pub printer_columns: Vec<Value>,
}

pub const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

impl ResourceInfo {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    pub fn subject<'a>(&'a self, name: &'a str) -> Subject<'a> {
        Subject {
            group: &self.group,
            plural: &self.plural,
            kind: &self.kind,
            name,
        }
    }
    pub fn gr(&self) -> GroupResource {
        GroupResource::new(&self.group, &self.plural)
    }
}

#[derive(Default)]
pub struct Registry {
    resources: BTreeMap<(String, String, String), Arc<ResourceInfo>>,
    /// CRD name → the (group, version, plural) keys it registered.
    by_crd: BTreeMap<String, Vec<(String, String, String)>>,
}

fn builtin(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    short: &[&str],
) -> ResourceInfo {
    ResourceInfo {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: Vec::new(),
        list_kind: format!("{kind}List"),
        status: false,
        schema: None,
        custom: false,
        storage: GroupResource::new(group, plural),
        view: View::Native,
        printer_columns: Vec::new(),
    }
}

/// Orders versions the way Kubernetes prefers them: GA > beta > alpha, higher numbers first.
pub fn version_priority(a: &str, b: &str) -> Ordering {
    fn parse(v: &str) -> Option<(u32, u32, u32)> {
        let rest = v.strip_prefix('v')?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let major: u32 = digits.parse().ok()?;
        let tail = &rest[digits.len()..];
        if tail.is_empty() {
            return Some((2, major, 0));
        }
        let (level, num) = if let Some(n) = tail.strip_prefix("beta") {
            (1, n)
        } else if let Some(n) = tail.strip_prefix("alpha") {
            (0, n)
        } else {
            return None;
        };
        Some((level, major, num.parse().ok()?))
    }
    match (parse(a), parse(b)) {
        (Some((la, ma, na)), Some((lb, mb, nb))) => (lb, mb, nb).cmp(&(la, ma, na)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

impl Registry {
    pub fn with_builtins() -> Self {
        let mut r = Registry::default();
        let mut ns = builtin("", "v1", "Namespace", "namespaces", false, &["ns"]);
        ns.status = true;
        r.insert(ns);
        r.insert(builtin("", "v1", "Event", "events", true, &["ev"]));
        let mut ev = builtin("events.k8s.io", "v1", "Event", "events", true, &["ev"]);
        ev.storage = GroupResource::new("", "events");
        ev.view = View::EventsV1;
        r.insert(ev);
        r.insert(builtin(
            "coordination.k8s.io",
            "v1",
            "Lease",
            "leases",
            true,
            &[],
        ));
        let mut crd = builtin(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            &["crd", "crds"],
        );
        crd.status = true;
        crd.categories = vec!["api-extensions".into()];
        r.insert(crd);
        r
    }

    fn insert(&mut self, info: ResourceInfo) {
        let key = (
            info.group.clone(),
            info.version.clone(),
            info.plural.clone(),
        );
        self.resources.insert(key, Arc::new(info));
    }

    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceInfo>> {
        self.resources
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .cloned()
    }

    /// Whether `apiVersion`/`kind` names a served resource (any version of the group).
    pub fn serves_kind(&self, api_version: &str, kind: &str) -> bool {
        let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        self.resources
            .values()
            .any(|r| r.group == group && r.kind == kind)
    }

    /// The preferred served version of a stored resource.
    pub fn preferred_for(&self, gr: &GroupResource) -> Option<Arc<ResourceInfo>> {
        let mut found: Vec<&Arc<ResourceInfo>> = self
            .resources
            .values()
            .filter(|r| r.group == gr.group && r.plural == gr.resource)
            .collect();
        found.sort_by(|a, b| version_priority(&a.version, &b.version));
        found.first().map(|r| (*r).clone())
    }

    /// Served groups (core "" excluded) with their versions, preferred first.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (g, v, _) in self.resources.keys() {
            if g.is_empty() {
                continue;
            }
            let vs = groups.entry(g.clone()).or_default();
            if !vs.contains(v) {
                vs.push(v.clone());
            }
        }
        groups
            .into_iter()
            .map(|(g, mut vs)| {
                vs.sort_by(|a, b| version_priority(a, b));
                (g, vs)
            })
            .collect()
    }

    pub fn resources_in(&self, group: &str, version: &str) -> Vec<Arc<ResourceInfo>> {
        self.resources
            .values()
            .filter(|r| r.group == group && r.version == version)
            .cloned()
            .collect()
    }

    pub fn all(&self) -> Vec<Arc<ResourceInfo>> {
        self.resources.values().cloned().collect()
    }

    /// Registers (or re-registers) the served versions of a CRD. Returns its storage resource.
    pub fn register_crd(&mut self, crd: &Value) -> Result<GroupResource, String> {
        let def = CrdDef::parse(crd)?;
        self.unregister_crd(&def.crd_name);
        let mut keys = Vec::new();
        for v in &def.versions {
            let info = ResourceInfo {
                group: def.group.clone(),
                version: v.name.clone(),
                kind: def.kind.clone(),
                plural: def.plural.clone(),
                singular: def.singular.clone(),
                namespaced: def.namespaced,
                short_names: def.short_names.clone(),
                categories: def.categories.clone(),
                list_kind: def.list_kind.clone(),
                status: v.status,
                schema: v.schema.clone().map(Arc::new),
                custom: true,
                storage: GroupResource::new(&def.group, &def.plural),
                view: View::Native,
                printer_columns: v.columns.clone(),
            };
            keys.push((
                info.group.clone(),
                info.version.clone(),
                info.plural.clone(),
            ));
            self.insert(info);
        }
        self.by_crd.insert(def.crd_name.clone(), keys);
        Ok(GroupResource::new(&def.group, &def.plural))
    }

    pub fn unregister_crd(&mut self, crd_name: &str) -> Option<GroupResource> {
        let keys = self.by_crd.remove(crd_name)?;
        let mut gr = None;
        for k in keys {
            gr = Some(GroupResource::new(&k.0, &k.2));
            self.resources.remove(&k);
        }
        gr
    }
}

struct CrdVersion {
    name: String,
    status: bool,
    schema: Option<Value>,
    columns: Vec<Value>,
}

/// The parts of a CustomResourceDefinition the server acts on.
pub struct CrdDef {
    pub crd_name: String,
    pub group: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub list_kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    versions: Vec<CrdVersion>,
    pub storage_version: Option<String>,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

impl CrdDef {
    pub fn parse(crd: &Value) -> Result<CrdDef, String> {
        let s = |p: &str| {
            crd.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let group = s("/spec/group");
        let kind = s("/spec/names/kind");
        let plural = s("/spec/names/plural");
        if group.is_empty() || kind.is_empty() || plural.is_empty() {
            return Err("spec.group, spec.names.kind and spec.names.plural are required".into());
        }
        let crd_name = s("/metadata/name");
        if crd_name != format!("{plural}.{group}") {
            return Err(format!("metadata.name: Invalid value: {crd_name:?}: must be spec.names.plural+\".\"+spec.group"));
        }
        let singular = match s("/spec/names/singular") {
            x if x.is_empty() => kind.to_lowercase(),
            x => x,
        };
        let list_kind = match s("/spec/names/listKind") {
            x if x.is_empty() => format!("{kind}List"),
            x => x,
        };
        let namespaced = match s("/spec/scope").as_str() {
            "Namespaced" => true,
            "Cluster" => false,
            other => return Err(format!("spec.scope: Unsupported value: {other:?}")),
        };
        let mut versions = Vec::new();
        let mut storage_version = None;
        for v in crd
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = v
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if v.get("storage").and_then(Value::as_bool) == Some(true) {
                storage_version = Some(name.clone());
            }
            if v.get("served").and_then(Value::as_bool) != Some(true) {
                continue;
            }
            versions.push(CrdVersion {
                name,
                status: v.pointer("/subresources/status").is_some(),
                schema: v.pointer("/schema/openAPIV3Schema").cloned(),
                columns: v
                    .get("additionalPrinterColumns")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            });
        }
        if versions.is_empty() {
            return Err("spec.versions: Invalid value: no version is served".into());
        }
        Ok(CrdDef {
            crd_name,
            group,
            kind,
            plural,
            singular,
            list_kind,
            namespaced,
            short_names: strings(crd.pointer("/spec/names/shortNames")),
            categories: strings(crd.pointer("/spec/names/categories")),
            versions,
            storage_version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_ga_then_beta_then_alpha() {
        let mut v = vec!["v1alpha1", "v1beta1", "v1", "v1beta2", "v2alpha1", "foo"];
        v.sort_by(|a, b| version_priority(a, b));
        assert_eq!(
            v,
            ["v1", "v1beta2", "v1beta1", "v2alpha1", "v1alpha1", "foo"]
        );
    }
}
