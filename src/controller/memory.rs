//! Small in-memory state per Cluster uid: the last reported reason per slot (so an Event is published once per
//! change of state) and the count of consecutive failures (for backoff). Pruned when the Cluster goes away.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use crate::plan::Role;

/// What a remembered reason is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// A role's allocation state.
    Role(Role),
    /// The outcome of our last write (PatchFailed, ClaimFailed).
    Write,
    /// A collision with other Clusters (DuplicateVIP).
    Collision,
}

#[derive(Debug, Default)]
struct ClusterMemory {
    last: HashMap<Slot, &'static str>,
    /// Consecutive failures per kind of failure (so a run of stale-cache retries does not lengthen the backoff
    /// of a later server error).
    failures: HashMap<&'static str, u32>,
    /// When this process created the claim of a role (sub-second, unlike `creationTimestamp`).
    claim_created: HashMap<Role, jiff::Timestamp>,
    /// Pools a claim of a role timed out on (`--pending-claim-timeout`).
    passed_over: Vec<(Role, crate::api::PoolRef)>,
    /// The resourceVersions our last reconcile's Cluster patches replaced (one per write that changed something).
    patched_from: Vec<String>,
    /// IPAddress name → the resourceVersion our finalizer patch replaced (until the cache shows a newer one).
    protected_from: HashMap<String, String>,
}

/// Per-Cluster memory.
#[derive(Debug, Default)]
pub struct Memory {
    inner: Mutex<HashMap<String, ClusterMemory>>,
}

impl Memory {
    fn with<T>(&self, uid: &str, f: impl FnOnce(&mut ClusterMemory) -> T) -> T {
        let mut map = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(map.entry(uid.to_owned()).or_default())
    }

    /// Records the current reason of `slot`; true when it differs from the last one and is `Some`
    /// (i.e. an Event should be published).
    pub fn transition(&self, uid: &str, slot: Slot, reason: Option<&'static str>) -> bool {
        self.with(uid, |m| {
            let changed = m.last.get(&slot).copied() != reason;
            match reason {
                Some(r) => {
                    m.last.insert(slot, r);
                }
                None => {
                    m.last.remove(&slot);
                }
            }
            changed && reason.is_some()
        })
    }

    /// One more consecutive failure of `kind`; returns the count before it. Other kinds are reset.
    pub fn failed(&self, uid: &str, kind: &'static str) -> u32 {
        self.with(uid, |m| {
            let n = m.failures.get(kind).copied().unwrap_or(0);
            m.failures.clear();
            m.failures.insert(kind, n.saturating_add(1));
            n
        })
    }

    /// Remembers that `pool` did not answer a claim of `role` in time.
    pub fn pass_over(&self, uid: &str, role: Role, pool: &crate::api::PoolRef) {
        self.with(uid, |m| {
            if !m.passed_over.iter().any(|(r, p)| *r == role && p == pool) {
                m.passed_over.push((role, pool.clone()));
            }
        })
    }

    /// The pools passed over for the Cluster `uid`.
    pub fn passed_over(&self, uid: &str) -> Vec<(Role, crate::api::PoolRef)> {
        self.with(uid, |m| m.passed_over.clone())
    }

    /// Resets the failure counts.
    pub fn succeeded(&self, uid: &str) {
        self.with(uid, |m| m.failures.clear());
    }

    /// Remembers when we created the claim of `role`.
    pub fn claim_created(&self, uid: &str, role: Role, at: jiff::Timestamp) {
        self.with(uid, |m| {
            m.claim_created.insert(role, at);
        });
    }

    /// When we created the claim of `role`, if this process did (not consumed).
    pub fn claim_created_at(&self, uid: &str, role: Role) -> Option<jiff::Timestamp> {
        self.with(uid, |m| m.claim_created.get(&role).copied())
    }

    /// Forgets our record of the claim of `role` (it was deleted).
    pub fn claim_gone(&self, uid: &str, role: Role) {
        self.with(uid, |m| {
            m.claim_created.remove(&role);
        });
    }

    /// When we created the claim of `role`, if this process did (consumed).
    pub fn take_claim_created(&self, uid: &str, role: Role) -> Option<jiff::Timestamp> {
        self.with(uid, |m| m.claim_created.remove(&role))
    }

    /// Records the resourceVersions our Cluster patches of this reconcile replaced (none when nothing changed:
    /// a patch the server found to be a no-op keeps the version, and no watch event of ours is coming).
    pub fn patched_from(&self, uid: &str, replaced: Vec<String>) {
        self.with(uid, |m| m.patched_from = replaced);
    }

