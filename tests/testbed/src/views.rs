//! How stored objects are presented through a resource version: the apiVersion of the request
//! (no conversion needed between our served versions) and the events.k8s.io/v1 view of events.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::resources::{ResourceInfo, View};

/// core/v1 Event field ↔ events.k8s.io/v1 Event field.
const EVENT_FIELDS: [(&str, &str); 8] = [
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("related", "related"),
];

fn rename(obj: &Value, from_core: bool) -> Value {
    let Some(map) = obj.as_object() else {
        return obj.clone();
    };
    let mut out = Map::new();
    for (k, v) in map {
        let renamed = EVENT_FIELDS
            .iter()
            .find(|(core, v1)| if from_core { core == k } else { v1 == k })
            .map(|(core, v1)| if from_core { *v1 } else { *core })
            .unwrap_or(k.as_str());
        out.insert(renamed.to_string(), v.clone());
    }
    Value::Object(out)
}

/// The stored object as the client of `info` sees it.
pub fn to_view(info: &ResourceInfo, obj: &Arc<Value>) -> Arc<Value> {
    match info.view {
        View::EventsV1 => {
            let mut v = rename(obj, true);
            v["apiVersion"] = Value::String(info.api_version());
            Arc::new(v)
        }
        View::Native => {
            let av = info.api_version();
            if obj.get("apiVersion").and_then(Value::as_str) == Some(av.as_str()) {
                obj.clone()
            } else {
                let mut v = (**obj).clone();
                v["apiVersion"] = Value::String(av);
                Arc::new(v)
            }
        }
    }
}

/// A client's object in storage shape.
pub fn from_view(info: &ResourceInfo, obj: Value) -> Value {
    match info.view {
        View::EventsV1 => {
            let mut v = rename(&obj, false);
            v["apiVersion"] = Value::String("v1".into());
            v["kind"] = Value::String("Event".into());
            v
        }
        View::Native => obj,
    }
}

/// The apiVersion objects of this resource carry in storage.
pub fn storage_api_version(info: &ResourceInfo) -> String {
    match info.view {
        View::EventsV1 => "v1".into(),
        View::Native => info.api_version(),
    }
}

/// Whether watch lines serialised from storage can be sent as-is to this client.
pub fn is_identity(info: &ResourceInfo, obj: &Value) -> bool {
    info.view == View::Native
        && obj.get("apiVersion").and_then(Value::as_str) == Some(info.api_version().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Registry;
    use serde_json::json;

    #[test]
    fn events_v1_view_renames_fields_both_ways() {
        let reg = Registry::with_builtins();
        let v1 = reg.lookup("events.k8s.io", "v1", "events").unwrap();
        let core = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"},
            "involvedObject": {"name": "c"}, "message": "hi", "reason": "R"});
        let seen = to_view(&v1, &Arc::new(core.clone()));
        assert_eq!(seen["regarding"]["name"], "c");
        assert_eq!(seen["note"], "hi");
        assert_eq!(seen["apiVersion"], "events.k8s.io/v1");
        assert_eq!(from_view(&v1, (*seen).clone()), core);
    }
}
