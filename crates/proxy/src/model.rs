//! The desired state of the data path, computed from Services and EndpointSlices: one entry per
//! (service, port), with the addresses it answers on and the endpoints that may receive its
//! traffic. Pure functions; the backends turn a model into rules, and two models into the
//! changes between them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn parse(s: Option<&str>) -> Protocol {
        match s {
            Some("UDP") => Protocol::Udp,
            Some("SCTP") => Protocol::Sctp,
            _ => Protocol::Tcp,
        }
    }
    /// nft's name for it.
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// `namespace/service:port-name`, as upstream names service ports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortName {
    pub namespace: String,
    pub service: String,
    pub port: String,
}

impl std::fmt::Display for PortName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.service)?;
        if !self.port.is_empty() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// One service port, resolved: where it listens and where its traffic goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub protocol: Protocol,
    pub port: u16,
    /// ClusterIPs (none for headless services).
    pub cluster_ips: Vec<Ipv4Addr>,
    /// externalIPs and load-balancer ingress IPs: reached like the cluster IP, from outside.
    pub external_ips: Vec<Ipv4Addr>,
    pub node_port: Option<u16>,
    /// Endpoints for traffic to the cluster IP (all ready ones, or this node's only with
    /// internalTrafficPolicy Local). Sorted.
    pub cluster_endpoints: Vec<Endpoint>,
    /// Endpoints for traffic from outside (node ports, external and LB IPs): this node's only
    /// with externalTrafficPolicy Local (and then the client address is kept).
    pub external_endpoints: Vec<Endpoint>,
    pub external_local: bool,
    /// sessionAffinity ClientIP: how long (seconds) a client stays with its endpoint.
    pub affinity_timeout: Option<u32>,
    /// A LoadBalancer's health check port (externalTrafficPolicy Local): load balancers ask
    /// each node there whether it has endpoints of the service.
    pub health_check_node_port: Option<u16>,
}

pub type Model = BTreeMap<PortName, ServicePort>;

fn ipv4s<'a>(it: impl IntoIterator<Item = &'a String>) -> Vec<Ipv4Addr> {
    let mut v: Vec<Ipv4Addr> = it.into_iter().filter_map(|s| s.parse().ok()).collect();
    v.sort();
    v.dedup();
    v
}

/// (namespace, service name)
pub type ServiceKey = (String, String);

/// One service's ready endpoints by (port name, protocol): (all, this node's).
type Eps = BTreeMap<(String, Protocol), (BTreeSet<Endpoint>, BTreeSet<Endpoint>)>;

/// The Service an EndpointSlice belongs to (its `kubernetes.io/service-name` label).
pub fn slice_service(s: &EndpointSlice) -> Option<ServiceKey> {
    let svc = s.metadata.labels.as_ref()?.get("kubernetes.io/service-name")?;
    Some((s.metadata.namespace.clone().unwrap_or_default(), svc.clone()))
}

fn add_slice(eps: &mut Eps, s: &EndpointSlice, node: &str) {
    if s.address_type != "IPv4" {
        return;
    }
    for p in s.ports.iter().flatten() {
        let (Some(port), name) = (p.port, p.name.clone().unwrap_or_default()) else { continue };
        let entry = eps.entry((name, Protocol::parse(p.protocol.as_deref()))).or_default();
        for e in &s.endpoints {
            let c = e.conditions.clone().unwrap_or_default();
            // Upstream: ready, or (for terminating endpoints) serving when nothing else is.
            // Ready is what receives new connections.
            if c.ready == Some(false) {
                continue;
            }
            for a in ipv4s(&e.addresses) {
                let ep = Endpoint { ip: a, port: port as u16 };
                entry.0.insert(ep);
                if e.node_name.as_deref() == Some(node) {
                    entry.1.insert(ep);
                }
            }
        }
    }
}

