//! ConfigMaps: key validation, immutability and the printer (DATA counts both maps).

use serde_json::{Value, json};

use super::Kind;
use crate::errors::FieldError;
use crate::printers::{AGE, Column, NAME, age, int_col};

pub struct ConfigMap;

impl Kind for ConfigMap {
    fn validate(&self, obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
        validate_data(obj, old, errs)
    }

    fn columns(&self) -> Vec<Column> {
        vec![NAME, int_col("Data", 0), AGE]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let n = obj.get("data").and_then(Value::as_object).map(|m| m.len()).unwrap_or(0)
            + obj.get("binaryData").and_then(Value::as_object).map(|m| m.len()).unwrap_or(0);
        vec![json!(crate::meta::name(obj)), json!(n), age(obj)]
    }
}

/// Keys of data/binaryData, and data that may not change once `immutable` is set (ConfigMaps
/// and Secrets).
pub(crate) fn validate_data(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    for field in ["data", "binaryData"] {
        if let Some(m) = obj.get(field).and_then(Value::as_object) {
            for k in m.keys() {
                if !valid_config_key(k) {
                    errs.push(FieldError::invalid(
                        format!("{field}[{k}]"),
                        &json!(k),
                        "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                    ));
                }
            }
        }
    }
    if let Some(old) = old
        && old.get("immutable") == Some(&json!(true))
        && (old.get("data") != obj.get("data") || old.get("binaryData") != obj.get("binaryData"))
    {
        errs.push(FieldError::forbidden("data", "field is immutable when `immutable` is set"));
    }
}

pub(crate) fn valid_config_key(k: &str) -> bool {
    !k.is_empty() && k.len() <= 253 && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') && k != "." && k != ".."
}
