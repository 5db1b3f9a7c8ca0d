//! PriorityClasses: preemptionPolicy default, create-on-update, the printer.

use serde_json::{Value, json};

use super::Kind;
use crate::meta::default_field;
use crate::printers::{AGE, Column, NAME, age, col, i, int_col, s};

pub struct PriorityClass;

impl Kind for PriorityClass {
    fn default(&self, obj: &mut Value) {
        if let Some(m) = obj.as_object_mut() {
            default_field(m, "preemptionPolicy", json!("PreemptLowerPriority"));
        }
    }

    fn allow_create_on_update(&self) -> bool {
        true
    }

    fn columns(&self) -> Vec<Column> {
        vec![NAME, int_col("Value", 0), col("Global-Default", 0), AGE, col("PreemptionPolicy", 0)]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![
            json!(crate::meta::name(obj)),
            json!(i(obj, "/value")),
            json!(if obj.get("globalDefault") == Some(&json!(true)) { "true" } else { "false" }),
            age(obj),
            json!(s(obj, "/preemptionPolicy")),
        ]
    }
}
