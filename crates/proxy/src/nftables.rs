//! The nftables backend. Upstream's nftables proxy gives every service and endpoint a chain,
//! and the kernel re-validates all of them on each transaction: with 10,000 services a
//! one-service change costs ~150 ms. Here the rules are fixed and the services are data:
//!
//! - `svc_N` (and `ext_N`, `extl_N` for external/LB addresses, `np_N`, `npl_N` for node ports):
//!   sets of `address . protocol . port` whose service has N endpoints; one rule per set
//!   DNATs to `endpoints[address . protocol . port . (numgen random mod N)]`.
//! - `endpoints` / `np_endpoints`: verdict-free maps from (key, slot) to endpoint address and port.
//! - `no_endpoints`, `np_none`: service ports without endpoints, rejected as upstream does.
//! - `hairpin`: (endpoint, endpoint) pairs, masqueraded so a pod reaching itself through its
//!   service gets the answer back through NAT.
//!
//! - `ext_masq`, `np_masq`: external addresses and node ports whose traffic is masqueraded
//!   (externalTrafficPolicy Cluster), marked before any DNAT.
//! - `affinity_T` (`np_affinity_T` for node ports): addresses of sessionAffinity ClientIP
//!   services with timeout T. The
//!   first packet of a connection to one records `client . service : endpoint` in the dynamic
//!   map `affinity` (from the packet path, after the DNAT), and later connections from that
//!   client are DNATed from there. Entries expire after T; when an endpoint of such a service
//!   goes, the map is flushed (every client picks again) rather than tracked per endpoint.
//!
//! A change is then a handful of element additions and deletions in one `nft -f` transaction;
//! only a service with more endpoints than any rule covers needs the table rebuilt.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;

use crate::model::{Change, Endpoint, Model, Protocol, ServicePort};

/// Mark bit of packets to masquerade (upstream's 0x4000).
pub const MASQ_MARK: u32 = 0x4000;
/// Rules exist for at least this many endpoints per service.
const MIN_SLOTS: usize = 16;

#[derive(Debug, Clone)]
pub struct Options {
    pub table: String,
    /// The pod network (`--cluster-cidr`): traffic to a cluster IP from outside it is
    /// masqueraded, so answers come back through this node.
    pub cluster_cidr: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options { table: "r8s-proxy".into(), cluster_cidr: None }
    }
}

/// (set or map name, element text)
pub type Element = (&'static str, String);

fn proto(p: Protocol) -> &'static str {
    p.nft()
}

fn ep(e: &Endpoint) -> String {
    format!("{} . {}", e.ip, e.port)
}

fn slot_sets(sp: &ServicePort, addr: std::net::Ipv4Addr, external: bool, out: &mut BTreeSet<Element>) {
    let key = format!("{addr} . {} . {}", proto(sp.protocol), sp.port);
    let eps = if external { &sp.external_endpoints } else { &sp.cluster_endpoints };
    if eps.is_empty() {
        out.insert(("no_endpoints", key));
        return;
    }
    let set = match (external, sp.external_local) {
        (false, _) => "svc",
        (true, false) => "ext",
        (true, true) => "extl",
    };
    out.insert((set_name(set, eps.len()), key.clone()));
    for (i, e) in eps.iter().enumerate() {
        out.insert(("endpoints", format!("{key} . {i} : {}", ep(e))));
    }
}

/// Set names are static strings so elements stay cheap to compare; counts beyond the
/// precomputed ones are leaked once each (there are few distinct counts).
fn set_name(kind: &str, n: usize) -> &'static str {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<HashMap<(String, usize), &'static str>>> = OnceLock::new();
    let mut names = NAMES.get_or_init(Default::default).lock().unwrap();
    names.entry((kind.to_string(), n)).or_insert_with(|| Box::leak(format!("{kind}_{n}").into_boxed_str()))
}

/// Every element the model puts in the table's sets and maps.
pub fn elements(model: &Model) -> BTreeSet<Element> {
    model.values().flat_map(sp_elements).collect()
}

