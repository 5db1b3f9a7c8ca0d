//! Pods: upstream's pod strategy (defaults with the DefaultTolerationSeconds admission's
//! tolerations, QoS class on create, spec immutability, graceful deletion of bound pods, field
//! selectors) and printer (STATUS rules: Init:N/M, CrashLoopBackOff, Terminating, Completed).

use serde_json::{Value, json};

use super::Kind;
use crate::errors::FieldError;
use crate::kinds::podspec::{default_pod_spec, qos_class, validate_pod_spec};
use crate::meta::obj_mut;
use crate::printers::{AGE, Column, NAME, age, arr, col, i, or_none, s, since};
use crate::strategy::value_as_field;

pub struct Pod;

impl Kind for Pod {
    fn initial_status(&self, obj: &Value) -> Option<Value> {
        Some(json!({"phase": "Pending", "qosClass": qos_class(obj.get("spec"))}))
    }

    fn default(&self, obj: &mut Value) {
        default_pod_spec(obj_mut(obj, &["spec"]), true)
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
        if let Some(spec) = obj.get("spec") {
            validate_pod_spec(spec, "spec", errs);
        } else {
            errs.push(FieldError::required("spec.containers", ""));
        }
        let Some(old) = old else { return };
        // Pod specs are immutable except image, activeDeadlineSeconds, tolerations
        // (additions) and terminationGracePeriodSeconds.
        let strip = |v: &Value| {
            let mut s = v.get("spec").cloned().unwrap_or(json!({}));
            for c in ["containers", "initContainers"] {
                if let Some(cs) = s.get_mut(c).and_then(Value::as_array_mut) {
                    for ct in cs {
                        if let Some(m) = ct.as_object_mut() {
                            m.remove("image");
                        }
                    }
                }
            }
            if let Some(m) = s.as_object_mut() {
                m.remove("activeDeadlineSeconds");
                m.remove("tolerations");
                m.remove("terminationGracePeriodSeconds");
                m.remove("ephemeralContainers");
            }
            s
        };
        // A pod may be bound once (nodeName set by the binding subresource).
        let mut old_spec = strip(old);
        let new_spec = strip(obj);
        if old_spec.get("nodeName").is_none()
            && let (Some(m), Some(n)) = (old_spec.as_object_mut(), new_spec.get("nodeName"))
        {
            m.insert("nodeName".into(), n.clone());
        }
        if old_spec != new_spec {
            errs.push(FieldError::forbidden(
                "spec",
                "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
            ));
        }
    }

    fn field_attrs(&self, obj: &Value, add: &mut dyn FnMut(&str, String)) {
        let s = |p: &str| obj.pointer(p).map(value_as_field).unwrap_or_default();
        add("spec.nodeName", s("/spec/nodeName"));
        add("spec.restartPolicy", s("/spec/restartPolicy"));
        add("spec.schedulerName", s("/spec/schedulerName"));
        add("spec.serviceAccountName", s("/spec/serviceAccountName"));
        add("spec.hostNetwork", obj.pointer("/spec/hostNetwork").map(value_as_field).unwrap_or_else(|| "false".into()));
        add("status.phase", s("/status/phase"));
        add("status.podIP", s("/status/podIP"));
        add("status.nominatedNodeName", s("/status/nominatedNodeName"));
    }

    fn extra_field_selectors(&self) -> &'static [&'static str] {
        &["status.podIPs"]
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME,
            col("Ready", 0),
            col("Status", 0),
            col("Restarts", 0),
            AGE,
            col("IP", 1),
            col("Node", 1),
            col("Nominated Node", 1),
            col("Readiness Gates", 1),
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        pod_cells(obj)
    }

    fn graceful(&self) -> bool {
        true
    }

    /// A pod that never reached a node, or has finished, goes at once; a running one gets its
    /// grace period (the request's, else its terminationGracePeriodSeconds) for its kubelet.
    fn deletion_grace(&self, current: &Value, requested: Option<i64>) -> i64 {
        let bound = current.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|s| !s.is_empty());
        let phase = current.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
        if !bound || phase == "Succeeded" || phase == "Failed" {
            return 0;
        }
        requested.unwrap_or_else(|| current.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(30))
    }

    /// A bound pod in its grace period stays until its kubelet confirms (or a forced delete).
    fn may_remove(&self, current: &Value, obj: &Value) -> bool {
        !(current.pointer("/spec/nodeName").is_some() && obj.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(0) > 0)
    }
}

