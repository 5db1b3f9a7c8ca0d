//! The iptables backend (`--proxy-mode iptables`), laid out as upstream's iptables proxy so
//! that `iptables-save` reads the way users know it: `KUBE-SERVICES` matches each cluster
//! and external address and jumps to the service port's `KUBE-SVC-*` (or `KUBE-EXT-*` from
//! outside) chain, which picks one `KUBE-SEP-*` endpoint chain with `statistic` probabilities;
//! `KUBE-NODEPORTS` does the same for node ports; ports without endpoints are rejected in the
//! filter table. Session affinity uses the `recent` match, one list per endpoint.
//!
//! A ruleset is a map from (table, chain) to its rules, so a change rewrites only the chains
//! whose rules differ (`iptables-restore --noflush` flushes a chain when it is declared) and
//! deletes the ones that are gone. Per-service chains make this mode cost more than the
//! nftables one at thousands of services; it is the alternative, not the default.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use sha2::{Digest, Sha256};

use crate::model::{Endpoint, Model, PortName, Protocol, ServicePort};
use crate::nftables::MASQ_MARK;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Filter,
    Nat,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Filter => "filter",
            Table::Nat => "nat",
        }
    }
}

/// Chains and their rules (each a full `-A CHAIN ...` line), in order.
pub type Ruleset = BTreeMap<(Table, String), Vec<String>>;

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The pod network: traffic to a cluster IP from outside it is masqueraded.
    pub cluster_cidr: Option<String>,
}

/// The fixed chains, and the jumps into them from the built-in chains (ensured at full sync).
pub const JUMPS: &[(Table, &str, &str)] = &[
    (Table::Nat, "PREROUTING", "-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"),
    (Table::Nat, "OUTPUT", "-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"),
    (Table::Nat, "POSTROUTING", "-m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING"),
    (Table::Filter, "INPUT", "-m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES"),
    (Table::Filter, "FORWARD", "-m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"),
    (Table::Filter, "FORWARD", "-m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES"),
    (Table::Filter, "OUTPUT", "-m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"),
];

/// Chains whose names this backend owns (stale ones are deleted at full sync).
pub fn owned(chain: &str) -> bool {
    ["KUBE-SVC-", "KUBE-EXT-", "KUBE-SEP-"].iter().any(|p| chain.starts_with(p))
}

/// Upstream's chain naming: a prefix and 16 base32 characters of a SHA-256.
fn chain_name(prefix: &str, key: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = Sha256::digest(key.as_bytes());
    let mut out = String::from(prefix);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in digest.iter() {
        acc = (acc << 8) | *b as u32;
        bits += 8;
        while bits >= 5 && out.len() < prefix.len() + 16 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    out
}

fn proto(p: Protocol) -> &'static str {
    p.nft()
}

fn svc_chain(name: &PortName, p: Protocol) -> String {
    chain_name("KUBE-SVC-", &format!("{name}{}", proto(p)))
}

fn ext_chain(name: &PortName, p: Protocol) -> String {
    chain_name("KUBE-EXT-", &format!("{name}{}", proto(p)))
}

fn sep_chain(name: &PortName, p: Protocol, e: &Endpoint) -> String {
    chain_name("KUBE-SEP-", &format!("{name}{}{}:{}", proto(p), e.ip, e.port))
}

/// Jumps to one of `eps`' chains, each with equal chance (upstream's statistic cascade), and
/// with affinity first back to the endpoint a recent client had.
fn balance(rs: &mut Ruleset, chain: &str, name: &PortName, sp: &ServicePort, eps: &[Endpoint]) {
    let rules = rs.entry((Table::Nat, chain.to_string())).or_default();
    let comment = format!("-m comment --comment \"{name}\"");
    if let Some(t) = sp.affinity_timeout {
        for e in eps {
            let sep = sep_chain(name, sp.protocol, e);
            rules.push(format!("-A {chain} {comment} -m recent --name {sep} --rcheck --seconds {t} --reap -j {sep}"));
        }
    }
    let n = eps.len();
    for (i, e) in eps.iter().enumerate() {
        let sep = sep_chain(name, sp.protocol, e);
        if i + 1 < n {
            let p = 1.0 / (n - i) as f64;
            rules.push(format!("-A {chain} {comment} -m statistic --mode random --probability {p:.11} -j {sep}"));
        } else {
            rules.push(format!("-A {chain} {comment} -j {sep}"));
        }
    }
}

fn endpoint_chain(rs: &mut Ruleset, name: &PortName, sp: &ServicePort, e: &Endpoint) {
    let sep = sep_chain(name, sp.protocol, e);
    let p = proto(sp.protocol);
    let comment = format!("-m comment --comment \"{name}\"");
    let recent = sp.affinity_timeout.map(|_| format!(" -m recent --name {sep} --set")).unwrap_or_default();
    let rules = vec![
        // Hairpin: a pod reaching itself through the service answers through NAT.
        format!("-A {sep} {comment} -s {}/32 -j KUBE-MARK-MASQ", e.ip),
        format!("-A {sep} {comment} -p {p}{recent} -m {p} -j DNAT --to-destination {}:{}", e.ip, e.port),
    ];
    rs.insert((Table::Nat, sep), rules);
}

