//! Namespaces: the name label and Active phase on create, the "kubernetes" finalizer, deletion
//! that waits for the namespace controller (Terminating), and the protected system namespaces.

use serde_json::{Value, json};

use super::Kind;
use crate::meta::{default_field, obj_mut};
use crate::printers::{AGE, Column, NAME, age, col, s};
use crate::validation::NameRule;

pub struct Namespace;

impl Kind for Namespace {
    fn name_rule(&self) -> NameRule {
        NameRule::Label
    }

    fn initial_status(&self, _obj: &Value) -> Option<Value> {
        Some(json!({"phase": "Active"}))
    }

    fn prepare_create(&self, obj: &mut Value) {
        let name = crate::meta::name(obj).to_string();
        let md = crate::meta::metadata_mut(obj);
        let labels = md.entry("labels").or_insert_with(|| json!({}));
        if let Some(l) = labels.as_object_mut() {
            l.insert("kubernetes.io/metadata.name".into(), json!(name));
        }
    }

    fn default(&self, obj: &mut Value) {
        default_field(obj_mut(obj, &["spec"]), "finalizers", json!(["kubernetes"]));
    }

    fn field_attrs(&self, obj: &Value, add: &mut dyn FnMut(&str, String)) {
        add("status.phase", s(obj, "/status/phase"));
    }

    fn columns(&self) -> Vec<Column> {
        vec![NAME, col("Status", 0), AGE]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![json!(crate::meta::name(obj)), json!(s(obj, "/status/phase")), age(obj)]
    }

    fn protected(&self, name: &str) -> Option<String> {
        ["default", "kube-system", "kube-public"].contains(&name).then(|| format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted"))
    }

    fn deletion_waits(&self) -> bool {
        true
    }

    fn mark_deleting(&self, obj: &mut Value) {
        obj["status"]["phase"] = json!("Terminating");
    }

    /// A namespace goes only once the namespace controller has emptied it and removed its
    /// spec finalizer ("kubernetes").
    fn may_remove(&self, _current: &Value, obj: &Value) -> bool {
        obj.pointer("/spec/finalizers").and_then(Value::as_array).is_none_or(|f| f.is_empty())
    }
}
