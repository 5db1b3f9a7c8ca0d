//! Garbage collector: deletes objects whose owners are all gone (background deletion),
//! deletes the dependents of owners being deleted in the foreground (`foregroundDeletion`
//! finalizer) and releases the dependents of owners deleted with `orphan`.
//!
//! The graph covers the built-in kinds that controllers own (tracked through their shared
//! informers); custom resources as owners or dependents are not tracked yet.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
}

fn group_of(api_version: &str) -> String {
    api_version.split_once('/').map(|(g, _)| g.to_string()).unwrap_or_default()
}

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
        let res = ApiResource { group: K::group(&()).to_string(), version: K::version(&()).to_string(), api_version: K::api_version(&()).to_string(), kind: K::kind(&()).to_string(), plural: plural.to_string() };
        let inf = self.informers.get::<K>();
        let me = self.clone();
        let r = res.clone();
        inf.on_change(move |old, new| me.observe(&r, old.map(|o| o.as_ref()), new.map(|n| n.as_ref())));
        inf.synced().await;
        for o in inf.list() {
            self.observe(&res, None, Some(o.as_ref()));
        }
        self.graph.lock().unwrap().known_kinds.insert((res.group.clone(), res.kind.clone()), res.clone());
    }

    fn observe<K: Object>(&self, res: &ApiResource, old: Option<&K>, new: Option<&K>) {
        let mut g = self.graph.lock().unwrap();
        let o = new.or(old).unwrap();
        let uid = o.uid().unwrap_or_default();
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
                    namespace: n.namespace(),
                    name: n.name_any(),
                    owners: n.owner_references().to_vec(),
                    deleting: n.meta().deletion_timestamp.is_some(),
                    finalizers: n.finalizers().to_vec(),
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
        for r in o.owner_references() {
            if g.nodes.get(&r.uid).is_some_and(|n| n.deleting) {
                wake.push(r.uid.clone());
            }
        }
        drop(g);
        for w in wake {
            self.queue.add(w);
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
            let Some(node) = g.nodes.get(&uid).cloned() else { return Ok(None) };
            let deps: Vec<Node> = g.dependents.get(&uid).into_iter().flatten().filter_map(|d| g.nodes.get(d).cloned()).collect();
            // For each owner: Some(deleting-in-foreground) if present, None if absent.
            let owner_states: Vec<(OwnerReference, Option<bool>, Option<ApiResource>)> = node
                .owners
                .iter()
                .map(|r| {
                    let known = g.known_kinds.get(&(group_of(&r.api_version), r.kind.clone())).cloned();
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
                    let res = known.clone().unwrap();
                    let api: Api<DynamicObject> = match &node.namespace {
                        Some(ns) if !is_cluster_scoped(&res.kind) => Api::namespaced_with(self.informers.client().clone(), ns, &res),
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
                let dp = DeleteParams { propagation_policy: Some(policy), preconditions: Some(kube::api::Preconditions { uid: Some(uid.clone()), resource_version: None }), ..Default::default() };
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

fn is_cluster_scoped(kind: &str) -> bool {
    matches!(kind, "Node" | "Namespace" | "PersistentVolume" | "ClusterRole" | "ClusterRoleBinding" | "StorageClass" | "PriorityClass" | "CustomResourceDefinition")
}

fn remove_owner_patch(d: &Node, owner_uid: &str) -> serde_json::Value {
    let owners: Vec<&OwnerReference> = d.owners.iter().filter(|r| r.uid != owner_uid).collect();
    // null removes the field: an object without owners has no ownerReferences at all.
    if owners.is_empty() { json!({"metadata": {"ownerReferences": null}}) } else { json!({"metadata": {"ownerReferences": owners}}) }
}
