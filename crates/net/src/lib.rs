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
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;
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
    pub cluster_cidr: Ipv4Net,
    /// Service cluster IPs: routed locally so that this node's own connections to them (the
    /// ingress controller's, a user's curl) find a route before the proxy's DNAT, also on a
    /// node without a default route.
    pub service_cidr: Ipv4Net,
}

/// A node's podCIDR as a network (the API validates it; anything else is ignored here, never
/// formatted into a command or a ruleset).
pub fn pod_cidr(n: &Node) -> Option<Ipv4Net> {
    n.spec.as_ref()?.pod_cidr.as_deref()?.parse::<Ipv4Net>().ok().map(|c| c.trunc())
}

/// A node's InternalIP.
pub fn internal_ip(n: &Node) -> Option<Ipv4Addr> {
    n.status.as_ref()?.addresses.as_ref()?.iter().find(|a| a.type_ == "InternalIP")?.address.parse().ok()
}

/// podCIDR -> next hop, for every other node that has both.
pub fn desired_routes(nodes: &[Arc<Node>], me: &str) -> BTreeMap<Ipv4Net, Ipv4Addr> {
    nodes.iter().filter(|n| n.metadata.name.as_deref() != Some(me)).filter_map(|n| Some((pod_cidr(n)?, internal_ip(n)?))).collect()
}

/// The MAC of a node's VXLAN device: locally administered, the InternalIP in the low bytes.
pub fn vtep_mac(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("0e:58:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

/// The masquerade rule for this node's pods, as one nft transaction.
pub fn masquerade_rules(pod_cidr: Ipv4Net, cluster_cidr: Ipv4Net) -> String {
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
type NetworkInputs = Vec<(String, Option<Ipv4Addr>, Option<Ipv4Net>)>;

fn network_inputs(nodes: &[Arc<Node>]) -> NetworkInputs {
    let mut v: Vec<_> = nodes.iter().map(|n| (n.metadata.name.clone().unwrap_or_default(), internal_ip(n), pod_cidr(n))).collect();
    v.sort();
    v
}

/// Brings routes and the masquerade rule in line with the nodes.
async fn sync(nodes: &[Arc<Node>], cfg: &Config, applied_masq: &mut Option<Ipv4Net>) -> anyhow::Result<()> {
    let me = nodes.iter().find(|n| n.metadata.name.as_deref() == Some(cfg.node_name.as_str()));
    let (my_ip, my_cidr) = (me.and_then(|n| internal_ip(n)), me.and_then(|n| pod_cidr(n)));
    if let Some(cidr) = my_cidr
        && *applied_masq != Some(cidr)
    {
        nft(&masquerade_rules(cidr, cfg.cluster_cidr)).await?;
        *applied_masq = Some(cidr);
    }
    if let Some(ip) = my_ip {
        sh(&["ip", "route", "replace", &cfg.service_cidr.to_string(), "dev", "lo", "src", &ip.to_string(), "proto", ROUTE_PROTO]).await?;
    }
    let peers = desired_routes(nodes, &cfg.node_name);
    // dst -> gateway the route should have, as `ip route` prints them.
    let want: BTreeMap<String, String> = match cfg.backend {
        Backend::HostGw => peers.iter().map(|(c, ip)| (c.to_string(), ip.to_string())).collect(),
        Backend::Vxlan => peers.keys().map(|c| (c.to_string(), c.network().to_string())).collect(),
    };
    if cfg.backend == Backend::Vxlan {
        let (Some(ip), Some(cidr)) = (my_ip, my_cidr) else { return Ok(()) };
        vxlan_device(ip, cidr).await?;
        for (cidr, peer_ip) in &peers {
            let mac = vtep_mac(*peer_ip);
            sh(&["ip", "neigh", "replace", &cidr.network().to_string(), "lladdr", &mac, "dev", VXLAN_DEVICE, "nud", "permanent"]).await?;
            sh(&["bridge", "fdb", "replace", &mac, "dev", VXLAN_DEVICE, "dst", &peer_ip.to_string(), "self", "permanent"]).await?;
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
async fn vxlan_device(node_ip: Ipv4Addr, pod_cidr: Ipv4Net) -> anyhow::Result<()> {
    let mac = vtep_mac(node_ip);
    let ip = node_ip.to_string();
    let existing = sh(&["ip", "-d", "link", "show", VXLAN_DEVICE]).await.unwrap_or_default();
    if !existing.contains(&format!("local {ip} ")) {
        let _ = sh(&["ip", "link", "del", VXLAN_DEVICE]).await;
        sh(&["ip", "link", "add", VXLAN_DEVICE, "type", "vxlan", "id", "1", "local", &ip, "dstport", VXLAN_PORT, "nolearning"]).await?;
    }
    if !existing.contains(&mac) {
        sh(&["ip", "link", "set", VXLAN_DEVICE, "address", &mac]).await?;
    }
    // The encapsulation's 50 bytes come off the underlay's MTU.
    let underlay = sh(&["ip", "-o", "route", "get", &ip]).await.unwrap_or_default();
    let dev = underlay.split_whitespace().skip_while(|w| *w != "dev").nth(1).unwrap_or("lo").to_string();
    let mtu = std::fs::read_to_string(format!("/sys/class/net/{dev}/mtu")).ok().and_then(|m| m.trim().parse::<u32>().ok()).unwrap_or(1500).min(1500);
    sh(&["ip", "link", "set", VXLAN_DEVICE, "mtu", &(mtu - 50).to_string(), "up"]).await?;
    sh(&["ip", "addr", "replace", &format!("{}/32", pod_cidr.network()), "dev", VXLAN_DEVICE]).await?;
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
        assert_eq!(r.into_iter().collect::<Vec<_>>(), vec![("10.244.1.0/24".parse().unwrap(), Ipv4Addr::new(198, 19, 5, 3))]);
        let masq = masquerade_rules("10.244.0.0/24".parse().unwrap(), "10.244.0.0/16".parse().unwrap());
        assert!(masq.contains("ip saddr 10.244.0.0/24 ip daddr != 10.244.0.0/16 masquerade"));
    }

    #[test]
    fn values_that_are_not_addresses_never_reach_a_route_or_ruleset() {
        // A podCIDR carrying nft syntax (stored before the API validated nodes) is not a network.
        let nodes = [
            node("a", Some("10.244.0.0/24"), "198.19.5.2"),
            node("b", Some("10.0.0.0/24; flush ruleset"), "198.19.5.3"),
            node("c", Some("10.244.2.0/24"), "not-an-ip"),
        ];
        assert!(desired_routes(&nodes, "a").is_empty());
        assert_eq!(pod_cidr(&nodes[1]), None);
        // Host bits are dropped, as `ip route` prints the network.
        assert_eq!(pod_cidr(&node("d", Some("10.244.3.7/24"), "198.19.5.5")), Some("10.244.3.0/24".parse().unwrap()));
    }

    #[test]
    fn vxlan_macs_come_from_the_node_address() {
        assert_eq!(vtep_mac(Ipv4Addr::new(198, 19, 5, 3)), "0e:58:c6:13:05:03");
        assert_eq!("vxlan".parse::<Backend>(), Ok(Backend::Vxlan));
    }
}
