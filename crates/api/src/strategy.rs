//! Per-kind behaviour of the generic registry: defaults, validation, what create resets, whether
//! generation is tracked, which field selectors a kind supports. Objects are JSON values in the
//! resource's storage version.

use serde_json::{Map, Value, json};

use std::sync::atomic::{AtomicI64, Ordering};

use crate::errors::FieldError;
use crate::meta::{default_field, get, get_str, obj_mut};
use crate::resources::{ResourceInfo, Subresource};
use crate::validation::{NameRule, validate_dns1123_label, validate_label_value, validate_qualified_name};

/// The strategy of one resource, keyed by group and kind.
pub struct Strategy<'a> {
    pub info: &'a ResourceInfo,
}

pub fn strategy(info: &ResourceInfo) -> Strategy<'_> {
    Strategy { info }
}

impl Strategy<'_> {
    fn gk(&self) -> (&str, &str) {
        (self.info.group.as_str(), self.info.kind.as_str())
    }

    pub fn name_rule(&self) -> NameRule {
        match self.gk() {
            ("", "Namespace") => NameRule::Label,
            ("", "Service") => NameRule::Dns1035,
            ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
            ("", "Node") | ("", "Event") | ("events.k8s.io", _) => NameRule::Subdomain,
            _ => NameRule::Subdomain,
        }
    }

    /// Whether metadata.generation is kept and bumped on spec changes.
    pub fn tracks_generation(&self) -> bool {
        if self.info.custom {
            return true;
        }
        matches!(
            self.gk(),
            ("apps", "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet")
                | ("", "ReplicationController")
                | ("batch", _)
                | ("autoscaling", _)
                | ("networking.k8s.io", "Ingress" | "NetworkPolicy" | "IngressClass")
                | ("policy", _)
                | ("apiextensions.k8s.io", _)
        )
    }

    /// Fields of the status that create resets (upstream's PrepareForCreate).
    pub fn prepare_create(&self, obj: &mut Value) {
        if self.info.has(Subresource::Status) || self.info.custom {
            match self.gk() {
                ("", "Node") => {}
                ("", "Pod") => {
                    let map = obj.as_object_mut().unwrap();
                    let qos = qos_class(map.get("spec"));
                    map.insert("status".into(), json!({"phase": "Pending", "qosClass": qos}));
                }
                ("", "Namespace") => {
                    obj.as_object_mut().unwrap().insert("status".into(), json!({"phase": "Active"}));
                }
                ("", "PersistentVolume") => {
                    obj.as_object_mut().unwrap().insert("status".into(), json!({"phase": "Pending"}));
                }
                ("", "PersistentVolumeClaim") => {
                    obj.as_object_mut().unwrap().insert("status".into(), json!({"phase": "Pending"}));
                }
                ("", "Service") => {
                    obj.as_object_mut().unwrap().insert("status".into(), json!({"loadBalancer": {}}));
                }
                ("apps", _) | ("", "ReplicationController") => {
                    let replicas = if self.info.kind == "DaemonSet" { None } else { Some(0) };
                    let status = match replicas {
                        Some(_) => json!({"replicas": 0}),
                        None => {
                            json!({"currentNumberScheduled": 0, "numberMisscheduled": 0, "desiredNumberScheduled": 0, "numberReady": 0})
                        }
                    };
                    obj.as_object_mut().unwrap().insert("status".into(), status);
                    if self.info.kind == "StatefulSet" {
                        obj["status"]["availableReplicas"] = json!(0);
                    }
                }
                ("autoscaling", _) => {
                    obj.as_object_mut().unwrap().insert("status".into(), json!({"currentReplicas": 0, "desiredReplicas": 0}));
                }
                _ => {
                    obj.as_object_mut().unwrap().insert("status".into(), json!({}));
                }
            }
        }
        if self.tracks_generation() {
            crate::meta::metadata_mut(obj).insert("generation".into(), json!(1));
        }
        if self.gk() == ("", "Namespace") {
            let name = crate::meta::name(obj).to_string();
            let md = crate::meta::metadata_mut(obj);
            let labels = md.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
        }
    }

    /// Defaults applied on create and update (upstream's SetDefaults_*).
    pub fn default(&self, obj: &mut Value) {
        match self.gk() {
            ("", "Pod") => default_pod_spec(obj_mut(obj, &["spec"]), true),
            ("", "PodTemplate") => default_template(obj),
            ("", "ReplicationController") => {
                let spec = obj_mut(obj, &["spec"]);
                default_field(spec, "replicas", json!(1));
                default_field(spec, "minReadySeconds", json!(0));
                // RC's selector defaults to the template's labels.
                if spec.get("selector").is_none_or(|s| s.as_object().is_none_or(|m| m.is_empty()))
                    && let Some(l) = spec.get("template").and_then(|t| t.get("metadata")).and_then(|m| m.get("labels")).cloned()
                {
                    spec.insert("selector".into(), l);
                }
                default_template(obj);
            }
            ("", "Service") => default_service(obj),
            ("", "Namespace") => {
                let spec = obj_mut(obj, &["spec"]);
                default_field(spec, "finalizers", json!(["kubernetes"]));
            }
            ("", "Secret") => {
                default_field(obj.as_object_mut().unwrap(), "type", json!("Opaque"));
            }
            ("", "PersistentVolumeClaim") => {
                let spec = obj_mut(obj, &["spec"]);
                default_field(spec, "volumeMode", json!("Filesystem"));
            }
            ("", "PersistentVolume") => {
                let spec = obj_mut(obj, &["spec"]);
                default_field(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
                default_field(spec, "volumeMode", json!("Filesystem"));
            }
            ("", "Node") => {
                // SetDefaults_NodeStatus: allocatable defaults to capacity.
                if let Some(cap) = obj.pointer("/status/capacity").cloned() {
                    default_field(obj_mut(obj, &["status"]), "allocatable", cap);
                }
            }
            ("", "LimitRange") => {
                for item in obj.pointer_mut("/spec/limits").and_then(Value::as_array_mut).into_iter().flatten() {
                    default_limit_range_item(item);
                }
            }
            ("apps", "Deployment") => {
                let spec = obj_mut(obj, &["spec"]);
                default_field(spec, "replicas", json!(1));
                default_field(spec, "revisionHistoryLimit", json!(10));
                default_field(spec, "progressDeadlineSeconds", json!(600));
                let strategy = obj_mut(obj, &["spec", "strategy"]);
                default_field(strategy, "type", json!("RollingUpdate"));
                if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                    let ru = strategy.entry("rollingUpdate").or_insert_with(|| json!({}));
                    if let Some(ru) = ru.as_object_mut() {
                        default_field(ru, "maxUnavailable", json!("25%"));
                        default_field(ru, "maxSurge", json!("25%"));
                    }
                }
                default_template(obj);
            }
            ("apps", "ReplicaSet") => {
                default_field(obj_mut(obj, &["spec"]), "replicas", json!(1));
                default_template(obj);
            }
            ("apps", "DaemonSet") => {
                let spec = obj_mut(obj, &["spec"]);
                default_field(spec, "revisionHistoryLimit", json!(10));
                let us = obj_mut(obj, &["spec", "updateStrategy"]);
                default_field(us, "type", json!("RollingUpdate"));
                if us.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                    let ru = us.entry("rollingUpdate").or_insert_with(|| json!({}));
                    if let Some(ru) = ru.as_object_mut() {
                        default_field(ru, "maxUnavailable", json!(1));
                        default_field(ru, "maxSurge", json!(0));
                    }
                }
                default_template(obj);
            }
            ("apps", "StatefulSet") => {
                let spec = obj_mut(obj, &["spec"]);
                default_field(spec, "replicas", json!(1));
                default_field(spec, "podManagementPolicy", json!("OrderedReady"));
                default_field(spec, "revisionHistoryLimit", json!(10));
                default_field(spec, "persistentVolumeClaimRetentionPolicy", json!({"whenDeleted": "Retain", "whenScaled": "Retain"}));
                let us = obj_mut(obj, &["spec", "updateStrategy"]);
                default_field(us, "type", json!("RollingUpdate"));
                if us.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                    let ru = us.entry("rollingUpdate").or_insert_with(|| json!({}));
                    if let Some(ru) = ru.as_object_mut() {
                        default_field(ru, "partition", json!(0));
                    }
                }
                if let Some(vcts) = obj.pointer_mut("/spec/volumeClaimTemplates").and_then(Value::as_array_mut) {
                    for t in vcts {
                        let spec = obj_mut(t, &["spec"]);
                        default_field(spec, "volumeMode", json!("Filesystem"));
                        default_field(obj_mut(t, &["status"]), "phase", json!("Pending"));
                        default_field(t.as_object_mut().unwrap(), "apiVersion", json!("v1"));
                        default_field(t.as_object_mut().unwrap(), "kind", json!("PersistentVolumeClaim"));
                    }
                }
                default_template(obj);
            }
            ("batch", "Job") => default_job(obj),
            ("batch", "CronJob") => {
                let spec = obj_mut(obj, &["spec"]);
                default_field(spec, "concurrencyPolicy", json!("Allow"));
                default_field(spec, "suspend", json!(false));
                default_field(spec, "successfulJobsHistoryLimit", json!(3));
                default_field(spec, "failedJobsHistoryLimit", json!(1));
                if let Some(jt) = obj.pointer_mut("/spec/jobTemplate") {
                    default_job(jt);
                }
            }
            ("autoscaling", _) => {
                let spec = obj_mut(obj, &["spec"]);
                default_field(spec, "minReplicas", json!(1));
                if spec.get("metrics").is_none() {
                    spec.insert(
                        "metrics".into(),
                        json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]),
                    );
                }
            }
            ("networking.k8s.io", "NetworkPolicy") => {
                let spec = obj_mut(obj, &["spec"]);
                default_field(spec, "policyTypes", json!(["Ingress"]));
            }
            ("networking.k8s.io", "Ingress") => {
                if let Some(rules) = obj.pointer_mut("/spec/rules").and_then(Value::as_array_mut) {
                    for r in rules {
                        if let Some(paths) = r.pointer_mut("/http/paths").and_then(Value::as_array_mut) {
                            for p in paths {
                                if let Some(m) = p.as_object_mut() {
                                    default_field(m, "pathType", json!("ImplementationSpecific"));
                                }
                            }
                        }
                    }
                }
            }
            ("scheduling.k8s.io", "PriorityClass") => {
                default_field(obj.as_object_mut().unwrap(), "preemptionPolicy", json!("PreemptLowerPriority"));
            }
            ("storage.k8s.io", "StorageClass") => {
                let m = obj.as_object_mut().unwrap();
                default_field(m, "reclaimPolicy", json!("Delete"));
                default_field(m, "volumeBindingMode", json!("Immediate"));
            }
            ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
                if let Some(subjects) = obj.get_mut("subjects").and_then(Value::as_array_mut) {
                    for s in subjects {
                        let kind = s.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
                        if let Some(m) = s.as_object_mut()
                            && (kind == "User" || kind == "Group")
                        {
                            default_field(m, "apiGroup", json!("rbac.authorization.k8s.io"));
                        }
                    }
                }
            }
            ("discovery.k8s.io", "EndpointSlice") => {
                if let Some(ports) = obj.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports {
                        if let Some(m) = p.as_object_mut() {
                            default_field(m, "protocol", json!("TCP"));
                            default_field(m, "name", json!(""));
                        }
                    }
                }
            }
            ("", "Endpoints") => {
                if let Some(subsets) = obj.get_mut("subsets").and_then(Value::as_array_mut) {
                    for s in subsets {
                        if let Some(ports) = s.get_mut("ports").and_then(Value::as_array_mut) {
                            for p in ports {
                                if let Some(m) = p.as_object_mut() {
                                    default_field(m, "protocol", json!("TCP"));
                                }
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Kind-specific validation. Name and metadata checks are done by the registry.
    pub fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        match self.gk() {
            ("", "Pod") => {
                if let Some(spec) = obj.get("spec") {
                    validate_pod_spec(spec, "spec", &mut errs);
                } else {
                    errs.push(FieldError::required("spec.containers", ""));
                }
                if let Some(old) = old {
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
            }
            ("apps", kind @ ("Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet")) => {
                validate_workload(obj, &mut errs);
                match kind {
                    "Deployment" => crate::workload_validation::deployment(obj, &mut errs),
                    "ReplicaSet" => crate::workload_validation::replica_set(obj, &mut errs),
                    "DaemonSet" => crate::workload_validation::daemon_set(obj, &mut errs),
                    _ => crate::workload_validation::stateful_set(obj, old, &mut errs),
                }
                if let Some(old) = old
                    && old.pointer("/spec/selector") != obj.pointer("/spec/selector")
                {
                    errs.push(FieldError::invalid("spec.selector", obj.pointer("/spec/selector").unwrap_or(&Value::Null), "field is immutable"));
                }
            }
            ("", "ReplicationController") => {
                if let Some(spec) = obj.pointer("/spec/template/spec") {
                    validate_pod_spec(spec, "spec.template.spec", &mut errs);
                }
                crate::workload_validation::replication_controller(obj, &mut errs);
            }
            ("batch", "Job") => {
                if let Some(spec) = obj.pointer("/spec/template/spec") {
                    validate_pod_spec(spec, "spec.template.spec", &mut errs);
                    let rp = spec.get("restartPolicy").and_then(Value::as_str).unwrap_or("");
                    if rp != "OnFailure" && rp != "Never" {
                        errs.push(FieldError::not_supported("spec.template.spec.restartPolicy", &json!(rp), &["OnFailure", "Never"]));
                    }
                } else {
                    errs.push(FieldError::required("spec.template", ""));
                }
                crate::workload_validation::job(obj, old, &mut errs);
            }
            ("batch", "CronJob") => {
                match obj.pointer("/spec/schedule").and_then(Value::as_str) {
                    None | Some("") => errs.push(FieldError::required("spec.schedule", "")),
                    Some(s) if s.split_whitespace().count() != 5 && !s.starts_with('@') => {
                        errs.push(FieldError::invalid(
                            "spec.schedule",
                            &json!(s),
                            format!("expected exactly 5 fields, found {}: {s}", s.split_whitespace().count()),
                        ));
                    }
                    _ => {}
                }
                crate::workload_validation::cron_job(obj, &mut errs);
            }
            ("", "Service") => validate_service(obj, old, &mut errs),
            ("", "ConfigMap") | ("", "Secret") => {
                for field in ["data", "binaryData"] {
                    if let Some(m) = obj.get(field).and_then(Value::as_object) {
                        for k in m.keys() {
                            if !valid_config_key(k) {
                                errs.push(FieldError::invalid(
                                    format!("{field}[{k}]"),
                                    &json!(k),
                                    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                                ));
                            }
                        }
                    }
                }
                if let Some(old) = old
                    && old.get("immutable") == Some(&json!(true))
                    && (old.get("data") != obj.get("data") || old.get("binaryData") != obj.get("binaryData"))
                {
                    errs.push(FieldError::forbidden("data", "field is immutable when `immutable` is set"));
                }
                if self.info.kind == "Secret"
                    && let Some(old) = old
                    && old.get("type") != obj.get("type")
                {
                    errs.push(FieldError::invalid("type", obj.get("type").unwrap_or(&Value::Null), "field is immutable"));
                }
            }
            ("apiextensions.k8s.io", "CustomResourceDefinition") => validate_crd(obj, &mut errs),
            _ => {}
        }
        errs
    }

    /// The field selector values of an object (besides metadata.name / metadata.namespace).
    pub fn field_attrs(&self, obj: &Value) -> Vec<(String, String)> {
        let mut out = vec![
            ("metadata.name".to_string(), crate::meta::name(obj).to_string()),
            ("metadata.namespace".to_string(), crate::meta::namespace(obj).unwrap_or("").to_string()),
        ];
        let s = |p: &str| obj.pointer(p).map(value_as_field).unwrap_or_default();
        let mut add = |k: &str, v: String| out.push((k.to_string(), v));
        match self.gk() {
            ("", "Pod") => {
                add("spec.nodeName", s("/spec/nodeName"));
                add("spec.restartPolicy", s("/spec/restartPolicy"));
                add("spec.schedulerName", s("/spec/schedulerName"));
                add("spec.serviceAccountName", s("/spec/serviceAccountName"));
                add("spec.hostNetwork", obj.pointer("/spec/hostNetwork").map(value_as_field).unwrap_or_else(|| "false".into()));
                add("status.phase", s("/status/phase"));
                add("status.podIP", s("/status/podIP"));
                add("status.nominatedNodeName", s("/status/nominatedNodeName"));
            }
            ("", "Event") => {
                for f in ["kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath"] {
                    add(&format!("involvedObject.{f}"), s(&format!("/involvedObject/{f}")));
                }
                add("reason", s("/reason"));
                add("reportingComponent", s("/reportingComponent"));
                add("source", s("/source/component"));
                add("type", s("/type"));
            }
            ("", "Secret") => add("type", s("/type")),
            ("", "Namespace") => add("status.phase", s("/status/phase")),
            ("", "Node") => add("spec.unschedulable", obj.pointer("/spec/unschedulable").map(value_as_field).unwrap_or_else(|| "false".into())),
            ("", "ReplicationController") | ("apps", "ReplicaSet") => add("status.replicas", s("/status/replicas")),
            ("batch", "Job") => add("status.successful", s("/status/succeeded")),
            ("certificates.k8s.io", _) => add("spec.signerName", s("/spec/signerName")),
            ("", "Service") => {
                add("spec.clusterIP", s("/spec/clusterIP"));
                add("spec.type", s("/spec/type"));
            }
            _ => {}
        }
        out
    }

    pub fn supports_field(&self, field: &str) -> bool {
        if field == "metadata.name" || field == "metadata.namespace" {
            return true;
        }
        let probe = json!({});
        // The supported set is exactly the attributes this kind extracts.
        self.field_attrs(&probe).iter().any(|(f, _)| f == field) || (self.gk() == ("", "Pod") && field == "status.podIPs")
    }
}

fn value_as_field(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn valid_config_key(k: &str) -> bool {
    !k.is_empty() && k.len() <= 253 && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') && k != "." && k != ".."
}

/// Pod QoS class from requests and limits (Guaranteed / Burstable / BestEffort).
pub fn qos_class(spec: Option<&Value>) -> &'static str {
    let Some(spec) = spec else {
        return "BestEffort";
    };
    let containers: Vec<&Value> = ["containers", "initContainers"].iter().filter_map(|k| spec.get(*k).and_then(Value::as_array)).flatten().collect();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let req = c.pointer("/resources/requests").and_then(Value::as_object);
        let lim = c.pointer("/resources/limits").and_then(Value::as_object);
        if req.is_some_and(|m| !m.is_empty()) || lim.is_some_and(|m| !m.is_empty()) {
            any = true;
        }
        for res in ["cpu", "memory"] {
            let l = lim.and_then(|m| m.get(res));
            let r = req.and_then(|m| m.get(res)).or(l);
            if l.is_none() || r != l {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// SetDefaults_LimitRangeItem: for containers, the default limit falls back to max, the default
/// request to the default limit, then to min.
fn default_limit_range_item(item: &mut Value) {
    if item.get("type").and_then(Value::as_str) != Some("Container") {
        return;
    }
    let resources = |v: &Value, k: &str| v.get(k).and_then(Value::as_object).cloned().unwrap_or_default();
    let mut default = resources(item, "default");
    let mut request = resources(item, "defaultRequest");
    for (k, v) in resources(item, "max") {
        default.entry(k).or_insert(v);
    }
    for (k, v) in &default {
        request.entry(k.clone()).or_insert(v.clone());
    }
    for (k, v) in resources(item, "min") {
        request.entry(k).or_insert(v);
    }
    let Some(m) = item.as_object_mut() else {
        return;
    };
    for (k, v) in [("default", default), ("defaultRequest", request)] {
        if !v.is_empty() {
            m.insert(k.into(), Value::Object(v));
        }
    }
}

fn default_template(obj: &mut Value) {
    let spec = obj_mut(obj, &["spec", "template", "spec"]);
    default_pod_spec(spec, false);
    // Upstream serializes the template's zero creationTimestamp as null.
    let md = obj_mut(obj, &["spec", "template", "metadata"]);
    md.entry("creationTimestamp").or_insert(Value::Null);
}

fn default_job(obj: &mut Value) {
    let spec = obj_mut(obj, &["spec"]);
    let has_c = spec.get("completions").is_some_and(|v| !v.is_null());
    let has_p = spec.get("parallelism").is_some_and(|v| !v.is_null());
    if !has_c && !has_p {
        spec.insert("completions".into(), json!(1));
        spec.insert("parallelism".into(), json!(1));
    } else if !has_p {
        spec.insert("parallelism".into(), json!(1));
    }
    default_field(spec, "backoffLimit", json!(6));
    default_field(spec, "completionMode", json!("NonIndexed"));
    default_field(spec, "suspend", json!(false));
    default_field(spec, "manualSelector", Value::Null);
    spec.remove("manualSelector");
    default_field(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    default_template(obj);
}

/// The DefaultTolerationSeconds admission plugin's settings (kube-apiserver's
/// --default-not-ready-toleration-seconds and --default-unreachable-toleration-seconds).
static NOT_READY_TOLERATION_SECONDS: AtomicI64 = AtomicI64::new(300);
static UNREACHABLE_TOLERATION_SECONDS: AtomicI64 = AtomicI64::new(300);

pub fn set_default_toleration_seconds(not_ready: i64, unreachable: i64) {
    NOT_READY_TOLERATION_SECONDS.store(not_ready, Ordering::Relaxed);
    UNREACHABLE_TOLERATION_SECONDS.store(unreachable, Ordering::Relaxed);
}

/// Upstream's pod spec defaults. `is_pod` adds what admission adds to real pods (tolerations,
/// service account).
pub fn default_pod_spec(spec: &mut Map<String, Value>, is_pod: bool) {
    default_field(spec, "restartPolicy", json!("Always"));
    default_field(spec, "terminationGracePeriodSeconds", json!(30));
    default_field(spec, "dnsPolicy", json!("ClusterFirst"));
    default_field(spec, "securityContext", json!({}));
    default_field(spec, "schedulerName", json!("default-scheduler"));
    if is_pod {
        // SetDefaults_Pod: a container with limits and no requests requests its limits.
        for key in ["containers", "initContainers"] {
            for c in spec.get_mut(key).and_then(Value::as_array_mut).into_iter().flatten() {
                let Some(res) = c.get_mut("resources").and_then(Value::as_object_mut) else {
                    continue;
                };
                let Some(limits) = res.get("limits").and_then(Value::as_object).cloned() else {
                    continue;
                };
                let requests = res.entry("requests").or_insert_with(|| json!({}));
                if let Some(r) = requests.as_object_mut() {
                    for (k, v) in limits {
                        r.entry(k).or_insert(v);
                    }
                }
            }
        }
        default_field(spec, "enableServiceLinks", json!(true));
        default_field(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
        default_field(spec, "priority", json!(0));
        default_field(spec, "serviceAccountName", json!("default"));
        if let Some(sa) = spec.get("serviceAccountName").cloned() {
            default_field(spec, "serviceAccount", sa);
        }
        let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
        if let Some(list) = tolerations.as_array_mut() {
            for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
                let has = list.iter().any(|t| {
                    t.get("key").and_then(Value::as_str) == Some(key) || (t.get("key").is_none() && t.get("operator").and_then(Value::as_str) == Some("Exists"))
                });
                if !has {
                    let secs = if key.ends_with("not-ready") { &NOT_READY_TOLERATION_SECONDS } else { &UNREACHABLE_TOLERATION_SECONDS };
                    list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": secs.load(Ordering::Relaxed)}));
                }
            }
        }
    }
    for key in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(key).and_then(Value::as_array_mut) {
            for c in cs {
                if let Some(c) = c.as_object_mut() {
                    default_container(c);
                }
            }
        }
    }
    // SetDefaults_PodSpec: with hostNetwork, container ports listen on the host.
    if spec.get("hostNetwork") == Some(&json!(true)) {
        for key in ["containers", "initContainers"] {
            for c in spec.get_mut(key).and_then(Value::as_array_mut).into_iter().flatten() {
                for p in c.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
                    if let Some(p) = p.as_object_mut()
                        && p.get("hostPort").and_then(Value::as_i64).unwrap_or(0) == 0
                        && let Some(cp) = p.get("containerPort").cloned()
                    {
                        p.insert("hostPort".into(), cp);
                    }
                }
            }
        }
    }
    if let Some(vols) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        for v in vols {
            if let Some(m) = v.as_object_mut() {
                // SetDefaults_Volume: a volume with no source is an emptyDir.
                if m.keys().all(|k| k == "name") {
                    m.insert("emptyDir".into(), json!({}));
                }
                for items in [m.get_mut("downwardAPI").and_then(|d| d.get_mut("items"))].into_iter().flatten() {
                    default_field_refs(items);
                }
                for source in m.get_mut("projected").and_then(|p| p.get_mut("sources")).and_then(Value::as_array_mut).into_iter().flatten() {
                    if let Some(items) = source.get_mut("downwardAPI").and_then(|d| d.get_mut("items")) {
                        default_field_refs(items);
                    }
                    if let Some(t) = source.get_mut("serviceAccountToken").and_then(Value::as_object_mut) {
                        default_field(t, "expirationSeconds", json!(3600));
                    }
                }
                for (src, mode_key) in [("configMap", "defaultMode"), ("secret", "defaultMode"), ("projected", "defaultMode"), ("downwardAPI", "defaultMode")] {
                    if let Some(s) = m.get_mut(src).and_then(Value::as_object_mut) {
                        default_field(s, mode_key, json!(420));
                    }
                }
                if let Some(s) = m.get_mut("hostPath").and_then(Value::as_object_mut) {
                    default_field(s, "type", json!(""));
                }
            }
        }
    }
}

/// SetDefaults_ObjectFieldSelector: a fieldRef's apiVersion is "v1" (`kubectl describe` prints
/// it as `(v1:metadata.name)`). `items` is a list of env vars or downward API files.
fn default_field_refs(items: &mut Value) {
    for item in items.as_array_mut().into_iter().flatten() {
        if let Some(f) = item.get_mut("fieldRef").and_then(Value::as_object_mut) {
            default_field(f, "apiVersion", json!("v1"));
        }
    }
}

fn default_container(c: &mut Map<String, Value>) {
    if let Some(env) = c.get_mut("env") {
        for e in env.as_array_mut().into_iter().flatten() {
            if let Some(f) = e.pointer_mut("/valueFrom/fieldRef").and_then(Value::as_object_mut) {
                default_field(f, "apiVersion", json!("v1"));
            }
        }
    }
    for hook in ["postStart", "preStop"] {
        if let Some(h) = c.get_mut("lifecycle").and_then(|l| l.get_mut(hook)).and_then(|h| h.get_mut("httpGet")).and_then(Value::as_object_mut) {
            default_field(h, "path", json!("/"));
            default_field(h, "scheme", json!("HTTP"));
        }
    }
    default_field(c, "terminationMessagePath", json!("/dev/termination-log"));
    default_field(c, "terminationMessagePolicy", json!("File"));
    default_field(c, "resources", json!({}));
    if !c.contains_key("imagePullPolicy") {
        let image = c.get("image").and_then(Value::as_str).unwrap_or("");
        c.insert("imagePullPolicy".into(), json!(default_pull_policy(image)));
    }
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            if let Some(p) = p.as_object_mut() {
                default_field(p, "protocol", json!("TCP"));
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe).and_then(Value::as_object_mut) {
            default_field(p, "timeoutSeconds", json!(1));
            default_field(p, "periodSeconds", json!(10));
            default_field(p, "successThreshold", json!(1));
            default_field(p, "failureThreshold", json!(3));
            if let Some(h) = p.get_mut("httpGet").and_then(Value::as_object_mut) {
                default_field(h, "path", json!("/"));
                default_field(h, "scheme", json!("HTTP"));
            }
        }
    }
}

/// Always for `:latest` or an untagged image, IfNotPresent otherwise (digests count as tags).
pub fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn validate_pod_spec(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let containers = spec.get("containers").and_then(Value::as_array);
    match containers {
        None => errs.push(FieldError::required(format!("{path}.containers"), "")),
        Some(cs) if cs.is_empty() => errs.push(FieldError::required(format!("{path}.containers"), "")),
        _ => {}
    }
    let mut names = std::collections::HashSet::new();
    for key in ["initContainers", "containers"] {
        for (i, c) in spec.get(key).and_then(Value::as_array).into_iter().flatten().enumerate() {
            let p = format!("{path}.{key}[{i}]");
            match c.get("name").and_then(Value::as_str) {
                None | Some("") => errs.push(FieldError::required(format!("{p}.name"), "")),
                Some(n) => {
                    if let Err(msgs) = validate_dns1123_label(n) {
                        for m in msgs {
                            errs.push(FieldError::invalid(format!("{p}.name"), &json!(n), m));
                        }
                    }
                    if !names.insert(n.to_string()) {
                        errs.push(FieldError::duplicate(format!("{p}.name"), &json!(n)));
                    }
                }
            }
            if c.get("image").and_then(Value::as_str).is_none_or(|s| s.trim().is_empty()) {
                errs.push(FieldError::required(format!("{p}.image"), ""));
            }
            for (j, port) in c.get("ports").and_then(Value::as_array).into_iter().flatten().enumerate() {
                let cp = port.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
                if !(1..=65535).contains(&cp) {
                    errs.push(FieldError::invalid(format!("{p}.ports[{j}].containerPort"), &json!(cp), "must be between 1 and 65535, inclusive"));
                }
            }
            if let Some(pp) = c.get("imagePullPolicy").and_then(Value::as_str)
                && !["Always", "IfNotPresent", "Never"].contains(&pp)
            {
                errs.push(FieldError::not_supported(format!("{p}.imagePullPolicy"), &json!(pp), &["Always", "IfNotPresent", "Never"]));
            }
        }
    }
    if let Some(rp) = spec.get("restartPolicy").and_then(Value::as_str)
        && !["Always", "OnFailure", "Never"].contains(&rp)
    {
        errs.push(FieldError::not_supported(format!("{path}.restartPolicy"), &json!(rp), &["Always", "OnFailure", "Never"]));
    }
    if let Some(vols) = spec.get("volumes").and_then(Value::as_array) {
        let mut seen = std::collections::HashSet::new();
        for (i, v) in vols.iter().enumerate() {
            let n = v.get("name").and_then(Value::as_str).unwrap_or("");
            if n.is_empty() {
                errs.push(FieldError::required(format!("{path}.volumes[{i}].name"), ""));
            } else if !seen.insert(n) {
                errs.push(FieldError::duplicate(format!("{path}.volumes[{i}].name"), &json!(n)));
            }
        }
    }
}

fn validate_workload(obj: &Value, errs: &mut Vec<FieldError>) {
    let selector = obj.pointer("/spec/selector");
    match selector {
        None | Some(Value::Null) => errs.push(FieldError::required("spec.selector", "")),
        Some(sel) => {
            let empty = sel.get("matchLabels").and_then(Value::as_object).is_none_or(|m| m.is_empty())
                && sel.get("matchExpressions").and_then(Value::as_array).is_none_or(|a| a.is_empty());
            if empty {
                errs.push(FieldError::invalid("spec.selector", sel, "empty selector is invalid for deployment"));
            }
            let labels = crate::meta::string_map(obj.pointer("/spec/template/metadata/labels"));
            if !selector_matches(sel, &labels) {
                errs.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    obj.pointer("/spec/template/metadata/labels").unwrap_or(&json!({})),
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
    match obj.pointer("/spec/template/spec") {
        Some(spec) => validate_pod_spec(spec, "spec.template.spec", errs),
        None => errs.push(FieldError::required("spec.template.spec.containers", "")),
    }
    if let Some(r) = obj.pointer("/spec/replicas").and_then(Value::as_i64)
        && r < 0
    {
        errs.push(FieldError::invalid("spec.replicas", &json!(r), "must be greater than or equal to 0"));
    }
}

/// Matches a metav1.LabelSelector (matchLabels + matchExpressions) against labels.
pub fn selector_matches(sel: &Value, labels: &std::collections::BTreeMap<String, String>) -> bool {
    if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in ml {
            if labels.get(k).map(String::as_str) != v.as_str() {
                return false;
            }
        }
    }
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = e.get("key").and_then(Value::as_str).unwrap_or("");
            let values: Vec<&str> = e.get("values").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
            let v = labels.get(key);
            let ok = match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                "In" => v.is_some_and(|v| values.contains(&v.as_str())),
                "NotIn" => v.is_none_or(|v| !values.contains(&v.as_str())),
                "Exists" => v.is_some(),
                "DoesNotExist" => v.is_none(),
                _ => false,
            };
            if !ok {
                return false;
            }
        }
    }
    true
}

fn default_service(obj: &mut Value) {
    let spec = obj_mut(obj, &["spec"]);
    default_field(spec, "type", json!("ClusterIP"));
    default_field(spec, "sessionAffinity", json!("None"));
    let ty = spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
    if ty != "ExternalName" {
        default_field(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        default_field(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        default_field(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if spec.get("sessionAffinity").and_then(Value::as_str) == Some("ClientIP") {
        let cfg = spec.entry("sessionAffinityConfig").or_insert_with(|| json!({}));
        if let Some(cfg) = cfg.as_object_mut() {
            let ip = cfg.entry("clientIP").or_insert_with(|| json!({}));
            if let Some(ip) = ip.as_object_mut() {
                default_field(ip, "timeoutSeconds", json!(10800));
            }
        }
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            if let Some(p) = p.as_object_mut() {
                default_field(p, "protocol", json!("TCP"));
                if let Some(port) = p.get("port").cloned() {
                    default_field(p, "targetPort", port);
                }
            }
        }
    }
}

fn validate_service(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let spec = obj.get("spec").cloned().unwrap_or(json!({}));
    let ty = spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP");
    if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&ty) {
        errs.push(FieldError::not_supported("spec.type", &json!(ty), &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]));
    }
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    let ports = spec.get("ports").and_then(Value::as_array).cloned().unwrap_or_default();
    if ports.is_empty() && ty != "ExternalName" && !headless {
        errs.push(FieldError::required("spec.ports", ""));
    }
    let mut names = std::collections::HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&port) {
            errs.push(FieldError::invalid(format!("spec.ports[{i}].port"), &json!(port), "must be between 1 and 65535, inclusive"));
        }
        let name = p.get("name").and_then(Value::as_str).unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            errs.push(FieldError::required(format!("spec.ports[{i}].name"), ""));
        }
        if !name.is_empty() && !names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(format!("spec.ports[{i}].name"), &json!(name)));
        }
        if let Some(np) = p.get("nodePort").and_then(Value::as_i64)
            && ty == "ClusterIP"
            && np != 0
        {
            errs.push(FieldError::forbidden(format!("spec.ports[{i}].nodePort"), "may not be used when `type` is 'ClusterIP'"));
        }
    }
    if ty == "ExternalName" && spec.get("externalName").and_then(Value::as_str).is_none_or(str::is_empty) {
        errs.push(FieldError::required("spec.externalName", ""));
    }
    if let Some(old) = old {
        let old_ip = old.pointer("/spec/clusterIP").and_then(Value::as_str).unwrap_or("");
        let new_ip = spec.get("clusterIP").and_then(Value::as_str).unwrap_or("");
        if !old_ip.is_empty() && old_ip != new_ip && ty != "ExternalName" {
            errs.push(FieldError::invalid("spec.clusterIPs[0]", &json!(new_ip), "may not change once set"));
        }
    }
}

