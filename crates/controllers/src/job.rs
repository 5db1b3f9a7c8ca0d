//! Job: runs pods until `completions` succeed (NonIndexed or Indexed), at most
//! `parallelism` at a time; fails after `backoffLimit` failed pods or `activeDeadlineSeconds`;
//! a finished Job with `ttlSecondsAfterFinished` is deleted after that time.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use r8s_client::events::Recorder;
use r8s_client::informer::{Informers, ObjKey};
use r8s_client::queue::WorkQueue;
use serde_json::{Value, json};

use crate::expectations::Expectations;
use crate::util;

const INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";

pub struct Controller {
    informers: Informers,
    queue: WorkQueue<ObjKey>,
    recorder: Recorder,
    expectations: Expectations,
}

pub fn finished(job: &Job) -> Option<&str> {
    job.status.as_ref()?.conditions.as_ref()?.iter().find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True").map(|c| c.type_.as_str())
}

fn index_of(p: &Pod) -> Option<i32> {
    p.annotations().get(INDEX_ANNOTATION)?.parse().ok()
}

/// "0-2,4" as upstream writes completedIndexes.
fn compress(idx: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let v: Vec<i32> = idx.iter().copied().collect();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        while i + 1 < v.len() && v[i + 1] == v[i] + 1 {
            i += 1;
        }
        out.push(if start == v[i] { start.to_string() } else { format!("{start}-{}", v[i]) });
        i += 1;
    }
    out.join(",")
}

impl Controller {
    pub async fn start(informers: Informers) {
        let c = Arc::new(Controller {
            recorder: Recorder::new(informers.client().clone(), "job-controller"),
            informers: informers.clone(),
            queue: WorkQueue::new(),
            expectations: Expectations::default(),
        });
        let jobs = informers.get::<Job>();
        let pods = informers.get::<Pod>();
        util::queue_self(&jobs, &c.queue);
        {
            let c2 = c.clone();
            pods.on_change(move |old, new| {
                let p = new.or(old).unwrap();
                if let Some(r) = util::controller_ref(p.as_ref()).filter(|r| r.kind == "Job") {
                    let key = (p.namespace().unwrap_or_default(), r.name.clone());
                    c2.expectations.observe(&key, old.map(|o| o.as_ref()), new.map(|n| n.as_ref()));
                    c2.queue.add(key);
                }
            });
        }
        jobs.synced().await;
        pods.synced().await;
        util::run_over("job", &jobs, &c.queue, 4, c.clone(), |c, key| async move { c.sync(key).await });
    }

    async fn sync(&self, key: ObjKey) -> anyhow::Result<Option<Duration>> {
        let (ns, name) = key.clone();
        let Some(job) = self.informers.get::<Job>().get(&ns, &name) else {
            return Ok(None);
        };
        if job.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let client = self.informers.client().clone();
        let japi: Api<Job> = Api::namespaced(client.clone(), &ns);
        if finished(&job).is_some() {
            return self.ttl(&job, &japi).await;
        }
        let spec = job.spec.clone().unwrap_or_default();
        let uid = job.uid().unwrap_or_default();
        let pods: Vec<Arc<Pod>> =
            self.informers.get::<Pod>().list_ns(&ns).into_iter().filter(|p| util::controller_ref(p.as_ref()).is_some_and(|r| r.uid == uid)).collect();
        let active: Vec<&Arc<Pod>> = pods.iter().filter(|p| util::is_active(p)).collect();
        let prev = job.status.clone().unwrap_or_default();
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        let succeeded_idx: BTreeSet<i32> = pods.iter().filter(|p| util::phase(p) == "Succeeded").filter_map(|p| index_of(p)).collect();
        let succeeded = if indexed { succeeded_idx.len() as i32 } else { pods.iter().filter(|p| util::phase(p) == "Succeeded").count() as i32 }
            .max(prev.succeeded.unwrap_or(0));
        let failed = (pods.iter().filter(|p| util::phase(p) == "Failed").count() as i32).max(prev.failed.unwrap_or(0));
        let ready = active.iter().filter(|p| util::is_ready(p)).count() as i32;
        let now = r8s_client::now();
        let start_time = prev.start_time.clone().unwrap_or(now.clone());
        let parallelism = spec.parallelism.unwrap_or(1);
        let completions = spec.completions;
        let backoff_limit = spec.backoff_limit.unwrap_or(6);
        let suspended = spec.suspend == Some(true);
        let mut conditions: Vec<Value> = prev.conditions.iter().flatten().map(|c| serde_json::to_value(c).unwrap()).collect();
        let cond = |t: &str, reason: &str, msg: &str| json!({"type": t, "status": "True", "reason": reason, "message": msg, "lastProbeTime": now, "lastTransitionTime": now});
        let mut requeue = None;
        let mut completion_time = None;
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);

