//! Preemption (upstream's DefaultPreemption PostFilter): when a pod fits nowhere, find a node
//! where removing lower-priority pods would let it fit, keep as many of those pods as still
//! allows it (reprieve, highest priority first), and pick the node whose victims matter least.

use std::collections::{BTreeMap, HashSet};
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

pub fn plan(cycle: &Cycle, cache: &Cache, ns_labels: &dyn Fn(&str) -> BTreeMap<String, String>) -> Option<Plan> {
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
        // Would the pod fit with all of them gone (resources, ports, and inter-pod terms)?
        let fits_without = |gone: &[Arc<Pod>]| {
            let uids: HashSet<String> = gone.iter().map(|p| p.uid().unwrap_or_default()).collect();
            let trial = Cycle::without(pod.clone(), cache, ns_labels, &uids);
            trial.filter(&info.without(&|p: &Pod| uids.contains(&p.uid().unwrap_or_default()))).is_ok()
        };
        if candidates.is_empty() || !fits_without(&candidates) {
            continue;
        }
        // Reprieve: put back the most important victims while the pod still fits.
        candidates.sort_by_key(|p| std::cmp::Reverse(priority(p)));
        let mut victims: Vec<Arc<Pod>> = candidates.clone();
        for c in &candidates {
            let without_c: Vec<Arc<Pod>> = victims.iter().filter(|v| v.uid() != c.uid()).cloned().collect();
            if fits_without(&without_c) {
                victims = without_c;
            }
        }
        let key = (victims.iter().map(|v| priority(v)).max().unwrap_or(i32::MIN), victims.iter().map(|v| priority(v) as i64).sum::<i64>(), victims.len());
        if best.as_ref().is_none_or(|(k, _)| key < *k) {
            best = Some((key, Plan { node: name.clone(), victims }));
        }
    }
    best.map(|(_, p)| p)
}
