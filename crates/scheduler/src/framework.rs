//! One scheduling cycle: pre-filter (per-pod state), filter every candidate node with the
//! plugins in upstream's order, score the feasible ones with upstream's weights, pick the best.
//! Failure reasons are upstream's strings so the FailedScheduling message reads the same.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use kube::ResourceExt;

use crate::cache::{Cache, NodeInfo, host_ports};
use crate::plugins::{interpod, spread};
use crate::resources::{Resources, pod_requests};

/// Upstream's two kinds of "no": preemption may help, or it cannot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    Unschedulable,
    UnresolvableAndUnschedulable,
}

#[derive(Clone, Debug)]
pub struct Reject {
    pub code: Code,
    pub reasons: Vec<String>,
}

impl Reject {
    pub fn new(code: Code, reason: impl Into<String>) -> Reject {
        Reject { code, reasons: vec![reason.into()] }
    }
}

pub const MAX_NODE_SCORE: i64 = 100;

/// Per-pod state computed once per cycle.
pub struct Cycle {
    pub pod: Arc<Pod>,
    pub req: Resources,
    pub nonzero: Resources,
    pub ports: Vec<(String, String, i32)>,
    pub interpod: interpod::State,
    pub spread: spread::State,
}

impl Cycle {
    pub fn new(pod: Arc<Pod>, cache: &Cache, ns_labels: &dyn Fn(&str) -> BTreeMap<String, String>) -> Cycle {
        Self::without(pod, cache, ns_labels, &HashSet::new())
    }

    /// The cycle as if the pods `gone` (uids) did not exist: what preemption asks.
    pub fn without(pod: Arc<Pod>, cache: &Cache, ns_labels: &dyn Fn(&str) -> BTreeMap<String, String>, gone: &HashSet<String>) -> Cycle {
        let (req, nonzero) = pod_requests(&pod);
        let ports = host_ports(&pod);
        let interpod = interpod::State::new(&pod, cache, ns_labels, gone);
        let spread = spread::State::new(&pod, cache, gone);
        Cycle { pod, req, nonzero, ports, interpod, spread }
    }

    /// Runs the filters in upstream's order, stopping at the first that rejects.
    pub fn filter(&self, node: &NodeInfo) -> Result<(), Reject> {
        let Some(n) = node.node.as_ref() else {
            return Err(Reject::new(Code::UnresolvableAndUnschedulable, "node(s) not found"));
        };
        let spec = self.pod.spec.as_ref();
        // NodeUnschedulable (a pod tolerating the unschedulable taint may still go there).
        if n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
            let t = Taint { key: "node.kubernetes.io/unschedulable".into(), effect: "NoSchedule".into(), ..Default::default() };
            if !tolerated(spec.and_then(|s| s.tolerations.as_deref()).unwrap_or(&[]), &t) {
                return Err(Reject::new(Code::UnresolvableAndUnschedulable, "node(s) were unschedulable"));
            }
        }
        // NodeName
        if let Some(want) = spec.and_then(|s| s.node_name.as_deref()).filter(|s| !s.is_empty())
            && want != n.name_any()
        {
            return Err(Reject::new(Code::UnresolvableAndUnschedulable, "node(s) didn't match the requested node name"));
        }
        // TaintToleration
        taint_filter(n, spec.and_then(|s| s.tolerations.as_deref()).unwrap_or(&[]))?;
        // NodeAffinity
        if !node_affinity_matches(&self.pod, n.name_any().as_str(), &node.labels) {
            return Err(Reject::new(Code::UnresolvableAndUnschedulable, "node(s) didn't match Pod's node affinity/selector"));
        }
        // NodePorts
        if self.ports.iter().any(|p| node.used_ports.iter().any(|u| ports_conflict(u, p))) {
            return Err(Reject::new(Code::Unschedulable, "node(s) didn't have free ports for the requested pod ports"));
        }
        // NodeResourcesFit
        fit_filter(self, node)?;
        // PodTopologySpread, InterPodAffinity
        self.spread.filter(node)?;
        self.interpod.filter(node)?;
        Ok(())
    }
}

fn ports_conflict(a: &(String, String, i32), b: &(String, String, i32)) -> bool {
    a.0 == b.0 && a.2 == b.2 && (a.1 == b.1 || a.1 == "0.0.0.0" || b.1 == "0.0.0.0")
}

pub fn tolerated(tolerations: &[Toleration], t: &Taint) -> bool {
    tolerations.iter().any(|tol| r8s_api::matching::tolerates(tol, t))
}

