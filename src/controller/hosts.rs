//! Which Clusters share a control-plane host: an index kept from the Cluster watch (no reads of its own), so a
//! collision — two Clusters answering for one address, ours or hand-set, in any namespace — is seen the moment the
//! second host is written, and the peers of a Cluster are known without scanning every Cluster.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    sync::{Arc, Mutex, PoisonError},
};

/// A Cluster, `(namespace, name)`.
pub type ClusterKey = (String, String);

/// The host as compared: an IP in its canonical text (so `fd00:0::5` and `fd00::5` collide), else the name in
/// lower case.
fn normalise(host: &str) -> String {
    let host = host.trim();
    host.parse::<std::net::IpAddr>()
        .map(|ip| ip.to_string())
        .unwrap_or_else(|_| host.to_ascii_lowercase())
}

#[derive(Debug, Default)]
struct Inner {
    by_host: BTreeMap<String, BTreeSet<ClusterKey>>,
    host_of: BTreeMap<ClusterKey, String>,
}

impl Inner {
    /// Removes `key`; returns the Clusters it shared its host with.
    fn remove(&mut self, key: &ClusterKey) -> Vec<ClusterKey> {
        let Some(host) = self.host_of.remove(key) else {
            return Vec::new();
        };
        let Some(set) = self.by_host.get_mut(&host) else {
            return Vec::new();
        };
        set.remove(key);
        let peers: Vec<ClusterKey> = set.iter().cloned().collect();
        if set.is_empty() {
            self.by_host.remove(&host);
        }
        peers
    }
}

/// The index. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct HostIndex {
    inner: Arc<Mutex<Inner>>,
}

impl HostIndex {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the host of `key` (`None`: no host). Returns the Clusters whose collisions may have changed: those
    /// that shared the old host or share the new one (not `key` itself).
    pub fn set(&self, key: &ClusterKey, host: Option<&str>) -> Vec<ClusterKey> {
        let host = host.filter(|h| !h.trim().is_empty()).map(normalise);
        let mut inner = self.lock();
        if inner.host_of.get(key) == host.as_ref() {
            return Vec::new();
        }
        let mut touched = inner.remove(key);
        if let Some(host) = host {
            let set = inner.by_host.entry(host.clone()).or_default();
            touched.extend(set.iter().cloned());
            set.insert(key.clone());
            inner.host_of.insert(key.clone(), host);
        }
        touched
    }

    /// Forgets `key`; returns the Clusters it shared its host with.
    pub fn remove(&self, key: &ClusterKey) -> Vec<ClusterKey> {
        self.lock().remove(key)
    }

    /// Forgets every Cluster not in `alive` (after a relist); returns their former peers.
    pub fn retain(&self, alive: &HashSet<ClusterKey>) -> Vec<ClusterKey> {
        let mut inner = self.lock();
        let gone: Vec<ClusterKey> = inner
            .host_of
            .keys()
            .filter(|k| !alive.contains(*k))
            .cloned()
            .collect();
        gone.iter().flat_map(|k| inner.remove(k)).collect()
    }

    /// The other Clusters whose host is `key`'s, as `namespace/name`.
    pub fn peers(&self, key: &ClusterKey) -> Vec<String> {
        let inner = self.lock();
        let Some(host) = inner.host_of.get(key) else {
            return Vec::new();
        };
        inner
            .by_host
            .get(host)
            .map(|set| {
                set.iter()
                    .filter(|k| *k != key)
                    .map(|(ns, n)| format!("{ns}/{n}"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many hosts two or more Clusters share.
    pub fn duplicated(&self) -> u64 {
        self.lock().by_host.values().filter(|s| s.len() > 1).count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(ns: &str, n: &str) -> ClusterKey {
        (ns.to_owned(), n.to_owned())
    }

    #[test]
    fn shared_hosts_are_peers_in_any_namespace_and_any_spelling() {
        let idx = HostIndex::default();
        assert!(idx.set(&k("a", "one"), Some("10.0.0.5")).is_empty());
        assert_eq!(
            idx.set(&k("b", "two"), Some("10.0.0.5")),
            vec![k("a", "one")]
        );
        assert_eq!(idx.peers(&k("a", "one")), vec!["b/two".to_owned()]);
        assert_eq!(idx.duplicated(), 1);
        assert_eq!(
            idx.set(&k("c", "six"), Some("fd00:0::5")),
            Vec::<ClusterKey>::new()
        );
        assert_eq!(
            idx.set(&k("c", "six2"), Some("FD00::5")),
            vec![k("c", "six")]
        );
        assert_eq!(idx.duplicated(), 2);
        // Same host again: nothing changes, nobody to tell.
        assert!(idx.set(&k("b", "two"), Some("10.0.0.5")).is_empty());
    }

    #[test]
    fn moving_or_dropping_a_host_tells_the_former_peers() {
        let idx = HostIndex::default();
        idx.set(&k("a", "one"), Some("10.0.0.5"));
        idx.set(&k("b", "two"), Some("10.0.0.5"));
        assert_eq!(
            idx.set(&k("b", "two"), Some("10.0.0.6")),
            vec![k("a", "one")]
        );
        assert!(idx.peers(&k("a", "one")).is_empty());
        assert_eq!(idx.duplicated(), 0);
        idx.set(&k("c", "three"), Some("10.0.0.6"));
        assert_eq!(idx.remove(&k("c", "three")), vec![k("b", "two")]);
        idx.set(&k("d", "four"), Some("10.0.0.6"));
        assert_eq!(idx.set(&k("d", "four"), None), vec![k("b", "two")]);
        idx.set(&k("e", "five"), Some("10.0.0.6"));
        let alive: HashSet<ClusterKey> = [k("a", "one"), k("b", "two")].into_iter().collect();
        assert_eq!(idx.retain(&alive), vec![k("b", "two")]);
        assert_eq!(idx.duplicated(), 0);
    }
}
