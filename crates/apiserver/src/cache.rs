//! The watch cache: one per stored resource, like upstream's cacher. It lists the store once,
//! then follows the store's watch, keeping every object (as the JSON bytes clients receive, plus
//! the labels and fields selectors need) and a window of recent events. LIST and WATCH are
//! served from here; the store is read only to page at an older revision or to resume a watch
//! from before the window.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use r8s_api::ResourceInfo;
use r8s_api::selectors::{FieldSelector, LabelSelector};
use r8s_api::strategy::strategy;
use r8s_store::{Event, EventType, Store, StoreError, prefix_end};
use serde_json::Value;
use tokio::sync::{broadcast, watch};

/// Events kept for watches that resume from a recent resourceVersion.
const HISTORY: usize = 10_000;

#[derive(Debug)]
pub struct CacheEntry {
    pub key: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub fields: Vec<(String, String)>,
    /// The object as JSON, with metadata.resourceVersion set.
    pub bytes: Bytes,
    pub rv: i64,
}

impl CacheEntry {
    pub fn matches(&self, ns: Option<&str>, labels: &LabelSelector, fields: &FieldSelector) -> bool {
        ns.is_none_or(|n| n == self.namespace) && labels.matches(&self.labels) && fields.matches(&self.fields)
    }

    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }
}

#[derive(Debug)]
pub struct CacheEvent {
    pub kind: EventKind,
    pub rev: i64,
    /// The new object (for deletes: the last state, with the deletion's resourceVersion).
    pub obj: Arc<CacheEntry>,
    pub prev: Option<Arc<CacheEntry>>,
}

impl CacheEvent {
    /// What a watcher with these filters sees of this event (upstream's cacher semantics: an
    /// object that starts matching is ADDED, one that stops matching is DELETED).
    pub fn for_watcher(&self, ns: Option<&str>, labels: &LabelSelector, fields: &FieldSelector) -> Option<EventKind> {
        let now = self.obj.matches(ns, labels, fields);
        let before = self.prev.as_ref().is_some_and(|p| p.matches(ns, labels, fields));
        match self.kind {
            EventKind::Deleted => before.then_some(EventKind::Deleted),
            EventKind::Added => now.then_some(EventKind::Added),
            EventKind::Modified => match (before, now) {
                (true, true) => Some(EventKind::Modified),
                (false, true) => Some(EventKind::Added),
                (true, false) => Some(EventKind::Deleted),
                (false, false) => None,
            },
        }
    }
}

struct State {
    items: BTreeMap<String, Arc<CacheEntry>>,
    rev: i64,
    history: VecDeque<Arc<CacheEvent>>,
    tx: broadcast::Sender<Arc<CacheEvent>>,
}

pub struct WatchCache {
    info: ResourceInfo,
    state: RwLock<State>,
    rev_tx: watch::Sender<i64>,
}

/// A consistent view for a new watcher: the current items (for initial events), the window of
/// events after a revision, and a live subscription starting right after them.
pub struct Subscription {
    pub rev: i64,
    pub initial: Vec<Arc<CacheEntry>>,
    pub replay: Vec<Arc<CacheEvent>>,
    pub live: broadcast::Receiver<Arc<CacheEvent>>,
}

pub enum SubscribeError {
    /// The revision is older than the cache's window: resume from the store instead.
    TooOld,
}

/// Decodes a stored object into a cache entry (sets resourceVersion, extracts selector fields).
pub fn entry_from_kv(info: &ResourceInfo, key: &str, value: &[u8], rev: i64) -> Option<CacheEntry> {
    let mut obj: Value = serde_json::from_slice(value).ok()?;
    if let Some(md) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        md.insert("resourceVersion".into(), Value::String(rev.to_string()));
    }
    Some(entry_from_value(info, key, &obj, rev))
}

pub fn entry_from_value(info: &ResourceInfo, key: &str, obj: &Value, rev: i64) -> CacheEntry {
    CacheEntry {
        key: key.to_string(),
        namespace: r8s_api::meta::namespace(obj).unwrap_or("").to_string(),
        labels: r8s_api::meta::labels(obj),
        fields: strategy(info).field_attrs(obj),
        bytes: Bytes::from(serde_json::to_vec(obj).unwrap_or_default()),
        rv: rev,
    }
}

/// Turns a store event into a cache event (None if it cannot be decoded).
pub fn cache_event(info: &ResourceInfo, ev: &Event) -> Option<CacheEvent> {
    let rev = ev.kv.mod_revision;
    let prev = ev.prev_kv.as_ref().and_then(|p| entry_from_kv(info, &p.key, &p.value, p.mod_revision)).map(Arc::new);
    match ev.kind {
        EventType::Put => {
            let obj = Arc::new(entry_from_kv(info, &ev.kv.key, &ev.kv.value, rev)?);
            let kind = if prev.is_some() { EventKind::Modified } else { EventKind::Added };
            Some(CacheEvent { kind, rev, obj, prev })
        }
        EventType::Delete => {
            let p = ev.prev_kv.as_ref()?;
            // A deleted object is reported with the revision of the deletion.
            let obj = Arc::new(entry_from_kv(info, &p.key, &p.value, rev)?);
            Some(CacheEvent { kind: EventKind::Deleted, rev, obj, prev })
        }
    }
}

