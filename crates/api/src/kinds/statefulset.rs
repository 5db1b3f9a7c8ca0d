//! StatefulSets: defaults (OrderedReady, partition 0, claim templates), validation (mostly
//! immutable spec) and the printer.

use serde_json::{Value, json};

use super::Kind;
use crate::errors::FieldError;
use crate::kinds::podspec::{default_template, validate_workload};
use crate::meta::{default_field, obj_mut};
use crate::printers::{AGE, Column, NAME, age, col, containers_images, i};

pub struct StatefulSet;

impl Kind for StatefulSet {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn initial_status(&self, _obj: &Value) -> Option<Value> {
        Some(json!({"replicas": 0, "availableReplicas": 0}))
    }

    fn default(&self, obj: &mut Value) {
        let spec = obj_mut(obj, &["spec"]);
        default_field(spec, "replicas", json!(1));
        default_field(spec, "podManagementPolicy", json!("OrderedReady"));
        default_field(spec, "revisionHistoryLimit", json!(10));
        default_field(spec, "persistentVolumeClaimRetentionPolicy", json!({"whenDeleted": "Retain", "whenScaled": "Retain"}));
        let us = obj_mut(obj, &["spec", "updateStrategy"]);
        default_field(us, "type", json!("RollingUpdate"));
        if us.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
            let ru = us.entry("rollingUpdate").or_insert_with(|| json!({}));
            if let Some(ru) = ru.as_object_mut() {
                default_field(ru, "partition", json!(0));
            }
        }
        if let Some(vcts) = obj.pointer_mut("/spec/volumeClaimTemplates").and_then(Value::as_array_mut) {
            for t in vcts {
                let spec = obj_mut(t, &["spec"]);
                default_field(spec, "volumeMode", json!("Filesystem"));
                default_field(obj_mut(t, &["status"]), "phase", json!("Pending"));
                default_field(t.as_object_mut().unwrap(), "apiVersion", json!("v1"));
                default_field(t.as_object_mut().unwrap(), "kind", json!("PersistentVolumeClaim"));
            }
        }
        default_template(obj);
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
        validate_workload(obj, old, errs);
        crate::workload_validation::stateful_set(obj, old, errs);
    }

    fn columns(&self) -> Vec<Column> {
        vec![NAME, col("Ready", 0), AGE, col("Containers", 1), col("Images", 1)]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let (c, im) = containers_images(obj, "/spec/template/spec/containers");
        vec![json!(crate::meta::name(obj)), json!(format!("{}/{}", i(obj, "/status/readyReplicas"), i(obj, "/spec/replicas"))), age(obj), json!(c), json!(im)]
    }
}
