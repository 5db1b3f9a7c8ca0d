//! ClusterIP and NodePort allocation (what upstream's API server does for Services).
//! Allocations are rebuilt from the stored Services at start, so the store stays the one
//! source of truth.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use r8s_api::errors::FieldError;
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug)]
pub struct Cidr {
    pub base: u32,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (ip, len) = s.split_once('/')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let prefix: u8 = len.parse().ok()?;
        if prefix > 32 {
            return None;
        }
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
        Some(Cidr { base: u32::from(ip) & mask, prefix })
    }

    pub fn size(&self) -> u64 {
        1u64 << (32 - self.prefix as u32)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let v = u32::from(ip);
        (v as u64) >= self.base as u64 && (v as u64) < self.base as u64 + self.size()
    }

    /// The n-th address of the range.
    pub fn nth(&self, n: u64) -> Ipv4Addr {
        Ipv4Addr::from((self.base as u64 + n) as u32)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

pub struct Allocators {
    pub service_cidr: Cidr,
    pub node_ports: (u16, u16),
    ips: Mutex<HashSet<Ipv4Addr>>,
    ports: Mutex<HashSet<(u16, String)>>,
}

fn protocol(p: &Value) -> String {
    p.get("protocol").and_then(Value::as_str).unwrap_or("TCP").to_string()
}

impl Allocators {
    pub fn new(service_cidr: Cidr) -> Self {
        Allocators { service_cidr, node_ports: (30000, 32767), ips: Mutex::new(HashSet::new()), ports: Mutex::new(HashSet::new()) }
    }

    /// Records what an existing (stored) Service holds.
    pub fn restore(&self, svc: &Value) {
        if let Some(ip) = svc.pointer("/spec/clusterIP").and_then(Value::as_str).and_then(|s| s.parse().ok()) {
            self.ips.lock().unwrap().insert(ip);
        }
        for p in svc.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten() {
            if let Some(np) = p.get("nodePort").and_then(Value::as_u64) {
                self.ports.lock().unwrap().insert((np as u16, protocol(p)));
            }
        }
    }

    /// The first address of the range (the `kubernetes` Service's IP).
    pub fn first_ip(&self) -> Ipv4Addr {
        self.service_cidr.nth(1)
    }

    /// Allocates what a new or updated Service needs, filling in clusterIP(s) and nodePorts.
    /// `old` is the previous version (on update). With `dry_run`, checks without holding.
    /// Returns what was newly taken, so a failed write can give it back.
    pub fn allocate(&self, svc: &mut Value, old: Option<&Value>, dry_run: bool) -> Result<Allocation, Vec<FieldError>> {
        let mut taken = Allocation::default();
        let mut errs = Vec::new();
        let ty = svc.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
        let spec = svc.get_mut("spec").and_then(Value::as_object_mut);
        let Some(spec) = spec else { return Ok(taken) };
        if ty == "ExternalName" {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
            return Ok(taken);
        }
        // Cluster IP.
        let old_ip = old.and_then(|o| o.pointer("/spec/clusterIP")).and_then(Value::as_str).map(str::to_string);
        let requested = spec.get("clusterIP").and_then(Value::as_str).unwrap_or("").to_string();
        let requested = if requested.is_empty() {
            spec.get("clusterIPs").and_then(Value::as_array).and_then(|a| a.first()).and_then(Value::as_str).unwrap_or("").to_string()
        } else {
            requested
        };
        let ip_str = if requested.is_empty() && old_ip.is_some() {
            old_ip.clone().unwrap()
        } else if requested == "None" {
            "None".to_string()
        } else if requested.is_empty() {
            let mut ips = self.ips.lock().unwrap();
            let size = self.service_cidr.size();
            let mut found = None;
            // Random start, then scan: the same spread as upstream, without a bitmap.
            let start = (uuid::Uuid::new_v4().as_u128() % (size as u128 - 2).max(1)) as u64;
            for i in 0..size.saturating_sub(2) {
                let n = 1 + (start + i) % (size - 2);
                let ip = self.service_cidr.nth(n);
                // The first address is reserved for the kubernetes Service.
                if n == 1 && old.is_none() && !ips.is_empty() {
                    continue;
                }
                if !ips.contains(&ip) {
                    found = Some(ip);
                    break;
                }
            }
            match found {
                Some(ip) => {
                    if !dry_run {
                        ips.insert(ip);
                        taken.ip = Some(ip);
                    }
                    ip.to_string()
                }
                None => {
                    errs.push(FieldError::invalid("spec.clusterIPs", &json!([]), "failed to allocate IP: range is full"));
                    String::new()
                }
            }
        } else if Some(&requested) == old_ip.as_ref() {
            requested.clone()
        } else {
            match requested.parse::<Ipv4Addr>() {
                Err(_) => {
                    errs.push(FieldError::invalid("spec.clusterIPs[0]", &json!(requested), "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"));
                    String::new()
                }
                Ok(ip) if !self.service_cidr.contains(ip) => {
                    errs.push(FieldError::invalid(
                        "spec.clusterIPs",
                        &json!([requested]),
                        format!("failed to allocate IP {requested}: provided IP is not in the valid range. The range of valid IPs is {}", self.service_cidr),
                    ));
                    String::new()
                }
                Ok(ip) => {
                    let mut ips = self.ips.lock().unwrap();
                    if ips.contains(&ip) {
                        errs.push(FieldError::invalid(
                            "spec.clusterIPs",
                            &json!([requested]),
                            format!("failed to allocate IP {requested}: provided IP is already allocated"),
                        ));
                    } else if !dry_run {
                        ips.insert(ip);
                        taken.ip = Some(ip);
                    }
                    requested.clone()
                }
            }
        };
        if !ip_str.is_empty() {
            spec.insert("clusterIP".into(), json!(ip_str));
            spec.insert("clusterIPs".into(), json!([ip_str]));
            if !spec.contains_key("ipFamilies") {
                spec.insert("ipFamilies".into(), json!(["IPv4"]));
            }
            if !spec.contains_key("ipFamilyPolicy") {
                spec.insert("ipFamilyPolicy".into(), json!("SingleStack"));
            }
        }
        // Node ports.
        let wants_node_ports = ty == "NodePort" || (ty == "LoadBalancer" && spec.get("allocateLoadBalancerNodePorts") != Some(&json!(false)));
        let old_ports: Vec<Value> = old.and_then(|o| o.pointer("/spec/ports")).and_then(Value::as_array).cloned().unwrap_or_default();
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for (i, p) in ports.iter_mut().enumerate() {
                if !wants_node_ports {
                    if let Some(m) = p.as_object_mut() {
                        m.remove("nodePort");
                    }
                    continue;
                }
                let proto = protocol(p);
                let requested = p.get("nodePort").and_then(Value::as_u64).unwrap_or(0) as u16;
                let old_same = old_ports
                    .iter()
                    .find(|op| op.get("port") == p.get("port") && protocol(op) == proto)
                    .and_then(|op| op.get("nodePort"))
                    .and_then(Value::as_u64)
                    .map(|v| v as u16);
                let port = if requested == 0 {
                    if let Some(op) = old_same {
                        op
                    } else {
                        let mut ports = self.ports.lock().unwrap();
                        let (lo, hi) = self.node_ports;
                        let span = (hi - lo + 1) as u128;
                        let start = (uuid::Uuid::new_v4().as_u128() % span) as u16;
                        let mut found = None;
                        for k in 0..(hi - lo + 1) {
                            let cand = lo + (start + k) % (hi - lo + 1);
                            if !ports.contains(&(cand, proto.clone())) {
                                found = Some(cand);
                                break;
                            }
                        }
                        match found {
                            Some(c) => {
                                if !dry_run {
                                    ports.insert((c, proto.clone()));
                                    taken.ports.push((c, proto.clone()));
                                }
                                c
                            }
                            None => {
                                errs.push(FieldError::invalid(format!("spec.ports[{i}].nodePort"), &json!(0), "range is full"));
                                0
                            }
                        }
                    }
                } else if Some(requested) == old_same || old_ports.iter().any(|op| op.get("nodePort").and_then(Value::as_u64) == Some(requested as u64)) {
                    requested
                } else if requested < self.node_ports.0 || requested > self.node_ports.1 {
                    errs.push(FieldError::invalid(
                        format!("spec.ports[{i}].nodePort"),
                        &json!(requested),
                        format!("provided port is not in the valid range. The range of valid ports is {}-{}", self.node_ports.0, self.node_ports.1),
                    ));
                    requested
                } else {
                    let mut ports = self.ports.lock().unwrap();
                    if ports.contains(&(requested, proto.clone())) {
                        errs.push(FieldError::invalid(format!("spec.ports[{i}].nodePort"), &json!(requested), "provided port is already allocated"));
                    } else if !dry_run {
                        ports.insert((requested, proto.clone()));
                        taken.ports.push((requested, proto.clone()));
                    }
                    requested
                };
                if port != 0 {
                    p["nodePort"] = json!(port);
                }
            }
        }
        if errs.is_empty() {
            Ok(taken)
        } else {
            self.release_allocation(&taken);
            Err(errs)
        }
    }

    pub fn release_allocation(&self, a: &Allocation) {
        if let Some(ip) = a.ip {
            self.ips.lock().unwrap().remove(&ip);
        }
        let mut ports = self.ports.lock().unwrap();
        for p in &a.ports {
            ports.remove(p);
        }
    }

    /// Releases what `old` held and `new` (if any) no longer holds.
    pub fn release_unused(&self, old: &Value, new: Option<&Value>) {
        let ip_of = |v: &Value| v.pointer("/spec/clusterIP").and_then(Value::as_str).and_then(|s| s.parse::<Ipv4Addr>().ok());
        if let Some(ip) = ip_of(old) {
            if new.and_then(ip_of) != Some(ip) {
                self.ips.lock().unwrap().remove(&ip);
            }
        }
        let ports_of = |v: &Value| -> Vec<(u16, String)> {
            v.pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| p.get("nodePort").and_then(Value::as_u64).map(|n| (n as u16, protocol(p))))
                .collect()
        };
        let keep = new.map(ports_of).unwrap_or_default();
        let mut ports = self.ports.lock().unwrap();
        for p in ports_of(old) {
            if !keep.contains(&p) {
                ports.remove(&p);
            }
        }
    }
}

#[derive(Default, Debug)]
pub struct Allocation {
    pub ip: Option<Ipv4Addr>,
    pub ports: Vec<(u16, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_and_rejects_taken() {
        let a = Allocators::new(Cidr::parse("10.96.0.0/12").unwrap());
        let mut s1 = json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}});
        a.allocate(&mut s1, None, false).unwrap();
        let ip = s1["spec"]["clusterIP"].as_str().unwrap().to_string();
        let np = s1["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
        assert!((30000..=32767).contains(&np));
        let mut s2 = json!({"spec": {"type": "NodePort", "clusterIP": ip, "ports": [{"port": 80, "nodePort": np}]}});
        let errs = a.allocate(&mut s2, None, false).unwrap_err();
        assert_eq!(errs.len(), 2);
        assert!(errs[0].message().contains("provided IP is already allocated"));
        let mut s3 = json!({"spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}});
        assert!(a.allocate(&mut s3, None, false).unwrap_err()[0].message().contains("not in the valid range"));
        a.release_unused(&s1, None);
        let mut s4 = json!({"spec": {"clusterIP": ip, "ports": [{"port": 80}]}});
        a.allocate(&mut s4, None, false).unwrap();
    }
}
