//! The scheduler's view of the cluster: every node with the pods on it (bound, or assumed:
//! bound by this scheduler but not yet seen back from the API) and their summed requests.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, PodAffinityTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;

use crate::resources::{Resources, node_allocatable, pod_requests};
use r8s_api::matching::Labels;

pub struct PodEntry {
    pub pod: Arc<Pod>,
    pub req: Resources,
    pub nonzero: Resources,
}

#[derive(Default)]
pub struct NodeInfo {
    pub node: Option<Arc<Node>>,
    pub labels: Labels,
    pub pods: HashMap<String, PodEntry>,
    pub requested: Resources,
    pub nonzero_requested: Resources,
    pub allocatable: Resources,
    pub allowed_pods: i64,
    /// (protocol, hostIP, hostPort) in use.
    pub used_ports: Vec<(String, String, i32)>,
    /// image name -> size in bytes (from node status).
    pub images: HashMap<String, i64>,
}

pub fn host_ports(pod: &Pod) -> Vec<(String, String, i32)> {
    let mut out = Vec::new();
    for c in pod.spec.iter().flat_map(|s| s.containers.iter().chain(s.init_containers.iter().flatten())) {
        for p in c.ports.iter().flatten() {
            if let Some(hp) = p.host_port.filter(|hp| *hp > 0) {
                out.push((p.protocol.clone().unwrap_or_else(|| "TCP".into()), p.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into()), hp));
            }
        }
    }
    out
}

impl NodeInfo {
    fn add_pod(&mut self, pod: Arc<Pod>) {
        let (req, nonzero) = pod_requests(&pod);
        self.requested.add(&req);
        self.nonzero_requested.add(&nonzero);
        self.used_ports.extend(host_ports(&pod));
        self.pods.insert(pod.uid().unwrap_or_default(), PodEntry { pod, req, nonzero });
    }

    fn remove_pod(&mut self, uid: &str) -> Option<Arc<Pod>> {
        let e = self.pods.remove(uid)?;
        self.requested.sub(&e.req);
        self.nonzero_requested.sub(&e.nonzero);
        for p in host_ports(&e.pod) {
            if let Some(i) = self.used_ports.iter().position(|u| *u == p) {
                self.used_ports.swap_remove(i);
            }
        }
        Some(e.pod)
    }

    fn set_node(&mut self, node: Arc<Node>) {
        let (alloc, pods) = node_allocatable(&node);
        self.allocatable = alloc;
        self.allowed_pods = pods;
        self.labels = node.labels().clone();
        self.images = node
            .status
            .as_ref()
            .and_then(|s| s.images.as_ref())
            .map(|imgs| imgs.iter().flat_map(|i| i.names.iter().flatten().map(move |n| (n.clone(), i.size_bytes.unwrap_or(0)))).collect())
            .unwrap_or_default();
        self.node = Some(node);
    }

    /// A copy without the pods `drop` selects (what the node would be after preempting them).
    pub fn without(&self, drop: &dyn Fn(&Pod) -> bool) -> NodeInfo {
        let mut n = NodeInfo {
            node: self.node.clone(),
            labels: self.labels.clone(),
            allocatable: self.allocatable.clone(),
            allowed_pods: self.allowed_pods,
            images: self.images.clone(),
            ..Default::default()
        };
        for e in self.pods.values() {
            if !drop(&e.pod) {
                n.add_pod(e.pod.clone());
            }
        }
        n
    }

    pub fn name(&self) -> String {
        self.node.as_ref().map(|n| n.name_any()).unwrap_or_default()
    }
}

/// Identical required anti-affinity terms of bound pods (same namespace, selector, topology
/// key) grouped, with how many such pods each node has: a scheduling cycle checks each group
/// once instead of every pod.
pub struct AntiGroup {
    pub owner_ns: String,
    pub term: PodAffinityTerm,
    pub nodes: HashMap<String, i64>,
}