fn taint_filter(n: &Node, tolerations: &[Toleration]) -> Result<(), Reject> {
    for t in n.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or(&[]) {
        if (t.effect == "NoSchedule" || t.effect == "NoExecute") && !tolerated(tolerations, t) {
            return Err(Reject::new(
                Code::UnresolvableAndUnschedulable,
                format!("node(s) had untolerated taint {{{}: {}}}", t.key, t.value.as_deref().unwrap_or("")),
            ));
        }
    }
    Ok(())
}

/// nodeSelector and required node affinity.
pub fn node_affinity_matches(pod: &Pod, node_name: &str, labels: &BTreeMap<String, String>) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    if let Some(sel) = &spec.node_selector
        && sel.iter().any(|(k, v)| labels.get(k) != Some(v))
    {
        return false;
    }
    let required = spec.affinity.as_ref().and_then(|a| a.node_affinity.as_ref()).and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref());
    match required {
        Some(r) => r.node_selector_terms.iter().any(|t| r8s_api::matching::term_matches(t, node_name, labels)),
        None => true,
    }
}

fn fit_filter(c: &Cycle, node: &NodeInfo) -> Result<(), Reject> {
    let mut reasons = Vec::new();
    if node.pods.len() as i64 + 1 > node.allowed_pods {
        reasons.push("Too many pods".to_string());
    }
    let (r, a, u) = (&c.req, &node.allocatable, &node.requested);
    if r.milli_cpu > 0 && r.milli_cpu > a.milli_cpu - u.milli_cpu {
        reasons.push("Insufficient cpu".into());
    }
    if r.memory > 0 && r.memory > a.memory - u.memory {
        reasons.push("Insufficient memory".into());
    }
    if r.ephemeral_storage > 0 && r.ephemeral_storage > a.ephemeral_storage - u.ephemeral_storage {
        reasons.push("Insufficient ephemeral-storage".into());
    }
    for (k, v) in &r.scalar {
        if *v > 0 && *v > a.scalar.get(k).copied().unwrap_or(0) - u.scalar.get(k).copied().unwrap_or(0) {
            reasons.push(format!("Insufficient {k}"));
        }
    }
    if reasons.is_empty() { Ok(()) } else { Err(Reject { code: Code::Unschedulable, reasons }) }
}

/// Scores feasible nodes with every score plugin, normalised and weighted as upstream
/// (TaintToleration 3, NodeAffinity 2, PodTopologySpread 2, InterPodAffinity 2,
/// NodeResourcesFit 1, NodeResourcesBalancedAllocation 1, ImageLocality 1).
pub fn score(c: &Cycle, nodes: &[&NodeInfo], total_nodes: usize) -> Vec<i64> {
    let n = nodes.len();
    let mut total = vec![0i64; n];
    let spec = c.pod.spec.as_ref();
    // NodeResourcesFit (LeastAllocated) and BalancedAllocation on cpu and memory.
    for (i, node) in nodes.iter().enumerate() {
        let a = &node.allocatable;
        let cpu = node.nonzero_requested.milli_cpu + c.nonzero.milli_cpu;
        let mem = node.nonzero_requested.memory + c.nonzero.memory;
        let least = |req: i64, alloc: i64| {
            if alloc <= 0 || req > alloc { 0 } else { (alloc - req) * MAX_NODE_SCORE / alloc }
        };
        total[i] += (least(cpu, a.milli_cpu) + least(mem, a.memory)) / 2;
        let frac = |req: i64, alloc: i64| {
            if alloc <= 0 { 1.0 } else { (req as f64 / alloc as f64).min(1.0) }
        };
        let std = (frac(cpu, a.milli_cpu) - frac(mem, a.memory)).abs() / 2.0;
        total[i] += ((1.0 - std) * MAX_NODE_SCORE as f64) as i64;
    }
    // TaintToleration: fewer untolerated PreferNoSchedule taints is better.
    let tolerations: Vec<Toleration> = spec
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.effect.as_deref().is_none_or(|e| e.is_empty() || e == "PreferNoSchedule"))
        .collect();
    let raw: Vec<i64> = nodes
        .iter()
        .map(|node| {
            node.node
                .as_ref()
                .and_then(|n| n.spec.as_ref())
                .and_then(|s| s.taints.as_ref())
                .map(|ts| ts.iter().filter(|t| t.effect == "PreferNoSchedule" && !tolerated(&tolerations, t)).count() as i64)
                .unwrap_or(0)
        })
        .collect();
    add_normalized(&mut total, &raw, 3, true);
    // NodeAffinity: sum of matching preferred terms' weights.
    if let Some(pref) = spec
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.preferred_during_scheduling_ignored_during_execution.as_ref())
    {
        let raw: Vec<i64> = nodes
            .iter()
            .map(|node| pref.iter().filter(|p| r8s_api::matching::term_matches(&p.preference, &node.name(), &node.labels)).map(|p| p.weight as i64).sum())
            .collect();
        add_normalized(&mut total, &raw, 2, false);
    }
    // PodTopologySpread and InterPodAffinity scores.
    if let Some(raw) = c.spread.scores(nodes) {
        for (t, s) in total.iter_mut().zip(raw) {
            *t += 2 * s;
        }
    }
    if let Some(raw) = c.interpod.scores(nodes) {
        for (t, s) in total.iter_mut().zip(raw) {
            *t += 2 * s;
        }
    }
    // ImageLocality: images already present, scaled by how widely they are spread.
    let images: Vec<String> = spec.map(|s| s.containers.iter().filter_map(|c| c.image.clone()).collect()).unwrap_or_default();
    if !images.is_empty() && nodes.iter().any(|n| !n.images.is_empty()) {
        let have: HashMap<&String, usize> =
            images.iter().map(|img| (img, nodes.iter().filter(|n| n.images.contains_key(&normalize_image(img))).count())).collect();
        const MIN: i64 = 23 * 1024 * 1024;
        let max = 1000 * 1024 * 1024 * images.len() as i64;
        for (i, node) in nodes.iter().enumerate() {
            let sum: i64 = images
                .iter()
                .filter_map(|img| node.images.get(&normalize_image(img)).map(|size| (*size as f64 * have[img] as f64 / total_nodes.max(1) as f64) as i64))
                .sum();
            let clamped = sum.clamp(MIN, max);
            total[i] += MAX_NODE_SCORE * (clamped - MIN) / (max - MIN).max(1);
        }
    }
    total
}

