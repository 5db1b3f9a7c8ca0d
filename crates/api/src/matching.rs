//! Matching of the typed selectors (label selectors, node selector terms) and of tolerations
//! against taints: facts about the API shared by the scheduler and the controllers.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

pub type Labels = BTreeMap<String, String>;

/// A metav1.LabelSelector: an empty selector matches everything.
pub fn selector_matches(sel: &LabelSelector, labels: &Labels) -> bool {
    if let Some(ml) = &sel.match_labels
        && ml.iter().any(|(k, v)| labels.get(k) != Some(v))
    {
        return false;
    }
    sel.match_expressions.iter().flatten().all(|e| {
        let vals = e.values.as_deref().unwrap_or(&[]);
        let got = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => got.is_some_and(|g| vals.contains(g)),
            "NotIn" => got.is_none_or(|g| !vals.contains(g)),
            "Exists" => got.is_some(),
            "DoesNotExist" => got.is_none(),
            _ => false,
        }
    })
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&String>) -> bool {
    let vals = r.values.as_deref().unwrap_or(&[]);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| vals.contains(v)),
        "NotIn" => value.is_none_or(|v| !vals.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (value.and_then(|v| v.parse::<i64>().ok()), vals.first().and_then(|b| b.parse::<i64>().ok())) else {
                return false;
            };
            if r.operator == "Gt" { v > bound } else { v < bound }
        }
        _ => false,
    }
}

/// One node selector term: all its expressions and fields match. A term with neither
/// matches nothing (upstream).
pub fn term_matches(t: &NodeSelectorTerm, node_name: &str, labels: &Labels) -> bool {
    let exprs = t.match_expressions.as_deref().unwrap_or(&[]);
    let fields = t.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let name = node_name.to_string();
    exprs.iter().all(|r| requirement_matches(r, labels.get(&r.key))) && fields.iter().all(|r| r.key == "metadata.name" && requirement_matches(r, Some(&name)))
}

/// Does the toleration tolerate the taint? (An empty key with Exists tolerates everything; an
/// empty effect matches every effect.)
pub fn tolerates(tol: &Toleration, t: &Taint) -> bool {
    let effect_ok = tol.effect.as_deref().is_none_or(|e| e.is_empty() || e == t.effect);
    let key_ok = tol.key.as_deref().is_none_or(|k| k.is_empty()) || tol.key.as_deref() == Some(t.key.as_str());
    let value_ok = match tol.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        _ => tol.value.as_deref().unwrap_or("") == t.value.as_deref().unwrap_or(""),
    };
    effect_ok && key_ok && value_ok
}

/// The InternalIPs of the Ready nodes, sorted: where built-in load balancers (services,
/// ingress) answer.
pub fn ready_node_addresses(nodes: &[std::sync::Arc<k8s_openapi::api::core::v1::Node>]) -> Vec<String> {
    let mut ips: Vec<String> = nodes
        .iter()
        .filter(|n| n.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")))
        .filter_map(|n| n.status.as_ref()?.addresses.as_ref()?.iter().find(|a| a.type_ == "InternalIP").map(|a| a.address.clone()))
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: serde_json::Value) -> Labels {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn selectors() {
        let sel: LabelSelector =
            serde_json::from_value(json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]}))
                .unwrap();
        assert!(selector_matches(&sel, &labels(json!({"app": "web"}))));
        assert!(!selector_matches(&sel, &labels(json!({"app": "web", "tier": "db"}))));
        assert!(selector_matches(&LabelSelector::default(), &labels(json!({}))));
    }

    #[test]
    fn node_terms() {
        let t: NodeSelectorTerm =
            serde_json::from_value(json!({"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]}], "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}))
                .unwrap();
        assert!(term_matches(&t, "n1", &labels(json!({"cores": "8"}))));
        assert!(!term_matches(&t, "n2", &labels(json!({"cores": "8"}))));
        assert!(!term_matches(&t, "n1", &labels(json!({"cores": "2"}))));
        assert!(!term_matches(&NodeSelectorTerm::default(), "n1", &labels(json!({}))));
    }
}
