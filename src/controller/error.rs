//! Reconcile errors, classified for the error policy and for Events/metrics.

use std::time::Duration;

use crate::{names::reasons, plan::Role};

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cache was behind the server (a `test` guard failed, the claim already exists, the Cluster is gone):
    /// retry soon, from the newer cache.
    #[error("stale cache: {0}")]
    Stale(String),
    /// The API server refused our Cluster patch for a reason the user can fix (webhook, schema).
    #[error("patching Cluster {cluster} was refused: {message}")]
    PatchRejected {
        /// The VIP whose fields the refused patch carried.
        role: Role,
        /// `namespace/name`.
        cluster: String,
        /// Server message.
        message: String,
    },
    /// The API server refused to create, adopt or delete our claim (or to create, protect or release the IPAddress
    /// behind a VIP) for a reason the user can fix.
    #[error("{action} {object} {claim} was refused: {message}")]
    ClaimRejected {
        /// The VIP the claim is for.
        role: Role,
        /// What we tried.
        action: &'static str,
        /// `IPAddressClaim` or `IPAddress`.
        object: &'static str,
        /// `namespace/name`.
        claim: String,
        /// Server message.
        message: String,
    },
    /// A request failed in a way that may pass (5xx, 409, 429, timeouts, connection errors).
    #[error("{action}: {source}")]
    Transient {
        /// What we tried.
        action: String,
        /// The client error.
        #[source]
        source: Box<kube::Error>,
    },
}

/// What a request was, for classifying its failure.
#[derive(Debug, Clone, Copy)]
pub enum Request {
    /// Our JSON patch of the Cluster's fields of a role.
    ClusterPatch(Role),
    /// A claim operation (`create`, `adopt`, `delete`) of a role.
    Claim(Role, &'static str),
    /// An IPAddress operation (`create`, `protect`, `release`, `delete`) of a role.
    Address(Role, &'static str),
}

/// The message kube-apiserver gives every JSON patch that does not apply to the stored object (a failed `test`, a
/// missing path): `errors.NewGenericServerResponse(422, …)`, which drops evanphx/json-patch's own text (no causes).
const PATCH_NOT_APPLICABLE: &str = "the server rejected our request due to an error in our request";

/// Whether a 422 says our JSON patch did not apply to the stored object (so the cache was behind), rather than
/// that the patched object was refused by validation or a webhook. Read from the shape of the Status (the generic
/// message and causes without a field), never from words that could come from names or values.
fn patch_did_not_apply(status: &kube::core::Status) -> bool {
    status.message == PATCH_NOT_APPLICABLE
        && status
            .details
            .as_ref()
            .is_none_or(|d| d.causes.iter().all(|c| c.field.is_empty()))
}

impl Error {
    /// Event reason and metric `reason` label for user-caused errors; `None` for transient ones.
    pub fn user_reason(&self) -> Option<&'static str> {
        match self {
            Error::PatchRejected { .. } => Some(reasons::PATCH_FAILED),
            Error::ClaimRejected { .. } => Some(reasons::CLAIM_FAILED),
            Error::Stale(_) | Error::Transient { .. } => None,
        }
    }

    /// The VIP a user-caused error is about.
    pub fn role(&self) -> Option<Role> {
        match self {
            Error::PatchRejected { role, .. } | Error::ClaimRejected { role, .. } => Some(*role),
            Error::Stale(_) | Error::Transient { .. } => None,
        }
    }

    /// Classifies a client error of `request` on `subject` (`namespace/name`).
    pub fn from_kube(request: Request, subject: String, err: kube::Error) -> Self {
        let action = match request {
            Request::ClusterPatch(_) => "patch Cluster",
            Request::Claim(_, what) | Request::Address(_, what) => what,
        };
        if let kube::Error::Api(status) = &err {
            let code = status.code;
            match (code, request) {
                (422, Request::ClusterPatch(_) | Request::Address(..))
                    if patch_did_not_apply(status) =>
                {
                    let detail = status
                        .details
                        .as_ref()
                        .and_then(|d| d.causes.first())
                        .map_or(status.message.as_str(), |c| c.message.as_str());
                    return Error::Stale(format!("{action} {subject}: {detail}"));
                }
                // Deleted meanwhile: its DELETED event is on its way; nothing for the user to fix.
                (404, Request::ClusterPatch(_)) => {
                    return Error::Stale(format!("{action} {subject}: the Cluster is gone"));
                }
                (409, _) if status.reason == "AlreadyExists" => {
                    return Error::Stale(format!("{action} {subject}: already exists"));
                }
                _ => {}
            }
            if matches!(code, 400 | 403 | 404 | 415 | 422) {
                return match request {
                    Request::Claim(role, what) => Error::ClaimRejected {
                        role,
                        action: what,
                        object: "IPAddressClaim",
                        claim: subject,
                        message: status.message.clone(),
                    },
                    Request::Address(role, what) => Error::ClaimRejected {
                        role,
                        action: what,
                        object: "IPAddress",
                        claim: subject,
                        message: status.message.clone(),
                    },
                    Request::ClusterPatch(role) => Error::PatchRejected {
                        role,
                        cluster: subject,
                        message: status.message.clone(),
                    },
                };
            }
        }
        Error::Transient {
            action: format!("{action} {subject}"),
            source: Box::new(err),
        }
    }
}

/// Capped exponential backoff: `base * 2^attempt`, at most `cap`.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    base.saturating_mul(1u32 << attempt.min(16)).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATCH: Request = Request::ClusterPatch(Role::ControlPlane);

