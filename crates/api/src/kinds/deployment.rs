//! Deployments: upstream's SetDefaults_Deployment, ValidateDeployment (strategy, rolling-update
//! bounds, progress deadline) and the printer.

use serde_json::{Value, json};

use super::Kind;
use crate::errors::FieldError;
use crate::kinds::podspec::{default_template, validate_workload};
use crate::meta::{default_field, obj_mut};
use crate::printers::{AGE, Column, NAME, age, col, containers_images, i, int_col, label_selector_string};

pub struct Deployment;

impl Kind for Deployment {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn initial_status(&self, _obj: &Value) -> Option<Value> {
        Some(json!({"replicas": 0}))
    }

    fn default(&self, obj: &mut Value) {
        let spec = obj_mut(obj, &["spec"]);
        default_field(spec, "replicas", json!(1));
        default_field(spec, "revisionHistoryLimit", json!(10));
        default_field(spec, "progressDeadlineSeconds", json!(600));
        let strategy = obj_mut(obj, &["spec", "strategy"]);
        default_field(strategy, "type", json!("RollingUpdate"));
        if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
            let ru = strategy.entry("rollingUpdate").or_insert_with(|| json!({}));
            if let Some(ru) = ru.as_object_mut() {
                default_field(ru, "maxUnavailable", json!("25%"));
                default_field(ru, "maxSurge", json!("25%"));
            }
        }
        default_template(obj);
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
        validate_workload(obj, old, errs);
        crate::workload_validation::deployment(obj, errs);
    }

    fn columns(&self) -> Vec<Column> {
        vec![NAME, col("Ready", 0), int_col("Up-to-date", 0), int_col("Available", 0), AGE, col("Containers", 1), col("Images", 1), col("Selector", 1)]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let (c, im) = containers_images(obj, "/spec/template/spec/containers");
        vec![
            json!(crate::meta::name(obj)),
            json!(format!("{}/{}", i(obj, "/status/readyReplicas"), i(obj, "/spec/replicas"))),
            json!(i(obj, "/status/updatedReplicas")),
            json!(i(obj, "/status/availableReplicas")),
            age(obj),
            json!(c),
            json!(im),
            json!(label_selector_string(obj.pointer("/spec/selector"))),
        ]
    }
}
