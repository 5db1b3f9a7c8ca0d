//! Pod workers: one sync at a time per pod, driven by the pod informer (this node's pods only)
//! and by a relist of the runtime every second (upstream's PLEG), so container exits are seen.
//! Each sync reads the pod's runtime state through CRI, starts what should run, and writes the
//! status computed from what the runtime reports.

pub mod images;
pub mod prober;
pub mod runtime_state;
pub mod source;
pub mod spec;
pub mod status;
pub mod volumes;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, ResourceExt};
use r8s_client::informer::{Informers, ObjKey, key_of};
use r8s_client::queue::WorkQueue;
use serde_json::json;

use crate::config::Config;
use crate::cri::{CALL_TIMEOUT, Runtime, pb, req};
use runtime_state::{PodRuntimeState, restart_count};
pub use source::{PodSource, SharedPods};
use spec::{ANN_RESTART_COUNT, ANN_TERMINATION_PATH, EnvSources, LABEL_CONTAINER_NAME, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID};
use status::Waiting;

const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

pub struct Kubelet {
    client: kube::Client,
    cfg: Arc<Config>,
    rt: Runtime,
    pods: PodSource,
    queue: WorkQueue<ObjKey>,
    recorder: r8s_client::events::Recorder,
    host_ip: String,
    /// Per (pod uid, container): why it is waiting.
    waiting: Mutex<HashMap<String, Waiting>>,
    /// Per (pod uid, container): restart back-off (delay, not before).
    backoff: Mutex<HashMap<(String, String), (Duration, Instant)>>,
    terminating: Mutex<HashSet<String>>,
    probes: Arc<prober::Ctx>,
}

impl Kubelet {
    /// A kubelet watching its own node's pods.
    pub fn new(client: kube::Client, cfg: Arc<Config>, rt: Runtime) -> Arc<Kubelet> {
        let pods = PodSource::own(&Informers::new(client.clone()), &cfg.node_name);
        Self::with_pods(client, cfg, rt, pods)
    }

    /// A kubelet whose pods come from `pods` (one node's share of a shared watch).
    pub fn with_pods(client: kube::Client, cfg: Arc<Config>, rt: Runtime, pods: PodSource) -> Arc<Kubelet> {
        let host_ip = cfg.node_ip.to_string();
        let recorder = r8s_client::events::Recorder::new(client.clone(), "kubelet").with_host(&cfg.node_name);
        Arc::new_cyclic(|me: &std::sync::Weak<Kubelet>| {
            let me = me.clone();
            let probes = Arc::new(prober::Ctx {
                rt: rt.clone(),
                network: !cfg.simulated,
                results: Default::default(),
                recorder: recorder.clone(),
                changed: Arc::new(move || {
                    if let Some(k) = me.upgrade() {
                        k.requeue_all();
                    }
                }),
            });
            Kubelet {
                recorder,
                client,
                cfg,
                rt,
                pods: pods.clone(),
                queue: WorkQueue::with_backoff(Duration::from_millis(500), Duration::from_secs(30)),
                host_ip,
                waiting: Default::default(),
                backoff: Default::default(),
                terminating: Default::default(),
                probes,
            }
        })
    }

    /// A probe result changed: resync this node's pods (cheap: statuses are only written when
    /// they differ).
    fn requeue_all(&self) {
        for p in self.pods.list() {
            self.queue.add(key_of(p.as_ref()));
        }
    }

    pub fn runtime(&self) -> &Runtime {
        &self.rt
    }

    /// Every pod bound to this node (from the informer).
    pub fn pods_on_node(&self) -> Vec<Arc<Pod>> {
        self.pods.list()
    }

    /// This node's pod (from the informer).
    pub fn pod(&self, ns: &str, name: &str) -> Option<Arc<Pod>> {
        self.pods.get(ns, name)
    }

