//! Start-up discovery: which API versions of the CAPI and IPAM kinds the server serves.

use kube::{api::ApiResource, Client};

use crate::names::{CAPI_GROUP, IPAM_GROUP, KIND_GLOBAL_POOL, KIND_POOL};

/// The served version of every kind we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiShapes {
    /// `Cluster` (v1beta2 preferred, else v1beta1).
    pub cluster: ApiResource,
    /// `ClusterClass` (same group version as Cluster when served).
    pub cluster_class: ApiResource,
    /// `IPAddressClaim` (v1beta2 preferred, else v1beta1).
    pub claim: ApiResource,
    /// `IPAddress`.
    pub address: ApiResource,
    /// `GlobalInClusterIPPool` (v1alpha2).
    pub global_pool: ApiResource,
    /// `InClusterIPPool` (v1alpha2), namespaced.
    pub pool: ApiResource,
    /// The `--pool-kinds` pools, as the server serves them.
    pub extra_pools: Vec<PoolKind>,
}

/// A further pool kind (`--pool-kinds`): its resource and scope, from discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolKind {
    /// Group, version, kind, plural.
    pub resource: ApiResource,
    /// Namespaced (a claim then references a pool of its own namespace) or cluster-scoped.
    pub namespaced: bool,
}

/// One `--pool-kinds` item: `<Kind>.<version>.<group>`, as in `IPPool.v1alpha1.ipam.metal3.io`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolKindName {
    /// Kind (`IPPool`).
    pub kind: String,
    /// Version (`v1alpha1`).
    pub version: String,
    /// Group (`ipam.metal3.io`).
    pub group: String,
}

impl std::fmt::Display for PoolKindName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.kind, self.version, self.group)
    }
}

impl std::str::FromStr for PoolKindName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("{s:?} is not <Kind>.<version>.<group> (e.g. IPPool.v1alpha1.ipam.metal3.io): {why}")
        };
        let mut parts = s.splitn(3, '.');
        let (Some(kind), Some(version), Some(group)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("three dot-separated parts are needed"));
        };
        if !kind.starts_with(|c: char| c.is_ascii_uppercase())
            || !kind.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(bad(
                "the kind starts with an upper-case letter and is alphanumeric",
            ));
        }
        let lower_alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        if !version.starts_with('v') || !version.chars().all(lower_alnum) {
            return Err(bad("the version looks like v1, v1alpha1, v1beta2"));
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.chars().all(|c| lower_alnum(c) || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !group.split('.').all(label_ok) {
            return Err(bad("the group is a DNS subdomain such as ipam.metal3.io"));
        }
        Ok(Self {
            kind: kind.to_owned(),
            version: version.to_owned(),
            group: group.to_owned(),
        })
    }
}

impl ApiShapes {
    /// Whether the served claim version has `spec.clusterName` (v1beta1 and later).
    pub fn claim_has_cluster_name(&self) -> bool {
        self.claim.version != "v1alpha1"
    }

    /// Shapes for tests and tools that know the profile: `v1beta2` or `v1beta1` for CAPI and IPAM.
    pub fn fixed(capi_version: &str, ipam_version: &str) -> Self {
        let ar = |group: &str, version: &str, kind: &str, plural: &str| ApiResource {
            group: group.to_owned(),
            version: version.to_owned(),
            api_version: format!("{group}/{version}"),
            kind: kind.to_owned(),
            plural: plural.to_owned(),
        };
        Self {
            cluster: ar(CAPI_GROUP, capi_version, "Cluster", "clusters"),
            cluster_class: ar(CAPI_GROUP, capi_version, "ClusterClass", "clusterclasses"),
            claim: ar(
                IPAM_GROUP,
                ipam_version,
                "IPAddressClaim",
                "ipaddressclaims",
            ),
            address: ar(IPAM_GROUP, ipam_version, "IPAddress", "ipaddresses"),
            global_pool: ar(
                IPAM_GROUP,
                "v1alpha2",
                KIND_GLOBAL_POOL,
                "globalinclusterippools",
            ),
            pool: ar(IPAM_GROUP, "v1alpha2", KIND_POOL, "inclusterippools"),
            extra_pools: Vec::new(),
        }
    }
}

