//! IngressClasses: the printer.

use serde_json::{Value, json};

use super::Kind;
use crate::printers::{AGE, Column, NAME, age, col, s};

pub struct IngressClass;

impl Kind for IngressClass {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn columns(&self) -> Vec<Column> {
        vec![NAME, col("Controller", 0), col("Parameters", 0), AGE]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let params = match obj.pointer("/spec/parameters") {
            Some(p) => {
                let g = s(p, "/apiGroup");
                let k = if g.is_empty() { s(p, "/kind") } else { format!("{}.{}", s(p, "/kind"), g) };
                format!("{k}/{}", s(p, "/name"))
            }
            None => "<none>".into(),
        };
        vec![json!(crate::meta::name(obj)), json!(s(obj, "/spec/controller")), json!(params), age(obj)]
    }
}
