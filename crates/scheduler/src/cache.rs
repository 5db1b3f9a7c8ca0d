//! The scheduler's view of the cluster: every node with the pods on it (bound, or assumed:
//! bound by this scheduler but not yet seen back from the API) and their summed requests.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;

use crate::labels::Labels;
use crate::resources::{Resources, node_allocatable, pod_requests};

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

    fn remove_pod(&mut self, uid: &str) {
        if let Some(e) = self.pods.remove(uid) {
            self.requested.sub(&e.req);
            self.nonzero_requested.sub(&e.nonzero);
            for p in host_ports(&e.pod) {
                if let Some(i) = self.used_ports.iter().position(|u| *u == p) {
                    self.used_ports.swap_remove(i);
                }
            }
        }
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

    pub fn name(&self) -> String {
        self.node.as_ref().map(|n| n.name_any()).unwrap_or_default()
    }
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
}

fn counts(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
    phase != "Succeeded" && phase != "Failed"
}

impl Cache {
    pub fn set_node(&mut self, node: Arc<Node>) {
        let name = node.name_any();
        let info = self.nodes.entry(name.clone()).or_default();
        let new = info.node.is_none();
        info.set_node(node);
        if new {
            let i = self.order.binary_search(&name).unwrap_or_else(|i| i);
            self.order.insert(i, name);
        }
    }

    pub fn remove_node(&mut self, name: &str) {
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
                self.nodes.entry(node.clone()).or_default().add_pod(pod.clone());
                self.pod_node.insert(uid, node);
            }
            _ => {
                if !self.assumed.contains_key(&uid) {
                    self.remove_pod(&uid);
                }
            }
        }
    }

    pub fn remove_pod(&mut self, uid: &str) {
        if let Some(node) = self.pod_node.remove(uid) {
            if let Some(info) = self.nodes.get_mut(&node) {
                info.remove_pod(uid);
                if info.node.is_none() && info.pods.is_empty() {
                    self.nodes.remove(&node);
                }
            }
        }
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
        self.nodes.entry(node.to_string()).or_default().add_pod(Arc::new(bound));
        self.pod_node.insert(uid.clone(), node.to_string());
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
