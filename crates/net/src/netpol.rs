//! NetworkPolicy enforcement for this node's pods, in the packet filter (table `ip r8s-netpol`,
//! hooked on forward, which bridged pod traffic also passes). A pod selected by a policy of a
//! type (Ingress, Egress) is isolated in that direction: only what some rule allows passes,
//! plus replies to allowed connections. Allowed traffic is data, not rules: sets of
//! `pod . peer` (any port) and `pod . peer . protocol . port`, and interval sets for ipBlocks
//! (their `except` ranges carved out, so a block is a list of address ranges).

use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use r8s_api::matching::selector_matches;

fn pod_ip(p: &Pod) -> Option<Ipv4Addr> {
    if p.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        return None;
    }
    p.status.as_ref()?.pod_ip.as_ref()?.parse().ok()
}

fn labels(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> std::collections::BTreeMap<String, String> {
    m.labels.clone().unwrap_or_default()
}

/// What a peer list allows: addresses of pods, and address ranges (`a-b`, or one address).
#[derive(Default)]
struct Peers {
    all: bool,
    ips: BTreeSet<Ipv4Addr>,
    cidrs: BTreeSet<String>,
}

fn parse_cidr(c: &str) -> Option<(u32, u32)> {
    let (addr, len) = c.split_once('/').unwrap_or((c, "32"));
    let a = u32::from(addr.parse::<Ipv4Addr>().ok()?);
    let len: u32 = len.parse().ok().filter(|l| *l <= 32)?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some((a & mask, (a & mask) | !mask))
}

/// The address ranges of `cidr` without the `except` CIDRs, as nft interval elements.
pub fn block_ranges(cidr: &str, except: &[String]) -> Vec<String> {
    let Some(whole) = parse_cidr(cidr) else { return Vec::new() };
    let mut ranges = vec![whole];
    for (lo, hi) in except.iter().filter_map(|e| parse_cidr(e)) {
        ranges = ranges
            .into_iter()
            .flat_map(|(a, b)| {
                let mut out = Vec::new();
                if hi < a || lo > b {
                    out.push((a, b));
                } else {
                    if lo > a {
                        out.push((a, lo - 1));
                    }
                    if hi < b {
                        out.push((hi + 1, b));
                    }
                }
                out
            })
            .collect();
    }
    ranges.into_iter().map(|(a, b)| if a == b { Ipv4Addr::from(a).to_string() } else { format!("{}-{}", Ipv4Addr::from(a), Ipv4Addr::from(b)) }).collect()
}

fn peers(list: Option<&Vec<NetworkPolicyPeer>>, policy_ns: &str, pods: &[Arc<Pod>], namespaces: &[Arc<Namespace>]) -> Peers {
    let Some(list) = list.filter(|l| !l.is_empty()) else { return Peers { all: true, ..Default::default() } };
    let mut out = Peers::default();
    for peer in list {
        if let Some(b) = &peer.ip_block {
            out.cidrs.extend(block_ranges(&b.cidr, b.except.as_deref().unwrap_or_default()));
            continue;
        }
        let ns_ok = |ns: &str| match &peer.namespace_selector {
            None => ns == policy_ns,
            Some(sel) => namespaces.iter().any(|n| n.metadata.name.as_deref() == Some(ns) && selector_matches(sel, &labels(&n.metadata))),
        };
        for p in pods {
            let ns = p.metadata.namespace.as_deref().unwrap_or_default();
            if !ns_ok(ns) {
                continue;
            }
            if let Some(sel) = &peer.pod_selector
                && !selector_matches(sel, &labels(&p.metadata))
            {
                continue;
            }
            if let Some(ip) = pod_ip(p) {
                out.ips.insert(ip);
            }
        }
    }
    out
}

/// (protocol, port) pairs of a rule; None means every port. Named ports resolve against the
/// pod the traffic goes to.
fn ports(list: Option<&Vec<NetworkPolicyPort>>, target: &Pod) -> Option<Vec<(String, u16)>> {
    let list = list.filter(|l| !l.is_empty())?;
    let mut out = Vec::new();
    for p in list {
        let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into()).to_ascii_lowercase();
        match &p.port {
            None => return None,
            Some(IntOrString::Int(n)) => {
                let end = p.end_port.unwrap_or(*n);
                for port in *n..=end.max(*n) {
                    out.push((proto.clone(), port as u16));
                }
            }
            Some(IntOrString::String(name)) => {
                for c in target.spec.iter().flat_map(|s| s.containers.iter()) {
                    for cp in c.ports.iter().flatten() {
                        if cp.name.as_deref() == Some(name.as_str()) {
                            out.push((proto.clone(), cp.container_port as u16));
                        }
                    }
                }
            }
        }
    }
    Some(out)
}

/// What one direction allows, for the isolated pods of this node.
#[derive(Default, Debug, PartialEq, Eq)]
pub struct Allowed {
    /// "pod . peer"
    pub any: BTreeSet<String>,
    /// "pod . peer . proto . port"
    pub port: BTreeSet<String>,
    /// "pod . range" (interval)
    pub cidr: BTreeSet<String>,
    /// "pod . range . proto . port" (interval)
    pub cidr_port: BTreeSet<String>,
    /// "pod": from (to) anywhere
    pub all: BTreeSet<String>,
    /// "pod . proto . port": anywhere, these ports
    pub all_port: BTreeSet<String>,
}

