//! The scheduler (upstream's kube-scheduler): watches pods without a node, filters and scores
//! nodes with the plugins of `framework`, and binds through `pods/binding`. Pods that fit
//! nowhere get a `FailedScheduling` Event and a `PodScheduled=False` condition with upstream's
//! message, and are retried when nodes or pods change.

pub mod cache;
pub mod framework;
pub mod plugins;
pub mod preemption;
pub mod queue;
pub mod resources;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Binding, Namespace, Node, ObjectReference, PersistentVolumeClaim, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use r8s_client::events::Recorder;
use r8s_client::informer::{Informers, key_of};
use rand::Rng;
use serde_json::json;

use crate::cache::Cache;
use crate::framework::{Code, Cycle};
use crate::queue::SchedulingQueue;

pub const DEFAULT_SCHEDULER: &str = "default-scheduler";

struct Scheduler {
    informers: Informers,
    cache: Mutex<Cache>,
    queue: SchedulingQueue,
    recorder: Recorder,
    next_start: Mutex<usize>,
}

fn responsible(p: &Pod) -> bool {
    let spec = p.spec.as_ref();
    spec.and_then(|s| s.node_name.as_deref()).is_none_or(|n| n.is_empty())
        && spec.and_then(|s| s.scheduler_name.as_deref()).unwrap_or(DEFAULT_SCHEDULER) == DEFAULT_SCHEDULER
        && p.metadata.deletion_timestamp.is_none()
        && !matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

fn bound(p: &Pod) -> bool {
    p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty())
}

fn priority(p: &Pod) -> i32 {
    p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// Upstream's adaptive percentageOfNodesToScore: all nodes below 100, then 50% falling by 1%
/// per 125 nodes to 5%, never fewer than 100.
fn feasible_nodes_to_find(n: usize) -> usize {
    if n < 100 {
        return n;
    }
    let pct = (50 - (n / 125) as i64).max(5) as usize;
    (n * pct / 100).max(100)
}

/// Runs the scheduler until the task is dropped.
pub async fn run(informers: Informers) -> anyhow::Result<()> {
    let client = informers.client().clone();
    let s = Arc::new(Scheduler {
        informers: informers.clone(),
        cache: Mutex::new(Cache::default()),
        queue: SchedulingQueue::default(),
        recorder: Recorder::new(client, DEFAULT_SCHEDULER),
        next_start: Mutex::new(0),
    });
    let nodes = informers.get::<Node>();
    let pods = informers.get::<Pod>();
    informers.get::<Namespace>();
    {
        // A claim that appears or binds may unblock pods that use it.
        let s = s.clone();
        informers.get::<PersistentVolumeClaim>().on_change(move |_old, _new| s.queue.move_all());
    }
    {
        let s = s.clone();
        nodes.on_change(move |_old, new| {
            match new {
                Some(n) => s.cache.lock().unwrap().set_node(n.clone()),
                None => {
                    if let Some(o) = _old {
                        s.cache.lock().unwrap().remove_node(&o.name_any());
                    }
                }
            }
            s.queue.move_all();
        });
    }
    {
        let s = s.clone();
        pods.on_change(move |old, new| {
            let key = key_of(new.or(old).unwrap().as_ref());
            match new {
                Some(p) => {
                    if bound(p) {
                        let was_counting = old.is_some_and(|o| bound(o));
                        s.cache.lock().unwrap().update_pod(p);
                        s.queue.done(&key);
                        // A pod that finished frees its node's resources.
                        if was_counting && matches!(p.status.as_ref().and_then(|st| st.phase.as_deref()), Some("Succeeded" | "Failed")) {
                            s.queue.move_all();
                        }
                    } else if responsible(p) {
                        // Our own status writes (PodScheduled=False) are no reason to retry.
                        let changed = old.is_none_or(|o| o.spec != p.spec || o.metadata.labels != p.metadata.labels);
                        if changed {
                            s.queue.add(key, priority(p));
                        }
                    }
                }
                None => {
                    let o = old.unwrap();
                    s.cache.lock().unwrap().delete_pod(&o.uid().unwrap_or_default());
                    s.queue.done(&key);
                    if bound(o) {
                        s.queue.move_all();
                    }
                }
            }
        });
    }
    nodes.synced().await;
    pods.synced().await;
    informers.get::<PersistentVolumeClaim>().synced().await;
    // Pods that failed long ago are retried now and then even when nothing seems to change
    // (upstream flushes its unschedulable pods after 5 minutes).
    {
        let q = s.queue.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(30));
            loop {
                t.tick().await;
                q.move_all();
            }
        });
    }
    tracing::info!("scheduler started");
    loop {
        let key = s.queue.pop().await;
        s.clone().schedule_one(key).await;
    }
}

