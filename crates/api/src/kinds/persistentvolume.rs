//! PersistentVolumes: Retain and Filesystem defaults, Pending on create, the printer.

use serde_json::{Value, json};

use super::Kind;
use crate::errors::FieldError;
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

    /// ValidatePersistentVolumeSpec: access modes, a storage capacity and exactly one source.
    fn validate(&self, obj: &Value, _old: Option<&Value>, errs: &mut Vec<FieldError>) {
        let spec = obj.get("spec").cloned().unwrap_or(json!({}));
        if spec.get("accessModes").and_then(Value::as_array).is_none_or(|a| a.is_empty()) {
            errs.push(FieldError::required("spec.accessModes", ""));
        }
        match spec.get("capacity").and_then(Value::as_object) {
            Some(c) if c.contains_key("storage") => {}
            Some(c) if !c.is_empty() => {
                errs.push(FieldError::not_supported("spec.capacity", &json!(c.keys().next()), &["storage"]));
            }
            _ => errs.push(FieldError::required("spec.capacity", "")),
        }
        const NOT_SOURCES: &[&str] = &[
            "accessModes",
            "capacity",
            "claimRef",
            "mountOptions",
            "nodeAffinity",
            "persistentVolumeReclaimPolicy",
            "storageClassName",
            "volumeAttributesClassName",
            "volumeMode",
        ];
        let sources: Vec<&String> = spec.as_object().into_iter().flatten().map(|(k, _)| k).filter(|k| !NOT_SOURCES.contains(&k.as_str())).collect();
        match sources.len() {
            0 => errs.push(FieldError::required("spec", "must specify a volume type")),
            1 => {
                if sources[0] == "hostPath" && s(obj, "/spec/hostPath/path").is_empty() {
                    errs.push(FieldError::required("spec.hostPath.path", ""));
                }
            }
            _ => errs.push(FieldError::forbidden(format!("spec.{}", sources[1]), "may not specify more than 1 volume type")),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(pv: Value) -> Vec<String> {
        let mut errs = vec![];
        PersistentVolume.validate(&pv, None, &mut errs);
        errs.iter().map(FieldError::message).collect()
    }

    #[test]
    fn a_volume_needs_modes_capacity_and_one_source() {
        assert!(messages(json!({"spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}, "hostPath": {"path": "/data"}}})).is_empty());
        assert_eq!(
            messages(json!({"spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}}})),
            vec!["spec: Required value: must specify a volume type"]
        );
        assert_eq!(
            messages(json!({"spec": {"hostPath": {"path": "/d"}, "local": {"path": "/d"}, "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}}})),
            vec!["spec.local: Forbidden: may not specify more than 1 volume type"]
        );
        assert_eq!(messages(json!({"spec": {"hostPath": {"path": "/d"}}})), vec!["spec.accessModes: Required value", "spec.capacity: Required value"]);
    }
}
