//! Server-side printing: the Table columns and rows upstream's printers produce, so
//! `kubectl get` output is the same as against upstream. The server always renders every column;
//! kubectl hides those with priority > 0 unless `-o wide`.

use serde_json::{Value, json};

use crate::meta::{get_str, parse_time};

pub struct Column {
    pub name: &'static str,
    pub ty: &'static str,
    pub format: &'static str,
    pub priority: i32,
    pub description: &'static str,
}

const fn col(name: &'static str, priority: i32) -> Column {
    Column { name, ty: "string", format: "", priority, description: "" }
}
const fn int_col(name: &'static str, priority: i32) -> Column {
    Column { name, ty: "integer", format: "", priority, description: "" }
}
const NAME: Column = Column {
    name: "Name",
    ty: "string",
    format: "name",
    priority: 0,
    description: "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
};
const AGE: Column = Column {
    name: "Age",
    ty: "string",
    format: "",
    priority: 0,
    description: "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
};
const CREATED_AT: Column = Column { name: "Created At", ty: "date", format: "", priority: 0, description: "" };

/// Upstream's `duration.HumanDuration`.
pub fn human_duration(d: chrono::Duration) -> String {
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".into();
    } else if seconds < 0 {
        return "0s".into();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = d.num_minutes();
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 { format!("{minutes}m") } else { format!("{minutes}m{s}s") };
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = d.num_hours();
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 { format!("{hours}h") } else { format!("{hours}h{m}m") };
    } else if hours < 48 {
        return format!("{hours}h");
    } else if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 { format!("{}d", hours / 24) } else { format!("{}d{h}h", hours / 24) };
    } else if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 { format!("{}y", hours / 24 / 365) } else { format!("{}y{dy}d", hours / 24 / 365) };
    }
    format!("{}y", hours / 24 / 365)
}

pub fn since(ts: Option<&str>) -> String {
    match ts.and_then(parse_time) {
        Some(t) => human_duration(chrono::Utc::now() - t),
        None => "<unknown>".into(),
    }
}

fn age(obj: &Value) -> Value {
    json!(since(get_str(obj, &["metadata", "creationTimestamp"])))
}

fn s(obj: &Value, ptr: &str) -> String {
    match obj.pointer(ptr) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

fn i(obj: &Value, ptr: &str) -> i64 {
    obj.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(v: String) -> String {
    if v.is_empty() { "<none>".into() } else { v }
}

fn arr<'a>(obj: &'a Value, ptr: &str) -> &'a [Value] {
    obj.pointer(ptr).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// Renders a metav1.LabelSelector as the selector string (`app=x,tier in (a,b)`).
pub fn label_selector_string(sel: Option<&Value>) -> String {
    let Some(sel) = sel else {
        return "<none>".into();
    };
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in ml {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
        }
    }
    for e in sel.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
        let k = e.get("key").and_then(Value::as_str).unwrap_or("").to_string();
        let mut vals: Vec<&str> = e.get("values").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        vals.sort();
        let r = match e.get("operator").and_then(Value::as_str).unwrap_or("") {
            "In" => format!("{k} in ({})", vals.join(",")),
            "NotIn" => format!("{k} notin ({})", vals.join(",")),
            "Exists" => k.clone(),
            "DoesNotExist" => format!("!{k}"),
            _ => continue,
        };
        reqs.push((k, r));
    }
    if reqs.is_empty() {
        return "<none>".into();
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    reqs.into_iter().map(|(_, r)| r).collect::<Vec<_>>().join(",")
}

/// A map selector (Service, RC) as `k=v,...` sorted by key.
fn map_selector_string(sel: Option<&Value>) -> String {
    match sel.and_then(Value::as_object) {
        Some(m) if !m.is_empty() => {
            let mut parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect();
            parts.sort();
            parts.join(",")
        }
        _ => "<none>".into(),
    }
}

fn containers_images(obj: &Value, ptr: &str) -> (String, String) {
    let cs = arr(obj, ptr);
    let names: Vec<String> = cs.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<String> = cs.iter().map(|c| s(c, "/image")).collect();
    (names.join(","), images.join(","))
}

