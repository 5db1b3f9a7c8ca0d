//! PersistentVolume binder: binds each pending claim to the smallest available volume that
//! satisfies its class, access modes and size (or the volume it names), and releases or
//! deletes a volume when its claim goes, per the reclaim policy.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use r8s_api::quantity::parse_milli;
use r8s_client::events::Recorder;
use r8s_client::informer::{Informers, ObjKey, key_of};
use r8s_client::queue::WorkQueue;
use serde_json::json;

pub struct Controller {
    informers: Informers,
    claims: WorkQueue<ObjKey>,
    volumes: WorkQueue<ObjKey>,
    recorder: Recorder,
}

fn class_of_claim(c: &PersistentVolumeClaim) -> String {
    c.spec.as_ref().and_then(|s| s.storage_class_name.clone()).unwrap_or_default()
}

fn fits(pv: &PersistentVolume, c: &PersistentVolumeClaim) -> bool {
    let (Some(ps), Some(cs)) = (pv.spec.as_ref(), c.spec.as_ref()) else {
        return false;
    };
    let class_ok = ps.storage_class_name.clone().unwrap_or_default() == class_of_claim(c);
    let modes_ok = cs.access_modes.iter().flatten().all(|m| ps.access_modes.iter().flatten().any(|x| x == m));
    let mode_ok = ps.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()) == cs.volume_mode.clone().unwrap_or_else(|| "Filesystem".into());
    let want = cs.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get("storage")).and_then(|q| parse_milli(&q.0)).unwrap_or(0);
    let have = ps.capacity.as_ref().and_then(|c| c.get("storage")).and_then(|q| parse_milli(&q.0)).unwrap_or(0);
    class_ok && modes_ok && mode_ok && have >= want
}

