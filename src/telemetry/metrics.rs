//! Prometheus metrics. Counters and histograms are updated by the controller; every gauge is computed from the
//! watched caches at scrape time ([`CacheGauges`]), so it is true at every scrape and series of deleted pools
//! or namespaces disappear. Counter and histogram series of a `cluster_class` that is no longer live (no cached
//! ClusterClass or Cluster names it) are removed at scrape time, so deleted classes do not leave series behind.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
};

use prometheus::{
    core::{Collector, Desc},
    proto::MetricFamily,
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::names::metrics as m;

/// Counters and histograms, and the registry that also holds the gauges and process metrics.
pub struct Metrics {
    registry: Registry,
    allocations: IntCounterVec,
    errors: IntCounterVec,
    allocation_duration: HistogramVec,
    reconciles: IntCounterVec,
    reconcile_duration: HistogramVec,
    hook_requests: IntCounterVec,
    /// The gauges' cache reader, also asked which classes are live.
    source: Mutex<Option<Arc<dyn SampleSource>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Registers every counter, histogram and the process collector.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let allocations = IntCounterVec::new(
            Opts::new(
                m::ALLOCATIONS_TOTAL,
                "VIPs written to Clusters, by role and ClusterClass.",
            ),
            &["role", "cluster_class"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(m::ALLOCATION_ERRORS_TOTAL, "Transitions into an allocation error, by role, ClusterClass and reason (the Event reason)."),
            &["role", "cluster_class", "reason"],
        )?;
        let allocation_duration = HistogramVec::new(
            HistogramOpts::new(
                m::ALLOCATION_DURATION_SECONDS,
                "Seconds from IPAddressClaim creation to the Cluster patch carrying the VIP.",
            ),
            &["role", "cluster_class"],
        )?;
        let reconciles = IntCounterVec::new(
            Opts::new(
                m::RECONCILE_TOTAL,
                "Cluster reconciles, by ClusterClass and result (success, error, skipped).",
            ),
            &["cluster_class", "result"],
        )?;
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new(
                m::RECONCILE_DURATION_SECONDS,
                "Seconds spent in one Cluster reconcile.",
            ),
            &["cluster_class"],
        )?;
        let hook_requests = IntCounterVec::new(
            Opts::new(
                m::RUNTIME_EXTENSION_REQUESTS_TOTAL,
                "Runtime SDK requests answered by the hook server, by handler (discovery, BeforeClusterCreate, other) and result (success, blocked, failure, rejected).",
            ),
            &["handler", "result"],
        )?;
        registry.register(Box::new(hook_requests.clone()))?;
        registry.register(Box::new(allocations.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(allocation_duration.clone()))?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            registry,
            allocations,
            errors,
            allocation_duration,
            reconciles,
            reconcile_duration,
            hook_requests,
            source: Mutex::default(),
        })
    }

    /// Adds the scrape-time gauges computed from the caches; their source also decides which `cluster_class`
    /// series are live.
    pub fn register_gauges(&self, gauges: CacheGauges) -> Result<(), prometheus::Error> {
        let source = gauges.source.clone();
        self.registry.register(Box::new(gauges))?;
        if let Ok(mut slot) = self.source.lock() {
            *slot = Some(source);
        }
        Ok(())
    }

    /// Removes every counter and histogram series whose `cluster_class` is not in `live`. The empty class (the
    /// series of Clusters without a topology class) is always kept. Returns how many series were removed.
    pub fn prune_classes(&self, live: &BTreeSet<String>) -> usize {
        let keep = |class: &str| class.is_empty() || live.contains(class);
        let mut removed = 0;
        removed += prune(&self.allocations, &keep, |v, l| v.remove(l));
        removed += prune(&self.errors, &keep, |v, l| v.remove(l));
        removed += prune(&self.allocation_duration, &keep, |v, l| v.remove(l));
        removed += prune(&self.reconciles, &keep, |v, l| v.remove(l));
        removed += prune(&self.reconcile_duration, &keep, |v, l| v.remove(l));
        removed
    }

    /// A VIP was written.
    pub fn allocated(&self, role: &str, class: &str, seconds: Option<f64>) {
        self.allocations.with_label_values(&[role, class]).inc();
        if let Some(s) = seconds {
            self.allocation_duration
                .with_label_values(&[role, class])
                .observe(s.max(0.0));
        }
    }

    /// An error state was entered.
    pub fn error(&self, role: &str, class: &str, reason: &str) {
        self.errors.with_label_values(&[role, class, reason]).inc();
    }

    /// The hook server answered a request.
    pub fn hook_request(&self, handler: &str, result: &str) {
        self.hook_requests
            .with_label_values(&[handler, result])
            .inc();
    }

    /// A reconcile finished.
    pub fn reconciled(&self, class: &str, result: &str, seconds: f64) {
        self.reconciles.with_label_values(&[class, result]).inc();
        self.reconcile_duration
            .with_label_values(&[class])
            .observe(seconds);
    }

    /// The text exposition of every metric (series of classes that are gone are pruned first).
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let source = self.source.lock().ok().and_then(|s| s.clone());
        if let Some(live) = source.and_then(|s| s.live_classes()) {
            let removed = self.prune_classes(&live);
            if removed > 0 {
                tracing::debug!(
                    removed,
                    "removed metric series of ClusterClasses that are gone"
                );
            }
        }
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// Removes the series of `vec` whose `cluster_class` label fails `keep`.
fn prune<V: Collector>(
    vec: &V,
    keep: &dyn Fn(&str) -> bool,
    remove: impl Fn(&V, &HashMap<&str, &str>) -> prometheus::Result<()>,
) -> usize {
    let mut removed = 0;
    for family in vec.collect() {
        for metric in family.get_metric() {
            let labels: HashMap<&str, &str> = metric
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            let Some(class) = labels.get("cluster_class") else {
                continue;
            };
            if !keep(class) && remove(vec, &labels).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

/// One pool as the gauges see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSample {
    /// Pool name.
    pub name: String,
    /// Pool namespace (empty for a cluster-scoped pool).
    pub namespace: String,
    /// `status.ipAddresses.{total,free,used}`.
    pub total: Option<i64>,
    /// Free.
    pub free: Option<i64>,
    /// Used.
    pub used: Option<i64>,
}

/// Everything the gauges need, read from the caches at scrape time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GaugeSample {
    /// `(cluster_class, role)` → number of matching pools.
    pub pools_available: BTreeMap<(String, String), u64>,
    /// Pools.
    pub pools: Vec<PoolSample>,
    /// `(role, namespace)` → (total, ready) of our claims.
    pub claims: BTreeMap<(String, String), (u64, u64)>,
    /// Control-plane hosts that two or more Clusters share.
    pub duplicate_vips: u64,
    /// `(role, namespace)` → age in seconds of the oldest of our claims without an address.
    pub pending_oldest: BTreeMap<(String, String), f64>,
    /// Pools serving VIPs that share addresses with another such pool.
    pub overlapping_pools: u64,
}

/// A source of gauge samples (the controller's caches).
pub trait SampleSource: Send + Sync {
    /// Reads the caches now.
    fn sample(&self) -> GaugeSample;

    /// The ClusterClass names still in use (named by a cached ClusterClass or a cached Cluster's class ref);
    /// `None` while unknown (caches not there yet), in which case nothing is pruned.
    fn live_classes(&self) -> Option<BTreeSet<String>> {
        None
    }
}

/// The scrape-time gauge collector.
pub struct CacheGauges {
    source: Arc<dyn SampleSource>,
    descs: Vec<Desc>,
}

struct GaugeDef {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
}

const GAUGES: [GaugeDef; 10] = [
    GaugeDef {
        name: m::POOLS_AVAILABLE,
        help: "Pools whose labels match a ClusterClass and role.",
        labels: &["cluster_class", "role"],
    },
    GaugeDef {
        name: m::POOL_ADDRESSES_TOTAL,
        help: "Allocatable addresses of a pool (status.ipAddresses.total).",
        labels: &["pool_name", "pool_namespace"],
    },
    GaugeDef {
        name: m::POOL_ADDRESSES_FREE,
        help: "Free addresses of a pool (status.ipAddresses.free).",
        labels: &["pool_name", "pool_namespace"],
    },
    GaugeDef {
        name: m::POOL_ADDRESSES_USED,
        help: "Used addresses of a pool (status.ipAddresses.used).",
        labels: &["pool_name", "pool_namespace"],
    },
    GaugeDef {
        name: m::CLAIMS_TOTAL,
        help: "IPAddressClaims made by the operator.",
        labels: &["role", "namespace"],
    },
    GaugeDef {
        name: m::CLAIMS_READY,
        help: "IPAddressClaims made by the operator that have an address.",
        labels: &["role", "namespace"],
    },
    GaugeDef {
        name: m::CLAIMS_PENDING,
        help: "IPAddressClaims made by the operator still waiting for an address.",
        labels: &["role", "namespace"],
    },
    GaugeDef {
        name: m::DUPLICATE_VIPS,
        help: "Control-plane endpoint hosts shared by two or more Clusters (any namespace).",
        labels: &[],
    },
    GaugeDef {
        name: m::CLAIM_PENDING_OLDEST_SECONDS,
        help: "Age in seconds of the oldest IPAddressClaim made by the operator that still waits for an address.",
        labels: &["role", "namespace"],
    },
    GaugeDef {
        name: m::OVERLAPPING_POOLS,
        help: "Pools serving VIPs whose addresses overlap another such pool's (0 is healthy).",
        labels: &[],
    },
];

impl CacheGauges {
    /// A collector reading from `source`.
    pub fn new(source: Box<dyn SampleSource>) -> Result<Self, prometheus::Error> {
        let descs = GAUGES
            .iter()
            .map(|g| {
                Desc::new(
                    g.name.into(),
                    g.help.into(),
                    g.labels.iter().map(|l| (*l).to_owned()).collect(),
                    Default::default(),
                )
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            source: Arc::from(source),
            descs,
        })
    }

    fn vecs() -> Result<Vec<GaugeVec>, prometheus::Error> {
        GAUGES
            .iter()
            .map(|g| GaugeVec::new(Opts::new(g.name, g.help), g.labels))
            .collect()
    }
}

impl Collector for CacheGauges {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok(vecs) = Self::vecs() else {
            return Vec::new();
        };
        let sample = self.source.sample();
        for ((class, role), n) in &sample.pools_available {
            vecs[0]
                .with_label_values(&[class.as_str(), role.as_str()])
                .set(*n as f64);
        }
        for p in &sample.pools {
            for (i, v) in [(1, p.total), (2, p.free), (3, p.used)] {
                if let Some(v) = v {
                    vecs[i]
                        .with_label_values(&[p.name.as_str(), p.namespace.as_str()])
                        .set(v as f64);
                }
            }
        }
        for ((role, ns), (total, ready)) in &sample.claims {
            let labels = [role.as_str(), ns.as_str()];
            vecs[4].with_label_values(&labels).set(*total as f64);
            vecs[5].with_label_values(&labels).set(*ready as f64);
            vecs[6]
                .with_label_values(&labels)
                .set(total.saturating_sub(*ready) as f64);
        }
        vecs[7]
            .with_label_values(&[] as &[&str])
            .set(sample.duplicate_vips as f64);
        vecs[9]
            .with_label_values(&[] as &[&str])
            .set(sample.overlapping_pools as f64);
        for ((role, ns), age) in &sample.pending_oldest {
            vecs[8]
                .with_label_values(&[role.as_str(), ns.as_str()])
                .set(*age);
        }
        vecs.iter().flat_map(|v| v.collect()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(GaugeSample);
    impl SampleSource for Fixed {
        fn sample(&self) -> GaugeSample {
            self.0.clone()
        }
    }

    #[test]
    fn gauges_reflect_the_sample_and_counters_render_with_exact_names() {
        let metrics = Metrics::new().unwrap();
        let mut sample = GaugeSample::default();
        sample
            .pools_available
            .insert(("gold".into(), "control-plane".into()), 2);
        sample.pools.push(PoolSample {
            name: "p1".into(),
            namespace: String::new(),
            total: Some(10),
            free: Some(7),
            used: Some(3),
        });
        sample
            .claims
            .insert(("control-plane".into(), "ns".into()), (3, 2));
        sample
            .pending_oldest
            .insert(("control-plane".into(), "ns".into()), 42.5);
        metrics
            .register_gauges(CacheGauges::new(Box::new(Fixed(sample))).unwrap())
            .unwrap();
        metrics.allocated("control-plane", "gold", Some(0.2));
        metrics.error("ingress", "gold", "PoolNotFound");
        metrics.reconciled("gold", "success", 0.001);
        let text = metrics.render().unwrap();
        for line in [
            "capi_vip_allocator_pools_available{cluster_class=\"gold\",role=\"control-plane\"} 2",
            "capi_vip_allocator_pool_addresses_total{pool_name=\"p1\",pool_namespace=\"\"} 10",
            "capi_vip_allocator_pool_addresses_free{pool_name=\"p1\",pool_namespace=\"\"} 7",
            "capi_vip_allocator_pool_addresses_used{pool_name=\"p1\",pool_namespace=\"\"} 3",
            "capi_vip_allocator_claim_pending_oldest_seconds{namespace=\"ns\",role=\"control-plane\"} 42.5",
            "capi_vip_allocator_claims_total{namespace=\"ns\",role=\"control-plane\"} 3",
            "capi_vip_allocator_claims_ready{namespace=\"ns\",role=\"control-plane\"} 2",
            "capi_vip_allocator_claims_pending{namespace=\"ns\",role=\"control-plane\"} 1",
            "capi_vip_allocator_allocations_total{cluster_class=\"gold\",role=\"control-plane\"} 1",
            "capi_vip_allocator_allocation_errors_total{cluster_class=\"gold\",reason=\"PoolNotFound\",role=\"ingress\"} 1",
            "capi_vip_allocator_allocation_duration_seconds_bucket{cluster_class=\"gold\",role=\"control-plane\",le=\"0.25\"} 1",
            "capi_vip_allocator_reconcile_total{cluster_class=\"gold\",result=\"success\"} 1",
            "capi_vip_allocator_reconcile_duration_seconds_count{cluster_class=\"gold\"} 1",
        ] {
            assert!(text.contains(line), "missing {line}\n{text}");
        }
        assert!(
            text.contains("le=\"0.005\"") && text.contains("le=\"10\""),
            "default buckets"
        );
    }

    #[test]
    fn series_of_vanished_pools_disappear() {
        use std::sync::{Arc, Mutex};
        struct Shared(Arc<Mutex<GaugeSample>>);
        impl SampleSource for Shared {
            fn sample(&self) -> GaugeSample {
                self.0.lock().unwrap().clone()
            }
        }
        let state = Arc::new(Mutex::new(GaugeSample::default()));
        state.lock().unwrap().pools.push(PoolSample {
            name: "gone".into(),
            namespace: String::new(),
            total: Some(1),
            free: Some(1),
            used: Some(0),
        });
        let metrics = Metrics::new().unwrap();
        metrics
            .register_gauges(CacheGauges::new(Box::new(Shared(state.clone()))).unwrap())
            .unwrap();
        assert!(metrics.render().unwrap().contains("pool_name=\"gone\""));
        state.lock().unwrap().pools.clear();
        assert!(!metrics.render().unwrap().contains("pool_name=\"gone\""));
    }

    #[test]
    fn series_of_classes_no_longer_live_are_pruned_at_scrape() {
        use std::sync::{Arc, Mutex};
        struct Live(Arc<Mutex<Option<BTreeSet<String>>>>);
        impl SampleSource for Live {
            fn sample(&self) -> GaugeSample {
                GaugeSample::default()
            }
            fn live_classes(&self) -> Option<BTreeSet<String>> {
                self.0.lock().unwrap().clone()
            }
        }
        let live = Arc::new(Mutex::new(None));
        let metrics = Metrics::new().unwrap();
        metrics
            .register_gauges(CacheGauges::new(Box::new(Live(live.clone()))).unwrap())
            .unwrap();
        for class in ["gone", "kept", ""] {
            metrics.allocated("control-plane", class, Some(0.1));
            metrics.error("ingress", class, "PoolNotFound");
            metrics.reconciled(class, "success", 0.001);
        }
        // Liveness unknown (caches not there yet): nothing is pruned.
        let text = metrics.render().unwrap();
        assert!(text.contains("cluster_class=\"gone\""), "{text}");
        *live.lock().unwrap() = Some(["kept".to_owned()].into_iter().collect());
        let text = metrics.render().unwrap();
        assert!(!text.contains("cluster_class=\"gone\""), "{text}");
        for family in [
            m::ALLOCATIONS_TOTAL,
            m::ALLOCATION_ERRORS_TOTAL,
            m::ALLOCATION_DURATION_SECONDS,
            m::RECONCILE_TOTAL,
            m::RECONCILE_DURATION_SECONDS,
        ] {
            for class in ["kept", ""] {
                assert!(
                    text.lines().any(|l| l.starts_with(family)
                        && l.contains(&format!("cluster_class=\"{class}\""))),
                    "{family} lost the live class {class:?}:\n{text}"
                );
            }
        }
        // A class that comes back starts afresh.
        metrics.allocated("control-plane", "gone", None);
        *live.lock().unwrap() = Some(["kept".to_owned(), "gone".to_owned()].into_iter().collect());
        assert!(metrics.render().unwrap().contains(
            "capi_vip_allocator_allocations_total{cluster_class=\"gone\",role=\"control-plane\"} 1"
        ));
        // Nothing live: the five series of "kept" and the one of "gone" go; the classless ones stay.
        assert_eq!(metrics.prune_classes(&BTreeSet::new()), 6);
        let text = metrics.render().unwrap();
        assert!(text.contains("cluster_class=\"\"") && !text.contains("cluster_class=\"kept\""));
    }
}
