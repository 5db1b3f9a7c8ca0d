//! Plugins whose state spans the whole cluster (the simple per-node ones live in framework.rs).

pub mod interpod;
pub mod spread;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Which namespaces an affinity term's selector applies to.
pub struct TermNamespaces {
    names: Vec<String>,
    selector: Option<LabelSelector>,
}

impl TermNamespaces {
    pub fn new(pod_ns: &str, names: Option<&Vec<String>>, selector: Option<&LabelSelector>) -> Self {
        let mut names = names.cloned().unwrap_or_default();
        if names.is_empty() && selector.is_none() {
            names.push(pod_ns.to_string());
        }
        TermNamespaces { names, selector: selector.cloned() }
    }

    pub fn matches(&self, ns: &str, ns_labels: &dyn Fn(&str) -> BTreeMap<String, String>) -> bool {
        self.names.iter().any(|n| n == ns) || self.selector.as_ref().is_some_and(|s| r8s_api::matching::selector_matches(s, &ns_labels(ns)))
    }
}

pub fn is_terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}
