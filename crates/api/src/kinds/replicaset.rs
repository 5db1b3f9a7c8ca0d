//! ReplicaSets: defaults, validation (template restart policy), the status.replicas field
//! selector and the printer.

use serde_json::{Value, json};

use super::Kind;
use crate::errors::FieldError;
use crate::kinds::podspec::{default_template, validate_workload};
use crate::meta::{default_field, obj_mut};
use crate::printers::{AGE, Column, NAME, age, col, containers_images, i, int_col, label_selector_string, s};

pub struct ReplicaSet;

impl Kind for ReplicaSet {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn initial_status(&self, _obj: &Value) -> Option<Value> {
        Some(json!({"replicas": 0}))
    }

    fn default(&self, obj: &mut Value) {
        default_field(obj_mut(obj, &["spec"]), "replicas", json!(1));
        default_template(obj);
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
        validate_workload(obj, old, errs);
        crate::workload_validation::replica_set(obj, errs);
    }

    fn field_attrs(&self, obj: &Value, add: &mut dyn FnMut(&str, String)) {
        add("status.replicas", s(obj, "/status/replicas"));
    }

    fn columns(&self) -> Vec<Column> {
        replica_columns()
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        replica_cells(obj, label_selector_string(obj.pointer("/spec/selector")))
    }
}

/// The columns ReplicaSets and ReplicationControllers share.
pub(crate) fn replica_columns() -> Vec<Column> {
    vec![NAME, int_col("Desired", 0), int_col("Current", 0), int_col("Ready", 0), AGE, col("Containers", 1), col("Images", 1), col("Selector", 1)]
}

/// A ReplicaSet's or ReplicationController's row, with its selector as printed.
pub(crate) fn replica_cells(obj: &Value, selector: String) -> Vec<Value> {
    let (c, im) = containers_images(obj, "/spec/template/spec/containers");
    vec![
        json!(crate::meta::name(obj)),
        json!(i(obj, "/spec/replicas")),
        json!(i(obj, "/status/replicas")),
        json!(i(obj, "/status/readyReplicas")),
        age(obj),
        json!(c),
        json!(im),
        json!(selector),
    ]
}
