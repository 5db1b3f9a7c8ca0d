//! What an object counts against a ResourceQuota (upstream's quota evaluators): object
//! counts (`pods`, `count/deployments.apps`, ...) and, for pods and claims, the compute and
//! storage they ask for. Values are thousandths, like `quantity::parse_milli`.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::quantity::parse_milli;

/// The short quota names of core kinds that predate `count/<resource>`.
fn legacy_count_name(group: &str, plural: &str) -> Option<&'static str> {
    if !group.is_empty() {
        return None;
    }
    Some(match plural {
        "pods" => "pods",
        "services" => "services",
        "configmaps" => "configmaps",
        "secrets" => "secrets",
        "persistentvolumeclaims" => "persistentvolumeclaims",
        "replicationcontrollers" => "replicationcontrollers",
        "resourcequotas" => "resourcequotas",
        _ => return None,
    })
}

pub fn count_name(group: &str, plural: &str) -> String {
    if group.is_empty() { format!("count/{plural}") } else { format!("count/{plural}.{group}") }
}

pub fn is_terminal_pod(obj: &Value) -> bool {
    matches!(obj.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed"))
}

/// Requests or limits of a pod for one resource: the containers' sum, or the largest init
/// container if that is more.
pub fn pod_resource(obj: &Value, which: &str, resource: &str) -> i64 {
    let get = |c: &Value| c.pointer(&format!("/resources/{which}/{resource}")).and_then(Value::as_str).and_then(parse_milli).unwrap_or(0);
    let sum: i64 = obj.pointer("/spec/containers").and_then(Value::as_array).map(|cs| cs.iter().map(get).sum()).unwrap_or(0);
    let init: i64 = obj.pointer("/spec/initContainers").and_then(Value::as_array).map(|cs| cs.iter().map(get).max().unwrap_or(0)).unwrap_or(0);
    sum.max(init)
}

/// Usage of one object, by quota resource name.
pub fn usage(group: &str, plural: &str, obj: &Value) -> BTreeMap<String, i64> {
    let mut u = BTreeMap::new();
    let is_pod = group.is_empty() && plural == "pods";
    if is_pod && is_terminal_pod(obj) {
        return u;
    }
    u.insert(count_name(group, plural), 1000);
    if let Some(n) = legacy_count_name(group, plural) {
        u.insert(n.to_string(), 1000);
    }
    if is_pod {
        for r in ["cpu", "memory", "ephemeral-storage"] {
            let req = pod_resource(obj, "requests", r);
            let lim = pod_resource(obj, "limits", r);
            // A limit without a request means the request equals the limit (API defaulting).
            let req = if req == 0 { lim } else { req };
            u.insert(format!("requests.{r}"), req);
            u.insert(format!("limits.{r}"), lim);
            if r != "ephemeral-storage" {
                u.insert(r.to_string(), req);
            }
        }
    }
    if group.is_empty() && plural == "services" {
        let t = obj.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP");
        if t == "NodePort" || t == "LoadBalancer" {
            let ports = obj.pointer("/spec/ports").and_then(Value::as_array).map(|p| p.len()).unwrap_or(0);
            u.insert("services.nodeports".into(), ports as i64 * 1000);
        }
        if t == "LoadBalancer" {
            u.insert("services.loadbalancers".into(), 1000);
        }
    }
    if group.is_empty() && plural == "persistentvolumeclaims" {
        let s = obj.pointer("/spec/resources/requests/storage").and_then(Value::as_str).and_then(parse_milli).unwrap_or(0);
        u.insert("requests.storage".into(), s);
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_usage() {
        let pod = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1"}}},
            {"name": "b", "resources": {"limits": {"memory": "128Mi"}}}]}});
        let u = usage("", "pods", &pod);
        assert_eq!(u["pods"], 1000);
        assert_eq!(u["count/pods"], 1000);
        assert_eq!(u["requests.cpu"], 250);
        assert_eq!(u["limits.cpu"], 1000);
        assert_eq!(u["requests.memory"], 64 * 1048576 * 1000);
        let done = json!({"status": {"phase": "Succeeded"}});
        assert!(usage("", "pods", &done).is_empty());
        assert_eq!(usage("apps", "deployments", &json!({}))["count/deployments.apps"], 1000);
    }
}
