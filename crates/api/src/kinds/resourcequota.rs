//! ResourceQuotas: the printer (REQUEST and LIMIT as used/hard).

use serde_json::{Value, json};

use super::Kind;
use crate::printers::{AGE, Column, NAME, age, col};

pub struct ResourceQuota;

impl Kind for ResourceQuota {
    fn columns(&self) -> Vec<Column> {
        vec![NAME, AGE, col("Request", 0), col("Limit", 0)]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
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
        vec![json!(crate::meta::name(obj)), age(obj), json!(req.join(", ")), json!(lim.join(", "))]
    }
}
