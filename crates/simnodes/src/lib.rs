//! Simulated nodes, the way upstream tests at scale with kubemark: each node is a Node object
//! with capacity and conditions and a Lease renewed in `kube-node-lease`, and runs the real
//! kubelet's pod workers (r8s-kubelet) on an in-memory CRI runtime (runtime.rs), so pod
//! lifecycle, status and termination are the same code as on a real node. Pods whose
//! restartPolicy is not Always complete after `r8s.io/sim-duration` seconds (default 0) with exit
//! code `r8s.io/sim-exit-code` (default 0). All nodes of one process share one watch of all
//! pods. Stopping the process stops the renewals, so the node lifecycle controller marks the
//! nodes NotReady.

mod ipam;
pub mod runtime;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use r8s_client::informer::Informers;
use serde_json::{Value, json};

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub count: usize,
    pub name_prefix: String,
    pub cpu: String,
    pub memory: String,
    pub pods: String,
    pub labels: BTreeMap<String, String>,
    /// (key, value, effect)
    pub taints: Vec<(String, String, String)>,
    pub lease_duration_seconds: i32,
    /// Index of the first node (several sim-nodes processes can share a prefix).
    pub first_index: usize,
    /// Where the nodes' kubelets keep pod directories (volumes); default a directory under
    /// the system's temporary directory, emptied at start.
    pub data_dir: Option<PathBuf>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            count: 1,
            name_prefix: "sim-".into(),
            cpu: "32".into(),
            memory: "256Gi".into(),
            pods: "110".into(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            lease_duration_seconds: 40,
            first_index: 0,
            data_dir: None,
        }
    }
}

impl SimConfig {
    pub fn node_names(&self) -> Vec<String> {
        (self.first_index..self.first_index + self.count).map(|i| format!("{}{}", self.name_prefix, i)).collect()
    }
}

/// Address of simulated node `i`: 198.18.0.0/15 is reserved for benchmarks, and no packet is
/// ever sent to these addresses (the nodes have no network).
fn node_address(i: usize) -> String {
    let n = i + 1;
    format!("198.{}.{}.{}", 18 + (n >> 16) % 2, (n >> 8) & 0xff, n & 0xff)
}

fn node_object(cfg: &SimConfig, index: usize, name: &str) -> Node {
    let mut labels: BTreeMap<String, String> =
        [("beta.kubernetes.io/arch", "amd64"), ("beta.kubernetes.io/os", "linux"), ("kubernetes.io/arch", "amd64"), ("kubernetes.io/os", "linux")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    labels.insert("kubernetes.io/hostname".into(), name.into());
    labels.extend(cfg.labels.clone());
    let taints: Vec<Value> = cfg.taints.iter().map(|(k, v, e)| json!({"key": k, "value": v, "effect": e})).collect();
    let resources = json!({"cpu": cfg.cpu, "memory": cfg.memory, "pods": cfg.pods, "ephemeral-storage": "100Gi"});
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", "r8s.io/simulated": "true"},
        },
        "spec": if taints.is_empty() { json!({}) } else { json!({"taints": taints}) },
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "addresses": [{"type": "InternalIP", "address": node_address(index)}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": uuid::Uuid::new_v4().to_string(),
                "containerRuntimeVersion": "containerd://1.7.0-sim",
                "kernelVersion": "6.1.0-sim",
                "kubeProxyVersion": "v1.32.0-r8s",
                "kubeletVersion": "v1.32.0-r8s",
                "machineID": uuid::Uuid::new_v4().simple().to_string(),
                "operatingSystem": "linux",
                "osImage": "r8s simulated node",
                "systemUUID": uuid::Uuid::new_v4().to_string(),
            },
        },
    }))
    .expect("node object")
}

fn conditions(now: &str) -> Value {
    let c = |t: &str, s: &str, reason: &str, msg: &str| json!({"type": t, "status": s, "reason": reason, "message": msg, "lastHeartbeatTime": now, "lastTransitionTime": now});
    json!([
        c("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        c("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        c("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        c("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ])
}

fn now_str() -> String {
    serde_json::to_value(r8s_client::now()).unwrap().as_str().unwrap().to_string()
}

async fn register(nodes: &Api<Node>, recorder: &r8s_client::events::Recorder, cfg: &SimConfig, index: usize, name: &str) -> anyhow::Result<()> {
    let obj = node_object(cfg, index, name);
    let created = match nodes.create(&PostParams::default(), &obj).await {
        Ok(n) => n,
        Err(e) if r8s_client::is_conflict(&e) => nodes.get(name).await?,
        Err(e) => return Err(e.into()),
    };
    // What a kubelet says when it starts (`kubectl describe node` shows it).
    recorder.normal(&created, "Starting", "Starting kubelet.".into());
    report_ready(nodes, cfg, index, name).await?;
    recorder.normal(&created, "NodeReady", format!("Node {name} status is now: NodeReady"));
    Ok(())
}

/// Writes the node's status: capacity and all conditions healthy, heartbeat now.
async fn report_ready(nodes: &Api<Node>, cfg: &SimConfig, index: usize, name: &str) -> anyhow::Result<()> {
    let mut status = serde_json::to_value(node_object(cfg, index, name).status)?;
    status["conditions"] = conditions(&now_str());
    nodes.patch_status(name, &PatchParams::default(), &Patch::Merge(&json!({"status": status}))).await?;
    Ok(())
}

async fn renew_lease(leases: &Api<Lease>, name: &str, duration: i32) -> anyhow::Result<()> {
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let patch = json!({"spec": {"holderIdentity": name, "leaseDurationSeconds": duration, "renewTime": now}});
    match leases.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(e) if r8s_client::is_not_found(&e) => {
            let lease: Lease = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "kube-node-lease",
                             "ownerReferences": []},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": duration, "renewTime": now},
            }))?;
            leases.create(&PostParams::default(), &lease).await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Runs the simulated nodes until the future is dropped.
