//! The simulated nodes' container runtime: CRI's RuntimeService and ImageService kept in memory
//! (upstream's kubemark runs its hollow kubelets on a fake remote runtime the same way). The
//! kubelet's pod workers drive it exactly as they drive containerd; only what a container
//! "does" is simulated: it runs until it is stopped when the pod's restartPolicy is Always,
//! otherwise it exits after `r8s.io/sim-duration` seconds (default 0) with
//! `r8s.io/sim-exit-code` (default 0); init containers complete at once. Sandboxes get an IP
//! from the node's podCIDR. No process, file or packet is involved.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Pod;
use r8s_kubelet::cri::pb;
use tonic::{Request, Response, Status};

use crate::ipam::PodIpam;

pub const ANN_DURATION: &str = "r8s.io/sim-duration";
pub const ANN_EXIT_CODE: &str = "r8s.io/sim-exit-code";

/// Looks a pod up by namespace and name.
pub type PodLookup = Box<dyn Fn(&str, &str) -> Option<Arc<Pod>> + Send + Sync>;

/// What the runtime may look up about the node and its pods.
pub struct World {
    pub node_name: String,
    /// The process's pod address pool, shared by all its nodes (no podCIDR needed).
    pub ipam: Arc<std::sync::Mutex<PodIpam>>,
    /// A pod by namespace and name (for its restartPolicy, init containers and annotations).
    pub pod: PodLookup,
}

struct Sandbox {
    status: pb::PodSandboxStatus,
}

struct Ctr {
    status: pb::ContainerStatus,
    sandbox_id: String,
    /// When a started container exits by itself, and with which code.
    exits: Option<(i64, i32)>,
}

#[derive(Default)]
struct State {
    sandboxes: HashMap<String, Sandbox>,
    containers: HashMap<String, Ctr>,
}

#[derive(Clone)]
pub struct SimRuntime {
    world: Arc<World>,
    state: Arc<Mutex<State>>,
}

fn now_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as i64
}

fn new_id() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

fn not_found(what: &str, id: &str) -> Status {
    Status::not_found(format!("an error occurred when try to find {what} {id:?}: not found"))
}

const RUNNING: i32 = pb::ContainerState::ContainerRunning as i32;
const EXITED: i32 = pb::ContainerState::ContainerExited as i32;

impl State {
    /// Containers whose time has come exit now.
    fn advance(&mut self) {
        let now = now_nanos();
        for c in self.containers.values_mut() {
            if c.status.state == RUNNING
                && let Some((at, code)) = c.exits
                && now >= at
            {
                c.status.state = EXITED;
                c.status.finished_at = at;
                c.status.exit_code = code;
                c.status.reason = if code == 0 { "Completed".into() } else { "Error".into() };
            }
        }
    }
}

impl SimRuntime {
    pub fn new(world: World) -> SimRuntime {
        SimRuntime { world: Arc::new(world), state: Default::default() }
    }

    pub fn into_runtime(self) -> r8s_kubelet::cri::Runtime {
        r8s_kubelet::cri::Runtime::in_process(self.clone(), self)
    }

    /// How a newly started container of this pod ends: (nanos from now, exit code), or never.
    fn fate(&self, ns: &str, pod: &str, container: &str) -> Option<(i64, i32)> {
        let p = (self.world.pod)(ns, pod)?;
        let spec = p.spec.as_ref()?;
        if spec.init_containers.iter().flatten().any(|c| c.name == container) {
            return Some((0, 0));
        }
        if spec.restart_policy.as_deref().unwrap_or("Always") == "Always" {
            return None;
        }
        let ann = p.metadata.annotations.clone().unwrap_or_default();
        let secs: u64 = ann.get(ANN_DURATION).and_then(|v| v.parse().ok()).unwrap_or(0);
        let code: i32 = ann.get(ANN_EXIT_CODE).and_then(|v| v.parse().ok()).unwrap_or(0);
        Some((Duration::from_secs(secs).as_nanos() as i64, code))
    }
}