/// The entries of one Service, given the EndpointSlices that belong to it. ExternalName
/// services and headless ones have none.
pub fn build_service<'a>(svc: &Service, slices: impl IntoIterator<Item = &'a EndpointSlice>, node: &str) -> Vec<(PortName, ServicePort)> {
    let mut out = Vec::new();
    let Some(spec) = svc.spec.as_ref() else { return out };
    if spec.type_.as_deref() == Some("ExternalName") {
        return out;
    }
    let mut eps = Eps::new();
    for s in slices {
        add_slice(&mut eps, s, node);
    }
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    let name = svc.metadata.name.clone().unwrap_or_default();
    let cluster_ips = ipv4s(spec.cluster_ips.iter().flatten().chain(spec.cluster_ip.iter()).filter(|ip| *ip != "None"));
    let mut external_ips = ipv4s(spec.external_ips.iter().flatten());
    if spec.type_.as_deref() == Some("LoadBalancer") {
        let lb: Vec<String> = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.clone())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| i.ip)
            .collect();
        external_ips.extend(ipv4s(&lb));
        external_ips.sort();
        external_ips.dedup();
    }
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        let t = spec.session_affinity_config.as_ref().and_then(|c| c.client_ip.as_ref()).and_then(|c| c.timeout_seconds);
        t.filter(|t| *t > 0).unwrap_or(10800) as u32
    });
    let health_check_node_port = spec.health_check_node_port.filter(|p| *p > 0 && external_local).map(|p| p as u16);
    for p in spec.ports.iter().flatten() {
        let protocol = Protocol::parse(p.protocol.as_deref());
        let port_name = p.name.clone().unwrap_or_default();
        let (all, local) = eps.get(&(port_name.clone(), protocol)).cloned().unwrap_or_default();
        let node_port = p.node_port.filter(|n| *n > 0 && matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"))).map(|n| n as u16);
        if cluster_ips.is_empty() && node_port.is_none() && external_ips.is_empty() {
            continue; // headless: DNS answers with the endpoints themselves
        }
        let all: Vec<Endpoint> = all.into_iter().collect();
        let local: Vec<Endpoint> = local.into_iter().collect();
        out.push((
            PortName { namespace: ns.clone(), service: name.clone(), port: port_name },
            ServicePort {
                protocol,
                port: p.port as u16,
                cluster_ips: cluster_ips.clone(),
                external_ips: external_ips.clone(),
                node_port,
                cluster_endpoints: if internal_local { local.clone() } else { all.clone() },
                external_endpoints: if external_local { local } else { all },
                external_local,
                affinity_timeout,
                health_check_node_port,
            },
        ));
    }
    out
}

/// Builds the model for `node` (whose endpoints count as local) from every Service and
/// EndpointSlice.
pub fn build<'a>(services: impl IntoIterator<Item = &'a Service>, slices: impl IntoIterator<Item = &'a EndpointSlice>, node: &str) -> Model {
    let mut by_service: BTreeMap<ServiceKey, Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        if let Some(k) = slice_service(s) {
            by_service.entry(k).or_default().push(s);
        }
    }
    let mut model = Model::new();
    for svc in services {
        let key = (svc.metadata.namespace.clone().unwrap_or_default(), svc.metadata.name.clone().unwrap_or_default());
        model.extend(build_service(svc, by_service.get(&key).into_iter().flatten().copied(), node));
    }
    model
}

/// Health check ports and what they answer: port -> (namespace, service, local endpoints).
pub type HealthChecks = BTreeMap<u16, (String, String, usize)>;

pub fn health_checks(model: &Model) -> HealthChecks {
    let mut out: BTreeMap<u16, (String, String, BTreeSet<Ipv4Addr>)> = BTreeMap::new();
    for (name, sp) in model {
        if let Some(p) = sp.health_check_node_port {
            let e = out.entry(p).or_insert_with(|| (name.namespace.clone(), name.service.clone(), BTreeSet::new()));
            e.2.extend(sp.external_endpoints.iter().map(|ep| ep.ip));
        }
    }
    out.into_iter().map(|(p, (ns, svc, ips))| (p, (ns, svc, ips.len()))).collect()
}