/// Discovery failed: the CRDs are not installed (or the server is unreachable).
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// None of the versions we support serves this kind.
    #[error("the API server serves no supported version of {kind} ({group} {versions:?}); are the CAPI/IPAM CRDs installed?")]
    NotServed {
        /// Kind.
        kind: &'static str,
        /// Group.
        group: &'static str,
        /// Versions we tried.
        versions: &'static [&'static str],
    },
    /// A `--pool-kinds` kind the server does not serve (a typo, or its provider's CRDs are not installed).
    #[error("--pool-kinds: the API server does not serve {name}: {detail}")]
    PoolKindNotServed {
        /// The flag item.
        name: String,
        /// What discovery found instead.
        detail: String,
    },
    /// The request failed for another reason.
    #[error("discovery of {group}/{version} failed: {source}")]
    Request {
        /// Group.
        group: &'static str,
        /// Version.
        version: &'static str,
        /// The client error.
        #[source]
        source: Box<kube::Error>,
    },
}

const CAPI_VERSIONS: &[&str] = &["v1beta2", "v1beta1"];
const IPAM_VERSIONS: &[&str] = &["v1beta2", "v1beta1"];
const POOL_VERSIONS: &[&str] = &["v1alpha2"];

/// Finds the preferred served version of each kind.
pub async fn discover(client: &Client) -> Result<ApiShapes, DiscoveryError> {
    Ok(ApiShapes {
        cluster: find(client, CAPI_GROUP, CAPI_VERSIONS, "Cluster").await?,
        cluster_class: find(client, CAPI_GROUP, CAPI_VERSIONS, "ClusterClass").await?,
        claim: find(client, IPAM_GROUP, IPAM_VERSIONS, "IPAddressClaim").await?,
        address: find(client, IPAM_GROUP, IPAM_VERSIONS, "IPAddress").await?,
        global_pool: find(client, IPAM_GROUP, POOL_VERSIONS, KIND_GLOBAL_POOL).await?,
        pool: find(client, IPAM_GROUP, POOL_VERSIONS, KIND_POOL).await?,
        extra_pools: Vec::new(),
    })
}

/// The most `--pool-kinds` kinds.
pub const MAX_POOL_KINDS: usize = 32;

/// Finds each `--pool-kinds` kind and its scope. A kind the server does not serve is an error naming it.
pub async fn discover_pool_kinds(
    client: &Client,
    names: &[PoolKindName],
) -> Result<Vec<PoolKind>, DiscoveryError> {
    if names.len() > MAX_POOL_KINDS {
        return Err(DiscoveryError::PoolKindNotServed {
            name: format!("{} kinds", names.len()),
            detail: format!("at most {MAX_POOL_KINDS} are supported"),
        });
    }
    let mut kinds = Vec::with_capacity(names.len());
    for name in names {
        let gv = format!("{}/{}", name.group, name.version);
        let list = match client.list_api_group_resources(&gv).await {
            Ok(list) => list,
            Err(kube::Error::Api(s)) if s.code == 404 => {
                return Err(DiscoveryError::PoolKindNotServed {
                    name: name.to_string(),
                    detail: format!("{gv} is not served (is its provider installed?)"),
                })
            }
            Err(e) => {
                return Err(DiscoveryError::PoolKindNotServed {
                    name: name.to_string(),
                    detail: format!("discovery of {gv} failed: {e}"),
                })
            }
        };
        let Some(r) = list
            .resources
            .iter()
            .find(|r| r.kind == name.kind && !r.name.contains('/'))
        else {
            let served: Vec<&str> = list
                .resources
                .iter()
                .filter(|r| !r.name.contains('/'))
                .map(|r| r.kind.as_str())
                .collect();
            return Err(DiscoveryError::PoolKindNotServed {
                name: name.to_string(),
                detail: format!("{gv} has no kind {} (it serves {served:?})", name.kind),
            });
        };
        kinds.push(PoolKind {
            resource: ApiResource {
                group: name.group.clone(),
                version: name.version.clone(),
                api_version: gv,
                kind: name.kind.clone(),
                plural: r.name.clone(),
            },
            namespaced: r.namespaced,
        });
    }
    Ok(kinds)
}

async fn find(
    client: &Client,
    group: &'static str,
    versions: &'static [&'static str],
    kind: &'static str,
) -> Result<ApiResource, DiscoveryError> {
    for version in versions {
        let list = match client
            .list_api_group_resources(&format!("{group}/{version}"))
            .await
        {
            Ok(list) => list,
            Err(kube::Error::Api(s)) if s.code == 404 => continue,
            Err(e) => {
                return Err(DiscoveryError::Request {
                    group,
                    version,
                    source: Box::new(e),
                })
            }
        };
        if let Some(r) = list
            .resources
            .iter()
            .find(|r| r.kind == kind && !r.name.contains('/'))
        {
            return Ok(ApiResource {
                group: group.to_owned(),
                version: (*version).to_owned(),
                api_version: format!("{group}/{version}"),
                kind: kind.to_owned(),
                plural: r.name.clone(),
            });
        }
    }
    Err(DiscoveryError::NotServed {
        kind,
        group,
        versions,
    })
}
