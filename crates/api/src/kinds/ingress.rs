//! Ingresses: validation (pathType required in networking.k8s.io/v1) and the printer.

use serde_json::{Value, json};

use super::Kind;
use crate::errors::FieldError;
use crate::printers::{AGE, Column, NAME, age, arr, col, format_list_limited, s};

pub struct Ingress;

impl Kind for Ingress {
    fn tracks_generation(&self) -> bool {
        true
    }

    /// ValidateIngressSpec: rules or a default backend; every HTTP path has a pathType
    /// (networking.k8s.io/v1 does not default it) and Exact/Prefix paths are absolute.
    fn validate(&self, obj: &Value, _old: Option<&Value>, errs: &mut Vec<FieldError>) {
        let rules = arr(obj, "/spec/rules");
        if rules.is_empty() && obj.pointer("/spec/defaultBackend").is_none() {
            errs.push(FieldError::invalid("spec", obj.get("spec").unwrap_or(&Value::Null), "either `defaultBackend` or `rules` must be specified"));
        }
        for (i, r) in rules.iter().enumerate() {
            for (j, p) in arr(r, "/http/paths").iter().enumerate() {
                let at = format!("spec.rules[{i}].http.paths[{j}]");
                let path = s(p, "/path");
                match p.get("pathType").and_then(Value::as_str) {
                    None => errs.push(FieldError::required(format!("{at}.pathType"), "pathType must be specified")),
                    Some("Exact" | "Prefix") if !path.starts_with('/') => {
                        errs.push(FieldError::invalid(format!("{at}.path"), &json!(path), "must be an absolute path"));
                    }
                    Some("Exact" | "Prefix" | "ImplementationSpecific") => {}
                    Some(other) => {
                        errs.push(FieldError::not_supported(format!("{at}.pathType"), &json!(other), &["Exact", "ImplementationSpecific", "Prefix"]))
                    }
                }
            }
        }
    }

    fn columns(&self) -> Vec<Column> {
        vec![NAME, col("Class", 0), col("Hosts", 0), col("Address", 0), col("Ports", 0), AGE]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let hosts: Vec<String> = arr(obj, "/spec/rules").iter().filter_map(|r| r.get("host").and_then(Value::as_str).map(str::to_string)).collect();
        let addrs: Vec<String> =
            arr(obj, "/status/loadBalancer/ingress").iter().map(|a| if a.get("ip").is_some() { s(a, "/ip") } else { s(a, "/hostname") }).collect();
        let ports = if arr(obj, "/spec/tls").is_empty() { "80" } else { "80, 443" };
        vec![
            json!(crate::meta::name(obj)),
            json!(if s(obj, "/spec/ingressClassName").is_empty() { "<none>".to_string() } else { s(obj, "/spec/ingressClassName") }),
            json!(if hosts.is_empty() { "*".to_string() } else { format_list_limited(&hosts) }),
            json!(addrs.join(",")),
            json!(ports),
            age(obj),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_need_a_type() {
        let mut errs = vec![];
        let ing = json!({"spec": {"rules": [{"http": {"paths": [{"path": "/", "backend": {}}, {"path": "x", "pathType": "Prefix", "backend": {}}]}}]}});
        Ingress.validate(&ing, None, &mut errs);
        let msgs: Vec<String> = errs.iter().map(FieldError::message).collect();
        assert_eq!(
            msgs,
            vec![
                "spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified",
                "spec.rules[0].http.paths[1].path: Invalid value: \"x\": must be an absolute path"
            ]
        );
    }
}
