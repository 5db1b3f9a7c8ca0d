//! ClusterIP and NodePort allocation (what upstream's API server does for Services).
//!
//! Allocations live in the store, one key per taken address or port (as upstream's IPAddress
//! objects do for ClusterIPs): `/registry/ranges/serviceips/<ip>` and
//! `/registry/ranges/servicenodeports/<protocol>/<port>`, each created with an "absent"
//! precondition. Several API servers over one store can therefore never hand out the same
//! address, and a restarted server reads what is taken instead of rebuilding it from memory.
//! A failed Service write releases what it took; bootstrap re-reserves what stored Services
//! hold; a repair pass releases keys no Service holds (a crash between a reservation and its
//! Service write) once they are older than the previous pass.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use bytes::Bytes;
use ipnet::Ipv4Net;
use r8s_api::errors::FieldError;
use r8s_store::{Precondition, Store, StoreError, WriteOutcome, prefix_end};
use serde_json::{Value, json};

const IPS: &str = "/registry/ranges/serviceips/";
const PORTS: &str = "/registry/ranges/servicenodeports/";

/// The `n`th address of a network (0 is the network address).
pub fn nth(net: &Ipv4Net, n: u64) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(net.network()) as u64 + n) as u32)
}

fn size(net: &Ipv4Net) -> u64 {
    1u64 << (32 - net.prefix_len() as u32)
}

/// Why an allocation failed.
#[derive(Debug)]
pub enum AllocError {
    Invalid(Vec<FieldError>),
    Store(StoreError),
}

impl From<StoreError> for AllocError {
    fn from(e: StoreError) -> Self {
        AllocError::Store(e)
    }
}

/// A set of taken names (addresses or ports) kept as keys under one prefix of the store.
struct Reservations {
    store: Arc<dyn Store>,
    prefix: &'static str,
}

impl Reservations {
    /// Takes `item` for `owner`; false if it is taken already.
    async fn reserve(&self, item: &str, owner: &str) -> Result<bool, StoreError> {
        let value = Bytes::from(json!({"owner": owner}).to_string());
        Ok(matches!(self.store.put(&format!("{}{item}", self.prefix), value, Precondition::Absent).await?, WriteOutcome::Done { .. }))
    }

    async fn is_reserved(&self, item: &str) -> Result<bool, StoreError> {
        Ok(self.store.get(&format!("{}{item}", self.prefix)).await?.is_some())
    }

    async fn release(&self, item: &str) -> Result<(), StoreError> {
        self.store.delete(&format!("{}{item}", self.prefix), Precondition::None).await.map(|_| ())
    }

    /// Every taken item under `sub` (a sub-prefix, e.g. "TCP/").
    async fn taken(&self, sub: &str) -> Result<HashSet<String>, StoreError> {
        let prefix = format!("{}{sub}", self.prefix);
        let res = self.store.range(&prefix, &prefix_end(&prefix), 0, None).await?;
        Ok(res.kvs.into_iter().map(|kv| kv.key[prefix.len()..].to_string()).collect())
    }
}

pub struct Allocators {
    pub service_cidr: Ipv4Net,
    pub node_ports: (u16, u16),
    ips: Reservations,
    ports: Reservations,
}

fn protocol(p: &Value) -> String {
    p.get("protocol").and_then(Value::as_str).unwrap_or("TCP").to_string()
}

fn port_item(port: u16, proto: &str) -> String {
    format!("{proto}/{port}")
}

fn random(n: u64) -> u64 {
    (uuid::Uuid::new_v4().as_u128() % n.max(1) as u128) as u64
}

impl Allocators {
    pub fn new(service_cidr: Ipv4Net, store: Arc<dyn Store>) -> Self {
        Allocators {
            service_cidr: service_cidr.trunc(),
            node_ports: (30000, 32767),
            ips: Reservations { store: store.clone(), prefix: IPS },
            ports: Reservations { store, prefix: PORTS },
        }
    }

    /// Reserves what a stored Service holds (bootstrap; already-taken keys are fine).
    pub async fn restore(&self, svc: &Value) -> Result<(), StoreError> {
        let owner = owner_of(svc);
        if let Some(ip) = svc.pointer("/spec/clusterIP").and_then(Value::as_str).and_then(|s| s.parse::<Ipv4Addr>().ok()) {
            self.ips.reserve(&ip.to_string(), &owner).await?;
        }
        for (port, proto) in held_ports(svc) {
            self.ports.reserve(&port_item(port, &proto), &owner).await?;
        }
        Ok(())
    }

