//! PodDisruptionBudgets: the printer.

use serde_json::{Value, json};

use super::Kind;
use crate::errors::FieldError;
use crate::printers::{AGE, Column, NAME, age, col, i, int_col};

pub struct PodDisruptionBudget;

impl Kind for PodDisruptionBudget {
    fn tracks_generation(&self) -> bool {
        true
    }

    /// ValidatePodDisruptionBudgetSpec: one of minAvailable and maxUnavailable.
    fn validate(&self, obj: &Value, _old: Option<&Value>, errs: &mut Vec<FieldError>) {
        let set = |f: &str| obj.pointer(&format!("/spec/{f}")).is_some_and(|v| !v.is_null());
        if set("minAvailable") && set("maxUnavailable") {
            errs.push(FieldError::invalid("spec", obj.get("spec").unwrap_or(&Value::Null), "minAvailable and maxUnavailable cannot be both set"));
        }
    }

    fn columns(&self) -> Vec<Column> {
        vec![NAME, col("Min Available", 0), col("Max Unavailable", 0), int_col("Allowed Disruptions", 0), AGE]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let na = |p: &str| obj.pointer(p).map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())).unwrap_or_else(|| "N/A".into());
        vec![
            json!(crate::meta::name(obj)),
            json!(na("/spec/minAvailable")),
            json!(na("/spec/maxUnavailable")),
            json!(i(obj, "/status/disruptionsAllowed")),
            age(obj),
        ]
    }
}
