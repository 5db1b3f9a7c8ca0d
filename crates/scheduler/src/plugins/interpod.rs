//! InterPodAffinity: required and preferred pod affinity and anti-affinity over topology
//! domains, including existing pods' anti-affinity against the incoming pod (symmetry).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm};
use kube::ResourceExt;

use super::{TermNamespaces, is_terminating};
use crate::cache::{Cache, NodeInfo};
use crate::framework::{Code, MAX_NODE_SCORE, Reject};
use r8s_api::matching::selector_matches;

struct Term {
    term: PodAffinityTerm,
    ns: TermNamespaces,
    weight: i64,
    /// topology value -> matching pods in that domain
    counts: HashMap<String, i64>,
}

impl Term {
    fn matches(&self, p: &Pod, ns_labels: &dyn Fn(&str) -> BTreeMap<String, String>) -> bool {
        self.ns.matches(&p.namespace().unwrap_or_default(), ns_labels) && self.term.label_selector.as_ref().is_some_and(|s| selector_matches(s, p.labels()))
    }
}

#[derive(Default)]
pub struct State {
    affinity: Vec<Term>,
    anti: Vec<Term>,
    preferred: Vec<Term>,
    /// (topologyKey, value) domains where an existing pod's required anti-affinity forbids us.
    existing_anti: Vec<(String, String)>,
    /// No pod anywhere matches the affinity terms, but the pod matches them itself: the first
    /// pod of a group may go anywhere (upstream).
    first_of_group: bool,
}

impl State {
    pub fn new(pod: &Arc<Pod>, cache: &Cache, ns_labels: &dyn Fn(&str) -> BTreeMap<String, String>, gone: &HashSet<String>) -> State {
        let ns = pod.namespace().unwrap_or_default();
        let mk = |t: &PodAffinityTerm, weight: i64| Term {
            ns: TermNamespaces::new(&ns, t.namespaces.as_ref(), t.namespace_selector.as_ref()),
            term: t.clone(),
            weight,
            counts: HashMap::new(),
        };
        let aff = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
        let pa = aff.and_then(|a| a.pod_affinity.as_ref());
        let paa = aff.and_then(|a| a.pod_anti_affinity.as_ref());
        let mut st = State {
            affinity: pa.and_then(|p| p.required_during_scheduling_ignored_during_execution.as_ref()).into_iter().flatten().map(|t| mk(t, 1)).collect(),
            anti: paa.and_then(|p| p.required_during_scheduling_ignored_during_execution.as_ref()).into_iter().flatten().map(|t| mk(t, 1)).collect(),
            ..Default::default()
        };
        st.preferred = pa
            .and_then(|p| p.preferred_during_scheduling_ignored_during_execution.as_ref())
            .into_iter()
            .flatten()
            .map(|w| mk(&w.pod_affinity_term, w.weight as i64))
            .chain(
                paa.and_then(|p| p.preferred_during_scheduling_ignored_during_execution.as_ref())
                    .into_iter()
                    .flatten()
                    .map(|w| mk(&w.pod_affinity_term, -(w.weight as i64))),
            )
            .collect();
        // Existing pods' required anti-affinity against us, one check per group of identical
        // terms (or pod by pod when some pods are to be ignored, for preemption).
        let against_us = |owner_ns: &str, t: &PodAffinityTerm| {
            let tn = TermNamespaces::new(owner_ns, t.namespaces.as_ref(), t.namespace_selector.as_ref());
            tn.matches(&ns, ns_labels) && t.label_selector.as_ref().is_some_and(|s| selector_matches(s, pod.labels()))
        };
        if gone.is_empty() {
            for g in cache.anti.values() {
                if !against_us(&g.owner_ns, &g.term) {
                    continue;
                }
                for node in g.nodes.keys() {
                    if let Some(v) = cache.nodes.get(node).and_then(|n| n.labels.get(&g.term.topology_key)) {
                        st.existing_anti.push((g.term.topology_key.clone(), v.clone()));
                    }
                }
            }
        } else {
            for info in cache.nodes.values() {
                for e in info.pods.values().filter(|e| !gone.contains(&e.pod.uid().unwrap_or_default())) {
                    let terms = e
                        .pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.affinity.as_ref())
                        .and_then(|a| a.pod_anti_affinity.as_ref())
                        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref());
                    for t in terms.into_iter().flatten() {
                        if against_us(&e.pod.namespace().unwrap_or_default(), t)
                            && let Some(v) = info.labels.get(&t.topology_key)
                        {
                            st.existing_anti.push((t.topology_key.clone(), v.clone()));
                        }
                    }
                }
            }
        }
        // Matching pods per topology domain for each of our terms.
        for term in st.affinity.iter_mut().chain(st.anti.iter_mut()).chain(st.preferred.iter_mut()) {
            let Some(sel) = term.term.label_selector.clone() else {
                continue;
            };
            for (info, p) in cache.pods_matching(&sel) {
                if info.node.is_none()
                    || is_terminating(p)
                    || gone.contains(&p.uid().unwrap_or_default())
                    || !term.ns.matches(&p.namespace().unwrap_or_default(), ns_labels)
                {
                    continue;
                }
                if let Some(v) = info.labels.get(&term.term.topology_key) {
                    *term.counts.entry(v.clone()).or_insert(0) += 1;
                }
            }
        }
        st.first_of_group = !st.affinity.is_empty() && st.affinity.iter().all(|t| t.counts.is_empty()) && st.affinity.iter().all(|t| t.matches(pod, ns_labels));
        st
    }

    /// Upstream's order: the pod's affinity, its anti-affinity, then existing pods' anti-affinity.
    pub fn filter(&self, node: &NodeInfo) -> Result<(), Reject> {
        if !self.first_of_group {
            for t in &self.affinity {
                let ok = node.labels.get(&t.term.topology_key).is_some_and(|v| t.counts.get(v).copied().unwrap_or(0) > 0);
                if !ok {
                    return Err(Reject::new(Code::UnresolvableAndUnschedulable, "node(s) didn't match pod affinity rules"));
                }
            }
        }
        for t in &self.anti {
            if node.labels.get(&t.term.topology_key).is_some_and(|v| t.counts.get(v).copied().unwrap_or(0) > 0) {
                return Err(Reject::new(Code::Unschedulable, "node(s) didn't match pod anti-affinity rules"));
            }
        }
        for (k, v) in &self.existing_anti {
            if node.labels.get(k) == Some(v) {
                return Err(Reject::new(Code::Unschedulable, "node(s) didn't satisfy existing pods anti-affinity rules"));
            }
        }
        Ok(())
    }

    /// Preferred terms: +weight per matching pod in the node's domain (anti: -weight),
    /// normalised to 0..100 between the lowest and highest node.
    pub fn scores(&self, nodes: &[&NodeInfo]) -> Option<Vec<i64>> {
        if self.preferred.is_empty() {
            return None;
        }
        let raw: Vec<i64> = nodes
            .iter()
            .map(|n| {
                self.preferred.iter().map(|t| n.labels.get(&t.term.topology_key).map(|v| t.counts.get(v).copied().unwrap_or(0) * t.weight).unwrap_or(0)).sum()
            })
            .collect();
        let (min, max) = (raw.iter().copied().min().unwrap_or(0), raw.iter().copied().max().unwrap_or(0));
        Some(raw.iter().map(|s| if max == min { 0 } else { MAX_NODE_SCORE * (s - min) / (max - min) }).collect())
    }
}