    pub fn first_ip(&self) -> Ipv4Addr {
        nth(&self.service_cidr, 1)
    }

    /// Picks and reserves a free ClusterIP (never the first, which is the `kubernetes`
    /// Service's). Candidates that another writer takes first are skipped.
    async fn pick_ip(&self, owner: &str, dry_run: bool) -> Result<Option<Ipv4Addr>, StoreError> {
        let usable = size(&self.service_cidr).saturating_sub(3);
        loop {
            let taken = self.ips.taken("").await?;
            let start = random(usable);
            let free = (0..usable).map(|i| nth(&self.service_cidr, 2 + (start + i) % usable)).find(|ip| !taken.contains(&ip.to_string()));
            let Some(ip) = free else { return Ok(None) };
            if dry_run || self.ips.reserve(&ip.to_string(), owner).await? {
                return Ok(Some(ip));
            }
        }
    }

    async fn pick_port(&self, proto: &str, owner: &str, dry_run: bool) -> Result<Option<u16>, StoreError> {
        let (lo, hi) = self.node_ports;
        let span = (hi - lo + 1) as u64;
        loop {
            let taken = self.ports.taken(&format!("{proto}/")).await?;
            let start = random(span);
            let free = (0..span).map(|k| lo + ((start + k) % span) as u16).find(|p| !taken.contains(&p.to_string()));
            let Some(port) = free else { return Ok(None) };
            if dry_run || self.ports.reserve(&port_item(port, proto), owner).await? {
                return Ok(Some(port));
            }
        }
    }

    /// One node port for a Service: the one it asks for (checked against the range and
    /// reserved), else the one it keeps from before, else a free one. 0 with an error in `errs`
    /// when none can be had.
    async fn claim_node_port(
        &self,
        c: NodePortClaim<'_>,
        owner: &str,
        dry_run: bool,
        taken: &mut Allocation,
        errs: &mut Vec<FieldError>,
    ) -> Result<u16, StoreError> {
        let NodePortClaim { requested, kept, proto, field } = c;
        if requested == 0 {
            if let Some(k) = kept {
                return Ok(k);
            }
            return Ok(match self.pick_port(proto, owner, dry_run).await? {
                Some(p) => {
                    if !dry_run {
                        taken.ports.push((p, proto.to_string()));
                    }
                    p
                }
                None => {
                    errs.push(FieldError::invalid(field, &json!(0), "range is full"));
                    0
                }
            });
        }
        if requested < self.node_ports.0 || requested > self.node_ports.1 {
            errs.push(FieldError::invalid(
                field,
                &json!(requested),
                format!("provided port is not in the valid range. The range of valid ports is {}-{}", self.node_ports.0, self.node_ports.1),
            ));
            return Ok(requested);
        }
        let item = port_item(requested, proto);
        let got = if dry_run { !self.ports.is_reserved(&item).await? } else { self.ports.reserve(&item, owner).await? };
        if !got {
            errs.push(FieldError::invalid(field, &json!(requested), "provided port is already allocated"));
        } else if !dry_run {
            taken.ports.push((requested, proto.to_string()));
        }
        Ok(requested)
    }

    /// Fills in and reserves a Service's ClusterIP and node ports. `old`: the stored Service on
    /// update (what it holds stays its own). On error nothing stays reserved.
    pub async fn allocate(&self, svc: &mut Value, old: Option<&Value>, dry_run: bool) -> Result<Allocation, AllocError> {
        let mut taken = Allocation::default();
        let res = self.allocate_into(svc, old, dry_run, &mut taken).await;
        match res {
            Ok(errs) if errs.is_empty() => Ok(taken),
            Ok(errs) => {
                self.release_allocation(&taken).await;
                Err(AllocError::Invalid(errs))
            }
            Err(e) => {
                self.release_allocation(&taken).await;
                Err(AllocError::Store(e))
            }
        }
    }

