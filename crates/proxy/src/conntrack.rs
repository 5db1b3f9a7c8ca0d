//! UDP has no connection to close: conntrack keeps a client's flow DNATed to the endpoint it
//! first reached, so when that endpoint goes the client's packets keep going to it (a DNS
//! client behind a restarted resolver pod never recovers). After each change, the flows to
//! endpoints that left a UDP service port are deleted (`conntrack -D`), as kube-proxy does.

use std::collections::BTreeSet;

use crate::model::{Change, Endpoint, Protocol};

/// `conntrack` argument lists deleting the UDP flows that `change` left pointing nowhere.
pub fn stale_udp_flows(change: &Change) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (name, old) in change.old.iter().filter(|(_, sp)| sp.protocol == Protocol::Udp) {
        let new = change.new.get(name);
        let kept: BTreeSet<&Endpoint> = new.map(|n| n.cluster_endpoints.iter().chain(&n.external_endpoints).collect()).unwrap_or_default();
        let gone: BTreeSet<&Endpoint> = old.cluster_endpoints.iter().chain(&old.external_endpoints).filter(|e| !kept.contains(e)).collect();
        for e in gone {
            for ip in old.cluster_ips.iter().chain(&old.external_ips) {
                out.push(args(&["-D", "-p", "udp", "--orig-dst", &ip.to_string(), "--orig-port-dst", &old.port.to_string(), "--reply-src", &e.ip.to_string()]));
            }
            if let Some(np) = old.node_port {
                out.push(args(&["-D", "-p", "udp", "--orig-port-dst", &np.to_string(), "--reply-src", &e.ip.to_string()]));
            }
        }
    }
    out
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// Runs the deletions; "nothing matched" is not an error, and a missing `conntrack` (Debian
/// package conntrack) is only logged.
pub async fn flush(flows: Vec<Vec<String>>) {
    for a in flows {
        match tokio::process::Command::new("conntrack").args(&a).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).status().await {
            Ok(_) => {}
            Err(e) => {
                static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
                if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(error = %e, "conntrack (Debian package conntrack) not available: stale UDP flows stay until they time out");
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::build;
    use crate::model::tests::{service, slice};
    use serde_json::json;

    #[test]
    fn flows_to_a_udp_endpoint_that_left_are_deleted() {
        let dns = service(
            "dns",
            json!({"clusterIP": "10.96.0.10", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "tcp", "port": 53, "protocol": "TCP"}]}),
        );
        let eps = |ips: &[&str]| {
            let e: Vec<_> = ips.iter().map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}})).collect();
            slice("dns", json!([{"name": "dns", "port": 5353, "protocol": "UDP"}, {"name": "tcp", "port": 5353, "protocol": "TCP"}]), json!(e))
        };
        let old = build([&dns], [&eps(&["10.244.1.5", "10.244.2.7"])], "a");
        let new = build([&dns], [&eps(&["10.244.2.7"])], "a");
        let flows = stale_udp_flows(&Change { old, new });
        assert_eq!(
            flows,
            vec![args(&["-D", "-p", "udp", "--orig-dst", "10.96.0.10", "--orig-port-dst", "53", "--reply-src", "10.244.1.5"])],
            "TCP ends its own flows"
        );
    }
}
