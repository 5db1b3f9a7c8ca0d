//! ReplicaSet and ReplicationController: keep `replicas` pods matching the selector, owned
//! through a controller reference (adopting orphans that match, releasing pods that no
//! longer do), and report replicas/ready/available in status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use r8s_client::events::Recorder;
use r8s_client::informer::{Informers, ObjKey, Object, key_of};
use r8s_client::queue::WorkQueue;
use serde_json::{Value, json};

use crate::expectations::Expectations;
use crate::util;

/// What the controller needs of a ReplicaSet or a ReplicationController.
pub trait Replicated: Object + kube::Resource<Scope = k8s_openapi::NamespaceResourceScope> + serde::Serialize {
    fn replicas(&self) -> i32;
    fn selector(&self) -> LabelSelector;
    fn template(&self) -> Option<&PodTemplateSpec>;
    fn min_ready_seconds(&self) -> i32;
    fn status_value(&self) -> Value;
}

impl Replicated for ReplicaSet {
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn selector(&self) -> LabelSelector {
        self.spec.as_ref().map(|s| s.selector.clone()).unwrap_or_default()
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().and_then(|s| s.template.as_ref())
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
    }
    fn status_value(&self) -> Value {
        serde_json::to_value(&self.status).unwrap_or(Value::Null)
    }
}

impl Replicated for ReplicationController {
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn selector(&self) -> LabelSelector {
        // An RC selects by equality; without a selector it uses the template's labels.
        let sel = self.spec.as_ref().and_then(|s| s.selector.clone()).filter(|s| !s.is_empty());
        let labels = sel.or_else(|| self.template().and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.clone()));
        LabelSelector { match_labels: labels, ..Default::default() }
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().and_then(|s| s.template.as_ref())
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
    }
    fn status_value(&self) -> Value {
        serde_json::to_value(&self.status).unwrap_or(Value::Null)
    }
}

pub struct Controller<K> {
    informers: Informers,
    queue: WorkQueue<ObjKey>,
    expectations: Expectations,
    recorder: Recorder,
    _k: std::marker::PhantomData<K>,
}

/// Upstream creates in batches of 1, 2, 4, ... so a failing create is not repeated a thousand times.
const SLOW_START: usize = 1;

impl<K: Replicated> Controller<K> {
    pub async fn start(informers: Informers) {
        let c = Arc::new(Controller::<K> {
            recorder: Recorder::new(informers.client().clone(), if K::kind(&()) == "ReplicaSet" { "replicaset-controller" } else { "replication-controller" }),
            informers: informers.clone(),
            queue: WorkQueue::new(),
            expectations: Expectations::default(),
            _k: Default::default(),
        });
        let owners = informers.get::<K>();
        let pods = informers.get::<Pod>();
        util::queue_self(&owners, &c.queue);
        {
            let c2 = c.clone();
            pods.on_change(move |old, new| c2.pod_changed(old, new));
        }
        owners.synced().await;
        pods.synced().await;
        util::run_over("replicaset", &owners, &c.queue, 4, c.clone(), |c, key| async move { c.sync(key).await });
    }

    fn owner_key(&self, p: &Pod) -> Option<ObjKey> {
        let r = util::controller_ref(p)?;
        (r.kind == K::kind(&())).then(|| (p.namespace().unwrap_or_default(), r.name.clone()))
    }

    fn pod_changed(&self, old: Option<&Arc<Pod>>, new: Option<&Arc<Pod>>) {
        let p = new.or(old).unwrap();
        if let Some(key) = self.owner_key(p) {
            self.expectations.observe(&key, old.map(|o| o.as_ref()), new.map(|n| n.as_ref()));
            self.queue.add(key);
        }
        // A label change may move a pod between owners; an orphan may be adopted.
        if let (Some(o), Some(n)) = (old, new)
            && let Some(k) = self.owner_key(o)
            && o.labels() != n.labels()
        {
            self.queue.add(k);
        }
        if let Some(n) = new
            && util::controller_ref(n.as_ref()).is_none()
            && util::is_active(n)
        {
            let ns = n.namespace().unwrap_or_default();
            for o in self.informers.get::<K>().list_ns(&ns) {
                if util::selector_matches(&o.selector(), n.labels()) {
                    self.queue.add(key_of(o.as_ref()));
                }
            }
        }
    }

