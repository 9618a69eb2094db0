//! Every string a user can see: label and annotation keys, claim names, variable names, Event reasons,
//! metric names and flag names. The README tables are written from (and checked against) this module.

/// Pool label listing the ClusterClass names a pool serves (comma-separated).
/// The value `"true"` means: read the list from the pool annotation with the same key.
pub const LABEL_CLUSTER_CLASS: &str = "vip.capi.gorizond.io/cluster-class";
/// Pool label listing the roles a pool serves (comma-separated: `control-plane`, `ingress`).
/// Also set on our claims with the single role the claim is for.
pub const LABEL_ROLE: &str = "vip.capi.gorizond.io/role";
/// Cluster annotation: `"false"` turns the ingress VIP off for that Cluster (on by default).
pub const ANNOTATION_INGRESS_ENABLED: &str = "vip.capi.gorizond.io/ingress-enabled";
/// Cluster annotation (and, for IPv4 values, label) carrying the allocated ingress VIP.
pub const ANNOTATION_INGRESS_VIP: &str = "vip.capi.gorizond.io/ingress-vip";
/// Cluster annotation recording the control-plane VIP we allocated, as `<claim name>/<address>`: written with the
/// VIP, it tells our VIP from a hand-set host even when the claim has lost its status (`clusterctl move`, restore)
/// or was deleted.
pub const ANNOTATION_CONTROL_PLANE_CLAIM: &str = "vip.capi.gorizond.io/control-plane-claim";
/// Cluster annotation recording the ingress VIP we allocated, as `<claim name>/<address>`.
pub const ANNOTATION_INGRESS_CLAIM: &str = "vip.capi.gorizond.io/ingress-claim";
/// Cluster annotation asking for an exact control-plane VIP (read before the first claim is made).
pub const ANNOTATION_CONTROL_PLANE_ADDRESS: &str = "vip.capi.gorizond.io/control-plane-address";
/// Cluster annotation asking for an exact ingress VIP.
pub const ANNOTATION_INGRESS_ADDRESS: &str = "vip.capi.gorizond.io/ingress-address";
/// clusterctl's annotation on source objects of a move that are about to be deleted: left alone.
pub const ANNOTATION_DELETE_FOR_MOVE: &str = "clusterctl.cluster.x-k8s.io/delete-for-move";
/// Our finalizer on the IPAddress behind every VIP we wrote. The in-cluster IPAM provider deletes the IPAddress as
/// soon as its claim is deleted; while this finalizer holds the object, its address still counts as in use in the
/// pool, so a deleted claim never frees the address of a running Cluster. Removed by the operator when the Cluster
/// is gone or no longer uses the address.
pub const FINALIZER_ADDRESS_PROTECTION: &str = "vip.capi.gorizond.io/address-protection";
/// Suffix of the temporary IPAddress (`<claim name>-held`) that keeps a VIP reserved while the claim of a running
/// Cluster is recreated on it; deleted once the new claim is bound.
pub const HOLDER_SUFFIX: &str = "-held";
/// The class- or role-label value that redirects the list to the pool annotation of the same key (label values
/// cannot hold commas, so a real API server only accepts multi-item lists in the annotation).
pub const LIST_IN_ANNOTATION: &str = "true";

/// CAPI label naming the Cluster an object belongs to (set on our claims; the IPAM provider copies it).
pub const LABEL_CAPI_CLUSTER_NAME: &str = "cluster.x-k8s.io/cluster-name";
/// CAPI annotation that pauses a Cluster.
pub const ANNOTATION_CAPI_PAUSED: &str = "cluster.x-k8s.io/paused";