impl Scheduler {
    fn volume_prefilter(&self, pod: &Pod) -> Option<String> {
        let ns = pod.namespace().unwrap_or_default();
        let claims = self.informers.get::<PersistentVolumeClaim>();
        for v in pod.spec.as_ref()?.volumes.iter().flatten() {
            let Some(src) = v.persistent_volume_claim.as_ref() else {
                continue;
            };
            match claims.get(&ns, &src.claim_name) {
                None => {
                    return Some(format!("persistentvolumeclaim \"{}\" not found", src.claim_name));
                }
                Some(c) if c.metadata.deletion_timestamp.is_some() => {
                    return Some(format!("persistentvolumeclaim \"{}\" is being deleted", src.claim_name));
                }
                _ => {}
            }
        }
        None
    }

    fn ns_labels(&self) -> impl Fn(&str) -> BTreeMap<String, String> + '_ {
        move |ns: &str| self.informers.get::<Namespace>().get("", ns).map(|n| n.labels().clone()).unwrap_or_default()
    }

    async fn schedule_one(self: Arc<Self>, key: (String, String)) {
        let Some(pod) = self.informers.get::<Pod>().get(&key.0, &key.1) else {
            return;
        };
        if !responsible(&pod) {
            return;
        }
        let uid = pod.uid().unwrap_or_default();
        let prio = priority(&pod);
        // VolumeBinding's PreFilter: every claim the pod uses must exist and not be going away.
        // (Unbound claims do not block scheduling yet: no provisioner exists to bind them.)
        let prefilter = self.volume_prefilter(&pod);
        let decision = {
            let mut cache = self.cache.lock().unwrap();
            if cache.is_assumed(&uid) {
                return;
            }
            let ns_labels = self.ns_labels();
            let cycle = Cycle::new(pod.clone(), &cache, &ns_labels);
            let total = cache.node_count();
            let want = feasible_nodes_to_find(total);
            let mut start = self.next_start.lock().unwrap();
            let mut feasible = Vec::new();
            let mut histogram: BTreeMap<String, usize> = BTreeMap::new();
            let mut codes = (0usize, 0usize);
            let mut processed = 0;
            // A PreFilter rejection means no node is even looked at.
            let candidates = if prefilter.is_some() { 0 } else { total };
            for i in 0..candidates {
                if feasible.len() >= want {
                    break;
                }
                processed += 1;
                let name = &cache.order[(*start + i) % total];
                let info = &cache.nodes[name];
                match cycle.filter(info) {
                    Ok(()) => feasible.push(info),
                    Err(r) => {
                        for reason in r.reasons {
                            *histogram.entry(reason).or_insert(0) += 1;
                        }
                        match r.code {
                            Code::Unschedulable => codes.0 += 1,
                            Code::UnresolvableAndUnschedulable => codes.1 += 1,
                        }
                    }
                }
            }
            if total > 0 {
                *start = (*start + processed) % total;
            }
            if let Some(msg) = prefilter {
                let post = if pod.spec.as_ref().and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
                    "preemption: not eligible due to preemptionPolicy=Never.".to_string()
                } else {
                    format!("preemption: 0/{total} nodes are available: {total} Preemption is not helpful for scheduling.")
                };
                Err((format!("0/{total} nodes are available: {msg}. {post}"), None))
            } else if feasible.is_empty() {
                // PostFilter: preemption of lower-priority pods on nodes where that helps.
                let plan = if codes.0 > 0 { preemption::plan(&cycle, &cache, &ns_labels) } else { None };
                match plan {
                    Some(p) => Err((framework::fit_error(total, &histogram, ""), Some(p))),
                    None => Err((failure_message(&pod, total, &histogram, codes), None)),
                }
            } else {
                let scores = framework::score(&cycle, &feasible, total);
                let best = scores.iter().copied().max().unwrap_or(0);
                let ties: Vec<usize> = (0..scores.len()).filter(|i| scores[*i] == best).collect();
                let pick = ties[rand::thread_rng().gen_range(0..ties.len())];
                let node = feasible[pick].name();
                drop(start);
                cache.assume(&pod, &node);
                Ok(node)
            }
        };
        match decision {
            Ok(node) => {
                let me = self.clone();
                tokio::spawn(async move { me.bind(pod, node, key, prio).await });
            }
            Err((msg, plan)) => {
                // Parked before the victims go, so their deletion brings the pod back.
                self.queue.unschedulable(key, prio);
                if let Some(plan) = plan {
                    self.preempt(&pod, plan).await;
                }
                self.recorder.warning(pod.as_ref(), "FailedScheduling", msg.clone());
                let api: Api<Pod> = Api::namespaced(self.informers.client().clone(), &pod.namespace().unwrap_or_default());
                let patch = json!({"status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg, "lastProbeTime": null, "lastTransitionTime": r8s_client::now()}]}});
                let already = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "PodScheduled" && c.status == "False" && c.message.as_deref() == Some(msg.as_str())));
                if !already && let Err(e) = api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Strategic(&patch)).await {
                    tracing::debug!(error = %e, "updating PodScheduled condition failed");
                }
            }
        }
    }

    /// Evicts the victims (graceful deletion) and nominates the node for the preemptor; the
    /// victims' deletion moves the preemptor back into the queue.
    async fn preempt(&self, pod: &Pod, plan: preemption::Plan) {
        let client = self.informers.client().clone();
        for v in &plan.victims {
            let api: Api<Pod> = Api::namespaced(client.clone(), &v.namespace().unwrap_or_default());
            let dp = kube::api::DeleteParams { preconditions: Some(kube::api::Preconditions { uid: v.uid(), resource_version: None }), ..Default::default() };
            match api.delete(&v.name_any(), &dp).await {
                Ok(_) => self.recorder.normal(v.as_ref(), "Preempted", format!("Preempted by pod {} on node {}", pod.uid().unwrap_or_default(), plan.node)),
                Err(e) => tracing::debug!(error = %e, "preempting a pod failed"),
            }
        }
        let api: Api<Pod> = Api::namespaced(client, &pod.namespace().unwrap_or_default());
        let _ = api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&json!({"status": {"nominatedNodeName": plan.node}}))).await;
    }

    async fn bind(&self, pod: Arc<Pod>, node: String, key: (String, String), prio: i32) {
        let ns = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.informers.client().clone(), &ns);
        let binding = Binding {
            metadata: kube::api::ObjectMeta { name: Some(pod.name_any()), namespace: Some(ns.clone()), uid: pod.uid(), ..Default::default() },
            target: ObjectReference { api_version: Some("v1".into()), kind: Some("Node".into()), name: Some(node.clone()), ..Default::default() },
        };
        match api.create_subresource::<Binding, serde_json::Value>("binding", &pod.name_any(), &PostParams::default(), &binding).await {
            Ok(_) => {
                self.recorder.normal(pod.as_ref(), "Scheduled", format!("Successfully assigned {ns}/{} to {node}", pod.name_any()));
            }
            Err(e) => {
                tracing::debug!(pod = %pod.name_any(), %node, error = %e, "binding failed");
                self.cache.lock().unwrap().forget(&pod.uid().unwrap_or_default());
                if !r8s_client::is_not_found(&e) {
                    self.queue.retry(key, prio);
                }
            }
        }
    }
}

/// Upstream's FitError text, with the preemption part the default PostFilter adds.
fn failure_message(pod: &Pod, total: usize, histogram: &BTreeMap<String, usize>, codes: (usize, usize)) -> String {
    if total == 0 {
        return "no nodes available to schedule pods".into();
    }
    let post = if pod.spec.as_ref().and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
        "preemption: not eligible due to preemptionPolicy=Never.".to_string()
    } else {
        let mut parts = Vec::new();
        if codes.0 > 0 {
            parts.push(format!("{} No preemption victims found for incoming pod", codes.0));
        }
        if codes.1 > 0 {
            parts.push(format!("{} Preemption is not helpful for scheduling", codes.1));
        }
        parts.sort();
        format!("preemption: 0/{total} nodes are available: {}.", parts.join(", "))
    };
    framework::fit_error(total, histogram, &post)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_to_find() {
        assert_eq!(feasible_nodes_to_find(50), 50);
        assert_eq!(feasible_nodes_to_find(1000), 420);
        assert_eq!(feasible_nodes_to_find(5000), 500);
        assert_eq!(feasible_nodes_to_find(200), 100);
    }
}
