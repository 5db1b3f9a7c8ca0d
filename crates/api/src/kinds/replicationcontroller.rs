//! ReplicationControllers: the selector defaults to the template's labels; otherwise as
//! ReplicaSets, with a map selector.

use serde_json::{Value, json};

use super::Kind;
use crate::errors::FieldError;
use crate::kinds::podspec::{default_template, validate_pod_spec};
use crate::meta::{default_field, obj_mut};
use crate::printers::{AGE, Column, NAME, age, col, containers_images, i, int_col, map_selector_string, s};

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
        vec![NAME, int_col("Desired", 0), int_col("Current", 0), int_col("Ready", 0), AGE, col("Containers", 1), col("Images", 1), col("Selector", 1)]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let (c, im) = containers_images(obj, "/spec/template/spec/containers");
        vec![
            json!(crate::meta::name(obj)),
            json!(i(obj, "/spec/replicas")),
            json!(i(obj, "/status/replicas")),
            json!(i(obj, "/status/readyReplicas")),
            age(obj),
            json!(c),
            json!(im),
            json!(map_selector_string(obj.pointer("/spec/selector"))),
        ]
    }
}