/// Role of the control-plane VIP (pool label value and claim label value).
pub const ROLE_CONTROL_PLANE: &str = "control-plane";
/// Role of the ingress VIP.
pub const ROLE_INGRESS: &str = "ingress";
/// Claim name prefix of the control-plane VIP: `vip-cp-<cluster>`.
pub const CLAIM_PREFIX_CONTROL_PLANE: &str = "vip-cp-";
/// Claim name prefix of the ingress VIP: `vip-ingress-<cluster>`.
pub const CLAIM_PREFIX_INGRESS: &str = "vip-ingress-";
/// Topology variable receiving the control-plane VIP when the ClusterClass declares it.
pub const VARIABLE_CLUSTER_VIP: &str = "clusterVip";
/// Topology variable receiving the ingress VIP when the ClusterClass declares it.
pub const VARIABLE_INGRESS_VIP: &str = "ingressVip";

/// Reporting controller of our Events, field manager of our writes, and user-agent product name.
pub const CONTROLLER_NAME: &str = "capi-vip-allocator";
/// Group of IPAM claims, addresses and pools.
pub const IPAM_GROUP: &str = "ipam.cluster.x-k8s.io";
/// Group of Cluster and ClusterClass.
pub const CAPI_GROUP: &str = "cluster.x-k8s.io";
/// The cluster-scoped pool kind we select from.
pub const KIND_GLOBAL_POOL: &str = "GlobalInClusterIPPool";
/// The namespaced pool kind we select from (a Cluster's own namespace only; tried before the global pools).
pub const KIND_POOL: &str = "InClusterIPPool";
/// Pool annotation: an integer; among the candidate pools of one tier (namespaced, then global), a higher
/// priority is tried first (default 0).
pub const ANNOTATION_POOL_PRIORITY: &str = "vip.capi.gorizond.io/priority";
/// Annotation on a namespaced pool: `"false"` keeps the Clusters of its namespace on their namespaced pools for the
/// classes and roles it serves, even when they are all exhausted (no fall-through to the global pools).
pub const ANNOTATION_POOL_FALLTHROUGH: &str = "vip.capi.gorizond.io/fallthrough";

/// Event reasons (also the `reason` label of `capi_vip_allocator_allocation_errors_total`).
pub mod reasons {
    /// Normal: the control-plane VIP was written to the Cluster.
    pub const VIP_ALLOCATED: &str = "VIPAllocated";
    /// Normal: the ingress VIP was written to the Cluster.
    pub const INGRESS_VIP_ALLOCATED: &str = "IngressVIPAllocated";
    /// Warning (control plane) / Normal (ingress): no pool carries the class and role labels.
    pub const POOL_NOT_FOUND: &str = "PoolNotFound";
    /// Warning: the chosen pool has no free address and our claim has none.
    pub const POOL_EXHAUSTED: &str = "PoolExhausted";
    /// Warning: a claim with our name is controlled by another object.
    pub const CLAIM_CONFLICT: &str = "ClaimConflict";
    /// Warning: the Cluster's ClusterClass is not in the cache.
    pub const CLUSTER_CLASS_NOT_FOUND: &str = "ClusterClassNotFound";
    /// Warning: the API server refused our Cluster patch for a reason other than a stale cache.
    pub const PATCH_FAILED: &str = "PatchFailed";
    /// Warning: the API server refused to create or adopt our claim.
    pub const CLAIM_FAILED: &str = "ClaimFailed";
    /// Normal: the Cluster already had an endpoint host; no claim is made (clusterVip mirrors it).
    pub const MANUAL_ENDPOINT: &str = "ManualEndpoint";
    /// Normal: a pending claim was deleted to be recreated on the currently matching pool.
    pub const CLAIM_REPLACED: &str = "ClaimReplaced";
    /// Warning: the IPAddress answering our claim carries no usable address (`spec.address` is not an IP).
    pub const ADDRESS_INVALID: &str = "AddressInvalid";
    /// Warning: the claim of a VIP the Cluster still uses was deleted (or now holds another address): the IPAM
    /// provider may hand the address to another Cluster.
    pub const VIP_RELEASED: &str = "VIPReleased";
    /// Warning: another Cluster (any namespace) has the same control-plane host.
    pub const DUPLICATE_VIP: &str = "DuplicateVIP";
    /// Warning: a hand-set endpoint (host or ingress annotation) lies in a VIP pool's range but no IPAddress
    /// reserves it: the IPAM provider may hand it to another Cluster.
    pub const ENDPOINT_NOT_RESERVED: &str = "EndpointNotReserved";
    /// Warning: the address a Cluster asks for (`vip.capi.gorizond.io/<role>-address`) cannot be reserved (not an
    /// IP, outside every candidate pool, excluded, the gateway, a reserved address, or allocated), or the annotation
    /// changed after the VIP was written; no other address is handed out instead.
    pub const ADDRESS_UNAVAILABLE: &str = "AddressUnavailable";
    /// Warning: `--vip-probe=tcp` found something answering on a freshly bound VIP; it is not written.
    pub const VIP_IN_USE: &str = "VIPInUse";
    /// Warning (on a pool): two pools that serve VIPs share addresses; the IPAM provider keeps addresses unique only
    /// within one pool.
    pub const POOL_OVERLAP: &str = "PoolOverlap";
    /// Warning: the claim of a VIP the Cluster uses was deleted; the address stayed reserved (our finalizer on its
    /// IPAddress) and the claim is recreated on the same address.
    pub const CLAIM_RESTORED: &str = "ClaimRestored";
    /// All reasons, for docs and tests.
    pub const ALL: &[&str] = &[
        VIP_ALLOCATED,
        INGRESS_VIP_ALLOCATED,
        POOL_NOT_FOUND,
        POOL_EXHAUSTED,
        CLAIM_CONFLICT,
        CLUSTER_CLASS_NOT_FOUND,
        PATCH_FAILED,
        CLAIM_FAILED,
        MANUAL_ENDPOINT,
        CLAIM_REPLACED,
        ADDRESS_INVALID,
        VIP_RELEASED,
        DUPLICATE_VIP,
        CLAIM_RESTORED,
        ENDPOINT_NOT_RESERVED,
        POOL_OVERLAP,
        VIP_IN_USE,
        ADDRESS_UNAVAILABLE,
    ];
}

