//! StatefulSet: pods with stable names `<set>-<ordinal>`, hostnames under the governing
//! headless service, PVCs from volumeClaimTemplates; OrderedReady creates in order and
//! deletes in reverse, one at a time, Parallel does all at once; RollingUpdate replaces pods
//! from the highest ordinal down to the partition.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, Volume};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use r8s_client::events::Recorder;
use r8s_client::informer::{Informers, ObjKey};
use r8s_client::queue::WorkQueue;
use serde_json::json;

use crate::util;

pub struct Controller {
    informers: Informers,
    queue: WorkQueue<ObjKey>,
    recorder: Recorder,
}

fn ordinal(set: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

fn revision_of(p: &Pod) -> Option<&String> {
    p.labels().get("controller-revision-hash")
}

impl Controller {
    pub async fn start(informers: Informers) {
        let c = Arc::new(Controller {
            recorder: Recorder::new(informers.client().clone(), "statefulset-controller"),
            informers: informers.clone(),
            queue: WorkQueue::new(),
        });
        let sets = informers.get::<StatefulSet>();
        let pods = informers.get::<Pod>();
        informers.get::<ControllerRevision>();
        informers.get::<PersistentVolumeClaim>();
        util::queue_self(&sets, &c.queue);
        util::queue_controller(&pods, &c.queue, "StatefulSet");
        sets.synced().await;
        pods.synced().await;
        util::run_over("statefulset", &sets, &c.queue, 2, c.clone(), |c, key| async move { c.sync(key).await });
    }

    async fn sync(&self, (ns, name): ObjKey) -> anyhow::Result<Option<Duration>> {
        let Some(set) = self.informers.get::<StatefulSet>().get(&ns, &name) else {
            return Ok(None);
        };
        if set.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let spec = set.spec.clone().unwrap_or_default();
        let replicas = spec.replicas.unwrap_or(1);
        let template = serde_json::to_value(&spec.template)?;
        let sel_labels = spec.selector.match_labels.clone().unwrap_or_default();
        let hash = crate::history::ensure(&self.informers, set.as_ref(), &sel_labels, &template).await?;
        let update_rev = format!("{name}-{hash}");
        let current_rev = set.status.as_ref().and_then(|s| s.current_revision.clone()).unwrap_or_else(|| update_rev.clone());
        let uid = set.uid().unwrap_or_default();
        let mut pods: BTreeMap<i32, Arc<Pod>> = BTreeMap::new();
        for p in self.informers.get::<Pod>().list_ns(&ns) {
            if util::controller_ref(p.as_ref()).is_some_and(|r| r.uid == uid)
                && let Some(i) = ordinal(&name, &p.name_any())
            {
                pods.insert(i, p);
            }
        }
        let ordered = spec.pod_management_policy.as_deref() != Some("Parallel");
        let api: Api<Pod> = Api::namespaced(self.informers.client().clone(), &ns);
        let healthy = |p: &Pod| util::phase(p) == "Running" && util::is_ready(p) && p.metadata.deletion_timestamp.is_none();
        'work: {
            // Create missing pods and replace failed ones, in ordinal order.
            for i in 0..replicas {
                match pods.get(&i) {
                    None => {
                        self.create_pod(&set, i, &update_rev).await?;
                        if ordered {
                            break 'work;
                        }
                    }
                    Some(p) if util::phase(p) == "Failed" || util::phase(p) == "Succeeded" => {
                        if p.metadata.deletion_timestamp.is_none() {
                            self.delete_pod(&set, &api, p).await?;
                        }
                        if ordered {
                            break 'work;
                        }
                    }
                    Some(p) if ordered && !healthy(p) => break 'work,
                    _ => {}
                }
            }
            // Scale down from the highest ordinal.
            let condemned: Vec<&Arc<Pod>> = pods.range(replicas..).rev().map(|(_, p)| p).collect();
            for p in &condemned {
                if p.metadata.deletion_timestamp.is_some() {
                    if ordered {
                        break 'work;
                    }
                    continue;
                }
                self.delete_pod(&set, &api, p).await?;
                if ordered {
                    break 'work;
                }
            }
            // Rolling update: highest ordinal first, down to the partition, one at a time.
            let rolling = spec.update_strategy.as_ref().and_then(|s| s.type_.as_deref()).unwrap_or("RollingUpdate") == "RollingUpdate";
            if rolling {
                let partition = spec.update_strategy.as_ref().and_then(|s| s.rolling_update.as_ref()).and_then(|r| r.partition).unwrap_or(0);
                let all_healthy = (0..replicas).all(|i| pods.get(&i).is_some_and(|p| healthy(p)));
                if all_healthy {
                    for i in (partition..replicas).rev() {
                        let p = &pods[&i];
                        if revision_of(p) != Some(&update_rev) {
                            self.delete_pod(&set, &api, p).await?;
                            break;
                        }
                    }
                }
            }
        }
        self.apply_claim_retention(&set, &pods).await?;
        // Status.
        let live: Vec<&Arc<Pod>> = pods.values().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
        let ready = live.iter().filter(|p| util::is_ready(p)).count() as i32;
        let available = live.iter().filter(|p| util::is_available(p, spec.min_ready_seconds.unwrap_or(0))).count() as i32;
        let updated = live.iter().filter(|p| revision_of(p) == Some(&update_rev)).count() as i32;
        let current = live.iter().filter(|p| revision_of(p) == Some(&current_rev)).count() as i32;
        let done = updated == replicas && live.len() as i32 == replicas && ready == replicas;
        let new_current = if done { update_rev.clone() } else { current_rev.clone() };
        let status = json!({
            "observedGeneration": set.metadata.generation,
            "replicas": live.len(),
            "readyReplicas": ready,
            "currentReplicas": if done { updated } else { current },
            "updatedReplicas": updated,
            "currentRevision": new_current,
            "updateRevision": update_rev,
            "availableReplicas": available,
            "collisionCount": set.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0),
        });
        let cur = serde_json::to_value(&set.status)?;
        let changed = status.as_object().unwrap().iter().any(|(k, v)| util::norm(cur.get(k), true) != util::norm(Some(v), true));
        if changed {
            let sapi: Api<StatefulSet> = Api::namespaced(self.informers.client().clone(), &ns);
            match sapi.patch_status(&name, &PatchParams::default(), &Patch::Merge(&json!({"status": status}))).await {
                Ok(_) => {}
                Err(e) if r8s_client::is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    /// persistentVolumeClaimRetentionPolicy: with whenDeleted=Delete the claims are owned by the
    /// set (the garbage collector removes them with it); with whenScaled=Delete the claims of
    /// ordinals scaled away are deleted once their pods are gone.
    async fn apply_claim_retention(&self, set: &StatefulSet, pods: &BTreeMap<i32, Arc<Pod>>) -> anyhow::Result<()> {
        let spec = set.spec.clone().unwrap_or_default();
        let Some(templates) = spec.volume_claim_templates.as_ref().filter(|t| !t.is_empty()) else {
            return Ok(());
        };
        let policy = spec.persistent_volume_claim_retention_policy.clone().unwrap_or_default();
        let when_deleted = policy.when_deleted.as_deref() == Some("Delete");
        let when_scaled = policy.when_scaled.as_deref() == Some("Delete");
        let ns = set.namespace().unwrap_or_default();
        let name = set.name_any();
        let uid = set.uid().unwrap_or_default();
        let replicas = spec.replicas.unwrap_or(1);
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.informers.client().clone(), &ns);
        let claims = self.informers.get::<PersistentVolumeClaim>();
        for t in templates {
            let prefix = format!("{}-{name}-", t.name_any());
            for claim in claims.list_ns(&ns).into_iter().filter(|c| c.name_any().starts_with(&prefix)) {
                let Some(ordinal) = claim.name_any()[prefix.len()..].parse::<i32>().ok() else {
                    continue;
                };
                if when_scaled && ordinal >= replicas && !pods.contains_key(&ordinal) && claim.metadata.deletion_timestamp.is_none() {
                    match api.delete(&claim.name_any(), &DeleteParams::default()).await {
                        Ok(_) => self.recorder.normal(set, "SuccessfulDelete", format!("delete Claim {} in StatefulSet {name} success", claim.name_any())),
                        Err(e) if r8s_client::is_not_found(&e) => {}
                        Err(e) => return Err(e.into()),
                    }
                    continue;
                }
                let owners = claim.owner_references().to_vec();
                let owned = owners.iter().any(|o| o.uid == uid);
                if owned != when_deleted {
                    let mut new_owners: Vec<_> = owners.into_iter().filter(|o| o.uid != uid).collect();
                    if when_deleted {
                        let mut r = util::owner_ref(set);
                        r.controller = Some(false);
                        new_owners.push(r);
                    }
                    let patch = if new_owners.is_empty() {
                        json!({"metadata": {"ownerReferences": null}})
                    } else {
                        json!({"metadata": {"ownerReferences": new_owners}})
                    };
                    api.patch(&claim.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
                }
            }
        }
        Ok(())
    }

    async fn delete_pod(&self, set: &StatefulSet, api: &Api<Pod>, p: &Pod) -> anyhow::Result<()> {
        match api.delete(&p.name_any(), &DeleteParams::default()).await {
            Ok(_) => {
                self.recorder.normal(set, "SuccessfulDelete", format!("delete Pod {} in StatefulSet {} successful", p.name_any(), set.name_any()));
                Ok(())
            }
            Err(e) if r8s_client::is_not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn create_pod(&self, set: &StatefulSet, i: i32, revision: &str) -> anyhow::Result<()> {
        let ns = set.namespace().unwrap_or_default();
        let name = set.name_any();
        let pod_name = format!("{name}-{i}");
        let spec = set.spec.clone().unwrap_or_default();
        let md = spec.template.metadata.clone().unwrap_or_default();
        let mut labels = md.labels.unwrap_or_default();
        labels.insert("controller-revision-hash".into(), revision.into());
        labels.insert("statefulset.kubernetes.io/pod-name".into(), pod_name.clone());
        labels.insert("apps.kubernetes.io/pod-index".into(), i.to_string());
        let mut pspec = spec.template.spec.clone().unwrap_or_default();
        pspec.hostname = Some(pod_name.clone());
        if !spec.service_name.clone().unwrap_or_default().is_empty() {
            pspec.subdomain = spec.service_name.clone();
        }
        // Claims from the templates, created before the pod that uses them.
        let pvc_api: Api<PersistentVolumeClaim> = Api::namespaced(self.informers.client().clone(), &ns);
        for t in spec.volume_claim_templates.iter().flatten() {
            let claim = format!("{}-{}", t.name_any(), pod_name);
            if self.informers.get::<PersistentVolumeClaim>().get(&ns, &claim).is_none() {
                let mut pvc = t.clone();
                pvc.metadata = kube::api::ObjectMeta {
                    name: Some(claim.clone()),
                    namespace: Some(ns.clone()),
                    labels: spec.selector.match_labels.clone(),
                    annotations: t.metadata.annotations.clone(),
                    ..Default::default()
                };
                pvc.status = None;
                match pvc_api.create(&PostParams::default(), &pvc).await {
                    Ok(_) => self.recorder.normal(set, "SuccessfulCreate", format!("create Claim {claim} Pod {pod_name} in StatefulSet {name} success")),
                    Err(e) if r8s_client::is_conflict(&e) => {}
                    Err(e) => {
                        self.recorder.warning(
                            set,
                            "FailedCreate",
                            format!("create Claim {claim} for Pod {pod_name} in StatefulSet {name} failed error: {}", util::api_message(&e)),
                        );
                        return Err(e.into());
                    }
                }
            }
            let vols = pspec.volumes.get_or_insert_with(Vec::new);
            vols.retain(|v| v.name != t.name_any());
            vols.push(Volume {
                name: t.name_any(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource { claim_name: claim, read_only: None }),
                ..Default::default()
            });
        }
        let pod = Pod {
            metadata: kube::api::ObjectMeta {
                name: Some(pod_name.clone()),
                namespace: Some(ns.clone()),
                labels: Some(labels),
                annotations: md.annotations,
                owner_references: Some(vec![util::owner_ref(set)]),
                ..Default::default()
            },
            spec: Some(pspec),
            status: None,
        };
        let api: Api<Pod> = Api::namespaced(self.informers.client().clone(), &ns);
        match api.create(&PostParams::default(), &pod).await {
            Ok(_) => {
                self.recorder.normal(set, "SuccessfulCreate", format!("create Pod {pod_name} in StatefulSet {name} successful"));
                Ok(())
            }
            Err(e) if r8s_client::is_conflict(&e) => Ok(()),
            Err(e) => {
                self.recorder.warning(set, "FailedCreate", format!("create Pod {pod_name} in StatefulSet {name} failed error: {}", util::api_message(&e)));
                Err(e.into())
            }
        }
    }
}