fn pv_phase(pv: &PersistentVolume) -> &str {
    pv.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

impl Controller {
    pub async fn start(informers: Informers) {
        let c = Arc::new(Controller {
            recorder: Recorder::new(informers.client().clone(), "persistentvolume-controller"),
            informers: informers.clone(),
            claims: WorkQueue::new(),
            volumes: WorkQueue::new(),
        });
        let pvcs = informers.get::<PersistentVolumeClaim>();
        let pvs = informers.get::<PersistentVolume>();
        {
            let (q, vq) = (c.claims.clone(), c.volumes.clone());
            pvcs.on_change(move |old, new| {
                q.add(key_of(new.or(old).unwrap().as_ref()));
                // A deleted claim releases its volume.
                if new.is_none()
                    && let Some(v) = old.and_then(|o| o.spec.as_ref()).and_then(|s| s.volume_name.clone())
                {
                    vq.add((String::new(), v));
                }
            });
        }
        {
            let (vq, c2) = (c.volumes.clone(), c.clone());
            pvs.on_change(move |old, new| {
                vq.add(key_of(new.or(old).unwrap().as_ref()));
                // A new or freed volume may satisfy waiting claims.
                for claim in c2.informers.get::<PersistentVolumeClaim>().list() {
                    if claim.spec.as_ref().and_then(|s| s.volume_name.as_ref()).is_none() {
                        c2.claims.add(key_of(claim.as_ref()));
                    }
                }
            });
        }
        pvcs.synced().await;
        pvs.synced().await;
        for k in pvcs.keys() {
            c.claims.add(k);
        }
        for k in pvs.keys() {
            c.volumes.add(k);
        }
        let c2 = c.clone();
        r8s_client::run_workers("pv-binder-claims", c.claims.clone(), 1, move |key| {
            let c = c2.clone();
            async move { c.sync_claim(key).await }
        });
        let c2 = c.clone();
        r8s_client::run_workers("pv-binder-volumes", c.volumes.clone(), 1, move |key| {
            let c = c2.clone();
            async move { c.sync_volume(key).await }
        });
    }

    async fn sync_claim(&self, (ns, name): ObjKey) -> anyhow::Result<Option<Duration>> {
        let Some(claim) = self.informers.get::<PersistentVolumeClaim>().get(&ns, &name) else {
            return Ok(None);
        };
        if claim.metadata.deletion_timestamp.is_some() || claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound") {
            return Ok(None);
        }
        let wanted = claim.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|v| !v.is_empty());
        let uid = claim.uid().unwrap_or_default();
        let pvs = self.informers.get::<PersistentVolume>().list();
        let pv = match wanted {
            Some(v) => pvs.into_iter().find(|pv| pv.name_any() == v),
            None => {
                // A volume pre-bound to this claim, else the smallest one that fits.
                let pre = pvs
                    .iter()
                    .find(|pv| {
                        pv.spec
                            .as_ref()
                            .and_then(|s| s.claim_ref.as_ref())
                            .is_some_and(|r| r.name.as_deref() == Some(name.as_str()) && r.namespace.as_deref() == Some(ns.as_str()))
                    })
                    .cloned();
                pre.or_else(|| {
                    let mut free: Vec<Arc<PersistentVolume>> = pvs
                        .into_iter()
                        .filter(|pv| pv_phase(pv) == "Available" && pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_none() && fits(pv, &claim))
                        .collect();
                    free.sort_by_key(|pv| {
                        pv.spec.as_ref().and_then(|s| s.capacity.as_ref()).and_then(|c| c.get("storage")).and_then(|q| parse_milli(&q.0)).unwrap_or(0)
                    });
                    free.into_iter().next()
                })
            }
        };
        let Some(pv) = pv else {
            if class_of_claim(&claim).is_empty() {
                self.recorder.normal(claim.as_ref(), "FailedBinding", "no persistent volumes available for this claim and no storage class is set".into());
            }
            return Ok(None);
        };
        let client = self.informers.client().clone();
        let pv_api: Api<PersistentVolume> = Api::all(client.clone());
        let claim_ref = json!({"kind": "PersistentVolumeClaim", "namespace": ns, "name": name, "uid": uid, "apiVersion": "v1", "resourceVersion": claim.resource_version()});
        pv_api
            .patch(
                &pv.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&json!({"metadata": {"annotations": {"pv.kubernetes.io/bound-by-controller": "yes"}}, "spec": {"claimRef": claim_ref}})),
            )
            .await?;
        pv_api.patch_status(&pv.name_any(), &PatchParams::default(), &Patch::Merge(&json!({"status": {"phase": "Bound"}}))).await?;
        let pvc_api: Api<PersistentVolumeClaim> = Api::namespaced(client, &ns);
        pvc_api
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes", "pv.kubernetes.io/bound-by-controller": "yes"}}, "spec": {"volumeName": pv.name_any()}})),
            )
            .await?;
        let ps = pv.spec.clone().unwrap_or_default();
        pvc_api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {"phase": "Bound", "accessModes": ps.access_modes, "capacity": ps.capacity}})),
            )
            .await?;
        Ok(None)
    }

    async fn sync_volume(&self, (_, name): ObjKey) -> anyhow::Result<Option<Duration>> {
        let Some(pv) = self.informers.get::<PersistentVolume>().get("", &name) else {
            return Ok(None);
        };
        let api: Api<PersistentVolume> = Api::all(self.informers.client().clone());
        let claim_ref = pv.spec.as_ref().and_then(|s| s.claim_ref.clone());
        let phase = pv_phase(&pv).to_string();
        match claim_ref {
            None if phase != "Available" => {
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&json!({"status": {"phase": "Available"}}))).await?;
            }
            Some(r) if phase == "Bound" => {
                // The claim went away: release or delete the volume.
                let claim = self.informers.get::<PersistentVolumeClaim>().get(r.namespace.as_deref().unwrap_or(""), r.name.as_deref().unwrap_or(""));
                if claim.is_none_or(|c| c.uid() != r.uid) {
                    match pv.spec.as_ref().and_then(|s| s.persistent_volume_reclaim_policy.as_deref()).unwrap_or("Retain") {
                        "Delete" => {
                            let _ = api.delete(&name, &DeleteParams::default()).await;
                        }
                        _ => {
                            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&json!({"status": {"phase": "Released"}}))).await?;
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(None)
    }
}