/// Columns for a resource identified by (group, kind).
pub fn columns(group: &str, kind: &str) -> Vec<Column> {
    match (group, kind) {
        ("", "Pod") => vec![
            NAME,
            col("Ready", 0),
            col("Status", 0),
            col("Restarts", 0),
            AGE,
            col("IP", 1),
            col("Node", 1),
            col("Nominated Node", 1),
            col("Readiness Gates", 1),
        ],
        ("apps", "Deployment") => {
            vec![NAME, col("Ready", 0), int_col("Up-to-date", 0), int_col("Available", 0), AGE, col("Containers", 1), col("Images", 1), col("Selector", 1)]
        }
        ("apps", "ReplicaSet") | ("", "ReplicationController") => {
            vec![NAME, int_col("Desired", 0), int_col("Current", 0), int_col("Ready", 0), AGE, col("Containers", 1), col("Images", 1), col("Selector", 1)]
        }
        ("apps", "DaemonSet") => vec![
            NAME,
            int_col("Desired", 0),
            int_col("Current", 0),
            int_col("Ready", 0),
            int_col("Up-to-date", 0),
            int_col("Available", 0),
            col("Node Selector", 0),
            AGE,
            col("Containers", 1),
            col("Images", 1),
            col("Selector", 1),
        ],
        ("apps", "StatefulSet") => vec![NAME, col("Ready", 0), AGE, col("Containers", 1), col("Images", 1)],
        ("apps", "ControllerRevision") => {
            vec![NAME, col("Controller", 0), int_col("Revision", 0), AGE]
        }
        ("batch", "Job") => {
            vec![NAME, col("Status", 0), col("Completions", 0), col("Duration", 0), AGE, col("Containers", 1), col("Images", 1), col("Selector", 1)]
        }
        ("batch", "CronJob") => {
            vec![
                NAME,
                col("Schedule", 0),
                col("Timezone", 0),
                col("Suspend", 0),
                int_col("Active", 0),
                col("Last Schedule", 0),
                AGE,
                col("Containers", 1),
                col("Images", 1),
                col("Selector", 1),
            ]
        }
        ("", "Service") => vec![NAME, col("Type", 0), col("Cluster-IP", 0), col("External-IP", 0), col("Port(s)", 0), AGE, col("Selector", 1)],
        ("", "Node") => vec![
            NAME,
            col("Status", 0),
            col("Roles", 0),
            AGE,
            col("Version", 0),
            col("Internal-IP", 1),
            col("External-IP", 1),
            col("OS-Image", 1),
            col("Kernel-Version", 1),
            col("Container-Runtime", 1),
        ],
        ("", "Namespace") => vec![NAME, col("Status", 0), AGE],
        ("", "ConfigMap") => vec![NAME, int_col("Data", 0), AGE],
        ("", "Secret") => vec![NAME, col("Type", 0), int_col("Data", 0), AGE],
        ("", "ServiceAccount") => vec![NAME, int_col("Secrets", 0), AGE],
        ("", "Endpoints") => vec![NAME, col("Endpoints", 0), AGE],
        ("discovery.k8s.io", "EndpointSlice") => vec![NAME, col("AddressType", 0), col("Ports", 0), col("Endpoints", 0), AGE],
        ("", "Event") => vec![
            col("Last Seen", 0),
            col("Type", 0),
            col("Reason", 0),
            col("Object", 0),
            col("Subobject", 1),
            col("Source", 1),
            col("Message", 0),
            col("First Seen", 1),
            int_col("Count", 1),
            col("Name", 1),
        ],
        ("", "PersistentVolume") => vec![
            NAME,
            col("Capacity", 0),
            col("Access Modes", 0),
            col("Reclaim Policy", 0),
            col("Status", 0),
            col("Claim", 0),
            col("StorageClass", 0),
            col("VolumeAttributesClass", 0),
            col("Reason", 0),
            AGE,
            col("VolumeMode", 1),
        ],
        ("", "PersistentVolumeClaim") => {
            vec![
                NAME,
                col("Status", 0),
                col("Volume", 0),
                col("Capacity", 0),
                col("Access Modes", 0),
                col("StorageClass", 0),
                col("VolumeAttributesClass", 0),
                AGE,
                col("VolumeMode", 1),
            ]
        }
        ("", "ResourceQuota") => vec![NAME, AGE, col("Request", 0), col("Limit", 0)],
        ("", "LimitRange") | ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => {
            vec![NAME, CREATED_AT]
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            vec![NAME, col("Role", 0), AGE, col("Users", 1), col("Groups", 1), col("ServiceAccounts", 1)]
        }
        ("networking.k8s.io", "Ingress") => vec![NAME, col("Class", 0), col("Hosts", 0), col("Address", 0), col("Ports", 0), AGE],
        ("networking.k8s.io", "IngressClass") => {
            vec![NAME, col("Controller", 0), col("Parameters", 0), AGE]
        }
        ("networking.k8s.io", "NetworkPolicy") => vec![NAME, col("Pod-Selector", 0), AGE],
        ("autoscaling", "HorizontalPodAutoscaler") => {
            vec![NAME, col("Reference", 0), col("Targets", 0), col("MinPods", 0), int_col("MaxPods", 0), int_col("Replicas", 0), AGE]
        }
        ("coordination.k8s.io", "Lease") => vec![NAME, col("Holder", 0), AGE],
        ("policy", "PodDisruptionBudget") => vec![NAME, col("Min Available", 0), col("Max Unavailable", 0), int_col("Allowed Disruptions", 0), AGE],
        ("scheduling.k8s.io", "PriorityClass") => vec![NAME, int_col("Value", 0), col("Global-Default", 0), AGE, col("PreemptionPolicy", 0)],
        ("storage.k8s.io", "StorageClass") => {
            vec![NAME, col("Provisioner", 0), col("ReclaimPolicy", 0), col("VolumeBindingMode", 0), col("AllowVolumeExpansion", 0), AGE]
        }
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            vec![NAME, AGE, col("SignerName", 0), col("Requestor", 0), col("RequestedDuration", 0), col("Condition", 0)]
        }
        _ => vec![NAME, CREATED_AT],
    }
}

