//! Node lifecycle: a node whose kubelet stops renewing its Lease (and posting status) for
//! longer than the grace period gets its conditions set to Unknown; Ready=False/Unknown put
//! the not-ready/unreachable taints on the node (NoSchedule and NoExecute), and the
//! NoExecute taint manager evicts pods that do not tolerate them, after their
//! tolerationSeconds (300 s by default admission).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use r8s_client::events::Recorder;
use r8s_client::informer::{Informers, ObjKey, key_of};
use r8s_client::queue::WorkQueue;
use serde_json::json;

const NOT_READY: &str = "node.kubernetes.io/not-ready";
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

#[derive(Clone, Debug)]
pub struct Options {
    pub grace_period: Duration,
    pub monitor_period: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options { grace_period: Duration::from_secs(40), monitor_period: Duration::from_secs(5) }
    }
}

pub struct Controller {
    informers: Informers,
    opts: Options,
    /// Nodes this controller has announced ("RegisteredNode").
    registered: std::sync::Mutex<std::collections::HashSet<String>>,
    pods: WorkQueue<ObjKey>,
    recorder: Recorder,
}

fn ready_status(n: &Node) -> Option<String> {
    n.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready").map(|c| c.status.clone())
}

/// When the pod must go because of the node's NoExecute taints: None = never, Some(0) = now.
fn eviction_delay(pod: &Pod, taints: &[Taint]) -> Option<Duration> {
    let tols = pod.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
    let mut latest_deadline: Option<i64> = None;
    for t in taints.iter().filter(|t| t.effect == "NoExecute") {
        let matching: Vec<&Toleration> = tols.iter().filter(|tol| r8s_api::matching::tolerates(tol, t)).collect();
        if matching.is_empty() {
            return Some(Duration::ZERO);
        }
        // The shortest tolerationSeconds of the matching tolerations; none means forever.
        let Some(secs) = matching.iter().filter_map(|tol| tol.toleration_seconds).min() else {
            continue;
        };
        let added = t.time_added.as_ref().map(|t| t.0.as_second()).unwrap_or_else(|| Timestamp::now().as_second());
        let deadline = added + secs.max(0);
        latest_deadline = Some(latest_deadline.map_or(deadline, |d: i64| d.min(deadline)));
    }
    latest_deadline.map(|d| Duration::from_secs((d - Timestamp::now().as_second()).max(0) as u64))
}

