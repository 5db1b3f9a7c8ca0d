//! Shared informers: one watch per resource type for the whole process, an in-memory store
//! of the objects, and handlers called with (old, new) on every change (new = None: deleted).
//!
//! Consumers register handlers, wait for [`Informer::synced`], then read the store; a
//! handler registered before the wait sees every change after the initial list.

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, RwLock};

use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// (namespace, name); namespace is empty for cluster-scoped objects.
pub type ObjKey = (String, String);

pub type Handler<K> = Arc<dyn Fn(Option<&Arc<K>>, Option<&Arc<K>>) + Send + Sync>;

pub trait Object: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static {}
impl<K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static> Object for K {}

pub fn key_of<K: Resource>(o: &K) -> ObjKey {
    (o.namespace().unwrap_or_default(), o.name_any())
}

pub struct Informer<K> {
    store: RwLock<BTreeMap<ObjKey, Arc<K>>>,
    handlers: RwLock<Vec<Handler<K>>>,
    synced: tokio::sync::watch::Sender<bool>,
}

impl<K: Object> Informer<K> {
    fn new() -> Self {
        Informer { store: RwLock::new(BTreeMap::new()), handlers: RwLock::new(Vec::new()), synced: tokio::sync::watch::channel(false).0 }
    }

    /// Registers a handler called with (old, new) for every later change.
    pub fn on_change(&self, f: impl Fn(Option<&Arc<K>>, Option<&Arc<K>>) + Send + Sync + 'static) {
        self.handlers.write().unwrap().push(Arc::new(f));
    }

    /// Waits until the initial list has been loaded into the store.
    pub async fn synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    pub fn get(&self, ns: &str, name: &str) -> Option<Arc<K>> {
        self.store.read().unwrap().get(&(ns.to_string(), name.to_string())).cloned()
    }

    pub fn list(&self) -> Vec<Arc<K>> {
        self.store.read().unwrap().values().cloned().collect()
    }

    /// Objects of one namespace.
    pub fn list_ns(&self, ns: &str) -> Vec<Arc<K>> {
        let g = self.store.read().unwrap();
        let start = (ns.to_string(), String::new());
        g.range(start..).take_while(|((n, _), _)| n == ns).map(|(_, v)| v.clone()).collect()
    }

    pub fn keys(&self) -> Vec<ObjKey> {
        self.store.read().unwrap().keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.store.read().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn notify(&self, old: Option<&Arc<K>>, new: Option<&Arc<K>>) {
        let handlers = self.handlers.read().unwrap().clone();
        for h in handlers {
            h(old, new);
        }
    }

    fn apply(&self, obj: K) {
        let obj = Arc::new(obj);
        let old = self.store.write().unwrap().insert(key_of(obj.as_ref()), obj.clone());
        if old.as_ref().is_some_and(|o| o.resource_version() == obj.resource_version() && obj.resource_version().is_some()) {
            return;
        }
        self.notify(old.as_ref(), Some(&obj));
    }

    fn delete(&self, key: &ObjKey, last: Option<K>) {
        let old = self.store.write().unwrap().remove(key);
        if let Some(old) = old.or_else(|| last.map(Arc::new)) {
            self.notify(Some(&old), None);
        }
    }

    async fn run(self: Arc<Self>, api: Api<K>, cfg: watcher::Config) {
        let mut stream = watcher(api, cfg).default_backoff().boxed();
        let mut relist: Option<HashSet<ObjKey>> = None;
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Init) => relist = Some(HashSet::new()),
                Ok(watcher::Event::InitApply(o)) => {
                    if let Some(seen) = relist.as_mut() {
                        seen.insert(key_of(&o));
                    }
                    self.apply(o);
                }
                Ok(watcher::Event::InitDone) => {
                    if let Some(seen) = relist.take() {
                        for k in self.keys() {
                            if !seen.contains(&k) {
                                self.delete(&k, None);
                            }
                        }
                    }
                    self.synced.send_replace(true);
                }
                Ok(watcher::Event::Apply(o)) => self.apply(o),
                Ok(watcher::Event::Delete(o)) => self.delete(&key_of(&o), Some(o)),
                Err(e) => {
                    tracing::debug!(kind = %K::kind(&()), error = %e, "watch failed; retrying")
                }
            }
        }
    }
}

/// "Something changed: rebuild": a wake-up that informers ring on every change, for loops that
/// recompute their whole state from the informers' stores (the DNS index, the ingress routes,
/// the network policy sets). A burst of changes wakes the loop once.
#[derive(Clone, Default)]
pub struct Changes(Arc<tokio::sync::Notify>);

impl Changes {
    pub fn new() -> Changes {
        Changes::default()
    }

    /// Rings on every change of `informer`'s objects.
    pub fn watch<K: Object>(&self, informer: &Informer<K>) {
        let n = self.0.clone();
        informer.on_change(move |_, _| n.notify_one());
    }

    /// Rings on the changes `relevant` accepts (given the old and the new object).
    pub fn watch_if<K: Object>(&self, informer: &Informer<K>, relevant: impl Fn(Option<&Arc<K>>, Option<&Arc<K>>) -> bool + Send + Sync + 'static) {
        let n = self.0.clone();
        informer.on_change(move |o, c| {
            if relevant(o, c) {
                n.notify_one();
            }
        });
    }

    /// Waits for the next change, then `settle` more so that a burst lands as one.
    pub async fn next(&self, settle: std::time::Duration) {
        self.0.notified().await;
        tokio::time::sleep(settle).await;
    }
}

/// (type, field selector) of one shared informer.
type InformerKey = (TypeId, String);

/// The process's informers, one per type, started on first use.
#[derive(Clone)]
pub struct Informers {
    client: Client,
    map: Arc<Mutex<HashMap<InformerKey, Arc<dyn Any + Send + Sync>>>>,
}

impl Informers {
    pub fn new(client: Client) -> Self {
        Informers { client, map: Default::default() }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The shared informer of `K` (cluster-wide), started if it is not running yet.
    pub fn get<K: Object>(&self) -> Arc<Informer<K>> {
        self.get_selected("")
    }

    /// A shared informer of the `K`s matching a field selector (`spec.nodeName=n1`): a kubelet
    /// watches only its own pods. Informers with different selectors are separate watches.
    pub fn get_selected<K: Object>(&self, field_selector: &str) -> Arc<Informer<K>> {
        let mut map = self.map.lock().unwrap();
        let key = (TypeId::of::<K>(), field_selector.to_string());
        if let Some(i) = map.get(&key) {
            return i.clone().downcast::<Informer<K>>().expect("informer type");
        }
        let inf = Arc::new(Informer::<K>::new());
        map.insert(key, inf.clone());
        let mut cfg = watcher::Config::default();
        if !field_selector.is_empty() {
            cfg = cfg.fields(field_selector);
        }
        tokio::spawn(inf.clone().run(Api::<K>::all(self.client.clone()), cfg));
        inf
    }
}
