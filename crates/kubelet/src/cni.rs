//! The pod network's CNI configuration for this node's podCIDR: the distribution's bridge,
//! host-local, portmap and loopback plugins; routes between nodes and masquerading to the
//! outside are r8s-net's (host-gw).

use k8s_openapi::api::core::v1::Node;
use serde_json::json;

use crate::config::Config;

pub const BRIDGE: &str = "r8s0";

/// `ipam_dir` holds host-local's address reservations: per agent, so agents sharing a machine
/// (and their leftovers) never exhaust each other's ranges in /var/lib/cni/networks.
pub fn render(pod_cidr: &str, ipam_dir: &std::path::Path) -> anyhow::Result<String> {
    let net: ipnet::IpNet = pod_cidr.parse().map_err(|e| anyhow::anyhow!("podCIDR {pod_cidr}: {e}"))?;
    let gateway = net.hosts().next().ok_or_else(|| anyhow::anyhow!("podCIDR {pod_cidr} has no host addresses"))?;
    Ok(serde_json::to_string_pretty(&json!({
        "cniVersion": "0.4.0",
        "name": "r8s",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                // Masquerading of pod traffic leaving the cluster is r8s-net's (pod to pod
                // across nodes keeps its addresses).
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": ipam_dir.display().to_string(),
                    "ranges": [[{"subnet": pod_cidr, "gateway": gateway.to_string()}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
            {"type": "loopback"},
        ],
    }))?)
}

/// Writes the conflist containerd's CRI plugin loads (it watches the directory).
pub fn write_conflist(cfg: &Config, node: &Node) -> anyhow::Result<()> {
    let Some(cidr) = node.spec.as_ref().and_then(|s| s.pod_cidr.clone()) else {
        anyhow::bail!("node {} has no podCIDR yet", cfg.node_name);
    };
    let dir = cfg.cni_conf_dir();
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(".10-r8s.conflist.tmp");
    std::fs::write(&tmp, render(&cidr, &cfg.data_dir.join("cni-ipam"))?)?;
    std::fs::rename(tmp, dir.join("10-r8s.conflist"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn conflist_uses_the_pod_cidr() {
        let text = super::render("10.244.3.0/24", std::path::Path::new("/d/ipam")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"], "10.244.3.0/24");
        assert_eq!(v["plugins"][0]["ipam"]["ranges"][0][0]["gateway"], "10.244.3.1");
        assert_eq!(v["plugins"][1]["type"], "portmap");
        assert_eq!(v["plugins"][0]["ipam"]["dataDir"], "/d/ipam");
    }
}
