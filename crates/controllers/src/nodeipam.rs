//! Node IPAM: each node gets a podCIDR (a /24 by default) out of --cluster-cidr, as upstream's
//! range allocator does; the allocation is rebuilt from the nodes at start.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use r8s_client::informer::{Informers, ObjKey, key_of};
use r8s_client::queue::WorkQueue;
use serde_json::json;

pub struct Allocator {
    net: Ipv4Net,
    node_mask: u8,
    used: HashSet<u32>,
}

impl Allocator {
    pub fn new(cluster_cidr: &str, node_mask: u8) -> anyhow::Result<Self> {
        let net: Ipv4Net = cluster_cidr.parse().map_err(|_| anyhow::anyhow!("invalid --cluster-cidr {cluster_cidr}"))?;
        anyhow::ensure!(net.prefix_len() <= node_mask && node_mask <= 30, "--cluster-cidr {cluster_cidr} is smaller than a node's /{node_mask}");
        Ok(Allocator { net: net.trunc(), node_mask, used: HashSet::new() })
    }

    /// The index of a node CIDR within the cluster CIDR.
    fn index_of(&self, cidr: &str) -> Option<u32> {
        let sub: Ipv4Net = cidr.parse().ok()?;
        if sub.prefix_len() != self.node_mask || !self.net.contains(&sub) {
            return None;
        }
        Some((u32::from(sub.network()) - u32::from(self.net.network())) >> (32 - self.node_mask as u32))
    }

    fn capacity(&self) -> u32 {
        1 << (self.node_mask - self.net.prefix_len())
    }

    pub fn occupy(&mut self, cidr: &str) {
        if let Some(i) = self.index_of(cidr) {
            self.used.insert(i);
        }
    }

    pub fn release(&mut self, cidr: &str) {
        if let Some(i) = self.index_of(cidr) {
            self.used.remove(&i);
        }
    }

    pub fn allocate(&mut self) -> Option<String> {
        let i = (0..self.capacity()).find(|i| !self.used.contains(i))?;
        self.used.insert(i);
        Some(format!("{}/{}", Ipv4Addr::from(u32::from(self.net.network()) + (i << (32 - self.node_mask as u32))), self.node_mask))
    }
}

pub struct Controller {
    informers: Informers,
    queue: WorkQueue<ObjKey>,
    alloc: Mutex<Allocator>,
    recorder: r8s_client::events::Recorder,
    /// Nodes already told that no podCIDR is left (one event and log line each, not one per retry).
    starved: Mutex<std::collections::HashSet<String>>,
}

/// How often a node without a podCIDR looks again while the cluster CIDR is full (a deleted
/// node's range also wakes every waiting node at once).
const FULL_RETRY: Duration = Duration::from_secs(60);

/// Simulated nodes (`r8s sim-nodes`) run no CNI: their pods take addresses from the simulator's
/// own pool, so they get no range (thousands of them would exhaust the cluster CIDR).
fn simulated(n: &Node) -> bool {
    n.metadata.annotations.as_ref().and_then(|a| a.get("r8s.io/simulated")).is_some_and(|v| v == "true")
}

fn pod_cidr(n: &Node) -> Option<String> {
    n.spec.as_ref().and_then(|s| s.pod_cidr.clone()).filter(|c| !c.is_empty())
}

impl Controller {
    pub async fn start(informers: Informers, cluster_cidr: &str) -> anyhow::Result<()> {
        let c = Arc::new(Controller {
            informers: informers.clone(),
            queue: WorkQueue::new(),
            alloc: Mutex::new(Allocator::new(cluster_cidr, 24)?),
            recorder: r8s_client::events::Recorder::new(informers.client().clone(), "cidrAllocator"),
            starved: Mutex::new(Default::default()),
        });
        let nodes = informers.get::<Node>();
        {
            let c2 = c.clone();
            nodes.on_change(move |old, new| match new {
                Some(n) => {
                    if let Some(cidr) = pod_cidr(n) {
                        c2.alloc.lock().unwrap().occupy(&cidr);
                    } else if !simulated(n) {
                        c2.queue.add(key_of(n.as_ref()));
                    }
                }
                None => {
                    if let Some(cidr) = old.and_then(|o| pod_cidr(o)) {
                        c2.alloc.lock().unwrap().release(&cidr);
                        // A range is free again: the nodes waiting for one try now.
                        for waiting in c2.starved.lock().unwrap().drain() {
                            c2.queue.add((String::new(), waiting));
                        }
                    }
                }
            });
        }
        nodes.synced().await;
        for n in nodes.list() {
            match pod_cidr(&n) {
                Some(cidr) => c.alloc.lock().unwrap().occupy(&cidr),
                None if simulated(&n) => {}
                None => c.queue.add(key_of(n.as_ref())),
            }
        }
        let c2 = c.clone();
        tokio::spawn(async move {
            r8s_client::run_workers("nodeipam", c2.queue.clone(), 1, move |key| {
                let c = c2.clone();
                async move { c.sync(key).await }
            });
        });
        Ok(())
    }

    async fn sync(&self, (_, name): ObjKey) -> anyhow::Result<Option<Duration>> {
        let Some(node) = self.informers.get::<Node>().get("", &name) else {
            return Ok(None);
        };
        if pod_cidr(&node).is_some() {
            return Ok(None);
        }
        let Some(cidr) = self.alloc.lock().unwrap().allocate() else {
            // Upstream's range allocator: a CIDRNotAvailable event on the node.
            if self.starved.lock().unwrap().insert(name.clone()) {
                tracing::warn!(node = %name, "no podCIDR left in the cluster CIDR (--cluster-cidr): the node gets none until a range is freed");
                self.recorder.normal(node.as_ref(), "CIDRNotAvailable", format!("Node {name} status is now: CIDRNotAvailable"));
            }
            return Ok(Some(FULL_RETRY));
        };
        self.starved.lock().unwrap().remove(&name);
        let api: Api<Node> = Api::all(self.informers.client().clone());
        match api.patch(&name, &PatchParams::default(), &Patch::Merge(&json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}}))).await {
            Ok(_) => Ok(None),
            Err(e) => {
                self.alloc.lock().unwrap().release(&cidr);
                if r8s_client::is_not_found(&e) { Ok(None) } else { Err(e.into()) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_node_ranges() {
        let mut a = Allocator::new("10.244.0.0/16", 24).unwrap();
        a.occupy("10.244.0.0/24");
        assert_eq!(a.allocate().unwrap(), "10.244.1.0/24");
        a.release("10.244.0.0/24");
        assert_eq!(a.allocate().unwrap(), "10.244.0.0/24");
        let mut small = Allocator::new("10.0.0.0/23", 24).unwrap();
        assert!(small.allocate().is_some() && small.allocate().is_some());
        assert!(small.allocate().is_none());
    }
}
