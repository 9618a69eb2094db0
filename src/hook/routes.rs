//! The Runtime SDK protocol: routes, request parsing and response bodies. No I/O: `handle` maps a request to
//! a status code and a JSON body, so every branch is unit-tested without a socket.

use serde_json::{json, Value};

use super::decision::{decide, Answer, Lookup, Sent};

/// The hooks API group and version, as sent in `apiVersion`.
pub const HOOKS_API_VERSION: &str = "hooks.runtime.cluster.x-k8s.io/v1alpha1";
/// Path prefix of every hook route.
pub const HOOKS_PATH: &str = "/hooks.runtime.cluster.x-k8s.io/v1alpha1";
/// The hook we implement.
pub const HOOK_BEFORE_CLUSTER_CREATE: &str = "BeforeClusterCreate";
/// Declared handler timeout (CAPI allows 0..=30; it calls discovery with 10 s).
pub const HANDLER_TIMEOUT_SECONDS: u32 = 10;
/// Largest request body accepted (a Cluster without status; etcd objects stay under 1.5 MiB).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Looks a Cluster up in the caches (implemented over the controller's stores; faked in tests).
pub trait ClusterSource: Send + Sync {
    /// The cache's view of Cluster `ns/name`; `uid` (from the request) guards against a recreated Cluster.
    fn lookup(&self, ns: &str, name: &str, uid: Option<&str>) -> Lookup;
}

/// The handler name CAPI calls us by: `--runtime-extension-name` made a DNS-1123 label.
pub fn handler_name(extension_name: &str) -> String {
    let mut out = String::new();
    for c in extension_name.trim().chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let mut out: String = out.trim_matches('-').chars().take(63).collect();
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() {
        "vip-allocator".to_owned()
    } else {
        out
    }
}

/// `handler` label of the requests metric: which route a request was for.
pub mod handler_label {
    /// The discovery route.
    pub const DISCOVERY: &str = "discovery";
    /// Our BeforeClusterCreate route.
    pub const BEFORE_CLUSTER_CREATE: &str = "BeforeClusterCreate";
    /// Any other path.
    pub const OTHER: &str = "other";
}

/// `result` label of the requests metric.
pub mod result_label {
    /// Discovery answered, or a Cluster let through (`retryAfterSeconds: 0`).
    pub const SUCCESS: &str = "success";
    /// A Cluster held back (`retryAfterSeconds > 0`).
    pub const BLOCKED: &str = "blocked";
    /// A `Failure` response to a malformed request (CAPI's failurePolicy applies).
    pub const FAILURE: &str = "failure";
    /// Refused before the protocol: unknown path, wrong method, body too large or unreadable.
    pub const REJECTED: &str = "rejected";
}

/// What one route answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Value,
    /// The route (a [`handler_label`] value).
    pub handler: &'static str,
    /// The outcome (a [`result_label`] value).
    pub result: &'static str,
}

impl Reply {
    fn ok(handler: &'static str, result: &'static str, body: Value) -> Self {
        Self {
            status: 200,
            body,
            handler,
            result,
        }
    }

    /// A request refused before the protocol (HTTP 4xx).
    pub fn rejected(status: u16, handler: &'static str, body: Value) -> Self {
        Self {
            status,
            body,
            handler,
            result: result_label::REJECTED,
        }
    }
}

/// Everything a request needs besides the caches.
#[derive(Debug, Clone)]
pub struct Routes {
    /// DNS-1123 handler name (see [`handler_name`]).
    pub handler: String,
    /// `--runtime-extension-retry-after-seconds`.
    pub retry_after_seconds: u32,
}

impl Routes {
    /// The BeforeClusterCreate path of our handler.
    pub fn before_cluster_create_path(&self) -> String {
        format!("{HOOKS_PATH}/beforeclustercreate/{}", self.handler)
    }

