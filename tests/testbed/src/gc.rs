//! Garbage collector and namespace finaliser, driven by the store's change stream: deletes
//! dependents whose owners are all gone, runs foreground and orphan deletion, empties
//! terminating namespaces.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::delete::{DeleteOpts, Propagation, FOREGROUND, ORPHAN};
use crate::objects::WriteCtx;
use crate::patch::PatchType;
use crate::state::{finalizers, is_deleting, meta_str, Shared};
use crate::store::{EventType, GroupResource, ObjKey};

pub const AGENT: &str = "testbed-gc";

fn owner_refs(obj: &Value) -> Vec<Value> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn ref_uid(r: &Value) -> &str {
    r.get("uid").and_then(Value::as_str).unwrap_or("")
}

pub async fn run(shared: Arc<Shared>) {
    let mut sub = shared.store.subscribe_from(0);
    loop {
        let batch = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            b = sub.next(&shared.store) => b,
        };
        match batch {
            Ok(Some(events)) => {
                let mut todo = BTreeSet::new();
                for e in events {
                    collect_work(&shared, &e.key, e.kind, &e.object, &mut todo);
                }
                for key in todo {
                    process(&shared, &key);
                }
            }
            Ok(None) => return,
            Err(_) => {
                // Fell behind the history: re-examine everything once.
                sub = shared.store.subscribe();
                resync(&shared);
            }
        }
    }
}

fn collect_work(
    shared: &Shared,
    key: &ObjKey,
    kind: EventType,
    obj: &Value,
    todo: &mut BTreeSet<ObjKey>,
) {
    let uid = meta_str(obj, "uid").unwrap_or("");
    if kind == EventType::Deleted {
        for d in shared.store.dependents_of(uid) {
            todo.insert(d);
        }
        for r in owner_refs(obj) {
            if let Some((owner, _)) = shared.store.get_by_uid(ref_uid(&r)) {
                todo.insert(owner);
            }
        }
        if !key.namespace.is_empty() {
            todo.insert(ObjKey {
                gr: GroupResource::new("", "namespaces"),
                namespace: String::new(),
                name: key.namespace.clone(),
            });
        }
        return;
    }
    if is_deleting(obj) || !owner_refs(obj).is_empty() {
        todo.insert(key.clone());
    }
}

fn resync(shared: &Shared) {
    let grs: Vec<GroupResource> = shared
        .registry()
        .all()
        .iter()
        .map(|i| i.storage.clone())
        .collect();
    for gr in grs {
        let (items, _, _) = shared.store.list(&gr, None, None, 0, &|o| {
            is_deleting(o) || !owner_refs(o).is_empty()
        });
        for it in items {
            let key = ObjKey {
                gr: gr.clone(),
                namespace: meta_str(&it, "namespace").unwrap_or("").into(),
                name: meta_str(&it, "name").unwrap_or("").into(),
            };
            process(shared, &key);
        }
    }
}

fn ctx() -> WriteCtx {
    WriteCtx::internal(AGENT)
}

fn delete(shared: &Shared, key: &ObjKey, policy: Propagation) {
    let Some(info) = shared.info_for(&key.gr) else {
        return;
    };
    let opts = DeleteOpts {
        propagation: Some(policy),
        ..Default::default()
    };
    let _ = shared.delete(&info, &key.namespace, &key.name, &opts, &ctx());
}

fn json_patch(shared: &Shared, key: &ObjKey, patch: Value) {
    let Some(info) = shared.info_for(&key.gr) else {
        return;
    };
    let body = patch.to_string();
    let _ = shared.patch(
        &info,
        &key.namespace,
        &key.name,
        PatchType::Json,
        body.as_bytes(),
        false,
        false,
        &ctx(),
    );
}

/// Removes one finalizer, guarded by a test of the current list.
fn remove_finalizer(shared: &Shared, key: &ObjKey, obj: &Value, name: &str) {
    let fins = finalizers(obj);
    let rest: Vec<&String> = fins.iter().filter(|f| *f != name).collect();
    json_patch(
        shared,
        key,
        json!([{"op": "test", "path": "/metadata/finalizers", "value": fins},
        {"op": "replace", "path": "/metadata/finalizers", "value": rest}]),
    );
}

