//! NetworkPolicies: policyTypes default and the printer.

use serde_json::{Value, json};

use super::Kind;
use crate::meta::{default_field, obj_mut};
use crate::printers::{AGE, Column, NAME, age, col, label_selector_string};

pub struct NetworkPolicy;

impl Kind for NetworkPolicy {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        default_field(obj_mut(obj, &["spec"]), "policyTypes", json!(["Ingress"]));
    }

    fn columns(&self) -> Vec<Column> {
        vec![NAME, col("Pod-Selector", 0), AGE]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![json!(crate::meta::name(obj)), json!(label_selector_string(obj.pointer("/spec/podSelector"))), age(obj)]
    }
}