/// The `action` field of our Events.
pub const EVENT_ACTION: &str = "AllocateVIP";

/// Environment variables that override the operator's time bounds (Go durations, e.g. `30s`), and its one
/// test-only fault switch. Documented in docs/operator.md, section "Timeouts, probes and supervision".
pub mod env {
    /// Overrides the read timeout of every get and write (default 30 s).
    pub const REQUEST_TIMEOUT: &str = "CAPI_VIP_ALLOCATOR_REQUEST_TIMEOUT";
    /// Overrides the per-reconcile deadline (default 60 s).
    pub const RECONCILE_TIMEOUT: &str = "CAPI_VIP_ALLOCATOR_RECONCILE_TIMEOUT";
    /// Overrides the liveness bound (default 2 × the reconcile timeout).
    pub const LIVENESS_BOUND: &str = "CAPI_VIP_ALLOCATOR_LIVENESS_BOUND";
    /// Overrides how long a watch may keep failing before `/readyz` is withdrawn (default 60 s).
    pub const WATCH_STALL: &str = "CAPI_VIP_ALLOCATOR_WATCH_STALL";
    /// Overrides the time in-flight reconciles get on SIGTERM (default 5 s).
    pub const SHUTDOWN_GRACE: &str = "CAPI_VIP_ALLOCATOR_SHUTDOWN_GRACE";
    /// Test-only fault injection: when set (a Go duration), the reconciler task of the first leadership term is
    /// aborted that long after it starts, to prove that a dead reconciler ends the process with a non-zero code.
    pub const FAULT_ABORT_RECONCILER: &str = "CAPI_VIP_ALLOCATOR_FAULT_ABORT_RECONCILER_AFTER";
}

/// Values of the `result` label of `capi_vip_allocator_reconcile_total`.
pub mod results {
    /// The reconcile completed (whatever it had to do).
    pub const SUCCESS: &str = "success";
    /// The reconcile failed and will be retried.
    pub const ERROR: &str = "error";
    /// The Cluster was skipped (paused, being deleted, or without a topology class).
    pub const SKIPPED: &str = "skipped";
}