pub fn column_definitions(cols: &[Column]) -> Value {
    Value::Array(cols.iter().map(|c| json!({"name": c.name, "type": c.ty, "format": c.format, "description": c.description, "priority": c.priority})).collect())
}

/// The cells of one row.
pub fn cells(group: &str, kind: &str, obj: &Value) -> Vec<Value> {
    let name = json!(crate::meta::name(obj));
    match (group, kind) {
        ("", "Pod") => pod_cells(obj),
        ("apps", "Deployment") => {
            let (c, im) = containers_images(obj, "/spec/template/spec/containers");
            vec![
                name,
                json!(format!("{}/{}", i(obj, "/status/readyReplicas"), i(obj, "/spec/replicas"))),
                json!(i(obj, "/status/updatedReplicas")),
                json!(i(obj, "/status/availableReplicas")),
                age(obj),
                json!(c),
                json!(im),
                json!(label_selector_string(obj.pointer("/spec/selector"))),
            ]
        }
        ("apps", "ReplicaSet") | ("", "ReplicationController") => {
            let (c, im) = containers_images(obj, "/spec/template/spec/containers");
            let sel =
                if kind == "ReplicaSet" { label_selector_string(obj.pointer("/spec/selector")) } else { map_selector_string(obj.pointer("/spec/selector")) };
            vec![
                name,
                json!(i(obj, "/spec/replicas")),
                json!(i(obj, "/status/replicas")),
                json!(i(obj, "/status/readyReplicas")),
                age(obj),
                json!(c),
                json!(im),
                json!(sel),
            ]
        }
        ("apps", "DaemonSet") => {
            let (c, im) = containers_images(obj, "/spec/template/spec/containers");
            vec![
                name,
                json!(i(obj, "/status/desiredNumberScheduled")),
                json!(i(obj, "/status/currentNumberScheduled")),
                json!(i(obj, "/status/numberReady")),
                json!(i(obj, "/status/updatedNumberScheduled")),
                json!(i(obj, "/status/numberAvailable")),
                json!(map_selector_string(obj.pointer("/spec/template/spec/nodeSelector"))),
                age(obj),
                json!(c),
                json!(im),
                json!(label_selector_string(obj.pointer("/spec/selector"))),
            ]
        }
        ("apps", "StatefulSet") => {
            let (c, im) = containers_images(obj, "/spec/template/spec/containers");
            vec![name, json!(format!("{}/{}", i(obj, "/status/readyReplicas"), i(obj, "/spec/replicas"))), age(obj), json!(c), json!(im)]
        }
        ("apps", "ControllerRevision") => {
            let owner = arr(obj, "/metadata/ownerReferences")
                .iter()
                .find(|o| o.get("controller") == Some(&json!(true)))
                .map(|o| format!("{}/{}", controller_resource(&s(o, "/apiVersion"), &s(o, "/kind")), s(o, "/name")))
                .unwrap_or_else(|| "<none>".into());
            vec![name, json!(owner), json!(i(obj, "/revision")), age(obj)]
        }
        ("batch", "Job") => job_cells(obj),
        ("batch", "CronJob") => {
            let (c, im) = containers_images(obj, "/spec/jobTemplate/spec/template/spec/containers");
            let last = obj.pointer("/status/lastScheduleTime").and_then(Value::as_str).map(|t| since(Some(t))).unwrap_or_else(|| "<none>".into());
            vec![
                name,
                json!(s(obj, "/spec/schedule")),
                json!(or_none(s(obj, "/spec/timeZone"))),
                json!(if obj.pointer("/spec/suspend") == Some(&json!(true)) { "True" } else { "False" }),
                json!(arr(obj, "/status/active").len()),
                json!(last),
                age(obj),
                json!(c),
                json!(im),
                json!(label_selector_string(obj.pointer("/spec/jobTemplate/spec/selector"))),
            ]
        }
        ("", "Service") => service_cells(obj),
        ("", "Node") => node_cells(obj),
        ("", "Namespace") => vec![name, json!(s(obj, "/status/phase")), age(obj)],
        ("", "ConfigMap") => {
            let n = obj.get("data").and_then(Value::as_object).map(|m| m.len()).unwrap_or(0)
                + obj.get("binaryData").and_then(Value::as_object).map(|m| m.len()).unwrap_or(0);
            vec![name, json!(n), age(obj)]
        }
        ("", "Secret") => {
            let n = obj.get("data").and_then(Value::as_object).map(|m| m.len()).unwrap_or(0);
            vec![name, json!(s(obj, "/type")), json!(n), age(obj)]
        }
        ("", "ServiceAccount") => vec![name, json!(arr(obj, "/secrets").len()), age(obj)],
        ("", "Endpoints") => vec![name, json!(endpoints_string(obj)), age(obj)],
        ("discovery.k8s.io", "EndpointSlice") => {
            let ports: Vec<String> = arr(obj, "/ports").iter().map(|p| p.get("port").map(|v| v.to_string()).unwrap_or_else(|| "<unset>".into())).collect();
            let addrs: Vec<String> =
                arr(obj, "/endpoints").iter().flat_map(|e| arr(e, "/addresses").iter().map(|a| a.as_str().unwrap_or("").to_string())).collect();
            vec![
                name,
                json!(s(obj, "/addressType")),
                json!(if ports.is_empty() { "<unset>".into() } else { ports.join(",") }),
                json!(format_list_limited(&addrs)),
                age(obj),
            ]
        }
        ("", "Event") => event_cells(obj),
        ("", "PersistentVolume") => {
            let claim = if obj.pointer("/spec/claimRef/name").is_some() {
                format!("{}/{}", s(obj, "/spec/claimRef/namespace"), s(obj, "/spec/claimRef/name"))
            } else {
                String::new()
            };
            vec![
                name,
                json!(s(obj, "/spec/capacity/storage")),
                json!(access_modes(arr(obj, "/spec/accessModes"))),
                json!(s(obj, "/spec/persistentVolumeReclaimPolicy")),
                json!(s(obj, "/status/phase")),
                json!(claim),
                json!(s(obj, "/spec/storageClassName")),
                json!(or_unset(s(obj, "/spec/volumeAttributesClassName"))),
                json!(s(obj, "/status/reason")),
                age(obj),
                json!(s(obj, "/spec/volumeMode")),
            ]
        }
        ("", "PersistentVolumeClaim") => {
            let bound = s(obj, "/status/phase") == "Bound";
            vec![
                name,
                json!(s(obj, "/status/phase")),
                json!(s(obj, "/spec/volumeName")),
                json!(if bound { s(obj, "/status/capacity/storage") } else { String::new() }),
                json!(if bound { access_modes(arr(obj, "/status/accessModes")) } else { String::new() }),
                json!(s(obj, "/spec/storageClassName")),
                json!(or_unset(s(obj, "/spec/volumeAttributesClassName"))),
                age(obj),
                json!(s(obj, "/spec/volumeMode")),
            ]
        }
        ("", "ResourceQuota") => {
            let mut req = Vec::new();
            let mut lim = Vec::new();
            if let Some(hard) = obj.pointer("/status/hard").and_then(Value::as_object) {
                let mut keys: Vec<&String> = hard.keys().collect();
                keys.sort();
                for k in keys {
                    let used = obj.pointer(&format!("/status/used/{}", k.replace('/', "~1"))).and_then(Value::as_str).unwrap_or("0");
                    let entry = format!("{k}: {used}/{}", hard[k].as_str().unwrap_or(""));
                    if k.starts_with("limits.") { lim.push(entry) } else { req.push(entry) }
                }
            }
            vec![name, age(obj), json!(req.join(", ")), json!(lim.join(", "))]
        }
        ("", "LimitRange") | ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => {
            vec![name, json!(get_str(obj, &["metadata", "creationTimestamp"]).unwrap_or(""))]
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            let subj = |k: &str| -> String {
                arr(obj, "/subjects")
                    .iter()
                    .filter(|x| s(x, "/kind") == k)
                    .map(|x| if k == "ServiceAccount" { format!("{}/{}", s(x, "/namespace"), s(x, "/name")) } else { s(x, "/name") })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            vec![
                name,
                json!(format!("{}/{}", s(obj, "/roleRef/kind"), s(obj, "/roleRef/name"))),
                age(obj),
                json!(subj("User")),
                json!(subj("Group")),
                json!(subj("ServiceAccount")),
            ]
        }
        ("networking.k8s.io", "Ingress") => {
            let hosts: Vec<String> = arr(obj, "/spec/rules").iter().filter_map(|r| r.get("host").and_then(Value::as_str).map(str::to_string)).collect();
            let addrs: Vec<String> =
                arr(obj, "/status/loadBalancer/ingress").iter().map(|a| if a.get("ip").is_some() { s(a, "/ip") } else { s(a, "/hostname") }).collect();
            let ports = if arr(obj, "/spec/tls").is_empty() { "80" } else { "80, 443" };
            vec![
                name,
                json!(if s(obj, "/spec/ingressClassName").is_empty() { "<none>".to_string() } else { s(obj, "/spec/ingressClassName") }),
                json!(if hosts.is_empty() { "*".to_string() } else { format_list_limited(&hosts) }),
                json!(addrs.join(",")),
                json!(ports),
                age(obj),
            ]
        }
        ("networking.k8s.io", "IngressClass") => {
            let params = match obj.pointer("/spec/parameters") {
                Some(p) => {
                    let g = s(p, "/apiGroup");
                    let k = if g.is_empty() { s(p, "/kind") } else { format!("{}.{}", s(p, "/kind"), g) };
                    format!("{k}/{}", s(p, "/name"))
                }
                None => "<none>".into(),
            };
            vec![name, json!(s(obj, "/spec/controller")), json!(params), age(obj)]
        }
        ("networking.k8s.io", "NetworkPolicy") => vec![name, json!(label_selector_string(obj.pointer("/spec/podSelector"))), age(obj)],
        ("autoscaling", "HorizontalPodAutoscaler") => {
            let reference = format!("{}/{}", s(obj, "/spec/scaleTargetRef/kind"), s(obj, "/spec/scaleTargetRef/name"));
            let targets = hpa_targets(obj);
            let min = obj.pointer("/spec/minReplicas").map(|v| v.to_string()).unwrap_or_else(|| "<unset>".into());
            vec![name, json!(reference), json!(targets), json!(min), json!(i(obj, "/spec/maxReplicas")), json!(i(obj, "/status/currentReplicas")), age(obj)]
        }
        ("coordination.k8s.io", "Lease") => {
            vec![name, json!(s(obj, "/spec/holderIdentity")), age(obj)]
        }
        ("policy", "PodDisruptionBudget") => {
            let na = |p: &str| obj.pointer(p).map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())).unwrap_or_else(|| "N/A".into());
            vec![name, json!(na("/spec/minAvailable")), json!(na("/spec/maxUnavailable")), json!(i(obj, "/status/disruptionsAllowed")), age(obj)]
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            vec![
                name,
                json!(i(obj, "/value")),
                json!(if obj.get("globalDefault") == Some(&json!(true)) { "true" } else { "false" }),
                age(obj),
                json!(s(obj, "/preemptionPolicy")),
            ]
        }
        ("storage.k8s.io", "StorageClass") => {
            let mut n = crate::meta::name(obj).to_string();
            if obj.pointer("/metadata/annotations/storageclass.kubernetes.io~1is-default-class").and_then(Value::as_str) == Some("true") {
                n.push_str(" (default)");
            }
            vec![
                json!(n),
                json!(s(obj, "/provisioner")),
                json!(s(obj, "/reclaimPolicy")),
                json!(s(obj, "/volumeBindingMode")),
                json!(if obj.get("allowVolumeExpansion") == Some(&json!(true)) { "true" } else { "false" }),
                age(obj),
            ]
        }
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            let mut conds: Vec<String> = arr(obj, "/status/conditions").iter().map(|c| s(c, "/type")).collect();
            if !arr(obj, "/status/certificate").is_empty() || obj.pointer("/status/certificate").is_some() {
                conds.push("Issued".into());
            }
            let dur = obj
                .pointer("/spec/expirationSeconds")
                .and_then(Value::as_i64)
                .map(|sec| human_duration(chrono::Duration::seconds(sec)))
                .unwrap_or_else(|| "<none>".into());
            vec![
                name,
                age(obj),
                json!(s(obj, "/spec/signerName")),
                json!(s(obj, "/spec/username")),
                json!(dur),
                json!(if conds.is_empty() { "Pending".into() } else { conds.join(",") }),
            ]
        }
        _ => vec![name, json!(get_str(obj, &["metadata", "creationTimestamp"]).unwrap_or(""))],
    }
}

