//! Nodes: allocatable defaults to capacity, the status a kubelet sends is kept on create, the
//! spec.unschedulable field selector and the printer (STATUS, ROLES, VERSION).

use serde_json::{Value, json};

use super::Kind;
use crate::errors::FieldError;
use crate::meta::{default_field, obj_mut};
use crate::printers::{AGE, Column, NAME, age, arr, col, s};
use crate::strategy::value_as_field;

pub struct Node;

impl Kind for Node {
    /// The kubelet registers its node with its status.
    fn initial_status(&self, _obj: &Value) -> Option<Value> {
        None
    }

    /// SetDefaults_NodeStatus: allocatable defaults to capacity. The v1 conversion keeps
    /// podCIDR and podCIDRs in step: podCIDR is podCIDRs[0], a lone podCIDR becomes podCIDRs.
    fn default(&self, obj: &mut Value) {
        if let Some(cap) = obj.pointer("/status/capacity").cloned() {
            default_field(obj_mut(obj, &["status"]), "allocatable", cap);
        }
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            let first = spec.get("podCIDRs").and_then(Value::as_array).and_then(|a| a.first()).cloned();
            match first {
                Some(f) => {
                    spec.insert("podCIDR".into(), f);
                }
                None => {
                    if let Some(c) = spec.get("podCIDR").filter(|c| c.as_str().is_some_and(|c| !c.is_empty())).cloned() {
                        spec.insert("podCIDRs".into(), json!([c]));
                    }
                }
            }
        }
    }

    /// Upstream's ValidateNode and ValidateNodeUpdate for the spec.
    fn validate(&self, obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
        validate_node_spec(obj, old, errs)
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

/// Whether `s` is an IPv4 (true) or IPv6 (false) CIDR; None if it is no CIDR.
fn cidr_family(s: &str) -> Option<bool> {
    let (addr, len) = s.split_once('/')?;
    let len: u8 = len.parse().ok().filter(|_| !len.starts_with('+'))?;
    match addr.parse::<std::net::IpAddr>().ok()? {
        std::net::IpAddr::V4(_) if len <= 32 => Some(true),
        std::net::IpAddr::V6(_) if len <= 128 => Some(false),
        _ => None,
    }
}

fn validate_node_spec(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let cidrs: Vec<Value> = obj.pointer("/spec/podCIDRs").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut families = Vec::new();
    for (i, c) in cidrs.iter().enumerate() {
        match c.as_str().and_then(cidr_family) {
            Some(v4) => families.push(v4),
            None => errs.push(FieldError::invalid(format!("spec.podCIDRs[{i}]"), c, "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)")),
        }
    }
    // At most one CIDR per IP family (a dual-stack pair).
    if cidrs.len() > 2 || (cidrs.len() == 2 && families.len() == 2 && families[0] == families[1]) {
        errs.push(FieldError::invalid("spec.podCIDRs", &json!(cidrs), "may specify no more than one CIDR for each IP family"));
    }
    if let Some(old) = old {
        let before: Vec<Value> = old.pointer("/spec/podCIDRs").and_then(Value::as_array).cloned().unwrap_or_default();
        if !before.is_empty() && before != cidrs {
            errs.push(FieldError::forbidden("spec.podCIDRs", "node updates may not change podCIDR except from \"\" to valid"));
        }
        let provider = |v: &Value| v.pointer("/spec/providerID").and_then(Value::as_str).unwrap_or("").to_string();
        if !provider(old).is_empty() && provider(old) != provider(obj) {
            errs.push(FieldError::forbidden("spec.providerID", "node updates may not change providerID except from \"\" to valid"));
        }
    }
    let taints = obj.pointer("/spec/taints").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    for (i, t) in taints.iter().enumerate() {
        let key = t.get("key").and_then(Value::as_str).unwrap_or("");
        let value = t.get("value").and_then(Value::as_str).unwrap_or("");
        let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
        if let Err(msgs) = crate::validation::validate_qualified_name(key) {
            errs.push(FieldError::invalid(format!("spec.taints[{i}].key"), &json!(key), msgs.join("; ")));
        }
        if let Err(msgs) = crate::validation::validate_label_value(value) {
            errs.push(FieldError::invalid(format!("spec.taints[{i}].value"), &json!(value), msgs.join(";")));
        }
        match effect {
            "" => errs.push(FieldError::required(format!("spec.taints[{i}].effect"), "")),
            "NoSchedule" | "PreferNoSchedule" | "NoExecute" => {}
            other => errs.push(FieldError::not_supported(format!("spec.taints[{i}].effect"), &json!(other), &["NoSchedule", "PreferNoSchedule", "NoExecute"])),
        }
        if !seen.insert((key.to_string(), effect.to_string())) {
            let mut e = FieldError::duplicate(format!("spec.taints[{i}]"), t);
            e.detail = "taints must be unique by key and effect pair".into();
            errs.push(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(obj: Value, old: Option<Value>) -> Vec<String> {
        let mut errs = Vec::new();
        let mut obj = obj;
        Node.default(&mut obj);
        Node.validate(&obj, old.as_ref(), &mut errs);
        errs.iter().map(|e| format!("{}: {}", e.field, e.body())).collect()
    }

    #[test]
    fn pod_cidrs_are_cidrs_one_per_family() {
        assert!(errors(json!({"spec": {"podCIDR": "10.244.1.0/24"}}), None).is_empty());
        let bad = errors(json!({"spec": {"podCIDR": "10.0.0.0/24; flush ruleset"}}), None);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].starts_with("spec.podCIDRs[0]: Invalid value: \"10.0.0.0/24; flush ruleset\": must be a valid CIDR value"), "{bad:?}");
        let two = errors(json!({"spec": {"podCIDRs": ["10.244.1.0/24", "10.244.2.0/24"]}}), None);
        assert!(two.iter().any(|e| e.contains("may specify no more than one CIDR for each IP family")), "{two:?}");
        assert!(errors(json!({"spec": {"podCIDRs": ["10.244.1.0/24", "fd00::/64"]}}), None).is_empty());
    }

    #[test]
    fn pod_cidr_follows_pod_cidrs() {
        let mut n = json!({"spec": {"podCIDR": "10.9.9.0/24", "podCIDRs": ["10.244.1.0/24"]}});
        Node.default(&mut n);
        assert_eq!(n["spec"]["podCIDR"], "10.244.1.0/24");
        let mut lone = json!({"spec": {"podCIDR": "10.244.1.0/24"}});
        Node.default(&mut lone);
        assert_eq!(lone["spec"]["podCIDRs"], json!(["10.244.1.0/24"]));
    }

    #[test]
    fn pod_cidr_and_provider_id_are_set_once() {
        let old = json!({"spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"], "providerID": "r8s://a"}});
        assert!(errors(json!({"spec": {"podCIDR": "10.244.1.0/24", "providerID": "r8s://a"}}), Some(old.clone())).is_empty());
        let changed = errors(json!({"spec": {"podCIDR": "10.244.2.0/24", "providerID": "r8s://b"}}), Some(old));
        assert_eq!(changed.len(), 2, "{changed:?}");
        assert!(changed[0].contains("node updates may not change podCIDR except from \"\" to valid"));
        assert!(changed[1].starts_with("spec.providerID: Forbidden"));
        let fresh = json!({"spec": {}});
        assert!(errors(json!({"spec": {"podCIDR": "10.244.3.0/24"}}), Some(fresh)).is_empty());
    }

    #[test]
    fn taints_need_a_key_an_effect_and_are_unique() {
        let errs = errors(
            json!({"spec": {"taints": [
                {"key": "a", "effect": "NoSchedule"},
                {"key": "a", "effect": "NoSchedule"},
                {"key": "bad key", "effect": "Sometimes"},
                {"key": "b"}
            ]}}),
            None,
        );
        assert!(
            errs.iter().any(|e| e.starts_with("spec.taints[1]: Duplicate value") && e.ends_with("taints must be unique by key and effect pair")),
            "{errs:?}"
        );
        assert!(errs.iter().any(|e| e.starts_with("spec.taints[2].key: Invalid value")), "{errs:?}");
        assert!(errs.iter().any(|e| e.starts_with("spec.taints[2].effect: Unsupported value: \"Sometimes\"")), "{errs:?}");
        assert!(errs.iter().any(|e| e == "spec.taints[3].effect: Required value"), "{errs:?}");
    }
}