fn anti_terms(pod: &Pod) -> &[PodAffinityTerm] {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_deref())
        .unwrap_or(&[])
}

fn term_key(ns: &str, t: &PodAffinityTerm) -> String {
    format!("{ns}\u{0}{}", serde_json::to_string(t).unwrap_or_default())
}

#[derive(Default)]
pub struct Cache {
    pub nodes: BTreeMap<String, NodeInfo>,
    /// pod uid -> node it counts on.
    pod_node: HashMap<String, String>,
    /// Pods bound by us whose binding the informer has not shown yet.
    assumed: HashMap<String, String>,
    /// Names of nodes that have a Node object, in a stable order (for round-robin starts).
    pub order: Vec<String>,
    /// label (key, value) -> uids of counted pods with it.
    by_label: HashMap<(String, String), HashSet<String>>,
    /// controller uid -> uids of its counted pods.
    by_owner: HashMap<String, HashSet<String>>,
    pub anti: HashMap<String, AntiGroup>,
    /// topology key -> how many distinct values the nodes have (memo, reset on node changes).
    domains: std::sync::Mutex<HashMap<String, usize>>,
}

fn counts(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
    phase != "Succeeded" && phase != "Failed"
}

impl Cache {
    /// How many topology domains (distinct values of `key`) the nodes form.
    pub fn domain_count(&self, key: &str) -> usize {
        let mut memo = self.domains.lock().unwrap();
        if let Some(n) = memo.get(key) {
            return *n;
        }
        let n = self.nodes.values().filter(|n| n.node.is_some()).filter_map(|n| n.labels.get(key)).collect::<HashSet<_>>().len();
        memo.insert(key.to_string(), n);
        n
    }

    pub fn set_node(&mut self, node: Arc<Node>) {
        let name = node.name_any();
        let labels_changed = self.nodes.get(&name).is_none_or(|n| n.node.is_none() || &n.labels != node.labels());
        if labels_changed {
            self.domains.lock().unwrap().clear();
        }
        let info = self.nodes.entry(name.clone()).or_default();
        let new = info.node.is_none();
        info.set_node(node);
        if new {
            let i = self.order.binary_search(&name).unwrap_or_else(|i| i);
            self.order.insert(i, name);
        }
    }

    pub fn remove_node(&mut self, name: &str) {
        self.domains.lock().unwrap().clear();
        if let Some(info) = self.nodes.get_mut(name) {
            info.node = None;
            if info.pods.is_empty() {
                self.nodes.remove(name);
            }
        }
        self.order.retain(|n| n != name);
    }