        if !suspended && set_suspended(&mut conditions, false, &now) {
            self.recorder.normal(job.as_ref(), "Resumed", "Job resumed".into());
        }
        let deadline_hit = spec.active_deadline_seconds.is_some_and(|d| Timestamp::now().duration_since(start_time.0).as_secs() >= d) && !suspended;
        let done = match completions {
            Some(c) => succeeded >= c,
            None => succeeded > 0 && active.is_empty(),
        };
        if failed > backoff_limit || deadline_hit {
            let (reason, msg) = if deadline_hit {
                ("DeadlineExceeded", "Job was active longer than specified deadline")
            } else {
                ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
            };
            for p in &active {
                let _ = api.delete(&p.name_any(), &DeleteParams::default()).await;
            }
            conditions.push(cond("FailureTarget", reason, msg));
            conditions.push(cond("Failed", reason, msg));
            self.recorder.warning(job.as_ref(), reason, msg.into());
        } else if done {
            for p in &active {
                let _ = api.delete(&p.name_any(), &DeleteParams::default()).await;
            }
            conditions.push(cond("SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods"));
            conditions.push(cond("Complete", "CompletionsReached", "Reached expected number of succeeded pods"));
            completion_time = Some(now.clone());
            self.recorder.normal(job.as_ref(), "Completed", "Job completed".into());
        } else if suspended {
            for p in &active {
                let _ = api.delete(&p.name_any(), &DeleteParams::default()).await;
            }
            // Upstream's JobSuspended condition and Suspended event, once.
            if set_suspended(&mut conditions, true, &now) {
                self.recorder.normal(job.as_ref(), "Suspended", "Job suspended".into());
            }
        } else if self.expectations.satisfied(&key) {
            // How many more to run, and which indexes.
            let remaining = completions.map(|c| c - succeeded).unwrap_or(parallelism);
            let want = parallelism.min(remaining).max(0);
            let missing = want - active.len() as i32;
            // After failures, new pods wait 10 s doubling per failure, at most 6 min (upstream).
            let backoff = (failed > 0).then(|| Duration::from_secs(10).saturating_mul(1 << (failed - 1).min(6) as u32).min(Duration::from_secs(360)));
            let last_failure = pods
                .iter()
                .filter(|p| util::phase(p) == "Failed")
                .filter_map(|p| {
                    p.status
                        .as_ref()?
                        .container_statuses
                        .as_ref()?
                        .iter()
                        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref().map(|t| t.0))
                        .max()
                })
                .max();
            let wait = match (backoff, last_failure) {
                (Some(b), Some(at)) => b.checked_sub(Duration::from_secs(Timestamp::now().duration_since(at).as_secs().max(0) as u64)),
                _ => None,
            };
            if missing > 0 && wait.is_some_and(|w| !w.is_zero()) {
                requeue = wait;
            } else if missing > 0 {
                let mut indexes: Vec<Option<i32>> = Vec::new();
                if indexed {
                    let busy: BTreeSet<i32> = active.iter().filter_map(|p| index_of(p)).collect();
                    for i in 0..completions.unwrap_or(0) {
                        if indexes.len() as i32 >= missing {
                            break;
                        }
                        if !succeeded_idx.contains(&i) && !busy.contains(&i) {
                            indexes.push(Some(i));
                        }
                    }
                } else {
                    indexes = vec![None; missing as usize];
                }
                self.expectations.expect(&key, indexes.len() as i64, 0);
                for idx in indexes {
                    match api.create(&PostParams::default(), &self.pod(&job, idx)).await {
                        Ok(p) => self.recorder.normal(job.as_ref(), "SuccessfulCreate", format!("Created pod: {}", p.name_any())),
                        Err(e) => {
                            self.expectations.lower(&key, 1, 0);
                            self.recorder.warning(job.as_ref(), "FailedCreate", format!("Error creating: {}", util::api_message(&e)));
                        }
                    }
                }
            } else if missing < 0 {
                for p in active.iter().take((-missing) as usize) {
                    let _ = api.delete(&p.name_any(), &DeleteParams::default()).await;
                }
            }
            if let Some(d) = spec.active_deadline_seconds {
                let left = d - Timestamp::now().duration_since(start_time.0).as_secs();
                let deadline = Duration::from_secs(left.max(1) as u64);
                requeue = Some(requeue.map_or(deadline, |r: Duration| r.min(deadline)));
            }
        }
        let nz = |n: i32| if n == 0 { Value::Null } else { json!(n) };
        let mut status = json!({
            "active": nz(if done || failed > backoff_limit { 0 } else { active.len() as i32 }),
            "succeeded": nz(succeeded),
            "failed": nz(failed),
            "ready": ready,
            "terminating": 0,
            "startTime": start_time,
            "uncountedTerminatedPods": {},
            "conditions": if conditions.is_empty() { Value::Null } else { json!(conditions) },
        });
        if let Some(t) = completion_time {
            status["completionTime"] = json!(t);
        }
        if indexed {
            status["completedIndexes"] = json!(compress(&succeeded_idx));
        }
        let cur = serde_json::to_value(&job.status)?;
        let changed = ["active", "succeeded", "failed", "ready", "conditions", "startTime", "completedIndexes"]
            .iter()
            .any(|f| util::norm(cur.get(*f), false) != util::norm(status.get(*f), false));
        if changed {
            match japi.patch_status(&name, &PatchParams::default(), &Patch::Merge(&json!({"status": status}))).await {
                Ok(_) => {}
                Err(e) if r8s_client::is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(requeue)
    }

    /// TTL-after-finished: delete the Job (and, in the background, its pods) once its time is up.
    async fn ttl(&self, job: &Job, api: &Api<Job>) -> anyhow::Result<Option<Duration>> {
        let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
            return Ok(None);
        };
        let status = job.status.clone().unwrap_or_default();
        let finished_at = status
            .completion_time
            .or_else(|| status.conditions.iter().flatten().find(|c| c.type_ == "Complete" || c.type_ == "Failed").and_then(|c| c.last_transition_time.clone()));
        let Some(at) = finished_at else {
            return Ok(None);
        };
        let left = ttl as i64 - Timestamp::now().duration_since(at.0).as_secs();
        if left > 0 {
            return Ok(Some(Duration::from_secs(left as u64)));
        }
        match api.delete(&job.name_any(), &DeleteParams::background()).await {
            Ok(_) => Ok(None),
            Err(e) if r8s_client::is_not_found(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn pod(&self, job: &Job, index: Option<i32>) -> Pod {
        let spec = job.spec.clone().unwrap_or_default();
        let md = spec.template.metadata.clone().unwrap_or_default();
        let mut labels = md.labels.unwrap_or_default();
        let mut annotations = md.annotations.unwrap_or_default();
        let mut pspec = spec.template.spec.clone().unwrap_or_default();
        let mut generate = format!("{}-", job.name_any());
        if let Some(i) = index {
            labels.insert(INDEX_ANNOTATION.into(), i.to_string());
            annotations.insert(INDEX_ANNOTATION.into(), i.to_string());
            generate = format!("{}-{i}-", job.name_any());
            pspec.hostname.get_or_insert_with(|| format!("{}-{i}", job.name_any()));
            for c in pspec.containers.iter_mut() {
                c.env.get_or_insert_with(Vec::new).push(k8s_openapi::api::core::v1::EnvVar {
                    name: "JOB_COMPLETION_INDEX".into(),
                    value: Some(i.to_string()),
                    value_from: None,
                });
            }
        }
        Pod {
            metadata: kube::api::ObjectMeta {
                generate_name: Some(generate),
                namespace: job.namespace(),
                labels: Some(labels),
                annotations: if annotations.is_empty() { None } else { Some(annotations) },
                owner_references: Some(vec![util::owner_ref(job)]),
                ..Default::default()
            },
            spec: Some(pspec),
            status: None,
        }
    }
}

/// Upstream's `ensureJobConditionStatus` for the Suspended condition: True (JobSuspended) while
/// suspended; a True one turns False (JobResumed) on resume; none is added for a job never
/// suspended. Returns whether it changed.
fn set_suspended(conditions: &mut Vec<Value>, suspended: bool, now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> bool {
    let want = if suspended { "True" } else { "False" };
    let existing = conditions.iter_mut().find(|c| c.get("type").and_then(Value::as_str) == Some("Suspended"));
    let (reason, message) = if suspended { ("JobSuspended", "Job suspended") } else { ("JobResumed", "Job resumed") };
    match existing {
        Some(c) if c.get("status").and_then(Value::as_str) == Some(want) => false,
        Some(c) => {
            *c = json!({"type": "Suspended", "status": want, "reason": reason, "message": message, "lastProbeTime": now, "lastTransitionTime": now});
            true
        }
        None if suspended => {
            conditions
                .push(json!({"type": "Suspended", "status": "True", "reason": reason, "message": message, "lastProbeTime": now, "lastTransitionTime": now}));
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_are_ranges() {
        assert_eq!(compress(&[0, 1, 2, 4, 6, 7].into_iter().collect()), "0-2,4,6-7");
        assert_eq!(compress(&BTreeSet::new()), "");
    }

    #[test]
    fn suspended_condition_as_upstream() {
        let now = r8s_client::now();
        let mut conds = vec![];
        assert!(!set_suspended(&mut conds, false, &now), "never suspended: no condition");
        assert!(conds.is_empty());
        assert!(set_suspended(&mut conds, true, &now));
        assert!(!set_suspended(&mut conds, true, &now));
        assert_eq!((conds[0]["status"].as_str(), conds[0]["reason"].as_str()), (Some("True"), Some("JobSuspended")));
        assert!(set_suspended(&mut conds, false, &now));
        assert_eq!(
            (conds[0]["status"].as_str(), conds[0]["reason"].as_str(), conds[0]["message"].as_str()),
            (Some("False"), Some("JobResumed"), Some("Job resumed"))
        );
    }
}
