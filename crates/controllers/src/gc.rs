//! Garbage collector: deletes objects whose owners are all gone (background deletion),
//! deletes the dependents of owners being deleted in the foreground (`foregroundDeletion`
//! finalizer) and releases the dependents of owners deleted with `orphan`.
//!
//! The graph covers every built-in kind of the resource table (the shared typed informers where
//! controllers hold them, a watch each otherwise) and every custom resource (a watch per CRD's
//! storage version, started as CRDs appear).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PropagationPolicy};
use kube::{Api, ResourceExt};
use r8s_client::informer::{Informers, Object};
use r8s_client::queue::WorkQueue;
use serde_json::json;

#[derive(Clone, Debug)]
struct Node {
    res: ApiResource,
    namespace: Option<String>,
    name: String,
    owners: Vec<OwnerReference>,
    deleting: bool,
    finalizers: Vec<String>,
}

#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
    /// kinds (group, kind) whose informers are synced: absence from the graph means gone.
    known_kinds: HashMap<(String, String), ApiResource>,
    /// Custom resource kinds with a running watch.
    watching: HashSet<(String, String)>,
    /// Cluster-scoped custom kinds (owner lookups must not use a namespace).
    cluster_scoped: HashSet<(String, String)>,
}

fn group_of(api_version: &str) -> String {
    api_version.split_once('/').map(|(g, _)| g.to_string()).unwrap_or_default()
}

/// An owner reference, whether the owner exists, and its resource (and whether it is namespaced).
type OwnerState = (OwnerReference, Option<bool>, Option<(ApiResource, bool)>);

pub struct Collector {
    informers: Informers,
    graph: Mutex<Graph>,
    queue: WorkQueue<String>,
}

impl Collector {
    pub fn new(informers: Informers) -> Arc<Self> {
        Arc::new(Collector { informers, graph: Default::default(), queue: WorkQueue::new() })
    }

    /// Adds a kind to the graph.
    pub async fn track<K: Object>(self: &Arc<Self>, plural: &str) {
        let res = ApiResource {
            group: K::group(&()).to_string(),
            version: K::version(&()).to_string(),
            api_version: K::api_version(&()).to_string(),
            kind: K::kind(&()).to_string(),
            plural: plural.to_string(),
        };
        let inf = self.informers.get::<K>();
        let me = self.clone();
        let r = res.clone();
        inf.on_change(move |old, new| me.observe(&r, old.map(|o| o.meta()), new.map(|n| n.meta())));
        inf.synced().await;
        for o in inf.list() {
            self.observe(&res, None, Some(o.meta()));
        }
        self.graph.lock().unwrap().known_kinds.insert((res.group.clone(), res.kind.clone()), res.clone());
    }

    /// Adds every other built-in resource the table serves with list, watch and delete (as
    /// upstream's collector monitors all deletable resources but events), a watch each: a kind
    /// added to the table is collected without a change here.
    pub fn track_table(self: &Arc<Self>) {
        for r in r8s_api::resources::builtin_resources() {
            let deletable = ["list", "watch", "delete"].iter().all(|v| r.verbs.iter().any(|x| x == v));
            if !deletable || !r.preferred || r.storage_version != r.api_version() || r.plural == "events" {
                continue;
            }
            let key = (r.group.clone(), r.kind.clone());
            {
                let mut g = self.graph.lock().unwrap();
                if g.known_kinds.contains_key(&key) || !g.watching.insert(key.clone()) {
                    continue;
                }
                if !r.namespaced {
                    g.cluster_scoped.insert(key);
                }
            }
            let res = ApiResource { api_version: r.api_version(), group: r.group, version: r.version, kind: r.kind, plural: r.plural };
            let me = self.clone();
            tokio::spawn(async move { me.watch_dynamic(res).await });
        }
    }

