//! Figures from the testbed's write log and request counters: the latency split per Cluster (all timestamps
//! from the server's clock, when each write finished) and the operator's requests by verb.

use std::collections::{BTreeMap, HashMap};

use testbed::Stats;

use crate::workload::{claim_name, Key, VipTracker};

/// Prefix of the operator's user agent (`capi-vip-allocator/<version>`).
pub const OPERATOR_AGENT: &str = "capi-vip-allocator/";
/// The workload driver's user agent.
pub const CLIENT_AGENT: &str = "testbed-client";

fn is_operator(agent: &str) -> bool {
    agent.starts_with(OPERATOR_AGENT)
}

/// Where one Cluster's time went, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Split {
    /// Cluster created → the operator created its claim (operator).
    pub to_claim: f64,
    /// Claim created → the IPAM provider wrote `status.addressRef` (IPAM provider, including its delay).
    pub ipam: f64,
    /// `status.addressRef` written → the operator's Cluster patch carrying the VIP (operator).
    pub to_vip: f64,
    /// Cluster created → VIP written (what the user waits for).
    pub total: f64,
}

impl Split {
    /// The operator's own share: everything but the IPAM provider's.
    pub fn operator(&self) -> f64 {
        self.to_claim + self.to_vip
    }
}

type Named = (String, String);

fn key(ns: &str, name: &str) -> Named {
    (ns.to_owned(), name.to_owned())
}

/// Splits of `keys` (each must have a VIP in `tracker`); fails if any step is missing from the write log.
pub fn latency_splits(
    stats: &Stats,
    tracker: &VipTracker,
    keys: &[Key],
) -> Result<Vec<Split>, String> {
    let mut created: HashMap<Named, u64> = HashMap::new();
    let mut claimed: HashMap<Named, u64> = HashMap::new();
    let mut bound: HashMap<Named, u64> = HashMap::new();
    let mut cluster_writes: HashMap<Named, Vec<(u64, Option<&str>)>> = HashMap::new();
    for w in stats.writes.iter().filter(|w| w.code < 300) {
        let k = || key(&w.namespace, &w.name);
        match (w.resource.as_str(), w.subresource.as_str(), w.verb.as_str()) {
            ("clusters", "", "create") if w.user_agent == CLIENT_AGENT => {
                created.entry(k()).or_insert(w.time_us);
            }
            ("clusters", _, _) if is_operator(&w.user_agent) => {
                cluster_writes
                    .entry(k())
                    .or_default()
                    .push((w.time_us, w.resource_version.as_deref()));
            }
            ("ipaddressclaims", "", "create") if is_operator(&w.user_agent) => {
                claimed.entry(k()).or_insert(w.time_us);
            }
            ("ipaddressclaims", "status", _) if w.user_agent == testbed::ipam::AGENT => {
                bound.entry(k()).or_insert(w.time_us);
            }
            _ => {}
        }
    }
    let ms = |from: u64, to: u64| (to as f64 - from as f64) / 1000.0;
    keys.iter()
        .map(|(ns, name)| {
            let what = |step: &str| format!("{ns}/{name}: no {step} in the testbed's write log");
            let seen = tracker
                .get(&key(ns, name))
                .ok_or_else(|| what("VIP seen by the watch"))?;
            let claim = key(ns, &claim_name(name));
            let t_created = *created
                .get(&key(ns, name))
                .ok_or_else(|| what("Cluster create"))?;
            let t_claim = *claimed
                .get(&claim)
                .ok_or_else(|| what("claim create by the operator"))?;
            let t_bound = *bound
                .get(&claim)
                .ok_or_else(|| what("status.addressRef write by the IPAM provider"))?;
            // The operator's write that produced the first version with a VIP, matched by resourceVersion.
            let t_vip = cluster_writes
                .get(&key(ns, name))
                .and_then(|ws| {
                    ws.iter()
                        .find(|(_, rv)| *rv == Some(seen.resource_version.as_str()))
                })
                .map(|(t, _)| *t)
                .ok_or_else(|| {
                    what(&format!(
                        "operator Cluster write with resourceVersion {}",
                        seen.resource_version
                    ))
                })?;
            Ok(Split {
                to_claim: ms(t_created, t_claim),
                ipam: ms(t_claim, t_bound),
                to_vip: ms(t_bound, t_vip),
                total: ms(t_created, t_vip),
            })
        })
        .collect()
}

