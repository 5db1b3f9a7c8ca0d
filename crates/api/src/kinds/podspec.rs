//! What every pod spec shares, wherever it appears (Pod, PodTemplate, the workload kinds'
//! templates): upstream's SetDefaults_PodSpec/Container/Volume and ValidatePodSpec, the QoS
//! class, and the template and selector rules of the workload kinds.

use std::sync::atomic::{AtomicI64, Ordering};

use serde_json::{Map, Value, json};

use crate::errors::FieldError;
use crate::meta::{default_field, obj_mut};
use crate::validation::validate_dns1123_label;

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

pub fn validate_pod_spec(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
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

pub fn default_template(obj: &mut Value) {
    let spec = obj_mut(obj, &["spec", "template", "spec"]);
    default_pod_spec(spec, false);
    // Upstream serializes the template's zero creationTimestamp as null.
    let md = obj_mut(obj, &["spec", "template", "metadata"]);
    md.entry("creationTimestamp").or_insert(Value::Null);
}

/// What the workload kinds (Deployment, ReplicaSet, DaemonSet, StatefulSet) share: a selector
/// that matches the template's labels and may not change, a valid template, replicas >= 0.
pub fn validate_workload(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    if let Some(old) = old
        && old.pointer("/spec/selector") != obj.pointer("/spec/selector")
    {
        errs.push(FieldError::invalid("spec.selector", obj.pointer("/spec/selector").unwrap_or(&Value::Null), "field is immutable"));
    }
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
