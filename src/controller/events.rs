//! Publishing `events.k8s.io/v1` Events. Each call is one create and nothing is kept afterwards: the per-Cluster
//! memory already decides when an Event is due, so a cache of published Events (as kube's `Recorder` keeps, unbounded
//! for minutes) would only cost memory.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{
    api::{Api, PostParams},
    Client,
};

use crate::{
    names::{CONTROLLER_NAME, EVENT_ACTION},
    plan::Severity,
};

/// Longest object name the API server accepts (DNS subdomain).
const MAX_NAME: usize = 253;

/// Longest `note` the API server accepts, in bytes (`NoteLengthLimit` of kube-apiserver's Event validation):
/// a longer one makes the whole Event refused with 422.
pub const MAX_NOTE: usize = 1024;

/// Longest `reason` (and `reportingInstance`: a pod name may be longer) the API server accepts (Event validation).
const MAX_REASON: usize = 128;

/// What a cut note ends with, so a reader knows there was more (the operator's log has the whole text).
const CUT_MARK: &str = " [truncated]";

/// How long one Event create may take before it is given up (an Event is never worth a stuck task).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// Event creates in flight at once; beyond this an Event is dropped (and logged) rather than queued without bound
/// behind an API server that does not answer.
const MAX_IN_FLIGHT: usize = 64;

/// Creates Events on behalf of this replica. Cheap to clone: clones share the name sequence and the in-flight bound.
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    instance: String,
    /// The last name suffix handed out (nanoseconds, kept strictly increasing so names never repeat in a process).
    last_suffix: Arc<AtomicU64>,
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// The namespace an Event about `notice.regarding` lives in: the object's, or `default` for a cluster-scoped one.
fn event_namespace(notice: &Notice<'_>) -> String {
    notice
        .regarding
        .namespace
        .clone()
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| "default".to_owned())
}

/// What one Event says about one object.
#[derive(Debug, Clone)]
pub struct Notice<'a> {
    /// The object the Event is about (namespace, name, uid, resourceVersion, apiVersion, kind).
    pub regarding: ObjectReference,
    /// Normal or Warning.
    pub severity: Severity,
    /// Event reason.
    pub reason: &'a str,
    /// Human message.
    pub note: String,
}

impl Publisher {
    /// A publisher reporting as `instance` (see [`reporting_instance`]).
    pub fn new(client: Client, instance: String) -> Self {
        Self {
            client,
            instance,
            last_suffix: Arc::new(AtomicU64::new(0)),
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// Publishes in the background, bounded in time and in number: the reconcile that decided the Event never
    /// waits for it, so an API server that is slow to take Events never slows down the VIPs themselves.
    pub fn send(&self, notice: Notice<'static>, now: jiff::Timestamp) {
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            tracing::warn!(
                reason = notice.reason,
                note = %notice.note,
                "too many Events in flight; this one is dropped"
            );
            return;
        };
        let publisher = self.clone();
        tokio::spawn(async move {
            let reason = notice.reason;
            match tokio::time::timeout(PUBLISH_TIMEOUT, publisher.publish(notice, now)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, reason, "could not publish Event"),
                Err(_) => tracing::warn!(
                    reason,
                    timeout = ?PUBLISH_TIMEOUT,
                    "could not publish Event: no answer in time"
                ),
            }
            drop(permit);
        });
    }

    /// Creates the Event in the namespace of the object it is about (`default` for a cluster-scoped object, as
    /// client-go's recorder does).
    pub async fn publish(
        &self,
        notice: Notice<'_>,
        now: jiff::Timestamp,
    ) -> Result<(), kube::Error> {
        let namespace = event_namespace(&notice);
        let event = self.build(notice, now);
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        api.create(
            &PostParams {
                field_manager: Some(CONTROLLER_NAME.into()),
                ..Default::default()
            },
            &event,
        )
        .await
        .map(|_| ())
    }

    /// The Event object for `notice`, named `<object>.<unique hex suffix>`.
    fn build(&self, notice: Notice<'_>, now: jiff::Timestamp) -> Event {
        let suffix = self.next_suffix(now);
        let object = notice.regarding.name.as_deref().unwrap_or(CONTROLLER_NAME);
        Event {
            metadata: ObjectMeta {
                name: Some(event_name(object, suffix)),
                namespace: Some(event_namespace(&notice)),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(
                match notice.severity {
                    Severity::Normal => "Normal",
                    Severity::Warning => "Warning",
                }
                .into(),
            ),
            reason: Some(cut(notice.reason, MAX_REASON, "")),
            note: Some(cut(&notice.note, MAX_NOTE, CUT_MARK)),
            action: Some(EVENT_ACTION.into()),
            reporting_controller: Some(CONTROLLER_NAME.into()),
            reporting_instance: Some(cut(&self.instance, MAX_REASON, "")),
            regarding: Some(notice.regarding),
            ..Default::default()
        }
    }

    /// Nanoseconds of `now`, or one more than the last suffix when the clock has not moved on.
    fn next_suffix(&self, now: jiff::Timestamp) -> u64 {
        let nanos = u64::try_from(now.as_nanosecond()).unwrap_or(0);
        let mut next = nanos;
        let _ = self
            .last_suffix
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                next = nanos.max(last.saturating_add(1));
                Some(next)
            });
        next
    }
}

