//! PodTopologySpread: required (DoNotSchedule) and preferred (ScheduleAnyway) constraints,
//! plus upstream's default constraints for pods with a controller (hostname maxSkew 3, zone
//! maxSkew 5, ScheduleAnyway) that replace the old SelectorSpread.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;

use super::is_terminating;
use crate::cache::{Cache, NodeInfo};
use crate::framework::{Code, MAX_NODE_SCORE, Reject, node_affinity_matches};
use r8s_api::matching::selector_matches;

enum Selector {
    Labels(LabelSelector),
    /// Default spreading: pods with the same controller.
    Owner(String),
}

struct Constraint {
    key: String,
    max_skew: i64,
    required: bool,
    selector: Selector,
    /// Matching pods per domain (domains without any are absent).
    counts: HashMap<String, i64>,
    /// How many eligible domains there are.
    domains: usize,
    /// The smallest domain count (computed once per cycle: filter runs per node).
    min: i64,
    self_match: i64,
}

#[derive(Default)]
pub struct State {
    constraints: Vec<Constraint>,
}

const HOSTNAME: &str = "kubernetes.io/hostname";
const ZONE: &str = "topology.kubernetes.io/zone";

fn matches(sel: &Selector, p: &Pod) -> bool {
    match sel {
        Selector::Labels(s) => selector_matches(s, p.labels()),
        Selector::Owner(uid) => p.owner_references().iter().any(|o| o.controller == Some(true) && &o.uid == uid),
    }
}

impl State {
    pub fn new(pod: &Arc<Pod>, cache: &Cache, gone: &HashSet<String>) -> State {
        let spec = pod.spec.as_ref();
        let mut constraints: Vec<Constraint> = spec
            .and_then(|s| s.topology_spread_constraints.as_ref())
            .into_iter()
            .flatten()
            .map(|c| {
                let mut sel = c.label_selector.clone().unwrap_or_default();
                // matchLabelKeys: the pod's own values for those keys join the selector.
                for k in c.match_label_keys.iter().flatten() {
                    if let Some(v) = pod.labels().get(k) {
                        sel.match_labels.get_or_insert_with(Default::default).insert(k.clone(), v.clone());
                    }
                }
                Constraint {
                    key: c.topology_key.clone(),
                    max_skew: c.max_skew as i64,
                    required: c.when_unsatisfiable == "DoNotSchedule",
                    selector: Selector::Labels(sel),
                    counts: HashMap::new(),
                    domains: 0,
                    min: 0,
                    self_match: 0,
                }
            })
            .collect();
        if constraints.is_empty()
            && let Some(owner) = pod
                .owner_references()
                .iter()
                .find(|o| o.controller == Some(true) && ["ReplicaSet", "ReplicationController", "StatefulSet"].contains(&o.kind.as_str()))
        {
            for (key, skew) in [(HOSTNAME, 3), (ZONE, 5)] {
                constraints.push(Constraint {
                    key: key.into(),
                    max_skew: skew,
                    required: false,
                    selector: Selector::Owner(owner.uid.clone()),
                    counts: HashMap::new(),
                    domains: 0,
                    min: 0,
                    self_match: 0,
                });
            }
        }
        if constraints.is_empty() {
            return State::default();
        }
        let ns = pod.namespace().unwrap_or_default();
        for c in constraints.iter_mut() {
            c.self_match = matches(&c.selector, pod) as i64;
        }
        let spec = pod.spec.as_ref();
        let pinned = spec
            .is_some_and(|s| s.node_selector.as_ref().is_some_and(|m| !m.is_empty()) || s.affinity.as_ref().and_then(|a| a.node_affinity.as_ref()).is_some());
        for c in constraints.iter_mut() {
            // Eligible domains: every node's, or (nodeAffinityPolicy Honor) only those of the
            // nodes the pod may go to.
            let eligible: Option<std::collections::HashSet<String>> = pinned.then(|| {
                cache
                    .nodes
                    .values()
                    .filter_map(|info| {
                        let node = info.node.as_ref()?;
                        let v = info.labels.get(&c.key)?;
                        node_affinity_matches(pod, &node.name_any(), &info.labels).then(|| v.clone())
                    })
                    .collect()
            });
            c.domains = eligible.as_ref().map_or_else(|| cache.domain_count(&c.key), |e| e.len());
            let members = match &c.selector {
                Selector::Labels(s) => cache.pods_matching(s),
                Selector::Owner(uid) => cache.pods_owned_by(uid),
            };
            for (info, p) in members {
                if info.node.is_none() || is_terminating(p) || gone.contains(&p.uid().unwrap_or_default()) || p.namespace().as_deref() != Some(ns.as_str()) {
                    continue;
                }
                if let Some(v) = info.labels.get(&c.key)
                    && eligible.as_ref().is_none_or(|e| e.contains(v))
                {
                    *c.counts.entry(v.clone()).or_insert(0) += 1;
                }
            }
        }
        // Default constraints on a key no node has are dropped (e.g. no zones).
        constraints.retain(|c| c.required || c.domains > 0);
        for c in constraints.iter_mut() {
            // Some domain without matching pods makes the minimum zero.
            c.min = if c.counts.len() < c.domains { 0 } else { c.counts.values().copied().min().unwrap_or(0) };
        }
        State { constraints }
    }

    pub fn filter(&self, node: &NodeInfo) -> Result<(), Reject> {
        for c in self.constraints.iter().filter(|c| c.required) {
            let Some(v) = node.labels.get(&c.key) else {
                return Err(Reject::new(Code::UnresolvableAndUnschedulable, "node(s) didn't match pod topology spread constraints (missing required label)"));
            };
            let skew = c.counts.get(v).copied().unwrap_or(0) + c.self_match - c.min;
            if skew > c.max_skew {
                return Err(Reject::new(Code::Unschedulable, "node(s) didn't match pod topology spread constraints"));
            }
        }
        Ok(())
    }

    /// Fewer matching pods in the node's domains is better; each constraint weighs
    /// log(domains + 2), normalised as upstream (100 * (max + min - s) / max).
    pub fn scores(&self, nodes: &[&NodeInfo]) -> Option<Vec<i64>> {
        let soft: Vec<&Constraint> = self.constraints.iter().filter(|c| !c.required).collect();
        if soft.is_empty() {
            return None;
        }
        let raw: Vec<Option<f64>> = nodes
            .iter()
            .map(|n| {
                let mut s = 0.0;
                for c in &soft {
                    let v = n.labels.get(&c.key)?;
                    let w = ((c.domains + 2) as f64).ln();
                    s += c.counts.get(v).copied().unwrap_or(0) as f64 * w;
                }
                Some(s)
            })
            .collect();
        let vals: Vec<f64> = raw.iter().flatten().copied().collect();
        let max = vals.iter().copied().fold(0.0, f64::max);
        let min = vals.iter().copied().fold(f64::MAX, f64::min);
        Some(
            raw.iter()
                .map(|s| match s {
                    None => 0,
                    Some(_) if max == 0.0 => MAX_NODE_SCORE,
                    Some(s) => (MAX_NODE_SCORE as f64 * (max + min - s) / max) as i64,
                })
                .collect(),
        )
    }
}
