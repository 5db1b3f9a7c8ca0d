//! DaemonSets: defaults (RollingUpdate 1/0), update-strategy validation and the printer.

use serde_json::{Value, json};

use super::Kind;
use crate::errors::FieldError;
use crate::kinds::podspec::{default_template, validate_workload};
use crate::meta::{default_field, obj_mut};
use crate::printers::{AGE, Column, NAME, age, col, containers_images, i, int_col, label_selector_string, map_selector_string};

pub struct DaemonSet;

impl Kind for DaemonSet {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn initial_status(&self, _obj: &Value) -> Option<Value> {
        Some(json!({"currentNumberScheduled": 0, "numberMisscheduled": 0, "desiredNumberScheduled": 0, "numberReady": 0}))
    }

    fn default(&self, obj: &mut Value) {
        let spec = obj_mut(obj, &["spec"]);
        default_field(spec, "revisionHistoryLimit", json!(10));
        let us = obj_mut(obj, &["spec", "updateStrategy"]);
        default_field(us, "type", json!("RollingUpdate"));
        if us.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
            let ru = us.entry("rollingUpdate").or_insert_with(|| json!({}));
            if let Some(ru) = ru.as_object_mut() {
                default_field(ru, "maxUnavailable", json!(1));
                default_field(ru, "maxSurge", json!(0));
            }
        }
        default_template(obj);
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
        validate_workload(obj, old, errs);
        crate::workload_validation::daemon_set(obj, errs);
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME,
            int_col("Desired", 0),
            int_col("Current", 0),
            int_col("Ready", 0),
            int_col("Up-to-date", 0),
            int_col("Available", 0),
            col("Node Selector", 0),
            AGE,
            col("Containers", 1),
            col("Images", 1),
            col("Selector", 1),
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let (c, im) = containers_images(obj, "/spec/template/spec/containers");
        vec![
            json!(crate::meta::name(obj)),
            json!(i(obj, "/status/desiredNumberScheduled")),
            json!(i(obj, "/status/currentNumberScheduled")),
            json!(i(obj, "/status/numberReady")),
            json!(i(obj, "/status/updatedNumberScheduled")),
            json!(i(obj, "/status/numberAvailable")),
            json!(map_selector_string(obj.pointer("/spec/template/spec/nodeSelector"))),
            age(obj),
            json!(c),
            json!(im),
            json!(label_selector_string(obj.pointer("/spec/selector"))),
        ]
    }
}
