//! Pod IPs for simulated nodes: one pool for every node of the process (what kwok's fake pod
//! CIDR is), so a simulated node needs no podCIDR and any number of nodes fit. The pool is in
//! 100.64.0.0/10 (shared address space, RFC 6598): addresses nothing on the machine uses, and
//! no packet is ever sent to them (a simulated node's probes pass without one).

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

/// The pool: 100.64.0.0/10.
const BASE: u32 = u32::from_be_bytes([100, 64, 0, 0]);
const SIZE: u32 = 1 << 22;

#[derive(Default)]
pub struct PodIpam {
    /// pod uid -> offset in the pool
    by_pod: HashMap<String, u32>,
    /// Offsets given back, handed out again first (lowest first).
    free: BTreeSet<u32>,
    /// The first offset never handed out.
    next: u32,
}

impl PodIpam {
    /// The address of pod `uid` (the same one again while it has one).
    pub fn allocate(&mut self, uid: &str) -> Option<Ipv4Addr> {
        if let Some(off) = self.by_pod.get(uid) {
            return Some(Ipv4Addr::from(BASE + off));
        }
        let off = match self.free.pop_first() {
            Some(off) => off,
            None if self.next < SIZE => {
                self.next += 1;
                self.next - 1
            }
            None => return None,
        };
        self.by_pod.insert(uid.to_string(), off);
        Some(Ipv4Addr::from(BASE + off))
    }

    pub fn release(&mut self, uid: &str) {
        if let Some(off) = self.by_pod.remove(uid) {
            self.free.insert(off);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_distinct_addresses_and_reuses_released_ones() {
        let mut ipam = PodIpam::default();
        let a = ipam.allocate("a").unwrap();
        let b = ipam.allocate("b").unwrap();
        assert_eq!(a, Ipv4Addr::new(100, 64, 0, 0));
        assert_eq!(b, Ipv4Addr::new(100, 64, 0, 1));
        assert_eq!(ipam.allocate("a").unwrap(), a, "same pod, same address");
        ipam.release("a");
        assert_eq!(ipam.allocate("c").unwrap(), a);
        assert_eq!(ipam.allocate("d").unwrap(), Ipv4Addr::new(100, 64, 0, 2));
    }

    #[test]
    fn holds_more_pods_than_any_node_range() {
        let mut ipam = PodIpam::default();
        let last = (0..70_000).map(|i| ipam.allocate(&i.to_string()).unwrap()).last().unwrap();
        assert_eq!(last, Ipv4Addr::from(BASE + 69_999));
    }
}
