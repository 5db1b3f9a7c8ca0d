//! ReplicationControllers: the selector defaults to the template's labels; otherwise as
//! ReplicaSets, with a map selector.

use serde_json::{Value, json};

use super::Kind;
use crate::errors::FieldError;
use crate::kinds::podspec::{default_template, validate_pod_spec};
use crate::kinds::replicaset::{replica_cells, replica_columns};
use crate::meta::{default_field, obj_mut};
use crate::printers::{Column, map_selector_string, s};

pub struct ReplicationController;

impl Kind for ReplicationController {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn initial_status(&self, _obj: &Value) -> Option<Value> {
        Some(json!({"replicas": 0}))
    }

    fn default(&self, obj: &mut Value) {
        let spec = obj_mut(obj, &["spec"]);
        default_field(spec, "replicas", json!(1));
        default_field(spec, "minReadySeconds", json!(0));
        // RC's selector defaults to the template's labels.
        if spec.get("selector").is_none_or(|s| s.as_object().is_none_or(|m| m.is_empty()))
            && let Some(l) = spec.get("template").and_then(|t| t.get("metadata")).and_then(|m| m.get("labels")).cloned()
        {
            spec.insert("selector".into(), l);
        }
        default_template(obj);
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>, errs: &mut Vec<FieldError>) {
        if let Some(spec) = obj.pointer("/spec/template/spec") {
            validate_pod_spec(spec, "spec.template.spec", errs);
        }
        crate::workload_validation::replication_controller(obj, errs);
    }

    fn field_attrs(&self, obj: &Value, add: &mut dyn FnMut(&str, String)) {
        add("status.replicas", s(obj, "/status/replicas"));
    }

    fn columns(&self) -> Vec<Column> {
        replica_columns()
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        replica_cells(obj, map_selector_string(obj.pointer("/spec/selector")))
    }
}
