//! Bench options from the environment: the full run (issue 6 sizes, ~10 min on 2 cores) or `BENCH_QUICK=1`
//! (a ~1 min subset with smaller counts). Individual counts can be overridden for experiments.

use std::path::PathBuf;
use std::time::Duration;

/// The environments, in the order they run.
pub const ENVIRONMENTS: [&str; 4] = ["main", "delay", "soak", "gate"];

/// Sizes and switches of one bench run.
#[derive(Debug, Clone)]
pub struct Options {
    /// `BENCH_QUICK=1`: smaller counts; the figures are indicative only.
    pub quick: bool,
    /// Clusters created one at a time for the latency split (`BENCH_LATENCY_N`).
    pub latency_n: usize,
    /// Clusters created at once for the burst (`BENCH_BURST_N`); also the "existing" count of the start-up test.
    pub burst_n: usize,
    /// Total Clusters for the large memory point (`BENCH_LARGE_N`).
    pub large_n: usize,
    /// Observation window at steady state (`BENCH_STEADY_SECS`).
    pub steady: Duration,
    /// Soak cycles (`BENCH_SOAK_CYCLES`) of `soak_n` Clusters (`BENCH_SOAK_N`).
    pub soak_cycles: usize,
    pub soak_n: usize,
    /// Clusters of the latency run with a slow IPAM (`BENCH_DELAY_N`) and its delay (`BENCH_IPAM_DELAY_MS`).
    pub delay_n: usize,
    /// Clusters created at once on the simulated topology controller, without and with the
    /// BeforeClusterCreate gate (`BENCH_GATE_N`).
    pub gate_n: usize,
    pub ipam_delay: Duration,
    /// Concurrent requests of the workload driver when creating or deleting many objects (`BENCH_CONCURRENCY`).
    pub concurrency: usize,
    /// Exit non-zero when a target is missed, not only when a measurement is invalid (`BENCH_STRICT=1`).
    pub strict: bool,
    /// Write each environment's testbed stats (write log, request counters) to `target/bench/stats-*.json`
    /// (`BENCH_DUMP=1`).
    pub dump: bool,
    /// Environments to run (`BENCH_ONLY=main,delay,soak,gate`, default all).
    pub only: Vec<String>,
    /// The operator's `--log-level` (`BENCH_OPERATOR_LOG`, default `info` as deployed).
    pub operator_log: String,
    /// The operator binary (`BENCH_OPERATOR_BIN`, default: the release build cargo made for this bench).
    pub operator_bin: PathBuf,
    /// Where results go (`target/bench`).
    pub out_dir: PathBuf,
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

fn env_num(name: &str, default: usize) -> Result<usize, String> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|e| format!("{name}={v:?}: not a count: {e}")),
        Err(_) => Ok(default),
    }
}

impl Options {
    pub fn runs(&self, env: &str) -> bool {
        self.only.iter().any(|e| e == env)
    }

    pub fn from_env() -> Result<Options, String> {
        let quick = env_flag("BENCH_QUICK");
        let pick = |full: usize, small: usize| if quick { small } else { full };
        let target_dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
        let opts = Options {
            quick,
            latency_n: env_num("BENCH_LATENCY_N", pick(200, 50))?,
            burst_n: env_num("BENCH_BURST_N", pick(1000, 200))?,
            large_n: env_num("BENCH_LARGE_N", pick(5000, 1000))?,
            steady: Duration::from_secs(env_num("BENCH_STEADY_SECS", pick(60, 10))? as u64),
            soak_cycles: env_num("BENCH_SOAK_CYCLES", pick(10, 3))?,
            soak_n: env_num("BENCH_SOAK_N", pick(1000, 200))?,
            delay_n: env_num("BENCH_DELAY_N", pick(200, 10))?,
            gate_n: env_num("BENCH_GATE_N", pick(200, 50))?,
            ipam_delay: Duration::from_millis(env_num("BENCH_IPAM_DELAY_MS", 1000)? as u64),
            concurrency: env_num("BENCH_CONCURRENCY", 32)?.max(1),
            strict: env_flag("BENCH_STRICT"),
            dump: env_flag("BENCH_DUMP"),
            only: std::env::var("BENCH_ONLY")
                .unwrap_or_else(|_| ENVIRONMENTS.join(","))
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            operator_log: std::env::var("BENCH_OPERATOR_LOG").unwrap_or_else(|_| "info".into()),
            operator_bin: std::env::var_os("BENCH_OPERATOR_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_capi-vip-allocator"))),
            out_dir: target_dir.join("bench"),
        };
        if opts.latency_n == 0
            || opts.burst_n == 0
            || opts.soak_n == 0
            || opts.delay_n == 0
            || opts.gate_n == 0
        {
            return Err("every count must be at least 1".into());
        }
        if let Some(bad) = opts
            .only
            .iter()
            .find(|e| !ENVIRONMENTS.contains(&e.as_str()))
        {
            return Err(format!(
                "BENCH_ONLY: unknown environment {bad:?} (known: {})",
                ENVIRONMENTS.join(", ")
            ));
        }
        if opts.large_n < opts.burst_n {
            return Err(format!(
                "BENCH_LARGE_N ({}) must be at least BENCH_BURST_N ({})",
                opts.large_n, opts.burst_n
            ));
        }
        Ok(opts)
    }
}