fn matches(labels: &HashMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[tonic::async_trait]
impl pb::runtime_service_server::RuntimeService for SimRuntime {
    async fn version(&self, _: Request<pb::VersionRequest>) -> Result<Response<pb::VersionResponse>, Status> {
        Ok(Response::new(pb::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "r8s-sim".into(),
            runtime_version: "1.0.0".into(),
            runtime_api_version: "v1".into(),
        }))
    }

    async fn run_pod_sandbox(&self, r: Request<pb::RunPodSandboxRequest>) -> Result<Response<pb::RunPodSandboxResponse>, Status> {
        let config = r.into_inner().config.ok_or_else(|| Status::invalid_argument("sandbox config is required"))?;
        let meta = config.metadata.clone().unwrap_or_default();
        let host_network =
            config.linux.as_ref().and_then(|l| l.security_context.as_ref()).and_then(|s| s.namespace_options.as_ref()).is_some_and(|n| n.network == 2);
        let ip = if host_network {
            String::new()
        } else {
            self.world.ipam.lock().unwrap().allocate(&meta.uid).ok_or_else(|| Status::resource_exhausted("no free pod IP in the simulated pool"))?.to_string()
        };
        let id = new_id();
        let status = pb::PodSandboxStatus {
            id: id.clone(),
            metadata: Some(meta),
            state: pb::PodSandboxState::SandboxReady as i32,
            created_at: now_nanos(),
            network: Some(pb::PodSandboxNetworkStatus { ip, additional_ips: vec![] }),
            labels: config.labels,
            annotations: config.annotations,
        };
        self.state.lock().unwrap().sandboxes.insert(id.clone(), Sandbox { status });
        Ok(Response::new(pb::RunPodSandboxResponse { pod_sandbox_id: id }))
    }

    async fn stop_pod_sandbox(&self, r: Request<pb::StopPodSandboxRequest>) -> Result<Response<pb::StopPodSandboxResponse>, Status> {
        let id = r.into_inner().pod_sandbox_id;
        let mut st = self.state.lock().unwrap();
        let now = now_nanos();
        for c in st.containers.values_mut().filter(|c| c.sandbox_id == id && c.status.state == RUNNING) {
            c.status.state = EXITED;
            c.status.finished_at = now;
            c.status.exit_code = 137;
            c.status.reason = "Error".into();
        }
        let uid = st.sandboxes.get_mut(&id).map(|s| {
            s.status.state = pb::PodSandboxState::SandboxNotready as i32;
            s.status.metadata.clone().unwrap_or_default().uid
        });
        if let Some(uid) = uid {
            self.world.ipam.lock().unwrap().release(&uid);
        }
        Ok(Response::new(pb::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(&self, r: Request<pb::RemovePodSandboxRequest>) -> Result<Response<pb::RemovePodSandboxResponse>, Status> {
        let id = r.into_inner().pod_sandbox_id;
        let mut st = self.state.lock().unwrap();
        if let Some(s) = st.sandboxes.remove(&id) {
            self.world.ipam.lock().unwrap().release(&s.status.metadata.unwrap_or_default().uid);
        }
        st.containers.retain(|_, c| c.sandbox_id != id);
        Ok(Response::new(pb::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(&self, r: Request<pb::PodSandboxStatusRequest>) -> Result<Response<pb::PodSandboxStatusResponse>, Status> {
        let id = r.into_inner().pod_sandbox_id;
        let st = self.state.lock().unwrap();
        let s = st.sandboxes.get(&id).ok_or_else(|| not_found("sandbox", &id))?;
        Ok(Response::new(pb::PodSandboxStatusResponse { status: Some(s.status.clone()), info: Default::default() }))
    }

    async fn list_pod_sandbox(&self, r: Request<pb::ListPodSandboxRequest>) -> Result<Response<pb::ListPodSandboxResponse>, Status> {
        let filter = r.into_inner().filter.unwrap_or_default();
        let st = self.state.lock().unwrap();
        let items = st
            .sandboxes
            .values()
            .map(|s| &s.status)
            .filter(|s| filter.id.is_empty() || s.id == filter.id)
            .filter(|s| filter.state.as_ref().is_none_or(|v| v.state == s.state))
            .filter(|s| matches(&s.labels, &filter.label_selector))
            .map(|s| pb::PodSandbox {
                id: s.id.clone(),
                metadata: s.metadata.clone(),
                state: s.state,
                created_at: s.created_at,
                labels: s.labels.clone(),
                annotations: s.annotations.clone(),
            })
            .collect();
        Ok(Response::new(pb::ListPodSandboxResponse { items }))
    }

    async fn create_container(&self, r: Request<pb::CreateContainerRequest>) -> Result<Response<pb::CreateContainerResponse>, Status> {
        let r = r.into_inner();
        let config = r.config.ok_or_else(|| Status::invalid_argument("container config is required"))?;
        let mut st = self.state.lock().unwrap();
        if !st.sandboxes.contains_key(&r.pod_sandbox_id) {
            return Err(not_found("sandbox", &r.pod_sandbox_id));
        }
        let id = new_id();
        let image = config.image.clone().unwrap_or_default();
        let status = pb::ContainerStatus {
            id: id.clone(),
            metadata: config.metadata.clone(),
            state: pb::ContainerState::ContainerCreated as i32,
            created_at: now_nanos(),
            image_ref: format!("sim://{}", image.image),
            image: Some(image),
            labels: config.labels,
            annotations: config.annotations,
            log_path: config.log_path,
            ..Default::default()
        };
        st.containers.insert(id.clone(), Ctr { status, sandbox_id: r.pod_sandbox_id, exits: None });
        Ok(Response::new(pb::CreateContainerResponse { container_id: id }))
    }

    async fn start_container(&self, r: Request<pb::StartContainerRequest>) -> Result<Response<pb::StartContainerResponse>, Status> {
        let id = r.into_inner().container_id;
        let (ns, pod, name) = {
            let st = self.state.lock().unwrap();
            let c = st.containers.get(&id).ok_or_else(|| not_found("container", &id))?;
            let sb = st.sandboxes.get(&c.sandbox_id).and_then(|s| s.status.metadata.clone()).unwrap_or_default();
            (sb.namespace, sb.name, c.status.metadata.clone().unwrap_or_default().name)
        };
        let fate = self.fate(&ns, &pod, &name);
        let mut st = self.state.lock().unwrap();
        let c = st.containers.get_mut(&id).ok_or_else(|| not_found("container", &id))?;
        let now = now_nanos();
        c.status.state = RUNNING;
        c.status.started_at = now;
        c.exits = fate.map(|(after, code)| (now + after, code));
        Ok(Response::new(pb::StartContainerResponse {}))
    }

    async fn stop_container(&self, r: Request<pb::StopContainerRequest>) -> Result<Response<pb::StopContainerResponse>, Status> {
        let id = r.into_inner().container_id;
        let mut st = self.state.lock().unwrap();
        st.advance();
        let c = st.containers.get_mut(&id).ok_or_else(|| not_found("container", &id))?;
        if c.status.state == RUNNING {
            // The simulated process honours SIGTERM at once.
            c.status.state = EXITED;
            c.status.finished_at = now_nanos();
            c.status.exit_code = 0;
            c.status.reason = "Completed".into();
        }
        Ok(Response::new(pb::StopContainerResponse {}))
    }

    async fn remove_container(&self, r: Request<pb::RemoveContainerRequest>) -> Result<Response<pb::RemoveContainerResponse>, Status> {
        let id = r.into_inner().container_id;
        self.state.lock().unwrap().containers.remove(&id);
        Ok(Response::new(pb::RemoveContainerResponse {}))
    }

    async fn list_containers(&self, r: Request<pb::ListContainersRequest>) -> Result<Response<pb::ListContainersResponse>, Status> {
        let filter = r.into_inner().filter.unwrap_or_default();
        let mut st = self.state.lock().unwrap();
        st.advance();
        let containers = st
            .containers
            .values()
            .filter(|c| filter.id.is_empty() || c.status.id == filter.id)
            .filter(|c| filter.pod_sandbox_id.is_empty() || c.sandbox_id == filter.pod_sandbox_id)
            .filter(|c| filter.state.as_ref().is_none_or(|v| v.state == c.status.state))
            .filter(|c| matches(&c.status.labels, &filter.label_selector))
            .map(|c| pb::Container {
                id: c.status.id.clone(),
                pod_sandbox_id: c.sandbox_id.clone(),
                metadata: c.status.metadata.clone(),
                image: c.status.image.clone(),
                image_ref: c.status.image_ref.clone(),
                state: c.status.state,
                created_at: c.status.created_at,
                labels: c.status.labels.clone(),
                annotations: c.status.annotations.clone(),
            })
            .collect();
        Ok(Response::new(pb::ListContainersResponse { containers }))
    }

    async fn container_status(&self, r: Request<pb::ContainerStatusRequest>) -> Result<Response<pb::ContainerStatusResponse>, Status> {
        let id = r.into_inner().container_id;
        let mut st = self.state.lock().unwrap();
        st.advance();
        let c = st.containers.get(&id).ok_or_else(|| not_found("container", &id))?;
        Ok(Response::new(pb::ContainerStatusResponse { status: Some(c.status.clone()), info: Default::default() }))
    }

    /// Exec probes and hooks succeed: the simulated program does what is asked.
    async fn exec_sync(&self, _: Request<pb::ExecSyncRequest>) -> Result<Response<pb::ExecSyncResponse>, Status> {
        Ok(Response::new(pb::ExecSyncResponse::default()))
    }

    async fn exec(&self, _: Request<pb::ExecRequest>) -> Result<Response<pb::ExecResponse>, Status> {
        Err(Status::unimplemented("simulated nodes run no processes to exec into"))
    }

    async fn attach(&self, _: Request<pb::AttachRequest>) -> Result<Response<pb::AttachResponse>, Status> {
        Err(Status::unimplemented("simulated nodes run no processes to attach to"))
    }

    async fn port_forward(&self, _: Request<pb::PortForwardRequest>) -> Result<Response<pb::PortForwardResponse>, Status> {
        Err(Status::unimplemented("simulated nodes have no network to forward to"))
    }

    async fn status(&self, _: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let ok = |t: &str| pb::RuntimeCondition { r#type: t.into(), status: true, reason: String::new(), message: String::new() };
        Ok(Response::new(pb::StatusResponse {
            status: Some(pb::RuntimeStatus { conditions: vec![ok("RuntimeReady"), ok("NetworkReady")] }),
            info: Default::default(),
        }))
    }
}

/// Every image is present on a simulated node; pulls succeed at once.
#[tonic::async_trait]
impl pb::image_service_server::ImageService for SimRuntime {
    async fn list_images(&self, _: Request<pb::ListImagesRequest>) -> Result<Response<pb::ListImagesResponse>, Status> {
        Ok(Response::new(pb::ListImagesResponse { images: vec![] }))
    }

    async fn image_status(&self, r: Request<pb::ImageStatusRequest>) -> Result<Response<pb::ImageStatusResponse>, Status> {
        let name = r.into_inner().image.unwrap_or_default().image;
        let image = pb::Image { id: format!("sim://{name}"), repo_tags: vec![name], ..Default::default() };
        Ok(Response::new(pb::ImageStatusResponse { image: Some(image), info: Default::default() }))
    }

    async fn pull_image(&self, r: Request<pb::PullImageRequest>) -> Result<Response<pb::PullImageResponse>, Status> {
        let name = r.into_inner().image.unwrap_or_default().image;
        Ok(Response::new(pb::PullImageResponse { image_ref: format!("sim://{name}") }))
    }

    async fn remove_image(&self, _: Request<pb::RemoveImageRequest>) -> Result<Response<pb::RemoveImageResponse>, Status> {
        Ok(Response::new(pb::RemoveImageResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use r8s_kubelet::cri::req;

    fn pod(policy: &str, annotations: serde_json::Value) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "annotations": annotations},
                "spec": {"restartPolicy": policy, "initContainers": [{"name": "init"}], "containers": [{"name": "c"}]},
            }))
            .unwrap(),
        )
    }

    fn runtime(p: Arc<Pod>) -> r8s_kubelet::cri::Runtime {
        SimRuntime::new(World { node_name: "n".into(), ipam: Default::default(), pod: Box::new(move |ns, n| (ns == "ns" && n == "p").then(|| p.clone())) })
            .into_runtime()
    }

    async fn start(rt: &r8s_kubelet::cri::Runtime, sandbox: &str, name: &str) -> String {
        let config = pb::ContainerConfig { metadata: Some(pb::ContainerMetadata { name: name.into(), attempt: 0 }), ..Default::default() };
        let id = rt
            .runtime
            .clone()
            .create_container(req(
                pb::CreateContainerRequest { pod_sandbox_id: sandbox.into(), config: Some(config), sandbox_config: None },
                Duration::from_secs(5),
            ))
            .await
            .unwrap()
            .into_inner()
            .container_id;
        rt.runtime.clone().start_container(req(pb::StartContainerRequest { container_id: id.clone() }, Duration::from_secs(5))).await.unwrap();
        id
    }

    async fn state(rt: &r8s_kubelet::cri::Runtime, id: &str) -> (i32, i32) {
        let s = rt
            .runtime
            .clone()
            .container_status(req(pb::ContainerStatusRequest { container_id: id.into(), verbose: false }, Duration::from_secs(5)))
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        (s.state, s.exit_code)
    }

    async fn sandbox(rt: &r8s_kubelet::cri::Runtime) -> (String, String) {
        let config = pb::PodSandboxConfig {
            metadata: Some(pb::PodSandboxMetadata { name: "p".into(), uid: "u1".into(), namespace: "ns".into(), attempt: 0 }),
            ..Default::default()
        };
        let id = rt
            .runtime
            .clone()
            .run_pod_sandbox(req(pb::RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() }, Duration::from_secs(5)))
            .await
            .unwrap()
            .into_inner()
            .pod_sandbox_id;
        let mut client = rt.runtime.clone();
        let st = client.pod_sandbox_status(req(pb::PodSandboxStatusRequest { pod_sandbox_id: id.clone(), verbose: false }, Duration::from_secs(5))).await;
        let ip = st.unwrap().into_inner().status.unwrap().network.unwrap().ip;
        (id, ip)
    }

    /// Through the CRI client, as the kubelet calls it: a Never pod's container exits with the
    /// annotated code, init containers complete, an Always pod's container keeps running.
    #[tokio::test]
    async fn containers_live_as_the_pod_describes() {
        let rt = runtime(pod("Never", serde_json::json!({ANN_EXIT_CODE: "3"})));
        let (sb, ip) = sandbox(&rt).await;
        assert_eq!(ip, "100.64.0.0");
        let init = start(&rt, &sb, "init").await;
        assert_eq!(state(&rt, &init).await, (EXITED, 0));
        let c = start(&rt, &sb, "c").await;
        assert_eq!(state(&rt, &c).await, (EXITED, 3));

        let rt = runtime(pod("Always", serde_json::json!({ANN_EXIT_CODE: "3"})));
        let (sb, _) = sandbox(&rt).await;
        let c = start(&rt, &sb, "c").await;
        assert_eq!(state(&rt, &c).await, (RUNNING, 0));
        rt.runtime.clone().stop_container(req(pb::StopContainerRequest { container_id: c.clone(), timeout: 30 }, Duration::from_secs(5))).await.unwrap();
        assert_eq!(state(&rt, &c).await.0, EXITED);
        // Removing the sandbox takes its containers and frees the address.
        rt.runtime.clone().remove_pod_sandbox(req(pb::RemovePodSandboxRequest { pod_sandbox_id: sb }, Duration::from_secs(5))).await.unwrap();
        let list = rt.runtime.clone().list_containers(req(pb::ListContainersRequest { filter: None }, Duration::from_secs(5))).await.unwrap();
        assert!(list.into_inner().containers.is_empty());
        assert_eq!(sandbox(&rt).await.1, "100.64.0.0");
    }
}