/// The elements one service port puts in the table.
fn sp_elements(sp: &ServicePort) -> BTreeSet<Element> {
    let mut out = BTreeSet::new();
    {
        for a in &sp.cluster_ips {
            out.insert(("cluster_ips", a.to_string()));
            slot_sets(sp, *a, false, &mut out);
            if let Some(t) = sp.affinity_timeout {
                out.insert((set_name("affinity", t as usize), format!("{a} . {} . {}", proto(sp.protocol), sp.port)));
            }
        }
        let reachable_from_outside = !sp.external_endpoints.is_empty();
        for a in &sp.external_ips {
            slot_sets(sp, *a, true, &mut out);
            let key = format!("{a} . {} . {}", proto(sp.protocol), sp.port);
            if reachable_from_outside && !sp.external_local {
                out.insert(("ext_masq", key.clone()));
            }
            if let (Some(t), true) = (sp.affinity_timeout, reachable_from_outside) {
                out.insert((set_name("affinity", t as usize), key));
            }
        }
        if let Some(np) = sp.node_port {
            let key = format!("{} . {np}", proto(sp.protocol));
            let eps = &sp.external_endpoints;
            if eps.is_empty() {
                out.insert(("np_none", key));
            } else {
                if !sp.external_local {
                    out.insert(("np_masq", key.clone()));
                }
                if let Some(t) = sp.affinity_timeout {
                    out.insert((set_name("np_affinity", t as usize), key.clone()));
                }
                out.insert((set_name(if sp.external_local { "npl" } else { "np" }, eps.len()), key.clone()));
                for (i, e) in eps.iter().enumerate() {
                    out.insert(("np_endpoints", format!("{key} . {i} : {}", ep(e))));
                }
            }
        }
        for e in sp.cluster_endpoints.iter().chain(&sp.external_endpoints) {
            out.insert(("hairpin", format!("{0} . {0}", e.ip)));
        }
    }
    out
}

/// The largest endpoint count the rules must cover.
fn slots(model: &Model) -> usize {
    model.values().map(|s| s.cluster_endpoints.len().max(s.external_endpoints.len())).max().unwrap_or(0).max(MIN_SLOTS)
}

/// The affinity timeouts the rules must cover.
fn affinity_timeouts(model: &Model) -> BTreeSet<u32> {
    model.values().filter_map(|s| s.affinity_timeout).collect()
}

/// (client-independent) affinity targets: a change that drops one of these invalidates what
/// clients have recorded.
fn affinity_targets(model: &Model) -> BTreeSet<(std::net::Ipv4Addr, Protocol, u16, Endpoint)> {
    let mut out = BTreeSet::new();
    for sp in model.values().filter(|s| s.affinity_timeout.is_some()) {
        for a in &sp.cluster_ips {
            for e in &sp.cluster_endpoints {
                out.insert((*a, sp.protocol, sp.port, *e));
            }
        }
        for a in &sp.external_ips {
            for e in &sp.external_endpoints {
                out.insert((*a, sp.protocol, sp.port, *e));
            }
        }
        // Node ports, on whatever local address: keyed by the port alone.
        for (np, e) in sp.node_port.iter().flat_map(|np| sp.external_endpoints.iter().map(move |e| (*np, e))) {
            out.insert((std::net::Ipv4Addr::UNSPECIFIED, sp.protocol, np, *e));
        }
    }
    out
}

/// The whole table, replacing any previous one, in one transaction, and what it holds.
pub fn full(model: &Model, o: &Options) -> (String, Applied) {
    (full_text(model, o), Applied::of(model))
}

