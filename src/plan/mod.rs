//! The rules: from a snapshot of one Cluster and everything it depends on, decide what to do.
//! Pure: no async, no client, no clock. `act` carries the plan out.

pub mod holds;
pub mod labels;
pub mod patch;
pub mod pools;
pub mod ranges;
pub mod requested;
mod rules;

#[cfg(test)]
pub(crate) mod tests;

pub use patch::{build_json_patch, ClusterChanges};
pub use rules::plan;

use crate::{
    api::{AddressView, ClaimView, ClassView, ClusterView, PoolRef, PoolView},
    names::{
        reasons, ANNOTATION_CONTROL_PLANE_CLAIM, ANNOTATION_INGRESS_CLAIM,
        CLAIM_PREFIX_CONTROL_PLANE, CLAIM_PREFIX_INGRESS, HOLDER_SUFFIX, ROLE_CONTROL_PLANE,
        ROLE_INGRESS, VARIABLE_CLUSTER_VIP, VARIABLE_INGRESS_VIP,
    },
};

/// Which VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The control-plane endpoint VIP.
    ControlPlane,
    /// The ingress VIP.
    Ingress,
}

impl Role {
    /// Both roles.
    pub const ALL: [Role; 2] = [Role::ControlPlane, Role::Ingress];

    /// The role's label value (`control-plane`, `ingress`).
    pub fn label(self) -> &'static str {
        match self {
            Role::ControlPlane => ROLE_CONTROL_PLANE,
            Role::Ingress => ROLE_INGRESS,
        }
    }

    /// Parses a role label value.
    pub fn from_label(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.label() == value)
    }

    /// The claim name for a Cluster: `vip-cp-<cluster>` / `vip-ingress-<cluster>`.
    pub fn claim_name(self, cluster: &str) -> String {
        match self {
            Role::ControlPlane => format!("{CLAIM_PREFIX_CONTROL_PLANE}{cluster}"),
            Role::Ingress => format!("{CLAIM_PREFIX_INGRESS}{cluster}"),
        }
    }

    /// The temporary IPAddress that keeps this role's VIP reserved while its claim is recreated:
    /// `<claim name>-held`.
    pub fn holder_name(self, cluster: &str) -> String {
        format!("{}{HOLDER_SUFFIX}", self.claim_name(cluster))
    }

    /// The Cluster name a claim name belongs to, if it has one of our prefixes.
    pub fn cluster_of_claim(claim: &str) -> Option<(Role, &str)> {
        // `vip-ingress-` does not start with `vip-cp-` and vice versa, so the order does not matter.
        if let Some(c) = claim.strip_prefix(CLAIM_PREFIX_CONTROL_PLANE) {
            return Some((Role::ControlPlane, c));
        }
        claim
            .strip_prefix(CLAIM_PREFIX_INGRESS)
            .map(|c| (Role::Ingress, c))
    }

    /// The topology variable carrying this VIP.
    pub fn variable(self) -> &'static str {
        match self {
            Role::ControlPlane => VARIABLE_CLUSTER_VIP,
            Role::Ingress => VARIABLE_INGRESS_VIP,
        }
    }

    /// The Cluster annotation recording where our VIP of this role came from (`<claim>/<address>`).
    pub fn provenance_annotation(self) -> &'static str {
        match self {
            Role::ControlPlane => ANNOTATION_CONTROL_PLANE_CLAIM,
            Role::Ingress => ANNOTATION_INGRESS_CLAIM,
        }
    }

    /// The Cluster annotation asking for an exact address for this VIP.
    pub fn requested_annotation(self) -> &'static str {
        match self {
            Role::ControlPlane => crate::names::ANNOTATION_CONTROL_PLANE_ADDRESS,
            Role::Ingress => crate::names::ANNOTATION_INGRESS_ADDRESS,
        }
    }

    /// The Normal Event reason published when this VIP is written.
    pub fn allocated_reason(self) -> &'static str {
        match self {
            Role::ControlPlane => reasons::VIP_ALLOCATED,
            Role::Ingress => reasons::INGRESS_VIP_ALLOCATED,
        }
    }
}