/// Metric names (the Go operator's, unchanged).
pub mod metrics {
    /// Counter `{role,cluster_class}`: VIPs written to Clusters.
    pub const ALLOCATIONS_TOTAL: &str = "capi_vip_allocator_allocations_total";
    /// Counter `{role,cluster_class,reason}`: transitions into an error state (reason = Event reason).
    pub const ALLOCATION_ERRORS_TOTAL: &str = "capi_vip_allocator_allocation_errors_total";
    /// Histogram `{role,cluster_class}`: claim creation → our Cluster patch, in seconds.
    pub const ALLOCATION_DURATION_SECONDS: &str = "capi_vip_allocator_allocation_duration_seconds";
    /// Gauge `{cluster_class,role}`: pools matching a class and role.
    pub const POOLS_AVAILABLE: &str = "capi_vip_allocator_pools_available";
    /// Gauge `{pool_name,pool_namespace}`: `status.ipAddresses.total` of a pool (`pool_namespace` empty for global
    /// pools; same for the two below).
    pub const POOL_ADDRESSES_TOTAL: &str = "capi_vip_allocator_pool_addresses_total";
    /// Gauge `{pool_name,pool_namespace}`: `status.ipAddresses.free` of a pool.
    pub const POOL_ADDRESSES_FREE: &str = "capi_vip_allocator_pool_addresses_free";
    /// Gauge `{pool_name,pool_namespace}`: `status.ipAddresses.used` of a pool.
    pub const POOL_ADDRESSES_USED: &str = "capi_vip_allocator_pool_addresses_used";
    /// Gauge `{role,namespace}`: our claims.
    pub const CLAIMS_TOTAL: &str = "capi_vip_allocator_claims_total";
    /// Gauge `{role,namespace}`: our claims with an address.
    pub const CLAIMS_READY: &str = "capi_vip_allocator_claims_ready";
    /// Gauge `{role,namespace}`: our claims still waiting for an address.
    pub const CLAIMS_PENDING: &str = "capi_vip_allocator_claims_pending";
    /// Gauge (no labels): control-plane hosts shared by two or more Clusters.
    pub const DUPLICATE_VIPS: &str = "capi_vip_allocator_duplicate_vips";
    /// Gauge (no labels): pools serving VIPs that share addresses with another such pool.
    pub const OVERLAPPING_POOLS: &str = "capi_vip_allocator_overlapping_pools";
    /// Gauge `{role,namespace}`: age in seconds of the oldest of our claims still waiting for an address.
    pub const CLAIM_PENDING_OLDEST_SECONDS: &str =
        "capi_vip_allocator_claim_pending_oldest_seconds";
    /// Counter `{cluster_class,result}`: reconciles by result (`success`, `error`, `skipped`).
    pub const RECONCILE_TOTAL: &str = "capi_vip_allocator_reconcile_total";
    /// Histogram `{cluster_class}`: reconcile wall time in seconds.
    pub const RECONCILE_DURATION_SECONDS: &str = "capi_vip_allocator_reconcile_duration_seconds";
    /// Runtime SDK requests served by the hook server (ours; the Go operator had no such metric).
    pub const RUNTIME_EXTENSION_REQUESTS_TOTAL: &str =
        "capi_vip_allocator_runtime_extension_requests_total";
}

/// Command-line flag names (the Go operator's, plus ours).
pub mod flags {
    /// Address of `/metrics`.
    pub const METRICS_BIND_ADDRESS: &str = "metrics-bind-address";
    /// Address of `/healthz` and `/readyz`.
    pub const HEALTH_PROBE_BIND_ADDRESS: &str = "health-probe-bind-address";
    /// Leader election on/off.
    pub const LEADER_ELECT: &str = "leader-elect";
    /// Port written with the VIP when the Cluster has none.
    pub const DEFAULT_PORT: &str = "default-port";
    /// Cluster reconciles at once.
    pub const MAX_CONCURRENT_RECONCILES: &str = "max-concurrent-reconciles";
    /// Runs the Cluster reconciler.
    pub const ENABLE_RECONCILER: &str = "enable-reconciler";
    /// Runs the Runtime SDK hook server.
    pub const ENABLE_RUNTIME_EXTENSION: &str = "enable-runtime-extension";
    /// Further pool kinds (`<Kind>.<version>.<group>`) besides the two in-cluster ones.
    pub const POOL_KINDS: &str = "pool-kinds";
    /// How long a claim on a pool of unknown capacity may stay unbound before it moves to the next candidate.
    pub const PENDING_CLAIM_TIMEOUT: &str = "pending-claim-timeout";
}