fn validate_crd(obj: &Value, errs: &mut Vec<FieldError>) {
    let group = obj.pointer("/spec/group").and_then(Value::as_str).unwrap_or("");
    let plural = obj.pointer("/spec/names/plural").and_then(Value::as_str).unwrap_or("");
    let name = crate::meta::name(obj);
    if group.is_empty() {
        errs.push(FieldError::required("spec.group", ""));
    }
    if plural.is_empty() {
        errs.push(FieldError::required("spec.names.plural", ""));
    }
    if obj.pointer("/spec/names/kind").and_then(Value::as_str).is_none_or(str::is_empty) {
        errs.push(FieldError::required("spec.names.kind", ""));
    }
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        errs.push(FieldError::invalid("metadata.name", &json!(name), "must be spec.names.plural+\".\"+spec.group"));
    }
    match obj.pointer("/spec/scope").and_then(Value::as_str) {
        Some("Namespaced") | Some("Cluster") => {}
        other => errs.push(FieldError::not_supported("spec.scope", &json!(other.unwrap_or("")), &["Cluster", "Namespaced"])),
    }
    let versions = obj.pointer("/spec/versions").and_then(Value::as_array).cloned().unwrap_or_default();
    if versions.is_empty() {
        errs.push(FieldError::invalid("spec.versions", &json!([]), "must have exactly one version marked as storage version"));
    } else if versions.iter().filter(|v| v.get("storage") == Some(&json!(true))).count() != 1 {
        errs.push(FieldError::invalid("spec.versions", &Value::Null, "must have exactly one version marked as storage version"));
    }
}