fn full_text(model: &Model, o: &Options) -> String {
    let t = &o.table;
    let n = slots(model);
    let timeouts = affinity_timeouts(model);
    let mut s = String::new();
    // Declaring the table first makes the delete valid when it does not exist yet.
    let _ = writeln!(s, "add table ip {t}\ndelete table ip {t}\ntable ip {t} {{");
    let svc_key = "typeof ip daddr . meta l4proto . th dport";
    let np_key = "typeof meta l4proto . th dport";
    let _ = writeln!(s, "  set cluster_ips {{ typeof ip daddr; }}");
    let _ = writeln!(s, "  set no_endpoints {{ {svc_key}; }}");
    let _ = writeln!(s, "  set np_none {{ {np_key}; }}");
    let _ = writeln!(s, "  set hairpin {{ typeof ip saddr . ip daddr; }}");
    let _ = writeln!(s, "  map endpoints {{ typeof ip daddr . meta l4proto . th dport . numgen random mod 1 : ip daddr . th dport; }}");
    let _ = writeln!(s, "  map np_endpoints {{ typeof meta l4proto . th dport . numgen random mod 1 : ip daddr . th dport; }}");
    for i in 1..=n {
        for kind in ["svc", "ext", "extl"] {
            let _ = writeln!(s, "  set {kind}_{i} {{ {svc_key}; }}");
        }
        for kind in ["np", "npl"] {
            let _ = writeln!(s, "  set {kind}_{i} {{ {np_key}; }}");
        }
    }
    let _ = writeln!(
        s,
        "  map affinity {{ typeof ip saddr . ip daddr . meta l4proto . th dport : ip daddr . th dport; size 65535; flags dynamic,timeout; timeout 3h; }}"
    );
    for t in &timeouts {
        let _ = writeln!(s, "  set affinity_{t} {{ {svc_key}; }}");
        let _ = writeln!(s, "  set np_affinity_{t} {{ {np_key}; }}");
    }
    // Traffic from outside that the cluster-wide policy may send to another node: masqueraded
    // (marked here, before the affinity lookup can DNAT it).
    let _ = writeln!(s, "  set ext_masq {{ {svc_key}; }}");
    let _ = writeln!(s, "  set np_masq {{ {np_key}; }}");
    let masq = format!("meta mark set meta mark | {MASQ_MARK:#x}");
    let _ = writeln!(s, "  chain services {{");
    if let Some(cidr) = &o.cluster_cidr {
        let _ = writeln!(s, "    ip saddr != {cidr} ip daddr @cluster_ips {masq}");
    }
    let svc = "ip daddr . meta l4proto . th dport";
    let _ = writeln!(s, "    {svc} @ext_masq {masq}");
    let _ = writeln!(s, "    fib daddr type local meta l4proto . th dport @np_masq {masq}");
    // A client with a recorded endpoint goes back to it.
    let _ = writeln!(s, "    ip saddr . {svc} @affinity dnat ip to ip saddr . {svc} map @affinity");
    for i in 1..=n {
        let _ = writeln!(s, "    {svc} @svc_{i} dnat ip to {svc} . numgen random mod {i} map @endpoints");
        let _ = writeln!(s, "    {svc} @ext_{i} {masq} dnat ip to {svc} . numgen random mod {i} map @endpoints");
        let _ = writeln!(s, "    {svc} @extl_{i} dnat ip to {svc} . numgen random mod {i} map @endpoints");
    }
    let np = "meta l4proto . th dport";
    for i in 1..=n {
        let _ = writeln!(s, "    fib daddr type local {np} @np_{i} {masq} dnat ip to {np} . numgen random mod {i} map @np_endpoints");
        let _ = writeln!(s, "    fib daddr type local {np} @npl_{i} dnat ip to {np} . numgen random mod {i} map @np_endpoints");
    }
    let _ = writeln!(s, "  }}");
    let _ = writeln!(s, "  chain nat_prerouting {{ type nat hook prerouting priority -100; jump services; }}");
    let _ = writeln!(s, "  chain nat_output {{ type nat hook output priority -100; jump services; }}");
    let _ = writeln!(
        s,
        "  chain nat_postrouting {{ type nat hook postrouting priority 100; meta mark & {MASQ_MARK:#x} == {MASQ_MARK:#x} masquerade; ct status dnat ip saddr . ip daddr @hairpin masquerade; }}"
    );
    // No endpoints: refuse at once (ICMP port unreachable) instead of letting packets wander.
    let reject = format!("{svc} @no_endpoints reject");
    let np_reject = format!("fib daddr type local {np} @np_none reject");
    let _ = writeln!(s, "  chain filter_output {{ type filter hook output priority -10; {reject}; {np_reject}; }}");
    // Before routing: a node without a route to the service range still refuses.
    let _ = writeln!(s, "  chain filter_prerouting {{ type filter hook prerouting priority -110; {reject}; }}");
    let _ = writeln!(s, "  chain filter_input {{ type filter hook input priority -10; {np_reject}; }}");
    // Affinity is recorded once the DNAT has chosen (priority after dstnat), from pods and
    // from the node itself.
    let mut record = String::new();
    for t in &timeouts {
        for p in ["tcp", "udp", "sctp"] {
            let orig = "ct original ip daddr . meta l4proto . ct original proto-dst";
            let _ = write!(
                record,
                " meta l4proto {p} ct state new ct status dnat {orig} @affinity_{t} update @affinity {{ ip saddr . {orig} timeout {t}s : ip daddr . th dport }};"
            );
            let _ = write!(
                record,
                " meta l4proto {p} ct state new ct status dnat meta l4proto . ct original proto-dst @np_affinity_{t} update @affinity {{ ip saddr . {orig} timeout {t}s : ip daddr . th dport }};"
            );
        }
    }
    if !record.is_empty() {
        let _ = writeln!(s, "  chain affinity_prerouting {{ type filter hook prerouting priority -90;{record} }}");
        let _ = writeln!(s, "  chain affinity_output {{ type filter hook output priority -90;{record} }}");
    }
    let _ = writeln!(s, "}}");
    let els = elements(model);
    write_elements(&mut s, "add", t, els.iter());
    s
}

