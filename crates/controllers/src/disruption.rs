//! Disruption controller: keeps each PodDisruptionBudget's status (expected pods, healthy
//! pods, desired healthy, disruptionsAllowed) current, which the eviction API consults.
//! Pods an eviction just admitted (`status.disruptedPods`) are not counted as healthy until
//! they are gone, or two minutes have passed.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use r8s_client::informer::{Informers, ObjKey, key_of};
use r8s_client::queue::WorkQueue;
use serde_json::{Value, json};

use crate::util;

const DISRUPTED_TTL_SECONDS: i64 = 120;

pub struct Controller {
    informers: Informers,
    queue: WorkQueue<ObjKey>,
}

fn scaled(v: &IntOrString, total: i32) -> i32 {
    match v {
        IntOrString::Int(i) => *i,
        IntOrString::String(s) => ((s.trim_end_matches('%').parse::<f64>().unwrap_or(0.0) * total as f64) / 100.0).ceil() as i32,
    }
}

impl Controller {
    pub async fn start(informers: Informers) {
        let c = Arc::new(Controller { informers: informers.clone(), queue: WorkQueue::new() });
        let pdbs = informers.get::<PodDisruptionBudget>();
        let pods = informers.get::<Pod>();
        informers.get::<ReplicaSet>();
        informers.get::<StatefulSet>();
        informers.get::<ReplicationController>();
        util::queue_self(&pdbs, &c.queue);
        {
            let c2 = c.clone();
            pods.on_change(move |old, new| {
                let p = new.or(old).unwrap();
                let ns = p.namespace().unwrap_or_default();
                for pdb in c2.informers.get::<PodDisruptionBudget>().list_ns(&ns) {
                    c2.queue.add(key_of(pdb.as_ref()));
                }
            });
        }
        pdbs.synced().await;
        pods.synced().await;
        util::run_over("disruption", &pdbs, &c.queue, 2, c.clone(), |c, key| async move { c.sync(key).await });
    }

    /// Pods the budget protects are expected to number what their controllers ask for.
    fn expected(&self, pods: &[Arc<Pod>]) -> i32 {
        let mut seen = HashSet::new();
        let mut total = 0;
        for p in pods {
            let Some(r) = util::controller_ref(p.as_ref()) else {
                total += 1;
                continue;
            };
            if !seen.insert(r.uid.clone()) {
                continue;
            }
            let ns = p.namespace().unwrap_or_default();
            total += match r.kind.as_str() {
                "ReplicaSet" => self.informers.get::<ReplicaSet>().get(&ns, &r.name).and_then(|o| o.spec.as_ref()?.replicas).unwrap_or(0),
                "StatefulSet" => self.informers.get::<StatefulSet>().get(&ns, &r.name).and_then(|o| o.spec.as_ref()?.replicas).unwrap_or(0),
                "ReplicationController" => self.informers.get::<ReplicationController>().get(&ns, &r.name).and_then(|o| o.spec.as_ref()?.replicas).unwrap_or(0),
                _ => pods.iter().filter(|q| util::controller_ref(q.as_ref()).is_some_and(|x| x.uid == r.uid)).count() as i32,
            };
        }
        total
    }

    async fn sync(&self, (ns, name): ObjKey) -> anyhow::Result<Option<Duration>> {
        let Some(pdb) = self.informers.get::<PodDisruptionBudget>().get(&ns, &name) else {
            return Ok(None);
        };
        let spec = pdb.spec.clone().unwrap_or_default();
        let selector = spec.selector.clone().unwrap_or_default();
        let pods: Vec<Arc<Pod>> =
            self.informers.get::<Pod>().list_ns(&ns).into_iter().filter(|p| util::is_active(p) && util::selector_matches(&selector, p.labels())).collect();
        let now = Timestamp::now();
        // Evictions admitted but not yet visible as deletions.
        let mut disrupted: BTreeMap<String, Value> = BTreeMap::new();
        let mut requeue = None;
        for (pod, at) in pdb.status.as_ref().and_then(|s| s.disrupted_pods.clone()).unwrap_or_default() {
            let age = now.duration_since(at.0).as_secs();
            if age < DISRUPTED_TTL_SECONDS && pods.iter().any(|p| p.name_any() == pod) {
                disrupted.insert(pod, json!(at));
                requeue = Some(Duration::from_secs((DISRUPTED_TTL_SECONDS - age).max(1) as u64));
            }
        }
        let healthy = pods.iter().filter(|p| util::is_ready(p) && !disrupted.contains_key(&p.name_any())).count() as i32;
        let (expected, desired) = match (&spec.min_available, &spec.max_unavailable) {
            (Some(IntOrString::Int(n)), _) => (pods.len() as i32, *n),
            (Some(pct), _) => {
                let e = self.expected(&pods);
                (e, scaled(pct, e))
            }
            (None, Some(mu)) => {
                let e = self.expected(&pods);
                (e, (e - scaled(mu, e)).max(0))
            }
            (None, None) => (pods.len() as i32, 1),
        };
        let allowed = (healthy - desired).max(0);
        let now_t = r8s_client::now();
        let prev_cond = pdb.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|cs| cs.iter().find(|c| c.type_ == "DisruptionAllowed").cloned());
        let (cstatus, reason) = if allowed > 0 { ("True", "SufficientPods") } else { ("False", "InsufficientPods") };
        let transition = match &prev_cond {
            Some(c) if c.status == cstatus => json!(c.last_transition_time),
            _ => json!(now_t),
        };
        let status = json!({
            "observedGeneration": pdb.metadata.generation,
            "disruptionsAllowed": allowed,
            "currentHealthy": healthy,
            "desiredHealthy": desired,
            "expectedPods": expected,
            "disruptedPods": if disrupted.is_empty() { Value::Null } else { json!(disrupted) },
            "conditions": [{"type": "DisruptionAllowed", "status": cstatus, "reason": reason, "message": "", "observedGeneration": pdb.metadata.generation, "lastTransitionTime": transition}],
        });
        let cur = serde_json::to_value(&pdb.status)?;
        let changed = ["observedGeneration", "disruptionsAllowed", "currentHealthy", "desiredHealthy", "expectedPods", "disruptedPods"]
            .iter()
            .any(|f| util::norm(cur.get(*f), true) != util::norm(status.get(*f), true))
            || prev_cond.as_ref().map(|c| c.status.as_str()) != Some(cstatus);
        if changed {
            let api: Api<PodDisruptionBudget> = Api::namespaced(self.informers.client().clone(), &ns);
            match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&json!({"status": status}))).await {
                Ok(_) => {}
                Err(e) if r8s_client::is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(requeue)
    }
}
