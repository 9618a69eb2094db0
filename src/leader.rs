//! Leader election on a `coordination.k8s.io/v1` Lease, following client-go's `tools/leaderelection`.
//!
//! Why not `kube-lease-manager` 0.13: measured against our requirement "a leader that cannot renew stops writing
//! before its lease can be taken", it falls short — when renewals fail with API errors its watch loop logs and backs
//! off but keeps reporting leadership, it has no renew deadline, durations are whole seconds, and it judges expiry
//! from the holder's `renewTime` against the local wall clock (clock skew between nodes matters). client-go judges
//! expiry by when *this* candidate last saw the record change, which needs no synchronised clocks.
//!
//! The algorithm: every retry period (with up to 20 % jitter) a candidate GETs the Lease; absent ⇒ CREATE it;
//! held by someone else whose record changed less than `leaseDurationSeconds` ago (local observation time) ⇒ wait;
//! otherwise PUT (with the read `resourceVersion`, so racing candidates get 409) with our identity. The leader renews
//! every retry period and gives up leadership as soon as no renewal has succeeded for the renew deadline, which is
//! shorter than the lease duration, so it stops writing before anyone else may take the lease. On shutdown the
//! leader, after its controller has stopped, releases the lease (empty holder, duration 1 s).

use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    api::{Api, PostParams},
    Client,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Where a pod finds its namespace.
pub const SERVICE_ACCOUNT_NAMESPACE_FILE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Leader-election settings.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    /// Lease name (`--leader-election-id`).
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity, `<hostname>_<uuid>`.
    pub identity: String,
    /// How long a lease is valid after its holder's last observed renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps leading without a successful renewal.
    pub renew_deadline: Duration,
    /// Interval between acquire/renew attempts.
    pub retry_period: Duration,
}

impl LeaderConfig {
    /// client-go's constraints: lease duration > renew deadline > 1.2 × retry period > 0.
    pub fn validate(&self) -> Result<(), String> {
        if self.retry_period.is_zero() {
            return Err("--leader-elect-retry-period must be greater than zero".to_owned());
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(format!(
                "--leader-elect-lease-duration ({:?}) must be greater than --leader-elect-renew-deadline ({:?})",
                self.lease_duration, self.renew_deadline
            ));
        }
        if self.renew_deadline.as_secs_f64() <= 1.2 * self.retry_period.as_secs_f64() {
            return Err(format!(
                "--leader-elect-renew-deadline ({:?}) must be greater than 1.2 × --leader-elect-retry-period ({:?})",
                self.renew_deadline, self.retry_period
            ));
        }
        if self.lease_duration.as_secs() < 1 {
            return Err("--leader-elect-lease-duration must be at least 1s".to_owned());
        }
        if self.name.is_empty() {
            return Err("--leader-election-id must not be empty".to_owned());
        }
        Ok(())
    }

    /// Per-request timeout: max(renew deadline / 2, 1 s), as controller-runtime sets it.
    pub fn request_timeout(&self) -> Duration {
        (self.renew_deadline / 2).max(Duration::from_secs(1))
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }
}

/// `<hostname>_<uuid>`, as controller-runtime builds it.
pub fn default_identity() -> String {
    format!("{}_{}", hostname(), uuid::Uuid::new_v4())
}

fn hostname() -> String {
    let from_env = std::env::var("HOSTNAME").ok();
    let from_proc = || std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    let from_etc = || std::fs::read_to_string("/etc/hostname").ok();
    from_env
        .or_else(from_proc)
        .or_else(from_etc)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The Lease namespace: the flag, else `POD_NAMESPACE` (the shipped Deployment sets it from the downward API),
/// else the pod's namespace from the service-account file.
pub fn resolve_namespace(flag: Option<&str>) -> Result<String, String> {
    let env = std::env::var("POD_NAMESPACE").ok();
    resolve_namespace_from(flag.or(env.as_deref()), SERVICE_ACCOUNT_NAMESPACE_FILE)
}

fn resolve_namespace_from(flag: Option<&str>, file: &str) -> Result<String, String> {
    if let Some(ns) = flag.map(str::trim).filter(|s| !s.is_empty()) {
        return Ok(ns.to_owned());
    }
    match std::fs::read_to_string(file) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        _ => Err(format!(
            "--leader-elect needs --leader-election-namespace when not running in a pod ({file} not readable)"
        )),
    }
}