/// Time span of a set of Clusters: first Cluster create → last VIP write (server clock), in seconds.
pub fn span_seconds(stats: &Stats, tracker: &VipTracker, keys: &[Key]) -> Result<f64, String> {
    let rvs: HashMap<Named, String> = keys
        .iter()
        .map(|(ns, n)| {
            let seen = tracker
                .get(&key(ns, n))
                .ok_or_else(|| format!("{ns}/{n}: no VIP"))?;
            Ok((key(ns, n), seen.resource_version))
        })
        .collect::<Result<_, String>>()?;
    let mut first = u64::MAX;
    let mut last = 0u64;
    let mut found = 0usize;
    for w in stats
        .writes
        .iter()
        .filter(|w| w.code < 300 && w.resource == "clusters")
    {
        let k = key(&w.namespace, &w.name);
        let Some(rv) = rvs.get(&k) else { continue };
        if w.user_agent == CLIENT_AGENT && w.verb == "create" {
            first = first.min(w.time_us);
        } else if is_operator(&w.user_agent) && w.resource_version.as_deref() == Some(rv.as_str()) {
            last = last.max(w.time_us);
            found += 1;
        }
    }
    if first == u64::MAX || found != keys.len() {
        return Err(format!(
            "write log holds {found} of {} VIP writes",
            keys.len()
        ));
    }
    Ok((last.saturating_sub(first)) as f64 / 1e6)
}

/// The operator's requests, by "verb resource[/subresource]".
pub fn operator_requests(stats: &Stats) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for r in stats.requests.iter().filter(|r| is_operator(&r.user_agent)) {
        let what = if r.subresource.is_empty() {
            format!("{} {}", r.verb, r.resource)
        } else {
            format!("{} {}/{}", r.verb, r.resource, r.subresource)
        };
        *m.entry(what).or_insert(0) += r.count;
    }
    m
}

/// `after - before`, dropping zeros.
pub fn diff(
    after: &BTreeMap<String, u64>,
    before: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(before.get(k).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn verb(what: &str) -> &str {
    what.split(' ').next().unwrap_or("")
}

/// Requests that change state.
pub fn writes(reqs: &BTreeMap<String, u64>) -> u64 {
    reqs.iter()
        .filter(|(k, _)| {
            matches!(
                verb(k),
                "create" | "update" | "patch" | "apply" | "delete" | "deletecollection"
            )
        })
        .map(|(_, v)| v)
        .sum()
}

/// Reads that do not go through a watch (GET and LIST).
pub fn direct_reads(reqs: &BTreeMap<String, u64>) -> u64 {
    reqs.iter()
        .filter(|(k, _)| matches!(verb(k), "get" | "list"))
        .map(|(_, v)| v)
        .sum()
}

pub fn total(reqs: &BTreeMap<String, u64>) -> u64 {
    reqs.values().sum()
}

/// Nearest-rank percentile of `values` (`p` in 0..=100).
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

/// p50/p90/p99/max of `values`.
pub fn quantiles(values: &[f64]) -> [f64; 4] {
    [
        percentile(values, 50.0),
        percentile(values, 90.0),
        percentile(values, 99.0),
        percentile(values, 100.0),
    ]
}

/// The operator's writes after `after_seq` that failed, by "verb resource code".
pub fn operator_failed_writes(stats: &Stats, after_seq: u64) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for w in stats
        .writes
        .iter()
        .filter(|w| w.seq > after_seq && w.code >= 300 && is_operator(&w.user_agent))
    {
        *m.entry(format!("{} {} {}", w.verb, w.resource, w.code))
            .or_insert(0) += 1;
    }
    m
}

/// Sequence number of the last write so far.
pub fn last_seq(stats: &Stats) -> u64 {
    stats.writes.last().map(|w| w.seq).unwrap_or(0)
}

/// The operator's writes after `after_seq` (any outcome), by "verb resource name".
pub fn operator_writes_since(stats: &Stats, after_seq: u64) -> Vec<String> {
    stats
        .writes
        .iter()
        .filter(|w| w.seq > after_seq && is_operator(&w.user_agent))
        .map(|w| {
            format!(
                "{} {} {}/{} → {}",
                w.verb, w.resource, w.namespace, w.name, w.code
            )
        })
        .collect()
}
