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
    })
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