    fn api(code: u16, reason: &str, message: &str, causes: &[(&str, &str)]) -> kube::Error {
        let mut status = kube::core::Status::failure(message, reason).with_code(code);
        if !causes.is_empty() {
            status.details = Some(kube::core::response::StatusDetails {
                causes: causes
                    .iter()
                    .map(|(field, message)| kube::core::response::StatusCause {
                        field: (*field).to_owned(),
                        message: (*message).to_owned(),
                        reason: if field.is_empty() {
                            String::new()
                        } else {
                            "FieldValueInvalid".to_owned()
                        },
                    })
                    .collect(),
                name: String::new(),
                group: String::new(),
                kind: String::new(),
                uid: String::new(),
                retry_after_seconds: 0,
            });
        }
        kube::Error::Api(status.boxed())
    }

    #[test]
    fn patch_that_did_not_apply_is_stale_as_kube_apiserver_reports_it() {
        // kube-apiserver: NewGenericServerResponse(422, …, isUnexpectedResponse=false) carries no causes at all.
        let e = Error::from_kube(
            PATCH,
            "ns/c".into(),
            api(422, "Invalid", PATCH_NOT_APPLICABLE, &[]),
        );
        assert!(matches!(&e, Error::Stale(_)), "{e:?}");
        // A server that does pass evanphx's text on as a cause without a field is read the same way.
        let e = Error::from_kube(
            PATCH,
            "ns/c".into(),
            api(
                422,
                "Invalid",
                PATCH_NOT_APPLICABLE,
                &[(
                    "",
                    "testing value /spec/topology/variables failed: test failed",
                )],
            ),
        );
        assert!(
            matches!(&e, Error::Stale(m) if m.contains("test failed")),
            "{e:?}"
        );
        assert_eq!(e.user_reason(), None);
    }

    #[test]
    fn webhook_refusal_naming_test_is_patch_failed_with_its_role() {
        // A Cluster named test-web, refused by CAPI's variable validation: words in names decide nothing.
        let e = Error::from_kube(
            Request::ClusterPatch(Role::Ingress),
            "ns/test-web".into(),
            api(
                422,
                "Invalid",
                "admission webhook \"default.cluster.cluster.x-k8s.io\" denied the request: Cluster.cluster.x-k8s.io \"test-web\" is invalid: spec.topology.variables[ingressVip].value: Invalid value: \"10.0.1.5\": spec.topology.variables[ingressVip].value in body must be of type ipv6: \"10.0.1.5\" (latest test)",
                &[("spec.topology.variables[ingressVip].value", "Invalid value")],
            ),
        );
        assert_eq!(e.user_reason(), Some("PatchFailed"));
        assert_eq!(e.role(), Some(Role::Ingress));
        // The generic message with a field cause is validation, not a failed guard.
        let e = Error::from_kube(
            PATCH,
            "ns/c".into(),
            api(422, "Invalid", PATCH_NOT_APPLICABLE, &[("spec.x", "bad")]),
        );
        assert_eq!(e.user_reason(), Some("PatchFailed"));
        let c = Error::from_kube(
            Request::Claim(Role::ControlPlane, "create"),
            "ns/vip-cp-c".into(),
            api(403, "Forbidden", "nope", &[]),
        );
        assert_eq!(c.user_reason(), Some("ClaimFailed"));
        assert_eq!(c.role(), Some(Role::ControlPlane));
    }

    #[test]
    fn cluster_deleted_meanwhile_is_not_a_patch_failure() {
        let e = Error::from_kube(
            PATCH,
            "ns/c".into(),
            api(
                404,
                "NotFound",
                "clusters.cluster.x-k8s.io \"c\" not found",
                &[],
            ),
        );
        assert!(matches!(e, Error::Stale(_)), "{e:?}");
    }

    #[test]
    fn server_trouble_is_transient() {
        for (code, reason) in [
            (500, "InternalError"),
            (409, "Conflict"),
            (429, "TooManyRequests"),
            (503, "ServiceUnavailable"),
            (504, "Timeout"),
        ] {
            let e = Error::from_kube(PATCH, "ns/c".into(), api(code, reason, "x", &[]));
            assert!(matches!(e, Error::Transient { .. }), "{code}");
        }
        let exists = Error::from_kube(
            Request::Claim(Role::ControlPlane, "create"),
            "ns/c".into(),
            api(409, "AlreadyExists", "x", &[]),
        );
        assert!(matches!(exists, Error::Stale(_)));
    }

    #[test]
    fn backoff_is_capped() {
        let b = Duration::from_millis(100);
        assert_eq!(backoff(0, b, Duration::from_secs(60)), b);
        assert_eq!(
            backoff(3, b, Duration::from_secs(60)),
            Duration::from_millis(800)
        );
        assert_eq!(
            backoff(30, b, Duration::from_secs(60)),
            Duration::from_secs(60)
        );
    }
}