#[derive(Default, Debug, PartialEq, Eq)]
pub struct Sets {
    pub isolated_in: BTreeSet<String>,
    pub isolated_out: BTreeSet<String>,
    pub inbound: Allowed,
    pub outbound: Allowed,
}

/// The sets for the pods on `node`.
pub fn compute(node: &str, pods: &[Arc<Pod>], namespaces: &[Arc<Namespace>], policies: &[Arc<NetworkPolicy>]) -> Sets {
    let mut s = Sets::default();
    for pod in pods.iter().filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)) {
        let Some(ip) = pod_ip(pod) else { continue };
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        for pol in policies.iter().filter(|p| p.metadata.namespace.as_deref() == Some(ns)) {
            let Some(spec) = pol.spec.as_ref() else { continue };
            if !selector_matches(&spec.pod_selector.clone().unwrap_or_default(), &labels(&pod.metadata)) {
                continue;
            }
            let types = spec.policy_types.clone().unwrap_or_else(|| {
                let mut t = vec!["Ingress".to_string()];
                if spec.egress.is_some() {
                    t.push("Egress".into());
                }
                t
            });
            if types.iter().any(|t| t == "Ingress") {
                s.isolated_in.insert(ip.to_string());
                for rule in spec.ingress.iter().flatten() {
                    let from = peers(rule.from.as_ref(), ns, pods, namespaces);
                    add(&mut s.inbound, ip, &from, ports(rule.ports.as_ref(), pod));
                }
            }
            if types.iter().any(|t| t == "Egress") {
                s.isolated_out.insert(ip.to_string());
                for rule in spec.egress.iter().flatten() {
                    let to = peers(rule.to.as_ref(), ns, pods, namespaces);
                    // Named egress ports resolve against the destination; numeric ones are enough here.
                    add(&mut s.outbound, ip, &to, ports(rule.ports.as_ref(), pod));
                }
            }
        }
    }
    s
}

fn add(a: &mut Allowed, pod: Ipv4Addr, peers: &Peers, ports: Option<Vec<(String, u16)>>) {
    match (&ports, peers.all) {
        (None, true) => {
            a.all.insert(pod.to_string());
        }
        (Some(ps), true) => a.all_port.extend(ps.iter().map(|(pr, p)| format!("{pod} . {pr} . {p}"))),
        (None, false) => {
            a.any.extend(peers.ips.iter().map(|i| format!("{pod} . {i}")));
            a.cidr.extend(peers.cidrs.iter().map(|c| format!("{pod} . {c}")));
        }
        (Some(ps), false) => {
            for i in &peers.ips {
                a.port.extend(ps.iter().map(|(pr, p)| format!("{pod} . {i} . {pr} . {p}")));
            }
            for c in &peers.cidrs {
                a.cidr_port.extend(ps.iter().map(|(pr, p)| format!("{pod} . {c} . {pr} . {p}")));
            }
        }
    }
}

/// The whole table as one transaction.
pub fn render(s: &Sets) -> String {
    let mut t = String::from("add table ip r8s-netpol\ndelete table ip r8s-netpol\ntable ip r8s-netpol {\n");
    let (i, o) = (&s.inbound, &s.outbound);
    let sets: [(&str, &str, &BTreeSet<String>); 14] = [
        ("isolated_in", "typeof ip daddr;", &s.isolated_in),
        ("isolated_out", "typeof ip saddr;", &s.isolated_out),
        ("in_any", "typeof ip daddr . ip saddr;", &i.any),
        ("in_port", "typeof ip daddr . ip saddr . meta l4proto . th dport;", &i.port),
        ("in_cidr", "typeof ip daddr . ip saddr; flags interval;", &i.cidr),
        ("in_cidr_port", "typeof ip daddr . ip saddr . meta l4proto . th dport; flags interval;", &i.cidr_port),
        ("in_all", "typeof ip daddr;", &i.all),
        ("in_all_port", "typeof ip daddr . meta l4proto . th dport;", &i.all_port),
        ("out_any", "typeof ip saddr . ip daddr;", &o.any),
        ("out_port", "typeof ip saddr . ip daddr . meta l4proto . th dport;", &o.port),
        ("out_cidr", "typeof ip saddr . ip daddr; flags interval;", &o.cidr),
        ("out_cidr_port", "typeof ip saddr . ip daddr . meta l4proto . th dport; flags interval;", &o.cidr_port),
        ("out_all", "typeof ip saddr;", &o.all),
        ("out_all_port", "typeof ip saddr . meta l4proto . th dport;", &o.all_port),
    ];
    for (name, decl, els) in &sets {
        let _ = write!(t, "  set {name} {{ {decl}");
        if !els.is_empty() {
            let _ = write!(t, " elements = {{ {} }};", els.iter().cloned().collect::<Vec<_>>().join(", "));
        }
        t.push_str(" }\n");
    }
    t.push_str(
        "  chain ingress_check {\n    ip daddr . ip saddr @in_any accept\n    ip daddr . ip saddr . meta l4proto . th dport @in_port accept\n    ip daddr . ip saddr @in_cidr accept\n    ip daddr . ip saddr . meta l4proto . th dport @in_cidr_port accept\n    ip daddr @in_all accept\n    ip daddr . meta l4proto . th dport @in_all_port accept\n    drop\n  }\n",
    );
    // Egress is checked first (the sender's policy), then ingress (the receiver's).
    t.push_str("  chain forward {\n    type filter hook forward priority 0; policy accept;\n    ct state established,related accept\n    ip saddr @isolated_out jump egress_check_then_in\n    ip daddr @isolated_in jump ingress_check\n  }\n");
    t.push_str("  chain egress_check_then_in {\n    ip saddr . ip daddr @out_any goto after_egress\n    ip saddr . ip daddr . meta l4proto . th dport @out_port goto after_egress\n    ip saddr . ip daddr @out_cidr goto after_egress\n    ip saddr . ip daddr . meta l4proto . th dport @out_cidr_port goto after_egress\n    ip saddr @out_all goto after_egress\n    ip saddr . meta l4proto . th dport @out_all_port goto after_egress\n    drop\n  }\n");
    t.push_str("  chain after_egress {\n    ip daddr @isolated_in jump ingress_check\n    accept\n  }\n");
    t.push_str("}\n");
    t
}