fn pod_cells(pod: &Value) -> Vec<Value> {
    let mut restarts = 0i64;
    let mut restartable_restarts = 0i64;
    let mut last_restart: Option<String> = None;
    let mut last_restartable_restart: Option<String> = None;
    let init_specs = arr(pod, "/spec/initContainers");
    let is_restartable = |n: &str| init_specs.iter().any(|c| s(c, "/name") == n && s(c, "/restartPolicy") == "Always");
    let sidecars = init_specs.iter().filter(|c| s(c, "/restartPolicy") == "Always").count();
    let total = arr(pod, "/spec/containers").len() + sidecars;
    let mut ready = 0;
    let phase = s(pod, "/status/phase");
    let mut reason = if s(pod, "/status/reason").is_empty() { phase.clone() } else { s(pod, "/status/reason") };
    for c in arr(pod, "/status/conditions") {
        if s(c, "/type") == "PodScheduled" && s(c, "/reason") == "SchedulingGated" {
            reason = "SchedulingGated".into();
        }
    }
    let max_time = |a: &mut Option<String>, b: String| {
        if !b.is_empty() && a.as_ref().is_none_or(|x| *x < b) {
            *a = Some(b);
        }
    };
    let mut initializing = false;
    let n_init = init_specs.len();
    for (idx, c) in arr(pod, "/status/initContainerStatuses").iter().enumerate() {
        restarts += i(c, "/restartCount");
        max_time(&mut last_restart, s(c, "/lastState/terminated/finishedAt"));
        let name = s(c, "/name");
        let restartable = is_restartable(&name);
        if restartable {
            restartable_restarts += i(c, "/restartCount");
            max_time(&mut last_restartable_restart, s(c, "/lastState/terminated/finishedAt"));
            if c.get("started") == Some(&json!(true)) && c.get("ready") == Some(&json!(true)) {
                ready += 1;
            }
        }
        let term = c.pointer("/state/terminated");
        let waiting_reason = s(c, "/state/waiting/reason");
        // A finished init container, or a started sidecar, is done.
        if (term.is_some() && i(c, "/state/terminated/exitCode") == 0) || (restartable && c.get("started") == Some(&json!(true))) {
            continue;
        } else if term.is_some() {
            let r = s(c, "/state/terminated/reason");
            reason = if r.is_empty() {
                let sig = i(c, "/state/terminated/signal");
                if sig != 0 { format!("Init:Signal:{sig}") } else { format!("Init:ExitCode:{}", i(c, "/state/terminated/exitCode")) }
            } else {
                format!("Init:{r}")
            };
            initializing = true;
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
            initializing = true;
        } else {
            reason = format!("Init:{idx}/{n_init}");
            initializing = true;
        }
        break;
    }
    let initialized = arr(pod, "/status/conditions").iter().any(|c| s(c, "/type") == "Initialized" && s(c, "/status") == "True");
    if !initializing || initialized {
        restarts = restartable_restarts;
        last_restart = last_restartable_restart;
        let mut has_running = false;
        for c in arr(pod, "/status/containerStatuses").iter().rev() {
            restarts += i(c, "/restartCount");
            max_time(&mut last_restart, s(c, "/lastState/terminated/finishedAt"));
            let wr = s(c, "/state/waiting/reason");
            let term = c.pointer("/state/terminated");
            let tr = s(c, "/state/terminated/reason");
            if !wr.is_empty() {
                reason = wr;
            } else if term.is_some() && !tr.is_empty() {
                reason = tr;
            } else if term.is_some() {
                let sig = i(c, "/state/terminated/signal");
                reason = if sig != 0 { format!("Signal:{sig}") } else { format!("ExitCode:{}", i(c, "/state/terminated/exitCode")) };
            } else if c.get("ready") == Some(&json!(true)) && c.pointer("/state/running").is_some() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = arr(pod, "/status/conditions").iter().any(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True");
            reason = if pod_ready { "Running".into() } else { "NotReady".into() };
        }
    }
    let deleting = pod.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null());
    if deleting && s(pod, "/status/reason") == "NodeLost" {
        reason = "Unknown".into();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }
    let restarts_str = match (&last_restart, restarts) {
        (Some(t), r) if r != 0 => format!("{r} ({} ago)", since(Some(t))),
        _ => restarts.to_string(),
    };
    let ip = arr(pod, "/status/podIPs").first().map(|p| s(p, "/ip")).filter(|x| !x.is_empty()).or_else(|| Some(s(pod, "/status/podIP"))).unwrap_or_default();
    let gates = arr(pod, "/spec/readinessGates");
    let gates_str = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let t = gates
            .iter()
            .filter(|g| arr(pod, "/status/conditions").iter().any(|c| s(c, "/type") == s(g, "/conditionType") && s(c, "/status") == "True"))
            .count();
        format!("{t}/{}", gates.len())
    };
    vec![
        json!(crate::meta::name(pod)),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_str),
        age(pod),
        json!(or_none(ip)),
        json!(or_none(s(pod, "/spec/nodeName"))),
        json!(or_none(s(pod, "/status/nominatedNodeName"))),
        json!(gates_str),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_statuses() {
        let base = json!({"metadata": {"name": "p", "creationTimestamp": "2020-01-01T00:00:00Z"}, "spec": {"containers": [{"name": "a"}]}});
        let with = |status: Value| {
            let mut p = base.clone();
            p["status"] = status;
            pod_cells(&p)
        };
        assert_eq!(with(json!({"phase": "Pending"}))[2], json!("Pending"));
        let crash = with(
            json!({"phase": "Running", "containerStatuses": [{"name": "a", "ready": false, "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}),
        );
        assert_eq!(crash[2], json!("CrashLoopBackOff"));
        assert_eq!(crash[3], json!("3"));
        let done = with(
            json!({"phase": "Succeeded", "containerStatuses": [{"name": "a", "ready": false, "restartCount": 0, "state": {"terminated": {"reason": "Completed", "exitCode": 0}}}]}),
        );
        assert_eq!(done[2], json!("Completed"));
        let mut init = base.clone();
        init["spec"]["initContainers"] = json!([{"name": "i1"}, {"name": "i2"}]);
        init["status"] = json!({"phase": "Pending", "initContainerStatuses": [{"name": "i1", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}, {"name": "i2", "state": {"running": {}}}]});
        assert_eq!(pod_cells(&init)[2], json!("Init:1/2"));
        let mut term = base.clone();
        term["metadata"]["deletionTimestamp"] = json!("2020-01-01T00:00:00Z");
        term["status"] = json!({"phase": "Running"});
        assert_eq!(pod_cells(&term)[2], json!("Terminating"));
    }
}
