//! The measured phases. Each environment is a fresh in-process testbed plus the release operator:
//! `main` (idle, latency, burst, API cost, steady state, start-up, large), `delay` (latency with a slow IPAM
//! provider) and `soak` (create/delete cycles).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kube::Client;
use testbed::{Profile, Testbed, TestbedOptions};

use crate::analysis::{self, quantiles, Split};
use crate::common::shapes;
use crate::config::Options;
use crate::operator::OperatorProcess;
use crate::procfs;
use crate::report::Report;
use crate::workload::{self, Key, VipTracker, Workload};

const PROFILE: Profile = Profile::Capi112;
const MIB: f64 = 1024.0;
/// Name of the end-state check of each phase.
const CHECK: &str = "Clusters without their claim's address as VIP, or sharing a VIP";

/// A testbed, the operator against it, the workload driver and the VIP watch.
pub struct Bed {
    pub tb: Testbed,
    pub op: OperatorProcess,
    pub work: Workload,
    pub tracker: VipTracker,
    label: String,
    opts: Options,
}

impl Bed {
    pub async fn start(opts: &Options, label: &str, ipam_delay: Duration) -> Result<Bed, String> {
        let tb = Testbed::start(TestbedOptions {
            ipam_delay,
            ..TestbedOptions::profile(PROFILE)
        })
        .await
        .map_err(|e| format!("testbed: {e}"))?;
        let client: Client = tb.client();
        let shapes = shapes(PROFILE);
        let tracker = VipTracker::start(client.clone(), &shapes).await?;
        std::fs::create_dir_all(&opts.out_dir)
            .map_err(|e| format!("{}: {e}", opts.out_dir.display()))?;
        let mut op = OperatorProcess::spawn(
            &opts.operator_bin,
            tb.kubeconfig_path(),
            &opts.operator_log,
            log_path(opts, label, 0),
        )?;
        op.wait_ready(Duration::from_secs(30)).await?;
        Ok(Bed {
            tb,
            op,
            work: Workload::new(client, shapes, opts.concurrency),
            tracker,
            label: label.into(),
            opts: opts.clone(),
        })
    }

    /// A namespace with the bench's ClusterClass in it.
    async fn namespace_with_class(&self, ns: &str, class: &str) -> Result<(), String> {
        self.work.namespace(ns).await?;
        self.work.class(ns, class).await
    }

    /// Creates `n` Clusters named `<prefix>-NNNNN` at once; waits until all have VIPs; checks them.
    async fn burst(
        &self,
        ns: &str,
        prefix: &str,
        class: &str,
        range: std::ops::Range<usize>,
    ) -> Result<Burst, String> {
        let names: Vec<String> = range.map(|i| format!("{prefix}-{i:05}")).collect();
        let keys: Vec<Key> = names.iter().map(|n| (ns.to_owned(), n.clone())).collect();
        let t0 = Instant::now();
        self.work.create_clusters(ns, &names, class).await?;
        let created_in = t0.elapsed();
        let timeout = Duration::from_secs(60) + Duration::from_millis(100) * names.len() as u32;
        self.tracker.wait_all(&keys, timeout).await?;
        let verified = self.work.verify(ns, &names).await?;
        let span = analysis::span_seconds(&self.tb.stats(), &self.tracker, &keys)?;
        Ok(Burst {
            names,
            problems: verified.problems,
            created_in,
            span,
        })
    }

    /// Creates the Clusters one at a time, each after the previous got its VIP; returns their latency splits.
    async fn one_at_a_time(
        &self,
        ns: &str,
        class: &str,
        n: usize,
        per_cluster: Duration,
    ) -> Result<(Vec<Split>, Vec<String>), String> {
        let mut names = Vec::with_capacity(n);
        let mut keys = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("lat-{i:05}");
            self.work.create_cluster(ns, &name, class).await?;
            let key = (ns.to_owned(), name.clone());
            self.tracker
                .wait_all(std::slice::from_ref(&key), per_cluster)
                .await?;
            names.push(name);
            keys.push(key);
        }
        let verified = self.work.verify(ns, &names).await?;
        Ok((
            analysis::latency_splits(&self.tb.stats(), &self.tracker, &keys)?,
            verified.problems,
        ))
    }

    async fn restart_operator(&mut self, generation: usize) -> Result<Duration, String> {
        let log = log_path(&self.opts, &self.label, generation);
        let mut op = OperatorProcess::spawn(
            &self.opts.operator_bin,
            self.tb.kubeconfig_path(),
            &self.opts.operator_log,
            log,
        )?;
        let ready = op.wait_ready(Duration::from_secs(30)).await;
        let old = std::mem::replace(&mut self.op, op);
        drop(old);
        ready
    }

    /// Stops everything; with `BENCH_DUMP=1` first writes the testbed's write log and request counters to
    /// `target/bench/stats-<label>.json` (for profiling a missed target).
    pub async fn stop(self) -> Result<(), String> {
        let Bed {
            tb,
            op,
            tracker,
            label,
            opts,
            ..
        } = self;
        if opts.dump {
            let path = opts.out_dir.join(format!("stats-{label}.json"));
            let text = serde_json::to_string(&tb.stats()).map_err(|e| format!("stats: {e}"))?;
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        drop(tracker);
        let r = op.stop().await;
        tb.shutdown().await;
        r
    }
}

