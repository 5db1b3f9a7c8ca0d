//! Deployment: one ReplicaSet per pod template (named by the template's hash), rolled with
//! RollingUpdate (maxSurge/maxUnavailable) or Recreate, revisions in
//! `deployment.kubernetes.io/revision`, old ReplicaSets kept up to revisionHistoryLimit, and
//! status with the Available and Progressing conditions as upstream writes them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use r8s_client::events::Recorder;
use r8s_client::informer::{Informers, ObjKey};
use r8s_client::queue::WorkQueue;
use serde_json::{Value, json};

use crate::util;

pub const REVISION: &str = "deployment.kubernetes.io/revision";
const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const HASH_LABEL: &str = "pod-template-hash";

/// Deployment annotations that are not copied to its ReplicaSets.
fn skip_copy(k: &str) -> bool {
    [REVISION, REVISION_HISTORY, DESIRED_REPLICAS, MAX_REPLICAS, "kubectl.kubernetes.io/last-applied-configuration", "deprecated.deployment.rollback.to"]
        .contains(&k)
}

pub struct Controller {
    informers: Informers,
    queue: WorkQueue<ObjKey>,
    recorder: Recorder,
    /// ReplicaSet uid -> resourceVersion of our last write: until the informer shows it, a
    /// sync would act on stale replica counts (and scale twice).
    written: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

fn rv(o: &impl kube::Resource) -> u64 {
    o.meta().resource_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations().get(REVISION).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0)
}

/// An int-or-percent of `total`, rounded up (surge) or down (unavailable).
fn resolve(v: Option<&IntOrString>, total: i32, default: &str, round_up: bool) -> i32 {
    match v {
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => percent(s, total, round_up),
        None => percent(default, total, round_up),
    }
}

fn percent(s: &str, total: i32, round_up: bool) -> i32 {
    let p: f64 = s.trim_end_matches('%').parse().unwrap_or(0.0);
    let v = p * total as f64 / 100.0;
    (if round_up { v.ceil() } else { v.floor() }) as i32
}

/// The template with the hash label removed, for comparing ReplicaSets to their Deployment.
fn template_without_hash(t: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>) -> Value {
    let mut v = serde_json::to_value(t).unwrap_or(Value::Null);
    if let Some(labels) = v.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        labels.remove(HASH_LABEL);
    }
    v
}

fn same_template(a: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>, b: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>) -> bool {
    util::without_zeros(&template_without_hash(a)) == util::without_zeros(&template_without_hash(b))
}

fn limits(d: &Deployment) -> (i32, i32) {
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ru = d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.rolling_update.as_ref());
    let surge = resolve(ru.and_then(|r| r.max_surge.as_ref()), replicas, "25%", true);
    let mut unavailable = resolve(ru.and_then(|r| r.max_unavailable.as_ref()), replicas, "25%", false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable.min(replicas))
}

impl Controller {
    pub async fn start(informers: Informers) {
        let c = Arc::new(Controller {
            recorder: Recorder::new(informers.client().clone(), "deployment-controller"),
            informers: informers.clone(),
            queue: WorkQueue::new(),
            written: Default::default(),
        });
        let deps = informers.get::<Deployment>();
        let rss = informers.get::<ReplicaSet>();
        util::queue_self(&deps, &c.queue);
        util::queue_controller(&rss, &c.queue, "Deployment");
        deps.synced().await;
        rss.synced().await;
        util::run_over("deployment", &deps, &c.queue, 4, c.clone(), |c, key| async move { c.sync(key).await });
    }

