//! Command-line flags. Names and defaults follow the Go operator (Go `flag` syntax: `--x=v`, `--x v`,
//! `-x=v`, bare `--bool-flag`), except where the Go defaults were bugs (see each flag).

use std::{path::PathBuf, time::Duration};

use clap::{ArgAction, Parser, ValueEnum};

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// What the operator checks before it writes a freshly bound VIP for the first time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum VipProbe {
    /// Nothing: the IPAM provider's word is enough.
    None,
    /// A TCP connect to `<vip>:<port>`; an answer means a machine the IPAM does not know uses the address.
    Tcp,
}

/// Allocates control-plane and ingress VIPs for Cluster API topology Clusters from IPAM pools.
#[derive(Clone, Debug, Parser)]
#[command(name = "capi-vip-allocator", version, about, long_about = None, args_override_self = true)]
pub struct Args {
    /// Address the Prometheus `/metrics` endpoint binds to (`:8080` = all interfaces, port 8080; `0` disables it).
    #[arg(long, default_value = ":8080", value_name = "ADDR")]
    pub metrics_bind_address: String,

    /// Address the `/healthz` and `/readyz` probes bind to (`0` disables them).
    #[arg(long, default_value = ":8081", value_name = "ADDR")]
    pub health_probe_bind_address: String,

