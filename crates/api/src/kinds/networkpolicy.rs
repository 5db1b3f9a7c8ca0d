//! NetworkPolicies: policyTypes default and the printer.

use serde_json::{Value, json};

use super::Kind;
use crate::meta::{default_field, obj_mut};
use crate::printers::{AGE, Column, NAME, age, col, label_selector_string};

pub struct NetworkPolicy;

impl Kind for NetworkPolicy {
    fn tracks_generation(&self) -> bool {
        true
    }

    /// SetDefaults_NetworkPolicy: policyTypes is Ingress, plus Egress when there are egress
    /// rules; ports default to TCP.
    fn default(&self, obj: &mut Value) {
        let spec = obj_mut(obj, &["spec"]);
        let has_egress = spec.get("egress").and_then(Value::as_array).is_some_and(|e| !e.is_empty());
        default_field(spec, "policyTypes", if has_egress { json!(["Ingress", "Egress"]) } else { json!(["Ingress"]) });
        for dir in ["ingress", "egress"] {
            for rule in spec.get_mut(dir).and_then(Value::as_array_mut).into_iter().flatten() {
                for p in rule.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
                    if let Some(m) = p.as_object_mut() {
                        default_field(m, "protocol", json!("TCP"));
                    }
                }
            }
        }
    }

    fn columns(&self) -> Vec<Column> {
        vec![NAME, col("Pod-Selector", 0), AGE]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![json!(crate::meta::name(obj)), json!(label_selector_string(obj.pointer("/spec/podSelector"))), age(obj)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_types_follow_the_rules() {
        let mut np = json!({"spec": {"podSelector": {}, "egress": [{"ports": [{"port": 53}]}]}});
        NetworkPolicy.default(&mut np);
        assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(np["spec"]["egress"][0]["ports"][0]["protocol"], json!("TCP"));
        let mut np = json!({"spec": {"podSelector": {}}});
        NetworkPolicy.default(&mut np);
        assert_eq!(np["spec"]["policyTypes"], json!(["Ingress"]));
    }
}