fn or_unset(v: String) -> String {
    if v.is_empty() { "<unset>".into() } else { v }
}

fn controller_resource(api_version: &str, kind: &str) -> String {
    let group = api_version.split_once('/').map(|(g, _)| g).unwrap_or("");
    let plural = format!("{}s", kind.to_lowercase());
    if group.is_empty() { plural } else { format!("{plural}.{group}") }
}

fn access_modes(modes: &[Value]) -> String {
    let order = [("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"), ("ReadWriteOncePod", "RWOP")];
    let have: Vec<&str> = modes.iter().filter_map(Value::as_str).collect();
    order.iter().filter(|(m, _)| have.contains(m)).map(|(_, a)| *a).collect::<Vec<_>>().join(",")
}

fn format_list_limited(items: &[String]) -> String {
    if items.is_empty() {
        return "<none>".into();
    }
    let shown: Vec<&str> = items.iter().take(3).map(String::as_str).collect();
    let mut out = shown.join(",");
    if items.len() > 3 {
        out.push_str(&format!(" + {} more...", items.len() - 3));
    }
    out
}

fn endpoints_string(obj: &Value) -> String {
    let mut list = Vec::new();
    let mut total = 0;
    for ss in arr(obj, "/subsets") {
        let ports = arr(ss, "/ports");
        for a in arr(ss, "/addresses") {
            let ip = s(a, "/ip");
            if ports.is_empty() {
                total += 1;
                if list.len() < 3 {
                    list.push(ip.clone());
                }
            }
            for p in ports {
                total += 1;
                if list.len() < 3 {
                    list.push(format!("{ip}:{}", i(p, "/port")));
                }
            }
        }
    }
    if total == 0 {
        return "<none>".into();
    }
    let mut out = list.join(",");
    if total > 3 {
        out.push_str(&format!(" + {} more...", total - 3));
    }
    out
}

