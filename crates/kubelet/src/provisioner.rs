//! The built-in local-path provisioner (k3s ships the same idea): StorageClass `local-path`
//! (the default class, provisioner `r8s.io/local-path`) and, for every pending claim of that
//! class, a hostPath PersistentVolume in a directory on this node, pre-bound to the claim
//! (claimRef) so the PV binder binds the two. The PV's node affinity names this node. With
//! several agents, the first to create the PV (named after the claim's uid) wins.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use r8s_client::informer::{Informers, key_of};
use r8s_client::queue::WorkQueue;
use serde_json::json;

use crate::config::Config;

pub const CLASS: &str = "local-path";
pub const PROVISIONER: &str = "r8s.io/local-path";

pub async fn run(client: kube::Client, cfg: Arc<Config>) -> anyhow::Result<()> {
    let classes: Api<StorageClass> = Api::all(client.clone());
    let sc: StorageClass = serde_json::from_value(json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": CLASS, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate",
    }))?;
    match classes.create(&PostParams::default(), &sc).await {
        Ok(_) => {}
        Err(e) if r8s_client::is_conflict(&e) => {}
        Err(e) => return Err(e.into()),
    }
    let informers = Informers::new(client.clone());
    let claims = informers.get::<PersistentVolumeClaim>();
    let volumes = informers.get::<PersistentVolume>();
    let queue: WorkQueue<(String, String)> = WorkQueue::new();
    {
        let q = queue.clone();
        claims.on_change(move |_, new| {
            if let Some(c) = new {
                q.add(key_of(c.as_ref()));
            }
        });
    }
    {
        // A released volume of ours (its claim is gone) is deleted with its directory.
        let client = client.clone();
        let cfg = cfg.clone();
        volumes.on_change(move |_, new| {
            let Some(pv) = new else { return };
            let ours = pv.annotations().get("pv.kubernetes.io/provisioned-by").map(String::as_str) == Some(PROVISIONER)
                && pv.labels().get("r8s.io/local-path-node") == Some(&cfg.node_name);
            let released = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
            if ours && released {
                let (client, pv, cfg) = (client.clone(), pv.clone(), cfg.clone());
                tokio::spawn(async move {
                    if let Some(path) = pv.spec.as_ref().and_then(|s| s.host_path.as_ref()).map(|h| h.path.clone())
                        && path.starts_with(&cfg.data_dir.join("storage").display().to_string())
                    {
                        let _ = std::fs::remove_dir_all(&path);
                    }
                    let _ = Api::<PersistentVolume>::all(client).delete(&pv.name_any(), &DeleteParams::default()).await;
                });
            }
        });
    }
    claims.synced().await;
    for c in claims.list() {
        queue.add(key_of(c.as_ref()));
    }
    let (client2, cfg2, claims2) = (client.clone(), cfg.clone(), claims.clone());
    r8s_client::run_workers("local-path-provisioner", queue, 2, move |(ns, name)| {
        let (client, cfg, claims) = (client2.clone(), cfg2.clone(), claims2.clone());
        async move {
            let Some(claim) = claims.get(&ns, &name) else { return Ok(None) };
            provision(&client, &cfg, &claim).await?;
            Ok(None::<Duration>)
        }
    });
    Ok(())
}

async fn provision(client: &kube::Client, cfg: &Config, claim: &PersistentVolumeClaim) -> anyhow::Result<()> {
    let spec = claim.spec.clone().unwrap_or_default();
    let pending = claim.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending") == "Pending";
    if !pending || spec.storage_class_name.as_deref() != Some(CLASS) || spec.volume_name.as_ref().is_some_and(|v| !v.is_empty()) {
        return Ok(());
    }
    if claim.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    // WaitForFirstConsumer-style hint: when the scheduler picked a node, only that node provisions.
    if let Some(node) = claim.annotations().get("volume.kubernetes.io/selected-node")
        && node != &cfg.node_name
    {
        return Ok(());
    }
    let uid = claim.uid().unwrap_or_default();
    let ns = claim.namespace().unwrap_or_default();
    let name = format!("pvc-{uid}");
    let dir = cfg.data_dir.join("storage").join(format!("{name}_{ns}_{}", claim.name_any()));
    std::fs::create_dir_all(&dir)?;
    let size = spec.resources.and_then(|r| r.requests).and_then(|r| r.get("storage").cloned()).map(|q| q.0).unwrap_or_else(|| "1Gi".into());
    let modes = spec.access_modes.unwrap_or_else(|| vec!["ReadWriteOnce".into()]);
    let pv: PersistentVolume = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": {"r8s.io/local-path-node": cfg.node_name},
                     "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": modes,
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": CLASS,
            "volumeMode": "Filesystem",
            "hostPath": {"path": dir.display().to_string(), "type": "DirectoryOrCreate"},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns, "name": claim.name_any(), "uid": uid},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [cfg.node_name]}]}]}},
        },
    }))?;
    match Api::<PersistentVolume>::all(client.clone()).create(&PostParams::default(), &pv).await {
        Ok(_) => {
            let recorder = r8s_client::events::Recorder::new(client.clone(), "r8s.io/local-path").with_host(&cfg.node_name);
            recorder.normal(claim, "ProvisioningSucceeded", format!("Successfully provisioned volume {name}"));
            Ok(())
        }
        Err(e) if r8s_client::is_conflict(&e) => {
            let _ = std::fs::remove_dir(&dir);
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