fn normalize_image(img: &str) -> String {
    let with_tag = if img.rsplit('/').next().is_some_and(|last| last.contains(':') || last.contains('@')) { img.to_string() } else { format!("{img}:latest") };
    if with_tag.contains('/') { with_tag } else { format!("docker.io/library/{with_tag}") }
}

/// Upstream's DefaultNormalizeScore: scale to 0..100 by the maximum (reversed: fewer is better).
fn add_normalized(total: &mut [i64], raw: &[i64], weight: i64, reverse: bool) {
    let max = raw.iter().copied().max().unwrap_or(0);
    for (t, r) in total.iter_mut().zip(raw) {
        let s = if max == 0 {
            if reverse { MAX_NODE_SCORE } else { 0 }
        } else {
            let s = MAX_NODE_SCORE * r / max;
            if reverse { MAX_NODE_SCORE - s } else { s }
        };
        *t += weight * s;
    }
}

/// "0/3 nodes are available: 3 Insufficient cpu. preemption: ..." as upstream's FitError.
pub fn fit_error(total: usize, histogram: &BTreeMap<String, usize>, postfilter: &str) -> String {
    let mut reasons: Vec<String> = histogram.iter().map(|(r, n)| format!("{n} {r}")).collect();
    reasons.sort();
    let mut msg = format!("0/{total} nodes are available:");
    if !reasons.is_empty() {
        msg.push_str(&format!(" {}.", reasons.join(", ")));
    }
    if !postfilter.is_empty() {
        msg.push_str(&format!(" {postfilter}"));
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_error_sorts_reasons() {
        let mut h = BTreeMap::new();
        h.insert("node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }".to_string(), 3);
        h.insert("Insufficient memory".to_string(), 3);
        assert_eq!(
            fit_error(6, &h, ""),
            "0/6 nodes are available: 3 Insufficient memory, 3 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }."
        );
    }

    #[test]
    fn tolerations() {
        let t = Taint { key: "k".into(), value: Some("v".into()), effect: "NoSchedule".into(), ..Default::default() };
        let tol = |v: serde_json::Value| -> Vec<Toleration> { serde_json::from_value(v).unwrap() };
        assert!(tolerated(&tol(serde_json::json!([{"key": "k", "value": "v"}])), &t));
        assert!(tolerated(&tol(serde_json::json!([{"operator": "Exists"}])), &t));
        assert!(!tolerated(&tol(serde_json::json!([{"key": "k", "value": "w"}])), &t));
        assert!(!tolerated(&tol(serde_json::json!([{"key": "k", "operator": "Exists", "effect": "NoExecute"}])), &t));
    }
}