impl WatchCache {
    /// Creates the cache and starts following the store. `info` is the storage version's entry.
    pub fn start(info: ResourceInfo, store: Arc<dyn Store>) -> Arc<Self> {
        let (tx, _) = broadcast::channel(4096);
        let (rev_tx, _) = watch::channel(0);
        let cache = Arc::new(WatchCache { info, state: RwLock::new(State { items: BTreeMap::new(), rev: 0, history: VecDeque::new(), tx }), rev_tx });
        let weak = Arc::downgrade(&cache);
        tokio::spawn(async move {
            loop {
                let Some(cache) = weak.upgrade() else { return };
                if let Err(e) = cache.run(&*store).await {
                    tracing::warn!(resource = %cache.info.storage_resource, error = %e, "watch cache restarting");
                }
                drop(cache);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        cache
    }

    async fn relist(&self, store: &dyn Store) -> Result<i64, StoreError> {
        let prefix = self.info.key_prefix();
        let list = store.range(&prefix, &prefix_end(&prefix), 0, None).await?;
        let mut items = BTreeMap::new();
        for kv in list.kvs {
            if let Some(e) = entry_from_kv(&self.info, &kv.key, &kv.value, kv.mod_revision) {
                items.insert(kv.key.clone(), Arc::new(e));
            }
        }
        let mut st = self.state.write().unwrap();
        st.items = items;
        st.rev = list.revision;
        st.history.clear();
        // Watchers of the previous incarnation may have missed events: end them.
        let (tx, _) = broadcast::channel(4096);
        st.tx = tx;
        drop(st);
        self.rev_tx.send_replace(list.revision);
        Ok(list.revision)
    }

    async fn run(&self, store: &dyn Store) -> Result<(), StoreError> {
        let mut rev = self.relist(store).await?;
        let prefix = self.info.key_prefix();
        loop {
            let mut rx = store.watch(&prefix, rev + 1).await?;
            while let Some(batch) = rx.recv().await {
                let batch = batch?;
                let events: Vec<Arc<CacheEvent>> = batch.events.iter().filter_map(|e| cache_event(&self.info, e)).map(Arc::new).collect();
                {
                    let mut st = self.state.write().unwrap();
                    for ev in &events {
                        match ev.kind {
                            EventKind::Deleted => {
                                st.items.remove(&ev.obj.key);
                            }
                            _ => {
                                st.items.insert(ev.obj.key.clone(), ev.obj.clone());
                            }
                        }
                        st.history.push_back(ev.clone());
                        if st.history.len() > HISTORY {
                            st.history.pop_front();
                        }
                        let _ = st.tx.send(ev.clone());
                    }
                    st.rev = st.rev.max(batch.revision);
                    rev = st.rev;
                }
                self.rev_tx.send_replace(rev);
            }
            // The store closed the stream (e.g. a slow watcher was dropped): resume.
        }
    }

    pub fn revision(&self) -> i64 {
        self.state.read().unwrap().rev
    }

    /// Waits until the cache has caught up with `rev` (consistent reads from cache).
    pub async fn wait_for(&self, rev: i64, timeout: Duration) -> bool {
        let mut rx = self.rev_tx.subscribe();
        let res = tokio::time::timeout(timeout, rx.wait_for(|r| *r >= rev)).await;
        matches!(res, Ok(Ok(_)))
    }

    /// Waits until the cache has caught up with the store's current revision, so a LIST from
    /// it reads the caller's own writes (upstream's consistent reads from cache). A cache whose
    /// prefix saw no change learns it is current from a progress notification it asks for.
    pub async fn wait_consistent(&self, store: &dyn r8s_store::Store, timeout: Duration) -> r8s_store::Result<bool> {
        let rev = store.current_revision().await?;
        if self.revision() >= rev {
            return Ok(true);
        }
        store.request_progress().await?;
        Ok(self.wait_for(rev, timeout).await)
    }

    /// Items under `start_key` (a key prefix), in key order.
    pub fn list(&self, prefix: &str, after: Option<&str>) -> (i64, Vec<Arc<CacheEntry>>) {
        let st = self.state.read().unwrap();
        let end = prefix_end(prefix);
        let start = after.map(|a| format!("{a}\0")).unwrap_or_else(|| prefix.to_string());
        let items = st.items.range(start..end).map(|(_, v)| v.clone()).collect();
        (st.rev, items)
    }

    pub fn get(&self, key: &str) -> Option<Arc<CacheEntry>> {
        self.state.read().unwrap().items.get(key).cloned()
    }

    /// Subscribes from `from_rev` (exclusive). `None` = now, with the current items as initial
    /// state.
    pub fn subscribe(&self, from_rev: Option<i64>, prefix: &str) -> Result<Subscription, SubscribeError> {
        let st = self.state.read().unwrap();
        let live = st.tx.subscribe();
        match from_rev {
            None => {
                let end = prefix_end(prefix);
                let initial = st.items.range(prefix.to_string()..end).map(|(_, v)| v.clone()).collect();
                Ok(Subscription { rev: st.rev, initial, replay: vec![], live })
            }
            Some(rev) => {
                let oldest = st.history.front().map(|e| e.rev - 1).unwrap_or(st.rev);
                if rev < oldest {
                    return Err(SubscribeError::TooOld);
                }
                let replay = st.history.iter().filter(|e| e.rev > rev).cloned().collect();
                Ok(Subscription { rev: st.rev, initial: vec![], replay, live })
            }
        }
    }
}