    /// Enable leader election on a `coordination.k8s.io/v1` Lease: only the holder reconciles and writes; every
    /// replica serves probes and metrics.
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = ArgAction::Set, value_name = "BOOL")]
    pub leader_elect: bool,

    /// Name of the Lease used for leader election.
    #[arg(
        long,
        default_value = "capi-vip-allocator.gorizond.io",
        value_name = "NAME"
    )]
    pub leader_election_id: String,

    /// Namespace of the leader-election Lease (default: the pod's namespace from the service-account file;
    /// required outside a pod).
    #[arg(long, value_name = "NS")]
    pub leader_election_namespace: Option<String>,

    /// Leader-election lease duration (Go duration, e.g. `15s`).
    #[arg(long, default_value = "15s", value_parser = parse_go_duration, value_name = "DURATION")]
    pub leader_elect_lease_duration: Duration,

    /// Leader-election renew deadline.
    #[arg(long, default_value = "10s", value_parser = parse_go_duration, value_name = "DURATION")]
    pub leader_elect_renew_deadline: Duration,

    /// Leader-election retry period.
    #[arg(long, default_value = "2s", value_parser = parse_go_duration, value_name = "DURATION")]
    pub leader_elect_retry_period: Duration,

    /// Before writing a freshly bound VIP for the first time, check nobody answers on it: `tcp` connects to
    /// `<vip>:<port>` (the Cluster's endpoint port, else `--default-port`) for up to 300 ms; if something answers, the
    /// VIP is not written, Warning `VIPInUse`, and it is tried again every 30 s. Off (`none`) by default.
    #[arg(long, value_enum, default_value_t = VipProbe::None, value_name = "none|tcp")]
    pub vip_probe: VipProbe,

    /// Port written to `spec.controlPlaneEndpoint.port` when the Cluster has none (unset or 0).
    #[arg(long, default_value_t = 6443, value_parser = clap::value_parser!(u16).range(1..), value_name = "PORT")]
    pub default_port: u16,

    /// Cluster reconciles run at once. Each holds an API connection while it writes; the bound keeps the client's
    /// connection pool (and its buffers) small during a burst of thousands of Clusters.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..), value_name = "N")]
    pub max_concurrent_reconciles: u16,

    /// Comma-separated pools the operator may allocate from (default: any pool whose labels match): `name` of a
    /// GlobalInClusterIPPool, `namespace/name` of an InClusterIPPool. Pools not listed are ignored, whatever their
    /// labels say; see the README, section Security.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub pool_allowlist: Vec<String>,

    /// Comma-separated further pool kinds, each `<Kind>.<version>.<group>` (e.g. `IPPool.v1alpha1.ipam.metal3.io`),
    /// watched besides the two in-cluster kinds (always on). Each must be served at start-up.
    #[arg(long, value_delimiter = ',', value_parser = parse_pool_kind, value_name = "KINDS")]
    pub pool_kinds: Vec<crate::api::PoolKindName>,

    /// How long a claim on a pool whose capacity is unknown (a `--pool-kinds` pool without
    /// `status.ipAddresses.free`) may stay unbound before it moves to the next candidate pool.
    #[arg(long, default_value = "2m", value_parser = parse_go_duration, value_name = "DURATION")]
    pub pending_claim_timeout: Duration,

    /// Run the Cluster reconciler (the Go operator defaulted this to false by mistake; ours is true).
    #[arg(long, default_value_t = true, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = ArgAction::Set, value_name = "BOOL")]
    pub enable_reconciler: bool,

    /// Serve the Runtime SDK BeforeClusterCreate hook (HTTPS on `--runtime-extension-port`). Default false.
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = ArgAction::Set, value_name = "BOOL")]
    pub enable_runtime_extension: bool,

    /// Port of the Runtime SDK hook server.
    #[arg(long, default_value_t = 9443, value_name = "PORT")]
    pub runtime_extension_port: u16,

    /// Name of the Runtime SDK extension handler.
    #[arg(long, default_value = "vip-allocator", value_name = "NAME")]
    pub runtime_extension_name: String,

    /// Directory holding the hook server's `tls.crt` and `tls.key` (re-read when they change).
    #[arg(
        long,
        default_value = "/tmp/k8s-webhook-server/serving-certs",
        value_name = "DIR"
    )]
    pub runtime_extension_cert_dir: PathBuf,

    /// `retryAfterSeconds` answered while a Cluster waits for its control-plane VIP.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=600), value_name = "SECONDS")]
    pub runtime_extension_retry_after_seconds: u32,

    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster service account).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log level or filter (`info`, `debug`, `capi_vip_allocator=debug,kube=info`); RUST_LOG wins when set.
    #[arg(long, default_value = "info", value_name = "FILTER")]
    pub log_level: String,

    /// controller-runtime compatibility: `debug`, `info`, `error` or a number (higher = more verbose).
    #[arg(long, value_name = "LEVEL", hide_short_help = true)]
    pub zap_log_level: Option<String>,

    /// controller-runtime compatibility: development mode (text logs, debug level).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          action = ArgAction::Set, value_name = "BOOL", hide_short_help = true)]
    pub zap_devel: Option<bool>,

    /// controller-runtime compatibility: `json` or `console`.
    #[arg(long, value_name = "ENCODER", hide_short_help = true)]
    pub zap_encoder: Option<String>,

    /// controller-runtime compatibility: accepted and ignored.
    #[arg(long, value_name = "LEVEL", hide = true)]
    pub zap_stacktrace_level: Option<String>,

    /// controller-runtime compatibility: accepted and ignored.
    #[arg(long, value_name = "ENCODING", hide = true)]
    pub zap_time_encoding: Option<String>,
}

impl Args {
    /// Parses the process arguments, accepting Go's single-dash long flags.
    pub fn parse_go_style<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        Self::try_parse_from(args.into_iter().map(Into::into).map(normalise_dash))
    }

    /// The effective tracing filter: `--log-level`, overridden by the zap flags when given.
    pub fn effective_log_level(&self) -> String {
        if let Some(level) = &self.zap_log_level {
            return zap_level_to_filter(level);
        }
        if self.zap_devel == Some(true) {
            return "debug".to_owned();
        }
        self.log_level.clone()
    }

    /// The effective log format: `--log-format`, or `--zap-encoder=json|console`, or text for `--zap-devel`.
    pub fn effective_log_format(&self) -> LogFormat {
        match self.zap_encoder.as_deref() {
            Some("json") => LogFormat::Json,
            Some("console") => LogFormat::Text,
            _ => self.log_format,
        }
    }
}

