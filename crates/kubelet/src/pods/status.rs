//! The pod's API status from the runtime's state (upstream's generateAPIPodStatus): container
//! states with reasons, restart counts, phase and conditions.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

use super::runtime_state::{PodRuntimeState, restart_count};
use crate::cri::pb;

/// Why a container is not running, as the worker last saw it (image pull errors, back-off,
/// config errors): (reason, message).
pub type Waiting = HashMap<String, (String, String)>;

fn ts(nanos: i64) -> Value {
    let t = k8s_openapi::jiff::Timestamp::from_nanosecond(nanos as i128).unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t)).unwrap_or(Value::Null)
}

fn terminated(c: &pb::ContainerStatus) -> Value {
    let reason = if !c.reason.is_empty() && c.reason != "Completed" && c.reason != "Error" {
        c.reason.clone()
    } else if c.exit_code == 0 {
        "Completed".into()
    } else {
        "Error".into()
    };
    let mut t = json!({"exitCode": c.exit_code, "reason": reason, "startedAt": ts(c.started_at), "finishedAt": ts(c.finished_at),
                       "containerID": format!("containerd://{}", c.id)});
    if !c.message.is_empty() {
        t["message"] = json!(c.message);
    }
    t
}

fn is_exited(c: &pb::ContainerStatus) -> bool {
    c.state == pb::ContainerState::ContainerExited as i32
}
fn is_running(c: &pb::ContainerStatus) -> bool {
    c.state == pb::ContainerState::ContainerRunning as i32
}

/// Will this exited container be started again under the pod's restartPolicy?
pub fn will_restart(policy: &str, c: &pb::ContainerStatus) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => c.exit_code != 0,
        _ => true,
    }
}

fn container_status(c: &Container, rs: &PodRuntimeState, waiting: &Waiting, policy: &str, ready: &(dyn Fn(&str) -> bool + Sync), init: bool) -> Value {
    let latest = rs.latest(&c.name);
    let image = c.image.clone().unwrap_or_default();
    let mut s = json!({"name": c.name, "image": image, "imageID": "", "ready": false, "restartCount": 0, "started": false, "state": {"waiting": {"reason": "PodInitializing"}}});
    if !init {
        s["state"] = json!({"waiting": {"reason": "ContainerCreating"}});
    }
    if let Some(l) = latest {
        s["restartCount"] = json!(restart_count(l));
        s["imageID"] = json!(l.image_ref);
        s["containerID"] = json!(format!("containerd://{}", l.id));
        if is_running(l) {
            s["state"] = json!({"running": {"startedAt": ts(l.started_at)}});
            s["started"] = json!(true);
            s["ready"] = json!(!init && ready(&c.name));
            if let Some(p) = rs.previous(&c.name).filter(|p| is_exited(p)) {
                s["lastState"] = json!({"terminated": terminated(p)});
            }
        } else if is_exited(l) {
            let restarting = !init && will_restart(policy, l) || init && l.exit_code != 0 && policy != "Never";
            if restarting && let Some((reason, msg)) = waiting.get(&c.name) {
                s["state"] = json!({"waiting": {"reason": reason, "message": msg}});
                s["lastState"] = json!({"terminated": terminated(l)});
            } else {
                s["state"] = json!({"terminated": terminated(l)});
                if let Some(p) = rs.previous(&c.name).filter(|p| is_exited(p)) {
                    s["lastState"] = json!({"terminated": terminated(p)});
                }
                if init && l.exit_code == 0 {
                    s["ready"] = json!(true);
                }
            }
        } else if let Some((reason, msg)) = waiting.get(&c.name) {
            s["state"] = json!({"waiting": {"reason": reason, "message": msg}});
        }
    } else if let Some((reason, msg)) = waiting.get(&c.name) {
        s["state"] = json!({"waiting": {"reason": reason, "message": msg}});
    }
    if s["lastState"].is_null() {
        s["lastState"] = json!({});
    }
    s
}

pub struct StatusInput<'a> {
    pub pod: &'a Pod,
    pub rs: &'a PodRuntimeState,
    pub waiting: &'a Waiting,
    pub pod_ip: Option<String>,
    pub host_ip: String,
    pub ready: &'a (dyn Fn(&str) -> bool + Sync),
    pub qos: &'a str,
}

