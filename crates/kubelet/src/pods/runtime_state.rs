//! What the runtime holds for one pod: its sandboxes and container instances, read through CRI.
//! This is the kubelet's truth; nothing about running containers is kept in memory.

use std::collections::HashMap;
use std::time::Duration;

use crate::cri::{CALL_TIMEOUT, Runtime, pb, req};

use super::spec::{ANN_RESTART_COUNT, LABEL_CONTAINER_NAME, LABEL_POD_UID};

#[derive(Debug, Default, Clone)]
pub struct PodRuntimeState {
    /// Newest first.
    pub sandboxes: Vec<pb::PodSandbox>,
    /// Per container name, instances newest first (with their CRI status).
    pub containers: HashMap<String, Vec<pb::ContainerStatus>>,
}

impl PodRuntimeState {
    pub fn ready_sandbox(&self) -> Option<&pb::PodSandbox> {
        self.sandboxes.first().filter(|s| s.state == pb::PodSandboxState::SandboxReady as i32)
    }
    pub fn latest(&self, name: &str) -> Option<&pb::ContainerStatus> {
        self.containers.get(name).and_then(|v| v.first())
    }
    pub fn previous(&self, name: &str) -> Option<&pb::ContainerStatus> {
        self.containers.get(name).and_then(|v| v.get(1))
    }
    pub fn any_running(&self) -> bool {
        self.containers.values().flatten().any(|c| c.state == pb::ContainerState::ContainerRunning as i32)
    }
}

pub fn restart_count(c: &pb::ContainerStatus) -> i32 {
    c.annotations.get(ANN_RESTART_COUNT).and_then(|v| v.parse().ok()).unwrap_or(0)
}

pub async fn read(rt: &Runtime, pod_uid: &str) -> Result<PodRuntimeState, tonic::Status> {
    let filter = pb::PodSandboxFilter { label_selector: [(LABEL_POD_UID.to_string(), pod_uid.to_string())].into(), ..Default::default() };
    let mut sandboxes = rt.runtime.clone().list_pod_sandbox(req(pb::ListPodSandboxRequest { filter: Some(filter) }, CALL_TIMEOUT)).await?.into_inner().items;
    sandboxes.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    let cfilter = pb::ContainerFilter { label_selector: [(LABEL_POD_UID.to_string(), pod_uid.to_string())].into(), ..Default::default() };
    let list = rt.runtime.clone().list_containers(req(pb::ListContainersRequest { filter: Some(cfilter) }, CALL_TIMEOUT)).await?.into_inner().containers;
    let mut containers: HashMap<String, Vec<pb::ContainerStatus>> = HashMap::new();
    for c in list {
        let status =
            match rt.runtime.clone().container_status(req(pb::ContainerStatusRequest { container_id: c.id.clone(), verbose: false }, CALL_TIMEOUT)).await {
                Ok(s) => s.into_inner().status,
                Err(s) if s.code() == tonic::Code::NotFound => continue,
                Err(s) => return Err(s),
            };
        if let Some(st) = status {
            let name = c.labels.get(LABEL_CONTAINER_NAME).cloned().unwrap_or_default();
            containers.entry(name).or_default().push(st);
        }
    }
    for v in containers.values_mut() {
        v.sort_by_key(|c| std::cmp::Reverse((restart_count(c), c.created_at)));
    }
    Ok(PodRuntimeState { sandboxes, containers })
}

/// Every pod uid with a sandbox, and whether any of its sandboxes is ready.
pub async fn all_pod_uids(rt: &Runtime) -> Result<HashMap<String, Vec<String>>, tonic::Status> {
    let items = rt.runtime.clone().list_pod_sandbox(req(pb::ListPodSandboxRequest { filter: None }, CALL_TIMEOUT)).await?.into_inner().items;
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for s in items {
        if let Some(uid) = s.labels.get(LABEL_POD_UID) {
            out.entry(uid.clone()).or_default().push(s.id);
        }
    }
    Ok(out)
}

/// Stops and removes a pod's sandboxes (and with them its containers).
pub async fn remove_sandboxes(rt: &Runtime, ids: &[String]) -> Result<(), tonic::Status> {
    for id in ids {
        rt.runtime.clone().stop_pod_sandbox(req(pb::StopPodSandboxRequest { pod_sandbox_id: id.clone() }, Duration::from_secs(120))).await?;
        rt.runtime.clone().remove_pod_sandbox(req(pb::RemovePodSandboxRequest { pod_sandbox_id: id.clone() }, Duration::from_secs(120))).await?;
    }
    Ok(())
}

/// A container-level fingerprint of the whole node, for the relist loop (upstream's PLEG):
/// container id -> (pod uid, state).
pub async fn snapshot(rt: &Runtime) -> Result<HashMap<String, (String, i32)>, tonic::Status> {
    let list = rt.runtime.clone().list_containers(req(pb::ListContainersRequest { filter: None }, CALL_TIMEOUT)).await?.into_inner().containers;
    Ok(list.into_iter().map(|c| (c.id, (c.labels.get(LABEL_POD_UID).cloned().unwrap_or_default(), c.state))).collect())
}
