//! Simulated nodes, the way upstream tests at scale with kubemark/kwok: each node is a Node
//! object with capacity and conditions and a Lease renewed in `kube-node-lease`, and a
//! pretend kubelet reports the pods bound to it as Running (with an IP from the node's
//! podCIDR) and finishes their termination. Pods whose restartPolicy is not Always complete
//! after `r8s.io/sim-duration` seconds (default 0) with exit code `r8s.io/sim-exit-code`
//! (default 0). Stopping the process stops the renewals, so the node lifecycle controller
//! marks the nodes NotReady.

mod ipam;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use r8s_client::informer::{Informers, ObjKey};
use r8s_client::queue::WorkQueue;
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

    let informers = Informers::new(client.clone());
    let kubelet = Arc::new(Kubelet {
        client: client.clone(),
        own: names.iter().cloned().collect(),
        informers: informers.clone(),
        ipam: Mutex::new(ipam::PodIpam::default()),
    });
    kubelet.clone().start().await;

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

struct Kubelet {
    client: Client,
    own: HashSet<String>,
    informers: Informers,
    ipam: Mutex<ipam::PodIpam>,
}

impl Kubelet {
    async fn start(self: Arc<Self>) {
        let queue: WorkQueue<ObjKey> = WorkQueue::new();
        let pods = self.informers.get::<Pod>();
        let nodes = self.informers.get::<Node>();
        {
            let me = self.clone();
            let q = queue.clone();
            pods.on_change(move |old, new| {
                let p = new.or(old).unwrap();
                if me.owns(p) {
                    if new.is_none() {
                        me.ipam.lock().unwrap().release(p);
                    }
                    q.add(r8s_client::informer::key_of(p.as_ref()));
                }
            });
        }
        {
            // A node that just got its podCIDR can start the pods waiting for an IP.
            let me = self.clone();
            let q = queue.clone();
            nodes.on_change(move |old, new| {
                let Some(n) = new else { return };
                let had = old.and_then(|o| o.spec.as_ref()).and_then(|s| s.pod_cidr.clone());
                let has = n.spec.as_ref().and_then(|s| s.pod_cidr.clone());
                if had.is_none() && has.is_some() && me.own.contains(&n.name_any()) {
                    for p in me.informers.get::<Pod>().list() {
                        if p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(n.name_any().as_str()) {
                            q.add(r8s_client::informer::key_of(p.as_ref()));
                        }
                    }
                }
            });
        }
        pods.synced().await;
        nodes.synced().await;
        {
            let mut ipam = self.ipam.lock().unwrap();
            for p in pods.list() {
                if self.owns(&p) {
                    ipam.adopt(&p);
                }
            }
        }
        for p in pods.list() {
            if self.owns(&p) {
                queue.add(r8s_client::informer::key_of(p.as_ref()));
            }
        }
        let me = self.clone();
        r8s_client::run_workers("sim-kubelet", queue, 8, move |key| {
            let me = me.clone();
            async move { me.sync_pod(key).await }
        });
    }

    fn owns(&self, p: &Pod) -> bool {
        p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some_and(|n| self.own.contains(n))
    }

