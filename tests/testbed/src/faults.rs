//! Fault injection, deterministic from a seed: error rates per verb, added latency, watch cuts,
//! and a forced 410 on the next watch.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Fail a share of requests with one verb (`*` = any) with an HTTP status (500, 429, 409…).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorRate {
    pub verb: String,
    pub rate: f64,
    pub code: u16,
}

impl ErrorRate {
    /// Parses `VERB=RATE:CODE`, e.g. `patch=0.2:500`.
    pub fn parse(s: &str) -> Result<ErrorRate, String> {
        let (verb, rest) = s
            .split_once('=')
            .ok_or_else(|| format!("expected VERB=RATE:CODE, got {s:?}"))?;
        let (rate, code) = rest
            .split_once(':')
            .ok_or_else(|| format!("expected VERB=RATE:CODE, got {s:?}"))?;
        let rate: f64 = rate.parse().map_err(|_| format!("bad rate {rate:?}"))?;
        if !(0.0..=1.0).contains(&rate) {
            return Err(format!("rate {rate} must be within 0..=1"));
        }
        let code: u16 = code
            .parse()
            .map_err(|_| format!("bad status code {code:?}"))?;
        if !(400..=599).contains(&code) {
            return Err(format!(
                "status code {code} must be an HTTP error (400..=599)"
            ));
        }
        Ok(ErrorRate {
            verb: verb.to_string(),
            rate,
            code,
        })
    }
}

/// A verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`, or `*`) and
/// optionally a resource plural (`events`, `clusters`…; any resource when absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerbResource {
    pub verb: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
}

impl VerbResource {
    pub fn new(verb: &str, resource: Option<&str>) -> Self {
        VerbResource {
            verb: verb.to_string(),
            resource: resource.map(String::from),
        }
    }

    /// Parses `VERB[:RESOURCE]`, e.g. `create:events`.
    pub fn parse(s: &str) -> Result<VerbResource, String> {
        let (verb, resource) = match s.split_once(':') {
            Some((v, r)) => (v, Some(r)),
            None => (s, None),
        };
        if verb.is_empty() || resource.is_some_and(str::is_empty) {
            return Err(format!("expected VERB[:RESOURCE], got {s:?}"));
        }
        Ok(VerbResource::new(verb, resource))
    }

    fn matches(&self, verb: &str, resource: &str) -> bool {
        (self.verb == verb || self.verb == "*")
            && self.resource.as_deref().is_none_or(|r| r == resource)
    }
}

/// Requests matching `target` are answered `delay_ms` later (on top of `latency_ms`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlowRule {
    #[serde(flatten)]
    pub target: VerbResource,
    pub delay_ms: u64,
}

impl SlowRule {
    /// Parses `VERB[:RESOURCE]=MS`, e.g. `patch:clusters=500`.
    pub fn parse(s: &str) -> Result<SlowRule, String> {
        let (target, ms) = s
            .split_once('=')
            .ok_or_else(|| format!("expected VERB[:RESOURCE]=MS, got {s:?}"))?;
        Ok(SlowRule {
            target: VerbResource::parse(target)?,
            delay_ms: ms
                .parse()
                .map_err(|_| format!("bad delay {ms:?} (milliseconds)"))?,
        })
    }
}

/// The faults in force. The default injects nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultConfig {
    pub error_rates: Vec<ErrorRate>,
    /// Added to every API request (not to the testbed's own endpoints).
    pub latency_ms: u64,
    /// Close each watch stream after this many events.
    pub watch_cut_events: Option<u64>,
    /// Close each watch stream after this many seconds.
    pub watch_cut_seconds: Option<u64>,
    /// Answer the next watch request with an ERROR event (410 Expired).
    pub next_watch_gone: bool,
    /// Requests that are read but never answered and never applied (a black hole, e.g. behind a broken proxy):
    /// the connection stays open until the client gives up or the testbed shuts down.
    pub black_holes: Vec<VerbResource>,
    /// Per verb/resource delays, added to `latency_ms`.
    pub slow: Vec<SlowRule>,
}

pub struct FaultState {
    cfg: Mutex<FaultConfig>,
    rng: Mutex<u64>,
    cut: tokio::sync::watch::Sender<u64>,
}

/// SplitMix64: small, fast and deterministic.
pub(crate) fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl FaultState {
    pub(crate) fn new(cfg: FaultConfig, seed: u64) -> Self {
        let (cut, _) = tokio::sync::watch::channel(0);
        FaultState {
            cfg: Mutex::new(cfg),
            rng: Mutex::new(seed ^ 0xFA17),
            cut,
        }
    }

    pub(crate) fn config(&self) -> FaultConfig {
        self.cfg.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The status code to fail this request with, if any.
    pub(crate) fn error_for(&self, verb: &str) -> Option<u16> {
        let cfg = self.cfg.lock().unwrap_or_else(|e| e.into_inner());
        let rule = cfg
            .error_rates
            .iter()
            .find(|r| r.verb == verb || r.verb == "*")?
            .clone();
        drop(cfg);
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        let draw = (splitmix(&mut rng) >> 11) as f64 / (1u64 << 53) as f64;
        (draw < rule.rate).then_some(rule.code)
    }

    pub(crate) fn latency(&self) -> Duration {
        Duration::from_millis(
            self.cfg
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .latency_ms,
        )
    }

    /// Whether this request falls into a black hole.
    pub(crate) fn black_holed(&self, verb: &str, resource: &str) -> bool {
        self.cfg
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .black_holes
            .iter()
            .any(|b| b.matches(verb, resource))
    }

    /// The extra delay of this request (the largest matching rule).
    pub(crate) fn slow_for(&self, verb: &str, resource: &str) -> Duration {
        let cfg = self.cfg.lock().unwrap_or_else(|e| e.into_inner());
        Duration::from_millis(
            cfg.slow
                .iter()
                .filter(|r| r.target.matches(verb, resource))
                .map(|r| r.delay_ms)
                .max()
                .unwrap_or(0),
        )
    }

    pub(crate) fn take_next_watch_gone(&self) -> bool {
        std::mem::take(
            &mut self
                .cfg
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .next_watch_gone,
        )
    }

    pub(crate) fn cut_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        self.cut.subscribe()
    }
}