#[cfg(test)]
mod tests {
    const DOC: &str = include_str!("../docs/operator.md");

    #[test]
    fn docs_mention_every_user_visible_string() {
        let mut all: Vec<&str> = vec![
            super::LABEL_CLUSTER_CLASS,
            super::LABEL_ROLE,
            super::ANNOTATION_INGRESS_ENABLED,
            super::ANNOTATION_INGRESS_VIP,
            super::ROLE_CONTROL_PLANE,
            super::ROLE_INGRESS,
            super::CLAIM_PREFIX_CONTROL_PLANE,
            super::CLAIM_PREFIX_INGRESS,
            super::VARIABLE_CLUSTER_VIP,
            super::VARIABLE_INGRESS_VIP,
            super::CONTROLLER_NAME,
            super::EVENT_ACTION,
            super::results::SUCCESS,
            super::results::ERROR,
            super::results::SKIPPED,
            super::ANNOTATION_CONTROL_PLANE_CLAIM,
            super::ANNOTATION_INGRESS_CLAIM,
            super::ANNOTATION_DELETE_FOR_MOVE,
            super::FINALIZER_ADDRESS_PROTECTION,
            super::KIND_POOL,
            super::ANNOTATION_CONTROL_PLANE_ADDRESS,
            super::ANNOTATION_INGRESS_ADDRESS,
            super::ANNOTATION_POOL_PRIORITY,
            super::ANNOTATION_POOL_FALLTHROUGH,
            super::HOLDER_SUFFIX,
            super::env::REQUEST_TIMEOUT,
            super::env::RECONCILE_TIMEOUT,
            super::env::LIVENESS_BOUND,
            super::env::WATCH_STALL,
            super::env::SHUTDOWN_GRACE,
            super::env::FAULT_ABORT_RECONCILER,
        ];
        all.extend_from_slice(super::reasons::ALL);
        use super::metrics as m;
        all.extend_from_slice(&[
            m::ALLOCATIONS_TOTAL,
            m::ALLOCATION_ERRORS_TOTAL,
            m::ALLOCATION_DURATION_SECONDS,
            m::POOLS_AVAILABLE,
            m::POOL_ADDRESSES_TOTAL,
            m::POOL_ADDRESSES_FREE,
            m::POOL_ADDRESSES_USED,
            m::CLAIMS_TOTAL,
            m::CLAIMS_READY,
            m::CLAIMS_PENDING,
            m::DUPLICATE_VIPS,
            m::CLAIM_PENDING_OLDEST_SECONDS,
            m::OVERLAPPING_POOLS,
            m::RECONCILE_TOTAL,
            m::RECONCILE_DURATION_SECONDS,
            m::RUNTIME_EXTENSION_REQUESTS_TOTAL,
        ]);
        let missing: Vec<&&str> = all.iter().filter(|s| !DOC.contains(**s)).collect();
        assert!(
            missing.is_empty(),
            "docs/operator.md does not mention {missing:?}"
        );
        let cmd = <crate::cli::Args as clap::CommandFactory>::command();
        for arg in cmd.get_arguments() {
            if let Some(long) = arg.get_long() {
                if !arg.is_hide_set()
                    && long != "help"
                    && long != "version"
                    && !long.starts_with("zap-")
                {
                    assert!(
                        DOC.contains(&format!("`--{long}")),
                        "docs/operator.md does not document --{long}"
                    );
                }
            }
        }
    }
}
