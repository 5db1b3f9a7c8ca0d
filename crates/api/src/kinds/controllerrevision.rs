//! ControllerRevisions: the printer (CONTROLLER, REVISION).

use serde_json::{Value, json};

use super::Kind;
use crate::printers::{AGE, Column, NAME, age, arr, col, controller_resource, i, int_col, s};

pub struct ControllerRevision;

impl Kind for ControllerRevision {
    fn columns(&self) -> Vec<Column> {
        vec![NAME, col("Controller", 0), int_col("Revision", 0), AGE]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let owner = arr(obj, "/metadata/ownerReferences")
            .iter()
            .find(|o| o.get("controller") == Some(&json!(true)))
            .map(|o| format!("{}/{}", controller_resource(&s(o, "/apiVersion"), &s(o, "/kind")), s(o, "/name")))
            .unwrap_or_else(|| "<none>".into());
        vec![json!(crate::meta::name(obj)), json!(owner), json!(i(obj, "/revision")), age(obj)]
    }
}