fn process(shared: &Shared, key: &ObjKey) {
    let Some(obj) = shared.store.get(&key.gr, &key.namespace, &key.name) else {
        return;
    };
    let uid = meta_str(&obj, "uid").unwrap_or("").to_string();
    if key.gr.group.is_empty() && key.gr.resource == "namespaces" {
        if is_deleting(&obj) {
            finalize_namespace(shared, key, &obj);
        }
        return;
    }
    let fins = finalizers(&obj);
    if is_deleting(&obj) && fins.iter().any(|f| f == ORPHAN) {
        for d in shared.store.dependents_of(&uid) {
            if let Some(dep) = shared.store.get(&d.gr, &d.namespace, &d.name) {
                let refs = owner_refs(&dep);
                let kept: Vec<&Value> = refs.iter().filter(|r| ref_uid(r) != uid).collect();
                json_patch(
                    shared,
                    &d,
                    json!([{"op": "test", "path": "/metadata/ownerReferences", "value": refs},
                    {"op": "replace", "path": "/metadata/ownerReferences", "value": kept}]),
                );
            }
        }
        remove_finalizer(shared, key, &obj, ORPHAN);
        return;
    }
    if is_deleting(&obj) && fins.iter().any(|f| f == FOREGROUND) {
        let mut blocking = 0;
        for d in shared.store.dependents_of(&uid) {
            let Some(dep) = shared.store.get(&d.gr, &d.namespace, &d.name) else {
                continue;
            };
            let blocks = owner_refs(&dep).iter().any(|r| {
                ref_uid(r) == uid
                    && r.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true)
            });
            if blocks {
                blocking += 1;
            }
            if !is_deleting(&dep) {
                delete(shared, &d, Propagation::Foreground);
            }
        }
        if blocking == 0 {
            remove_finalizer(shared, key, &obj, FOREGROUND);
        }
        return;
    }
    let refs = owner_refs(&obj);
    if refs.is_empty() {
        return;
    }
    // An owner of a kind nobody serves cannot be checked: like the real collector, keep it.
    let alive: Vec<&Value> = refs
        .iter()
        .filter(|r| {
            let served = {
                let reg = shared.registry();
                let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("");
                reg.serves_kind(s("apiVersion"), s("kind"))
            };
            !served || shared.store.get_by_uid(ref_uid(r)).is_some()
        })
        .collect();
    if alive.is_empty() {
        if !is_deleting(&obj) {
            delete(shared, key, Propagation::Background);
        }
    } else if alive.len() < refs.len() {
        json_patch(
            shared,
            key,
            json!([{"op": "test", "path": "/metadata/ownerReferences", "value": refs},
            {"op": "replace", "path": "/metadata/ownerReferences", "value": alive}]),
        );
    }
}

fn finalize_namespace(shared: &Shared, key: &ObjKey, ns_obj: &Value) {
    let ns = key.name.clone();
    let grs: Vec<GroupResource> = {
        let reg = shared.registry();
        let mut v: Vec<GroupResource> = reg
            .all()
            .iter()
            .filter(|i| i.namespaced)
            .map(|i| i.storage.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let mut remaining = 0;
    for gr in grs {
        let (items, _, _) = shared.store.list(&gr, Some(&ns), None, 0, &|_| true);
        remaining += items.len();
        for it in items {
            if !is_deleting(&it) {
                let k = ObjKey {
                    gr: gr.clone(),
                    namespace: ns.clone(),
                    name: meta_str(&it, "name").unwrap_or("").into(),
                };
                delete(shared, &k, Propagation::Background);
            }
        }
    }
    if remaining == 0 {
        let rv = crate::store::rv_of(ns_obj);
        if let Ok(last) = shared.store.swap(key, rv, None) {
            shared.stats.write(crate::stats::WriteRecord {
                seq: 0,
                time_us: 0,
                user_agent: AGENT.into(),
                verb: "delete".into(),
                patch_type: None,
                group: String::new(),
                version: "v1".into(),
                resource: "namespaces".into(),
                subresource: "finalize".into(),
                namespace: String::new(),
                name: ns,
                code: 200,
                resource_version: meta_str(&last, "resourceVersion").map(String::from),
            });
        }
    }
}
