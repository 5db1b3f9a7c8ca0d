//! The cluster's names, computed from Services and EndpointSlices as CoreDNS's kubernetes
//! plugin answers them:
//! - `<svc>.<ns>.svc.<domain>`: A with the cluster IP; for a headless service, the ready
//!   endpoints' addresses; for an ExternalName service, a CNAME.
//! - `<hostname>.<svc>.<ns>.svc.<domain>`: endpoints with a hostname (StatefulSet pods).
//! - `_<port>._<proto>.<svc>.<ns>.svc.<domain>`: SRV for named ports.
//! - PTR for cluster IPs and named endpoints.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    A(Ipv4Addr),
    Cname(String),
    Srv { port: u16, target: String },
    Ptr(String),
}

#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The name exists; these are its records of the asked type (maybe none).
    Found(Vec<Data>),
    /// A name in the cluster domain that does not exist.
    NxDomain,
    /// Not a cluster name: forward it.
    NotOurs,
}

#[derive(Default, Debug)]
pub struct Index {
    domain: String,
    names: HashMap<String, Vec<Data>>,
}

fn norm(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn dashed(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "-")
}

fn reverse(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
}

impl Index {
    pub fn build<'a>(services: impl IntoIterator<Item = &'a Service>, slices: impl IntoIterator<Item = &'a EndpointSlice>, domain: &str) -> Index {
        let domain = norm(domain);
        let mut names: HashMap<String, Vec<Data>> = HashMap::new();
        let mut by_service: HashMap<(String, String), Vec<&EndpointSlice>> = HashMap::new();
        for s in slices {
            if let Some(svc) = s.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name")) {
                by_service.entry((s.metadata.namespace.clone().unwrap_or_default(), svc.clone())).or_default().push(s);
            }
        }
        for svc in services {
            let (Some(spec), Some(name), Some(ns)) = (svc.spec.as_ref(), svc.metadata.name.as_ref(), svc.metadata.namespace.as_ref()) else { continue };
            let base = format!("{name}.{ns}.svc.{domain}");
            if spec.type_.as_deref() == Some("ExternalName") {
                if let Some(ext) = spec.external_name.as_ref().filter(|e| !e.is_empty()) {
                    names.entry(base).or_default().push(Data::Cname(norm(ext)));
                }
                continue;
            }
            let cluster_ip = spec.cluster_ip.as_deref().and_then(|ip| ip.parse::<Ipv4Addr>().ok());
            let slices = by_service.get(&(ns.clone(), name.clone())).cloned().unwrap_or_default();
            // Named endpoints (hostname set), ready ones only.
            let mut endpoints: Vec<(Ipv4Addr, Option<String>)> = Vec::new();
            for sl in &slices {
                if sl.address_type != "IPv4" {
                    continue;
                }
                for e in &sl.endpoints {
                    if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                        continue;
                    }
                    for a in e.addresses.iter().filter_map(|a| a.parse().ok()) {
                        endpoints.push((a, e.hostname.clone()));
                    }
                }
            }
            endpoints.sort();
            endpoints.dedup();
            let entry = names.entry(base.clone()).or_default();
            match cluster_ip {
                Some(ip) => {
                    entry.push(Data::A(ip));
                    names.entry(reverse(ip)).or_default().push(Data::Ptr(base.clone()));
                }
                None => entry.extend(endpoints.iter().map(|(ip, _)| Data::A(*ip))),
            }
            for (ip, host) in &endpoints {
                if let Some(h) = host {
                    let fqdn = format!("{h}.{base}");
                    names.entry(fqdn.clone()).or_default().push(Data::A(*ip));
                    if cluster_ip.is_none() {
                        names.entry(reverse(*ip)).or_default().push(Data::Ptr(fqdn));
                    }
                } else if cluster_ip.is_none() {
                    // CoreDNS names a headless service's endpoints without a hostname by their
                    // dashed address.
                    let fqdn = format!("{}.{base}", dashed(*ip));
                    names.entry(fqdn).or_default().push(Data::A(*ip));
                }
            }
            for p in spec.ports.iter().flatten() {
                let Some(pname) = p.name.as_ref().filter(|n| !n.is_empty()) else { continue };
                let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                let srv = format!("_{pname}._{proto}.{base}");
                if cluster_ip.is_some() {
                    names.entry(srv).or_default().push(Data::Srv { port: p.port as u16, target: base.clone() });
                    continue;
                }
                // Headless: one record per named endpoint, with the endpoint's own port.
                for sl in &slices {
                    let Some(port) = sl.ports.iter().flatten().find(|sp| sp.name.as_deref() == Some(pname)).and_then(|sp| sp.port) else { continue };
                    for e in &sl.endpoints {
                        if let Some(h) = &e.hostname
                            && e.conditions.as_ref().and_then(|c| c.ready) != Some(false)
                        {
                            let target = format!("{h}.{base}");
                            let rec = Data::Srv { port: port as u16, target };
                            let list = names.entry(srv.clone()).or_default();
                            if !list.contains(&rec) {
                                list.push(rec);
                            }
                        }
                    }
                }
            }
        }
        Index { domain, names }
    }

    /// Records of `qtype` ("A", "SRV", "PTR", "CNAME", "ANY", ...) for `name`.
    pub fn lookup(&self, name: &str, qtype: &str) -> Lookup {
        let name = norm(name);
        let ours = name == self.domain || name.ends_with(&format!(".{}", self.domain));
        // `a-b-c-d.<namespace>.pod.<domain>`: the address in the name, unchecked (CoreDNS's
        // `pods insecure`, kubeadm's default).
        if let Some(rest) = name.strip_suffix(&format!(".pod.{}", self.domain)) {
            let mut labels = rest.split('.');
            let ip = labels.next().and_then(|l| l.replace('-', ".").parse::<Ipv4Addr>().ok());
            return match (ip, labels.next(), labels.next()) {
                (Some(ip), Some(_ns), None) => Lookup::Found(if matches!(qtype, "A" | "ANY") { vec![Data::A(ip)] } else { vec![] }),
                _ => Lookup::NxDomain,
            };
        }
        let Some(data) = self.names.get(&name) else {
            return if ours { Lookup::NxDomain } else { Lookup::NotOurs };
        };
        let picked: Vec<Data> = data
            .iter()
            .filter(|d| matches!((qtype, d), ("ANY", _) | ("A", Data::A(_)) | ("SRV", Data::Srv { .. }) | ("PTR", Data::Ptr(_)) | (_, Data::Cname(_))))
            .cloned()
            .collect();
        Lookup::Found(picked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    fn index() -> Index {
        let svcs: Vec<Service> = vec![
            obj(
                json!({"metadata": {"name": "my-nginx", "namespace": "default"}, "spec": {"clusterIP": "10.96.0.50", "ports": [{"name": "http", "port": 80}]}}),
            ),
            obj(json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}})),
            obj(json!({"metadata": {"name": "ext", "namespace": "other"}, "spec": {"type": "ExternalName", "externalName": "example.org"}})),
        ];
        let slices: Vec<EndpointSlice> = vec![obj(json!({
            "metadata": {"name": "web-x", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["10.244.1.5"], "hostname": "web-0", "conditions": {"ready": true}},
                {"addresses": ["10.244.2.6"], "hostname": "web-1", "conditions": {"ready": true}},
                {"addresses": ["10.244.2.9"], "hostname": "web-2", "conditions": {"ready": false}},
            ],
        }))];
        Index::build(&svcs, &slices, "cluster.local")
    }

    #[test]
    fn services_headless_services_and_their_pods() {
        let ix = index();
        assert_eq!(ix.lookup("my-nginx.default.svc.cluster.local.", "A"), Lookup::Found(vec![Data::A("10.96.0.50".parse().unwrap())]));
        assert_eq!(ix.lookup("MY-NGINX.default.svc.cluster.local", "AAAA"), Lookup::Found(vec![]), "exists, no IPv6 record");
        let headless = ix.lookup("web.default.svc.cluster.local", "A");
        assert_eq!(headless, Lookup::Found(vec![Data::A("10.244.1.5".parse().unwrap()), Data::A("10.244.2.6".parse().unwrap())]), "ready pods only");
        assert_eq!(ix.lookup("web-1.web.default.svc.cluster.local", "A"), Lookup::Found(vec![Data::A("10.244.2.6".parse().unwrap())]));
        assert_eq!(
            ix.lookup("_http._tcp.my-nginx.default.svc.cluster.local", "SRV"),
            Lookup::Found(vec![Data::Srv { port: 80, target: "my-nginx.default.svc.cluster.local".into() }])
        );
        let Lookup::Found(srv) = ix.lookup("_http._tcp.web.default.svc.cluster.local", "SRV") else { panic!() };
        assert_eq!(srv.len(), 2);
        assert_eq!(ix.lookup("50.0.96.10.in-addr.arpa", "PTR"), Lookup::Found(vec![Data::Ptr("my-nginx.default.svc.cluster.local".into())]));
    }

    #[test]
    fn pod_names_and_unnamed_headless_endpoints() {
        let ix = index();
        assert_eq!(ix.lookup("10-244-3-7.default.pod.cluster.local", "A"), Lookup::Found(vec![Data::A("10.244.3.7".parse().unwrap())]));
        assert_eq!(ix.lookup("10-244-3-7.default.pod.cluster.local", "AAAA"), Lookup::Found(vec![]));
        assert_eq!(ix.lookup("nonsense.default.pod.cluster.local", "A"), Lookup::NxDomain);
        let svcs: Vec<Service> = vec![obj(json!({"metadata": {"name": "h", "namespace": "default"}, "spec": {"clusterIP": "None"}}))];
        let slices: Vec<EndpointSlice> = vec![obj(json!({
            "metadata": {"name": "h-x", "namespace": "default", "labels": {"kubernetes.io/service-name": "h"}},
            "addressType": "IPv4", "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": true}}],
        }))];
        let ix = Index::build(&svcs, &slices, "cluster.local");
        assert_eq!(ix.lookup("10-244-1-5.h.default.svc.cluster.local", "A"), Lookup::Found(vec![Data::A("10.244.1.5".parse().unwrap())]));
    }

    #[test]
    fn external_names_missing_names_and_outside_names() {
        let ix = index();
        assert_eq!(ix.lookup("ext.other.svc.cluster.local", "A"), Lookup::Found(vec![Data::Cname("example.org".into())]));
        assert_eq!(ix.lookup("nope.default.svc.cluster.local", "A"), Lookup::NxDomain);
        assert_eq!(ix.lookup("example.org", "A"), Lookup::NotOurs);
        assert_eq!(ix.lookup("1.2.3.4.in-addr.arpa", "PTR"), Lookup::NotOurs);
    }
}
