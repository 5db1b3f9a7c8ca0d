//! Pod IPs out of each simulated node's podCIDR (what the CNI's host-local IPAM does on a
//! real node).

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

#[derive(Default)]
pub struct PodIpam {
    /// node -> used addresses
    used: HashMap<String, HashSet<Ipv4Addr>>,
    /// pod uid -> (node, address)
    by_pod: HashMap<String, (String, Ipv4Addr)>,
}

/// The network address and size of a CIDR small enough for pods (at most a /30).
fn parse_cidr(cidr: &str) -> Option<(u32, u32)> {
    let net: ipnet::Ipv4Net = cidr.parse().ok()?;
    (net.prefix_len() <= 30).then(|| (u32::from(net.network()), 1u32 << (32 - net.prefix_len() as u32)))
}

impl PodIpam {
    /// Records the IP a pod already has (after a restart of the simulator).
    pub fn adopt(&mut self, pod: &Pod) {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        if let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.as_ref()).and_then(|ip| ip.parse::<Ipv4Addr>().ok()) {
            self.used.entry(node.clone()).or_default().insert(ip);
            self.by_pod.insert(pod.uid().unwrap_or_default(), (node, ip));
        }
    }

    pub fn allocate(&mut self, node: &str, cidr: &str, pod: &Pod) -> Option<String> {
        let uid = pod.uid().unwrap_or_default();
        if let Some((_, ip)) = self.by_pod.get(&uid) {
            return Some(ip.to_string());
        }
        let (base, size) = parse_cidr(cidr)?;
        let used = self.used.entry(node.to_string()).or_default();
        // .0 is the network, .1 the node's bridge, the last the broadcast address.
        let ip = (2..size - 1).map(|i| Ipv4Addr::from(base + i)).find(|ip| !used.contains(ip))?;
        used.insert(ip);
        self.by_pod.insert(uid, (node.to_string(), ip));
        Some(ip.to_string())
    }

    pub fn release(&mut self, pod: &Pod) {
        if let Some((node, ip)) = self.by_pod.remove(&pod.uid().unwrap_or_default())
            && let Some(u) = self.used.get_mut(&node)
        {
            u.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": uid, "uid": uid}})).unwrap()
    }

    #[test]
    fn allocates_distinct_addresses_and_reuses_released_ones() {
        let mut ipam = PodIpam::default();
        let a = ipam.allocate("n", "10.244.1.0/24", &pod("a")).unwrap();
        let b = ipam.allocate("n", "10.244.1.0/24", &pod("b")).unwrap();
        assert_eq!(a, "10.244.1.2");
        assert_eq!(b, "10.244.1.3");
        assert_eq!(ipam.allocate("n", "10.244.1.0/24", &pod("a")).unwrap(), a, "same pod, same address");
        ipam.release(&pod("a"));
        assert_eq!(ipam.allocate("n", "10.244.1.0/24", &pod("c")).unwrap(), "10.244.1.2");
        assert!(ipam.allocate("n", "10.244.1.0/31", &pod("d")).is_none());
    }
}