/// Go's flag package accepts `-name`; clap wants `--name`. Short flags we know (`-h`, `-V`) stay.
fn normalise_dash(arg: String) -> String {
    let is_single_dash_long = arg.starts_with('-')
        && !arg.starts_with("--")
        && arg.len() > 2
        && arg.as_bytes().get(1).is_some_and(u8::is_ascii_alphabetic);
    if is_single_dash_long {
        format!("-{arg}")
    } else {
        arg
    }
}

fn zap_level_to_filter(level: &str) -> String {
    match level.trim() {
        "debug" => "debug".to_owned(),
        "info" => "info".to_owned(),
        "warn" => "warn".to_owned(),
        "error" | "dpanic" | "panic" | "fatal" => "error".to_owned(),
        other => match other.parse::<i32>() {
            // zap levels: positive integers are increasingly verbose debug levels.
            Ok(n) if n >= 2 => "trace".to_owned(),
            Ok(1) => "debug".to_owned(),
            Ok(_) => "info".to_owned(),
            Err(_) => "info".to_owned(),
        },
    }
}

/// Parses one `--pool-kinds` item (an empty item, as a trailing comma leaves, is an error too).
fn parse_pool_kind(input: &str) -> Result<crate::api::PoolKindName, String> {
    input.trim().parse()
}

