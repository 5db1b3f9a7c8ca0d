//! The pod network across nodes, two ways (flannel's backends):
//!
//! - host-gw: every node routes each other node's podCIDR via that node's InternalIP (the
//!   nodes share an L2 segment);
//! - vxlan: for nodes that do not share one, a VXLAN device (`r8s.1`, VNI 1, UDP 8472) carries
//!   pod traffic inside UDP between the nodes' addresses. Each node's device has a MAC derived
//!   from its InternalIP, so peers need no annotation to find it: a route to the peer's
//!   podCIDR via the peer's gateway address (`.0`) on the device, a permanent neighbour entry
//!   for that address, and a forwarding entry sending the MAC to the peer's InternalIP.
//!
//! Either way pod-to-pod traffic crosses nodes without NAT; traffic from this node's pods to
//! anything outside the cluster CIDR is masqueraded (table `ip r8s-net`). Routes carry their own
//! protocol number, so the agent knows which ones are its own to remove.

pub mod netpol;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use r8s_client::informer::{Changes, Informers};

/// rtnetlink protocol number marking r8s's routes (`ip route show proto 91`).
pub const ROUTE_PROTO: &str = "91";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    HostGw,
    Vxlan,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Backend, String> {
        match s {
            "host-gw" => Ok(Backend::HostGw),
            "vxlan" => Ok(Backend::Vxlan),
            other => Err(format!("unknown flannel backend {other:?}: want host-gw, vxlan or none")),
        }
    }
}

/// The VXLAN device, as flannel's `flannel.1`.
pub const VXLAN_DEVICE: &str = "r8s.1";
const VXLAN_PORT: &str = "8472";

#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    pub backend: Backend,
    pub cluster_cidr: String,
    /// Service cluster IPs: routed locally so that this node's own connections to them (the
    /// ingress controller's, a user's curl) find a route before the proxy's DNAT, also on a
    /// node without a default route.
    pub service_cidr: String,
}

/// podCIDR -> next hop, for every other node that has both.
pub fn desired_routes(nodes: &[Arc<Node>], me: &str) -> BTreeMap<String, String> {
    nodes
        .iter()
        .filter(|n| n.metadata.name.as_deref() != Some(me))
        .filter_map(|n| {
            let cidr = n.spec.as_ref()?.pod_cidr.clone()?;
            let ip = n.status.as_ref()?.addresses.as_ref()?.iter().find(|a| a.type_ == "InternalIP")?.address.clone();
            Some((cidr, ip))
        })
        .collect()
}