    /// Adds the custom resources of every CRD, now and as CRDs are created.
    pub async fn track_custom_resources(self: &Arc<Self>) {
        let crds = self.informers.get::<CustomResourceDefinition>();
        let me = self.clone();
        crds.on_change(move |_old, new| {
            if let Some(crd) = new {
                me.track_crd(crd);
            }
        });
        crds.synced().await;
        for crd in crds.list() {
            self.track_crd(&crd);
        }
    }

    fn track_crd(self: &Arc<Self>, crd: &CustomResourceDefinition) {
        let Some(version) = crd.spec.versions.iter().find(|v| v.storage).or_else(|| crd.spec.versions.first()) else {
            return;
        };
        if crd.metadata.deletion_timestamp.is_some() {
            return;
        }
        let res = ApiResource {
            group: crd.spec.group.clone(),
            version: version.name.clone(),
            api_version: format!("{}/{}", crd.spec.group, version.name),
            kind: crd.spec.names.kind.clone(),
            plural: crd.spec.names.plural.clone(),
        };
        let key = (res.group.clone(), res.kind.clone());
        {
            let mut g = self.graph.lock().unwrap();
            if crd.spec.scope == "Cluster" {
                g.cluster_scoped.insert(key.clone());
            }
            if !g.watching.insert(key) {
                return;
            }
        }
        let me = self.clone();
        tokio::spawn(async move { me.watch_dynamic(res).await });
    }