/// Parses a Go duration string such as `15s`, `1m30s`, `500ms`, `2h`.
pub fn parse_go_duration(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return Err(format!("invalid duration {input:?}"));
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("invalid duration {input:?}: missing unit"))?;
        if num_len == 0 {
            return Err(format!("invalid duration {input:?}"));
        }
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("invalid duration {input:?}"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            unit => return Err(format!("invalid duration {input:?}: unknown unit {unit:?}")),
        };
        total += value * factor;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Args {
        let mut all = vec!["capi-vip-allocator"];
        all.extend_from_slice(args);
        Args::parse_go_style(all).unwrap()
    }

    #[test]
    fn pool_allowlist_is_a_comma_list_defaulting_to_empty() {
        assert!(parse(&[]).pool_allowlist.is_empty());
        assert_eq!(
            parse(&["--pool-allowlist=a,b"]).pool_allowlist,
            vec!["a".to_owned(), "b".to_owned()]
        );
    }

    #[test]
    fn pool_kinds_parse_kind_version_group_and_reject_malformed_items() {
        let a = parse(&[]);
        assert!(a.pool_kinds.is_empty());
        assert_eq!(a.pending_claim_timeout, Duration::from_secs(120));
        let a = parse(&[
            "--pool-kinds=IPPool.v1alpha1.ipam.metal3.io, Other.v1.example.com",
            "--pending-claim-timeout=2s",
        ]);
        let names: Vec<String> = a.pool_kinds.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            vec!["IPPool.v1alpha1.ipam.metal3.io", "Other.v1.example.com"]
        );
        assert_eq!(a.pool_kinds[0].group, "ipam.metal3.io");
        assert_eq!(a.pending_claim_timeout, Duration::from_secs(2));
        for bad in [
            "IPPool",
            "IPPool.v1alpha1",
            "ippool.v1alpha1.ipam.metal3.io",
            "IPPool.1.ipam.metal3.io",
            "IPPool.v1alpha1.",
            "IPPool..ipam.metal3.io",
            "IPPool.v1alpha1.ipam.metal3.io,",
        ] {
            let err = Args::parse_go_style(["x", &format!("--pool-kinds={bad}")])
                .expect_err(bad)
                .to_string();
            assert!(err.contains("<Kind>.<version>.<group>"), "{bad}: {err}");
        }
    }

    #[test]
    fn defaults_match_the_go_operator_with_fixed_inversions() {
        let a = parse(&[]);
        assert_eq!(a.metrics_bind_address, ":8080");
        assert_eq!(a.health_probe_bind_address, ":8081");
        assert!(!a.leader_elect);
        assert_eq!(a.default_port, 6443);
        assert_eq!(a.max_concurrent_reconciles, 16);
        assert!(a.enable_reconciler, "reconciler must default to on");
        assert!(
            !a.enable_runtime_extension,
            "runtime extension must default to off"
        );
        assert_eq!(a.runtime_extension_port, 9443);
        assert_eq!(a.runtime_extension_name, "vip-allocator");
        assert_eq!(a.runtime_extension_retry_after_seconds, 2);
        assert_eq!(
            a.runtime_extension_cert_dir,
            PathBuf::from("/tmp/k8s-webhook-server/serving-certs")
        );
        assert_eq!(a.leader_election_id, "capi-vip-allocator.gorizond.io");
        assert_eq!(a.leader_elect_lease_duration, Duration::from_secs(15));
        assert_eq!(a.leader_elect_renew_deadline, Duration::from_secs(10));
        assert_eq!(a.leader_elect_retry_period, Duration::from_secs(2));
    }

    #[test]
    fn shipped_deployment_args_parse_verbatim() {
        let a = parse(&[
            "--leader-elect",
            "--enable-runtime-extension=true",
            "--runtime-extension-port=9443",
        ]);
        assert!(a.leader_elect);
        assert!(a.enable_runtime_extension);
        assert_eq!(a.runtime_extension_port, 9443);
    }

    #[test]
    fn go_flag_syntaxes_all_parse() {
        let a = parse(&[
            "-metrics-bind-address=:9090",
            "--health-probe-bind-address",
            ":9091",
            "--enable-reconciler=false",
            "-default-port",
            "7443",
        ]);
        assert_eq!(a.metrics_bind_address, ":9090");
        assert_eq!(a.health_probe_bind_address, ":9091");
        assert!(!a.enable_reconciler);
        assert_eq!(a.default_port, 7443);
    }

    #[test]
    fn repeated_flags_last_one_wins_like_go() {
        let a = parse(&[
            "--metrics-bind-address=:1",
            "--metrics-bind-address",
            ":2",
            "--leader-elect",
            "--leader-elect=false",
        ]);
        assert_eq!(a.metrics_bind_address, ":2");
        assert!(!a.leader_elect);
    }

    #[test]
    fn bool_flag_does_not_swallow_the_next_argument() {
        let a = parse(&["--leader-elect", "--default-port=1234"]);
        assert!(a.leader_elect);
        assert_eq!(a.default_port, 1234);
    }

    #[test]
    fn zap_flags_map_to_log_settings() {
        let a = parse(&[
            "--zap-log-level=debug",
            "--zap-encoder=json",
            "--zap-devel=false",
            "--zap-stacktrace-level=error",
        ]);
        assert_eq!(a.effective_log_level(), "debug");
        assert_eq!(a.effective_log_format(), LogFormat::Json);
        let b = parse(&["--zap-devel"]);
        assert_eq!(b.effective_log_level(), "debug");
        let c = parse(&["--zap-log-level", "5"]);
        assert_eq!(c.effective_log_level(), "trace");
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(Args::parse_go_style(["x", "--default-port=0"]).is_err());
        assert!(Args::parse_go_style(["x", "--enable-reconciler=maybe"]).is_err());
        assert!(Args::parse_go_style(["x", "--log-format=xml"]).is_err());
        assert!(Args::parse_go_style(["x", "--leader-elect-lease-duration=fast"]).is_err());
        assert!(Args::parse_go_style(["x", "--runtime-extension-retry-after-seconds=0"]).is_err());
    }

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_go_duration("500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_go_duration("10").is_err());
    }
}

#[cfg(test)]
mod name_tests {
    use crate::names::flags;

    #[test]
    fn flag_constants_are_the_parsed_names() {
        let cmd = <super::Args as clap::CommandFactory>::command();
        for name in [
            flags::METRICS_BIND_ADDRESS,
            flags::HEALTH_PROBE_BIND_ADDRESS,
            flags::LEADER_ELECT,
            flags::DEFAULT_PORT,
            flags::MAX_CONCURRENT_RECONCILES,
            flags::ENABLE_RECONCILER,
            flags::ENABLE_RUNTIME_EXTENSION,
            flags::POOL_KINDS,
            flags::PENDING_CLAIM_TIMEOUT,
        ] {
            assert!(
                cmd.get_arguments().any(|a| a.get_long() == Some(name)),
                "--{name} is not a flag"
            );
        }
    }
}
