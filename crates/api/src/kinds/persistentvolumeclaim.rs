//! PersistentVolumeClaims: volumeMode default, Pending on create, the printer.

use serde_json::{Value, json};

use super::Kind;
use crate::errors::FieldError;
use crate::meta::{default_field, obj_mut};
use crate::printers::{AGE, Column, NAME, access_modes, age, arr, col, or_unset, s};

pub struct PersistentVolumeClaim;

impl Kind for PersistentVolumeClaim {
    fn initial_status(&self, _obj: &Value) -> Option<Value> {
        Some(json!({"phase": "Pending"}))
    }

    fn default(&self, obj: &mut Value) {
        default_field(obj_mut(obj, &["spec"]), "volumeMode", json!("Filesystem"));
    }

    /// ValidatePersistentVolumeClaimSpec: access modes and a storage request.
    fn validate(&self, obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
        if obj.pointer("/spec/accessModes").and_then(Value::as_array).is_none_or(|a| a.is_empty()) {
            errs.push(FieldError::required("spec.accessModes", "at least 1 access mode is required"));
        }
        if obj.pointer("/spec/resources/requests/storage").is_none() {
            errs.push(FieldError::required("spec.resources[storage]", ""));
        }
        // A bound claim's spec is immutable except its resources and VolumeAttributesClass.
        if let Some(old) = old {
            let strip = |v: &Value| {
                let mut s = v.get("spec").cloned().unwrap_or(json!({}));
                if let Some(m) = s.as_object_mut() {
                    m.remove("resources");
                    m.remove("volumeAttributesClassName");
                    if old.pointer("/spec/volumeName").and_then(Value::as_str).is_none_or(str::is_empty) {
                        m.remove("volumeName");
                    }
                }
                s
            };
            if strip(old) != strip(obj) {
                errs.push(FieldError::forbidden(
                    "spec",
                    "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
                ));
            }
        }
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME,
            col("Status", 0),
            col("Volume", 0),
            col("Capacity", 0),
            col("Access Modes", 0),
            col("StorageClass", 0),
            col("VolumeAttributesClass", 0),
            AGE,
            col("VolumeMode", 1),
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let bound = s(obj, "/status/phase") == "Bound";
        vec![
            json!(crate::meta::name(obj)),
            json!(s(obj, "/status/phase")),
            json!(s(obj, "/spec/volumeName")),
            json!(if bound { s(obj, "/status/capacity/storage") } else { String::new() }),
            json!(if bound { access_modes(arr(obj, "/status/accessModes")) } else { String::new() }),
            json!(s(obj, "/spec/storageClassName")),
            json!(or_unset(s(obj, "/spec/volumeAttributesClassName"))),
            age(obj),
            json!(s(obj, "/spec/volumeMode")),
        ]
    }
}
