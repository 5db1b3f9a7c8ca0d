//! Services: defaults, validation (type, ports, immutable cluster IP), the spec.clusterIP and
//! spec.type field selectors, the printer; writes allocate cluster IPs and node ports.

use serde_json::{Value, json};

use super::Kind;
use crate::errors::FieldError;
use crate::meta::{default_field, obj_mut};
use crate::printers::{AGE, Column, NAME, age, arr, col, i, map_selector_string, s};
use crate::validation::NameRule;

pub struct Service;

impl Kind for Service {
    fn name_rule(&self) -> NameRule {
        NameRule::Dns1035
    }

    fn initial_status(&self, _obj: &Value) -> Option<Value> {
        Some(json!({"loadBalancer": {}}))
    }

    fn default(&self, obj: &mut Value) {
        default_service(obj)
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
        validate_service(obj, old, errs)
    }

    fn field_attrs(&self, obj: &Value, add: &mut dyn FnMut(&str, String)) {
        add("spec.clusterIP", s(obj, "/spec/clusterIP"));
        add("spec.type", s(obj, "/spec/type"));
    }

    fn columns(&self) -> Vec<Column> {
        vec![NAME, col("Type", 0), col("Cluster-IP", 0), col("External-IP", 0), col("Port(s)", 0), AGE, col("Selector", 1)]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        service_cells(obj)
    }

    fn allocates_service_addresses(&self) -> bool {
        true
    }
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
    } else if spec.get("externalTrafficPolicy") == Some(&json!("Cluster")) {
        // A type change away from NodePort/LoadBalancer drops what only those types have (as
        // upstream's dropTypeDependentFields does for values left at their default).
        spec.remove("externalTrafficPolicy");
    }
    if ty != "LoadBalancer" && spec.get("allocateLoadBalancerNodePorts") == Some(&json!(true)) {
        spec.remove("allocateLoadBalancerNodePorts");
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
    if headless && (ty == "NodePort" || ty == "LoadBalancer") {
        errs.push(FieldError::invalid("spec.clusterIPs[0]", &json!("None"), "may not be set to 'None' for LoadBalancer or NodePort services"));
    }
    let one_of = |field: &str, allowed: &[&str], errs: &mut Vec<FieldError>| {
        if let Some(v) = spec.get(field).and_then(Value::as_str)
            && !allowed.contains(&v)
        {
            errs.push(FieldError::not_supported(format!("spec.{field}"), &json!(v), allowed));
        }
    };
    one_of("sessionAffinity", &["ClientIP", "None"], errs);
    one_of("externalTrafficPolicy", &["Cluster", "Local"], errs);
    one_of("internalTrafficPolicy", &["Cluster", "Local"], errs);
    if spec.get("externalTrafficPolicy").and_then(Value::as_str).is_some() && ty != "NodePort" && ty != "LoadBalancer" {
        errs.push(FieldError::invalid(
            "spec.externalTrafficPolicy",
            &spec["externalTrafficPolicy"],
            "may only be set when `type` is 'NodePort' or 'LoadBalancer'",
        ));
    }
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
        if let Some(proto) = p.get("protocol").and_then(Value::as_str)
            && !["SCTP", "TCP", "UDP"].contains(&proto)
        {
            errs.push(FieldError::not_supported(format!("spec.ports[{i}].protocol"), &json!(proto), &["SCTP", "TCP", "UDP"]));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_validation_as_upstream() {
        let check = |spec: Value| {
            let mut errs = vec![];
            Service.validate(&json!({"spec": spec}), None, &mut errs);
            errs.iter().map(FieldError::message).collect::<Vec<_>>()
        };
        assert_eq!(
            check(json!({"sessionAffinity": "Sticky", "ports": [{"port": 80}]})),
            vec!["spec.sessionAffinity: Unsupported value: \"Sticky\": supported values: \"ClientIP\", \"None\""]
        );
        assert_eq!(
            check(json!({"externalTrafficPolicy": "Local", "ports": [{"port": 80}]})),
            vec!["spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set when `type` is 'NodePort' or 'LoadBalancer'"]
        );
        assert_eq!(
            check(json!({"ports": [{"port": 80, "protocol": "ICMP"}]})),
            vec!["spec.ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\""]
        );
        assert!(check(json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}]}))[0].contains("may not be set to 'None'"));
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
