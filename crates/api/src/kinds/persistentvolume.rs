//! PersistentVolumes: Retain and Filesystem defaults, Pending on create, the printer.

use serde_json::{Value, json};

use super::Kind;
use crate::meta::{default_field, obj_mut};
use crate::printers::{AGE, Column, NAME, access_modes, age, arr, col, or_unset, s};

pub struct PersistentVolume;

impl Kind for PersistentVolume {
    fn initial_status(&self, _obj: &Value) -> Option<Value> {
        Some(json!({"phase": "Pending"}))
    }

    fn default(&self, obj: &mut Value) {
        let spec = obj_mut(obj, &["spec"]);
        default_field(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
        default_field(spec, "volumeMode", json!("Filesystem"));
        if let Some(hp) = spec.get_mut("hostPath").and_then(Value::as_object_mut) {
            default_field(hp, "type", json!(""));
        }
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME,
            col("Capacity", 0),
            col("Access Modes", 0),
            col("Reclaim Policy", 0),
            col("Status", 0),
            col("Claim", 0),
            col("StorageClass", 0),
            col("VolumeAttributesClass", 0),
            col("Reason", 0),
            AGE,
            col("VolumeMode", 1),
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let claim = if obj.pointer("/spec/claimRef/name").is_some() {
            format!("{}/{}", s(obj, "/spec/claimRef/namespace"), s(obj, "/spec/claimRef/name"))
        } else {
            String::new()
        };
        vec![
            json!(crate::meta::name(obj)),
            json!(s(obj, "/spec/capacity/storage")),
            json!(access_modes(arr(obj, "/spec/accessModes"))),
            json!(s(obj, "/spec/persistentVolumeReclaimPolicy")),
            json!(s(obj, "/status/phase")),
            json!(claim),
            json!(s(obj, "/spec/storageClassName")),
            json!(or_unset(s(obj, "/spec/volumeAttributesClassName"))),
            json!(s(obj, "/status/reason")),
            age(obj),
            json!(s(obj, "/spec/volumeMode")),
        ]
    }
}
