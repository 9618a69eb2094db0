//! The BeforeClusterCreate gate against the testbed's simulated topology controller: 200 Clusters created at once
//! on a class with `clusterVip`. Without the gate the simulator renders TestInfraClusters before the VIP exists
//! and strict providers reject them (the count is reported, whatever it is); with the gate no render is rejected
//! and every rendered object carries its Cluster's VIP. Prints the rejected counts and the creation latency
//! (first seen by the simulator → rendered) of both runs; run with `--nocapture` to see them.

mod common;

use std::time::Duration;

use common::gate::{self, percentile, Outcome, Scenario};
use testbed::Profile;

const CLUSTERS: usize = 200;

fn checked(out: Outcome) -> Outcome {
    assert!(out.problems.is_empty(), "{:#?}", out.problems);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_prevents_renders_without_a_vip_for_200_clusters() {
    let without = checked(gate::run(&Scenario::new(false, CLUSTERS)).await);
    println!(
        "gate: without the gate: {} rejected renders for {CLUSTERS} Clusters; render latency p50 {:.0} ms, p99 {:.0} ms",
        without.stats.rejected, percentile(&without.latencies_ms, 0.5), percentile(&without.latencies_ms, 0.99)
    );
    assert_eq!(without.stats.rendered as usize, CLUSTERS);
    assert_eq!(without.stats.hook_calls, 0, "no extension registered");

    let with = checked(gate::run(&Scenario::new(true, CLUSTERS)).await);
    println!(
        "gate: with the gate: {} rejected renders; render latency p50 {:.0} ms, p99 {:.0} ms; {} hook calls, {} blocking answers",
        with.stats.rejected, percentile(&with.latencies_ms, 0.5), percentile(&with.latencies_ms, 0.99), with.stats.hook_calls, with.stats.hook_blocked
    );
    println!(
        "gate: added creation latency p50 {:.0} ms, p99 {:.0} ms",
        percentile(&with.latencies_ms, 0.5) - percentile(&without.latencies_ms, 0.5),
        percentile(&with.latencies_ms, 0.99) - percentile(&without.latencies_ms, 0.99)
    );
    assert_eq!(
        with.stats.rejected, 0,
        "the gate let a render through before the VIP"
    );
    assert_eq!(with.stats.rendered as usize, CLUSTERS);
    assert_eq!(with.stats.hook_errors, 0);
    assert!(
        with.stats.hook_calls >= CLUSTERS as u64,
        "every Cluster went through the hook"
    );
    // The operator's own count of its answers matches what the topology controller received.
    let served = |result: &str| {
        common::metric_value(
            &with.metrics,
            &format!("capi_vip_allocator_runtime_extension_requests_total{{handler=\"BeforeClusterCreate\",result=\"{result}\"}}"),
        )
        .unwrap_or(0.0) as u64
    };
    assert_eq!(
        served("blocked"),
        with.stats.hook_blocked,
        "{}",
        with.metrics
    );
    assert_eq!(
        served("blocked") + served("success"),
        with.stats.hook_calls,
        "{}",
        with.metrics
    );
    assert!(
        common::metric_value(
            &with.metrics,
            "capi_vip_allocator_runtime_extension_requests_total{handler=\"discovery\",result=\"success\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{}",
        with.metrics
    );
}

/// CAPI v1.10-v1.12 send the Cluster as v1beta1 (`topology.class`); the gate reads it the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_holds_v1beta1_clusters_too() {
    // A slow IPAM provider makes sure the first answers block.
    let with = checked(
        gate::run(&Scenario {
            profile: Profile::Capi110,
            ipam_delay: Duration::from_millis(50),
            ..Scenario::new(true, 20)
        })
        .await,
    );
    assert_eq!(with.stats.rejected, 0);
    assert_eq!(with.stats.rendered, 20);
    assert!(with.stats.hook_blocked > 0, "{:?}", with.stats);
}