/// The full status to store (conditions keep their transition times while unchanged).
pub fn compute(input: &StatusInput) -> Value {
    let pod = input.pod;
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
    let old = pod.status.clone().unwrap_or_default();
    let init_statuses: Vec<Value> =
        spec.init_containers.iter().flatten().map(|c| container_status(c, input.rs, input.waiting, &policy, input.ready, true)).collect();
    let statuses: Vec<Value> = spec.containers.iter().map(|c| container_status(c, input.rs, input.waiting, &policy, input.ready, false)).collect();

    let init_done = spec.init_containers.iter().flatten().all(|c| input.rs.latest(&c.name).is_some_and(|l| is_exited(l) && l.exit_code == 0));
    let init_failed =
        policy == "Never" && spec.init_containers.iter().flatten().any(|c| input.rs.latest(&c.name).is_some_and(|l| is_exited(l) && l.exit_code != 0));
    let mut running = 0;
    let mut succeeded = 0;
    let mut failed = 0;
    let mut pending = 0;
    for c in &spec.containers {
        match input.rs.latest(&c.name) {
            Some(l) if is_running(l) => running += 1,
            Some(l) if is_exited(l) => {
                if will_restart(&policy, l) {
                    // A crash-looping container counts as running once it has run (upstream).
                    running += 1;
                } else if l.exit_code == 0 {
                    succeeded += 1;
                } else {
                    failed += 1;
                }
            }
            _ => pending += 1,
        }
    }
    let phase = if init_failed {
        "Failed"
    } else if !init_done || pending > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if failed > 0 {
        "Failed"
    } else if succeeded > 0 {
        "Succeeded"
    } else {
        "Pending"
    };
    let all_ready = init_done && !statuses.is_empty() && statuses.iter().all(|s| s["ready"] == true);
    let sandbox_ready = input.rs.ready_sandbox().is_some();
    let not_ready_names: Vec<String> = statuses.iter().filter(|s| s["ready"] != true).map(|s| s["name"].as_str().unwrap_or_default().to_string()).collect();
    let now = serde_json::to_value(r8s_client::now()).unwrap_or_default();
    let old_conds = old.conditions.clone().unwrap_or_default();
    let cond = |t: &str, ok: bool, reason: Option<&str>, msg: Option<String>| {
        let status = if ok { "True" } else { "False" };
        let since = old_conds.iter().find(|c| c.type_ == t && c.status == status).and_then(|c| c.last_transition_time.clone());
        let mut c = json!({"type": t, "status": status, "lastProbeTime": null,
                           "lastTransitionTime": since.map(|s| serde_json::to_value(s).unwrap_or_default()).unwrap_or(now.clone())});
        if !ok {
            if let Some(r) = reason {
                c["reason"] = json!(r);
            }
            if let Some(m) = msg {
                c["message"] = json!(m);
            }
        }
        c
    };
    let finished = phase == "Succeeded" || phase == "Failed";
    let containers_msg = (!not_ready_names.is_empty()).then(|| format!("containers with unready status: [{}]", not_ready_names.join(" ")));
    let init_msg = (!init_done).then(|| {
        let names: Vec<String> = spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| !input.rs.latest(&c.name).is_some_and(|l| is_exited(l) && l.exit_code == 0))
            .map(|c| c.name.clone())
            .collect();
        format!("containers with incomplete status: [{}]", names.join(" "))
    });
    let ready_reason = if finished { "PodCompleted" } else { "ContainersNotReady" };
    let mut conditions = vec![
        cond("PodReadyToStartContainers", sandbox_ready && !finished, None, None),
        cond("Initialized", init_done, Some(if finished { "PodCompleted" } else { "ContainersNotInitialized" }), init_msg),
        cond("Ready", all_ready && !finished, Some(ready_reason), if finished { None } else { containers_msg.clone() }),
        cond("ContainersReady", all_ready && !finished, Some(ready_reason), if finished { None } else { containers_msg }),
    ];
    if let Some(s) = old_conds.iter().find(|c| c.type_ == "PodScheduled") {
        conditions.push(serde_json::to_value(s).unwrap_or_default());
    }
    let start = old.start_time.clone().map(|t| serde_json::to_value(t).unwrap_or_default()).unwrap_or(now);
    let mut st = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": input.host_ip,
        "hostIPs": [{"ip": input.host_ip}],
        "startTime": start,
        "containerStatuses": statuses,
        "qosClass": input.qos,
    });
    if let Some(ip) = &input.pod_ip {
        st["podIP"] = json!(ip);
        st["podIPs"] = json!([{"ip": ip}]);
    }
    if !init_statuses.is_empty() {
        st["initContainerStatuses"] = json!(init_statuses);
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cs(name: &str, state: pb::ContainerState, exit: i32) -> pb::ContainerStatus {
        pb::ContainerStatus {
            id: format!("id-{name}"),
            state: state as i32,
            exit_code: exit,
            started_at: 1_000_000_000,
            finished_at: 2_000_000_000,
            ..Default::default()
        }
    }

    fn pod(policy: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "d", "uid": "u"},
            "spec": {"restartPolicy": policy, "containers": [{"name": "a", "image": "busybox"}]}}))
        .unwrap()
    }

    fn status(p: &Pod, c: Option<pb::ContainerStatus>, waiting: Waiting) -> Value {
        let mut rs = PodRuntimeState::default();
        if let Some(c) = c {
            rs.containers.insert("a".into(), vec![c]);
        }
        compute(&StatusInput {
            pod: p,
            rs: &rs,
            waiting: &waiting,
            pod_ip: Some("10.0.0.2".into()),
            host_ip: "1.2.3.4".into(),
            ready: &|_| true,
            qos: "BestEffort",
        })
    }

    #[test]
    fn phases_follow_upstream() {
        assert_eq!(status(&pod("Always"), None, Waiting::new())["phase"], "Pending");
        assert_eq!(status(&pod("Always"), None, Waiting::new())["containerStatuses"][0]["state"]["waiting"]["reason"], "ContainerCreating");
        assert_eq!(status(&pod("Always"), Some(cs("a", pb::ContainerState::ContainerRunning, 0)), Waiting::new())["phase"], "Running");
        assert_eq!(status(&pod("Never"), Some(cs("a", pb::ContainerState::ContainerExited, 0)), Waiting::new())["phase"], "Succeeded");
        assert_eq!(status(&pod("Never"), Some(cs("a", pb::ContainerState::ContainerExited, 1)), Waiting::new())["phase"], "Failed");
        let w: Waiting = [("a".to_string(), ("CrashLoopBackOff".to_string(), "back-off".to_string()))].into();
        let s = status(&pod("Always"), Some(cs("a", pb::ContainerState::ContainerExited, 1)), w);
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["containerStatuses"][0]["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(s["containerStatuses"][0]["lastState"]["terminated"]["exitCode"], 1);
    }
}
