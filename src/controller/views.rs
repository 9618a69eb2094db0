//! A watch cache that keeps the parsed view of each object instead of the object: for the kinds there is one of
//! per Cluster (claims, IPAddresses), the view is a few hundred bytes where the decoded JSON object is several
//! kilobytes. Same semantics as kube's reflector store: events apply in order, a relist is buffered and replaces
//! the whole content when it completes, and the cache is ready after the first complete list.

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
};

use kube::{api::DynamicObject, runtime::watcher};

/// `(namespace, name)`; the namespace is empty for cluster-scoped objects.
type Key = (String, String);

#[derive(Debug)]
struct State<V> {
    items: HashMap<Key, Arc<V>>,
    /// A relist in progress.
    relist: Option<HashMap<Key, Arc<V>>>,
    ready: bool,
    /// Secondary index: `index(view)` → the keys of the views with that value (kept with `items`).
    by: HashMap<String, Vec<Key>>,
}

impl<V> State<V> {
    fn unindex(&mut self, index: Option<fn(&V) -> Option<String>>, key: &Key) {
        let (Some(index), Some(old)) = (index, self.items.get(key)) else {
            return;
        };
        if let Some(v) = index(old) {
            if let Some(keys) = self.by.get_mut(&v) {
                keys.retain(|k| k != key);
                if keys.is_empty() {
                    self.by.remove(&v);
                }
            }
        }
    }

    fn reindex(&mut self, index: Option<fn(&V) -> Option<String>>) {
        self.by.clear();
        let Some(index) = index else { return };
        for (key, v) in &self.items {
            if let Some(value) = index(v) {
                self.by.entry(value).or_default().push(key.clone());
            }
        }
    }
}

/// Parsed views by namespace/name; cheap to clone (shared).
#[derive(Debug)]
pub struct ViewCache<V> {
    state: Arc<RwLock<State<V>>>,
    parse: fn(&DynamicObject) -> Option<V>,
    index: Option<fn(&V) -> Option<String>>,
}

impl<V> Clone for ViewCache<V> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            parse: self.parse,
            index: self.index,
        }
    }
}

fn key_of(obj: &DynamicObject) -> Option<Key> {
    let name = obj.metadata.name.clone()?;
    Some((obj.metadata.namespace.clone().unwrap_or_default(), name))
}

impl<V> ViewCache<V> {
    /// An empty cache whose entries are `parse(object)`; objects it returns `None` for are not kept (and an
    /// earlier view of the same object is dropped).
    pub fn new(parse: fn(&DynamicObject) -> Option<V>) -> Self {
        Self {
            state: Arc::new(RwLock::new(State {
                items: HashMap::new(),
                relist: None,
                ready: false,
                by: HashMap::new(),
            })),
            parse,
            index: None,
        }
    }

    /// The same cache, also indexed by `index(view)` (see [`Self::indexed`]).
    pub fn with_index(mut self, index: fn(&V) -> Option<String>) -> Self {
        self.index = Some(index);
        self
    }

    /// The views whose index value is `value`.
    pub fn indexed(&self, value: &str) -> Vec<Arc<V>> {
        let st = self.state.read().unwrap_or_else(PoisonError::into_inner);
        st.by
            .get(value)
            .into_iter()
            .flatten()
            .filter_map(|k| st.items.get(k).cloned())
            .collect()
    }

    /// Applies one watcher event.
    pub fn apply(&self, event: &watcher::Event<DynamicObject>) {
        let mut st = self.state.write().unwrap_or_else(PoisonError::into_inner);
        match event {
            watcher::Event::Apply(obj) => {
                if let Some(key) = key_of(obj) {
                    st.unindex(self.index, &key);
                    match (self.parse)(obj) {
                        Some(v) => {
                            if let Some(value) = self.index.and_then(|index| index(&v)) {
                                st.by.entry(value).or_default().push(key.clone());
                            }
                            st.items.insert(key, Arc::new(v))
                        }
                        None => st.items.remove(&key),
                    };
                }
            }
            watcher::Event::Delete(obj) => {
                if let Some(key) = key_of(obj) {
                    st.unindex(self.index, &key);
                    st.items.remove(&key);
                }
            }
            watcher::Event::Init => st.relist = Some(HashMap::new()),
            watcher::Event::InitApply(obj) => {
                if let (Some(key), Some(v)) = (key_of(obj), (self.parse)(obj)) {
                    st.relist
                        .get_or_insert_with(HashMap::new)
                        .insert(key, Arc::new(v));
                }
            }
            watcher::Event::InitDone => {
                if let Some(mut fresh) = st.relist.take() {
                    fresh.shrink_to_fit();
                    st.items = fresh;
                    st.reindex(self.index);
                }
                st.ready = true;
            }
        }
    }