/// The whole desired ruleset for the model.
pub fn ruleset(model: &Model, o: &Options) -> Ruleset {
    let mut rs = Ruleset::new();
    let mut services = Vec::new();
    let mut nodeports = Vec::new();
    let mut reject = Vec::new();
    let mut reject_external = Vec::new();
    for (name, sp) in model {
        let p = proto(sp.protocol);
        let port = sp.port;
        let comment = format!("-m comment --comment \"{name}");
        let mut seps = BTreeSet::new();
        // Cluster IPs.
        if !sp.cluster_ips.is_empty() {
            if sp.cluster_endpoints.is_empty() {
                for ip in &sp.cluster_ips {
                    reject.push(format!(
                        "-A KUBE-SERVICES {comment} has no endpoints\" -d {ip}/32 -p {p} -m {p} --dport {port} -j REJECT --reject-with icmp-port-unreachable"
                    ));
                }
            } else {
                let chain = svc_chain(name, sp.protocol);
                let mut rules = Vec::new();
                for ip in &sp.cluster_ips {
                    services.push(format!("-A KUBE-SERVICES {comment} cluster IP\" -d {ip}/32 -p {p} -m {p} --dport {port} -j {chain}"));
                    if let Some(cidr) = &o.cluster_cidr {
                        rules.push(format!("-A {chain} {comment} cluster IP\" ! -s {cidr} -d {ip}/32 -p {p} -m {p} --dport {port} -j KUBE-MARK-MASQ"));
                    }
                }
                rs.insert((Table::Nat, chain.clone()), rules);
                balance(&mut rs, &chain, name, sp, &sp.cluster_endpoints);
                seps.extend(sp.cluster_endpoints.iter().copied());
            }
        }
        // From outside: external and load-balancer IPs, node ports.
        let has_external = !sp.external_ips.is_empty() || sp.node_port.is_some();
        if has_external && sp.external_endpoints.is_empty() {
            for ip in &sp.external_ips {
                reject.push(format!(
                    "-A KUBE-SERVICES {comment} has no endpoints\" -d {ip}/32 -p {p} -m {p} --dport {port} -j REJECT --reject-with icmp-port-unreachable"
                ));
            }
            if let Some(np) = sp.node_port {
                reject_external.push(format!(
                    "-A KUBE-EXTERNAL-SERVICES {comment} has no endpoints\" -m addrtype --dst-type LOCAL -p {p} -m {p} --dport {np} -j REJECT --reject-with icmp-port-unreachable"
                ));
            }
        } else if has_external {
            let chain = ext_chain(name, sp.protocol);
            for ip in &sp.external_ips {
                services.push(format!("-A KUBE-SERVICES {comment} external IP\" -d {ip}/32 -p {p} -m {p} --dport {port} -j {chain}"));
            }
            if let Some(np) = sp.node_port {
                nodeports.push(format!("-A KUBE-NODEPORTS {comment}\" -p {p} -m {p} --dport {np} -j {chain}"));
            }
            let rules = if sp.external_local {
                // The client's address is kept, except for the node's own connections (127.0.0.1
                // cannot be answered from a pod).
                vec![format!("-A {chain} {comment} local traffic\" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ")]
            } else {
                vec![format!("-A {chain} {comment} masquerade traffic from outside\" -j KUBE-MARK-MASQ")]
            };
            rs.insert((Table::Nat, chain.clone()), rules);
            balance(&mut rs, &chain, name, sp, &sp.external_endpoints);
            seps.extend(sp.external_endpoints.iter().copied());
        }
        for e in &seps {
            endpoint_chain(&mut rs, name, sp, e);
        }
    }
    services.push("-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS".into());
    rs.insert((Table::Nat, "KUBE-SERVICES".into()), services);
    rs.insert((Table::Nat, "KUBE-NODEPORTS".into()), nodeports);
    rs.insert((Table::Nat, "KUBE-MARK-MASQ".into()), vec![format!("-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK:#x}")]);
    rs.insert(
        (Table::Nat, "KUBE-POSTROUTING".into()),
        vec![
            format!("-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK:#x}/{MASQ_MARK:#x} -j RETURN"),
            format!("-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK:#x}"),
            "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully".into(),
        ],
    );
    rs.insert((Table::Filter, "KUBE-SERVICES".into()), reject);
    rs.insert((Table::Filter, "KUBE-EXTERNAL-SERVICES".into()), reject_external);
    rs
}

