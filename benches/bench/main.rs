//! `make bench`: the release operator (a separate process) against the in-process testbed. Measures allocation
//! latency, burst throughput, API cost, memory and CPU, start-up, a create/delete soak and the topology gate, and prints each figure
//! beside its target (issue 6). Results: stdout, `target/bench/results.md`, `target/bench/results.json`.
//!
//! `BENCH_QUICK=1` runs a ~1 minute subset; see `config.rs` for every knob. Exits non-zero when a measurement
//! is invalid (a Cluster without its VIP, a VIP twice, a figure that could not be measured), and with
//! `BENCH_STRICT=1` also when a target is missed.

#[path = "../../tests/common/mod.rs"]
mod common;

mod analysis;
mod config;
mod operator;
mod phases;
mod procfs;
mod report;
mod workload;

use std::process::ExitCode;
use std::time::Instant;

use config::Options;
use report::Report;

async fn run(opts: &Options, r: &mut Report) -> Result<(), String> {
    if opts.runs("main") {
        eprintln!("bench: main environment (idle, latency, burst, API cost, steady state, start-up, large)");
        phases::main_env(opts, r).await?;
    }
    if opts.runs("delay") {
        eprintln!("bench: IPAM delay {:?}", opts.ipam_delay);
        phases::delay_env(opts, r).await?;
    }
    if opts.runs("soak") {
        eprintln!("bench: soak");
        phases::soak_env(opts, r).await?;
    }
    if opts.runs("gate") {
        eprintln!("bench: BeforeClusterCreate gate on the simulated topology controller");
        phases::gate_env(opts, r).await?;
    }
    Ok(())
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench` (and maybe a filter); this bench has no sub-benchmarks to filter.
    let opts = match Options::from_env() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (mode, command) = if opts.quick {
        (
            "quick subset, counts reduced: indicative only",
            "BENCH_QUICK=1 make bench",
        )
    } else {
        ("full", "make bench")
    };
    let mut report = Report::new(mode, command, &opts.operator_bin);
    let started = Instant::now();
    let outcome = runtime.block_on(run(&opts, &mut report));
    report.duration_seconds = started.elapsed().as_secs_f64();
    report.load_end = procfs::load_average();
    if let Err(e) = &outcome {
        report.note(format!("BENCH FAILED: {e}"));
    }
    let invalid: Vec<String> = report
        .invalid()
        .iter()
        .map(|f| format!("{} / {}", f.section, f.name))
        .collect();
    if !invalid.is_empty() {
        report.note(format!(
            "BENCH FAILED: figures not measured: {}",
            invalid.join(", ")
        ));
    }
    if report.figures.is_empty() {
        report.note("BENCH FAILED: nothing was measured");
    }
    let incorrect: Vec<String> = report
        .incorrect()
        .iter()
        .map(|f| format!("{} / {}", f.section, f.name))
        .collect();
    if !incorrect.is_empty() {
        report.note(format!(
            "BENCH FAILED: correctness checks failed: {}",
            incorrect.join(", ")
        ));
    }
    print!("{}", report.markdown());
    if let Err(e) = report.write(&opts.out_dir) {
        eprintln!("bench: {e}");
        return ExitCode::FAILURE;
    }
    eprintln!(
        "bench: results in {}",
        opts.out_dir.join("results.{md,json}").display()
    );
    if outcome.is_err() || !invalid.is_empty() || !incorrect.is_empty() || report.figures.is_empty()
    {
        return ExitCode::FAILURE;
    }
    let misses = report.misses();
    if !misses.is_empty() {
        eprintln!("bench: {} target(s) missed", misses.len());
        if opts.strict {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