fn hpa_targets(obj: &Value) -> String {
    let metrics = arr(obj, "/spec/metrics");
    if metrics.is_empty() {
        return "<none>".into();
    }
    let current = arr(obj, "/status/currentMetrics");
    let mut parts = Vec::new();
    for (idx, m) in metrics.iter().enumerate() {
        if s(m, "/type") == "Resource" {
            let res = s(m, "/resource/name");
            let cur =
                current.get(idx).and_then(|c| c.pointer("/resource/current/averageUtilization")).map(|v| format!("{v}%")).unwrap_or_else(|| "<unknown>".into());
            if let Some(u) = m.pointer("/resource/target/averageUtilization") {
                parts.push(format!("{res}: {cur}/{u}%"));
            } else {
                parts.push(format!("{res}: <unknown>/{}", s(m, "/resource/target/averageValue")));
            }
        } else {
            parts.push("<unknown>/<unknown>".into());
        }
    }
    let n = parts.len();
    if n > 2 { format!("{} + {} more...", parts[..2].join(", "), n - 2) } else { parts.join(", ") }
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

fn job_cells(obj: &Value) -> Vec<Value> {
    let (c, im) = containers_images(obj, "/spec/template/spec/containers");
    let completions = match obj.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(n) => format!("{}/{n}", i(obj, "/status/succeeded")),
        None => {
            let p = obj.pointer("/spec/parallelism").and_then(Value::as_i64).unwrap_or(0);
            if p > 1 { format!("{}/1 of {p}", i(obj, "/status/succeeded")) } else { format!("{}/1", i(obj, "/status/succeeded")) }
        }
    };
    let start = obj.pointer("/status/startTime").and_then(Value::as_str).and_then(parse_time);
    let end = obj.pointer("/status/completionTime").and_then(Value::as_str).and_then(parse_time);
    let duration = match (start, end) {
        (Some(st), Some(en)) => human_duration(en - st),
        (Some(st), None) => human_duration(chrono::Utc::now() - st),
        _ => String::new(),
    };
    let conds = arr(obj, "/status/conditions");
    let has = |t: &str| conds.iter().any(|c| s(c, "/type") == t && s(c, "/status") == "True");
    let status = if has("Failed") {
        "Failed"
    } else if has("Complete") {
        "Complete"
    } else if has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else if has("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    };
    vec![
        json!(crate::meta::name(obj)),
        json!(status),
        json!(completions),
        json!(duration),
        age(obj),
        json!(c),
        json!(im),
        json!(label_selector_string(obj.pointer("/spec/selector"))),
    ]
}

fn service_cells(obj: &Value) -> Vec<Value> {
    let ty = s(obj, "/spec/type");
    let cluster_ip = {
        let ip = s(obj, "/spec/clusterIP");
        if ip.is_empty() { "<none>".to_string() } else { ip }
    };
    let external_ips: Vec<String> = arr(obj, "/spec/externalIPs").iter().filter_map(|v| v.as_str().map(str::to_string)).collect();
    let external = match ty.as_str() {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".to_string()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            let mut ips: Vec<String> =
                arr(obj, "/status/loadBalancer/ingress").iter().map(|a| if a.get("ip").is_some() { s(a, "/ip") } else { s(a, "/hostname") }).collect();
            ips.extend(external_ips);
            if ips.is_empty() { "<pending>".to_string() } else { ips.join(",") }
        }
        "ExternalName" => s(obj, "/spec/externalName"),
        _ => "<unknown>".to_string(),
    };
    let ports: Vec<String> = arr(obj, "/spec/ports")
        .iter()
        .map(|p| {
            let np = i(p, "/nodePort");
            if np > 0 { format!("{}:{np}/{}", i(p, "/port"), s(p, "/protocol")) } else { format!("{}/{}", i(p, "/port"), s(p, "/protocol")) }
        })
        .collect();
    vec![
        json!(crate::meta::name(obj)),
        json!(ty),
        json!(cluster_ip),
        json!(external),
        json!(if ports.is_empty() { "<none>".to_string() } else { ports.join(",") }),
        age(obj),
        json!(map_selector_string(obj.pointer("/spec/selector"))),
    ]
}