    /// A pod as the informer shows it (bound or not).
    pub fn update_pod(&mut self, pod: &Arc<Pod>) {
        let uid = pod.uid().unwrap_or_default();
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty());
        match node {
            Some(node) if counts(pod) => {
                self.assumed.remove(&uid);
                self.remove_pod(&uid);
                self.place(pod.clone(), &node);
            }
            _ => {
                if !self.assumed.contains_key(&uid) {
                    self.remove_pod(&uid);
                }
            }
        }
    }

    fn place(&mut self, pod: Arc<Pod>, node: &str) {
        let uid = pod.uid().unwrap_or_default();
        for (k, v) in pod.labels() {
            self.by_label.entry((k.clone(), v.clone())).or_default().insert(uid.clone());
        }
        if let Some(o) = pod.owner_references().iter().find(|o| o.controller == Some(true)) {
            self.by_owner.entry(o.uid.clone()).or_default().insert(uid.clone());
        }
        let ns = pod.namespace().unwrap_or_default();
        for t in anti_terms(&pod) {
            let g = self.anti.entry(term_key(&ns, t)).or_insert_with(|| AntiGroup { owner_ns: ns.clone(), term: t.clone(), nodes: HashMap::new() });
            *g.nodes.entry(node.to_string()).or_insert(0) += 1;
        }
        self.nodes.entry(node.to_string()).or_default().add_pod(pod);
        self.pod_node.insert(uid, node.to_string());
    }

    pub fn remove_pod(&mut self, uid: &str) {
        let Some(node) = self.pod_node.remove(uid) else {
            return;
        };
        let Some(info) = self.nodes.get_mut(&node) else {
            return;
        };
        let removed = info.remove_pod(uid);
        if info.node.is_none() && info.pods.is_empty() {
            self.nodes.remove(&node);
        }
        let Some(pod) = removed else { return };
        for (k, v) in pod.labels() {
            let key = (k.clone(), v.clone());
            if let Some(set) = self.by_label.get_mut(&key) {
                set.remove(uid);
                if set.is_empty() {
                    self.by_label.remove(&key);
                }
            }
        }
        if let Some(o) = pod.owner_references().iter().find(|o| o.controller == Some(true))
            && let Some(set) = self.by_owner.get_mut(&o.uid)
        {
            set.remove(uid);
            if set.is_empty() {
                self.by_owner.remove(&o.uid);
            }
        }
        let ns = pod.namespace().unwrap_or_default();
        for t in anti_terms(&pod) {
            let key = term_key(&ns, t);
            if let Some(g) = self.anti.get_mut(&key) {
                if let Some(n) = g.nodes.get_mut(&node) {
                    *n -= 1;
                    if *n <= 0 {
                        g.nodes.remove(&node);
                    }
                }
                if g.nodes.is_empty() {
                    self.anti.remove(&key);
                }
            }
        }
    }

    fn entries(&self, uids: &HashSet<String>) -> Vec<(&NodeInfo, &Arc<Pod>)> {
        uids.iter()
            .filter_map(|u| {
                let info = self.nodes.get(self.pod_node.get(u)?)?;
                Some((info, &info.pods.get(u)?.pod))
            })
            .collect()
    }

    /// Counted pods whose labels the selector matches (narrowed through the label index when
    /// the selector has matchLabels), with the node they are on.
    pub fn pods_matching(&self, sel: &LabelSelector) -> Vec<(&NodeInfo, &Arc<Pod>)> {
        let narrowest = sel.match_labels.iter().flatten().map(|(k, v)| self.by_label.get(&(k.clone(), v.clone()))).min_by_key(|s| s.map_or(0, |s| s.len()));
        let candidates: Vec<(&NodeInfo, &Arc<Pod>)> = match narrowest {
            Some(None) => return Vec::new(),
            Some(Some(set)) => self.entries(set),
            None => self.nodes.values().flat_map(|n| n.pods.values().map(move |e| (n, &e.pod))).collect(),
        };
        candidates.into_iter().filter(|(_, p)| r8s_api::matching::selector_matches(sel, p.labels())).collect()
    }

    /// Counted pods with this controller.
    pub fn pods_owned_by(&self, owner_uid: &str) -> Vec<(&NodeInfo, &Arc<Pod>)> {
        self.by_owner.get(owner_uid).map(|s| self.entries(s)).unwrap_or_default()
    }

    pub fn delete_pod(&mut self, uid: &str) {
        self.assumed.remove(uid);
        self.remove_pod(uid);
    }

    /// Counts a pod on a node before its binding is confirmed.
    pub fn assume(&mut self, pod: &Pod, node: &str) {
        let uid = pod.uid().unwrap_or_default();
        let mut bound = pod.clone();
        bound.spec.get_or_insert_with(Default::default).node_name = Some(node.to_string());
        self.remove_pod(&uid);
        self.place(Arc::new(bound), node);
        self.assumed.insert(uid, node.to_string());
    }

    pub fn forget(&mut self, uid: &str) {
        if self.assumed.remove(uid).is_some() {
            self.remove_pod(uid);
        }
    }

    pub fn is_assumed(&self, uid: &str) -> bool {
        self.assumed.contains_key(uid)
    }

    pub fn node_count(&self) -> usize {
        self.order.len()
    }
}
