//! Static pods from the manifests directory (`--pod-manifest-path`), as in seed 004: every
//! *.yaml/*.yml/*.json file holding a Pod runs on this node as `<name>-<node>`, shown in the API
//! as a mirror pod (annotation `kubernetes.io/config.mirror`, owned by the Node). Editing a file
//! replaces the pod; removing it deletes the pod; a deleted mirror pod comes back.
//!
//! Unlike upstream, the containers run from the mirror pod (the pod workers read the API), so
//! static pods need a reachable API server; the control plane here does not run as static pods.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::pods::Kubelet;

pub const ANN_SOURCE: &str = "kubernetes.io/config.source";
pub const ANN_HASH: &str = "kubernetes.io/config.hash";
pub const ANN_MIRROR: &str = "kubernetes.io/config.mirror";
pub const ANN_SEEN: &str = "kubernetes.io/config.seen";

/// One manifest turned into the mirror pod to create.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub namespace: String,
    pub name: String,
    pub hash: String,
    pub pod: Value,
}

/// Reads a manifest file into the pod this node runs for it.
pub fn load(path: &std::path::Path, node: &str, node_uid: &str) -> anyhow::Result<Manifest> {
    let text = std::fs::read_to_string(path)?;
    let mut v: Value = serde_yaml::from_str(&text)?;
    if v["kind"] != "Pod" {
        anyhow::bail!("{}: not a Pod (kind {})", path.display(), v["kind"]);
    }
    let base =
        v["metadata"]["name"].as_str().filter(|n| !n.is_empty()).ok_or_else(|| anyhow::anyhow!("{}: metadata.name is required", path.display()))?.to_string();
    let name = format!("{base}-{node}");
    let namespace = v["metadata"]["namespace"].as_str().filter(|n| !n.is_empty()).unwrap_or("default").to_string();
    let hash = hex::encode(&Sha256::digest(format!("{node}\n{}", serde_json::to_string(&v)?).as_bytes())[..16]);
    v["metadata"]["name"] = json!(name);
    v["metadata"]["namespace"] = json!(namespace);
    let ann = v["metadata"]["annotations"].as_object().cloned().unwrap_or_default();
    let mut ann: BTreeMap<String, Value> = ann.into_iter().collect();
    ann.insert(ANN_SOURCE.into(), json!("file"));
    ann.insert(ANN_HASH.into(), json!(hash));
    ann.insert(ANN_MIRROR.into(), json!(hash));
    ann.insert(ANN_SEEN.into(), json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)));
    v["metadata"]["annotations"] = json!(ann);
    v["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid, "controller": true}]);
    v["spec"]["nodeName"] = json!(node);
    Ok(Manifest { namespace, name, hash, pod: v })
}

fn manifests(dir: &std::path::Path, node: &str, node_uid: &str) -> Vec<Manifest> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut paths: Vec<_> = rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml" || x == "json")).collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        match load(&p, node, node_uid) {
            Ok(m) => out.push(m),
            Err(e) => tracing::warn!(file = %p.display(), error = %e, "ignoring static pod manifest"),
        }
    }
    out
}

/// Keeps the mirror pods in line with the manifests directory (checked every 2 s).
pub async fn run(client: kube::Client, cfg: Arc<Config>, kubelet: Arc<Kubelet>) {
    let node_uid = loop {
        match Api::<Node>::all(client.clone()).get(&cfg.node_name).await {
            Ok(n) => break n.uid().unwrap_or_default(),
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        let want = manifests(&cfg.pod_manifest_path, &cfg.node_name, &node_uid);
        let names: HashSet<(String, String)> = want.iter().map(|m| (m.namespace.clone(), m.name.clone())).collect();
        for m in &want {
            let api: Api<Pod> = Api::namespaced(client.clone(), &m.namespace);
            match kubelet.pod(&m.namespace, &m.name) {
                None => {
                    let pod: Pod = match serde_json::from_value(m.pod.clone()) {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::warn!(pod = %m.name, error = %e, "static pod manifest does not decode");
                            continue;
                        }
                    };
                    match api.create(&PostParams::default(), &pod).await {
                        Ok(_) => {}
                        Err(e) if r8s_client::is_conflict(&e) => {}
                        Err(e) => tracing::warn!(pod = %m.name, error = %e, "creating mirror pod"),
                    }
                }
                Some(p) if p.annotations().get(ANN_MIRROR) != Some(&m.hash) && p.metadata.deletion_timestamp.is_none() => {
                    // The manifest changed: replace the pod (graceful; recreated once gone).
                    let _ = api.delete(&m.name, &DeleteParams::default()).await;
                }
                Some(_) => {}
            }
        }
        for p in kubelet.pods_on_node() {
            let is_static = p.annotations().get(ANN_SOURCE).map(String::as_str) == Some("file");
            let key = (p.namespace().unwrap_or_default(), p.name_any());
            if is_static && !names.contains(&key) && p.metadata.deletion_timestamp.is_none() {
                let _ = Api::<Pod>::namespaced(client.clone(), &key.0).delete(&key.1, &DeleteParams::default()).await;
            }
        }
    }
}
