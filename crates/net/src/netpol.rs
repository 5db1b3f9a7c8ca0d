//! NetworkPolicy enforcement for this node's pods, in the packet filter (table `ip r8s-netpol`,
//! hooked on forward, which bridged pod traffic also passes). A pod selected by a policy of a
//! type (Ingress, Egress) is isolated in that direction: only what some rule allows passes,
//! plus replies to allowed connections. Allowed traffic is data, not rules: sets of
//! `pod . peer` (any port) and `pod . peer . protocol . port`, and interval sets for ipBlocks.

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

/// What a peer list allows: addresses of pods, and CIDRs.
#[derive(Default)]
struct Peers {
    all: bool,
    ips: BTreeSet<Ipv4Addr>,
    cidrs: BTreeSet<String>,
}

fn peers(list: Option<&Vec<NetworkPolicyPeer>>, policy_ns: &str, pods: &[Arc<Pod>], namespaces: &[Arc<Namespace>]) -> Peers {
    let Some(list) = list.filter(|l| !l.is_empty()) else { return Peers { all: true, ..Default::default() } };
    let mut out = Peers::default();
    for peer in list {
        if let Some(b) = &peer.ip_block {
            // `except` ranges are not carved out (noted in the issue).
            out.cidrs.insert(b.cidr.clone());
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

#[derive(Default, Debug, PartialEq, Eq)]
pub struct Sets {
    pub isolated_in: BTreeSet<String>,
    pub isolated_out: BTreeSet<String>,
    /// "pod . peer", "pod . peer . proto . port", "pod . cidr" (interval), "pod" (from anywhere)
    pub in_any: BTreeSet<String>,
    pub in_port: BTreeSet<String>,
    pub in_cidr: BTreeSet<String>,
    pub in_all: BTreeSet<String>,
    pub in_all_port: BTreeSet<String>,
    pub out_any: BTreeSet<String>,
    pub out_port: BTreeSet<String>,
    pub out_cidr: BTreeSet<String>,
    pub out_all: BTreeSet<String>,
    pub out_all_port: BTreeSet<String>,
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
                    add(&mut s.in_any, &mut s.in_port, &mut s.in_cidr, &mut s.in_all, &mut s.in_all_port, ip, &from, ports(rule.ports.as_ref(), pod));
                }
            }
            if types.iter().any(|t| t == "Egress") {
                s.isolated_out.insert(ip.to_string());
                for rule in spec.egress.iter().flatten() {
                    let to = peers(rule.to.as_ref(), ns, pods, namespaces);
                    // Named egress ports resolve against the destination; numeric ones are enough here.
                    add(&mut s.out_any, &mut s.out_port, &mut s.out_cidr, &mut s.out_all, &mut s.out_all_port, ip, &to, ports(rule.ports.as_ref(), pod));
                }
            }
        }
    }
    s
}

#[allow(clippy::too_many_arguments)]
fn add(
    any: &mut BTreeSet<String>,
    port: &mut BTreeSet<String>,
    cidr: &mut BTreeSet<String>,
    all: &mut BTreeSet<String>,
    all_port: &mut BTreeSet<String>,
    pod: Ipv4Addr,
    peers: &Peers,
    ports: Option<Vec<(String, u16)>>,
) {
    match (&ports, peers.all) {
        (None, true) => {
            all.insert(pod.to_string());
        }
        (Some(ps), true) => all_port.extend(ps.iter().map(|(pr, p)| format!("{pod} . {pr} . {p}"))),
        (None, false) => {
            any.extend(peers.ips.iter().map(|i| format!("{pod} . {i}")));
            cidr.extend(peers.cidrs.iter().map(|c| format!("{pod} . {c}")));
        }
        (Some(ps), false) => {
            for i in &peers.ips {
                port.extend(ps.iter().map(|(pr, p)| format!("{pod} . {i} . {pr} . {p}")));
            }
            // ipBlocks with ports: the CIDR alone (ports are not combined with intervals here).
            cidr.extend(peers.cidrs.iter().map(|c| format!("{pod} . {c}")));
        }
    }
}