fn node_cells(obj: &Value) -> Vec<Value> {
    let mut status = Vec::new();
    let conds = arr(obj, "/status/conditions");
    match conds.iter().find(|c| s(c, "/type") == "Ready") {
        // Upstream: Ready when True, NotReady for False and Unknown alike; Unknown only
        // when the node has no Ready condition at all.
        Some(c) if s(c, "/status") == "True" => status.push("Ready".to_string()),
        Some(_) => status.push("NotReady".to_string()),
        None => status.push("Unknown".to_string()),
    }
    if obj.pointer("/spec/unschedulable") == Some(&json!(true)) {
        status.push("SchedulingDisabled".into());
    }
    let mut roles: Vec<String> = crate::meta::labels(obj)
        .iter()
        .filter_map(|(k, v)| {
            if let Some(r) = k.strip_prefix("node-role.kubernetes.io/") {
                Some(r.to_string())
            } else if k == "kubernetes.io/role" {
                Some(v.clone())
            } else {
                None
            }
        })
        .filter(|r| !r.is_empty())
        .collect();
    roles.sort();
    roles.dedup();
    let addr = |t: &str| arr(obj, "/status/addresses").iter().find(|a| s(a, "/type") == t).map(|a| s(a, "/address")).unwrap_or_else(|| "<none>".into());
    let os = s(obj, "/status/nodeInfo/osImage");
    let kernel = s(obj, "/status/nodeInfo/kernelVersion");
    let runtime = s(obj, "/status/nodeInfo/containerRuntimeVersion");
    vec![
        json!(crate::meta::name(obj)),
        json!(status.join(",")),
        json!(if roles.is_empty() { "<none>".to_string() } else { roles.join(",") }),
        age(obj),
        json!(s(obj, "/status/nodeInfo/kubeletVersion")),
        json!(addr("InternalIP")),
        json!(addr("ExternalIP")),
        json!(if os.is_empty() { "<unknown>".to_string() } else { os }),
        json!(if kernel.is_empty() { "<unknown>".to_string() } else { kernel }),
        json!(if runtime.is_empty() { "<unknown>".to_string() } else { runtime }),
    ]
}