    async fn watch_dynamic(self: Arc<Self>, res: ApiResource) {
        use futures::StreamExt;
        use kube::runtime::{WatchStreamExt, watcher};
        let api: Api<DynamicObject> = Api::all_with(self.informers.client().clone(), &res);
        let mut seen: HashMap<String, kube::api::ObjectMeta> = HashMap::new();
        let mut relist: Option<HashMap<String, kube::api::ObjectMeta>> = None;
        let mut stream = watcher(api, watcher::Config::default()).default_backoff().boxed();
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Init) => relist = Some(HashMap::new()),
                Ok(watcher::Event::InitApply(o)) => {
                    let md = o.metadata;
                    self.observe(&res, seen.get(&md.uid.clone().unwrap_or_default()), Some(&md));
                    if let Some(r) = relist.as_mut() {
                        r.insert(md.uid.clone().unwrap_or_default(), md);
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    if let Some(now) = relist.take() {
                        for (uid, md) in &seen {
                            if !now.contains_key(uid) {
                                self.observe(&res, Some(md), None);
                            }
                        }
                        seen = now;
                    }
                    self.graph.lock().unwrap().known_kinds.insert((res.group.clone(), res.kind.clone()), res.clone());
                }
                Ok(watcher::Event::Apply(o)) => {
                    let md = o.metadata;
                    let uid = md.uid.clone().unwrap_or_default();
                    self.observe(&res, seen.get(&uid), Some(&md));
                    seen.insert(uid, md);
                }
                Ok(watcher::Event::Delete(o)) => {
                    let uid = o.metadata.uid.clone().unwrap_or_default();
                    let md = seen.remove(&uid).unwrap_or(o.metadata);
                    self.observe(&res, Some(&md), None);
                }
                Err(e) => {
                    tracing::debug!(kind = %res.kind, error = %e, "custom resource watch failed; retrying")
                }
            }
        }
    }

    fn observe(&self, res: &ApiResource, old: Option<&kube::api::ObjectMeta>, new: Option<&kube::api::ObjectMeta>) {
        let mut g = self.graph.lock().unwrap();
        let o = new.or(old).unwrap();
        let uid = o.uid.clone().unwrap_or_default();
        if let Some(prev) = g.nodes.get(&uid).cloned() {
            for r in &prev.owners {
                if let Some(d) = g.dependents.get_mut(&r.uid) {
                    d.remove(&uid);
                }
            }
        }
        let mut wake: Vec<String> = Vec::new();
        match new {
            Some(n) => {
                let node = Node {
                    res: res.clone(),
                    namespace: n.namespace.clone(),
                    name: n.name.clone().unwrap_or_default(),
                    owners: n.owner_references.clone().unwrap_or_default(),
                    deleting: n.deletion_timestamp.is_some(),
                    finalizers: n.finalizers.clone().unwrap_or_default(),
                };
                for r in &node.owners {
                    g.dependents.entry(r.uid.clone()).or_default().insert(uid.clone());
                }
                if !node.owners.is_empty() {
                    wake.push(uid.clone());
                }
                if node.deleting && node.finalizers.iter().any(|f| f == "foregroundDeletion" || f == "orphan") {
                    wake.push(uid.clone());
                }
                g.nodes.insert(uid.clone(), node);
                // The owner of this object may be waiting for it to go (foreground).
            }
            None => {
                g.nodes.remove(&uid);
                // Dependents of a vanished owner need a look.
                if let Some(deps) = g.dependents.get(&uid) {
                    wake.extend(deps.iter().cloned());
                }
            }
        }
        // Owners in foreground deletion wait on their dependents.
        for r in o.owner_references.iter().flatten() {
            if g.nodes.get(&r.uid).is_some_and(|n| n.deleting) {
                wake.push(r.uid.clone());
            }
        }
        drop(g);
        for w in wake {
            self.queue.add(w);
        }
    }

    /// Looks at every object with owners again (once all kinds are known, an owner that
    /// vanished while nobody watched is recognised as absent).
    pub fn resync(&self) {
        let uids: Vec<String> = self.graph.lock().unwrap().nodes.iter().filter(|(_, n)| !n.owners.is_empty()).map(|(u, _)| u.clone()).collect();
        for u in uids {
            self.queue.add(u);
        }
    }

    pub fn run(self: &Arc<Self>) {
        let me = self.clone();
        r8s_client::run_workers("garbage-collector", self.queue.clone(), 4, move |uid| {
            let me = me.clone();
            async move { me.process(uid).await }
        });
    }

    fn api(&self, n: &Node) -> Api<DynamicObject> {
        match &n.namespace {
            Some(ns) => Api::namespaced_with(self.informers.client().clone(), ns, &n.res),
            None => Api::all_with(self.informers.client().clone(), &n.res),
        }
    }

    async fn process(&self, uid: String) -> anyhow::Result<Option<Duration>> {
        let (node, deps, owner_states) = {
            let g = self.graph.lock().unwrap();
            let Some(node) = g.nodes.get(&uid).cloned() else {
                return Ok(None);
            };
            let deps: Vec<Node> = g.dependents.get(&uid).into_iter().flatten().filter_map(|d| g.nodes.get(d).cloned()).collect();
            // For each owner: Some(deleting-in-foreground) if present, None if absent.
            let owner_states: Vec<OwnerState> = node
                .owners
                .iter()
                .map(|r| {
                    let k = (group_of(&r.api_version), r.kind.clone());
                    let known = g.known_kinds.get(&k).cloned().map(|res| (res, g.cluster_scoped.contains(&k) || is_cluster_scoped(&k.0, &k.1)));
                    let state = g.nodes.get(&r.uid).map(|o| o.deleting && o.finalizers.iter().any(|f| f == "foregroundDeletion"));
                    (r.clone(), state, known)
                })
                .collect();
            (node, deps, owner_states)
        };
        // This object is being deleted with a GC finalizer.
        if node.deleting {
            if node.finalizers.iter().any(|f| f == "orphan") {
                for d in &deps {
                    match self.api(d).patch(&d.name, &PatchParams::default(), &Patch::Merge(&remove_owner_patch(d, &uid))).await {
                        Ok(_) => {}
                        Err(e) if r8s_client::is_not_found(&e) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                self.remove_finalizer(&node, "orphan").await?;
                return Ok(None);
            }
            if node.finalizers.iter().any(|f| f == "foregroundDeletion") {
                let mut waiting = false;
                for d in &deps {
                    if !d.deleting {
                        let dp = DeleteParams { propagation_policy: Some(PropagationPolicy::Foreground), ..Default::default() };
                        match self.api(d).delete(&d.name, &dp).await {
                            Ok(_) => {}
                            Err(e) if r8s_client::is_not_found(&e) => continue,
                            Err(e) => return Err(e.into()),
                        }
                    }
                    // Only dependents that block owner deletion hold the owner.
                    if d.owners.iter().any(|r| r.uid == uid && r.block_owner_deletion == Some(true)) {
                        waiting = true;
                    }
                }
                if !waiting {
                    self.remove_finalizer(&node, "foregroundDeletion").await?;
                }
                return Ok(None);
            }
        }
        if node.owners.is_empty() {
            return Ok(None);
        }
        let mut absent = Vec::new();
        let mut foreground_owner = false;
        for (r, state, known) in &owner_states {
            match state {
                None if known.is_some() => {
                    // Confirm with the API: the cache may not show a just-created owner yet.
                    let (res, cluster) = known.clone().unwrap();
                    let api: Api<DynamicObject> = match &node.namespace {
                        Some(ns) if !cluster => Api::namespaced_with(self.informers.client().clone(), ns, &res),
                        _ => Api::all_with(self.informers.client().clone(), &res),
                    };
                    match api.get_opt(&r.name).await? {
                        Some(o) if o.uid().as_deref() == Some(r.uid.as_str()) => {}
                        _ => absent.push(r.clone()),
                    }
                }
                None => {}
                Some(true) => foreground_owner = true,
                Some(false) => {}
            }
        }
        if absent.len() == node.owners.len() {
            if !node.deleting {
                let policy = if foreground_owner { PropagationPolicy::Foreground } else { PropagationPolicy::Background };
                let dp = DeleteParams {
                    propagation_policy: Some(policy),
                    preconditions: Some(kube::api::Preconditions { uid: Some(uid.clone()), resource_version: None }),
                    ..Default::default()
                };
                match self.api(&node).delete(&node.name, &dp).await {
                    Ok(_) => {}
                    Err(e) if r8s_client::is_not_found(&e) || r8s_client::is_conflict(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        } else if !absent.is_empty() {
            // Some owners remain: drop the references to those that are gone.
            let gone: Vec<String> = absent.iter().map(|a| a.uid.clone()).collect();
            let mut patch = remove_owner_patch(&node, "");
            if let Some(list) = patch.pointer_mut("/metadata/ownerReferences").and_then(serde_json::Value::as_array_mut) {
                list.retain(|r| !gone.iter().any(|g| r.get("uid").and_then(serde_json::Value::as_str) == Some(g.as_str())));
            }
            match self.api(&node).patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {}
                Err(e) if r8s_client::is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        } else if foreground_owner && !node.deleting {
            let dp = DeleteParams { propagation_policy: Some(PropagationPolicy::Foreground), ..Default::default() };
            match self.api(&node).delete(&node.name, &dp).await {
                Ok(_) => {}
                Err(e) if r8s_client::is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    async fn remove_finalizer(&self, node: &Node, f: &str) -> anyhow::Result<()> {
        let rest: Vec<&String> = node.finalizers.iter().filter(|x| x.as_str() != f).collect();
        let patch = if rest.is_empty() { json!({"metadata": {"finalizers": null}}) } else { json!({"metadata": {"finalizers": rest}}) };
        match self.api(node).patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => Ok(()),
            Err(e) if r8s_client::is_not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Built-in scope comes from the resource table (custom kinds are recorded as their CRDs appear).
fn is_cluster_scoped(group: &str, kind: &str) -> bool {
    r8s_api::resources::builtin_by_kind(group, kind).is_some_and(|r| !r.namespaced)
}

fn remove_owner_patch(d: &Node, owner_uid: &str) -> serde_json::Value {
    let owners: Vec<&OwnerReference> = d.owners.iter().filter(|r| r.uid != owner_uid).collect();
    // null removes the field: an object without owners has no ownerReferences at all.
    if owners.is_empty() { json!({"metadata": {"ownerReferences": null}}) } else { json!({"metadata": {"ownerReferences": owners}}) }
}