/// The part of a Lease the algorithm compares.
#[derive(Clone, Debug, PartialEq)]
struct Record {
    holder: String,
    duration_secs: i32,
    acquire: Option<Timestamp>,
    renew: Option<Timestamp>,
    transitions: i32,
}

impl Record {
    fn from_spec(spec: Option<&LeaseSpec>) -> Self {
        let spec = spec.cloned().unwrap_or_default();
        Self {
            holder: spec.holder_identity.unwrap_or_default(),
            duration_secs: spec.lease_duration_seconds.unwrap_or(0),
            acquire: spec.acquire_time.map(|t| t.0),
            renew: spec.renew_time.map(|t| t.0),
            transitions: spec.lease_transitions.unwrap_or(0),
        }
    }

    fn to_spec(&self) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.holder.clone()),
            lease_duration_seconds: Some(self.duration_secs),
            acquire_time: self.acquire.map(MicroTime),
            renew_time: self.renew.map(MicroTime),
            lease_transitions: Some(self.transitions),
            ..LeaseSpec::default()
        }
    }
}

/// A record and the local instant it was first seen in this form.
#[derive(Clone, Debug)]
struct Observed {
    record: Record,
    at: Instant,
}

/// Keeps the observation time when the record is unchanged, so a dead holder's lease expires for us.
fn observe(prev: Option<Observed>, record: Record, now: Instant) -> Observed {
    match prev {
        Some(p) if p.record == record => p,
        _ => Observed { record, at: now },
    }
}

#[derive(Debug, PartialEq)]
enum Decision {
    /// Someone else holds a valid lease.
    Wait,
    /// Ours: renew it.
    Renew,
    /// Free, released or expired: take it.
    Take,
}

fn decide(observed: &Observed, identity: &str, now: Instant) -> Decision {
    let rec = &observed.record;
    if rec.holder == identity {
        return Decision::Renew;
    }
    let valid_for = Duration::from_secs(u64::try_from(rec.duration_secs.max(0)).unwrap_or(0));
    if !rec.holder.is_empty() && observed.at + valid_for > now {
        return Decision::Wait;
    }
    Decision::Take
}

/// The next record when `identity` writes the lease.
fn next_record(
    current: Option<&Record>,
    identity: &str,
    cfg: &LeaderConfig,
    now: Timestamp,
) -> Record {
    match current {
        Some(cur) if cur.holder == identity => Record {
            renew: Some(now),
            duration_secs: cfg.lease_seconds(),
            ..cur.clone()
        },
        Some(cur) => Record {
            holder: identity.to_owned(),
            duration_secs: cfg.lease_seconds(),
            acquire: Some(now),
            renew: Some(now),
            transitions: cur.transitions.saturating_add(1),
        },
        None => Record {
            holder: identity.to_owned(),
            duration_secs: cfg.lease_seconds(),
            acquire: Some(now),
            renew: Some(now),
            transitions: 0,
        },
    }
}

/// Lease API failures.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// A request failed.
    #[error("lease {0}")]
    Api(#[from] kube::Error),
    /// A request took longer than the request timeout.
    #[error("lease request timed out")]
    Timeout,
}

/// Runs the election for one replica.
pub struct Elector {
    api: Api<Lease>,
    cfg: LeaderConfig,
    observed: Option<Observed>,
    /// The resourceVersion of the lease as we last read or wrote it.
    leading: bool,
}

