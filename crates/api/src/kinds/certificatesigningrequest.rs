//! CertificateSigningRequests: the spec.signerName field selector and the printer.

use serde_json::{Value, json};

use super::Kind;
use crate::printers::{AGE, Column, NAME, age, arr, col, human_duration, s};

pub struct CertificateSigningRequest;

impl Kind for CertificateSigningRequest {
    fn field_attrs(&self, obj: &Value, add: &mut dyn FnMut(&str, String)) {
        add("spec.signerName", s(obj, "/spec/signerName"));
    }

    fn columns(&self) -> Vec<Column> {
        vec![NAME, AGE, col("SignerName", 0), col("Requestor", 0), col("RequestedDuration", 0), col("Condition", 0)]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let mut conds: Vec<String> = arr(obj, "/status/conditions").iter().map(|c| s(c, "/type")).collect();
        if !arr(obj, "/status/certificate").is_empty() || obj.pointer("/status/certificate").is_some() {
            conds.push("Issued".into());
        }
        let dur = obj
            .pointer("/spec/expirationSeconds")
            .and_then(Value::as_i64)
            .map(|sec| human_duration(chrono::Duration::seconds(sec)))
            .unwrap_or_else(|| "<none>".into());
        vec![
            json!(crate::meta::name(obj)),
            age(obj),
            json!(s(obj, "/spec/signerName")),
            json!(s(obj, "/spec/username")),
            json!(dur),
            json!(if conds.is_empty() { "Pending".into() } else { conds.join(",") }),
        ]
    }
}
