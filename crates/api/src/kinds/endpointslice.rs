//! EndpointSlices: port defaults and the printer.

use serde_json::{Value, json};

use super::Kind;
use crate::meta::default_field;
use crate::printers::{AGE, Column, NAME, age, arr, col, format_list_limited, s};

pub struct EndpointSlice;

impl Kind for EndpointSlice {
    fn default(&self, obj: &mut Value) {
        for p in obj.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
            if let Some(m) = p.as_object_mut() {
                default_field(m, "protocol", json!("TCP"));
                default_field(m, "name", json!(""));
            }
        }
    }

    fn columns(&self) -> Vec<Column> {
        vec![NAME, col("AddressType", 0), col("Ports", 0), col("Endpoints", 0), AGE]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let ports: Vec<String> = arr(obj, "/ports").iter().map(|p| p.get("port").map(|v| v.to_string()).unwrap_or_else(|| "<unset>".into())).collect();
        let addrs: Vec<String> =
            arr(obj, "/endpoints").iter().flat_map(|e| arr(e, "/addresses").iter().map(|a| a.as_str().unwrap_or("").to_string())).collect();
        vec![
            json!(crate::meta::name(obj)),
            json!(s(obj, "/addressType")),
            json!(if ports.is_empty() { "<unset>".into() } else { ports.join(",") }),
            json!(format_list_limited(&addrs)),
            age(obj),
        ]
    }
}