impl Elector {
    /// A candidate that has not tried yet.
    pub fn new(client: Client, cfg: LeaderConfig) -> Self {
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: None,
            leading: false,
        }
    }

    /// The identity this replica uses.
    pub fn identity(&self) -> &str {
        &self.cfg.identity
    }

    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, LeaderError> {
        match tokio::time::timeout(self.cfg.request_timeout(), fut).await {
            Ok(r) => r.map_err(LeaderError::Api),
            Err(_) => Err(LeaderError::Timeout),
        }
    }

    /// One client-go `tryAcquireOrRenew`: `Ok(true)` when we hold the lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaderError> {
        let name = self.cfg.name.clone();
        let current = self.bounded(self.api.get_opt(&name)).await?;
        let now = Instant::now();
        let Some(lease) = current else {
            let record = next_record(None, &self.cfg.identity, &self.cfg, Timestamp::now());
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(record.to_spec()),
            };
            return match self
                .bounded(self.api.create(&PostParams::default(), &lease))
                .await
            {
                Ok(_) => {
                    self.observed = Some(Observed { record, at: now });
                    Ok(true)
                }
                Err(LeaderError::Api(kube::Error::Api(s))) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let record = Record::from_spec(lease.spec.as_ref());
        let observed = observe(self.observed.take(), record, now);
        let decision = decide(&observed, &self.cfg.identity, now);
        let current = observed.record.clone();
        self.observed = Some(observed);
        if decision == Decision::Wait {
            return Ok(false);
        }
        let record = next_record(
            Some(&current),
            &self.cfg.identity,
            &self.cfg,
            Timestamp::now(),
        );
        let mut updated = lease;
        updated.spec = Some(record.to_spec());
        match self
            .bounded(self.api.replace(&name, &PostParams::default(), &updated))
            .await
        {
            Ok(_) => {
                self.observed = Some(Observed {
                    record,
                    at: Instant::now(),
                });
                Ok(true)
            }
            // Another candidate wrote first; re-read next round.
            Err(LeaderError::Api(kube::Error::Api(s))) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up (empty holder, 1 s duration) if we hold it. Call after the controller has stopped.
    pub async fn release(&mut self) -> Result<(), LeaderError> {
        if !self.leading {
            return Ok(());
        }
        self.leading = false;
        let Some(lease) = self.bounded(self.api.get_opt(&self.cfg.name)).await? else {
            return Ok(());
        };
        let record = Record::from_spec(lease.spec.as_ref());
        if record.holder != self.cfg.identity {
            return Ok(());
        }
        let now = Timestamp::now();
        let released = Record {
            holder: String::new(),
            duration_secs: 1,
            acquire: Some(now),
            renew: Some(now),
            transitions: record.transitions,
        };
        let mut updated = lease;
        updated.spec = Some(released.to_spec());
        self.bounded(
            self.api
                .replace(&self.cfg.name, &PostParams::default(), &updated),
        )
        .await?;
        tracing::info!(identity = %self.cfg.identity, lease = %self.cfg.name, "leader lease released");
        Ok(())
    }

    /// Campaigns and renews until `stop`, publishing leadership on `leading`. Leadership is dropped (false sent)
    /// when no renewal succeeded for the renew deadline or another holder took the lease; the campaign then
    /// starts again. Returns the elector so the caller can [`release`](Self::release) after its work stopped.
    pub async fn run(mut self, leading: watch::Sender<bool>, stop: CancellationToken) -> Self {
        loop {
            // Campaign.
            loop {
                match self.try_acquire_or_renew().await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, lease = %self.cfg.name, "cannot acquire leader lease")
                    }
                }
                if sleep_or_stop(jittered(self.cfg.retry_period), &stop).await {
                    return self;
                }
            }
            self.leading = true;
            let mut last_renew = Instant::now();
            tracing::info!(identity = %self.cfg.identity, lease = %self.cfg.name, namespace = %self.cfg.namespace,
                "became leader");
            let _ = leading.send(true);
            // Renew.
            let lost = loop {
                if sleep_or_stop(self.cfg.retry_period, &stop).await {
                    return self;
                }
                if last_renew.elapsed() >= self.cfg.renew_deadline {
                    break "renew deadline passed";
                }
                // The deadline counts from when the successful attempt started (conservative).
                let attempt = Instant::now();
                match self.try_acquire_or_renew().await {
                    Ok(true) => last_renew = attempt,
                    Ok(false) => break "another replica holds the lease",
                    Err(e) => {
                        tracing::warn!(error = %e, since_last_renewal = ?last_renew.elapsed(), "lease renewal failed")
                    }
                }
                if last_renew.elapsed() >= self.cfg.renew_deadline {
                    break "renew deadline passed";
                }
            };
            self.leading = false;
            tracing::warn!(identity = %self.cfg.identity, reason = lost, "leadership lost, stopping the controller");
            let _ = leading.send(false);
        }
    }
}