fn write_elements<'a>(s: &mut String, verb: &str, table: &str, els: impl Iterator<Item = &'a Element>) {
    // One statement per set keeps the transaction short.
    let mut current: Option<&str> = None;
    for (set, el) in els {
        if current != Some(set) {
            if current.is_some() {
                s.push_str(" }\n");
            }
            let _ = write!(s, "{verb} element ip {table} {set} {{ {el}");
            current = Some(set);
        } else {
            let _ = write!(s, ", {el}");
        }
    }
    if current.is_some() {
        s.push_str(" }\n");
    }
}

/// What the kernel's table holds once a transaction from here went in: each element with the
/// number of service ports that need it (two services may share an element, such as a hairpin
/// pair), and what the fixed rules cover.
#[derive(Debug, Default)]
pub struct Applied {
    counts: HashMap<Element, u32>,
    slots: usize,
    timeouts: BTreeSet<u32>,
}

impl Applied {
    fn of(model: &Model) -> Applied {
        let mut counts = HashMap::new();
        for sp in model.values() {
            for e in sp_elements(sp) {
                *counts.entry(e).or_insert(0) += 1;
            }
        }
        Applied { counts, slots: slots(model), timeouts: affinity_timeouts(model) }
    }

    /// The transaction for one change (the changed services' entries before and after),
    /// element by element; None when it needs rules the table does not have (more endpoints
    /// than any rule covers, a new affinity timeout). Costs what the change touches.
    pub fn delta(&mut self, change: &Change, o: &Options) -> Option<String> {
        if slots(&change.new) > self.slots || !affinity_timeouts(&change.new).is_subset(&self.timeouts) {
            return None;
        }
        let mut diff: BTreeMap<Element, i64> = BTreeMap::new();
        for sp in change.old.values() {
            for e in sp_elements(sp) {
                *diff.entry(e).or_insert(0) -= 1;
            }
        }
        for sp in change.new.values() {
            for e in sp_elements(sp) {
                *diff.entry(e).or_insert(0) += 1;
            }
        }
        let (mut add, mut del) = (BTreeSet::new(), BTreeSet::new());
        for (e, d) in diff {
            let before = self.counts.get(&e).copied().unwrap_or(0) as i64;
            let after = before + d;
            debug_assert!(after >= 0, "element {e:?} released more than held");
            match (before > 0, after > 0) {
                (false, true) => {
                    add.insert(e.clone());
                }
                (true, false) => {
                    del.insert(e.clone());
                }
                _ => {}
            }
            if after > 0 {
                self.counts.insert(e, after as u32);
            } else {
                self.counts.remove(&e);
            }
        }
        let mut s = String::new();
        if !affinity_targets(&change.old).is_subset(&affinity_targets(&change.new)) {
            let _ = writeln!(s, "flush map ip {} affinity", o.table);
        }
        // Deletions first: a map entry whose value changes is deleted, then added.
        write_elements(&mut s, "delete", &o.table, del.iter());
        write_elements(&mut s, "add", &o.table, add.iter());
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::build;
    use crate::model::tests::{golden, service, slice};
    use serde_json::json;

    fn two_services() -> Model {
        let web = service(
            "web",
            json!({"type": "NodePort", "clusterIP": "10.96.0.20", "sessionAffinity": "ClientIP", "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
        );
        let dns = service("dns", json!({"clusterIP": "10.96.0.10", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}));
        let web_eps = slice(
            "web",
            json!([{"name": "http", "port": 8080}]),
            json!([{"addresses": ["10.244.1.5"], "conditions": {"ready": true}}, {"addresses": ["10.244.2.7"], "conditions": {"ready": true}}]),
        );
        build([&web, &dns], [&web_eps], "a")
    }

    #[test]
    fn full_ruleset_matches_the_golden_file() {
        let o = Options { table: "r8s-proxy".into(), cluster_cidr: Some("10.244.0.0/16".into()) };
        golden("full.nft", &full(&two_services(), &o).0);
    }

    #[test]
    fn a_change_to_one_service_touches_only_its_elements() {
        let o = Options::default();
        let old = two_services();
        let mut new = old.clone();
        let web = new.values_mut().find(|s| s.port == 80).unwrap();
        web.cluster_endpoints.truncate(1);
        web.external_endpoints.truncate(1);
        let (_, mut applied) = full(&old, &o);
        let d = applied.delta(&Change { old: old.clone(), new: new.clone() }, &o).unwrap();
        golden("delta-scale-down.nft", &d);
        assert!(!d.contains("10.96.0.10"), "the other service is untouched: {d}");
        assert!(d.starts_with("flush map ip r8s-proxy affinity"), "an affinity service lost an endpoint: clients pick again: {d}");
        assert_eq!(applied.delta(&Change { old: new.clone(), new: new.clone() }, &o).unwrap(), "", "no change, no transaction");
        // Back again: the elements return, and the table's counts match a fresh full sync.
        applied.delta(&Change { old: new, new: old.clone() }, &o).unwrap();
        assert_eq!(applied.counts, full(&old, &o).1.counts);
    }

    #[test]
    fn an_element_two_services_share_stays_until_both_let_go() {
        let o = Options::default();
        let old = two_services();
        let mut new = old.clone();
        // A second service selecting the same pods: the hairpin pairs are shared.
        let (k, mut v) = new.iter().find(|(_, s)| s.port == 80).map(|(k, v)| (k.clone(), v.clone())).unwrap();
        v.cluster_ips = vec!["10.96.0.21".parse().unwrap()];
        v.node_port = None;
        let k2 = crate::model::PortName { service: "web2".into(), ..k };
        new.insert(k2.clone(), v.clone());
        let (_, mut applied) = full(&new, &o);
        let gone = Model::from([(k2, v)]);
        let d = applied.delta(&Change { old: gone, new: Model::new() }, &o).unwrap();
        assert!(d.contains("10.96.0.21") && !d.contains("hairpin"), "web still needs the hairpin pairs: {d}");
    }

    #[test]
    fn more_endpoints_than_the_rules_cover_needs_a_full_sync() {
        let old = two_services();
        let mut new = old.clone();
        let web = new.values_mut().find(|s| s.port == 80).unwrap();
        web.cluster_endpoints = (0..40).map(|i| Endpoint { ip: std::net::Ipv4Addr::new(10, 244, 3, i), port: 8080 }).collect();
        let (_, mut applied) = full(&old, &Options::default());
        assert!(applied.delta(&Change { old, new: new.clone() }, &Options::default()).is_none());
        assert!(full(&new, &Options::default()).0.contains("set svc_40 "));
    }
}
