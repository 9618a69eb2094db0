//! JSON patch (RFC 6902), JSON merge patch (RFC 7386) and the strategic-merge subset the
//! built-in kinds need.

use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    StrategicMerge,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::StrategicMerge),
            "application/apply-patch+yaml" => Some(PatchType::Apply),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            PatchType::Json => "json",
            PatchType::Merge => "merge",
            PatchType::StrategicMerge => "strategic",
            PatchType::Apply => "apply",
        }
    }
}

/// Why a JSON patch was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonPatchError {
    /// The body is not a JSON patch (400 BadRequest with this text).
    Decode(String),
    /// Applying it failed: evanphx/json-patch's error text (kube-apiserver answers 422 with a generic message).
    Apply(String),
}

/// Applies an RFC 6902 patch the way kube-apiserver does (evanphx/json-patch v4.12 on the Go-encoded object);
/// see `jsonpatch.rs`. `bytewise`: leaves of `test` are compared as raw bytes (Go encoding of the stored value vs
/// the bytes the client sent), else by JSON value.
pub fn json_patch(doc: &mut Value, body: &[u8], bytewise: bool) -> Result<(), JsonPatchError> {
    crate::jsonpatch::apply(doc, body, bytewise)
}

/// Applies an RFC 7386 merge patch (null deletes, arrays replace).
pub fn merge_patch(doc: &mut Value, patch: &Value) {
    json_patch::merge(doc, patch);
}

/// Strategic merge for built-in kinds whose served fields are scalars and maps: merge-patch
/// semantics, with `$`-directives dropped.
pub fn strategic_merge(doc: &mut Value, patch: &Value) {
    let mut p = patch.clone();
    strip_directives(&mut p);
    json_patch::merge(doc, &p);
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn test_op_on_missing_path_matches_null_and_failed_test_errors() {
        let mut d = json!({"metadata": {"name": "x"}});
        let ok = br#"[{"op":"test","path":"/metadata/finalizers","value":null},
            {"op":"add","path":"/metadata/finalizers","value":["f"]}]"#;
        json_patch(&mut d, ok, true).unwrap();
        assert_eq!(d["metadata"]["finalizers"], json!(["f"]));
        let bad = br#"[{"op":"test","path":"/metadata/name","value":"y"}]"#;
        assert!(json_patch(&mut d, bad, true).is_err());
    }

    #[test]
    fn merge_patch_null_deletes_and_arrays_replace() {
        let mut d = json!({"a": 1, "b": [1, 2], "c": {"d": 1}});
        merge_patch(&mut d, &json!({"a": null, "b": [3], "c": {"e": 2}}));
        assert_eq!(d, json!({"b": [3], "c": {"d": 1, "e": 2}}));
    }
}
