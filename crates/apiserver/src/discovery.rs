//! Discovery documents (legacy per-group-version lists and aggregated discovery v2), built from
//! the catalog.

use std::collections::BTreeMap;

use r8s_api::ResourceRef;
use serde_json::{Value, json};

use crate::catalog::Catalog;

/// Groups in upstream's discovery order, then the rest (CRD groups) alphabetically.
const GROUP_ORDER: &[&str] = &[
    "",
    "apiregistration.k8s.io",
    "apps",
    "events.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "networking.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "scheduling.k8s.io",
    "coordination.k8s.io",
    "node.k8s.io",
    "discovery.k8s.io",
    "flowcontrol.apiserver.k8s.io",
];

/// One version of a group and its resources.
pub type VersionResources = (String, Vec<ResourceRef>);

/// Group -> versions (preferred first) -> resources.
pub fn grouped(cat: &Catalog) -> Vec<(String, Vec<VersionResources>)> {
    let mut groups: BTreeMap<String, BTreeMap<String, Vec<ResourceRef>>> = BTreeMap::new();
    for r in cat.all() {
        groups.entry(r.group.clone()).or_default().entry(r.version.clone()).or_default().push(r);
    }
    let mut out: Vec<(String, Vec<VersionResources>)> = groups
        .into_iter()
        .map(|(g, versions)| {
            let mut vs: Vec<VersionResources> = versions.into_iter().collect();
            for (_, rs) in vs.iter_mut() {
                rs.sort_by(|a, b| a.plural.cmp(&b.plural));
            }
            // Preferred version first, then by Kubernetes version priority.
            vs.sort_by_key(|(v, rs)| (!rs.iter().any(|r| r.preferred), std::cmp::Reverse(version_priority(v))));
            (g, vs)
        })
        .collect();
    out.sort_by_key(|(g, _)| match GROUP_ORDER.iter().position(|x| x == g) {
        Some(i) => (0, i, String::new()),
        None => (1, 0, g.clone()),
    });
    out
}

/// Orders versions like upstream: GA > beta > alpha, higher numbers first.
pub fn version_priority(v: &str) -> (u8, u32, u32) {
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let num_end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    let major: u32 = rest[..num_end].parse().unwrap_or(0);
    let tail = &rest[num_end..];
    if tail.is_empty() {
        (3, major, 0)
    } else if let Some(b) = tail.strip_prefix("beta") {
        (2, major, b.parse().unwrap_or(0))
    } else if let Some(a) = tail.strip_prefix("alpha") {
        (1, major, a.parse().unwrap_or(0))
    } else {
        (0, major, 0)
    }
}

pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]
    })
}

fn group_entry(g: &str, versions: &[(String, Vec<ResourceRef>)]) -> Value {
    let vs: Vec<Value> = versions.iter().map(|(v, _)| json!({"groupVersion": format!("{g}/{v}"), "version": v})).collect();
    json!({"name": g, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(Value::Null)})
}

pub fn api_group_list(cat: &Catalog) -> Value {
    let groups: Vec<Value> = grouped(cat).iter().filter(|(g, _)| !g.is_empty()).map(|(g, vs)| group_entry(g, vs)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn api_group(cat: &Catalog, group: &str) -> Option<Value> {
    grouped(cat).iter().find(|(g, _)| g == group).map(|(g, vs)| {
        let mut e = group_entry(g, vs);
        e["kind"] = json!("APIGroup");
        e["apiVersion"] = json!("v1");
        e
    })
}

pub fn resource_list(cat: &Catalog, group: &str, version: &str) -> Option<Value> {
    let resources: Vec<ResourceRef> = cat.all().into_iter().filter(|r| r.group == group && r.version == version).collect();
    if resources.is_empty() {
        return None;
    }
    let mut sorted = resources;
    sorted.sort_by(|a, b| a.plural.cmp(&b.plural));
    let mut out = Vec::new();
    for r in &sorted {
        let mut e = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        e["storageVersionHash"] = json!(storage_hash(r));
        out.push(e);
        let mut subs = r.subresources.clone();
        subs.sort_by_key(|s| s.name());
        for s in subs {
            let (kind, g, v, verbs) = s.discovery(&r.kind);
            let mut se = json!({
                "name": format!("{}/{}", r.plural, s.name()),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": if kind.is_empty() { r.kind.as_str() } else { kind },
                "verbs": verbs,
            });
            if !g.is_empty() {
                se["group"] = json!(g);
            }
            if !v.is_empty() && (g != r.group || v != r.version) {
                se["version"] = json!(v);
            }
            out.push(se);
        }
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out}))
}

fn storage_hash(r: &ResourceRef) -> String {
    use base64::Engine;
    let h = format!("{}/{}/{}", r.storage_version, r.kind, r.plural);
    let mut acc = [0u8; 8];
    for (i, b) in h.bytes().enumerate() {
        acc[i % 8] = acc[i % 8].wrapping_mul(31).wrapping_add(b);
    }
    base64::engine::general_purpose::STANDARD.encode(acc)
}

/// Aggregated discovery (apidiscovery.k8s.io/v2) for `/api` (core) or `/apis` (the rest).
pub fn aggregated(cat: &Catalog, core: bool, api_version: &str) -> Value {
    let mut items = Vec::new();
    for (g, versions) in grouped(cat) {
        if g.is_empty() != core {
            continue;
        }
        let vs: Vec<Value> = versions
            .iter()
            .map(|(v, rs)| {
                let resources: Vec<Value> = rs
                    .iter()
                    .map(|r| {
                        let mut e = json!({
                            "resource": r.plural,
                            "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                            "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                            "singularResource": r.singular,
                            "verbs": r.verbs,
                        });
                        if !r.short_names.is_empty() {
                            e["shortNames"] = json!(r.short_names);
                        }
                        if !r.categories.is_empty() {
                            e["categories"] = json!(r.categories);
                        }
                        let mut subs = r.subresources.clone();
                        subs.sort_by_key(|s| s.name());
                        if !subs.is_empty() {
                            e["subresources"] = Value::Array(
                                subs.iter()
                                    .map(|s| {
                                        let (kind, sg, sv, verbs) = s.discovery(&r.kind);
                                        let (kg, kv, kk) =
                                            if kind.is_empty() { (r.group.as_str(), r.version.as_str(), r.kind.as_str()) } else { (sg, sv, kind) };
                                        json!({"subresource": s.name(), "responseKind": {"group": kg, "version": kv, "kind": kk}, "verbs": verbs})
                                    })
                                    .collect(),
                            );
                        }
                        e
                    })
                    .collect();
                json!({"version": v, "resources": resources, "freshness": "Current"})
            })
            .collect();
        let md = if g.is_empty() { json!({"creationTimestamp": null}) } else { json!({"name": g, "creationTimestamp": null}) };
        items.push(json!({"metadata": md, "versions": vs}));
    }
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_order() {
        let mut v = vec!["v1beta1", "v2", "v1", "v1alpha1", "v2beta2"];
        v.sort_by_key(|x| std::cmp::Reverse(version_priority(x)));
        assert_eq!(v, vec!["v2", "v1", "v2beta2", "v1beta1", "v1alpha1"]);
    }
}