/// Sleeps `d`; true when `stop` fired first.
async fn sleep_or_stop(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

/// `d` × [1, 1.2), like client-go's `wait.Jitter(d, 1.2)` (factor 0.2).
fn jittered(d: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let frac = f64::from(nanos % 1000) / 1000.0;
    d.mul_f64(1.0 + 0.2 * frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LeaderConfig {
        LeaderConfig {
            name: "capi-vip-allocator.gorizond.io".into(),
            namespace: "capi-system".into(),
            identity: "me".into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    fn rec(holder: &str, secs: i32) -> Record {
        Record {
            holder: holder.into(),
            duration_secs: secs,
            acquire: None,
            renew: None,
            transitions: 3,
        }
    }

    #[test]
    fn defaults_are_valid_and_constraints_enforced() {
        assert!(cfg().validate().is_ok());
        let mut c = cfg();
        c.renew_deadline = c.lease_duration;
        assert!(c.validate().unwrap_err().contains("lease-duration"));
        let mut c = cfg();
        c.retry_period = Duration::from_secs(9);
        assert!(c.validate().unwrap_err().contains("1.2"));
        let mut c = cfg();
        c.retry_period = Duration::ZERO;
        assert!(c.validate().is_err());
        assert_eq!(cfg().request_timeout(), Duration::from_secs(5));
        c = cfg();
        c.renew_deadline = Duration::from_millis(1500);
        c.retry_period = Duration::from_millis(500);
        assert_eq!(c.request_timeout(), Duration::from_secs(1));
    }

    #[test]
    fn identity_is_hostname_underscore_uuid() {
        let id = default_identity();
        let (host, uuid) = id.rsplit_once('_').unwrap();
        assert!(!host.is_empty());
        assert_eq!(uuid.len(), 36);
        assert_ne!(default_identity(), id);
    }

    #[test]
    fn namespace_from_flag_file_or_clear_error() {
        assert_eq!(
            resolve_namespace_from(Some("ns1"), "/nonexistent").unwrap(),
            "ns1"
        );
        let err = resolve_namespace_from(None, "/nonexistent/namespace").unwrap_err();
        assert!(err.contains("--leader-election-namespace"), "{err}");
        let dir = std::env::temp_dir().join(format!("le-ns-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("namespace");
        std::fs::write(&file, "capi-system\n").unwrap();
        assert_eq!(
            resolve_namespace_from(None, file.to_str().unwrap()).unwrap(),
            "capi-system"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn valid_lease_of_another_holder_is_respected_until_it_stops_changing() {
        let t0 = Instant::now();
        let o = observe(None, rec("other", 15), t0);
        assert_eq!(
            decide(&o, "me", t0 + Duration::from_secs(14)),
            Decision::Wait
        );
        // Unchanged record: the observation time stays, so it expires 15 s after we first saw it.
        let o = observe(Some(o), rec("other", 15), t0 + Duration::from_secs(10));
        assert_eq!(o.at, t0);
        assert_eq!(
            decide(&o, "me", t0 + Duration::from_secs(15)),
            Decision::Take
        );
        // A renewal (changed record) restarts the clock.
        let mut renewed = rec("other", 15);
        renewed.renew = Some(Timestamp::now());
        let o = observe(Some(o), renewed, t0 + Duration::from_secs(12));
        assert_eq!(
            decide(&o, "me", t0 + Duration::from_secs(20)),
            Decision::Wait
        );
        assert_eq!(
            decide(&o, "me", t0 + Duration::from_secs(27)),
            Decision::Take
        );
    }

    #[test]
    fn released_or_own_lease() {
        let t0 = Instant::now();
        assert_eq!(
            decide(&observe(None, rec("", 1), t0), "me", t0),
            Decision::Take
        );
        assert_eq!(
            decide(&observe(None, rec("me", 15), t0), "me", t0),
            Decision::Renew
        );
    }

    #[test]
    fn records_count_transitions_only_on_holder_change() {
        let c = cfg();
        let now = Timestamp::now();
        let fresh = next_record(None, "me", &c, now);
        assert_eq!((fresh.transitions, fresh.duration_secs), (0, 15));
        assert_eq!(fresh.acquire, Some(now));
        let taken = next_record(Some(&rec("other", 1)), "me", &c, now);
        assert_eq!((taken.holder.as_str(), taken.transitions), ("me", 4));
        assert_eq!(taken.acquire, Some(now));
        let mut mine = rec("me", 15);
        let earlier = Timestamp::UNIX_EPOCH;
        mine.acquire = Some(earlier);
        let renewed = next_record(Some(&mine), "me", &c, now);
        assert_eq!(renewed.transitions, 3);
        assert_eq!(renewed.acquire, Some(earlier));
        assert_eq!(renewed.renew, Some(now));
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        for _ in 0..100 {
            let j = jittered(Duration::from_secs(2));
            assert!(j >= Duration::from_secs(2) && j < Duration::from_millis(2400));
        }
    }
}