    /// The view of `namespace`/`name` (empty namespace for cluster-scoped objects).
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<V>> {
        let st = self.state.read().unwrap_or_else(PoisonError::into_inner);
        st.items
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Every view.
    pub fn state(&self) -> Vec<Arc<V>> {
        let st = self.state.read().unwrap_or_else(PoisonError::into_inner);
        st.items.values().cloned().collect()
    }

    /// True once a complete list has been applied.
    pub fn ready(&self) -> bool {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(ns: &str, name: &str, value: i64) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Thing",
            "metadata": {"name": name, "namespace": ns}, "spec": {"value": value}
        }))
        .unwrap()
    }

    fn value(o: &DynamicObject) -> Option<i64> {
        o.data
            .pointer("/spec/value")
            .and_then(serde_json::Value::as_i64)
    }

    fn positive(o: &DynamicObject) -> Option<i64> {
        value(o).filter(|v| *v > 0)
    }

    #[test]
    fn events_apply_in_order_and_views_replace_objects() {
        let c = ViewCache::new(value);
        assert!(!c.ready());
        c.apply(&watcher::Event::Init);
        c.apply(&watcher::Event::InitApply(obj("a", "x", 1)));
        assert!(c.get("a", "x").is_none(), "a relist shows when complete");
        c.apply(&watcher::Event::InitDone);
        assert!(c.ready());
        assert_eq!(c.get("a", "x").as_deref(), Some(&1));
        c.apply(&watcher::Event::Apply(obj("a", "x", 2)));
        c.apply(&watcher::Event::Apply(obj("b", "x", 3)));
        assert_eq!(c.get("a", "x").as_deref(), Some(&2));
        assert_eq!(c.get("b", "x").as_deref(), Some(&3));
        assert_eq!(c.state().len(), 2);
        c.apply(&watcher::Event::Delete(obj("a", "x", 2)));
        assert!(c.get("a", "x").is_none());
        let mut all: Vec<i64> = c.state().iter().map(|v| **v).collect();
        all.sort();
        assert_eq!(all, vec![3]);
    }

    #[test]
    fn a_relist_replaces_everything_and_drops_objects_deleted_meanwhile() {
        let c = ViewCache::new(value);
        c.apply(&watcher::Event::Init);
        c.apply(&watcher::Event::InitApply(obj("a", "gone", 1)));
        c.apply(&watcher::Event::InitApply(obj("a", "kept", 1)));
        c.apply(&watcher::Event::InitDone);
        c.apply(&watcher::Event::Init);
        c.apply(&watcher::Event::InitApply(obj("a", "kept", 5)));
        assert_eq!(
            c.get("a", "gone").as_deref(),
            Some(&1),
            "the old content serves until the relist completes"
        );
        c.apply(&watcher::Event::InitDone);
        assert!(c.get("a", "gone").is_none());
        assert_eq!(c.get("a", "kept").as_deref(), Some(&5));
        assert!(c.ready());
    }

    #[test]
    fn objects_the_parser_refuses_are_not_kept() {
        let c = ViewCache::new(positive);
        c.apply(&watcher::Event::Apply(obj("a", "x", 1)));
        assert!(c.get("a", "x").is_some());
        c.apply(&watcher::Event::Apply(obj("a", "x", -1)));
        assert!(
            c.get("a", "x").is_none(),
            "a refused update drops the old view"
        );
        c.apply(&watcher::Event::Init);
        c.apply(&watcher::Event::InitApply(obj("a", "y", -1)));
        c.apply(&watcher::Event::InitDone);
        assert!(c.state().is_empty());
    }

    #[test]
    fn the_index_follows_applies_deletes_and_relists() {
        let c = ViewCache::new(value).with_index(|v: &i64| Some((v % 2).to_string()));
        c.apply(&watcher::Event::Apply(obj("a", "x", 1)));
        c.apply(&watcher::Event::Apply(obj("a", "y", 3)));
        c.apply(&watcher::Event::Apply(obj("a", "z", 4)));
        let odd = |c: &ViewCache<i64>| {
            let mut v: Vec<i64> = c.indexed("1").iter().map(|v| **v).collect();
            v.sort();
            v
        };
        assert_eq!(odd(&c), vec![1, 3]);
        c.apply(&watcher::Event::Apply(obj("a", "y", 6)));
        assert_eq!(odd(&c), vec![1], "a changed value leaves its old entry");
        c.apply(&watcher::Event::Delete(obj("a", "x", 1)));
        assert!(odd(&c).is_empty());
        c.apply(&watcher::Event::Init);
        c.apply(&watcher::Event::InitApply(obj("a", "w", 5)));
        c.apply(&watcher::Event::InitDone);
        assert_eq!(odd(&c), vec![5], "a relist rebuilds the index");
        assert_eq!(c.indexed("0").len(), 0);
    }
}