/// The change tracker: Services and EndpointSlices as they come and go, the model kept up to
/// date one Service at a time, and what changed since the last sync. A sync with 10,000
/// services and one change then costs one Service's work, not 10,000.
pub struct Tracker {
    node: String,
    services: HashMap<ServiceKey, Arc<Service>>,
    slices: HashMap<ServiceKey, BTreeMap<String, Arc<EndpointSlice>>>,
    dirty: BTreeSet<ServiceKey>,
    model: Model,
}

/// The entries of the services that changed, before and after.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Change {
    pub old: Model,
    pub new: Model,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.old == self.new
    }
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ServiceKey {
    (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

impl Tracker {
    pub fn new(node: &str) -> Tracker {
        Tracker { node: node.to_string(), services: HashMap::new(), slices: HashMap::new(), dirty: BTreeSet::new(), model: Model::new() }
    }

    /// A Service was added (old None), changed, or deleted (new None).
    pub fn service(&mut self, old: Option<&Arc<Service>>, new: Option<&Arc<Service>>) {
        if let Some(o) = old {
            let k = key_of(&o.metadata);
            self.services.remove(&k);
            self.dirty.insert(k);
        }
        if let Some(n) = new {
            let k = key_of(&n.metadata);
            self.services.insert(k.clone(), n.clone());
            self.dirty.insert(k);
        }
    }

    /// An EndpointSlice was added, changed, or deleted.
    pub fn slice(&mut self, old: Option<&Arc<EndpointSlice>>, new: Option<&Arc<EndpointSlice>>) {
        if let Some(o) = old
            && let Some(k) = slice_service(o)
        {
            if let Some(m) = self.slices.get_mut(&k) {
                m.remove(o.metadata.name.as_deref().unwrap_or_default());
                if m.is_empty() {
                    self.slices.remove(&k);
                }
            }
            self.dirty.insert(k);
        }
        if let Some(n) = new
            && let Some(k) = slice_service(n)
        {
            self.slices.entry(k.clone()).or_default().insert(n.metadata.name.clone().unwrap_or_default(), n.clone());
            self.dirty.insert(k);
        }
    }

    /// The whole desired model, as of the last `take_change`.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Brings the model up to date and returns what changed since the last call.
    pub fn take_change(&mut self) -> Change {
        let mut change = Change::default();
        for key in std::mem::take(&mut self.dirty) {
            let start = PortName { namespace: key.0.clone(), service: key.1.clone(), port: String::new() };
            let old: Vec<PortName> =
                self.model.range(start..).take_while(|(k, _)| k.namespace == key.0 && k.service == key.1).map(|(k, _)| k.clone()).collect();
            for k in old {
                let v = self.model.remove(&k).expect("present");
                change.old.insert(k, v);
            }
            if let Some(svc) = self.services.get(&key) {
                let entries = build_service(svc, self.slices.get(&key).into_iter().flat_map(|m| m.values().map(|s| s.as_ref())), &self.node);
                for (k, v) in entries {
                    change.new.insert(k.clone(), v.clone());
                    self.model.insert(k, v);
                }
            }
        }
        // Services whose entries came back unchanged are no change at all.
        let same: Vec<PortName> = change.new.iter().filter(|(k, v)| change.old.get(*k) == Some(*v)).map(|(k, _)| k.clone()).collect();
        for k in same {
            change.old.remove(&k);
            change.new.remove(&k);
        }
        change
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// Compares rendered rules with `testdata/NAME` (UPDATE_GOLDEN=1 rewrites the file).
    pub fn golden(name: &str, text: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata").join(name);
        if std::env::var("UPDATE_GOLDEN").is_ok() {
            std::fs::write(&path, text).unwrap();
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(text, want, "{} differs (UPDATE_GOLDEN=1 rewrites it)", path.display());
    }

    pub fn service(name: &str, v: serde_json::Value) -> Service {
        let mut obj = json!({"metadata": {"name": name, "namespace": "default"}, "spec": v});
        if let Some(st) = obj["spec"].get("status").cloned() {
            obj["status"] = st;
            obj["spec"].as_object_mut().unwrap().remove("status");
        }
        serde_json::from_value(obj).unwrap()
    }

    pub fn slice(svc: &str, ports: serde_json::Value, endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{svc}-abc"), "namespace": "default", "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "ports": ports, "endpoints": endpoints,
        }))
        .unwrap()
    }

    #[test]
    fn ready_endpoints_by_port_and_traffic_policy() {
        let svc = service(
            "web",
            json!({"type": "NodePort", "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"], "externalTrafficPolicy": "Local",
                   "ports": [{"name": "http", "port": 80, "nodePort": 30080, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}]}),
        );
        let sl = slice(
            "web",
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}]),
            json!([
                {"addresses": ["10.244.1.5"], "conditions": {"ready": true}, "nodeName": "a"},
                {"addresses": ["10.244.2.7"], "conditions": {"ready": true}, "nodeName": "b"},
                {"addresses": ["10.244.1.9"], "conditions": {"ready": false}, "nodeName": "a"},
            ]),
        );
        let m = build([&svc], [&sl], "a");
        let http = &m[&PortName { namespace: "default".into(), service: "web".into(), port: "http".into() }];
        assert_eq!(http.cluster_ips, vec![Ipv4Addr::new(10, 96, 0, 20)]);
        assert_eq!(http.node_port, Some(30080));
        let ips = |v: &[Endpoint]| v.iter().map(|e| format!("{}:{}", e.ip, e.port)).collect::<Vec<_>>();
        assert_eq!(ips(&http.cluster_endpoints), ["10.244.1.5:8080", "10.244.2.7:8080"], "not-ready endpoints get no traffic");
        assert_eq!(ips(&http.external_endpoints), ["10.244.1.5:8080"], "externalTrafficPolicy Local: this node's only");
        let dns = &m[&PortName { namespace: "default".into(), service: "web".into(), port: "dns".into() }];
        assert_eq!((dns.protocol, dns.node_port), (Protocol::Udp, None));
        assert_eq!(ips(&dns.cluster_endpoints), ["10.244.1.5:5353", "10.244.2.7:5353"]);
    }

    #[test]
    fn headless_and_external_name_services_have_no_data_path() {
        let headless = service("h", json!({"clusterIP": "None", "ports": [{"port": 80}]}));
        let ext = service("e", json!({"type": "ExternalName", "externalName": "example.com"}));
        assert!(build([&headless, &ext], [], "a").is_empty());
    }

    #[test]
    fn the_tracker_rebuilds_only_what_changed() {
        let mut t = Tracker::new("a");
        let web = Arc::new(service("web", json!({"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80}]})));
        let db = Arc::new(service("db", json!({"clusterIP": "10.96.0.30", "ports": [{"port": 5432}]})));
        let sl = |ip: &str| Arc::new(slice("web", json!([{"name": "http", "port": 8080}]), json!([{"addresses": [ip], "conditions": {"ready": true}}])));
        t.service(None, Some(&web));
        t.service(None, Some(&db));
        let s1 = sl("10.244.1.5");
        t.slice(None, Some(&s1));
        let c = t.take_change();
        assert!(c.old.is_empty() && c.new.len() == 2, "{c:?}");
        assert_eq!(t.model(), &build([web.as_ref(), db.as_ref()], [s1.as_ref()], "a"));
        // One endpoint moves: only web's entry changes, and the model matches a full build.
        let s2 = sl("10.244.1.6");
        t.slice(Some(&s1), Some(&s2));
        let c = t.take_change();
        assert_eq!((c.old.len(), c.new.len()), (1, 1));
        assert_eq!(c.new.keys().next().unwrap().service, "web");
        assert_eq!(t.model(), &build([web.as_ref(), db.as_ref()], [s2.as_ref()], "a"));
        // A change that leaves the entries as they were is none.
        t.slice(Some(&s2), Some(&s2));
        assert!(t.take_change().is_empty());
        // Deleting the service removes its entries.
        t.service(Some(&web), None);
        let c = t.take_change();
        assert_eq!((c.old.len(), c.new.len()), (1, 0));
        assert_eq!(t.model().len(), 1);
    }
}