    async fn sync(&self, (ns, name): ObjKey) -> anyhow::Result<Option<Duration>> {
        let Some(d) = self.informers.get::<Deployment>().get(&ns, &name) else {
            return Ok(None);
        };
        if d.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let spec = d.spec.clone().unwrap_or_default();
        if spec.selector.match_labels.as_ref().is_none_or(|m| m.is_empty()) && spec.selector.match_expressions.as_ref().is_none_or(|m| m.is_empty()) {
            self.recorder.warning(d.as_ref(), "SelectingAll", "This deployment is selecting all pods. A non-empty selector is required.".into());
            return Ok(None);
        }
        let uid = d.uid().unwrap_or_default();
        let mut owned: Vec<Arc<ReplicaSet>> =
            self.informers.get::<ReplicaSet>().list_ns(&ns).into_iter().filter(|rs| util::controller_ref(rs.as_ref()).is_some_and(|r| r.uid == uid)).collect();
        owned.sort_by_key(|rs| (rs.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()), rs.name_any()));
        {
            let mut written = self.written.lock().unwrap();
            let stale = owned.iter().any(|rs| written.get(&rs.uid().unwrap_or_default()).is_some_and(|w| *w > rv(rs.as_ref())));
            if stale {
                // The ReplicaSet's update event requeues us; the delay is only a safety net.
                return Ok(Some(Duration::from_millis(200)));
            }
            written.retain(|uid, _| owned.iter().any(|rs| rs.uid().as_deref() == Some(uid.as_str())));
        }
        let new_rs = owned.iter().find(|rs| same_template(rs.spec.as_ref().and_then(|s| s.template.as_ref()), Some(&spec.template))).cloned();
        let old: Vec<Arc<ReplicaSet>> = owned.iter().filter(|rs| new_rs.as_ref().is_none_or(|n| n.uid() != rs.uid())).cloned().collect();
        let max_old_rev = old.iter().map(|rs| revision(rs)).max().unwrap_or(0);
        let replicas = spec.replicas.unwrap_or(1);
        let (surge, max_unavailable) = limits(&d);
        let paused = spec.paused == Some(true);

