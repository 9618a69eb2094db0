//! `capi-vip-allocator`: parse flags, set up logs, run until SIGTERM/SIGINT.

use std::process::ExitCode;

use capi_vip_allocator::{app, cli::Args, telemetry::logging};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let args = match Args::parse_go_style(std::env::args()) {
        Ok(a) => a,
        Err(e) => {
            // clap prints help/version to stdout and errors to stderr itself.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Err(e) = logging::init(args.effective_log_format(), &args.effective_log_level()) {
        eprintln!("capi-vip-allocator: {e}");
        return ExitCode::from(2);
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        "starting capi-vip-allocator"
    );
    let shutdown = CancellationToken::new();
    app::cancel_on_signal(shutdown.clone());
    match app::run(args, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "capi-vip-allocator failed");
            ExitCode::FAILURE
        }
    }
}