    /// Runs the pod workers and the relist loop until the process ends.
    pub async fn run(self: Arc<Self>, _node: Node) -> anyhow::Result<()> {
        let k = self;
        let pods = k.pods.clone();
        {
            let q = k.queue.clone();
            pods.on_change(move |old, new| {
                if let Some(p) = new.or(old) {
                    q.add(key_of(p.as_ref()));
                }
            });
        }
        pods.synced().await;
        for p in pods.list() {
            k.queue.add(key_of(p.as_ref()));
        }
        let me = k.clone();
        r8s_client::run_workers("kubelet", k.queue.clone(), k.cfg.pod_workers.max(1), move |key| {
            let me = me.clone();
            async move { me.sync(key).await }
        });
        k.relist_loop().await;
        Ok(())
    }

    /// Every second: enqueue pods whose containers changed state, and remove sandboxes of pods
    /// that no longer exist in the API.
    async fn relist_loop(self: Arc<Self>) {
        let mut last: HashMap<String, (String, i32)> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            n += 1;
            // Periodic resync (upstream: syncFrequency): ConfigMap, Secret and downward API
            // volumes follow their sources without a watch on every object a pod refers to.
            if n.is_multiple_of(self.cfg.resync_interval.as_secs().max(1)) {
                self.requeue_all();
            }
            let Ok(now) = runtime_state::snapshot(&self.rt).await else { continue };
            let mut changed: HashSet<String> = HashSet::new();
            for (id, (uid, state)) in &now {
                if last.get(id).map(|(_, s)| s) != Some(state) {
                    changed.insert(uid.clone());
                }
            }
            for (id, (uid, _)) in &last {
                if !now.contains_key(id) {
                    changed.insert(uid.clone());
                }
            }
            last = now;
            let by_uid: HashMap<String, ObjKey> = self.pods.list().iter().map(|p| (p.uid().unwrap_or_default(), key_of(p.as_ref()))).collect();
            for uid in changed {
                if let Some(k) = by_uid.get(&uid) {
                    self.queue.add(k.clone());
                }
            }
            self.remove_orphans(&by_uid).await;
        }
    }

    async fn remove_orphans(&self, live: &HashMap<String, ObjKey>) {
        let Ok(all) = runtime_state::all_pod_uids(&self.rt).await else { return };
        for (uid, ids) in all {
            if live.contains_key(&uid) || self.terminating.lock().unwrap().contains(&uid) {
                continue;
            }
            tracing::info!(pod_uid = %uid, "removing the sandboxes of a pod that is gone from the API");
            if let Err(e) = runtime_state::remove_sandboxes(&self.rt, &ids).await {
                tracing::warn!(pod_uid = %uid, error = %e, "removing sandboxes");
                continue;
            }
            volumes::cleanup(&self.cfg, &uid);
            self.waiting.lock().unwrap().remove(&uid);
            self.backoff.lock().unwrap().retain(|(u, _), _| *u != uid);
        }
    }

    async fn sync(self: &Arc<Self>, (ns, name): ObjKey) -> anyhow::Result<Option<Duration>> {
        let Some(pod) = self.pods.get(&ns, &name) else { return Ok(None) };
        let uid = spec::uid(&pod);
        if pod.metadata.deletion_timestamp.is_some() {
            if self.terminating.lock().unwrap().insert(uid.clone()) {
                let me = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = me.terminate(&pod).await {
                        tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "terminating pod");
                        me.queue.add_after((ns, name), Duration::from_secs(2));
                    }
                    me.terminating.lock().unwrap().remove(&uid);
                });
            }
            return Ok(None);
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
        let rs = runtime_state::read(&self.rt, &uid).await?;
        if phase == "Succeeded" || phase == "Failed" {
            // Finished pods keep no running containers and no network.
            if let Some(sb) = rs.ready_sandbox() {
                self.rt.runtime.clone().stop_pod_sandbox(req(pb::StopPodSandboxRequest { pod_sandbox_id: sb.id.clone() }, Duration::from_secs(60))).await?;
            }
            return Ok(None);
        }
        let requeue = self.run_pod(&pod, rs).await?;
        Ok(requeue)
    }

    fn waiting_of(&self, uid: &str) -> Waiting {
        self.waiting.lock().unwrap().get(uid).cloned().unwrap_or_default()
    }

    fn set_waiting(&self, uid: &str, container: &str, reason: &str, message: String) {
        self.waiting.lock().unwrap().entry(uid.to_string()).or_default().insert(container.to_string(), (reason.to_string(), message));
    }

    fn clear_waiting(&self, uid: &str, container: &str) {
        if let Some(w) = self.waiting.lock().unwrap().get_mut(uid) {
            w.remove(container);
        }
    }

    fn pod_api(&self, pod: &Pod) -> Api<Pod> {
        Api::namespaced(self.client.clone(), pod.metadata.namespace.as_deref().unwrap_or("default"))
    }

    async fn get_opt<K>(&self, ns: &str, name: &str) -> Option<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        Api::<K>::namespaced(self.client.clone(), ns).get_opt(name).await.ok().flatten()
    }

    /// Reads every ConfigMap, Secret, PVC and PV the pod refers to (one GET each).
    async fn fetch_refs(&self, pod: &Pod) -> Refs {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let mut cms = HashSet::new();
        let mut secrets = HashSet::new();
        let mut pvcs = HashSet::new();
        for v in spec.volumes.iter().flatten() {
            if let Some(c) = &v.config_map {
                cms.insert(c.name.clone());
            }
            if let Some(s) = &v.secret {
                secrets.extend(s.secret_name.clone());
            }
            if let Some(p) = &v.projected {
                for s in p.sources.iter().flatten() {
                    cms.extend(s.config_map.as_ref().map(|c| c.name.clone()));
                    secrets.extend(s.secret.as_ref().map(|c| c.name.clone()));
                }
            }
            if let Some(c) = &v.persistent_volume_claim {
                pvcs.insert(c.claim_name.clone());
            }
        }
        for c in spec.containers.iter().chain(spec.init_containers.iter().flatten()) {
            for e in c.env.iter().flatten() {
                if let Some(f) = &e.value_from {
                    cms.extend(f.config_map_key_ref.as_ref().map(|r| r.name.clone()));
                    secrets.extend(f.secret_key_ref.as_ref().map(|r| r.name.clone()));
                }
            }
            for f in c.env_from.iter().flatten() {
                cms.extend(f.config_map_ref.as_ref().map(|r| r.name.clone()));
                secrets.extend(f.secret_ref.as_ref().map(|r| r.name.clone()));
            }
        }
        for s in spec.image_pull_secrets.iter().flatten() {
            secrets.insert(s.name.clone());
        }
        let mut r = Refs::default();
        for n in cms {
            if let Some(o) = self.get_opt::<ConfigMap>(&ns, &n).await {
                r.config_maps.insert(n, o);
            }
        }
        for n in secrets {
            if let Some(o) = self.get_opt::<Secret>(&ns, &n).await {
                r.secrets.insert(n, o);
            }
        }
        for n in pvcs {
            if let Some(o) = self.get_opt::<PersistentVolumeClaim>(&ns, &n).await {
                if let Some(pv) = o.spec.as_ref().and_then(|s| s.volume_name.clone())
                    && let Ok(Some(v)) = Api::<PersistentVolume>::all(self.client.clone()).get_opt(&pv).await
                {
                    r.pvs.insert(pv, v);
                }
                r.pvcs.insert(n, o);
            }
        }
        r
    }

    async fn run_pod(self: &Arc<Self>, pod: &Pod, mut rs: PodRuntimeState) -> anyhow::Result<Option<Duration>> {
        let uid = spec::uid(pod);
        let spec_ = pod.spec.clone().unwrap_or_default();
        let refs = self.fetch_refs(pod).await;
        let host_network = spec_.host_network == Some(true);
        let mut requeue: Option<Duration> = None;

        // The sandbox (and with it the pod network).
        if rs.ready_sandbox().is_none() {
            if rs.sandboxes.is_empty() {
                self.write_status(pod, &rs, None).await?;
            }
            let attempt = rs.sandboxes.len() as u32;
            let config = spec::sandbox_config(&self.cfg, pod, attempt);
            std::fs::create_dir_all(spec::log_directory(&self.cfg, pod))?;
            match self
                .rt
                .runtime
                .clone()
                .run_pod_sandbox(req(pb::RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() }, Duration::from_secs(240)))
                .await
            {
                Ok(_) => {}
                Err(e) => {
                    self.recorder.warning(pod, "FailedCreatePodSandBox", format!("Failed to create pod sandbox: {}", e.message()));
                    return Err(anyhow::anyhow!("creating sandbox: {}", e.message()));
                }
            }
            // Containers of an older sandbox are gone with it: forget them.
            let old: Vec<String> = rs.sandboxes.iter().map(|s| s.id.clone()).collect();
            if !old.is_empty() {
                let _ = runtime_state::remove_sandboxes(&self.rt, &old).await;
            }
            rs = runtime_state::read(&self.rt, &uid).await?;
        }
        let Some(sandbox) = rs.ready_sandbox().cloned() else { anyhow::bail!("sandbox of pod {uid} is not ready") };
        let pod_ip = if host_network {
            Some(self.host_ip.clone())
        } else {
            let st = self
                .rt
                .runtime
                .clone()
                .pod_sandbox_status(req(pb::PodSandboxStatusRequest { pod_sandbox_id: sandbox.id.clone(), verbose: false }, CALL_TIMEOUT))
                .await?;
            st.into_inner().status.and_then(|s| s.network).map(|n| n.ip).filter(|ip| !ip.is_empty())
        };
        let sandbox_config = spec::sandbox_config(&self.cfg, pod, sandbox.metadata.as_ref().map(|m| m.attempt).unwrap_or(0));

        // Volumes, rewritten on every sync so ConfigMap/Secret changes reach the files.
        let env_src = EnvSources {
            pod,
            pod_ip: pod_ip.clone().unwrap_or_default(),
            host_ip: self.host_ip.clone(),
            config_maps: &|n| refs.config_maps.get(n).cloned(),
            secrets: &|n| refs.secrets.get(n).cloned(),
        };
        let vol_src = volumes::Sources { env: env_src, pvc: &|n| refs.pvcs.get(n).cloned(), pv: &|n| refs.pvs.get(n).cloned() };
        let vols = match volumes::prepare(&self.cfg, pod, &vol_src) {
            Ok(v) => v,
            Err(msg) => {
                self.recorder.warning(pod, "FailedMount", msg.clone());
                self.write_status(pod, &rs, pod_ip.clone()).await?;
                return Ok(Some(Duration::from_secs(10)));
            }
        };
        let ctx = StartCtx { pod, sandbox_id: &sandbox.id, sandbox_config: &sandbox_config, env: &vol_src.env, vols: &vols, refs: &refs };

        // Init containers, one after another.
        let policy = spec_.restart_policy.clone().unwrap_or_else(|| "Always".into());
        let mut init_done = true;
        for c in spec_.init_containers.iter().flatten() {
            match rs.latest(&c.name) {
                Some(l) if l.state == pb::ContainerState::ContainerExited as i32 && l.exit_code == 0 => continue,
                Some(l) if l.state == pb::ContainerState::ContainerRunning as i32 || l.state == pb::ContainerState::ContainerCreated as i32 => {
                    init_done = false;
                    break;
                }
                Some(l) => {
                    init_done = false;
                    if policy != "Never" {
                        requeue = min_dur(requeue, self.maybe_restart(&ctx, c, Some(l), &rs).await);
                    }
                    break;
                }
                None => {
                    init_done = false;
                    requeue = min_dur(requeue, self.start_container(&ctx, c, 0).await);
                    break;
                }
            }
        }
        if init_done {
            for c in &spec_.containers {
                match rs.latest(&c.name) {
                    None => requeue = min_dur(requeue, self.start_container(&ctx, c, 0).await),
                    Some(l) if l.state == pb::ContainerState::ContainerExited as i32 && status::will_restart(&policy, l) => {
                        requeue = min_dur(requeue, self.maybe_restart(&ctx, c, Some(l), &rs).await);
                    }
                    Some(l) if l.state == pb::ContainerState::ContainerCreated as i32 => {
                        let _ = self.rt.runtime.clone().start_container(req(pb::StartContainerRequest { container_id: l.id.clone() }, CALL_TIMEOUT)).await;
                    }
                    _ => {}
                }
            }
        }
        let rs = runtime_state::read(&self.rt, &uid).await?;
        for c in &spec_.containers {
            if let Some(inst) = rs.latest(&c.name).filter(|i| i.state == pb::ContainerState::ContainerRunning as i32) {
                prober::ensure(&self.probes, pod, c, &inst.id, pod_ip.as_deref().unwrap_or_default(), inst.started_at);
            }
        }
        self.write_status(pod, &rs, pod_ip).await?;
        Ok(requeue)
    }

    /// Restarts an exited container unless it is in back-off (10 s doubling to 5 min).
    async fn maybe_restart(&self, ctx: &StartCtx<'_>, c: &Container, last: Option<&pb::ContainerStatus>, _rs: &PodRuntimeState) -> Option<Duration> {
        let uid = spec::uid(ctx.pod);
        let key = (uid.clone(), c.name.clone());
        let now = Instant::now();
        let entry = self.backoff.lock().unwrap().get(&key).cloned();
        if let Some((delay, not_before)) = entry
            && now < not_before
        {
            let pod_ref = format!("{}_{}({})", ctx.pod.name_any(), ctx.pod.namespace().unwrap_or_default(), uid);
            let msg = format!("back-off {}s restarting failed container={} pod={pod_ref}", delay.as_secs(), c.name);
            let was = self.waiting_of(&uid).get(&c.name).map(|w| w.0.clone());
            self.set_waiting(&uid, &c.name, "CrashLoopBackOff", msg);
            if was.as_deref() != Some("CrashLoopBackOff") {
                self.recorder.warning(ctx.pod, "BackOff", format!("Back-off restarting failed container {} in pod {pod_ref}", c.name));
            }
            return Some(not_before - now);
        }
        let next = entry.map(|(d, _)| (d * 2).min(BACKOFF_MAX)).unwrap_or(BACKOFF_START);
        self.backoff.lock().unwrap().insert(key, (next, now + next));
        let count = last.map(|l| restart_count(l) + 1).unwrap_or(0);
        self.start_container(ctx, c, count).await.or(Some(next))
    }

    /// Pulls the image if needed, creates and starts one container instance. Failures become
    /// the container's waiting reason and an Event; the return value asks for a retry.
    async fn start_container(&self, ctx: &StartCtx<'_>, c: &Container, restart_count: i32) -> Option<Duration> {
        let pod = ctx.pod;
        let uid = spec::uid(pod);
        let pull_secrets: Vec<Secret> = pod
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.clone())
            .unwrap_or_default()
            .iter()
            .filter_map(|r| ctx.refs.secrets.get(&r.name).cloned())
            .collect();
        let image_ref = match images::ensure(&self.rt, &self.recorder, pod, c, ctx.sandbox_config, &pull_secrets, &self.backoff, &uid).await {
            Ok(r) => r,
            Err((reason, msg, retry)) => {
                self.set_waiting(&uid, &c.name, &reason, msg);
                return Some(retry);
            }
        };
        let env = match spec::container_env(c, ctx.env) {
            Ok(e) => e,
            Err(msg) => {
                self.recorder.warning(pod, "Failed", format!("Error: {msg}"));
                self.set_waiting(&uid, &c.name, "CreateContainerConfigError", msg);
                return Some(Duration::from_secs(10));
            }
        };
        let expand_all = |v: &Option<Vec<String>>| v.clone().unwrap_or_default().iter().map(|s| spec::expand(s, &env)).collect::<Vec<_>>();
        let mut mounts = Vec::new();
        for m in c.volume_mounts.iter().flatten() {
            let Some(host) = ctx.vols.get(&m.name) else {
                let msg = format!("volume \"{}\" not found in the pod's volumes", m.name);
                self.recorder.warning(pod, "Failed", format!("Error: {msg}"));
                self.set_waiting(&uid, &c.name, "CreateContainerConfigError", msg);
                return Some(Duration::from_secs(10));
            };
            let mut host_path: PathBuf = host.clone();
            if let Some(sub) = m.sub_path.as_ref().filter(|s| !s.is_empty()) {
                host_path = host_path.join(spec::expand(sub, &env));
                if !host_path.exists() {
                    let _ = std::fs::create_dir_all(&host_path);
                }
            }
            mounts.push(pb::Mount {
                container_path: m.mount_path.clone(),
                host_path: host_path.display().to_string(),
                readonly: m.read_only == Some(true),
                selinux_relabel: false,
                propagation: match m.mount_propagation.as_deref() {
                    Some("HostToContainer") => pb::MountPropagation::PropagationHostToContainer as i32,
                    Some("Bidirectional") => pb::MountPropagation::PropagationBidirectional as i32,
                    _ => pb::MountPropagation::PropagationPrivate as i32,
                },
            });
        }
        // /etc/hosts as the kubelet manages it, and the termination message file.
        let pod_dir = volumes::pod_dir(&self.cfg, &uid);
        if pod.spec.as_ref().and_then(|s| s.host_network) != Some(true) && !mounts.iter().any(|m| m.container_path == "/etc/hosts") {
            let hosts = pod_dir.join("etc-hosts");
            let ip = ctx.env.pod_ip.clone();
            let hostname = ctx.sandbox_config.hostname.clone();
            let text = format!(
                "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n{ip}\t{hostname}\n"
            );
            let _ = std::fs::create_dir_all(&pod_dir);
            let _ = std::fs::write(&hosts, text);
            mounts.push(pb::Mount { container_path: "/etc/hosts".into(), host_path: hosts.display().to_string(), ..Default::default() });
        }
        let term_path = c.termination_message_path.clone().unwrap_or_else(|| "/dev/termination-log".into());
        let term_host = pod_dir.join("containers").join(&c.name).join(format!("{:08x}", rand::random::<u32>()));
        let _ = std::fs::create_dir_all(term_host.parent().unwrap_or(&pod_dir));
        let _ = std::fs::write(&term_host, b"");
        mounts.push(pb::Mount { container_path: term_path, host_path: term_host.display().to_string(), ..Default::default() });

        let qos = spec::qos_class(pod);
        let config = pb::ContainerConfig {
            metadata: Some(pb::ContainerMetadata { name: c.name.clone(), attempt: restart_count as u32 }),
            image: Some(pb::ImageSpec { image: image_ref, annotations: Default::default() }),
            command: expand_all(&c.command),
            args: expand_all(&c.args),
            working_dir: c.working_dir.clone().unwrap_or_default(),
            envs: env.iter().map(|(k, v)| pb::KeyValue { key: k.clone(), value: v.clone() }).collect(),
            mounts,
            labels: [
                (LABEL_POD_NAME.to_string(), pod.name_any()),
                (LABEL_POD_NAMESPACE.to_string(), pod.namespace().unwrap_or_default()),
                (LABEL_POD_UID.to_string(), uid.clone()),
                (LABEL_CONTAINER_NAME.to_string(), c.name.clone()),
            ]
            .into(),
            annotations: [(ANN_RESTART_COUNT.to_string(), restart_count.to_string()), (ANN_TERMINATION_PATH.to_string(), term_host.display().to_string())]
                .into(),
            log_path: format!("{}/{}.log", c.name, restart_count),
            stdin: c.stdin == Some(true),
            stdin_once: c.stdin_once == Some(true),
            tty: c.tty == Some(true),
            linux: Some(pb::LinuxContainerConfig { resources: Some(spec::linux_resources(c, qos)), security_context: Some(spec::security_context(pod, c)) }),
        };
        let created = self
            .rt
            .runtime
            .clone()
            .create_container(req(
                pb::CreateContainerRequest {
                    pod_sandbox_id: ctx.sandbox_id.to_string(),
                    config: Some(config),
                    sandbox_config: Some(ctx.sandbox_config.clone()),
                },
                CALL_TIMEOUT,
            ))
            .await;
        let id = match created {
            Ok(r) => r.into_inner().container_id,
            Err(e) => {
                self.recorder.warning(pod, "Failed", format!("Error: {}", e.message()));
                self.set_waiting(&uid, &c.name, "CreateContainerError", e.message().to_string());
                return Some(Duration::from_secs(10));
            }
        };
        self.recorder.normal(pod, "Created", format!("Created container {}", c.name));
        if let Err(e) = self.rt.runtime.clone().start_container(req(pb::StartContainerRequest { container_id: id.clone() }, CALL_TIMEOUT)).await {
            self.recorder.warning(pod, "Failed", format!("Error: {}", e.message()));
            self.set_waiting(&uid, &c.name, "RunContainerError", e.message().to_string());
            return Some(Duration::from_secs(10));
        }
        self.recorder.normal(pod, "Started", format!("Started container {}", c.name));
        self.clear_waiting(&uid, &c.name);
        // Keep one exited instance per container (for `logs --previous`); remove older ones.
        self.prune_instances(&uid, &c.name, &id).await;
        if let Some(cmd) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()).and_then(|h| h.exec.as_ref()).and_then(|e| e.command.clone()) {
            let r = self.rt.runtime.clone().exec_sync(req(pb::ExecSyncRequest { container_id: id.clone(), cmd, timeout: 30 }, Duration::from_secs(35))).await;
            let failed = match r {
                Ok(r) => r.into_inner().exit_code != 0,
                Err(_) => true,
            };
            if failed {
                self.recorder.warning(pod, "FailedPostStartHook", format!("PostStartHook failed for container {}", c.name));
                let _ = self.rt.runtime.clone().stop_container(req(pb::StopContainerRequest { container_id: id, timeout: 0 }, CALL_TIMEOUT)).await;
            }
        }
        None
    }

    async fn prune_instances(&self, uid: &str, name: &str, keep: &str) {
        let Ok(rs) = runtime_state::read(&self.rt, uid).await else { return };
        for old in rs.containers.get(name).into_iter().flatten().filter(|c| c.id != keep).skip(1) {
            let _ = self.rt.runtime.clone().remove_container(req(pb::RemoveContainerRequest { container_id: old.id.clone() }, CALL_TIMEOUT)).await;
        }
    }

    async fn write_status(&self, pod: &Pod, rs: &PodRuntimeState, pod_ip: Option<String>) -> anyhow::Result<()> {
        let uid = spec::uid(pod);
        let waiting = self.waiting_of(&uid);
        let spec_ = pod.spec.clone().unwrap_or_default();
        let ready = |name: &str| {
            let Some(c) = spec_.containers.iter().find(|c| c.name == name) else { return false };
            rs.latest(name).is_some_and(|inst| self.probes.results.ready(c, &inst.id))
        };
        let st = status::compute(&status::StatusInput {
            pod,
            rs,
            waiting: &waiting,
            pod_ip,
            host_ip: self.host_ip.clone(),
            ready: &ready,
            qos: spec::qos_class(pod),
        });
        let current = serde_json::to_value(pod.status.clone().unwrap_or_default())?;
        if same_status(&current, &st) {
            return Ok(());
        }
        self.pod_api(pod).patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&json!({"status": st}))).await?;
        Ok(())
    }

    /// Deletion as upstream: preStop hooks, then SIGTERM and SIGKILL after the grace period
    /// (StopContainer's timeout), then the sandbox goes and the API object is removed.
    async fn terminate(&self, pod: &Pod) -> anyhow::Result<()> {
        let uid = spec::uid(pod);
        let grace = pod.metadata.deletion_grace_period_seconds.or(pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds)).unwrap_or(30).max(0);
        let deadline = Instant::now() + Duration::from_secs(grace as u64);
        let rs = runtime_state::read(&self.rt, &uid).await?;
        let spec_ = pod.spec.clone().unwrap_or_default();
        let mut stops = Vec::new();
        for (name, instances) in &rs.containers {
            let Some(c) = instances.first().filter(|c| c.state == pb::ContainerState::ContainerRunning as i32) else { continue };
            let container = spec_.containers.iter().chain(spec_.init_containers.iter().flatten()).find(|x| &x.name == name).cloned();
            let rt = self.rt.clone();
            let id = c.id.clone();
            let recorder = self.recorder.clone();
            let pod = pod.clone();
            let name = name.clone();
            stops.push(async move {
                recorder.normal(&pod, "Killing", format!("Stopping container {name}"));
                if let Some(cmd) = container.and_then(|c| c.lifecycle).and_then(|l| l.pre_stop).and_then(|h| h.exec).and_then(|e| e.command) {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let r = rt
                        .runtime
                        .clone()
                        .exec_sync(req(
                            pb::ExecSyncRequest { container_id: id.clone(), cmd, timeout: left.as_secs().max(1) as i64 },
                            left + Duration::from_secs(5),
                        ))
                        .await;
                    if !matches!(&r, Ok(r) if r.get_ref().exit_code == 0) {
                        recorder.warning(&pod, "FailedPreStopHook", format!("PreStopHook failed for container {name}"));
                    }
                }
                let left = deadline.saturating_duration_since(Instant::now()).as_secs() as i64;
                rt.runtime
                    .clone()
                    .stop_container(req(pb::StopContainerRequest { container_id: id, timeout: left }, Duration::from_secs(left as u64 + 30)))
                    .await
            });
        }
        for r in futures::future::join_all(stops).await {
            if let Err(e) = r
                && e.code() != tonic::Code::NotFound
            {
                return Err(anyhow::anyhow!("stopping container: {}", e.message()));
            }
        }
        // Report the final container states before the object goes.
        let rs = runtime_state::read(&self.rt, &uid).await?;
        let _ = self.write_status(pod, &rs, pod.status.as_ref().and_then(|s| s.pod_ip.clone())).await;
        let ids: Vec<String> = rs.sandboxes.iter().map(|s| s.id.clone()).collect();
        runtime_state::remove_sandboxes(&self.rt, &ids).await?;
        volumes::cleanup(&self.cfg, &uid);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: Some(uid.clone()), resource_version: None }),
            ..Default::default()
        };
        match self.pod_api(pod).delete(&pod.name_any(), &dp).await {
            Ok(_) => {}
            Err(e) if r8s_client::is_not_found(&e) || r8s_client::is_conflict(&e) => {}
            Err(e) => return Err(e.into()),
        }
        self.waiting.lock().unwrap().remove(&uid);
        self.backoff.lock().unwrap().retain(|(u, _), _| *u != uid);
        Ok(())
    }
}

