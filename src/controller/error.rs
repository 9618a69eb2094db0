//! Reconcile errors, classified for the error policy and for Events/metrics.

use std::time::Duration;

use crate::names::reasons;

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cache was behind the server (failed `test` guard, claim already exists): retry soon.
    #[error("stale cache: {0}")]
    Stale(String),
    /// The API server refused our Cluster patch for a reason the user can fix (webhook, schema).
    #[error("patching Cluster {cluster} was refused: {message}")]
    PatchRejected {
        /// `namespace/name`.
        cluster: String,
        /// Server message.
        message: String,
    },
    /// The API server refused to create, adopt or delete our claim for a reason the user can fix.
    #[error("{action} IPAddressClaim {claim} was refused: {message}")]
    ClaimRejected {
        /// What we tried.
        action: &'static str,
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

impl Error {
    /// Event reason and metric `reason` label for user-caused errors; `None` for transient ones.
    pub fn user_reason(&self) -> Option<&'static str> {
        match self {
            Error::PatchRejected { .. } => Some(reasons::PATCH_FAILED),
            Error::ClaimRejected { .. } => Some(reasons::CLAIM_FAILED),
            Error::Stale(_) | Error::Transient { .. } => None,
        }
    }

    /// Classifies a client error from `action`.
    pub fn from_kube(
        action: impl Into<String>,
        subject: String,
        err: kube::Error,
        claim: Option<&'static str>,
    ) -> Self {
        let action = action.into();
        if let kube::Error::Api(status) = &err {
            let code = status.code;
            let user_caused = matches!(code, 400 | 403 | 404 | 415 | 422)
                || (code == 409 && status.reason == "AlreadyExists");
            if code == 422 && status.message.to_ascii_lowercase().contains("test") {
                return Error::Stale(format!("{action} {subject}: {}", status.message));
            }
            if code == 409 && status.reason == "AlreadyExists" {
                return Error::Stale(format!("{action} {subject}: already exists"));
            }
            if user_caused {
                return match claim {
                    Some(what) => Error::ClaimRejected {
                        action: what,
                        claim: subject,
                        message: status.message.clone(),
                    },
                    None => Error::PatchRejected {
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

    fn api(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, reason)
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn failed_test_guard_is_stale_not_user_error() {
        let e = Error::from_kube(
            "patch",
            "ns/c".into(),
            api(
                422,
                "Invalid",
                "testing value /spec/topology/variables failed: test failed",
            ),
            None,
        );
        assert!(matches!(e, Error::Stale(_)));
        assert_eq!(e.user_reason(), None);
    }

    #[test]
    fn validation_refusal_is_patch_failed() {
        let e = Error::from_kube(
            "patch",
            "ns/c".into(),
            api(
                422,
                "Invalid",
                "spec.topology.variables[0].value: Invalid value",
            ),
            None,
        );
        assert_eq!(e.user_reason(), Some("PatchFailed"));
        let c = Error::from_kube(
            "create",
            "ns/vip-cp-c".into(),
            api(403, "Forbidden", "nope"),
            Some("create"),
        );
        assert_eq!(c.user_reason(), Some("ClaimFailed"));
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
            let e = Error::from_kube("patch", "ns/c".into(), api(code, reason, "x"), None);
            assert!(matches!(e, Error::Transient { .. }), "{code}");
        }
        let exists = Error::from_kube(
            "create",
            "ns/c".into(),
            api(409, "AlreadyExists", "x"),
            Some("create"),
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
