//! HorizontalPodAutoscaler (autoscaling/v2): scales a workload through its `scale`
//! subresource so that average CPU utilization (usage / requests) meets the target, with
//! upstream's 10% tolerance, min/max replicas and the scale-down stabilization window.
//!
//! Until the resource metrics API exists, a pod's CPU usage is what its (simulated) node
//! reports in the pod annotation `r8s.io/sim-cpu-usage` (a quantity, e.g. `250m`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, ResourceExt};
use r8s_api::quantity::{format_milli, parse_milli};
use r8s_client::events::Recorder;
use r8s_client::informer::{Informers, ObjKey, key_of};
use r8s_client::queue::WorkQueue;
use serde_json::{Value, json};

use crate::util;

pub const USAGE_ANNOTATION: &str = "r8s.io/sim-cpu-usage";
const TOLERANCE: f64 = 0.1;

pub struct Controller {
    informers: Informers,
    queue: WorkQueue<ObjKey>,
    recorder: Recorder,
    period: Duration,
    /// Recent recommendations per HPA, for the stabilization windows.
    history: Mutex<HashMap<ObjKey, VecDeque<(Instant, i32)>>>,
}

impl Controller {
    pub async fn start(informers: Informers, period: Duration) {
        let c = Arc::new(Controller {
            recorder: Recorder::new(informers.client().clone(), "horizontal-pod-autoscaler"),
            informers: informers.clone(),
            queue: WorkQueue::new(),
            period,
            history: Default::default(),
        });
        let hpas = informers.get::<HorizontalPodAutoscaler>();
        let pods = informers.get::<Pod>();
        {
            let q = c.queue.clone();
            hpas.on_change(move |old, new| {
                if let Some(n) = new {
                    // Spec changes count at once; status writes wait for the next period.
                    if old.is_none_or(|o| o.spec != n.spec) {
                        q.add(key_of(n.as_ref()));
                    }
                }
            });
        }
        hpas.synced().await;
        pods.synced().await;
        util::run_over("horizontal-pod-autoscaler", &hpas, &c.queue, 2, c.clone(), |c, key| async move { c.sync(key).await });
    }

