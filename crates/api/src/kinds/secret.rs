//! Secrets: stringData merged into data (base64) and never stored, type Opaque by default and
//! immutable, the type field selector and the printer.

use base64::Engine;
use serde_json::{Map, Value, json};

use super::Kind;
use crate::errors::FieldError;
use crate::kinds::configmap::validate_data;
use crate::meta::default_field;
use crate::printers::{AGE, Column, NAME, age, col, int_col, s};

pub struct Secret;

impl Kind for Secret {
    /// `stringData` is merged into `data` (base64) and never stored.
    fn normalize(&self, obj: &mut Value, _create: bool) {
        let Some(m) = obj.as_object_mut() else { return };
        if let Some(Value::Object(sd)) = m.remove("stringData") {
            let data = m.entry("data").or_insert_with(|| Value::Object(Map::new()));
            if !data.is_object() {
                *data = Value::Object(Map::new());
            }
            let data = data.as_object_mut().unwrap();
            for (k, v) in sd {
                if let Some(s) = v.as_str() {
                    data.insert(k, json!(base64::engine::general_purpose::STANDARD.encode(s)));
                }
            }
        }
    }

    fn default(&self, obj: &mut Value) {
        if let Some(m) = obj.as_object_mut() {
            default_field(m, "type", json!("Opaque"));
        }
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
        validate_data(obj, old, errs);
        // ValidateSecret: the keys each type requires.
        let required: &[&str] = match obj.get("type").and_then(Value::as_str).unwrap_or("Opaque") {
            "kubernetes.io/tls" => &["tls.crt", "tls.key"],
            "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
            "kubernetes.io/dockercfg" => &[".dockercfg"],
            "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
            _ => &[],
        };
        for k in required {
            if obj.pointer(&format!("/data/{k}")).is_none() {
                errs.push(FieldError::required(format!("data[{k}]"), ""));
            }
        }
        if let Some(old) = old
            && old.get("type") != obj.get("type")
        {
            errs.push(FieldError::invalid("type", obj.get("type").unwrap_or(&Value::Null), "field is immutable"));
        }
    }

    fn field_attrs(&self, obj: &Value, add: &mut dyn FnMut(&str, String)) {
        add("type", s(obj, "/type"));
    }

    fn columns(&self) -> Vec<Column> {
        vec![NAME, col("Type", 0), int_col("Data", 0), AGE]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let n = obj.get("data").and_then(Value::as_object).map(|m| m.len()).unwrap_or(0);
        vec![json!(crate::meta::name(obj)), json!(s(obj, "/type")), json!(n), age(obj)]
    }
}