    /// The [`handler_label`] of a request path.
    pub fn handler_of(&self, path: &str) -> &'static str {
        let path = path.trim_end_matches('/');
        if path == format!("{HOOKS_PATH}/discovery") {
            handler_label::DISCOVERY
        } else if path == self.before_cluster_create_path() {
            handler_label::BEFORE_CLUSTER_CREATE
        } else {
            handler_label::OTHER
        }
    }

    /// Answers one request. `path` excludes the query (`?timeout=` is not needed: we answer at once).
    pub fn handle(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        source: &dyn ClusterSource,
    ) -> Reply {
        let handler = self.handler_of(path);
        let path = path.trim_end_matches('/');
        if handler == handler_label::OTHER {
            return Reply::rejected(
                404,
                handler,
                json!({"kind": "Status", "status": "Failure", "code": 404,
                    "message": format!("no Runtime SDK handler at {path}; this extension serves {HOOKS_PATH}/discovery and {}", self.before_cluster_create_path())}),
            );
        }
        if method != "POST" {
            return Reply::rejected(
                405,
                handler,
                json!({"kind": "Status", "status": "Failure", "code": 405,
                    "message": format!("{method} is not allowed; Runtime SDK hooks are called with POST")}),
            );
        }
        if handler == handler_label::DISCOVERY {
            return match parse(body, "DiscoveryRequest") {
                Ok(_) => Reply::ok(handler, result_label::SUCCESS, self.discovery()),
                Err(msg) => Reply::ok(
                    handler,
                    result_label::FAILURE,
                    failure("DiscoveryResponse", &msg),
                ),
            };
        }
        let kind = "BeforeClusterCreateResponse";
        let failed = |msg: &str| Reply::ok(handler, result_label::FAILURE, failure(kind, msg));
        let request = match parse(body, "BeforeClusterCreateRequest") {
            Ok(v) => v,
            Err(msg) => return failed(&msg),
        };
        let meta = request.pointer("/cluster/metadata");
        let text = |k: &str| {
            meta.and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let (Some(ns), Some(name)) = (text("namespace"), text("name")) else {
            return failed("request has no cluster.metadata.namespace and cluster.metadata.name");
        };
        let lookup = source.lookup(ns, name, text("uid"));
        let sent = Sent::from_request_cluster(request.get("cluster"));
        let answer = decide(&lookup, &sent, ns, name, self.retry_after_seconds);
        tracing::debug!(cluster = %name, ns = %ns, retry_after = answer.retry_after_seconds,
            message = %answer.message, "BeforeClusterCreate answered");
        let result = if answer.retry_after_seconds > 0 {
            result_label::BLOCKED
        } else {
            result_label::SUCCESS
        };
        Reply::ok(handler, result, success(kind, &answer))
    }

    /// The discovery response: one BeforeClusterCreate handler, failurePolicy Fail.
    pub fn discovery(&self) -> Value {
        json!({
            "apiVersion": HOOKS_API_VERSION,
            "kind": "DiscoveryResponse",
            "status": "Success",
            "handlers": [{
                "name": self.handler,
                "requestHook": {"apiVersion": HOOKS_API_VERSION, "hook": HOOK_BEFORE_CLUSTER_CREATE},
                "timeoutSeconds": HANDLER_TIMEOUT_SECONDS,
                "failurePolicy": "Fail",
            }],
        })
    }
}

/// Parses a request body; `Err` is the message of a Failure response.
fn parse(body: &[u8], expected_kind: &str) -> Result<Value, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("request body is not valid JSON: {e}"))?;
    if !value.is_object() {
        return Err(format!(
            "request body must be a JSON object ({expected_kind})"
        ));
    }
    match value.get("kind").and_then(Value::as_str) {
        None | Some("") => Ok(value),
        Some(k) if k == expected_kind => Ok(value),
        Some(k) => Err(format!("expected kind {expected_kind}, got {k}")),
    }
}

fn failure(kind: &str, message: &str) -> Value {
    json!({"apiVersion": HOOKS_API_VERSION, "kind": kind, "status": "Failure", "message": message})
}

fn success(kind: &str, answer: &Answer) -> Value {
    json!({"apiVersion": HOOKS_API_VERSION, "kind": kind, "status": "Success",
        "message": answer.message, "retryAfterSeconds": answer.retry_after_seconds})
}

/// A response body for a request refused before routing (too large, unreadable).
pub fn refused(message: &str) -> Value {
    json!({"apiVersion": HOOKS_API_VERSION, "status": "Failure", "message": message})
}