fn event_cells(obj: &Value) -> Vec<Value> {
    let first = match obj.pointer("/firstTimestamp").and_then(Value::as_str) {
        Some(t) => since(Some(t)),
        None => since(obj.pointer("/eventTime").and_then(Value::as_str)),
    };
    let mut last = match obj.pointer("/lastTimestamp").and_then(Value::as_str) {
        Some(t) => since(Some(t)),
        None => first.clone(),
    };
    let mut count = i(obj, "/count");
    if obj.pointer("/series").is_some_and(|v| !v.is_null()) {
        last = since(obj.pointer("/series/lastObservedTime").and_then(Value::as_str));
        count = i(obj, "/series/count");
    } else if count == 0 {
        count = 1;
    }
    let kind = s(obj, "/involvedObject/kind").to_lowercase();
    let target = if s(obj, "/involvedObject/name").is_empty() { kind } else { format!("{kind}/{}", s(obj, "/involvedObject/name")) };
    let source = {
        let comp = s(obj, "/source/component");
        if !comp.is_empty() {
            let host = s(obj, "/source/host");
            if host.is_empty() { comp } else { format!("{comp}, {host}") }
        } else {
            let rc = s(obj, "/reportingComponent");
            let ri = s(obj, "/reportingInstance");
            if ri.is_empty() { rc } else { format!("{rc}, {ri}") }
        }
    };
    vec![
        json!(last),
        json!(s(obj, "/type")),
        json!(s(obj, "/reason")),
        json!(target),
        json!(s(obj, "/involvedObject/fieldPath")),
        json!(source),
        json!(s(obj, "/message").trim()),
        json!(first),
        json!(count),
        json!(crate::meta::name(obj)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        let d = chrono::Duration::seconds;
        assert_eq!(human_duration(d(5)), "5s");
        assert_eq!(human_duration(d(119)), "119s");
        assert_eq!(human_duration(d(125)), "2m5s");
        assert_eq!(human_duration(d(600)), "10m");
        assert_eq!(human_duration(d(3 * 3600 + 60)), "3h1m");
        assert_eq!(human_duration(d(10 * 3600)), "10h");
        assert_eq!(human_duration(d(3 * 86400 + 3600)), "3d1h");
    }

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

    #[test]
    fn service_ports() {
        let svc = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.5", "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}], "selector": {"app": "x"}}});
        let c = service_cells(&svc);
        assert_eq!(c[3], json!("<none>"));
        assert_eq!(c[4], json!("80:30080/TCP"));
        assert_eq!(c[6], json!("app=x"));
    }
}
