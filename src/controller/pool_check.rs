//! Overlapping VIP pools, told on the pools themselves.
//!
//! The in-cluster IPAM provider keeps addresses unique within one pool only: two pools serving VIPs whose ranges
//! overlap can hand one address to two Clusters. Every pool event pokes the leader's checker, which compares every
//! pair of pools (`plan::ranges::overlaps`) and publishes Warning `PoolOverlap` on each pool whose set of overlapping
//! partners changed, naming them and the first shared address. The gauge is computed at scrape time from the same
//! function.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::ObjectReference;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{events::Notice, Context};
use crate::{names::reasons, plan::Severity};

/// How soon the checker looks again while the caches are still being filled.
const SYNC_WAIT: Duration = Duration::from_millis(200);

/// The checker's doorbell: rung by every pool event; a ring while nobody waits is kept for the next wait.
#[derive(Clone, Default)]
pub struct PoolCheck {
    bell: Arc<Notify>,
}

impl PoolCheck {
    /// A pool changed.
    pub fn poke(&self) {
        self.bell.notify_one();
    }
}

type Overlaps = BTreeMap<String, Vec<(String, IpAddr)>>;

/// The checker of one term: at its start and after every pool event, until `stop`.
pub async fn run(ctx: Arc<Context>, stop: CancellationToken) {
    let mut told = Overlaps::new();
    loop {
        if ctx.stores.secondary_caches_synced() {
            check(&ctx, &mut told);
            tokio::select! {
                _ = ctx.pool_check.bell.notified() => {}
                _ = stop.cancelled() => return,
            }
        } else {
            tokio::select! {
                _ = tokio::time::sleep(SYNC_WAIT) => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}

fn check(ctx: &Context, told: &mut Overlaps) {
    let pools = ctx.stores.pool_views();
    let now = crate::plan::ranges::overlaps(&pools);
    for (key, partners) in &now {
        if told.get(key) == Some(partners) {
            continue;
        }
        let Some(pool) = pools.iter().find(|p| match &p.namespace {
            Some(ns) => *key == format!("{ns}/{}", p.name),
            None => *key == p.name,
        }) else {
            continue;
        };
        let others: Vec<String> = partners
            .iter()
            .map(|(other, ip)| format!("{other} (from {ip})"))
            .collect();
        let note = format!(
            "pool {key} shares addresses with pool {}: the IPAM provider keeps addresses unique only within one \
             pool, so two Clusters may get the same VIP; make the ranges disjoint (spec.addresses or \
             spec.excludedAddresses)",
            others.join(", ")
        );
        tracing::warn!(pool = %key, reason = reasons::POOL_OVERLAP, "{note}");
        let shape = if pool.namespace.is_some() {
            &ctx.shapes.pool
        } else {
            &ctx.shapes.global_pool
        };
        let notice = Notice {
            regarding: ObjectReference {
                api_version: Some(shape.api_version.clone()),
                kind: Some(pool.kind.clone()),
                name: Some(pool.name.clone()),
                namespace: pool.namespace.clone(),
                ..Default::default()
            },
            severity: Severity::Warning,
            reason: reasons::POOL_OVERLAP,
            note,
        };
        ctx.events.send(notice, ctx.clock.now());
    }
    *told = now;
}