/// A claim and the address it points to, as cached.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoleInputs {
    /// The claim named for this role and Cluster, whoever owns it.
    pub claim: Option<ClaimView>,
    /// The IPAddress named by the claim's `status.addressRef`, or else the one answering the claim
    /// (same name, `spec.claimRef`) before the provider set `addressRef`.
    pub address: Option<AddressView>,
    /// Why the IPAddress named by the claim could not be read (it exists but is malformed).
    pub address_problem: Option<String>,
    /// The IPAddress named like the claim, whether or not the claim exists (after a claim is deleted, our
    /// finalizer keeps it, and its address reserved, until we let go).
    pub named: Option<AddressView>,
    /// Our temporary IPAddress `<claim name>-held`, if it exists.
    pub holder: Option<AddressView>,
    /// Every IPAddress (any namespace, any pool) holding the address the Cluster uses for this role (its host, or
    /// its ingress annotation): who reserved it, if anyone.
    pub same_ip: Vec<AddressView>,
    /// Every IPAddress (any namespace, any pool) holding the address the Cluster asks for in its
    /// `vip.capi.gorizond.io/<role>-address` annotation.
    pub requested_holders: Vec<AddressView>,
}

/// Everything the rules look at for one Cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The Cluster.
    pub cluster: ClusterView,
    /// Its ClusterClass (`None` = not in the cache).
    pub class: Option<ClassView>,
    /// All pools.
    pub pools: Vec<PoolView>,
    /// Control-plane claim and address.
    pub control_plane: RoleInputs,
    /// Ingress claim and address.
    pub ingress: RoleInputs,
    /// `--default-port`.
    pub default_port: u16,
    /// Now (for grace periods).
    pub now: jiff::Timestamp,
    /// Other Clusters (`namespace/name`, any namespace) whose control-plane host is this Cluster's.
    pub same_host: Vec<String>,
    /// VIPs about to be written that answered a `--vip-probe` (something the IPAM does not know uses them).
    pub answering: std::collections::BTreeSet<String>,
    /// Whether the caches of ClusterClasses, claims, addresses and pools hold their initial lists. Until then an
    /// absent claim or class may just not be cached yet (right after a restart), so nothing is decided.
    pub caches_synced: bool,
    /// `--pending-claim-timeout`, and the pools this Cluster's claims already timed out on.
    pub pending_claims: PendingClaims,
}

/// Claims pending on pools of unknown capacity (see `pools::after_timeout`).
#[derive(Debug, Clone, PartialEq)]
pub struct PendingClaims {
    /// How long such a claim may stay unbound before it moves to the next candidate.
    pub timeout: std::time::Duration,
    /// Pools a claim of this Cluster timed out on, per role (remembered by this process only): a new claim
    /// avoids them while another candidate is left.
    pub passed_over: Vec<(Role, PoolRef)>,
}

impl Default for PendingClaims {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_PENDING_CLAIM_TIMEOUT,
            passed_over: Vec::new(),
        }
    }
}

impl PendingClaims {
    /// The pools passed over for `role`.
    pub fn passed_over(&self, role: Role) -> Vec<&PoolRef> {
        self.passed_over
            .iter()
            .filter(|(r, _)| *r == role)
            .map(|(_, p)| p)
            .collect()
    }
}

/// Default of `--pending-claim-timeout`.
pub const DEFAULT_PENDING_CLAIM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

impl Snapshot {
    /// The inputs of a role.
    pub fn inputs(&self, role: Role) -> &RoleInputs {
        match role {
            Role::ControlPlane => &self.control_plane,
            Role::Ingress => &self.ingress,
        }
    }
}

/// A claim operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create claim `name` on `pool`, owned by the Cluster.
    CreateClaim {
        /// Role.
        role: Role,
        /// Claim name.
        name: String,
        /// Pool to claim from.
        pool: PoolRef,
    },
    /// Add our controller ownerReference and labels to an ownerless claim.
    AdoptClaim {
        /// Role.
        role: Role,
        /// Claim name.
        name: String,
    },
    /// Delete our claim (precondition: its uid) so it can be recreated or its address released.
    DeleteClaim {
        /// Role.
        role: Role,
        /// Claim name.
        name: String,
        /// Claim uid.
        uid: String,
    },
    /// Remember that `pool` did not answer this Cluster's claim of `role` in time (after the claim is deleted, its
    /// replacement goes to another candidate). No API request.
    PassOverPool {
        /// Role.
        role: Role,
        /// The pool.
        pool: PoolRef,
    },
    /// Create an IPAddress carrying our finalizer (see [`NewAddress`]).
    CreateAddress {
        /// Role.
        role: Role,
        /// What to create.
        address: NewAddress,
    },
    /// Add our finalizer to the IPAddress behind a VIP we wrote (guarded by its resourceVersion).
    ProtectAddress {
        /// Role.
        role: Role,
        /// IPAddress name.
        name: String,
    },
    /// Remove our finalizer from an IPAddress, and delete it when `delete` (a holder, or an address we created whose
    /// claim never came).
    ReleaseAddress {
        /// Role.
        role: Role,
        /// IPAddress name.
        name: String,
        /// Delete it too (precondition: its uid).
        delete: bool,
    },
}