/// Follows pods, namespaces and policies; rewrites the table when the sets change.
pub async fn run(client: kube::Client, node: String) -> anyhow::Result<()> {
    let informers = r8s_client::informer::Informers::new(client);
    let (pods, nss, pols) = (informers.get::<Pod>(), informers.get::<Namespace>(), informers.get::<NetworkPolicy>());
    let changes = r8s_client::informer::Changes::new();
    changes.watch(&pods);
    changes.watch(&nss);
    changes.watch(&pols);
    pods.synced().await;
    nss.synced().await;
    pols.synced().await;
    let mut applied: Option<Sets> = None;
    loop {
        let want = compute(&node, &pods.list(), &nss.list(), &pols.list());
        if applied.as_ref() != Some(&want) {
            match crate::nft(&render(&want)).await {
                Ok(()) => applied = Some(want),
                Err(e) => {
                    tracing::warn!(error = %e, "network policy rules");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        changes.next(std::time::Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Arc<T> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn ingress_allowed_from_labelled_pods_only() {
        let pod = |name: &str, ip: &str, labels: serde_json::Value| {
            obj::<Pod>(
                json!({"metadata": {"name": name, "namespace": "default", "labels": labels}, "spec": {"nodeName": "a", "containers": []}, "status": {"podIP": ip}}),
            )
        };
        let pods =
            vec![pod("web", "10.244.0.5", json!({"app": "web"})), pod("ok", "10.244.0.6", json!({"access": "true"})), pod("no", "10.244.0.7", json!({}))];
        let pol = obj::<NetworkPolicy>(json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"access": "true"}}}], "ports": [{"port": 80}]}]}}));
        let s = compute("a", &pods, &[], &[pol]);
        assert_eq!(s.isolated_in.iter().collect::<Vec<_>>(), ["10.244.0.5"]);
        assert_eq!(s.inbound.port.iter().collect::<Vec<_>>(), ["10.244.0.5 . 10.244.0.6 . tcp . 80"]);
        assert!(s.isolated_out.is_empty() && s.inbound.any.is_empty());
        let text = render(&s);
        assert!(
            text.contains("set in_port { typeof ip daddr . ip saddr . meta l4proto . th dport; elements = { 10.244.0.5 . 10.244.0.6 . tcp . 80 }; }"),
            "{text}"
        );
    }

    #[test]
    fn ip_blocks_lose_their_except_ranges_and_keep_their_ports() {
        assert_eq!(block_ranges("10.0.0.0/8", &["10.1.0.0/16".into()]), ["10.0.0.0-10.0.255.255", "10.2.0.0-10.255.255.255"]);
        assert_eq!(block_ranges("192.0.2.0/30", &["192.0.2.1/32".into(), "192.0.2.3/32".into()]), ["192.0.2.0", "192.0.2.2"]);
        assert_eq!(block_ranges("192.0.2.0/24", &["198.51.100.0/24".into()]), ["192.0.2.0-192.0.2.255"], "an except outside changes nothing");
        let pod = obj::<Pod>(
            json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {"nodeName": "a", "containers": []}, "status": {"podIP": "10.244.0.5"}}),
        );
        let pol = obj::<NetworkPolicy>(json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"podSelector": {}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.128/25"]}}], "ports": [{"port": 53, "protocol": "UDP"}]}]}}));
        let s = compute("a", &[pod], &[], &[pol]);
        assert_eq!(s.outbound.cidr_port.iter().collect::<Vec<_>>(), ["10.244.0.5 . 192.0.2.0-192.0.2.127 . udp . 53"]);
        assert!(s.outbound.cidr.is_empty(), "the block's ports are kept");
    }
}