    /// Whether the cache still shows a version one of our last patches replaced (our write has not arrived yet).
    /// Only equality of resourceVersions is used: they are opaque.
    pub fn cache_behind_our_write(&self, uid: &str, resource_version: &str) -> bool {
        self.with(uid, |m| {
            m.patched_from.iter().any(|v| v == resource_version)
        })
    }

    /// Records that our finalizer patch of IPAddress `name` replaced version `replaced`.
    pub fn protected_from(&self, uid: &str, name: &str, replaced: String) {
        self.with(uid, |m| m.protected_from.insert(name.to_owned(), replaced));
    }

    /// Whether the cache still shows the version of IPAddress `name` our finalizer patch replaced (protecting it
    /// again would only fail its guard). Forgets the record once the cache has moved on.
    pub fn protect_behind(&self, uid: &str, name: &str, cached: &str) -> bool {
        self.with(uid, |m| match m.protected_from.get(name) {
            Some(v) if v == cached => true,
            Some(_) => {
                m.protected_from.remove(name);
                false
            }
            None => false,
        })
    }

    /// Consecutive failures of `kind` so far.
    pub fn failures(&self, uid: &str, kind: &'static str) -> u32 {
        self.with(uid, |m| m.failures.get(kind).copied().unwrap_or(0))
    }

    /// Forgets a deleted Cluster.
    pub fn forget(&self, uid: &str) {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(uid);
    }

    /// Forgets every Cluster not in `alive` (after a relist).
    pub fn retain(&self, alive: &HashSet<String>) {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|uid, _| alive.contains(uid));
    }

    /// Number of remembered Clusters.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Nothing remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_state_change() {
        let m = Memory::default();
        let s = Slot::Role(Role::ControlPlane);
        assert!(m.transition("u", s, Some("PoolNotFound")));
        assert!(
            !m.transition("u", s, Some("PoolNotFound")),
            "same state: no second Event"
        );
        assert!(m.transition("u", s, Some("PoolExhausted")));
        assert!(!m.transition("u", s, None));
        assert!(
            m.transition("u", s, Some("PoolExhausted")),
            "left and re-entered: a new Event"
        );
        assert!(
            m.transition("u", Slot::Role(Role::Ingress), Some("PoolExhausted")),
            "slots are independent"
        );
    }

    #[test]
    fn forget_and_retain_prune() {
        let m = Memory::default();
        m.transition("a", Slot::Write, Some("PatchFailed"));
        m.transition("b", Slot::Write, Some("PatchFailed"));
        m.forget("a");
        assert_eq!(m.len(), 1);
        m.retain(&HashSet::new());
        assert!(m.is_empty());
    }

    #[test]
    fn claim_creation_time_is_taken_once() {
        let m = Memory::default();
        let t = jiff::Timestamp::from_second(100).unwrap();
        m.claim_created("u", Role::Ingress, t);
        assert_eq!(m.take_claim_created("u", Role::ControlPlane), None);
        assert_eq!(m.take_claim_created("u", Role::Ingress), Some(t));
        assert_eq!(m.take_claim_created("u", Role::Ingress), None);
    }

    #[test]
    fn cache_is_behind_until_a_newer_version_arrives() {
        let m = Memory::default();
        assert!(!m.cache_behind_our_write("u", "5"));
        m.patched_from("u", vec!["5".into()]);
        assert!(m.cache_behind_our_write("u", "5"));
        assert!(!m.cache_behind_our_write("u", "6"));
        // Two writes in one reconcile (control plane, then ingress): behind until the second one arrives.
        m.patched_from("u", vec!["5".into(), "6".into()]);
        assert!(m.cache_behind_our_write("u", "5") && m.cache_behind_our_write("u", "6"));
        assert!(!m.cache_behind_our_write("u", "7"));
        // A write the server found to change nothing replaced no version: nothing to wait for.
        m.patched_from("u", Vec::new());
        assert!(!m.cache_behind_our_write("u", "5"));
    }

    #[test]
    fn failures_count_and_reset() {
        let m = Memory::default();
        assert_eq!(m.failed("u", "stale"), 0);
        assert_eq!(m.failed("u", "stale"), 1);
        assert_eq!(m.failed("u", "stale"), 2);
        assert_eq!(
            m.failed("u", "transient"),
            0,
            "a run of stale retries does not lengthen server backoff"
        );
        assert_eq!(m.failed("u", "transient"), 1);
        m.succeeded("u");
        assert_eq!(m.failed("u", "transient"), 0);
    }
}
