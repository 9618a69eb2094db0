//! `metav1.Status` error bodies with the reasons and codes a real API server uses.

use serde_json::{json, Value};

/// One field error inside an `Invalid` status (`details.causes[]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    pub reason: &'static str,
    pub field: String,
    pub message: String,
}

impl Cause {
    pub fn required(field: &str) -> Self {
        Cause {
            reason: "FieldValueRequired",
            field: field.to_string(),
            message: "Required value".into(),
        }
    }
    pub fn invalid(field: &str, value: &Value, detail: &str) -> Self {
        Cause {
            reason: "FieldValueInvalid",
            field: field.to_string(),
            message: format!("Invalid value: {}: {detail}", short_value(value)),
        }
    }
    pub fn type_invalid(field: &str, value: &Value, detail: &str) -> Self {
        Cause {
            reason: "FieldValueTypeInvalid",
            field: field.to_string(),
            message: format!("Invalid value: {}: {detail}", short_value(value)),
        }
    }
    pub fn not_supported(field: &str, value: &Value, allowed: &[Value]) -> Self {
        let list: Vec<String> = allowed.iter().map(short_value).collect();
        Cause {
            reason: "FieldValueNotSupported",
            field: field.to_string(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                short_value(value),
                list.join(", ")
            ),
        }
    }
    pub fn too_many(field: &str, actual: usize, max: u64) -> Self {
        Cause {
            reason: "FieldValueTooMany",
            field: field.to_string(),
            message: format!("Too many: {actual}: must have at most {max} items"),
        }
    }
    pub fn too_long(field: &str, max: u64) -> Self {
        Cause {
            reason: "FieldValueTooLong",
            field: field.to_string(),
            message: format!("Too long: may not be more than {max} bytes"),
        }
    }
    pub fn duplicate(field: &str, value: &Value) -> Self {
        Cause {
            reason: "FieldValueDuplicate",
            field: field.to_string(),
            message: format!("Duplicate value: {}", short_value(value)),
        }
    }
    pub fn forbidden(field: &str, detail: &str) -> Self {
        Cause {
            reason: "FieldValueForbidden",
            field: field.to_string(),
            message: format!("Forbidden: {detail}"),
        }
    }
    fn render(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }
}

pub(crate) fn short_value(v: &Value) -> String {
    match v {
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        other => other.to_string(),
    }
}

/// An API error: rendered as a `metav1.Status` with `status: Failure`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

/// Identifies the object an error is about: group, plural, kind, name.
pub struct Subject<'a> {
    pub group: &'a str,
    pub plural: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
}

impl Subject<'_> {
    fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
    fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
    fn details(&self) -> Value {
        let mut d = json!({"name": self.name, "kind": self.plural});
        if !self.group.is_empty() {
            d["group"] = json!(self.group);
        }
        d
    }
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }
    pub fn not_found(s: &Subject) -> Self {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("{} \"{}\" not found", s.qualified_plural(), s.name),
            details: Some(s.details()),
        }
    }
    pub fn already_exists(s: &Subject) -> Self {
        ApiError {
            code: 409,
            reason: "AlreadyExists",
            message: format!("{} \"{}\" already exists", s.qualified_plural(), s.name),
            details: Some(s.details()),
        }
    }
    pub fn conflict(s: &Subject) -> Self {
        ApiError {
            code: 409,
            reason: "Conflict",
            message: format!(
                "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                s.qualified_plural(),
                s.name
            ),
            details: Some(s.details()),
        }
    }
    pub fn conflict_msg(s: &Subject, msg: String, causes: Vec<Value>) -> Self {
        let mut details = s.details();
        if !causes.is_empty() {
            details["causes"] = Value::Array(causes);
        }
        ApiError {
            code: 409,
            reason: "Conflict",
            message: msg,
            details: Some(details),
        }
    }
    pub fn invalid(s: &Subject, causes: Vec<Cause>) -> Self {
        // Like field.ErrorList.ToAggregate: the message lists each distinct error once (causes keep them all).
        let mut rendered: Vec<String> = Vec::new();
        for r in causes.iter().map(Cause::render) {
            if !rendered.contains(&r) {
                rendered.push(r);
            }
        }
        let list = if rendered.len() == 1 {
            rendered[0].clone()
        } else {
            format!("[{}]", rendered.join(", "))
        };
        let mut details = json!({"name": s.name, "kind": s.kind});
        if !s.group.is_empty() {
            details["group"] = json!(s.group);
        }
        details["causes"] = causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        ApiError {
            code: 422,
            reason: "Invalid",
            message: format!("{} \"{}\" is invalid: {list}", s.qualified_kind(), s.name),
            details: Some(details),
        }
    }
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", msg)
    }
    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }
    pub fn unsupported_media_type(content_type: &str, accepted: &[&str]) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {} (got {content_type:?})",
                accepted.join(", ")
            ),
        )
    }
    pub fn expired(msg: impl Into<String>) -> Self {
        Self::new(410, "Expired", msg)
    }
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", msg)
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", msg.into()),
        )
    }
    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }
    pub fn too_many_requests(msg: impl Into<String>) -> Self {
        Self::new(429, "TooManyRequests", msg)
    }

    /// The `metav1.Status` body of this error.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

/// A `Status` with `status: Success`, as returned by a delete that removed the object at once.
pub fn success_status(group: &str, plural: &str, name: &str, uid: &str) -> Value {
    let mut details = json!({"name": name, "kind": plural, "uid": uid});
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_lists_field_paths_in_message_and_causes() {
        let s = Subject {
            group: "cluster.x-k8s.io",
            plural: "clusters",
            kind: "Cluster",
            name: "c1",
        };
        let e = ApiError::invalid(&s, vec![Cause::required("spec.topology.class")]);
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "Cluster.cluster.x-k8s.io \"c1\" is invalid: spec.topology.class: Required value"
        );
        assert_eq!(
            e.status()["details"]["causes"][0]["field"],
            "spec.topology.class"
        );
    }

    #[test]
    fn not_found_of_core_kind_has_no_group() {
        let s = Subject {
            group: "",
            plural: "namespaces",
            kind: "Namespace",
            name: "x",
        };
        let st = ApiError::not_found(&s).status();
        assert_eq!(st["message"], "namespaces \"x\" not found");
        assert!(st["details"].get("group").is_none());
    }
}
