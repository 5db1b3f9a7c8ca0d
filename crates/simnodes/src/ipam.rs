//! Pod IPs out of each simulated node's podCIDR (what the CNI's host-local IPAM does on a
//! real node), keyed by pod uid.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

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
    pub fn allocate(&mut self, node: &str, cidr: &str, uid: &str) -> Option<String> {
        if let Some((_, ip)) = self.by_pod.get(uid) {
            return Some(ip.to_string());
        }
        let (base, size) = parse_cidr(cidr)?;
        let used = self.used.entry(node.to_string()).or_default();
        // .0 is the network, .1 the node's bridge, the last the broadcast address.
        let ip = (2..size - 1).map(|i| Ipv4Addr::from(base + i)).find(|ip| !used.contains(ip))?;
        used.insert(ip);
        self.by_pod.insert(uid.to_string(), (node.to_string(), ip));
        Some(ip.to_string())
    }

    pub fn release(&mut self, uid: &str) {
        if let Some((node, ip)) = self.by_pod.remove(uid)
            && let Some(u) = self.used.get_mut(&node)
        {
            u.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_distinct_addresses_and_reuses_released_ones() {
        let mut ipam = PodIpam::default();
        let a = ipam.allocate("n", "10.244.1.0/24", "a").unwrap();
        let b = ipam.allocate("n", "10.244.1.0/24", "b").unwrap();
        assert_eq!(a, "10.244.1.2");
        assert_eq!(b, "10.244.1.3");
        assert_eq!(ipam.allocate("n", "10.244.1.0/24", "a").unwrap(), a, "same pod, same address");
        ipam.release("a");
        assert_eq!(ipam.allocate("n", "10.244.1.0/24", "c").unwrap(), "10.244.1.2");
        assert!(ipam.allocate("n", "10.244.1.0/31", "d").is_none());
    }
}