/// Validates metadata common to every object: name syntax, labels and annotations.
pub fn validate_object_meta(obj: &Value, rule: NameRule, namespaced: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = crate::meta::name(obj);
    let generate = get_str(obj, &["metadata", "generateName"]).unwrap_or("");
    if name.is_empty() && generate.is_empty() {
        errs.push(FieldError::required("metadata.name", "name or generateName is required"));
    } else if !name.is_empty()
        && let Err(msgs) = crate::validation::validate_name(rule, name)
    {
        for m in msgs {
            errs.push(FieldError::invalid("metadata.name", &json!(name), m));
        }
    }
    if namespaced
        && let Some(ns) = crate::meta::namespace(obj)
        && let Err(msgs) = validate_dns1123_label(ns)
    {
        for m in msgs {
            errs.push(FieldError::invalid("metadata.namespace", &json!(ns), m));
        }
    }
    if let Some(labels) = get(obj, &["metadata", "labels"]).and_then(Value::as_object) {
        for (k, v) in labels {
            if let Err(msgs) = validate_qualified_name(k) {
                for m in msgs {
                    errs.push(FieldError::invalid("metadata.labels", &json!(k), m));
                }
            }
            match v.as_str() {
                Some(s) => {
                    if let Err(msgs) = validate_label_value(s) {
                        for m in msgs {
                            errs.push(FieldError::invalid("metadata.labels".to_string(), &json!(s), m));
                        }
                    }
                }
                None => errs.push(FieldError::invalid("metadata.labels", v, "label values must be strings")),
            }
        }
    }
    if let Some(ann) = get(obj, &["metadata", "annotations"]).and_then(Value::as_object) {
        let mut total = 0;
        for (k, v) in ann {
            total += k.len() + v.as_str().map(str::len).unwrap_or(0);
            if let Err(msgs) = validate_qualified_name(k) {
                for m in msgs {
                    errs.push(FieldError::invalid("metadata.annotations", &json!(k), m));
                }
            }
        }
        if total > 256 * 1024 {
            errs.push(FieldError {
                kind: crate::errors::FieldErrorKind::TooLong,
                field: "metadata.annotations".into(),
                value: None,
                detail: "may not be more than 262144 bytes".into(),
            });
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::builtin_resources;

    fn info(plural: &str) -> ResourceInfo {
        builtin_resources().into_iter().find(|r| r.plural == plural).unwrap()
    }

    #[test]
    fn deployment_defaults_match_upstream() {
        let i = info("deployments");
        let mut d = json!({"spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "nginx", "image": "nginx:1.21.1", "ports": [{"containerPort": 80}]}]}}}});
        strategy(&i).default(&mut d);
        assert_eq!(d["spec"]["strategy"], json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}));
        assert_eq!(d["spec"]["revisionHistoryLimit"], json!(10));
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["imagePullPolicy"], json!("IfNotPresent"));
        assert_eq!(c["ports"][0]["protocol"], json!("TCP"));
        assert!(strategy(&i).validate(&d, None).is_empty());
    }

    #[test]
    fn pull_policy() {
        assert_eq!(default_pull_policy("busybox"), "Always");
        assert_eq!(default_pull_policy("busybox:latest"), "Always");
        assert_eq!(default_pull_policy("localhost:5000/busybox"), "Always");
        assert_eq!(default_pull_policy("nginx:1.21.1"), "IfNotPresent");
    }

    #[test]
    fn selector_mismatch_is_invalid() {
        let i = info("deployments");
        let d = json!({"spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}});
        let errs = strategy(&i).validate(&d, None);
        assert_eq!(
            errs[0].message(),
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"b\"}: `selector` does not match template `labels`"
        );
    }

    #[test]
    fn pod_defaults_from_set_defaults() {
        let i = info("pods");
        let mut p = json!({"spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "x:1",
            "ports": [{"containerPort": 8080}],
            "resources": {"limits": {"cpu": "1"}},
            "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}],
            "volumes": [{"name": "scratch"}, {"name": "info", "downwardAPI": {"items": [{"path": "n", "fieldRef": {"fieldPath": "metadata.name"}}]}}]}});
        strategy(&i).default(&mut p);
        let c = &p["spec"]["containers"][0];
        assert_eq!(c["env"][0]["valueFrom"]["fieldRef"], json!({"fieldPath": "metadata.name", "apiVersion": "v1"}));
        assert_eq!(c["resources"]["requests"], json!({"cpu": "1"}));
        assert_eq!(c["ports"][0]["hostPort"], json!(8080));
        assert_eq!(p["spec"]["volumes"][0], json!({"name": "scratch", "emptyDir": {}}));
        assert_eq!(p["spec"]["volumes"][1]["downwardAPI"]["items"][0]["fieldRef"]["apiVersion"], json!("v1"));
    }

    #[test]
    fn limit_range_defaults() {
        let i = info("limitranges");
        let mut lr = json!({"spec": {"limits": [{"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "1Mi"}}]}});
        strategy(&i).default(&mut lr);
        assert_eq!(lr["spec"]["limits"][0]["default"], json!({"cpu": "2"}));
        assert_eq!(lr["spec"]["limits"][0]["defaultRequest"], json!({"cpu": "2", "memory": "1Mi"}));
    }
}
