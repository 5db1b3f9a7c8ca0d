//! StorageClasses: defaults and the printer (the default class marked "(default)").

use serde_json::{Value, json};

use super::Kind;
use crate::errors::FieldError;
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

    fn validate(&self, obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
        if s(obj, "/provisioner").is_empty() {
            errs.push(FieldError::required("provisioner", ""));
        }
        if let Some(p) = obj.get("reclaimPolicy").and_then(Value::as_str)
            && p != "Delete"
            && p != "Retain"
        {
            errs.push(FieldError::not_supported("reclaimPolicy", &json!(p), &["Delete", "Retain"]));
        }
        // Everything but metadata and allowVolumeExpansion is immutable.
        if let Some(old) = old {
            for f in ["parameters", "provisioner", "reclaimPolicy", "volumeBindingMode"] {
                if old.get(f) != obj.get(f) {
                    errs.push(FieldError::forbidden(f, "updates to provisioner are forbidden.".replace("provisioner", f)));
                }
            }
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
