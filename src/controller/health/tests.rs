//! Unit tests of the probes' state, the limits and the supervised reconcile (deadline, cancellation, ends).

use super::*;
use std::sync::Arc;

fn limits() -> Limits {
    Limits {
        reconcile_timeout: Duration::from_secs(1),
        liveness: Duration::from_secs(2),
        watch_stall: Duration::from_secs(10),
        shutdown_grace: Duration::from_secs(1),
    }
}

#[test]
fn a_watch_relisting_or_failing_too_long_withdraws_readiness() {
    let h = Health::new(limits());
    let t0 = Instant::now();
    assert!(h.why_not_ready(t0).is_some(), "not ready before sync");
    h.set(true, true);
    assert_eq!(h.why_not_ready(t0), None);
    h.watch_at(3, WatchSignal::ListStarted, t0);
    assert_eq!(h.why_not_ready(t0 + Duration::from_secs(9)), None);
    let why = h.why_not_ready(t0 + Duration::from_secs(10));
    assert!(why.is_some_and(|w| w.contains("the ClusterClass watch has been relisting")));
    h.watch_at(3, WatchSignal::ListDone, t0 + Duration::from_secs(11));
    assert_eq!(h.why_not_ready(t0 + Duration::from_secs(11)), None);

    // Errors every few seconds for longer than the stall bound: not ready; a quiet spell ends the run.
    for s in (20..=32).step_by(4) {
        h.watch_at(1, WatchSignal::Error, t0 + Duration::from_secs(s));
    }
    assert!(h.why_not_ready(t0 + Duration::from_secs(33)).is_some());
    assert_eq!(
        h.why_not_ready(t0 + Duration::from_secs(32) + ERROR_RUN_QUIET),
        None,
        "a watch that stopped failing recovers even without events"
    );
    h.watch_at(1, WatchSignal::Error, t0 + Duration::from_secs(100));
    h.watch_at(1, WatchSignal::Event, t0 + Duration::from_secs(101));
    assert_eq!(h.why_not_ready(t0 + Duration::from_secs(120)), None);
}

#[test]
fn liveness_fails_only_when_work_waits_without_progress() {
    let h = Arc::new(Health::new(limits()));
    let now = Instant::now();
    assert_eq!(
        h.why_not_alive(now + Duration::from_secs(60)),
        None,
        "idle is alive"
    );
    let guard = h.reconcile_started();
    let after = Instant::now();
    assert_eq!(h.why_not_alive(after + Duration::from_secs(1)), None);
    assert!(h
        .why_not_alive(after + Duration::from_secs(3))
        .is_some_and(|w| w.contains("1 reconcile(s) in flight")));
    drop(guard);
    let after = Instant::now();
    assert_eq!(h.why_not_alive(after + Duration::from_secs(60)), None);
    assert_eq!(h.reconcile_counts(), (1, 1));

    h.request_queued();
    assert_eq!(
        h.why_not_alive(Instant::now() + Duration::from_secs(60)),
        None,
        "waiting for the first sync is not a stall"
    );
    h.set(true, true);
    h.request_queued();
    let after = Instant::now();
    assert_eq!(h.why_not_alive(after + Duration::from_secs(1)), None);
    assert!(
        h.why_not_alive(after + Duration::from_secs(3)).is_some(),
        "a request nobody starts is a stall"
    );
    h.reconciler_progressed();
    assert_eq!(
        h.why_not_alive(Instant::now() + Duration::from_secs(60)),
        None
    );
}

/// Sets its flag when dropped (the reconcile future was cancelled or finished).
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn stuck_reconcile(
    dropped: &Arc<AtomicBool>,
) -> impl std::future::Future<Output = Result<kube::runtime::controller::Action, super::super::Error>>
       + Send
       + 'static {
    let flag = DropFlag(dropped.clone());
    async move {
        let _flag = flag;
        std::future::pending::<()>().await;
        Ok(kube::runtime::controller::Action::await_change())
    }
}

