//! Preemption (upstream's DefaultPreemption PostFilter): when a pod fits nowhere, find a node
//! where removing lower-priority pods would let it fit, keep as many of those pods as still
//! allows it (reprieve, highest priority first), and pick the node whose victims matter least.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::cache::Cache;
use crate::framework::{Code, Cycle};

pub struct Plan {
    pub node: String,
    pub victims: Vec<Arc<Pod>>,
}

fn priority(p: &Pod) -> i32 {
    p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

pub fn plan(cycle: &Cycle, cache: &Cache) -> Option<Plan> {
    let pod = &cycle.pod;
    if pod.spec.as_ref().and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
        return None;
    }
    let prio = priority(pod);
    let mut best: Option<((i32, i64, usize), Plan)> = None;
    for name in &cache.order {
        let info = &cache.nodes[name];
        // Only nodes where the pod failed for reasons preemption can fix.
        match cycle.filter(info) {
            Ok(()) => continue,
            Err(r) if r.code == Code::UnresolvableAndUnschedulable => continue,
            Err(_) => {}
        }
        let lower = |p: &Pod| priority(p) < prio && p.metadata.deletion_timestamp.is_none();
        let mut candidates: Vec<Arc<Pod>> = info.pods.values().map(|e| e.pod.clone()).filter(|p| lower(p)).collect();
        if candidates.is_empty() || cycle.filter(&info.without(&|p: &Pod| lower(p))).is_err() {
            continue;
        }
        // Reprieve: put back the most important victims while the pod still fits.
        candidates.sort_by_key(|p| std::cmp::Reverse(priority(p)));
        let mut victims: Vec<Arc<Pod>> = Vec::new();
        let mut kept: Vec<String> = Vec::new();
        for c in &candidates {
            kept.push(c.uid().unwrap_or_default());
            let keep_set = kept.clone();
            let trial = info.without(&|p: &Pod| lower(p) && !keep_set.contains(&p.uid().unwrap_or_default()));
            if cycle.filter(&trial).is_err() {
                kept.pop();
                victims.push(c.clone());
            }
        }
        let key = (victims.iter().map(|v| priority(v)).max().unwrap_or(i32::MIN), victims.iter().map(|v| priority(v) as i64).sum::<i64>(), victims.len());
        if best.as_ref().is_none_or(|(k, _)| key < *k) {
            best = Some((key, Plan { node: name.clone(), victims }));
        }
    }
    best.map(|(_, p)| p)
}