    async fn allocate_into(&self, svc: &mut Value, old: Option<&Value>, dry_run: bool, taken: &mut Allocation) -> Result<Vec<FieldError>, StoreError> {
        let mut errs = Vec::new();
        let owner = owner_of(svc);
        let ty = svc.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
        let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) else { return Ok(errs) };
        if ty == "ExternalName" {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
            return Ok(errs);
        }
        let old_ip = old.and_then(|o| o.pointer("/spec/clusterIP")).and_then(Value::as_str).map(str::to_string);
        let mut requested = spec.get("clusterIP").and_then(Value::as_str).unwrap_or("").to_string();
        if requested.is_empty() {
            requested = spec.get("clusterIPs").and_then(Value::as_array).and_then(|a| a.first()).and_then(Value::as_str).unwrap_or("").to_string();
        }
        let ip_str = if requested.is_empty() && old_ip.is_some() {
            old_ip.clone().unwrap()
        } else if requested == "None" || Some(&requested) == old_ip.as_ref() {
            requested.clone()
        } else if requested.is_empty() {
            match self.pick_ip(&owner, dry_run).await? {
                Some(ip) => {
                    if !dry_run {
                        taken.ip = Some(ip);
                    }
                    ip.to_string()
                }
                None => {
                    errs.push(FieldError::invalid("spec.clusterIPs", &json!([]), "failed to allocate IP: range is full"));
                    String::new()
                }
            }
        } else {
            match requested.parse::<Ipv4Addr>() {
                Err(_) => {
                    errs.push(FieldError::invalid("spec.clusterIPs[0]", &json!(requested), "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"));
                    String::new()
                }
                Ok(ip) if !self.service_cidr.contains(&ip) => {
                    errs.push(FieldError::invalid(
                        "spec.clusterIPs",
                        &json!([requested]),
                        format!("failed to allocate IP {requested}: provided IP is not in the valid range. The range of valid IPs is {}", self.service_cidr),
                    ));
                    String::new()
                }
                Ok(ip) => {
                    let got = if dry_run { !self.ips.is_reserved(&ip.to_string()).await? } else { self.ips.reserve(&ip.to_string(), &owner).await? };
                    if !got {
                        errs.push(FieldError::invalid(
                            "spec.clusterIPs",
                            &json!([requested]),
                            format!("failed to allocate IP {requested}: provided IP is already allocated"),
                        ));
                    } else if !dry_run {
                        taken.ip = Some(ip);
                    }
                    requested.clone()
                }
            }
        };
        if !ip_str.is_empty() {
            spec.insert("clusterIP".into(), json!(ip_str));
            spec.insert("clusterIPs".into(), json!([ip_str]));
            spec.entry("ipFamilies").or_insert(json!(["IPv4"]));
            spec.entry("ipFamilyPolicy").or_insert(json!("SingleStack"));
        }
        // A LoadBalancer that keeps client addresses (externalTrafficPolicy Local) gets a
        // health check port: load balancers ask each node whether it has local endpoints.
        let wants_health_check = ty == "LoadBalancer" && spec.get("externalTrafficPolicy").and_then(Value::as_str) == Some("Local");
        let requested_hc = spec.get("healthCheckNodePort").and_then(Value::as_u64).map(|v| v as u16).filter(|v| *v > 0);
        let old_hc = old.and_then(|o| o.pointer("/spec/healthCheckNodePort")).and_then(Value::as_u64).map(|v| v as u16).filter(|v| *v > 0);
        if !wants_health_check {
            spec.remove("healthCheckNodePort");
        } else {
            let requested = requested_hc.filter(|p| Some(*p) != old_hc).unwrap_or(0);
            let claim = NodePortClaim { requested, kept: old_hc, proto: "TCP", field: "spec.healthCheckNodePort".into() };
            let hc = self.claim_node_port(claim, &owner, dry_run, taken, &mut errs).await?;
            if hc != 0 {
                spec.insert("healthCheckNodePort".into(), json!(hc));
            }
        }
        let wants_node_ports = ty == "NodePort" || (ty == "LoadBalancer" && spec.get("allocateLoadBalancerNodePorts") != Some(&json!(false)));
        let old_ports: Vec<Value> = old.and_then(|o| o.pointer("/spec/ports")).and_then(Value::as_array).cloned().unwrap_or_default();
        let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) else { return Ok(errs) };
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
            // A port this Service already holds (on this port or another of its ports) stays.
            let already_held = requested != 0
                && (Some(requested) == old_same || old_ports.iter().any(|op| op.get("nodePort").and_then(Value::as_u64) == Some(requested as u64)));
            let claim = NodePortClaim {
                requested: if already_held { 0 } else { requested },
                kept: if already_held { Some(requested) } else { old_same },
                proto: &proto,
                field: format!("spec.ports[{i}].nodePort"),
            };
            let port = self.claim_node_port(claim, &owner, dry_run, taken, &mut errs).await?;
            if port != 0 {
                p["nodePort"] = json!(port);
            }
        }
        Ok(errs)
    }

    /// Gives back what one allocation took (its Service write failed).
    pub async fn release_allocation(&self, a: &Allocation) {
        if let Some(ip) = a.ip {
            log_release(self.ips.release(&ip.to_string()).await);
        }
        for (port, proto) in &a.ports {
            log_release(self.ports.release(&port_item(*port, proto)).await);
        }
    }

    /// Releases reservations no Service holds (a crash between a reservation and its Service
    /// write leaks one), as upstream's repair loops do. Only keys written before `since` (the
    /// store revision of the previous pass) go, so an allocation still in flight on any server
    /// is never taken back. `services` lists the Services (read after the keys, so a Service
    /// older than `since` is seen); None skips the pass. Returns how many were released.
    pub async fn repair(&self, since: i64, services: impl AsyncFnOnce() -> Option<Vec<Value>>) -> Result<usize, StoreError> {
        let ips = self.ips.store.range(IPS, &prefix_end(IPS), 0, None).await?.kvs;
        let ports = self.ports.store.range(PORTS, &prefix_end(PORTS), 0, None).await?.kvs;
        let Some(services) = services().await else { return Ok(0) };
        let mut held: HashSet<String> = HashSet::new();
        for svc in &services {
            if let Some(ip) = svc.pointer("/spec/clusterIP").and_then(Value::as_str) {
                held.insert(format!("{IPS}{ip}"));
            }
            for (port, proto) in held_ports(svc) {
                held.insert(format!("{PORTS}{}", port_item(port, &proto)));
            }
        }
        let mut released = 0;
        for kv in ips.iter().chain(ports.iter()).filter(|kv| kv.mod_revision < since && !held.contains(&kv.key)) {
            // Only if untouched since it was read.
            if let WriteOutcome::Done { .. } = self.ips.store.delete(&kv.key, Precondition::ModRevision(kv.mod_revision)).await? {
                tracing::info!(key = %kv.key, "released a service allocation no Service holds");
                released += 1;
            }
        }
        Ok(released)
    }

    /// Releases what `old` held and `new` (if any) no longer holds.
    pub async fn release_unused(&self, old: &Value, new: Option<&Value>) {
        let ip_of = |v: &Value| v.pointer("/spec/clusterIP").and_then(Value::as_str).and_then(|s| s.parse::<Ipv4Addr>().ok());
        if let Some(ip) = ip_of(old)
            && new.and_then(ip_of) != Some(ip)
        {
            log_release(self.ips.release(&ip.to_string()).await);
        }
        let keep = new.map(held_ports).unwrap_or_default();
        for (port, proto) in held_ports(old) {
            if !keep.contains(&(port, proto.clone())) {
                log_release(self.ports.release(&port_item(port, &proto)).await);
            }
        }
    }
}