async fn eventually(flag: &AtomicBool) -> bool {
    for _ in 0..100 {
        if flag.load(Ordering::SeqCst) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

#[tokio::test]
async fn a_reconcile_past_its_deadline_is_aborted_and_reported_transient() {
    let h = Arc::new(Health::new(limits()));
    let dropped = Arc::new(AtomicBool::new(false));
    let res = super::super::spawned(
        stuck_reconcile(&dropped),
        h.clone(),
        Duration::from_millis(50),
        "ns/c".to_owned(),
        |_| {},
    )
    .await;
    match res {
        Err(e @ super::super::Error::Transient { .. }) => {
            assert!(e.to_string().contains("reconcile ns/c"), "{e}")
        }
        other => panic!("expected a transient error, got {other:?}"),
    }
    assert!(eventually(&dropped).await, "the reconcile task was aborted");
    assert_eq!(
        h.reconcile_counts(),
        (1, 1),
        "finished counts the abandoned one"
    );
}

#[tokio::test]
async fn dropping_the_reconcile_future_aborts_its_task() {
    let h = Arc::new(Health::new(limits()));
    let dropped = Arc::new(AtomicBool::new(false));
    let fut = super::super::spawned(
        stuck_reconcile(&dropped),
        h.clone(),
        Duration::from_secs(600),
        "ns/c".to_owned(),
        |_| {},
    );
    // What a cancelled term does to its in-flight reconciles.
    assert!(tokio::time::timeout(Duration::from_millis(20), fut)
        .await
        .is_err());
    assert!(
        eventually(&dropped).await,
        "the spawned reconcile did not outlive its owner"
    );
    assert_eq!(h.reconcile_counts(), (1, 1));
}

/// A runtime whose API server is absent (nothing answers on port 1): the watches just keep failing.
fn runtime_without_server(health: Arc<Health>) -> super::super::Runtime {
    let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    super::super::Runtime {
        watch_client: client.clone(),
        client,
        shapes: crate::api::ApiShapes::fixed("v1beta2", "v1beta2"),
        settings: super::super::Settings {
            default_port: 6443,
            pool_allowlist: Vec::new(),
            max_concurrent_reconciles: 2,
            vip_probe: false,
            pending_claim_timeout: std::time::Duration::from_secs(120),
        },
        metrics: Arc::new(crate::telemetry::Metrics::new().unwrap()),
        health,
        gauge_stores: Arc::default(),
        clock: Arc::new(super::super::SystemClock),
    }
}

#[tokio::test]
async fn the_controller_fails_when_its_elector_goes_away_and_stops_cleanly_on_shutdown() {
    let health = Arc::new(Health::new(limits()));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(super::super::run(
        runtime_without_server(health.clone()),
        shutdown.clone(),
        Some(rx),
    ));
    drop(tx);
    let res = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the controller ends at once")
        .unwrap();
    assert!(matches!(res, Err(Stopped::Elector)), "{res:?}");

    let run = tokio::spawn(super::super::run(
        runtime_without_server(health),
        shutdown.clone(),
        None,
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!run.is_finished(), "keeps running while the server is away");
    shutdown.cancel();
    let res = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("stops on shutdown")
        .unwrap();
    assert!(res.is_ok(), "{res:?}");
}

#[test]
fn limits_come_from_the_environment_with_liveness_twice_the_deadline() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| (*v).to_owned())
        }
    };
    assert_eq!(Limits::from_lookup(env(&[])).unwrap(), Limits::default());
    let l = Limits::from_lookup(env(&[(ENV_RECONCILE_TIMEOUT, "5s")])).unwrap();
    assert_eq!(l.reconcile_timeout, Duration::from_secs(5));
    assert_eq!(l.liveness, Duration::from_secs(10));
    assert!(Limits::from_lookup(env(&[(ENV_RECONCILE_TIMEOUT, "0")])).is_err());
    assert!(Limits::from_lookup(env(&[(ENV_WATCH_STALL, "soon")])).is_err());
}
