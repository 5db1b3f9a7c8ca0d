//! Leases: create-on-update and the printer (HOLDER).

use serde_json::{Value, json};

use super::Kind;
use crate::printers::{AGE, Column, NAME, age, col, s};

pub struct Lease;

impl Kind for Lease {
    fn allow_create_on_update(&self) -> bool {
        true
    }

    fn columns(&self) -> Vec<Column> {
        vec![NAME, col("Holder", 0), AGE]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![json!(crate::meta::name(obj)), json!(s(obj, "/spec/holderIdentity")), age(obj)]
    }
}
