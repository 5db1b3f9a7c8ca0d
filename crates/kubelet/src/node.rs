//! The Node object: registration with the host's capacity and identity, the Lease renewed in
//! kube-node-lease, and the status conditions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::config::Config;
use crate::cri::{Runtime, pb::VersionResponse};
use crate::sysinfo;

pub const KUBELET_VERSION: &str = "v1.32.0-r8s";

fn capacity(cfg: &Config) -> Value {
    let (disk, _) = sysinfo::fs_bytes(&cfg.data_dir);
    json!({
        "cpu": sysinfo::cpu_count().to_string(),
        "memory": format!("{}Ki", sysinfo::memory_bytes() / 1024),
        "pods": "110",
        "ephemeral-storage": format!("{}Ki", disk / 1024),
    })
}

fn node_object(cfg: &Config, runtime: &VersionResponse) -> anyhow::Result<Node> {
    let mut labels: BTreeMap<String, String> = [
        ("beta.kubernetes.io/arch", crate::images::go_arch()),
        ("beta.kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", crate::images::go_arch()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/hostname", cfg.node_name.as_str()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    labels.extend(cfg.node_labels.iter().cloned());
    let cap = capacity(cfg);
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": cfg.node_name, "labels": labels, "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
        "spec": if cfg.node_taints.is_empty() { json!({}) } else { json!({"taints": cfg.node_taints}) },
        "status": status(cfg, runtime, &cap),
    }))?)
}

fn status(cfg: &Config, runtime: &VersionResponse, cap: &Value) -> Value {
    json!({
        "capacity": cap,
        "allocatable": cap,
        "addresses": [{"type": "InternalIP", "address": cfg.node_ip.to_string()}, {"type": "Hostname", "address": cfg.node_name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": cfg.kubelet_port}},
        "nodeInfo": {
            "architecture": crate::images::go_arch(),
            "bootID": sysinfo::boot_id(),
            "containerRuntimeVersion": format!("{}://{}", runtime.runtime_name, runtime.runtime_version),
            "kernelVersion": sysinfo::kernel_version(),
            "kubeProxyVersion": KUBELET_VERSION,
            "kubeletVersion": KUBELET_VERSION,
            "machineID": sysinfo::machine_id(),
            "operatingSystem": "linux",
            "osImage": sysinfo::os_image(),
            "systemUUID": sysinfo::machine_id(),
        },
        "conditions": conditions(cfg),
    })
}

fn conditions(cfg: &Config) -> Value {
    let now = serde_json::to_value(r8s_client::now()).unwrap_or_default();
    let c = |t: &str, s: &str, reason: &str, msg: &str| json!({"type": t, "status": s, "reason": reason, "message": msg, "lastHeartbeatTime": now, "lastTransitionTime": now});
    let mem_avail = sysinfo::meminfo("MemAvailable:").unwrap_or(u64::MAX);
    let (_, disk_avail) = sysinfo::fs_bytes(&cfg.data_dir);
    // Upstream's default hard eviction thresholds: memory.available<100Mi, nodefs.available<10%.
    let (disk_total, _) = sysinfo::fs_bytes(&cfg.data_dir);
    let mem = if mem_avail < 100 << 20 {
        c("MemoryPressure", "True", "KubeletHasInsufficientMemory", "kubelet has insufficient memory available")
    } else {
        c("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available")
    };
    let disk = if disk_total > 0 && disk_avail < disk_total / 10 {
        c("DiskPressure", "True", "KubeletHasDiskPressure", "kubelet has disk pressure")
    } else {
        c("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure")
    };
    json!([
        mem,
        disk,
        c("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        c("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ])
}

/// Creates the Node (or takes over an existing one with the same name), reports it Ready and
/// waits until node IPAM has given it a podCIDR.
pub async fn register(client: &kube::Client, cfg: &Config, runtime: &VersionResponse) -> anyhow::Result<Node> {
    let nodes: Api<Node> = Api::all(client.clone());
    let obj = node_object(cfg, runtime)?;
    let recorder = r8s_client::events::Recorder::new(client.clone(), "kubelet").with_host(&cfg.node_name);
    let node = match nodes.create(&PostParams::default(), &obj).await {
        Ok(n) => n,
        Err(e) if r8s_client::is_conflict(&e) => {
            let patch = json!({"metadata": {"labels": obj.metadata.labels}});
            nodes.patch(&cfg.node_name, &PatchParams::default(), &Patch::Merge(&patch)).await?
        }
        Err(e) => return Err(e.into()),
    };
    recorder.normal(&node, "Starting", "Starting kubelet.".into());
    report_status(&nodes, cfg, runtime).await?;
    recorder.normal(&node, "NodeReady", format!("Node {} status is now: NodeReady", cfg.node_name));
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let n = nodes.get(&cfg.node_name).await?;
        if n.spec.as_ref().and_then(|s| s.pod_cidr.as_ref()).is_some() {
            return Ok(n);
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("node {} got no podCIDR within 2 minutes (is the controller-manager running?)", cfg.node_name);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn report_status(nodes: &Api<Node>, cfg: &Config, runtime: &VersionResponse) -> anyhow::Result<()> {
    let st = status(cfg, runtime, &capacity(cfg));
    nodes.patch_status(&cfg.node_name, &PatchParams::default(), &Patch::Merge(&json!({"status": st}))).await?;
    Ok(())
}

async fn renew_lease(leases: &Api<Lease>, cfg: &Config, node_uid: Option<String>) -> anyhow::Result<()> {
    let name = &cfg.node_name;
    let duration = 40;
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let patch = json!({"spec": {"holderIdentity": name, "leaseDurationSeconds": duration, "renewTime": now}});
    match leases.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(e) if r8s_client::is_not_found(&e) => {
            let owners = node_uid.map(|uid| vec![json!({"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid})]).unwrap_or_default();
            let lease: Lease = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "kube-node-lease", "ownerReferences": owners},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": duration, "renewTime": now},
            }))?;
            leases.create(&PostParams::default(), &lease).await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Renews the Lease every `lease_renew_interval` and refreshes the status once a minute.
pub fn spawn_heartbeat(client: kube::Client, cfg: Arc<Config>, runtime: Runtime) {
    tokio::spawn(async move {
        let nodes: Api<Node> = Api::all(client.clone());
        let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
        let uid = nodes.get(&cfg.node_name).await.ok().and_then(|n| n.metadata.uid);
        let mut tick = tokio::time::interval(cfg.lease_renew_interval);
        let mut last_status = std::time::Instant::now();
        loop {
            tick.tick().await;
            if let Err(e) = renew_lease(&leases, &cfg, uid.clone()).await {
                tracing::warn!(error = %e, "renewing node lease");
            }
            if last_status.elapsed() >= Duration::from_secs(60) {
                last_status = std::time::Instant::now();
                match runtime.version().await {
                    Ok(v) => {
                        if let Err(e) = report_status(&nodes, &cfg, &v).await {
                            tracing::warn!(error = %e, "updating node status");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "container runtime does not answer"),
                }
            }
        }
    });
}
