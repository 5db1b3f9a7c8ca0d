//! Endpoints: protocol defaults, create-on-update, the printer.

use serde_json::{Value, json};

use super::Kind;
use crate::meta::default_field;
use crate::printers::{AGE, Column, NAME, age, arr, col, i, s};

pub struct Endpoints;

impl Kind for Endpoints {
    fn default(&self, obj: &mut Value) {
        for s in obj.get_mut("subsets").and_then(Value::as_array_mut).into_iter().flatten() {
            for p in s.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
                if let Some(m) = p.as_object_mut() {
                    default_field(m, "protocol", json!("TCP"));
                }
            }
        }
    }

    fn allow_create_on_update(&self) -> bool {
        true
    }

    fn columns(&self) -> Vec<Column> {
        vec![NAME, col("Endpoints", 0), AGE]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![json!(crate::meta::name(obj)), json!(endpoints_string(obj)), age(obj)]
    }
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
