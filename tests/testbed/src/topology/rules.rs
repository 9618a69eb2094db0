//! The simulator's pure parts: the request copy of a Cluster, discovery validation, namespace selectors.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;

use super::{Handler, DEFAULT_HANDLER_TIMEOUT};

/// The Cluster as CAPI sends it: no status, no managedFields, two annotations removed.
pub(super) fn request_copy(cluster: &Value) -> Value {
    let mut c = cluster.clone();
    if let Some(o) = c.as_object_mut() {
        o.remove("status");
    }
    if let Some(m) = c.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
        if let Some(a) = m.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove("kubectl.kubernetes.io/last-applied-configuration");
            a.remove("cluster.x-k8s.io/conversion-data");
        }
    }
    c
}

/// Handlers of a discovery answer, validated like CAPI: `(handler, hook)`.
pub(super) fn parse_discovery(resp: &Value) -> Result<Vec<(Handler, String)>, String> {
    if resp.get("status").and_then(Value::as_str) != Some("Success") {
        return Err(format!(
            "discovery failed: {}",
            resp.get("message").and_then(Value::as_str).unwrap_or("")
        ));
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for h in resp
        .get("handlers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = h.get("name").and_then(Value::as_str).unwrap_or("");
        if !is_dns_label(name) || !seen.insert(name.to_owned()) {
            return Err(format!(
                "handler name {name:?} is not a unique DNS-1123 label"
            ));
        }
        let hook = h
            .pointer("/requestHook/hook")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("handler {name}: requestHook.hook missing"))?;
        let timeout = match h.get("timeoutSeconds") {
            None | Some(Value::Null) => DEFAULT_HANDLER_TIMEOUT,
            Some(v) => match v.as_u64() {
                Some(0) => DEFAULT_HANDLER_TIMEOUT,
                Some(t) if t <= 30 => t,
                _ => return Err(format!("handler {name}: timeoutSeconds must be 0..30")),
            },
        };
        let ignore_failures = match h.get("failurePolicy").and_then(Value::as_str) {
            None | Some("Fail") => false,
            Some("Ignore") => true,
            Some(p) => return Err(format!("handler {name}: failurePolicy {p:?}")),
        };
        out.push((
            Handler {
                name: name.to_owned(),
                timeout: Duration::from_secs(timeout),
                ignore_failures,
            },
            hook.to_owned(),
        ));
    }
    Ok(out)
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A LabelSelector (`matchLabels`, `matchExpressions`) against labels; `{}` matches everything.
pub(super) fn selector_matches(sel: &Value, labels: &Value) -> bool {
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    let by_labels = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(|m| m.iter().all(|(k, v)| label(k) == v.as_str()));
    let by_exprs = sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .is_none_or(|exprs| {
            exprs.iter().all(|e| {
                let key = e.get("key").and_then(Value::as_str).unwrap_or("");
                let values: Vec<&str> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|v| v.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                match e.get("operator").and_then(Value::as_str) {
                    Some("In") => label(key).is_some_and(|l| values.contains(&l)),
                    Some("NotIn") => label(key).is_none_or(|l| !values.contains(&l)),
                    Some("Exists") => label(key).is_some(),
                    Some("DoesNotExist") => label(key).is_none(),
                    _ => false,
                }
            })
        });
    by_labels && by_exprs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::client::HOOKS_API_VERSION;
    use serde_json::json;

    #[test]
    fn discovery_answers_are_validated_like_capi() {
        let ok = json!({"status": "Success", "handlers": [
            {"name": "vip", "requestHook": {"apiVersion": HOOKS_API_VERSION, "hook": "BeforeClusterCreate"}},
            {"name": "other", "requestHook": {"hook": "AfterClusterUpgrade"}, "timeoutSeconds": 3, "failurePolicy": "Ignore"}]});
        let h = parse_discovery(&ok).unwrap();
        assert_eq!(h[0].0.timeout, Duration::from_secs(10));
        assert!(!h[0].0.ignore_failures);
        assert!(h[1].0.ignore_failures);
        for bad in [
            json!({"status": "Failure", "message": "x"}),
            json!({"status": "Success", "handlers": [{"name": "Bad_Name", "requestHook": {"hook": "X"}}]}),
            json!({"status": "Success", "handlers": [{"name": "a", "requestHook": {"hook": "X"}, "timeoutSeconds": 31}]}),
            json!({"status": "Success", "handlers": [{"name": "a", "requestHook": {"hook": "X"}, "failurePolicy": "Maybe"}]}),
        ] {
            assert!(parse_discovery(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn namespace_selectors_match_like_label_selectors() {
        let labels = json!({"env": "prod"});
        assert!(selector_matches(&json!({}), &labels));
        assert!(selector_matches(
            &json!({"matchLabels": {"env": "prod"}}),
            &labels
        ));
        assert!(!selector_matches(
            &json!({"matchLabels": {"env": "dev"}}),
            &labels
        ));
        let expr = |op: &str, vals: Value| json!({"matchExpressions": [{"key": "env", "operator": op, "values": vals}]});
        assert!(selector_matches(&expr("In", json!(["prod", "x"])), &labels));
        assert!(!selector_matches(&expr("NotIn", json!(["prod"])), &labels));
        assert!(selector_matches(&expr("Exists", json!([])), &labels));
        assert!(!selector_matches(&expr("DoesNotExist", json!([])), &labels));
    }

    #[test]
    fn the_request_copy_drops_status_managed_fields_and_two_annotations() {
        let c = json!({"metadata": {"name": "a", "managedFields": [{}], "annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": "{}", "cluster.x-k8s.io/conversion-data": "x", "keep": "y"}},
            "spec": {}, "status": {"phase": "Pending"}});
        let r = request_copy(&c);
        assert!(r.get("status").is_none());
        assert!(r.pointer("/metadata/managedFields").is_none());
        assert_eq!(
            r.pointer("/metadata/annotations"),
            Some(&json!({"keep": "y"}))
        );
    }
}