    async fn sync(&self, key: ObjKey) -> anyhow::Result<Option<Duration>> {
        let (ns, name) = key.clone();
        let Some(hpa) = self.informers.get::<HorizontalPodAutoscaler>().get(&ns, &name) else {
            self.history.lock().unwrap().remove(&key);
            return Ok(None);
        };
        let spec = hpa.spec.clone().unwrap_or_default();
        let target = &spec.scale_target_ref;
        let (group, version) = match target.api_version.as_deref().unwrap_or("apps/v1").split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), target.api_version.clone().unwrap_or_default()),
        };
        let Some(plural) = r8s_api::resources::builtin_by_kind(&group, &target.kind).map(|r| r.plural.clone()) else {
            self.recorder.warning(hpa.as_ref(), "FailedGetScale", format!("no scalable resource of kind {} in group {group:?}", target.kind));
            return Ok(Some(self.period));
        };
        let res = ApiResource {
            group: group.clone(),
            version: version.clone(),
            api_version: target.api_version.clone().unwrap_or_default(),
            kind: target.kind.clone(),
            plural,
        };
        let client = self.informers.client().clone();
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &res);
        let scale: Value = match api.get_subresource("scale", &target.name).await {
            Ok(s) => serde_json::to_value(s)?,
            Err(e) => {
                self.recorder.warning(hpa.as_ref(), "FailedGetScale", util::api_message(&e));
                return Ok(Some(self.period));
            }
        };
        let current = scale.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0) as i32;
        // The scale subresource's selector string (set-based selectors included).
        let selector = r8s_api::selectors::LabelSelector::parse(scale.pointer("/status/selector").and_then(Value::as_str).unwrap_or("")).unwrap_or_default();
        let pods: Vec<Arc<Pod>> = self
            .informers
            .get::<Pod>()
            .list_ns(&ns)
            .into_iter()
            .filter(|p| !selector.is_empty() && selector.matches(p.labels()) && util::is_active(p) && util::is_ready(p))
            .collect();
        // CPU utilization over the ready pods that report usage.
        let target_util = spec.metrics.iter().flatten().find_map(|m| {
            let r = m.resource.as_ref()?;
            (r.name == "cpu").then_some(r.target.average_utilization).flatten()
        });
        let min = spec.min_replicas.unwrap_or(1);
        let max = spec.max_replicas;
        let mut desired = current;
        let mut utilization = None;
        let mut reason = String::new();
        if let Some(target_util) = target_util {
            let mut usage = 0i64;
            let mut requests = 0i64;
            let mut counted = 0i32;
            for p in &pods {
                let Some(u) = p.annotations().get(USAGE_ANNOTATION).and_then(|v| parse_milli(v)) else {
                    continue;
                };
                let req = r8s_api::quota::pod_resource(&serde_json::to_value(p.as_ref())?, "requests", "cpu");
                if req == 0 {
                    continue;
                }
                usage += u;
                requests += req;
                counted += 1;
            }
            if counted > 0 && requests > 0 {
                let util_pct = (usage * 100 / requests) as i32;
                utilization = Some((util_pct, usage / counted as i64));
                let ratio = util_pct as f64 / target_util as f64;
                if (ratio - 1.0).abs() > TOLERANCE {
                    desired = (ratio * counted as f64).ceil() as i32;
                    reason =
                        if ratio > 1.0 { "cpu resource utilization (percentage of request) above target".into() } else { "All metrics below target".into() };
                }
            }
        }
        // Upstream's ScalingLimited condition: whether min/max bounded the recommendation.
        let limited = if current == 0 {
            ("False", "DesiredWithinRange", "the desired count is within the acceptable range")
        } else if desired < min {
            ("True", "TooFewReplicas", "the desired replica count is less than the minimum replica count")
        } else if desired > max.max(min) {
            ("True", "TooManyReplicas", "the desired replica count is more than the maximum replica count")
        } else {
            ("False", "DesiredWithinRange", "the desired count is within the acceptable range")
        };
        if current == 0 {
            // Scaled to zero by hand: autoscaling is off until someone scales it up.
            desired = 0;
        } else {
            desired = desired.clamp(min, max.max(min));
        }
        let recommended = desired;
        // Stabilization: scale down only to the highest recommendation of the window.
        let down_window = spec.behavior.as_ref().and_then(|b| b.scale_down.as_ref()).and_then(|s| s.stabilization_window_seconds).unwrap_or(300).max(0) as u64;
        let up_window = spec.behavior.as_ref().and_then(|b| b.scale_up.as_ref()).and_then(|s| s.stabilization_window_seconds).unwrap_or(0).max(0) as u64;
        {
            let mut h = self.history.lock().unwrap();
            let recs = h.entry(key.clone()).or_default();
            recs.push_back((Instant::now(), desired));
            let keep = Duration::from_secs(down_window.max(up_window));
            while recs.front().is_some_and(|(t, _)| t.elapsed() > keep) {
                recs.pop_front();
            }
            if desired < current {
                desired = recs.iter().filter(|(t, _)| t.elapsed() <= Duration::from_secs(down_window)).map(|(_, d)| *d).max().unwrap_or(desired).min(current);
            } else if desired > current && up_window > 0 {
                desired = recs.iter().filter(|(t, _)| t.elapsed() <= Duration::from_secs(up_window)).map(|(_, d)| *d).min().unwrap_or(desired).max(current);
            }
        }
        let mut last_scale = hpa.status.as_ref().and_then(|s| s.last_scale_time.clone()).map(|t| json!(t));
        if desired != current {
            api.patch_subresource("scale", &target.name, &PatchParams::default(), &Patch::Merge(&json!({"spec": {"replicas": desired}}))).await?;
            self.recorder.normal(hpa.as_ref(), "SuccessfulRescale", format!("New size: {desired}; reason: {reason}"));
            last_scale = Some(json!(r8s_client::now()));
        }
        let now = r8s_client::now();
        let old_conds = hpa.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        // lastTransitionTime moves only when a condition's status does.
        let cond = |t: &str, s: &str, r: &str, m: &str| {
            let since = old_conds.iter().find(|c| c.type_ == t && c.status == s).and_then(|c| c.last_transition_time.clone()).unwrap_or(now.clone());
            json!({"type": t, "status": s, "reason": r, "message": m, "lastTransitionTime": since})
        };
        let able = if desired != current {
            cond("AbleToScale", "True", "SucceededRescale", &format!("the HPA controller was able to update the target scale to {desired}"))
        } else if recommended < current && desired == current {
            cond(
                "AbleToScale",
                "True",
                "ScaleDownStabilized",
                "recent recommendations were higher than current one, applying the highest recent recommendation",
            )
        } else {
            cond("AbleToScale", "True", "ReadyForNewScale", "recommended size matches current size")
        };
        let mut status = json!({
            "observedGeneration": hpa.metadata.generation,
            "currentReplicas": current,
            "desiredReplicas": desired,
            "lastScaleTime": last_scale,
            "conditions": [
                able,
                match utilization {
                    Some(_) => cond("ScalingActive", "True", "ValidMetricFound", "the HPA was able to successfully calculate a replica count from cpu resource utilization (percentage of request)"),
                    None => cond("ScalingActive", "False", "FailedGetResourceMetric", "the HPA was unable to compute the replica count: no usage reported for the pods"),
                },
                cond("ScalingLimited", limited.0, limited.1, limited.2),
            ],
        });
        if let Some((pct, avg)) = utilization {
            status["currentMetrics"] =
                json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": pct, "averageValue": format_milli(avg)}}}]);
        }
        let hapi: Api<HorizontalPodAutoscaler> = Api::namespaced(client, &ns);
        let cur = serde_json::to_value(&hpa.status)?;
        let changed = ["currentReplicas", "desiredReplicas", "currentMetrics", "lastScaleTime", "observedGeneration"]
            .iter()
            .any(|f| cur.get(*f) != status.get(*f).filter(|v| !v.is_null()))
            || (0..3).any(|i| {
                ["type", "status", "reason"].iter().any(|f| cur.pointer(&format!("/conditions/{i}/{f}")) != status.pointer(&format!("/conditions/{i}/{f}")))
            });
        if changed {
            match hapi.patch_status(&name, &PatchParams::default(), &Patch::Merge(&json!({"status": status}))).await {
                Ok(_) => {}
                Err(e) if r8s_client::is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Some(self.period))
    }
}