impl Controller {
    pub async fn start(informers: Informers, opts: Options) {
        let c = Arc::new(Controller {
            recorder: Recorder::new(informers.client().clone(), "node-controller"),
            informers: informers.clone(),
            opts,
            registered: Default::default(),
            pods: WorkQueue::new(),
        });
        let nodes = informers.get::<Node>();
        let pods = informers.get::<Pod>();
        let leases = informers.get::<Lease>();
        {
            // A node's taints changed: look at its pods.
            let c2 = c.clone();
            nodes.on_change(move |old, new| {
                let Some(n) = new else { return };
                let before = old.and_then(|o| o.spec.as_ref()).and_then(|s| s.taints.clone());
                let after = n.spec.as_ref().and_then(|s| s.taints.clone());
                if before != after {
                    let name = n.name_any();
                    for p in c2.informers.get::<Pod>().list() {
                        if p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str()) {
                            c2.pods.add(key_of(p.as_ref()));
                        }
                    }
                }
            });
        }
        {
            let q = c.pods.clone();
            pods.on_change(move |old, new| {
                if let Some(p) = new {
                    let bound_now = old.is_none_or(|o| o.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none());
                    if bound_now || old.map(|o| &o.spec) != Some(&p.spec) {
                        q.add(key_of(p.as_ref()));
                    }
                }
            });
        }
        nodes.synced().await;
        pods.synced().await;
        leases.synced().await;
        let c2 = c.clone();
        r8s_client::run_workers("taint-eviction", c.pods.clone(), 2, move |key| {
            let c = c2.clone();
            async move { c.sync_pod(key).await }
        });
        let c2 = c.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(c2.opts.monitor_period);
            loop {
                tick.tick().await;
                if let Err(e) = c2.monitor().await {
                    tracing::debug!(error = %e, "node monitor pass failed");
                }
            }
        });
    }

    /// One pass over all nodes: health from heartbeats, taints from health.
    async fn monitor(&self) -> anyhow::Result<()> {
        let api: Api<Node> = Api::all(self.informers.client().clone());
        let now = Timestamp::now();
        let leases: HashMap<String, Timestamp> = self
            .informers
            .get::<Lease>()
            .list_ns("kube-node-lease")
            .into_iter()
            .filter_map(|l| Some((l.name_any(), l.spec.as_ref()?.renew_time.as_ref()?.0)))
            .collect();
        for node in self.informers.get::<Node>().list() {
            let name = node.name_any();
            if self.registered.lock().unwrap().insert(name.clone()) {
                self.recorder.normal(node.as_ref(), "RegisteredNode", format!("Node {name} event: Registered Node {name} in Controller"));
            }
            let conds = node.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
            let heartbeat = conds.iter().find(|c| c.type_ == "Ready").and_then(|c| c.last_heartbeat_time.as_ref()).map(|t| t.0);
            let probe = node.metadata.creation_timestamp.as_ref().map(|t| t.0);
            let last = [leases.get(&name).copied(), heartbeat, probe].into_iter().flatten().max();
            let silent = last.is_some_and(|t| now.duration_since(t).as_secs() > self.opts.grace_period.as_secs() as i64);
            let mut ready = ready_status(&node);
            if silent && ready.as_deref() != Some("Unknown") {
                let stamp = r8s_client::now();
                let types = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];
                let new_conds: Vec<serde_json::Value> = types
                    .iter()
                    .map(|t| {
                        let prev = conds.iter().find(|c| c.type_ == *t);
                        json!({
                            "type": t, "status": "Unknown", "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status.",
                            "lastHeartbeatTime": prev.and_then(|c| c.last_heartbeat_time.clone()),
                            "lastTransitionTime": stamp,
                        })
                    })
                    .collect();
                api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&json!({"status": {"conditions": new_conds}}))).await?;
                self.recorder.normal(node.as_ref(), "NodeNotReady", format!("Node {name} status is now: NodeNotReady"));
                ready = Some("Unknown".into());
                self.mark_pods_not_ready(&name).await?;
            }
            // Taints follow the Ready condition.
            let want: Option<&str> = match ready.as_deref() {
                Some("False") => Some(NOT_READY),
                Some("Unknown") => Some(UNREACHABLE),
                _ => None,
            };
            let taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
            let ours = |t: &Taint| t.key == NOT_READY || t.key == UNREACHABLE;
            let have: Vec<&Taint> = taints.iter().filter(|t| ours(t)).collect();
            let matches = match want {
                None => have.is_empty(),
                Some(k) => have.len() == 2 && have.iter().all(|t| t.key == k),
            };
            if !matches {
                let mut new_taints: Vec<serde_json::Value> = taints.iter().filter(|t| !ours(t)).map(|t| serde_json::to_value(t).unwrap()).collect();
                if let Some(k) = want {
                    new_taints.push(json!({"key": k, "effect": "NoSchedule"}));
                    new_taints.push(json!({"key": k, "effect": "NoExecute", "timeAdded": r8s_client::now()}));
                }
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&json!({"spec": {"taints": new_taints}}))).await?;
            }
        }
        Ok(())
    }

    /// Pods on a node that stopped reporting are no longer Ready (so Services stop sending
    /// them traffic long before they are evicted), as upstream's MarkPodsNotReady.
    async fn mark_pods_not_ready(&self, node: &str) -> anyhow::Result<()> {
        let now = r8s_client::now();
        for p in self.informers.get::<Pod>().list() {
            if p.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node) {
                continue;
            }
            let ready = p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            if !ready {
                continue;
            }
            let api: Api<Pod> = Api::namespaced(self.informers.client().clone(), &p.namespace().unwrap_or_default());
            let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}]}});
            match api.patch_status(&p.name_any(), &PatchParams::default(), &Patch::Strategic(&patch)).await {
                Ok(_) => self.recorder.warning(p.as_ref(), "NodeNotReady", "Node is not ready".into()),
                Err(e) if r8s_client::is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn sync_pod(&self, (ns, name): ObjKey) -> anyhow::Result<Option<Duration>> {
        let Some(pod) = self.informers.get::<Pod>().get(&ns, &name) else {
            return Ok(None);
        };
        if pod.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            return Ok(None);
        };
        let Some(node) = self.informers.get::<Node>().get("", &node_name) else {
            return Ok(None);
        };
        let taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
        match eviction_delay(&pod, &taints) {
            None => Ok(None),
            Some(d) if !d.is_zero() => Ok(Some(d)),
            Some(_) => {
                self.recorder.normal(pod.as_ref(), "TaintManagerEviction", format!("Marking for deletion Pod {ns}/{name}"));
                let api: Api<Pod> = Api::namespaced(self.informers.client().clone(), &ns);
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => Ok(None),
                    Err(e) if r8s_client::is_not_found(&e) => Ok(None),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_waits_for_the_shortest_toleration() {
        let pod: Pod = serde_json::from_value(json!({"spec": {"containers": [], "tolerations": [
            {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]}}))
        .unwrap();
        let taint = |k: &str| Taint {
            key: k.into(),
            effect: "NoExecute".into(),
            time_added: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now())),
            ..Default::default()
        };
        let d = eviction_delay(&pod, &[taint(UNREACHABLE)]).unwrap();
        assert!(d.as_secs() > 290 && d.as_secs() <= 300);
        assert_eq!(eviction_delay(&pod, &[taint(NOT_READY)]), Some(Duration::ZERO));
        assert_eq!(eviction_delay(&pod, &[]), None);
    }
}