/// The node ports a Service holds: its ports' and, for a LoadBalancer with
/// externalTrafficPolicy Local, its health check port (TCP).
fn held_ports(svc: &Value) -> Vec<(u16, String)> {
    let mut out: Vec<(u16, String)> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("nodePort").and_then(Value::as_u64).map(|n| (n as u16, protocol(p))))
        .collect();
    if let Some(hc) = svc.pointer("/spec/healthCheckNodePort").and_then(Value::as_u64).filter(|n| *n > 0) {
        out.push((hc as u16, "TCP".into()));
    }
    out
}

/// What one node port field asks for: `requested` (0: any), `kept` (what the Service holds
/// from before, used when nothing new is asked for).
struct NodePortClaim<'a> {
    requested: u16,
    kept: Option<u16>,
    proto: &'a str,
    field: String,
}

fn owner_of(svc: &Value) -> String {
    format!("{}/{}", r8s_api::meta::namespace(svc).unwrap_or(""), r8s_api::meta::name(svc))
}

/// A release that fails leaves a key taken (a leak, not a double allocation): logged, not fatal.
fn log_release(r: Result<(), StoreError>) {
    if let Err(e) = r {
        tracing::warn!(error = %e, "releasing a service allocation failed");
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

    fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let s: Arc<dyn Store> = Arc::new(r8s_store::embedded::EmbeddedStore::open(dir.path()).unwrap());
        (dir, s)
    }

    fn invalid(e: AllocError) -> Vec<FieldError> {
        match e {
            AllocError::Invalid(errs) => errs,
            AllocError::Store(e) => panic!("store error {e}"),
        }
    }

    #[tokio::test]
    async fn allocates_and_rejects_taken() {
        let (_d, s) = store();
        let a = Allocators::new("10.96.0.0/12".parse().unwrap(), s);
        let mut s1 = json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}});
        a.allocate(&mut s1, None, false).await.unwrap();
        let ip = s1["spec"]["clusterIP"].as_str().unwrap().to_string();
        let np = s1["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
        assert!((30000..=32767).contains(&np));
        let mut s2 = json!({"spec": {"type": "NodePort", "clusterIP": ip, "ports": [{"port": 80, "nodePort": np}]}});
        let errs = invalid(a.allocate(&mut s2, None, false).await.unwrap_err());
        assert_eq!(errs.len(), 2);
        assert!(errs[0].message().contains("provided IP is already allocated"));
        let mut s3 = json!({"spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}});
        assert!(invalid(a.allocate(&mut s3, None, false).await.unwrap_err())[0].message().contains("not in the valid range"));
        a.release_unused(&s1, None).await;
        let mut s4 = json!({"spec": {"clusterIP": ip, "ports": [{"port": 80}]}});
        a.allocate(&mut s4, None, false).await.unwrap();
    }

    #[tokio::test]
    async fn repair_releases_only_old_unheld_reservations() {
        let (_d, s) = store();
        let a = Allocators::new("10.96.0.0/12".parse().unwrap(), s.clone());
        let mut kept = json!({"metadata": {"name": "kept", "namespace": "default"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        a.allocate(&mut kept, None, false).await.unwrap();
        let mut leaked = json!({"metadata": {"name": "leaked", "namespace": "default"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        a.allocate(&mut leaked, None, false).await.unwrap();
        let since = s.current_revision().await.unwrap() + 1;
        // Reserved after the previous pass: kept even though no Service holds it yet.
        let mut in_flight = json!({"metadata": {"name": "new", "namespace": "default"}, "spec": {"ports": [{"port": 80}]}});
        a.allocate(&mut in_flight, None, false).await.unwrap();
        let services = vec![kept.clone()];
        let released = a.repair(since, async || Some(services)).await.unwrap();
        assert_eq!(released, 2, "the leaked service's address and node port");
        // The leaked address is free again; the kept and in-flight ones are not.
        let mut again = json!({"spec": {"clusterIP": leaked["spec"]["clusterIP"], "ports": [{"port": 80}]}});
        a.allocate(&mut again, None, false).await.unwrap();
        for ip in [&kept["spec"]["clusterIP"], &in_flight["spec"]["clusterIP"]] {
            let mut clash = json!({"spec": {"clusterIP": ip, "ports": [{"port": 80}]}});
            assert!(a.allocate(&mut clash, None, false).await.is_err());
        }
    }

    #[tokio::test]
    async fn two_allocators_over_one_store_never_share_an_address() {
        let (_d, s) = store();
        // A /27: 29 usable addresses besides the first, fewer than the 40 asked for.
        let net: Ipv4Net = "10.0.0.0/27".parse().unwrap();
        let a = Arc::new(Allocators::new(net, s.clone()));
        let b = Arc::new(Allocators::new(net, s));
        let mut tasks = Vec::new();
        for i in 0..40 {
            let alloc = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                let mut svc = json!({"metadata": {"name": format!("s{i}"), "namespace": "default"}, "spec": {"ports": [{"port": 80}]}});
                alloc.allocate(&mut svc, None, false).await.ok().map(|_| svc["spec"]["clusterIP"].as_str().unwrap().to_string())
            }));
        }
        let mut got = Vec::new();
        for t in tasks {
            if let Some(ip) = t.await.unwrap() {
                got.push(ip);
            }
        }
        let distinct: HashSet<&String> = got.iter().collect();
        assert_eq!(distinct.len(), got.len(), "an address was handed out twice: {got:?}");
        assert_eq!(got.len(), 29, "every usable address is handed out once: {got:?}");
        assert!(!got.contains(&"10.0.0.1".to_string()));
    }
}
