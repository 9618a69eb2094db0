//! Letting go of the IPAddresses our finalizer holds for Clusters that are gone or being deleted.
//!
//! The reconciler only sees Clusters that exist; a Cluster's IPAddresses become terminating after the Cluster has
//! gone (its claims are garbage-collected, then the IPAM provider deletes their IPAddresses). So every event of an
//! IPAddress carrying our finalizer, every deleted Cluster and every reconciler term offers the IPAddresses
//! concerned here; the leader's releaser decides from the caches (`plan::holds::release_orphan`) and removes the
//! finalizer (and deletes what no claim answers any more). Nothing is released while a Cluster that may own the
//! IPAddress exists and is not being deleted.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{channel::mpsc, StreamExt};
use tokio_util::sync::CancellationToken;

use super::{act, Context};
use crate::{
    api::{AddressView, ClusterView},
    names::HOLDER_SUFFIX,
    plan::{holds, Role, Step},
};

/// `(namespace, name)` of an IPAddress.
pub type AddressKey = (String, String);

/// How soon a release that failed is tried again.
const RETRY: Duration = Duration::from_secs(5);
/// Releases in flight at once.
const CONCURRENCY: usize = 4;

/// Where offers go: the current term's releaser, or nowhere while this replica does not lead.
#[derive(Clone, Default)]
pub struct Orphans {
    slot: Arc<Mutex<Option<mpsc::UnboundedSender<AddressKey>>>>,
}

impl Orphans {
    /// Asks the releaser to look at this IPAddress.
    pub fn offer(&self, namespace: &str, name: &str) {
        if let Some(tx) = self.slot.lock().ok().as_ref().and_then(|s| s.as_ref()) {
            let _ = tx.unbounded_send((namespace.to_owned(), name.to_owned()));
        }
    }

    fn open(&self) -> mpsc::UnboundedReceiver<AddressKey> {
        let (tx, rx) = mpsc::unbounded();
        if let Ok(mut s) = self.slot.lock() {
            *s = Some(tx);
        }
        rx
    }

    fn close(&self) {
        if let Ok(mut s) = self.slot.lock() {
            *s = None;
        }
    }
}

/// The Clusters an IPAddress may belong to: the `cluster.x-k8s.io/cluster-name` label, else the Cluster its claim
/// name says (for a holder name, both readings of the `-held` suffix).
pub fn owners(address: &AddressView) -> Vec<String> {
    if let Some(label) = address.cluster_label.as_ref().filter(|l| !l.is_empty()) {
        return vec![label.clone()];
    }
    let claim = address.claim_name.as_deref().unwrap_or(&address.name);
    let mut found: Vec<String> = super::stores::cluster_of_claim_name(claim)
        .into_iter()
        .collect();
    if let Some(c) = claim
        .strip_suffix(HOLDER_SUFFIX)
        .and_then(super::stores::cluster_of_claim_name)
    {
        found.push(c);
    }
    found
}

/// Offers every cached IPAddress carrying our finalizer, or only those of Cluster `namespace/name`.
pub fn offer_cached(ctx: &Context, cluster: Option<(&str, &str)>) {
    for entry in ctx.stores.addresses.state() {
        let Ok(a) = entry.as_ref() else { continue };
        if !a.protected() {
            continue;
        }
        let concerned = cluster
            .is_none_or(|(ns, name)| a.namespace == ns && owners(a).iter().any(|o| o == name));
        if concerned {
            ctx.orphans.offer(&a.namespace, &a.name);
        }
    }
}

/// What the caches say to do with one offered IPAddress.
fn decide(ctx: &Context, key: &AddressKey) -> Option<(Role, Step)> {
    let entry = ctx.stores.addresses.get(&key.0, &key.1)?;
    let address = entry.as_ref().as_ref().ok()?;
    let mut live: Option<ClusterView> = None;
    let mut deleting: Option<ClusterView> = None;
    for name in owners(address) {
        let Some(obj) = ctx.stores.cluster(&key.0, &name) else {
            continue;
        };
        match ClusterView::parse(&obj) {
            Ok(c) if c.deleting => deleting = Some(c),
            Ok(c) => live = Some(c),
            Err(_) => return None, // unreadable: never release on a guess
        }
    }
    let cluster = live.or(deleting);
    let claim_alive = address
        .claim_name
        .as_deref()
        .and_then(|c| ctx.stores.claims.get(&key.0, c))
        .is_some_and(|c| !c.deleting);
    match holds::release_orphan(address, cluster.as_ref(), claim_alive)? {
        step @ Step::ReleaseAddress { role, .. } => Some((role, step)),
        _ => None,
    }
}

/// The releaser of one term: every cached protected IPAddress once, then every offer, until `stop`.
pub async fn run(ctx: Arc<Context>, stop: CancellationToken) {
    let rx = ctx.orphans.open();
    offer_cached(&ctx, None);
    rx.take_until(stop.clone().cancelled_owned())
        .for_each_concurrent(CONCURRENCY, |key| {
            let ctx = ctx.clone();
            let stop = stop.clone();
            async move {
                if !ctx.stores.secondary_caches_synced() {
                    // Claims not listed yet: a live claim could look absent. The sync's relist offers it again.
                    return;
                }
                let Some((role, Step::ReleaseAddress { name, delete, .. })) = decide(&ctx, &key)
                else {
                    return;
                };
                if let Err(e) = act::release_address(&ctx, &key.0, role, &name, delete).await {
                    tracing::warn!(address = %name, namespace = %key.0, error = %e,
                        "releasing an IPAddress of a deleted Cluster failed; retrying");
                    let orphans = ctx.orphans.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = tokio::time::sleep(RETRY) => orphans.offer(&key.0, &key.1),
                            _ = stop.cancelled() => {}
                        }
                    });
                }
            }
        })
        .await;
    ctx.orphans.close();
}