fn log_path(opts: &Options, label: &str, generation: usize) -> std::path::PathBuf {
    opts.out_dir
        .join(format!("operator-{label}-{generation}.log"))
}

struct Burst {
    names: Vec<String>,
    /// Clusters without their claim's address as VIP, VIPs held twice.
    problems: Vec<String>,
    /// Client-side time to get every create accepted.
    created_in: Duration,
    /// First create → last VIP write, server clock (seconds).
    span: f64,
}

/// "a ×1, b ×2" (or "none").
fn counts(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} ×{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn mib(kib: u64) -> f64 {
    kib as f64 / MIB
}

fn ms_of(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// p50/p90/p99/max figures of one latency series; the target (if any) applies to p99.
fn latency_figures(
    r: &mut Report,
    section: &str,
    what: &str,
    values: &[f64],
    p99_max: Option<f64>,
) {
    let [p50, p90, p99, max] = quantiles(values);
    r.info(section, &format!("{what} p50"), p50, "ms");
    r.info(section, &format!("{what} p90"), p90, "ms");
    match p99_max {
        Some(t) => r.at_most(section, &format!("{what} p99"), p99, "ms", t),
        None => r.info(section, &format!("{what} p99"), p99, "ms"),
    }
    r.info(section, &format!("{what} max"), max, "ms");
}

async fn settle(d: Duration) {
    tokio::time::sleep(d).await;
}

/// Phases 1–5 on one environment.
pub async fn main_env(opts: &Options, r: &mut Report) -> Result<(), String> {
    let mut bed = Bed::start(opts, "main", Duration::ZERO).await?;
    let class = "bench";
    bed.work.pool("bench-cp", "10.64.0.0/16", class).await?;

    // Idle: caches synced, a pool and a class, no Cluster.
    bed.work.namespace("bench-idle").await?;
    bed.work.class("bench-idle", class).await?;
    settle(Duration::from_secs(3)).await;
    let idle = bed.op.memory()?;
    r.info(
        "memory",
        "RSS peak, start-up to idle",
        mib(idle.hwm_kib),
        "MiB",
    );
    r.at_most(
        "memory",
        "RSS idle (steady)",
        mib(idle.rss_kib),
        "MiB",
        15.0,
    );

    // 1. Latency, one Cluster at a time.
    let sec = "latency (zero-delay IPAM)";
    bed.namespace_with_class("bench-latency", class).await?;
    let (splits, problems) = bed
        .one_at_a_time(
            "bench-latency",
            class,
            opts.latency_n,
            Duration::from_secs(10),
        )
        .await?;
    r.info(
        sec,
        "Clusters created one at a time",
        splits.len() as f64,
        "",
    );
    r.check(sec, CHECK, &problems);
    let col = |f: fn(&Split) -> f64| splits.iter().map(f).collect::<Vec<f64>>();
    latency_figures(
        r,
        sec,
        "operator share: addressRef → VIP patch",
        &col(|s| s.to_vip),
        Some(50.0),
    );
    latency_figures(
        r,
        sec,
        "Cluster created → VIP",
        &col(|s| s.total),
        Some(100.0),
    );
    r.info(
        sec,
        "operator: Cluster created → claim created p99",
        analysis::percentile(&col(|s| s.to_claim), 99.0),
        "ms",
    );
    r.info(
        sec,
        "IPAM provider: claim → addressRef p99",
        analysis::percentile(&col(|s| s.ipam), 99.0),
        "ms",
    );
    let latency_names: Vec<String> = (0..opts.latency_n).map(|i| format!("lat-{i:05}")).collect();
    bed.work
        .delete_clusters("bench-latency", &latency_names)
        .await?;
    bed.work
        .wait_namespace_empty("bench-latency", Duration::from_secs(60))
        .await?;
    settle(Duration::from_secs(1)).await;

    // 2–4. Burst, API cost, CPU, memory at burst size.
    let sec = "burst";
    let n = opts.burst_n;
    bed.namespace_with_class("bench-burst", class).await?;
    settle(Duration::from_millis(500)).await;
    let reqs_before = analysis::operator_requests(&bed.tb.stats());
    let cpu_before = bed.op.cpu_time()?;
    let self_cpu_before = procfs::cpu_time(std::process::id())?;
    bed.op.reset_peak();
    let seq_before = analysis::last_seq(&bed.tb.stats());
    let burst = bed.burst("bench-burst", "burst", class, 0..n).await?;
    let cpu = bed.op.cpu_time()?.saturating_sub(cpu_before);
    r.check(sec, CHECK, &burst.problems);
    let self_cpu = procfs::cpu_time(std::process::id())?.saturating_sub(self_cpu_before);
    r.info(
        sec,
        &format!("Clusters created at once ({} in flight)", opts.concurrency),
        n as f64,
        "",
    );
    r.info(
        sec,
        "creates accepted by the testbed",
        n as f64 / burst.created_in.as_secs_f64(),
        "Clusters/s",
    );
    r.info(sec, "first create → last VIP", burst.span, "s");
    r.at_least(sec, "throughput", n as f64 / burst.span, "VIPs/s", 1000.0);
    r.info(
        "cpu",
        "operator CPU per 1,000 allocations",
        cpu.as_secs_f64() * 1000.0 / n as f64,
        "s",
    );
    r.info(
        "cpu",
        "testbed + driver CPU per 1,000 allocations (bench process)",
        self_cpu.as_secs_f64() * 1000.0 / n as f64,
        "s",
    );
    let peak = bed.op.memory()?;
    settle(Duration::from_secs(3)).await;
    let reqs = analysis::diff(&analysis::operator_requests(&bed.tb.stats()), &reqs_before);
    let per = |v: u64| v as f64 / n as f64;
    let sec = "API cost";
    r.at_most(
        sec,
        "writes per VIP (claim + Cluster patch + IPAddress finalizer + Event)",
        per(analysis::writes(&reqs)),
        "",
        4.0,
    );
    r.at_most(
        sec,
        "GET/LIST requests per VIP (bypassing the watch caches)",
        per(analysis::direct_reads(&reqs)),
        "",
        0.0,
    );
    r.info(sec, "all requests per VIP", per(analysis::total(&reqs)), "");
    let by_verb: std::collections::BTreeMap<String, f64> =
        reqs.iter().map(|(k, v)| (k.clone(), per(*v))).collect();
    r.note(format!(
        "operator requests per VIP during the burst, by verb: {}",
        by_verb
            .iter()
            .map(|(k, v)| format!("{k} {v:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    r.detail("burst_requests_per_vip", &by_verb);
    let failed = analysis::operator_failed_writes(&bed.tb.stats(), seq_before);
    r.info(
        sec,
        "failed writes per VIP (non-2xx answers)",
        per(failed.values().sum()),
        "",
    );
    if !failed.is_empty() {
        r.note(format!(
            "operator writes that failed during the burst: {}",
            failed
                .iter()
                .map(|(k, v)| format!("{k} ×{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    r.detail("burst_failed_writes", &failed);
    let burst_reasons = bed.work.event_reasons("bench-burst").await;
    match &burst_reasons {
        Ok(reasons) => {
            r.note(format!(
                "Events stored for the {n} burst Clusters, by reason: {}",
                counts(reasons)
            ));
            r.detail("burst_events_by_reason", reasons);
        }
        Err(e) => r.note(format!("could not list Events: {e}")),
    }

    // Steady state at burst size.
    let before = analysis::operator_requests(&bed.tb.stats());
    settle(opts.steady).await;
    let steady = analysis::diff(&analysis::operator_requests(&bed.tb.stats()), &before);
    let minutes = opts.steady.as_secs_f64() / 60.0;
    let total = analysis::total(&steady) as f64;
    r.info(
        "API cost",
        &format!(
            "requests per minute at steady state ({n} Clusters, {:.0} s window)",
            opts.steady.as_secs_f64()
        ),
        total / minutes,
        "",
    );
    r.at_most(
        "API cost",
        "requests per Cluster per minute at steady state",
        total / minutes / n as f64,
        "",
        0.01,
    );
    r.detail("steady_requests", &steady);
    let steady_mem = bed.op.memory()?;
    r.info(
        "memory",
        &format!("RSS peak during burst of {n}"),
        mib(peak.hwm_kib),
        "MiB",
    );
    r.info(
        "memory",
        &format!("RSS steady at {n} Clusters"),
        mib(steady_mem.rss_kib),
        "MiB",
    );
    bed.op.check_alive()?;

    // 5. Start-up with `n` existing Clusters.
    let seq_restart = analysis::last_seq(&bed.tb.stats());
    let ready = bed.restart_operator(1).await?;
    r.at_most(
        "start-up",
        &format!("process start → /readyz 200 with {n} Clusters"),
        ms_of(ready),
        "ms",
        1000.0,
    );
    settle(Duration::from_secs(2)).await;
    let rewrites = analysis::operator_writes_since(&bed.tb.stats(), seq_restart);
    r.at_most(
        "start-up",
        "writes by the restarted operator (nothing to do)",
        rewrites.len() as f64,
        "",
        0.0,
    );
    if !rewrites.is_empty() {
        let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
        for w in &rewrites {
            let kind: Vec<&str> = w.split(' ').take(2).collect();
            *by_kind.entry(kind.join(" ")).or_default() += 1;
        }
        let mut text = format!(
            "writes by the restarted operator with {n} allocated Clusters: {}",
            counts(&by_kind)
        );
        if let (Ok(before), Ok(after)) =
            (&burst_reasons, bed.work.event_reasons("bench-burst").await)
        {
            let new: BTreeMap<String, u64> = after
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.saturating_sub(before.get(k).copied().unwrap_or(0)),
                    )
                })
                .filter(|(_, v)| *v > 0)
                .collect();
            text.push_str(&format!("; new Events by reason: {}", counts(&new)));
        }
        r.note(text);
    }
    r.info(
        "memory",
        &format!("RSS of the restarted operator at {n} Clusters"),
        mib(bed.op.memory()?.rss_kib),
        "MiB",
    );

    // 4. Memory at the large size.
    let large = opts.large_n;
    if large > n {
        bed.namespace_with_class("bench-large", class).await?;
        bed.op.reset_peak();
        let cpu_before = bed.op.cpu_time()?;
        let more = bed.burst("bench-large", "large", class, n..large).await?;
        let cpu = bed.op.cpu_time()?.saturating_sub(cpu_before);
        let peak = bed.op.memory()?;
        settle(Duration::from_secs(5)).await;
        let steady = bed.op.memory()?;
        r.info(
            "burst",
            &format!(
                "throughput, {} more Clusters on top of {n}",
                more.names.len()
            ),
            more.names.len() as f64 / more.span,
            "VIPs/s",
        );
        r.info(
            "cpu",
            &format!("operator CPU per 1,000 allocations ({n} → {large})"),
            cpu.as_secs_f64() * 1000.0 / more.names.len() as f64,
            "s",
        );
        r.at_most(
            "memory",
            &format!("RSS peak while growing to {large} Clusters"),
            mib(peak.hwm_kib),
            "MiB",
            100.0,
        );
        r.at_most(
            "memory",
            &format!("RSS steady at {large} Clusters"),
            mib(steady.rss_kib),
            "MiB",
            100.0,
        );
        r.check(
            "burst",
            &format!("{CHECK} (growing to {large})"),
            &more.problems,
        );
    }
    // The whole population again, after the restart and the growth: claims kept, addresses unique.
    let mut problems = Vec::new();
    let mut vips = Vec::new();
    let burst_names = burst.names.clone();
    let large_names: Vec<String> = (n..large).map(|i| format!("large-{i:05}")).collect();
    for (ns, names) in [("bench-burst", &burst_names), ("bench-large", &large_names)] {
        if names.is_empty() {
            continue;
        }
        let v = bed.work.verify(ns, names).await?;
        problems.extend(v.problems);
        vips.extend(v.vips);
    }
    problems.extend(workload::duplicates(&vips));
    let changed = bed.tracker.changed();
    problems.extend(
        changed
            .iter()
            .map(|c| format!("VIP changed after it was written: {c}")),
    );
    r.check(
        "correctness",
        &format!("all {} Clusters at the end (after the restart)", vips.len()),
        &problems,
    );
    bed.op.check_alive()?;
    bed.stop().await
}

/// The latency workload with a slow IPAM provider: the operator must add nothing on top of the delay.
pub async fn delay_env(opts: &Options, r: &mut Report) -> Result<(), String> {
    let bed = Bed::start(opts, "delay", opts.ipam_delay).await?;
    let class = "bench";
    bed.work.pool("bench-cp", "10.64.0.0/16", class).await?;
    bed.namespace_with_class("bench-latency", class).await?;
    let delay_ms = ms_of(opts.ipam_delay);
    let sec = &format!("latency (IPAM delay {delay_ms:.0} ms)");
    let per_cluster = opts.ipam_delay * 2 + Duration::from_secs(10);
    let (splits, problems) = bed
        .one_at_a_time("bench-latency", class, opts.delay_n, per_cluster)
        .await?;
    let col = |f: fn(&Split) -> f64| splits.iter().map(f).collect::<Vec<f64>>();
    r.info(
        sec,
        "Clusters created one at a time",
        splits.len() as f64,
        "",
    );
    r.check(sec, CHECK, &problems);
    latency_figures(r, sec, "Cluster created → VIP", &col(|s| s.total), None);
    r.info(
        sec,
        "IPAM provider: claim → addressRef p50",
        analysis::percentile(&col(|s| s.ipam), 50.0),
        "ms",
    );
    r.at_most(
        sec,
        "operator share: addressRef → VIP patch p99",
        analysis::percentile(&col(|s| s.to_vip), 99.0),
        "ms",
        50.0,
    );
    // Everything that is not the IPAM provider's: Cluster → claim plus addressRef → VIP patch.
    r.at_most(
        sec,
        "time added by the operator (total − IPAM) p99",
        analysis::percentile(&col(|s| s.operator()), 99.0),
        "ms",
        100.0,
    );
    bed.stop().await
}

/// Cycles of creating and deleting Clusters (each cycle with its own namespace, ClusterClass and pool).
pub async fn soak_env(opts: &Options, r: &mut Report) -> Result<(), String> {
    let bed = Bed::start(opts, "soak", Duration::ZERO).await?;
    let n = opts.soak_n;
    let mut rss = Vec::with_capacity(opts.soak_cycles);
    let mut problems = Vec::new();
    let started = Instant::now();
    for c in 1..=opts.soak_cycles {
        let (ns, class, pool) = (
            format!("soak-ns-{c}"),
            format!("soak-class-{c}"),
            format!("soak-pool-{c}"),
        );
        bed.work
            .pool(&pool, &format!("10.{}.0.0/16", 100 + c % 150), &class)
            .await?;
        bed.namespace_with_class(&ns, &class).await?;
        let b = bed.burst(&ns, "soak", &class, 0..n).await?;
        problems.extend(b.problems.iter().cloned());
        bed.work.delete_clusters(&ns, &b.names).await?;
        bed.work
            .wait_namespace_empty(&ns, Duration::from_secs(120))
            .await?;
        bed.work.delete_class(&ns, &class).await?;
        bed.work.delete_pool(&pool).await?;
        bed.work
            .wait_pool_gone(&pool, Duration::from_secs(60))
            .await?;
        bed.work.delete_namespace(&ns).await?;
        settle(Duration::from_secs(2)).await;
        let m = bed.op.memory()?;
        rss.push(mib(m.rss_kib));
    }
    let elapsed = started.elapsed().as_secs_f64();
    settle(Duration::from_secs(2)).await;
    let metrics = bed.op.metrics().await?;
    let series: Vec<&str> = metrics
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let mut stale = Vec::new();
    for c in 1..=opts.soak_cycles {
        for v in [
            format!("=\"soak-pool-{c}\""),
            format!("=\"soak-class-{c}\""),
            format!("=\"soak-ns-{c}\""),
        ] {
            stale.extend(
                series
                    .iter()
                    .filter(|l| l.contains(&v))
                    .map(|l| l.to_string()),
            );
        }
    }
    let sec = &format!("soak ({} × {n} Clusters)", opts.soak_cycles);
    r.info(sec, "duration", elapsed, "s");
    r.check(sec, CHECK, &problems);
    let base_cycles = opts.soak_cycles.div_ceil(3);
    let baseline = rss.iter().take(base_cycles).copied().fold(0.0, f64::max);
    let last = rss.last().copied().unwrap_or(f64::NAN);
    r.info(
        sec,
        &format!("RSS baseline (max after cycles 1–{base_cycles})"),
        baseline,
        "MiB",
    );
    r.info(
        sec,
        &format!("RSS after cycle {}", opts.soak_cycles),
        last,
        "MiB",
    );
    r.at_most(
        sec,
        "RSS growth after the baseline",
        (last - baseline) / baseline * 100.0,
        "%",
        10.0,
    );
    r.info(sec, "metric series at the end", series.len() as f64, "");
    r.at_most(
        sec,
        "series left for deleted pools, classes, namespaces",
        stale.len() as f64,
        "",
        0.0,
    );
    r.note(format!(
        "soak: operator RSS after each cycle (MiB): {}",
        rss.iter()
            .map(|v| format!("{v:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if !stale.is_empty() {
        let mut by_metric: std::collections::BTreeMap<&str, usize> = Default::default();
        for l in &stale {
            let name = l.split(['{', ' ']).next().unwrap_or("");
            *by_metric.entry(name).or_default() += 1;
        }
        r.note(format!(
            "soak: series left for deleted objects ({}), by metric: {}",
            stale.len(),
            by_metric
                .iter()
                .map(|(k, v)| format!("{k} ×{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    r.detail("soak_rss_mib", &rss);
    r.detail("soak_stale_series", &stale);
    bed.stop().await
}

/// Clusters created at once on a class with `clusterVip`, with the testbed's simulated topology controller:
/// first without the BeforeClusterCreate gate (the race: renders rejected for an empty endpoint, counted
/// whatever the count is), then with it (none rejected, every render carries its Cluster's VIP). The gate's
/// price is the added creation latency (simulator first sees the Cluster → object rendered).
pub async fn gate_env(opts: &Options, r: &mut Report) -> Result<(), String> {
    let sec = &format!("topology gate ({} Clusters at once)", opts.gate_n);
    let without = gate_run(opts, false).await?;
    let with = gate_run(opts, true).await?;
    r.info(
        sec,
        "rejected renders without the gate (the race)",
        without.stats.rejected as f64,
        "",
    );
    r.at_most(
        sec,
        "rejected renders with the gate",
        with.stats.rejected as f64,
        "",
        0.0,
    );
    let mut problems = without.problems.clone();
    problems.extend(with.problems.iter().cloned());
    for (label, run) in [("without", &without), ("with", &with)] {
        if run.stats.rendered as usize != opts.gate_n {
            problems.push(format!(
                "{label} the gate: {} renders for {} Clusters",
                run.stats.rendered, opts.gate_n
            ));
        }
    }
    if with.stats.hook_errors > 0 {
        problems.push(format!(
            "{} hook calls failed with the gate",
            with.stats.hook_errors
        ));
    }
    r.check(
        sec,
        "renders without their Cluster's VIP, or Clusters not rendered",
        &problems,
    );
    let q = |o: &crate::common::gate::Outcome, p: f64| {
        crate::common::gate::percentile(&o.latencies_ms, p)
    };
    for (label, run) in [("without the gate", &without), ("with the gate", &with)] {
        r.info(
            sec,
            &format!("creation → render p50 {label}"),
            q(run, 0.5),
            "ms",
        );
        r.info(
            sec,
            &format!("creation → render p99 {label}"),
            q(run, 0.99),
            "ms",
        );
    }
    r.info(
        sec,
        "creation latency added by the gate p50",
        q(&with, 0.5) - q(&without, 0.5),
        "ms",
    );
    r.info(
        sec,
        "creation latency added by the gate p99",
        q(&with, 0.99) - q(&without, 0.99),
        "ms",
    );
    r.info(
        sec,
        "hook calls per Cluster with the gate",
        with.stats.hook_calls as f64 / opts.gate_n as f64,
        "",
    );
    r.note(format!(
        "gate: with the gate {} hook calls, {} blocking answers (default retryAfterSeconds 2, cached by the simulator as CAPI ≥ 1.12 does), {} errors",
        with.stats.hook_calls, with.stats.hook_blocked, with.stats.hook_errors
    ));
    Ok(())
}

/// One run of the shared gate scenario; a panic in its set-up becomes an error.
async fn gate_run(opts: &Options, gate: bool) -> Result<crate::common::gate::Outcome, String> {
    use crate::common::gate::{run, Scenario};
    let scenario = Scenario {
        log_level: "info",
        deadline: Duration::from_secs(120),
        operator_bin: opts.operator_bin.clone(),
        ..Scenario::new(gate, opts.gate_n)
    };
    tokio::spawn(async move { run(&scenario).await })
        .await
        .map_err(|e| format!("gate scenario (gate {gate}): {e}"))
}