#[derive(Default)]
struct Refs {
    config_maps: HashMap<String, ConfigMap>,
    secrets: HashMap<String, Secret>,
    pvcs: HashMap<String, PersistentVolumeClaim>,
    pvs: HashMap<String, PersistentVolume>,
}

struct StartCtx<'a> {
    pod: &'a Pod,
    sandbox_id: &'a str,
    sandbox_config: &'a pb::PodSandboxConfig,
    env: &'a EnvSources<'a>,
    vols: &'a HashMap<String, PathBuf>,
    refs: &'a Refs,
}

fn min_dur(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Equal apart from fields the API fills itself. Nulls count as absent: the computed status
/// says `lastProbeTime: null` where the stored one (read back through the typed client) has
/// no field, and a difference there alone is no reason for a PATCH.
fn same_status(current: &serde_json::Value, new: &serde_json::Value) -> bool {
    let (current, new) = (without_nulls(current), without_nulls(new));
    new.as_object().is_some_and(|m| m.iter().all(|(k, v)| current.get(k) == Some(v)))
}

fn without_nulls(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => serde_json::Value::Object(m.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), without_nulls(v))).collect()),
        serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod same_status_tests {
    use super::*;

    #[test]
    fn nulls_the_stored_status_leaves_out_are_no_difference() {
        let stored = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
        let computed = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": null}]});
        assert!(same_status(&stored, &computed));
        let changed = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False", "lastProbeTime": null}]});
        assert!(!same_status(&stored, &changed));
    }
}