pub async fn run(client: Client, cfg: SimConfig) -> anyhow::Result<()> {
    let names = cfg.node_names();
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    // Register with bounded concurrency: thousands of nodes should not open thousands of requests.
    let indexed: Vec<(usize, String)> = names.iter().cloned().enumerate().map(|(i, n)| (i + cfg.first_index, n)).collect();
    let recorder = r8s_client::events::Recorder::new(client.clone(), "kubelet");
    futures::stream::iter(indexed.clone())
        .map(|(i, n)| {
            let nodes = nodes.clone();
            let leases = leases.clone();
            let cfg = cfg.clone();
            let recorder = recorder.clone().with_host(&n);
            async move {
                register(&nodes, &recorder, &cfg, i, &n).await?;
                renew_lease(&leases, &n, cfg.lease_duration_seconds).await
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<anyhow::Result<()>>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<()>>()?;
    tracing::info!(count = names.len(), "simulated nodes registered");

    start_kubelets(&client, &cfg, &indexed).await?;

    // Lease renewal at a quarter of the lease duration (upstream's kubelet renews every 10 s of 40 s),
    // node status refresh once a minute.
    let renew = Duration::from_millis((cfg.lease_duration_seconds.max(1) as u64) * 250);
    let mut tick = tokio::time::interval(renew);
    let mut last_status = std::time::Instant::now();
    loop {
        tick.tick().await;
        let refresh_status = last_status.elapsed() > Duration::from_secs(60);
        if refresh_status {
            last_status = std::time::Instant::now();
        }
        let results: Vec<anyhow::Result<()>> = futures::stream::iter(indexed.clone())
            .map(|(i, n)| {
                let leases = leases.clone();
                let nodes = nodes.clone();
                let cfg = cfg.clone();
                async move {
                    renew_lease(&leases, &n, cfg.lease_duration_seconds).await?;
                    if refresh_status {
                        report_ready(&nodes, &cfg, i, &n).await?;
                    }
                    Ok(())
                }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
            tracing::warn!(error = %e, "renewing simulated nodes failed");
        }
    }
}

/// One kubelet per node, each on its own simulated runtime, fed by one shared pod watch.
async fn start_kubelets(client: &Client, cfg: &SimConfig, indexed: &[(usize, String)]) -> anyhow::Result<()> {
    let data_dir = cfg.data_dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("r8s-sim-nodes-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&data_dir);
    std::fs::create_dir_all(&data_dir)?;
    let informers = Informers::new(client.clone());
    let shared = r8s_kubelet::pods::SharedPods::new(&informers);
    let all_pods = informers.get::<Pod>();
    let nodes = informers.get::<Node>();
    nodes.synced().await;
    let ipam: Arc<std::sync::Mutex<ipam::PodIpam>> = Default::default();
    for (i, name) in indexed {
        let world = runtime::World {
            node_name: name.clone(),
            ipam: ipam.clone(),
            pod: {
                let pods = all_pods.clone();
                Box::new(move |ns, n| pods.get(ns, n))
            },
        };
        let kcfg = r8s_kubelet::Config {
            node_name: name.clone(),
            node_ip: node_address(*i).parse()?,
            data_dir: data_dir.join(name),
            runtime_endpoint: None,
            airgap_images_dir: PathBuf::new(),
            pod_manifest_path: PathBuf::new(),
            cgroup_root: "/".into(),
            cni_bin_dir: PathBuf::new(),
            cni_conf_dir_override: None,
            write_cni_config: false,
            node_labels: vec![],
            node_taints: vec![],
            lease_renew_interval: Duration::from_secs(10),
            cluster_dns: vec![],
            cluster_domain: "cluster.local".into(),
            kubelet_port: 10250,
            client_ca_der: vec![],
            insecure_registries: vec![],
            // Thousands of nodes in one process: few workers each, and a slow full resync
            // (each one re-reads the pods' ConfigMaps and Secrets from the API).
            pod_workers: 2,
            resync_interval: Duration::from_secs(300),
            simulated: true,
        };
        let rt = runtime::SimRuntime::new(world).into_runtime();
        let kubelet = r8s_kubelet::pods::Kubelet::with_pods(client.clone(), Arc::new(kcfg), rt, shared.for_node(name));
        let node = node_object(cfg, *i, name);
        tokio::spawn(async move {
            if let Err(e) = kubelet.run(node).await {
                tracing::warn!(error = %e, "simulated kubelet stopped");
            }
        });
    }
    Ok(())
}

/// Parses `k=v,k2=v2`.
pub fn parse_labels(s: &str) -> anyhow::Result<BTreeMap<String, String>> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| anyhow::anyhow!("invalid label {p:?}: want key=value")))
        .collect()
}

/// Parses `k=v:Effect,k2:Effect`.
pub fn parse_taints(s: &str) -> anyhow::Result<Vec<(String, String, String)>> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (kv, effect) = p.rsplit_once(':').ok_or_else(|| anyhow::anyhow!("invalid taint {p:?}: want key=value:Effect"))?;
            if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
                anyhow::bail!("invalid taint effect {effect:?}: want NoSchedule, PreferNoSchedule or NoExecute");
            }
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            Ok((k.to_string(), v.to_string(), effect.to_string()))
        })
        .collect()
}
