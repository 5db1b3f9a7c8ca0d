//! The served resources: the built-in table plus what CRDs add at run time, and the watch cache
//! of each stored resource.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use r8s_api::resources::builtin_resources;
use r8s_api::{ResourceInfo, ResourceRef};
use r8s_store::Store;

use crate::cache::WatchCache;

pub struct Catalog {
    store: Arc<dyn Store>,
    resources: RwLock<Vec<ResourceRef>>,
    caches: RwLock<HashMap<String, Arc<WatchCache>>>,
    /// openAPIV3Schema of custom resources, by `group/version/plural`.
    schemas: RwLock<HashMap<String, serde_json::Value>>,
    /// additionalPrinterColumns of custom resources, by `group/version/plural`.
    columns: RwLock<HashMap<String, Vec<serde_json::Value>>>,
    /// Bumped whenever the set of served resources changes (OpenAPI and discovery caches).
    generation: std::sync::atomic::AtomicU64,
    /// The store revision up to which CRD changes are reflected in the served resources.
    crds_seen: tokio::sync::watch::Sender<i64>,
    /// Custom resources (`group/plural`) whose CRD is being deleted: no creates.
    terminating: RwLock<std::collections::HashSet<String>>,
}

impl Catalog {
    pub fn new(store: Arc<dyn Store>) -> Arc<Self> {
        let resources: Vec<ResourceRef> = builtin_resources().into_iter().map(Arc::new).collect();
        let cat = Arc::new(Catalog {
            store,
            resources: RwLock::new(vec![]),
            caches: RwLock::new(HashMap::new()),
            schemas: RwLock::new(HashMap::new()),
            columns: RwLock::new(HashMap::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
            crds_seen: tokio::sync::watch::channel(0).0,
            terminating: Default::default(),
        });
        for r in resources {
            cat.add(r);
        }
        cat
    }

    /// Records that CRD changes up to `rev` are served.
    pub fn set_crds_seen(&self, rev: i64) {
        self.crds_seen.send_if_modified(|r| {
            let newer = rev > *r;
            if newer {
                *r = rev;
            }
            newer
        });
    }

    /// Waits (bounded) until a CRD write at `rev` is served, so the writer's next request
    /// finds its resources.
    pub async fn wait_crds_seen(&self, rev: i64, timeout: std::time::Duration) -> bool {
        let mut rx = self.crds_seen.subscribe();
        matches!(tokio::time::timeout(timeout, rx.wait_for(|r| *r >= rev)).await, Ok(Ok(_)))
    }

    /// Adds (or replaces) a served resource and starts its watch cache if it is new.
    pub fn add(&self, info: ResourceRef) {
        if info.verbs.iter().any(|v| v == "watch") && info.storage_version == info.api_version() {
            let mut caches = self.caches.write().unwrap();
            caches.entry(info.storage_resource.clone()).or_insert_with(|| WatchCache::start((*info).clone(), self.store.clone()));
        }
        let mut res = self.resources.write().unwrap();
        res.retain(|r| !(r.group == info.group && r.version == info.version && r.plural == info.plural));
        res.push(info);
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Marks a custom resource's CRD as being deleted (or not).
    pub fn set_terminating(&self, group: &str, plural: &str, terminating: bool) {
        let key = format!("{group}/{plural}");
        let mut t = self.terminating.write().unwrap();
        if terminating {
            t.insert(key);
        } else {
            t.remove(&key);
        }
    }

    /// Whether the CRD of this custom resource is being deleted.
    pub fn is_terminating(&self, info: &ResourceInfo) -> bool {
        info.custom && self.terminating.read().unwrap().contains(&format!("{}/{}", info.group, info.plural))
    }

    /// Removes every version of a custom resource (`plural.group`).
    pub fn remove_custom(&self, group: &str, plural: &str) {
        let mut res = self.resources.write().unwrap();
        res.retain(|r| !(r.custom && r.group == group && r.plural == plural));
        let storage = format!("{group}/{plural}");
        self.caches.write().unwrap().remove(&storage);
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Keeps only the custom resources `keep(group, plural)` says still have a CRD.
    pub fn retain_custom(&self, keep: impl Fn(&str, &str) -> bool) {
        let gone: Vec<(String, String)> =
            self.resources.read().unwrap().iter().filter(|r| r.custom && !keep(&r.group, &r.plural)).map(|r| (r.group.clone(), r.plural.clone())).collect();
        for (g, p) in gone {
            self.remove_custom(&g, &p);
        }
    }

    pub fn set_schema(&self, info: &ResourceInfo, schema: Option<serde_json::Value>) {
        let key = format!("{}/{}/{}", info.group, info.version, info.plural);
        let mut s = self.schemas.write().unwrap();
        match schema {
            Some(v) => {
                s.insert(key, v);
            }
            None => {
                s.remove(&key);
            }
        }
    }

    pub fn set_columns(&self, info: &ResourceInfo, cols: Vec<serde_json::Value>) {
        self.columns.write().unwrap().insert(format!("{}/{}/{}", info.group, info.version, info.plural), cols);
    }

    pub fn columns(&self, info: &ResourceInfo) -> Vec<serde_json::Value> {
        self.columns.read().unwrap().get(&format!("{}/{}/{}", info.group, info.version, info.plural)).cloned().unwrap_or_default()
    }

    pub fn schema(&self, info: &ResourceInfo) -> Option<serde_json::Value> {
        self.schemas.read().unwrap().get(&format!("{}/{}/{}", info.group, info.version, info.plural)).cloned()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn all(&self) -> Vec<ResourceRef> {
        self.resources.read().unwrap().clone()
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<ResourceRef> {
        self.resources.read().unwrap().iter().find(|r| r.group == group && r.version == version && r.plural == plural).cloned()
    }

    pub fn find_kind(&self, group: &str, version: &str, kind: &str) -> Option<ResourceRef> {
        self.resources.read().unwrap().iter().find(|r| r.group == group && r.version == version && r.kind == kind).cloned()
    }

    pub fn group_known(&self, group: &str, version: &str) -> bool {
        self.resources.read().unwrap().iter().any(|r| r.group == group && r.version == version)
    }

    /// The entry of the version objects of `info` are stored in.
    pub fn storage_info(&self, info: &ResourceInfo) -> ResourceRef {
        let (g, v) = match info.storage_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), info.storage_version.clone()),
        };
        let res = self.resources.read().unwrap();
        res.iter()
            .find(|r| r.group == g && r.version == v && r.kind == info.kind && r.storage_version == r.api_version())
            .cloned()
            .unwrap_or_else(|| Arc::new(info.clone()))
    }

    pub fn cache(&self, info: &ResourceInfo) -> Option<Arc<WatchCache>> {
        self.caches.read().unwrap().get(&info.storage_resource).cloned()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}
