//! ServiceAccounts: the printer.

use serde_json::{Value, json};

use super::Kind;
use crate::printers::{AGE, Column, NAME, age, arr, int_col};

pub struct ServiceAccount;

impl Kind for ServiceAccount {
    fn columns(&self) -> Vec<Column> {
        vec![NAME, int_col("Secrets", 0), AGE]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![json!(crate::meta::name(obj)), json!(arr(obj, "/secrets").len()), age(obj)]
    }
}
