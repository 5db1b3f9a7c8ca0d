//! StorageClasses: defaults and the printer (the default class marked "(default)").

use serde_json::{Value, json};

use super::Kind;
use crate::meta::default_field;
use crate::printers::{AGE, Column, NAME, age, col, s};

pub struct StorageClass;

impl Kind for StorageClass {
    fn default(&self, obj: &mut Value) {
        if let Some(m) = obj.as_object_mut() {
            default_field(m, "reclaimPolicy", json!("Delete"));
            default_field(m, "volumeBindingMode", json!("Immediate"));
        }
    }

    fn columns(&self) -> Vec<Column> {
        vec![NAME, col("Provisioner", 0), col("ReclaimPolicy", 0), col("VolumeBindingMode", 0), col("AllowVolumeExpansion", 0), AGE]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
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
}