        let mut created = false;
        let mut progressed = false;
        let new_rs = match new_rs {
            Some(rs) if paused => Some(rs),
            Some(rs) => Some(self.sync_revision(&d, rs, max_old_rev).await?),
            None if paused => None,
            None => {
                let total: i32 = old.iter().map(|rs| spec_replicas(rs)).sum();
                let initial = if spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate") {
                    0
                } else if old.is_empty() {
                    replicas
                } else {
                    (replicas + surge - total).clamp(0, replicas)
                };
                created = true;
                Some(self.create_rs(&d, max_old_rev + 1, initial).await?)
            }
        };

        if !paused {
            if let Some(new_rs) = new_rs.as_ref() {
                let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
                if recreate {
                    let old_running: i32 = old.iter().map(|rs| spec_replicas(rs) + rs.status.as_ref().map(|s| s.replicas).unwrap_or(0)).sum();
                    for rs in &old {
                        if spec_replicas(rs) > 0 {
                            self.scale(&d, rs, 0).await?;
                            progressed = true;
                        }
                    }
                    if old_running == 0 && spec_replicas(new_rs) != replicas {
                        self.scale(&d, new_rs, replicas).await?;
                        progressed = true;
                    }
                } else {
                    // Scale up the new ReplicaSet within maxSurge.
                    let total: i32 = owned.iter().map(|rs| spec_replicas(rs)).sum::<i32>() + if created { spec_replicas(new_rs) } else { 0 };
                    let cur = spec_replicas(new_rs);
                    // Too many, or nothing old left to make room for: exactly `replicas`.
                    let target = if cur > replicas || old.iter().all(|rs| spec_replicas(rs) == 0) {
                        replicas
                    } else {
                        let max_total = replicas + surge;
                        if total >= max_total { cur } else { (cur + max_total - total).min(replicas) }
                    };
                    if target != cur {
                        self.scale(&d, new_rs, target).await?;
                        progressed = true;
                    }
                    let new_now = target;
                    // Scale down old ReplicaSets without going under the minimum available.
                    let old_total: i32 = old.iter().map(|rs| spec_replicas(rs)).sum();
                    if old_total > 0 {
                        let all = old_total + new_now;
                        let min_available = replicas - max_unavailable;
                        let new_unavailable = new_now - available(new_rs);
                        let mut budget = all - min_available - new_unavailable;
                        let mut targets: Vec<(Arc<ReplicaSet>, i32)> = old.iter().map(|rs| (rs.clone(), spec_replicas(rs))).collect();
                        // First the old pods that are not available anyway.
                        for (rs, t) in targets.iter_mut() {
                            if budget <= 0 {
                                break;
                            }
                            let unhealthy = (*t - available(rs)).max(0).min(budget);
                            *t -= unhealthy;
                            budget -= unhealthy;
                        }
                        // Then available ones, oldest first, keeping minAvailable.
                        let avail_total: i32 = targets.iter().map(|(rs, t)| available(rs).min(*t)).sum::<i32>() + available(new_rs);
                        let mut can = (avail_total - min_available).max(0).min(budget.max(0));
                        for (_, t) in targets.iter_mut() {
                            if can <= 0 {
                                break;
                            }
                            let n = (*t).min(can);
                            *t -= n;
                            can -= n;
                        }
                        for (rs, t) in targets {
                            if t != spec_replicas(&rs) {
                                self.scale(&d, &rs, t).await?;
                                progressed = true;
                            }
                        }
                    }
                }
            }
            self.cleanup(&d, &old, spec.revision_history_limit.unwrap_or(10)).await?;
        }
        self.update_status(&d, &owned, new_rs.as_deref(), created, progressed, paused).await
    }

    /// An existing ReplicaSet that matches the template becomes the newest revision again
    /// (rollback), and gets the Deployment's current annotations.
    async fn sync_revision(&self, d: &Deployment, rs: Arc<ReplicaSet>, max_old_rev: i64) -> anyhow::Result<Arc<ReplicaSet>> {
        let cur_rev = revision(&rs);
        let mut annotations: BTreeMap<String, Value> = BTreeMap::new();
        for (k, v) in d.annotations() {
            if !skip_copy(k) && rs.annotations().get(k) != Some(v) {
                annotations.insert(k.clone(), json!(v));
            }
        }
        if cur_rev <= max_old_rev {
            annotations.insert(REVISION.into(), json!((max_old_rev + 1).to_string()));
            if cur_rev > 0 {
                let hist = rs.annotations().get(REVISION_HISTORY).map(|h| format!("{h},{cur_rev}")).unwrap_or_else(|| cur_rev.to_string());
                annotations.insert(REVISION_HISTORY.into(), json!(hist));
            }
        }
        let rev = annotations.get(REVISION).and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| cur_rev.to_string());
        self.set_deployment_revision(d, &rev).await?;
        if annotations.is_empty() {
            return Ok(rs);
        }
        let api: Api<ReplicaSet> = Api::namespaced(self.informers.client().clone(), &rs.namespace().unwrap_or_default());
        let updated = api.patch(&rs.name_any(), &PatchParams::default(), &Patch::Merge(&json!({"metadata": {"annotations": annotations}}))).await?;
        self.written.lock().unwrap().insert(updated.uid().unwrap_or_default(), rv(&updated));
        Ok(Arc::new(updated))
    }

    async fn set_deployment_revision(&self, d: &Deployment, rev: &str) -> anyhow::Result<()> {
        if d.annotations().get(REVISION).map(String::as_str) == Some(rev) {
            return Ok(());
        }
        let api: Api<Deployment> = Api::namespaced(self.informers.client().clone(), &d.namespace().unwrap_or_default());
        api.patch(&d.name_any(), &PatchParams::default(), &Patch::Merge(&json!({"metadata": {"annotations": {REVISION: rev}}}))).await?;
        Ok(())
    }

    async fn create_rs(&self, d: &Deployment, rev: i64, replicas: i32) -> anyhow::Result<Arc<ReplicaSet>> {
        let ns = d.namespace().unwrap_or_default();
        let spec = d.spec.clone().unwrap_or_default();
        let collision = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = util::template_hash(&util::without_zeros(&template_without_hash(Some(&spec.template))), collision);
        let mut template = spec.template.clone();
        template.metadata.get_or_insert_with(Default::default).labels.get_or_insert_with(Default::default).insert(HASH_LABEL.into(), hash.clone());
        let mut selector = spec.selector.clone();
        selector.match_labels.get_or_insert_with(Default::default).insert(HASH_LABEL.into(), hash.clone());
        let mut annotations: BTreeMap<String, String> = d.annotations().iter().filter(|(k, _)| !skip_copy(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        let (surge, _) = limits(d);
        let dr = spec.replicas.unwrap_or(1);
        annotations.insert(REVISION.into(), rev.to_string());
        annotations.insert(DESIRED_REPLICAS.into(), dr.to_string());
        annotations.insert(MAX_REPLICAS.into(), (dr + surge).to_string());
        let mut labels = spec.template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
        labels.insert(HASH_LABEL.into(), hash.clone());
        let name = format!("{}-{}", d.name_any(), hash);
        let rs = ReplicaSet {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                labels: Some(labels),
                annotations: Some(annotations),
                owner_references: Some(vec![util::owner_ref(d)]),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::apps::v1::ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let api: Api<ReplicaSet> = Api::namespaced(self.informers.client().clone(), &ns);
        match api.create(&PostParams::default(), &rs).await {
            Ok(created) => {
                self.written.lock().unwrap().insert(created.uid().unwrap_or_default(), rv(&created));
                self.set_deployment_revision(d, &rev.to_string()).await?;
                if replicas > 0 {
                    self.recorder.normal(d, "ScalingReplicaSet", format!("Scaled up replica set {name} from 0 to {replicas}"));
                }
                Ok(Arc::new(created))
            }
            Err(e) if r8s_client::is_conflict(&e) => {
                // A ReplicaSet of that name with another template: bump collisionCount and retry.
                let existing = api.get(&name).await?;
                if !same_template(existing.spec.as_ref().and_then(|s| s.template.as_ref()), Some(&spec.template)) || !util::is_owned_by(&existing, d) {
                    let dapi: Api<Deployment> = Api::namespaced(self.informers.client().clone(), &ns);
                    dapi.patch_status(
                        &d.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&json!({"status": {"collisionCount": collision.unwrap_or(0) + 1}})),
                    )
                    .await?;
                }
                anyhow::bail!("replica set {name} already exists")
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn scale(&self, d: &Deployment, rs: &ReplicaSet, to: i32) -> anyhow::Result<()> {
        let from = spec_replicas(rs);
        let (surge, _) = limits(d);
        let dr = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let api: Api<ReplicaSet> = Api::namespaced(self.informers.client().clone(), &rs.namespace().unwrap_or_default());
        let patch = json!({"metadata": {"annotations": {DESIRED_REPLICAS: dr.to_string(), MAX_REPLICAS: (dr + surge).to_string()}}, "spec": {"replicas": to}});
        let updated = api.patch(&rs.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        self.written.lock().unwrap().insert(updated.uid().unwrap_or_default(), rv(&updated));
        let dir = if to > from { "up" } else { "down" };
        self.recorder.normal(d, "ScalingReplicaSet", format!("Scaled {dir} replica set {} from {from} to {to}", rs.name_any()));
        Ok(())
    }

    /// Deletes the oldest scaled-down ReplicaSets beyond revisionHistoryLimit.
    async fn cleanup(&self, d: &Deployment, old: &[Arc<ReplicaSet>], limit: i32) -> anyhow::Result<()> {
        let mut dead: Vec<&Arc<ReplicaSet>> = old
            .iter()
            .filter(|rs| spec_replicas(rs) == 0 && rs.status.as_ref().map(|s| s.replicas).unwrap_or(0) == 0 && rs.metadata.deletion_timestamp.is_none())
            .collect();
        if dead.len() as i32 <= limit {
            return Ok(());
        }
        dead.sort_by_key(|rs| revision(rs));
        let api: Api<ReplicaSet> = Api::namespaced(self.informers.client().clone(), &d.namespace().unwrap_or_default());
        for rs in dead.iter().take(dead.len() - limit.max(0) as usize) {
            match api.delete(&rs.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if r8s_client::is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn update_status(
        &self,
        d: &Deployment,
        owned: &[Arc<ReplicaSet>],
        new_rs: Option<&ReplicaSet>,
        created: bool,
        progressed: bool,
        paused: bool,
    ) -> anyhow::Result<Option<Duration>> {
        let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let (_, max_unavailable) = limits(d);
        let st = |f: fn(&k8s_openapi::api::apps::v1::ReplicaSetStatus) -> i32| -> i32 { owned.iter().filter_map(|rs| rs.status.as_ref()).map(f).sum() };
        let total = st(|s| s.replicas);
        let ready = st(|s| s.ready_replicas.unwrap_or(0));
        let avail = st(|s| s.available_replicas.unwrap_or(0));
        let updated = new_rs.and_then(|rs| rs.status.as_ref()).map(|s| s.replicas).unwrap_or(0);
        let new_name = new_rs.map(|rs| rs.name_any()).unwrap_or_default();
        let now = r8s_client::now();
        let old_conds = d.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        let cond = |type_: &str, status: &str, reason: &str, message: String, bump_update: bool| -> Value {
            let prev = old_conds.iter().find(|c| c.type_ == type_);
            let same = prev.is_some_and(|p| p.status == status);
            let transition = if same { prev.and_then(|p| p.last_transition_time.clone()).unwrap_or(now.clone()) } else { now.clone() };
            let update = if same && !bump_update && prev.and_then(|p| p.reason.as_deref()) == Some(reason) {
                prev.and_then(|p| p.last_update_time.clone()).unwrap_or(now.clone())
            } else {
                now.clone()
            };
            json!({"type": type_, "status": status, "lastUpdateTime": update, "lastTransitionTime": transition, "reason": reason, "message": message})
        };
        let available_cond = if avail >= replicas - max_unavailable {
            cond("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.".into(), false)
        } else {
            cond("Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.".into(), false)
        };
        let complete = updated == replicas && avail >= replicas && total == replicas && new_rs.is_some();
        let deadline = d.spec.as_ref().and_then(|s| s.progress_deadline_seconds).unwrap_or(600);
        let prev_prog = old_conds.iter().find(|c| c.type_ == "Progressing");
        let mut requeue = None;
        let progressing = if paused {
            cond("Progressing", "Unknown", "DeploymentPaused", "Deployment is paused".into(), false)
        } else if created {
            cond("Progressing", "True", "NewReplicaSetCreated", format!("Created new replica set \"{new_name}\""), true)
        } else if complete {
            cond("Progressing", "True", "NewReplicaSetAvailable", format!("ReplicaSet \"{new_name}\" has successfully progressed."), false)
        } else if status_progressed(d, total, updated, ready, avail) || prev_prog.is_none_or(|p| p.reason.as_deref() == Some("DeploymentPaused")) {
            // Upstream's DeploymentProgressing: the counters moved since the last status.
            requeue = Some(Duration::from_secs(deadline.max(1) as u64));
            cond("Progressing", "True", "ReplicaSetUpdated", format!("ReplicaSet \"{new_name}\" is progressing."), true)
        } else if let Some(p) = prev_prog.filter(|p| p.reason.as_deref() == Some("NewReplicaSetAvailable")) {
            // Scaling a finished rollout keeps "has successfully progressed" until the counters
            // move; it never times out (upstream's DeploymentTimedOut).
            if progressed {
                requeue = Some(Duration::from_secs(deadline.max(1) as u64));
            }
            serde_json::to_value(p).unwrap()
        } else {
            let last = prev_prog.and_then(|p| p.last_update_time.as_ref()).map(|t| t.0);
            let elapsed = last.map(|t| k8s_openapi::jiff::Timestamp::now().duration_since(t).as_secs()).unwrap_or(0);
            if elapsed >= deadline as i64 {
                cond("Progressing", "False", "ProgressDeadlineExceeded", format!("ReplicaSet \"{new_name}\" has timed out progressing."), false)
            } else {
                requeue = Some(Duration::from_secs((deadline as i64 - elapsed).max(1) as u64));
                let p = prev_prog.unwrap();
                serde_json::to_value(p).unwrap()
            }
        };
        let nz = |n: i32| if n == 0 { Value::Null } else { json!(n) };
        let status = json!({
            "observedGeneration": d.metadata.generation,
            "replicas": nz(total),
            "updatedReplicas": nz(updated),
            "readyReplicas": nz(ready),
            "availableReplicas": nz(avail),
            "unavailableReplicas": nz((replicas - avail).max(0)),
            "conditions": [available_cond, progressing],
            "collisionCount": d.status.as_ref().and_then(|s| s.collision_count),
        });
        let cur = serde_json::to_value(&d.status).unwrap_or(Value::Null);
        let changed = ["observedGeneration", "replicas", "updatedReplicas", "readyReplicas", "availableReplicas", "unavailableReplicas"]
            .iter()
            .any(|f| util::norm(cur.get(*f), false) != util::norm(Some(&status[*f]), false))
            || strip_times(cur.get("conditions")) != strip_times(status.get("conditions"));
        if changed {
            let api: Api<Deployment> = Api::namespaced(self.informers.client().clone(), &d.namespace().unwrap_or_default());
            match api.patch_status(&d.name_any(), &PatchParams::default(), &Patch::Merge(&json!({"status": status}))).await {
                Ok(_) => {}
                Err(e) if r8s_client::is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(requeue)
    }
}

/// Conditions compared without their timestamps (a refresh of lastUpdateTime alone is no change).
fn strip_times(v: Option<&Value>) -> Vec<(String, String, String, String)> {
    v.and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                    (s("type"), s("status"), s("reason"), s("message"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Upstream's `DeploymentProgressing`: more updated, ready or available replicas than the
/// deployment's last status, or fewer old ones.
fn status_progressed(d: &Deployment, total: i32, updated: i32, ready: i32, avail: i32) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_updated = old.updated_replicas.unwrap_or(0);
    let old_old = old.replicas.unwrap_or(0) - old_updated;
    updated > old_updated || total - updated < old_old || ready > old.ready_replicas.unwrap_or(0) || avail > old.available_replicas.unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surge_rounds_up_unavailable_down() {
        assert_eq!(resolve(None, 3, "25%", true), 1);
        assert_eq!(resolve(None, 3, "25%", false), 0);
        assert_eq!(resolve(Some(&IntOrString::Int(2)), 3, "25%", false), 2);
        assert_eq!(resolve(Some(&IntOrString::String("50%".into())), 5, "25%", true), 3);
    }
}