    async fn sync(&self, key: ObjKey) -> anyhow::Result<Option<Duration>> {
        let (ns, name) = key.clone();
        let Some(owner) = self.informers.get::<K>().get(&ns, &name) else {
            self.expectations.forget(&key);
            return Ok(None);
        };
        let client = self.informers.client().clone();
        let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let selector = owner.selector();
        let uid = owner.uid().unwrap_or_default();
        let mut owned: Vec<Arc<Pod>> = Vec::new();
        for p in self.informers.get::<Pod>().list_ns(&ns) {
            let matches = util::selector_matches(&selector, p.labels());
            match util::controller_ref(p.as_ref()) {
                Some(r) if r.uid == uid => {
                    if matches {
                        owned.push(p);
                    } else if owner.meta().deletion_timestamp.is_none() {
                        // Release: the pod no longer matches.
                        let patch = json!({"metadata": {"ownerReferences": [{"$patch": "delete", "uid": uid}], "uid": p.uid()}});
                        let _ = pods_api.patch(&p.name_any(), &PatchParams::default(), &Patch::Strategic(&patch)).await;
                    }
                }
                None if matches && util::is_active(&p) && owner.meta().deletion_timestamp.is_none() => {
                    // Adopt an orphan.
                    let r = util::owner_ref(owner.as_ref());
                    let patch = json!({"metadata": {"ownerReferences": [r], "uid": p.uid()}});
                    match pods_api.patch(&p.name_any(), &PatchParams::default(), &Patch::Strategic(&patch)).await {
                        Ok(adopted) => owned.push(Arc::new(adopted)),
                        Err(e) => tracing::debug!(error = %e, "adopting pod failed"),
                    }
                }
                _ => {}
            }
        }
        let active: Vec<&Arc<Pod>> = owned.iter().filter(|p| util::is_active(p)).collect();
        let mut requeue = None;
        if self.expectations.satisfied(&key) && owner.meta().deletion_timestamp.is_none() {
            let diff = active.len() as i64 - owner.replicas() as i64;
            if diff < 0 {
                self.create_pods(&owner, &key, (-diff) as usize).await?;
            } else if diff > 0 {
                let mut victims: Vec<&Arc<Pod>> = active.clone();
                victims.sort_by_key(|p| util::deletion_rank(p));
                let victims: Vec<Arc<Pod>> = victims.into_iter().take(diff as usize).cloned().collect();
                self.expectations.expect(&key, 0, victims.len() as i64);
                for p in victims {
                    match pods_api.delete(&p.name_any(), &DeleteParams::default()).await {
                        Ok(_) => self.recorder.normal(owner.as_ref(), "SuccessfulDelete", format!("Deleted pod: {}", p.name_any())),
                        Err(e) => {
                            self.expectations.lower(&key, 0, 1);
                            if !r8s_client::is_not_found(&e) {
                                return Err(e.into());
                            }
                        }
                    }
                }
            }
        }
        // Status from what the cache shows.
        let min_ready = owner.min_ready_seconds();
        let template_labels: BTreeMap<String, String> = owner.template().and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.clone()).unwrap_or_default();
        let ready = active.iter().filter(|p| util::is_ready(p)).count() as i64;
        let available = active.iter().filter(|p| util::is_available(p, min_ready)).count() as i64;
        let fully_labeled = active.iter().filter(|p| template_labels.iter().all(|(k, v)| p.labels().get(k) == Some(v))).count() as i64;
        if ready > available && min_ready > 0 {
            requeue = Some(Duration::from_secs(min_ready as u64));
        }
        let nz = |n: i64| if n == 0 { Value::Null } else { json!(n) };
        let status = json!({
            "replicas": active.len(),
            "fullyLabeledReplicas": nz(fully_labeled),
            "readyReplicas": nz(ready),
            "availableReplicas": nz(available),
            "observedGeneration": owner.meta().generation,
        });
        let cur = owner.status_value();
        let changed = ["replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas", "observedGeneration"]
            .iter()
            .any(|f| util::norm(cur.get(*f), *f == "replicas") != util::norm(Some(&status[*f]), *f == "replicas"));
        if changed {
            let api: Api<K> = Api::namespaced(client, &ns);
            match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&json!({"status": status}))).await {
                Ok(_) => {}
                Err(e) if r8s_client::is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(requeue)
    }

    async fn create_pods(&self, owner: &Arc<K>, key: &ObjKey, n: usize) -> anyhow::Result<()> {
        let Some(template) = owner.template() else {
            return Ok(());
        };
        let (ns, name) = key;
        let api: Api<Pod> = Api::namespaced(self.informers.client().clone(), ns);
        let md = template.metadata.clone().unwrap_or_default();
        let pod = Pod {
            metadata: kube::api::ObjectMeta {
                generate_name: Some(format!("{name}-")),
                namespace: Some(ns.clone()),
                labels: md.labels,
                annotations: md.annotations,
                owner_references: Some(vec![util::owner_ref(owner.as_ref())]),
                ..Default::default()
            },
            spec: template.spec.clone(),
            status: None,
        };
        self.expectations.expect(key, n as i64, 0);
        let pp = PostParams::default();
        let mut remaining = n;
        let mut batch = SLOW_START;
        while remaining > 0 {
            let size = batch.min(remaining);
            let results = futures::future::join_all((0..size).map(|_| api.create(&pp, &pod))).await;
            let mut failed = 0;
            let mut first_err = None;
            for r in results {
                match r {
                    Ok(p) => self.recorder.normal(owner.as_ref(), "SuccessfulCreate", format!("Created pod: {}", p.name_any())),
                    Err(e) => {
                        failed += 1;
                        self.recorder.warning(owner.as_ref(), "FailedCreate", format!("Error creating: {}", util::api_message(&e)));
                        first_err.get_or_insert(e);
                    }
                }
            }
            remaining -= size;
            if let Some(e) = first_err {
                // Nothing more is created this round; those never created are not expected.
                self.expectations.lower(key, (failed + remaining) as i64, 0);
                return Err(e.into());
            }
            batch *= 2;
        }
        Ok(())
    }
}