/// Changes faults of a running testbed.
#[derive(Clone)]
pub struct FaultHandle(pub(crate) Arc<FaultState>);

impl FaultHandle {
    /// Replaces the whole fault configuration.
    pub fn set(&self, cfg: FaultConfig) {
        *self.0.cfg.lock().unwrap_or_else(|e| e.into_inner()) = cfg;
    }
    pub fn get(&self) -> FaultConfig {
        self.0.config()
    }
    /// Sets (or with rate 0, removes) the error rate of one verb.
    pub fn set_error_rate(&self, verb: &str, rate: f64, code: u16) {
        let mut cfg = self.0.cfg.lock().unwrap_or_else(|e| e.into_inner());
        cfg.error_rates.retain(|r| r.verb != verb);
        if rate > 0.0 {
            cfg.error_rates.push(ErrorRate {
                verb: verb.to_string(),
                rate,
                code,
            });
        }
    }
    pub fn set_latency(&self, latency: Duration) {
        self.0
            .cfg
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .latency_ms = latency.as_millis() as u64;
    }
    /// Closes every open watch stream now (clients re-watch from their last resourceVersion).
    pub fn cut_watches(&self) {
        self.0.cut.send_modify(|n| *n += 1);
    }
    /// The next watch request gets an ERROR event with code 410, forcing a relist.
    pub fn force_next_watch_gone(&self) {
        self.0
            .cfg
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next_watch_gone = true;
    }
    /// Requests with this verb (`*`: any) on this resource plural (None: any) are never answered nor applied.
    pub fn black_hole(&self, verb: &str, resource: Option<&str>) {
        let rule = VerbResource::new(verb, resource);
        let mut cfg = self.0.cfg.lock().unwrap_or_else(|e| e.into_inner());
        if !cfg.black_holes.contains(&rule) {
            cfg.black_holes.push(rule);
        }
    }
    /// Delays requests with this verb on this resource (None: any) by `delay` (zero removes the rule).
    pub fn slow(&self, verb: &str, resource: Option<&str>, delay: Duration) {
        let target = VerbResource::new(verb, resource);
        let mut cfg = self.0.cfg.lock().unwrap_or_else(|e| e.into_inner());
        cfg.slow.retain(|r| r.target != target);
        if !delay.is_zero() {
            cfg.slow.push(SlowRule {
                target,
                delay_ms: delay.as_millis() as u64,
            });
        }
    }
    /// Removes every fault (black holes and slow rules included; requests already held stay held).
    pub fn clear(&self) {
        self.set(FaultConfig::default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_rate_parses_and_draws_deterministically() {
        let r = ErrorRate::parse("patch=0.5:500").unwrap();
        assert_eq!(
            r,
            ErrorRate {
                verb: "patch".into(),
                rate: 0.5,
                code: 500
            }
        );
        assert!(ErrorRate::parse("patch=2:500").is_err());
        let draws = |seed| {
            let s = FaultState::new(
                FaultConfig {
                    error_rates: vec![r.clone()],
                    ..Default::default()
                },
                seed,
            );
            (0..200)
                .map(|_| s.error_for("patch").is_some())
                .collect::<Vec<_>>()
        };
        let a = draws(7);
        assert_eq!(a, draws(7));
        let hits = a.iter().filter(|x| **x).count();
        assert!((60..140).contains(&hits), "about half fail: {hits}");
        let s = FaultState::new(FaultConfig::default(), 1);
        assert_eq!(s.error_for("get"), None);
    }

    #[test]
    fn black_holes_and_slow_rules_parse_and_match() {
        assert_eq!(
            VerbResource::parse("create:events").unwrap(),
            VerbResource::new("create", Some("events"))
        );
        assert!(VerbResource::parse("create:").is_err());
        let slow = SlowRule::parse("patch:clusters=250").unwrap();
        assert_eq!(slow.delay_ms, 250);
        assert!(SlowRule::parse("patch").is_err());
        let s = FaultState::new(FaultConfig::default(), 1);
        let h = FaultHandle(Arc::new(s));
        h.black_hole("create", Some("events"));
        h.slow("*", None, Duration::from_millis(5));
        h.slow("patch", Some("clusters"), Duration::from_millis(250));
        assert!(h.0.black_holed("create", "events"));
        assert!(!h.0.black_holed("create", "leases"));
        assert_eq!(
            h.0.slow_for("patch", "clusters"),
            Duration::from_millis(250)
        );
        assert_eq!(h.0.slow_for("get", "leases"), Duration::from_millis(5));
        let json = serde_json::to_value(h.get()).unwrap();
        assert_eq!(json["black_holes"][0]["resource"], "events");
        assert_eq!(json["slow"][1]["delay_ms"], 250);
        h.clear();
        assert!(!h.0.black_holed("create", "events"));
        assert!(h.0.slow_for("patch", "clusters").is_zero());
    }
}