/// `iptables-restore --noflush` input that declares (and so flushes) `write` with their rules
/// and deletes `remove`.
fn restore(new: &Ruleset, write: &[&(Table, String)], remove: &[&(Table, String)]) -> String {
    let mut s = String::new();
    for table in [Table::Filter, Table::Nat] {
        let w: Vec<_> = write.iter().filter(|k| k.0 == table).collect();
        let r: Vec<_> = remove.iter().filter(|k| k.0 == table).collect();
        if w.is_empty() && r.is_empty() {
            continue;
        }
        let _ = writeln!(s, "*{}", table.name());
        for (_, chain) in w.iter().map(|k| &***k).chain(r.iter().map(|k| &***k)) {
            let _ = writeln!(s, ":{chain} - [0:0]");
        }
        for k in &w {
            for rule in &new[**k] {
                s.push_str(rule);
                s.push('\n');
            }
        }
        for (_, chain) in r.iter().map(|k| &***k) {
            let _ = writeln!(s, "-X {chain}");
        }
        s.push_str("COMMIT\n");
    }
    s
}

/// Every chain of `new`, and the deletion of `stale` chains found on the node.
pub fn full(new: &Ruleset, stale: &[(Table, String)]) -> String {
    let write: Vec<_> = new.keys().collect();
    let remove: Vec<_> = stale.iter().filter(|k| !new.contains_key(k)).collect();
    restore(new, &write, &remove)
}

/// Only the chains that differ between `old` and `new`; empty when nothing does.
pub fn delta(old: &Ruleset, new: &Ruleset) -> String {
    let write: Vec<_> = new.iter().filter(|(k, v)| old.get(*k) != Some(*v)).map(|(k, _)| k).collect();
    let remove: Vec<_> = old.keys().filter(|k| !new.contains_key(*k)).collect();
    restore(new, &write, &remove)
}

/// The backend's chains present in `iptables-save` output.
pub fn chains_in_save(table: Table, save: &str) -> Vec<(Table, String)> {
    save.lines().filter_map(|l| l.strip_prefix(':')).filter_map(|l| l.split_whitespace().next()).filter(|c| owned(c)).map(|c| (table, c.to_string())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::build;
    use crate::model::tests::{golden, service, slice};
    use serde_json::json;

    fn model(web_endpoints: &[&str]) -> Model {
        let web = service(
            "web",
            json!({"type": "NodePort", "clusterIP": "10.96.0.20", "sessionAffinity": "ClientIP", "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
        );
        let dns = service("dns", json!({"clusterIP": "10.96.0.10", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}));
        let eps: Vec<_> = web_endpoints.iter().map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}})).collect();
        let web_eps = slice("web", json!([{"name": "http", "port": 8080}]), json!(eps));
        build([&web, &dns], [&web_eps], "a")
    }

    #[test]
    fn chain_names_are_stable_and_upstream_shaped() {
        let n = PortName { namespace: "default".into(), service: "web".into(), port: "http".into() };
        let c = svc_chain(&n, Protocol::Tcp);
        assert_eq!(c.len(), "KUBE-SVC-".len() + 16);
        assert_eq!(c, svc_chain(&n, Protocol::Tcp));
        assert_ne!(c, svc_chain(&n, Protocol::Udp));
    }

    #[test]
    fn full_ruleset_matches_the_golden_file() {
        let o = Options { cluster_cidr: Some("10.244.0.0/16".into()) };
        let rs = ruleset(&model(&["10.244.1.5", "10.244.2.7"]), &o);
        golden("full.iptables", &full(&rs, &[(Table::Nat, "KUBE-SVC-GONEGONEGONEGONE".into())]));
    }

    #[test]
    fn a_change_to_one_service_rewrites_only_its_chains() {
        let o = Options { cluster_cidr: Some("10.244.0.0/16".into()) };
        let old = ruleset(&model(&["10.244.1.5", "10.244.2.7"]), &o);
        let new = ruleset(&model(&["10.244.1.5"]), &o);
        let d = delta(&old, &new);
        golden("delta-scale-down.iptables", &d);
        assert!(!d.contains("10.96.0.10") && !d.contains(":KUBE-SERVICES"), "the other service and the portals are untouched: {d}");
        assert!(d.contains("-X KUBE-SEP-"), "the gone endpoint's chain is deleted: {d}");
        assert_eq!(delta(&old, &old), "", "no change, no transaction");
    }

    #[test]
    fn no_endpoints_reject_in_the_filter_table() {
        let rs = ruleset(&model(&[]), &Options::default());
        let f = &rs[&(Table::Filter, "KUBE-SERVICES".to_string())];
        assert!(f.iter().any(|r| r.contains("-d 10.96.0.20/32") && r.contains("REJECT")), "{f:?}");
        let e = &rs[&(Table::Filter, "KUBE-EXTERNAL-SERVICES".to_string())];
        assert!(e.iter().any(|r| r.contains("--dport 30080") && r.contains("REJECT")), "{e:?}");
        assert!(!rs.keys().any(|(_, c)| c.starts_with("KUBE-SEP-")));
    }
}
