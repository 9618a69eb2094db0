//! The object store: ordered maps per resource, one global resourceVersion counter, a bounded
//! history of change events shared by every watcher and every in-process controller.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use serde_json::{json, Value};

/// Storage identity of a resource: group and plural (versions share one storage).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupResource {
    pub group: String,
    pub resource: String,
}

impl GroupResource {
    pub fn new(group: &str, resource: &str) -> Self {
        GroupResource {
            group: group.to_string(),
            resource: resource.to_string(),
        }
    }
}

/// Namespace ("" for cluster-scoped) and name.
pub type ObjName = (String, String);

/// Full identity of a stored object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjKey {
    pub gr: GroupResource,
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change of the store. The watch line is serialised at most once and shared.
#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub key: ObjKey,
    pub kind: EventType,
    /// The object after the change (for DELETED: the last state, carrying the deletion's rv).
    pub object: Arc<Value>,
    /// The object before the change (None for ADDED).
    pub prev: Option<Arc<Value>>,
    line: OnceLock<Bytes>,
}

impl Event {
    /// `{"type":…,"object":…}\n` as sent on a watch stream.
    pub fn line(&self) -> Bytes {
        self.line
            .get_or_init(|| watch_line(self.kind.as_str(), &self.object))
            .clone()
    }
}

pub fn watch_line(kind: &str, object: &Value) -> Bytes {
    let mut buf = Vec::with_capacity(512);
    buf.extend_from_slice(b"{\"type\":\"");
    buf.extend_from_slice(kind.as_bytes());
    buf.extend_from_slice(b"\",\"object\":");
    // Serialising a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut buf, object);
    buf.extend_from_slice(b"}\n");
    Bytes::from(buf)
}

/// Returned when a caller's view of an object is stale (optimistic concurrency).
#[derive(Debug, PartialEq, Eq)]
pub struct Stale;

/// Returned when a requested resourceVersion is older than the retained history.
#[derive(Debug, PartialEq, Eq)]
pub struct Expired {
    pub requested: u64,
    pub oldest: u64,
}

struct Inner {
    rv: u64,
    objects: HashMap<GroupResource, BTreeMap<ObjName, Arc<Value>>>,
    history: VecDeque<Arc<Event>>,
    /// Events with rv <= compacted are gone from history.
    compacted: u64,
    uids: HashMap<String, ObjKey>,
    dependents: HashMap<String, BTreeSet<ObjKey>>,
}

pub struct Store {
    inner: Mutex<Inner>,
    notify: tokio::sync::watch::Sender<u64>,
    history_cap: usize,
}