/// The MAC of a node's VXLAN device: locally administered, the InternalIP in the low bytes.
pub fn vtep_mac(ip: &str) -> Option<String> {
    let a: std::net::Ipv4Addr = ip.parse().ok()?;
    let o = a.octets();
    Some(format!("0e:58:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]))
}

/// A podCIDR's network address (`10.244.1.0/24` -> `10.244.1.0`): the VXLAN gateway address.
pub fn cidr_base(cidr: &str) -> &str {
    cidr.split('/').next().unwrap_or(cidr)
}

/// The masquerade rule for this node's pods, as one nft transaction.
pub fn masquerade_rules(pod_cidr: &str, cluster_cidr: &str) -> String {
    format!(
        "add table ip r8s-net\ndelete table ip r8s-net\ntable ip r8s-net {{\n  chain postrouting {{\n    type nat hook postrouting priority 100; policy accept;\n    ip saddr {pod_cidr} ip daddr != {cluster_cidr} masquerade\n  }}\n}}\n"
    )
}

async fn sh(args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(args[0]).args(&args[1..]).output().await?;
    anyhow::ensure!(out.status.success(), "{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) async fn nft(text: &str) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("nft").args(["-f", "-"]).stdin(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn()?;
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).await?;
    let out = child.wait_with_output().await?;
    anyhow::ensure!(out.status.success(), "nft: {}", String::from_utf8_lossy(&out.stderr).trim());
    Ok(())
}

/// What the pod network depends on: each node's name, InternalIP and podCIDR.
type NetworkInputs = Vec<(String, Option<String>, Option<String>)>;

fn network_inputs(nodes: &[Arc<Node>]) -> NetworkInputs {
    let mut v: Vec<_> = nodes
        .iter()
        .map(|n| {
            let ip = n.status.as_ref().and_then(|s| s.addresses.as_ref()).and_then(|a| a.iter().find(|a| a.type_ == "InternalIP")).map(|a| a.address.clone());
            (n.metadata.name.clone().unwrap_or_default(), ip, n.spec.as_ref().and_then(|s| s.pod_cidr.clone()))
        })
        .collect();
    v.sort();
    v
}

/// Brings routes and the masquerade rule in line with the nodes.
async fn sync(nodes: &[Arc<Node>], cfg: &Config, applied_masq: &mut Option<String>) -> anyhow::Result<()> {
    let me = nodes.iter().find(|n| n.metadata.name.as_deref() == Some(cfg.node_name.as_str()));
    if let Some(cidr) = me.and_then(|n| n.spec.as_ref()?.pod_cidr.clone())
        && applied_masq.as_deref() != Some(cidr.as_str())
    {
        nft(&masquerade_rules(&cidr, &cfg.cluster_cidr)).await?;
        *applied_masq = Some(cidr);
    }
    if let Some(ip) = me.and_then(|n| n.status.as_ref()?.addresses.as_ref()?.iter().find(|a| a.type_ == "InternalIP").map(|a| a.address.clone())) {
        sh(&["ip", "route", "replace", &cfg.service_cidr, "dev", "lo", "src", &ip, "proto", ROUTE_PROTO]).await?;
    }
    let peers = desired_routes(nodes, &cfg.node_name);
    // dst -> gateway the route should have.
    let want: BTreeMap<String, String> = match cfg.backend {
        Backend::HostGw => peers.clone(),
        Backend::Vxlan => peers.keys().map(|cidr| (cidr.clone(), cidr_base(cidr).to_string())).collect(),
    };
    if cfg.backend == Backend::Vxlan {
        let my_ip = me.and_then(|n| n.status.as_ref()?.addresses.as_ref()?.iter().find(|a| a.type_ == "InternalIP").map(|a| a.address.clone()));
        let my_cidr = me.and_then(|n| n.spec.as_ref()?.pod_cidr.clone());
        let (Some(ip), Some(cidr)) = (my_ip, my_cidr) else { return Ok(()) };
        vxlan_device(&ip, &cidr).await?;
        for (cidr, peer_ip) in &peers {
            let Some(mac) = vtep_mac(peer_ip) else { continue };
            sh(&["ip", "neigh", "replace", cidr_base(cidr), "lladdr", &mac, "dev", VXLAN_DEVICE, "nud", "permanent"]).await?;
            sh(&["bridge", "fdb", "replace", &mac, "dev", VXLAN_DEVICE, "dst", peer_ip, "self", "permanent"]).await?;
        }
    }
    let current = sh(&["ip", "-4", "route", "show", "proto", ROUTE_PROTO]).await?;
    for line in current.lines() {
        let mut f = line.split_whitespace();
        let (Some(dst), Some("via"), Some(gw)) = (f.next(), f.next(), f.next()) else { continue };
        if want.get(dst).map(String::as_str) != Some(gw) {
            sh(&["ip", "route", "del", dst, "proto", ROUTE_PROTO]).await?;
        }
    }
    for (dst, gw) in &want {
        match cfg.backend {
            Backend::HostGw => sh(&["ip", "route", "replace", dst, "via", gw, "proto", ROUTE_PROTO]).await?,
            Backend::Vxlan => sh(&["ip", "route", "replace", dst, "via", gw, "dev", VXLAN_DEVICE, "onlink", "proto", ROUTE_PROTO]).await?,
        };
    }
    Ok(())
}

/// Creates (or fixes up) this node's VXLAN device: local address, derived MAC, the podCIDR's
/// gateway address, and room for the 50 bytes of encapsulation.
async fn vxlan_device(node_ip: &str, pod_cidr: &str) -> anyhow::Result<()> {
    let mac = vtep_mac(node_ip).ok_or_else(|| anyhow::anyhow!("VXLAN needs an IPv4 node address, not {node_ip}"))?;
    let existing = sh(&["ip", "-d", "link", "show", VXLAN_DEVICE]).await.unwrap_or_default();
    if !existing.contains(&format!("local {node_ip} ")) {
        let _ = sh(&["ip", "link", "del", VXLAN_DEVICE]).await;
        sh(&["ip", "link", "add", VXLAN_DEVICE, "type", "vxlan", "id", "1", "local", node_ip, "dstport", VXLAN_PORT, "nolearning"]).await?;
    }
    if !existing.contains(&mac) {
        sh(&["ip", "link", "set", VXLAN_DEVICE, "address", &mac]).await?;
    }
    // The encapsulation's 50 bytes come off the underlay's MTU.
    let underlay = sh(&["ip", "-o", "route", "get", node_ip]).await.unwrap_or_default();
    let dev = underlay.split_whitespace().skip_while(|w| *w != "dev").nth(1).unwrap_or("lo").to_string();
    let mtu = std::fs::read_to_string(format!("/sys/class/net/{dev}/mtu")).ok().and_then(|m| m.trim().parse::<u32>().ok()).unwrap_or(1500).min(1500);
    sh(&["ip", "link", "set", VXLAN_DEVICE, "mtu", &(mtu - 50).to_string(), "up"]).await?;
    sh(&["ip", "addr", "replace", &format!("{}/32", cidr_base(pod_cidr)), "dev", VXLAN_DEVICE]).await?;
    Ok(())
}

/// Runs until the process ends (network policies alongside).
pub async fn run(client: kube::Client, cfg: Config) -> anyhow::Result<()> {
    let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1");
    {
        let (client, node) = (client.clone(), cfg.node_name.clone());
        tokio::spawn(async move {
            if let Err(e) = netpol::run(client, node).await {
                tracing::error!(error = %e, "network policy enforcement stopped");
            }
        });
    }
    let informers = Informers::new(client);
    let nodes = informers.get::<Node>();
    let changes = Changes::new();
    changes.watch(&nodes);
    nodes.synced().await;
    let mut masq = None;
    // What the last successful sync was for, and when: node heartbeats wake this loop every
    // few seconds, but the routes only need work when an address or podCIDR changed (and a
    // periodic pass repairs what someone else removed).
    let mut applied: Option<(NetworkInputs, std::time::Instant)> = None;
    loop {
        let list = nodes.list();
        let inputs = network_inputs(&list);
        let fresh = applied.as_ref().is_some_and(|(i, at)| *i == inputs && at.elapsed() < Duration::from_secs(60));
        if !fresh {
            if let Err(e) = sync(&list, &cfg, &mut masq).await {
                tracing::warn!(error = %e, "pod network routes");
                applied = None;
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
            applied = Some((inputs, std::time::Instant::now()));
        }
        changes.next(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: Option<&str>, ip: &str) -> Arc<Node> {
        let mut v = serde_json::json!({"metadata": {"name": name}, "status": {"addresses": [{"type": "InternalIP", "address": ip}]}});
        if let Some(c) = cidr {
            v["spec"] = serde_json::json!({"podCIDR": c});
        }
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn routes_to_every_other_node_with_a_pod_cidr() {
        let nodes = [node("a", Some("10.244.0.0/24"), "198.19.5.2"), node("b", Some("10.244.1.0/24"), "198.19.5.3"), node("c", None, "198.19.5.4")];
        let r = desired_routes(&nodes, "a");
        assert_eq!(r.into_iter().collect::<Vec<_>>(), vec![("10.244.1.0/24".to_string(), "198.19.5.3".to_string())]);
        assert!(masquerade_rules("10.244.0.0/24", "10.244.0.0/16").contains("ip saddr 10.244.0.0/24 ip daddr != 10.244.0.0/16 masquerade"));
    }

    #[test]
    fn vxlan_macs_come_from_the_node_address() {
        assert_eq!(vtep_mac("198.19.5.3").as_deref(), Some("0e:58:c6:13:05:03"));
        assert_eq!(vtep_mac("fe80::1"), None);
        assert_eq!(cidr_base("10.244.1.0/24"), "10.244.1.0");
        assert_eq!("vxlan".parse::<Backend>(), Ok(Backend::Vxlan));
    }
}