    async fn sync_pod(&self, (ns, name): ObjKey) -> anyhow::Result<Option<Duration>> {
        let Some(pod) = self.informers.get::<Pod>().get(&ns, &name) else {
            return Ok(None);
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let status = pod.status.clone().unwrap_or_default();
        let phase = status.phase.clone().unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() {
            // The containers "stop" at once: confirm the deletion as a kubelet does.
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions { uid: pod.uid(), resource_version: None }),
                ..Default::default()
            };
            match api.delete(&name, &dp).await {
                Ok(_) => {}
                Err(e) if r8s_client::is_not_found(&e) || r8s_client::is_conflict(&e) => {}
                Err(e) => return Err(e.into()),
            }
            return Ok(None);
        }
        if phase == "Succeeded" || phase == "Failed" {
            return Ok(None);
        }
        let spec = pod.spec.clone().unwrap_or_default();
        let node_name = spec.node_name.clone().unwrap_or_default();
        let restart_policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
        let annotations = pod.annotations();
        if phase != "Running" {
            let Some(node) = self.informers.get::<Node>().get("", &node_name) else {
                return Ok(Some(Duration::from_secs(1)));
            };
            let host_ip = node
                .status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
                .map(|a| a.address.clone())
                .unwrap_or_default();
            let pod_ip = if spec.host_network == Some(true) {
                host_ip.clone()
            } else {
                let cidr = node.spec.as_ref().and_then(|s| s.pod_cidr.clone());
                let Some(cidr) = cidr else {
                    // No podCIDR yet (node IPAM has not run): the node's update requeues us.
                    return Ok(None);
                };
                match self.ipam.lock().unwrap().allocate(&node_name, &cidr, &pod) {
                    Some(ip) => ip,
                    None => anyhow::bail!("no free pod IP in {cidr} on {node_name}"),
                }
            };
            let now = now_str();
            let started = status.start_time.as_ref().map(|t| serde_json::to_value(t).unwrap()).unwrap_or(json!(now));
            let cond = |t: &str| json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
            let containers: Vec<Value> = spec
                .containers
                .iter()
                .map(|c| {
                    let image = c.image.clone().unwrap_or_default();
                    json!({
                        "name": c.name, "image": image, "imageID": format!("sim://{image}"),
                        "containerID": format!("containerd://{}", uuid::Uuid::new_v4().simple()),
                        "ready": true, "started": true, "restartCount": 0,
                        "state": {"running": {"startedAt": now}},
                    })
                })
                .collect();
            let init: Vec<Value> = spec
                .init_containers
                .iter()
                .flatten()
                .map(|c| {
                    let image = c.image.clone().unwrap_or_default();
                    json!({
                        "name": c.name, "image": image, "imageID": format!("sim://{image}"),
                        "containerID": format!("containerd://{}", uuid::Uuid::new_v4().simple()),
                        "ready": true, "started": false, "restartCount": 0,
                        "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}},
                    })
                })
                .collect();
            let mut st = json!({
                "phase": "Running",
                "conditions": [cond("PodReadyToStartContainers"), cond("Initialized"), cond("Ready"), cond("ContainersReady"), cond("PodScheduled")],
                "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
                "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
                "startTime": started,
                "containerStatuses": containers,
            });
            if !init.is_empty() {
                st["initContainerStatuses"] = json!(init);
            }
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&json!({"status": st}))).await?;
            if restart_policy == "Always" {
                return Ok(None);
            }
        }
        if restart_policy != "Always" {
            let run_for: u64 = annotations.get("r8s.io/sim-duration").and_then(|v| v.parse().ok()).unwrap_or(0);
            let started = pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0).unwrap_or_else(k8s_openapi::jiff::Timestamp::now);
            let elapsed = k8s_openapi::jiff::Timestamp::now().duration_since(started).as_secs().max(0) as u64;
            if elapsed < run_for {
                return Ok(Some(Duration::from_secs(run_for - elapsed)));
            }
            let code: i32 = annotations.get("r8s.io/sim-exit-code").and_then(|v| v.parse().ok()).unwrap_or(0);
            let (phase, reason) = if code == 0 { ("Succeeded", "Completed") } else { ("Failed", "Error") };
            let now = now_str();
            let containers: Vec<Value> = spec
                .containers
                .iter()
                .map(|c| {
                    json!({
                        "name": c.name, "image": c.image, "imageID": format!("sim://{}", c.image.clone().unwrap_or_default()),
                        "containerID": format!("containerd://{}", uuid::Uuid::new_v4().simple()),
                        "ready": false, "started": false, "restartCount": 0,
                        "state": {"terminated": {"exitCode": code, "reason": reason, "startedAt": now, "finishedAt": now}},
                    })
                })
                .collect();
            let cond = |t: &str, s: &str| json!({"type": t, "status": s, "lastProbeTime": null, "lastTransitionTime": now});
            let st = json!({
                "phase": phase,
                "conditions": [cond("PodReadyToStartContainers", "False"), cond("Initialized", "True"), cond("Ready", "False"), cond("ContainersReady", "False"), cond("PodScheduled", "True")],
                "containerStatuses": containers,
            });
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&json!({"status": st}))).await?;
            self.ipam.lock().unwrap().release(&pod);
        }
        Ok(None)
    }
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