/// `text` if it fits in `max` bytes, else its start (on a character boundary) followed by `mark`.
fn cut(text: &str, max: usize, mark: &str) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub(mark.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{mark}", &text[..end])
}

/// `<object>.<suffix in hex>`, the object part shortened so the whole stays a valid name.
fn event_name(object: &str, suffix: u64) -> String {
    let suffix = format!(".{suffix:x}");
    let keep = MAX_NAME.saturating_sub(suffix.len()).min(object.len());
    // Object names are ASCII; the boundary check only guards against a malformed one.
    let mut cut = keep;
    while !object.is_char_boundary(cut) {
        cut -= 1;
    }
    let object = object[..cut].trim_end_matches(['.', '-']);
    format!("{object}{suffix}")
}

/// Who reports our Events: `POD_NAME`, else the hostname (a pod's hostname is its name), else the controller name.
pub fn reporting_instance() -> String {
    std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| CONTROLLER_NAME.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher() -> Publisher {
        // Building an Event needs no server; the client is never called in these tests.
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        Publisher::new(Client::try_from(config).unwrap(), "pod-7".into())
    }

    fn notice(severity: Severity) -> Notice<'static> {
        Notice {
            regarding: ObjectReference {
                api_version: Some("cluster.x-k8s.io/v1beta2".into()),
                kind: Some("Cluster".into()),
                name: Some("alpha".into()),
                namespace: Some("team".into()),
                uid: Some("uid-1".into()),
                resource_version: Some("42".into()),
                ..Default::default()
            },
            severity,
            reason: "VIPAllocated",
            note: "control-plane VIP 10.0.0.1 allocated".into(),
        }
    }

    #[tokio::test]
    async fn event_carries_every_field_kubectl_and_users_read() {
        let now: jiff::Timestamp = "2026-01-01T00:00:00.000001Z".parse().unwrap();
        let e = publisher().build(notice(Severity::Warning), now);
        assert_eq!(e.metadata.namespace.as_deref(), Some("team"));
        assert!(e.metadata.name.as_deref().unwrap().starts_with("alpha."));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.reason.as_deref(), Some("VIPAllocated"));
        assert_eq!(
            e.note.as_deref(),
            Some("control-plane VIP 10.0.0.1 allocated")
        );
        assert_eq!(e.action.as_deref(), Some(EVENT_ACTION));
        assert_eq!(e.reporting_controller.as_deref(), Some(CONTROLLER_NAME));
        assert_eq!(e.reporting_instance.as_deref(), Some("pod-7"));
        assert_eq!(e.event_time, Some(MicroTime(now)));
        let r = e.regarding.unwrap();
        assert_eq!(r.uid.as_deref(), Some("uid-1"));
        assert_eq!(r.resource_version.as_deref(), Some("42"));
        assert_eq!(r.kind.as_deref(), Some("Cluster"));
        assert!(e.series.is_none());
    }

    #[tokio::test]
    async fn names_never_repeat_even_when_the_clock_stands_still() {
        let p = publisher();
        let now = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let a = p.build(notice(Severity::Normal), now).metadata.name;
        let b = p.build(notice(Severity::Normal), now).metadata.name;
        let earlier = now - jiff::SignedDuration::from_secs(5);
        let c = p.build(notice(Severity::Normal), earlier).metadata.name;
        assert_ne!(a, b);
        assert_ne!(b, c);
        assert_ne!(a, c);
    }

    #[tokio::test]
    async fn long_notes_are_cut_to_the_api_limit_and_say_so() {
        let mut n = notice(Severity::Warning);
        n.note = format!("webhook says: {}", "é".repeat(2000));
        let note = publisher().build(n, jiff::Timestamp::now()).note.unwrap();
        assert!(note.len() <= MAX_NOTE, "{}", note.len());
        assert!(note.starts_with("webhook says: éé"));
        assert!(note.ends_with(CUT_MARK));
        let mut short = notice(Severity::Normal);
        short.note = "x".repeat(MAX_NOTE);
        assert_eq!(
            publisher()
                .build(short, jiff::Timestamp::now())
                .note
                .unwrap()
                .len(),
            MAX_NOTE
        );
    }

    #[test]
    fn long_object_names_are_shortened_to_a_valid_name() {
        let name = event_name(&"x".repeat(300), u64::MAX);
        assert_eq!(name.len(), MAX_NAME);
        assert!(name.ends_with(".ffffffffffffffff"));
        assert_eq!(event_name("alpha", 255), "alpha.ff");
    }
}
