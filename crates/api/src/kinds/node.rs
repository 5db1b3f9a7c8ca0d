//! Nodes: allocatable defaults to capacity, the status a kubelet sends is kept on create, the
//! spec.unschedulable field selector and the printer (STATUS, ROLES, VERSION).

use serde_json::{Value, json};

use super::Kind;
use crate::meta::{default_field, obj_mut};
use crate::printers::{AGE, Column, NAME, age, arr, col, s};
use crate::strategy::value_as_field;

pub struct Node;

impl Kind for Node {
    /// The kubelet registers its node with its status.
    fn initial_status(&self, _obj: &Value) -> Option<Value> {
        None
    }

    /// SetDefaults_NodeStatus: allocatable defaults to capacity.
    fn default(&self, obj: &mut Value) {
        if let Some(cap) = obj.pointer("/status/capacity").cloned() {
            default_field(obj_mut(obj, &["status"]), "allocatable", cap);
        }
    }

    fn field_attrs(&self, obj: &Value, add: &mut dyn FnMut(&str, String)) {
        add("spec.unschedulable", obj.pointer("/spec/unschedulable").map(value_as_field).unwrap_or_else(|| "false".into()));
    }

    fn columns(&self) -> Vec<Column> {
        vec![
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
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        node_cells(obj)
    }
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