pub fn rv_of(obj: &Value) -> Option<u64> {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

pub fn uid_of(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/uid").and_then(Value::as_str)
}

fn owner_uids(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str).map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

impl Store {
    pub fn new(history_cap: usize) -> Self {
        let (notify, _) = tokio::sync::watch::channel(0);
        Store {
            inner: Mutex::new(Inner {
                rv: 0,
                objects: HashMap::new(),
                history: VecDeque::new(),
                compacted: 0,
                uids: HashMap::new(),
                dependents: HashMap::new(),
            }),
            notify,
            history_cap: history_cap.max(16),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way we care about.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    pub fn get(&self, gr: &GroupResource, namespace: &str, name: &str) -> Option<Arc<Value>> {
        let inner = self.lock();
        inner
            .objects
            .get(gr)?
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    pub fn get_by_uid(&self, uid: &str) -> Option<(ObjKey, Arc<Value>)> {
        let inner = self.lock();
        let key = inner.uids.get(uid)?.clone();
        let obj = inner
            .objects
            .get(&key.gr)?
            .get(&(key.namespace.clone(), key.name.clone()))?
            .clone();
        Some((key, obj))
    }

    /// Keys of objects whose ownerReferences name `owner_uid`.
    pub fn dependents_of(&self, owner_uid: &str) -> Vec<ObjKey> {
        self.lock()
            .dependents
            .get(owner_uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Up to `limit` objects (0 = all) in key order, starting after `after`, with the snapshot rv
    /// and whether more objects follow. `filter` runs under the lock, so keep it cheap.
    pub fn list(
        &self,
        gr: &GroupResource,
        namespace: Option<&str>,
        after: Option<&ObjName>,
        limit: usize,
        filter: &dyn Fn(&Value) -> bool,
    ) -> (Vec<Arc<Value>>, u64, Option<ObjName>) {
        use std::ops::Bound;
        let inner = self.lock();
        let mut out = Vec::new();
        let mut next = None;
        let mut last_key: Option<ObjName> = None;
        if let Some(map) = inner.objects.get(gr) {
            let lower = match (after, namespace) {
                (Some(k), _) => Bound::Excluded(k.clone()),
                (None, Some(ns)) => Bound::Included((ns.to_string(), String::new())),
                (None, None) => Bound::Unbounded,
            };
            for (k, v) in map.range((lower, Bound::Unbounded)) {
                if let Some(ns) = namespace {
                    if k.0 != ns {
                        break;
                    }
                }
                if !filter(v) {
                    continue;
                }
                if limit > 0 && out.len() == limit {
                    next = last_key.take();
                    break;
                }
                out.push(v.clone());
                last_key = Some(k.clone());
            }
        }
        (out, inner.rv, next)
    }

    /// Atomically replaces the object at `key` if its current rv equals `expected` (None: must
    /// not exist). `new = None` deletes. Returns the stored object (with its new rv).
    pub fn swap(
        &self,
        key: &ObjKey,
        expected: Option<u64>,
        new: Option<Value>,
    ) -> Result<Arc<Value>, Stale> {
        self.swap_inner(key, expected, new, None)
    }

    /// Removes the object, reporting `last` (its final state) in the DELETED event.
    pub fn remove_as(&self, key: &ObjKey, expected: u64, last: Value) -> Result<Arc<Value>, Stale> {
        self.swap_inner(key, Some(expected), None, Some(last))
    }

    fn swap_inner(
        &self,
        key: &ObjKey,
        expected: Option<u64>,
        new: Option<Value>,
        last: Option<Value>,
    ) -> Result<Arc<Value>, Stale> {
        let mut inner = self.lock();
        let name = (key.namespace.clone(), key.name.clone());
        let current = inner
            .objects
            .get(&key.gr)
            .and_then(|m| m.get(&name))
            .cloned();
        let current_rv = current.as_deref().and_then(rv_of);
        if current_rv != expected || (current.is_none() && new.is_none()) {
            return Err(Stale);
        }
        inner.rv += 1;
        let rv = inner.rv;
        let rv_str = Value::String(rv.to_string());
        let (kind, object) = match new {
            Some(mut obj) => {
                if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.insert("resourceVersion".into(), rv_str);
                }
                let obj = Arc::new(obj);
                inner
                    .objects
                    .entry(key.gr.clone())
                    .or_default()
                    .insert(name, obj.clone());
                (
                    if current.is_some() {
                        EventType::Modified
                    } else {
                        EventType::Added
                    },
                    obj,
                )
            }
            None => {
                if let Some(m) = inner.objects.get_mut(&key.gr) {
                    m.remove(&name);
                }
                let mut last = last
                    .or_else(|| current.as_deref().cloned())
                    .unwrap_or_else(|| json!({}));
                if let Some(meta) = last.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.insert("resourceVersion".into(), rv_str);
                }
                (EventType::Deleted, Arc::new(last))
            }
        };
        Self::reindex(
            &mut inner,
            key,
            current.as_deref(),
            (kind != EventType::Deleted).then_some(&*object),
        );
        let event = Arc::new(Event {
            rv,
            key: key.clone(),
            kind,
            object: object.clone(),
            prev: current,
            line: OnceLock::new(),
        });
        inner.history.push_back(event);
        while inner.history.len() > self.history_cap {
            if let Some(e) = inner.history.pop_front() {
                inner.compacted = e.rv;
            }
        }
        drop(inner);
        self.notify.send_replace(rv);
        Ok(object)
    }

    fn reindex(inner: &mut Inner, key: &ObjKey, old: Option<&Value>, new: Option<&Value>) {
        if let Some(old) = old {
            if let Some(uid) = uid_of(old) {
                inner.uids.remove(uid);
            }
            for owner in owner_uids(old) {
                if let Some(set) = inner.dependents.get_mut(&owner) {
                    set.remove(key);
                    if set.is_empty() {
                        inner.dependents.remove(&owner);
                    }
                }
            }
        }
        if let Some(new) = new {
            if let Some(uid) = uid_of(new) {
                inner.uids.insert(uid.to_string(), key.clone());
            }
            for owner in owner_uids(new) {
                inner
                    .dependents
                    .entry(owner)
                    .or_default()
                    .insert(key.clone());
            }
        }
    }

    /// Removes every object of a resource (when its CRD goes away), emitting DELETED events.
    pub fn drop_resource(&self, gr: &GroupResource) {
        let keys: Vec<ObjName> = {
            let inner = self.lock();
            inner
                .objects
                .get(gr)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default()
        };
        for (namespace, name) in keys {
            let key = ObjKey {
                gr: gr.clone(),
                namespace,
                name,
            };
            if let Some(cur) = self.get(&key.gr, &key.namespace, &key.name) {
                let _ = self.swap(&key, rv_of(&cur), None);
            }
        }
    }

    /// Events with rv > `after`, or `Expired` when some of them are no longer retained.
    pub fn events_since(&self, after: u64) -> Result<Vec<Arc<Event>>, Expired> {
        let inner = self.lock();
        if after < inner.compacted {
            return Err(Expired {
                requested: after,
                oldest: inner.compacted + 1,
            });
        }
        let first_rv = match inner.history.front() {
            Some(e) => e.rv,
            None => return Ok(Vec::new()),
        };
        // rvs in history are consecutive, so the position is arithmetic.
        let start = ((after + 1).saturating_sub(first_rv) as usize).min(inner.history.len());
        Ok(inner.history.range(start..).cloned().collect())
    }

    /// The oldest rv a watch may resume from.
    pub fn compacted_rv(&self) -> u64 {
        self.lock().compacted
    }

    /// A change feed starting now; usable by any number of in-process controllers.
    pub fn subscribe(&self) -> Subscription {
        let rx = self.notify.subscribe();
        Subscription {
            rx,
            last: self.current_rv(),
        }
    }

    /// A change feed starting after `rv`.
    pub fn subscribe_from(&self, rv: u64) -> Subscription {
        Subscription {
            rx: self.notify.subscribe(),
            last: rv,
        }
    }
}

/// A cursor on the store's change stream.
pub struct Subscription {
    rx: tokio::sync::watch::Receiver<u64>,
    pub last: u64,
}

impl Subscription {
    /// Waits for and returns the next batch of events (never empty), `Err` if the cursor fell
    /// out of the history, `Ok(None)` if the store is gone.
    pub async fn next(&mut self, store: &Store) -> Result<Option<Vec<Arc<Event>>>, Expired> {
        loop {
            let batch = store.events_since(self.last)?;
            if let Some(e) = batch.last() {
                self.last = e.rv;
                return Ok(Some(batch));
            }
            self.rx.borrow_and_update();
            // Re-check after marking seen, to close the race with a concurrent write.
            if store.current_rv() > self.last {
                continue;
            }
            if self.rx.changed().await.is_err() {
                return Ok(None);
            }
        }
    }

    /// A future that resolves when the store changes again.
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }

    pub fn mark_seen(&mut self) {
        self.rx.borrow_and_update();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(ns: &str, name: &str) -> Value {
        json!({"metadata": {"namespace": ns, "name": name, "uid": format!("uid-{name}")}})
    }

    fn key(ns: &str, name: &str) -> ObjKey {
        ObjKey {
            gr: GroupResource::new("g", "things"),
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn swap_assigns_global_rv_and_rejects_stale_writers() {
        let s = Store::new(100);
        let a = s.swap(&key("n", "a"), None, Some(obj("n", "a"))).unwrap();
        assert_eq!(rv_of(&a), Some(1));
        assert_eq!(
            s.swap(&key("n", "a"), None, Some(obj("n", "a"))),
            Err(Stale)
        );
        let b = s.swap(&key("n", "b"), None, Some(obj("n", "b"))).unwrap();
        assert_eq!(rv_of(&b), Some(2));
        assert_eq!(s.swap(&key("n", "a"), Some(5), None), Err(Stale));
        s.swap(&key("n", "a"), Some(1), None).unwrap();
        let ev = s.events_since(0).unwrap();
        assert_eq!(
            ev.iter().map(|e| e.kind).collect::<Vec<_>>(),
            [EventType::Added, EventType::Added, EventType::Deleted]
        );
        assert_eq!(rv_of(&ev[2].object), Some(3));
    }

    #[test]
    fn history_is_bounded_and_old_rv_expires() {
        let s = Store::new(16);
        for i in 0..40 {
            s.swap(
                &key("n", &format!("o{i}")),
                None,
                Some(obj("n", &format!("o{i}"))),
            )
            .unwrap();
        }
        assert!(s.events_since(1).is_err());
        assert_eq!(s.events_since(30).unwrap().len(), 10);
    }

    #[test]
    fn list_pages_in_key_order_within_namespace() {
        let s = Store::new(100);
        for (ns, n) in [("b", "2"), ("a", "1"), ("b", "1"), ("c", "1")] {
            s.swap(&key(ns, n), None, Some(obj(ns, n))).unwrap();
        }
        let gr = GroupResource::new("g", "things");
        let (page, _, next) = s.list(&gr, Some("b"), None, 1, &|_| true);
        assert_eq!(page[0]["metadata"]["name"], "1");
        let (page2, _, next2) = s.list(&gr, Some("b"), next.as_ref(), 1, &|_| true);
        assert_eq!(page2[0]["metadata"]["name"], "2");
        assert!(next2.is_none());
        assert_eq!(s.list(&gr, None, None, 0, &|_| true).0.len(), 4);
    }
}
