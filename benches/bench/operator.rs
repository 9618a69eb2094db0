//! The operator under test: the release binary as a separate process, with its pid for /proc readings.
//!
//! The integration tests' `Operator` (tests/common) runs the debug build with debug logs and panics on failure;
//! the bench needs the release build at the production log level, the pid, and errors it can report.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Child;

use crate::common::{free_port, http_get};
use crate::procfs::{self, Memory};

pub struct OperatorProcess {
    child: Child,
    pub pid: u32,
    pub metrics_port: u16,
    pub probe_port: u16,
    /// When the process was spawned.
    pub started: Instant,
    pub log: PathBuf,
}

impl OperatorProcess {
    /// Starts `bin` against `kubeconfig`; its log (at `log_level`; `info` as deployed) goes to `log`.
    pub fn spawn(
        bin: &Path,
        kubeconfig: &Path,
        log_level: &str,
        log: PathBuf,
    ) -> Result<OperatorProcess, String> {
        let metrics_port = free_port();
        let probe_port = free_port();
        let file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let started = Instant::now();
        let child = tokio::process::Command::new(bin)
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--metrics-bind-address=127.0.0.1:{metrics_port}"))
            .arg(format!(
                "--health-probe-bind-address=127.0.0.1:{probe_port}"
            ))
            .arg(format!("--log-level={log_level}"))
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| "operator exited at once".to_string())?;
        Ok(OperatorProcess {
            child,
            pid,
            metrics_port,
            probe_port,
            started,
            log,
        })
    }

    /// Waits for `/readyz` 200, polling every 2 ms; returns the time since spawn.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<Duration, String> {
        let deadline = self.started + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "operator exited with {status}; log: {}",
                    self.log.display()
                ));
            }
            if let Some((200, _)) = http_get(self.probe_port, "/readyz").await {
                return Ok(self.started.elapsed());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "operator not ready after {timeout:?}; log: {}",
                    self.log.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    pub fn memory(&self) -> Result<Memory, String> {
        procfs::memory(self.pid)
    }

    pub fn cpu_time(&self) -> Result<Duration, String> {
        procfs::cpu_time(self.pid)
    }

    pub fn reset_peak(&self) -> bool {
        procfs::reset_peak(self.pid)
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> Result<String, String> {
        match http_get(self.metrics_port, "/metrics").await {
            Some((200, body)) => Ok(body),
            other => Err(format!("GET /metrics: {:?}", other.map(|(s, _)| s))),
        }
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "operator exited with {status}; log: {}",
                self.log.display()
            )),
            Err(e) => Err(format!("operator status: {e}")),
        }
    }

    /// SIGTERM, then waits (kills after 10 s).
    pub async fn stop(mut self) -> Result<(), String> {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("waiting for the operator: {e}")),
            Err(_) => {
                let _ = self.child.start_kill();
                Err("operator did not exit within 10 s of SIGTERM".into())
            }
        }
    }
}