/// The whole table as one transaction.
pub fn render(s: &Sets) -> String {
    let mut t = String::from("add table ip r8s-netpol\ndelete table ip r8s-netpol\ntable ip r8s-netpol {\n");
    let sets: [(&str, &str, &BTreeSet<String>); 12] = [
        ("isolated_in", "typeof ip daddr;", &s.isolated_in),
        ("isolated_out", "typeof ip saddr;", &s.isolated_out),
        ("in_any", "typeof ip daddr . ip saddr;", &s.in_any),
        ("in_port", "typeof ip daddr . ip saddr . meta l4proto . th dport;", &s.in_port),
        ("in_cidr", "typeof ip daddr . ip saddr; flags interval;", &s.in_cidr),
        ("in_all", "typeof ip daddr;", &s.in_all),
        ("in_all_port", "typeof ip daddr . meta l4proto . th dport;", &s.in_all_port),
        ("out_any", "typeof ip saddr . ip daddr;", &s.out_any),
        ("out_port", "typeof ip saddr . ip daddr . meta l4proto . th dport;", &s.out_port),
        ("out_cidr", "typeof ip saddr . ip daddr; flags interval;", &s.out_cidr),
        ("out_all", "typeof ip saddr;", &s.out_all),
        ("out_all_port", "typeof ip saddr . meta l4proto . th dport;", &s.out_all_port),
    ];
    for (name, decl, els) in &sets {
        let _ = write!(t, "  set {name} {{ {decl}");
        if !els.is_empty() {
            let _ = write!(t, " elements = {{ {} }};", els.iter().cloned().collect::<Vec<_>>().join(", "));
        }
        t.push_str(" }\n");
    }
    t.push_str(
        "  chain ingress_check {\n    ip daddr . ip saddr @in_any accept\n    ip daddr . ip saddr . meta l4proto . th dport @in_port accept\n    ip daddr . ip saddr @in_cidr accept\n    ip daddr @in_all accept\n    ip daddr . meta l4proto . th dport @in_all_port accept\n    drop\n  }\n",
    );
    // Egress is checked first (the sender's policy), then ingress (the receiver's).
    t.push_str("  chain forward {\n    type filter hook forward priority 0; policy accept;\n    ct state established,related accept\n    ip saddr @isolated_out jump egress_check_then_in\n    ip daddr @isolated_in jump ingress_check\n  }\n");
    t.push_str("  chain egress_check_then_in {\n    ip saddr . ip daddr @out_any goto after_egress\n    ip saddr . ip daddr . meta l4proto . th dport @out_port goto after_egress\n    ip saddr . ip daddr @out_cidr goto after_egress\n    ip saddr @out_all goto after_egress\n    ip saddr . meta l4proto . th dport @out_all_port goto after_egress\n    drop\n  }\n");
    t.push_str("  chain after_egress {\n    ip daddr @isolated_in jump ingress_check\n    accept\n  }\n");
    t.push_str("}\n");
    t
}

/// Follows pods, namespaces and policies; rewrites the table when the sets change.
pub async fn run(client: kube::Client, node: String) -> anyhow::Result<()> {
    let informers = r8s_client::informer::Informers::new(client);
    let (pods, nss, pols) = (informers.get::<Pod>(), informers.get::<Namespace>(), informers.get::<NetworkPolicy>());
    let changed = Arc::new(tokio::sync::Notify::new());
    let n = changed.clone();
    pods.on_change(move |_, _| n.notify_one());
    let n = changed.clone();
    nss.on_change(move |_, _| n.notify_one());
    let n = changed.clone();
    pols.on_change(move |_, _| n.notify_one());
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
        changed.notified().await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
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
        assert_eq!(s.in_port.iter().collect::<Vec<_>>(), ["10.244.0.5 . 10.244.0.6 . tcp . 80"]);
        assert!(s.isolated_out.is_empty() && s.in_any.is_empty());
        let text = render(&s);
        assert!(
            text.contains("set in_port { typeof ip daddr . ip saddr . meta l4proto . th dport; elements = { 10.244.0.5 . 10.244.0.6 . tcp . 80 }; }"),
            "{text}"
        );
    }
}