/// An IPAddress we create ourselves, to keep or re-reserve exactly `address` in `pool`. The in-cluster provider
/// keeps an IPAddress named like a claim, in its namespace and with its `poolRef`, as that claim's allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAddress {
    /// Object name (the claim's, or the holder's).
    pub name: String,
    /// `spec.claimRef.name`.
    pub claim: String,
    /// `spec.address`.
    pub address: String,
    /// `spec.prefix`.
    pub prefix: i64,
    /// `spec.gateway`.
    pub gateway: Option<String>,
    /// `spec.poolRef`.
    pub pool: PoolRef,
}

/// Event severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    /// Informational.
    Normal,
    /// Needs attention.
    Warning,
}

/// A state worth telling the user about (published once per change of state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Role concerned.
    pub role: Role,
    /// Normal or Warning.
    pub severity: Severity,
    /// Event reason (also the `reason` metric label).
    pub reason: &'static str,
    /// Human message.
    pub note: String,
    /// Counts in `allocation_errors_total`.
    pub is_error: bool,
}

/// A VIP the Cluster patch writes for the first time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// Role.
    pub role: Role,
    /// The address.
    pub vip: String,
    /// When our claim was created (for `allocation_duration_seconds`).
    pub claim_created: Option<jiff::Timestamp>,
}

/// Why a Cluster is left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// No `spec.topology` class.
    NoTopology,
    /// `spec.paused` or the paused annotation.
    Paused,
    /// Being deleted.
    Deleting,
    /// Being moved away by `clusterctl move` (annotated `delete-for-move`): the target's operator takes over.
    MovingAway,
}

/// What to do for one Cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Set when nothing at all is done.
    pub skip: Option<Skip>,
    /// Claim operations, executed before the Cluster patches.
    pub steps: Vec<Step>,
    /// Operations executed after the Cluster patches (protecting the IPAddress of a VIP never delays the VIP).
    pub finally: Vec<Step>,
    /// Our fields to write on the Cluster, one write per role, so a refusal of one role's fields (a ClusterClass
    /// schema that rejects the ingress variable, say) never holds back another role's VIP.
    pub writes: std::collections::BTreeMap<Role, ClusterChanges>,
    /// VIPs written by `changes` (Events and metrics after the patch succeeds).
    pub allocations: Vec<Allocation>,
    /// The current state per role, when it is worth an Event.
    pub reports: Vec<Report>,
    /// A collision with other Clusters (the same control-plane host), told apart from the per-role state.
    pub collision: Option<Report>,
    /// Look again after this long even if nothing changes (a grace period is running).
    pub requeue_after: Option<std::time::Duration>,
}

impl Plan {
    /// The fields to write for `role` (empty when none).
    pub fn changes(&self, role: Role) -> &ClusterChanges {
        static NONE: std::sync::OnceLock<ClusterChanges> = std::sync::OnceLock::new();
        self.writes
            .get(&role)
            .unwrap_or_else(|| NONE.get_or_init(ClusterChanges::default))
    }

    /// The fields to write for `role`, to add to.
    pub fn changes_mut(&mut self, role: Role) -> &mut ClusterChanges {
        self.writes.entry(role).or_default()
    }

    /// Nothing to write on the Cluster.
    pub fn writes_nothing(&self) -> bool {
        self.writes.values().all(ClusterChanges::is_empty)
    }
}

/// How soon a VIP that answered a probe is probed again.
pub const PROBE_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a pending claim on a pool showing `free == 0` waits before `PoolExhausted` is reported: the pool's
/// counters can reflect our own claim's address before the claim's `addressRef` reaches the cache.
pub const EXHAUSTION_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// How soon a Cluster reconciled before the secondary caches were filled is looked at again.
pub const SYNC_WAIT: std::time::Duration = std::time::Duration::from_millis(200);
