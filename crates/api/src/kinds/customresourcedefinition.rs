//! CustomResourceDefinitions: names accepted and Established on create, validation.

use serde_json::{Value, json};

use super::Kind;
use crate::errors::FieldError;

pub struct CustomResourceDefinition;

impl Kind for CustomResourceDefinition {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn normalize(&self, obj: &mut Value, create: bool) {
        if create {
            accept(obj);
        }
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>, errs: &mut Vec<FieldError>) {
        validate_crd(obj, errs)
    }
}

/// Marks a new CRD's names accepted and the CRD established (what upstream's CRD controllers
/// report once the API is served, which here happens synchronously on write).
fn accept(crd: &mut Value) {
    let names = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let mut accepted = names.clone();
    if let Some(m) = accepted.as_object_mut() {
        if !m.contains_key("singular") {
            let kind = m.get("kind").and_then(Value::as_str).unwrap_or("").to_lowercase();
            m.insert("singular".into(), json!(kind));
        }
        if !m.contains_key("listKind") {
            let kind = m.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
            m.insert("listKind".into(), json!(format!("{kind}List")));
        }
    }
    if let Some(spec_names) = crd.pointer_mut("/spec/names") {
        *spec_names = accepted.clone();
    }
    let storage: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.get("storage") == Some(&json!(true)))
        .filter_map(|v| v.get("name").cloned())
        .collect();
    let now = crate::meta::now_rfc3339();
    crd["status"] = json!({
        "acceptedNames": accepted,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now, "reason": "NoConflicts", "message": "no conflicts found"},
            {"type": "Established", "status": "True", "lastTransitionTime": now, "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"}
        ],
        "storedVersions": storage,
    });
    if let Some(spec) = crd.get_mut("spec").and_then(Value::as_object_mut) {
        spec.entry("conversion").or_insert(json!({"strategy": "None"}));
    }
}

fn validate_crd(obj: &Value, errs: &mut Vec<FieldError>) {
    let group = obj.pointer("/spec/group").and_then(Value::as_str).unwrap_or("");
    let plural = obj.pointer("/spec/names/plural").and_then(Value::as_str).unwrap_or("");
    let name = crate::meta::name(obj);
    if group.is_empty() {
        errs.push(FieldError::required("spec.group", ""));
    }
    if plural.is_empty() {
        errs.push(FieldError::required("spec.names.plural", ""));
    }
    if obj.pointer("/spec/names/kind").and_then(Value::as_str).is_none_or(str::is_empty) {
        errs.push(FieldError::required("spec.names.kind", ""));
    }
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        errs.push(FieldError::invalid("metadata.name", &json!(name), "must be spec.names.plural+\".\"+spec.group"));
    }
    match obj.pointer("/spec/scope").and_then(Value::as_str) {
        Some("Namespaced") | Some("Cluster") => {}
        other => errs.push(FieldError::not_supported("spec.scope", &json!(other.unwrap_or("")), &["Cluster", "Namespaced"])),
    }
    let versions = obj.pointer("/spec/versions").and_then(Value::as_array).cloned().unwrap_or_default();
    if versions.is_empty() {
        errs.push(FieldError::invalid("spec.versions", &json!([]), "must have exactly one version marked as storage version"));
    } else if versions.iter().filter(|v| v.get("storage") == Some(&json!(true))).count() != 1 {
        errs.push(FieldError::invalid("spec.versions", &Value::Null, "must have exactly one version marked as storage version"));
    }
}
