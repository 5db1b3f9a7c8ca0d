//! Ingresses: pathType default and the printer.

use serde_json::{Value, json};

use super::Kind;
use crate::meta::default_field;
use crate::printers::{AGE, Column, NAME, age, arr, col, format_list_limited, s};

pub struct Ingress;

impl Kind for Ingress {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        for r in obj.pointer_mut("/spec/rules").and_then(Value::as_array_mut).into_iter().flatten() {
            for p in r.pointer_mut("/http/paths").and_then(Value::as_array_mut).into_iter().flatten() {
                if let Some(m) = p.as_object_mut() {
                    default_field(m, "pathType", json!("ImplementationSpecific"));
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
