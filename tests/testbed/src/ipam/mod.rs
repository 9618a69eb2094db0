//! Simulated in-cluster IPAM provider (cluster-api-ipam-provider-in-cluster behaviour).

mod address;
pub mod alloc;
mod controller;
mod index;
pub mod metal3;
mod pools;
mod webhook;

pub(crate) use controller::run;
pub use webhook::IPADDRESS_WEBHOOK;

pub const GROUP: &str = "ipam.cluster.x-k8s.io";
pub const AGENT: &str = "testbed-ipam";
pub const RELEASE_FINALIZER: &str = "ipam.cluster.x-k8s.io/ReleaseAddress";
pub const PROTECT_ADDRESS_FINALIZER: &str = "ipam.cluster.x-k8s.io/ProtectAddress";
pub const PROTECT_POOL_FINALIZER: &str = "ipam.cluster.x-k8s.io/ProtectPool";
pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";
pub const PAUSED_ANNOTATION: &str = "cluster.x-k8s.io/paused";
