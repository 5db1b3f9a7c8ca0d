//! RBAC: Roles and ClusterRoles, RoleBindings and ClusterRoleBindings (path-segment names,
//! create-on-update, subject apiGroup defaults, the binding printer).

use serde_json::{Value, json};

use super::Kind;
use crate::errors::FieldError;
use crate::meta::default_field;
use crate::printers::{AGE, Column, NAME, age, arr, col, s};
use crate::validation::NameRule;

/// Role and ClusterRole.
pub struct Role;

impl Kind for Role {
    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }

    /// ValidatePolicyRule: every rule names verbs.
    fn validate(&self, obj: &Value, _old: Option<&Value>, errs: &mut Vec<FieldError>) {
        for (i, rule) in arr(obj, "/rules").iter().enumerate() {
            if rule.get("verbs").and_then(Value::as_array).is_none_or(|v| v.is_empty()) {
                errs.push(FieldError::required(format!("rules[{i}].verbs"), "verbs must contain at least one value"));
            }
        }
    }

    fn allow_create_on_update(&self) -> bool {
        true
    }
}

/// RoleBinding and ClusterRoleBinding.
pub struct RoleBinding;

impl Kind for RoleBinding {
    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }

    fn allow_create_on_update(&self) -> bool {
        true
    }

    /// ValidateRoleBinding: a role reference of a supported kind; it never changes.
    fn validate(&self, obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
        let kind = s(obj, "/roleRef/kind");
        if kind != "Role" && kind != "ClusterRole" {
            errs.push(FieldError::not_supported("roleRef.kind", &json!(kind), &["ClusterRole", "Role"]));
        }
        if s(obj, "/roleRef/name").is_empty() {
            errs.push(FieldError::required("roleRef.name", ""));
        }
        if let Some(old) = old
            && old.get("roleRef") != obj.get("roleRef")
        {
            errs.push(FieldError::invalid("roleRef", obj.get("roleRef").unwrap_or(&Value::Null), "cannot change roleRef"));
        }
    }

    fn default(&self, obj: &mut Value) {
        for s in obj.get_mut("subjects").and_then(Value::as_array_mut).into_iter().flatten() {
            let kind = s.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
            if let Some(m) = s.as_object_mut()
                && (kind == "User" || kind == "Group")
            {
                default_field(m, "apiGroup", json!("rbac.authorization.k8s.io"));
            }
        }
    }

    fn columns(&self) -> Vec<Column> {
        vec![NAME, col("Role", 0), AGE, col("Users", 1), col("Groups", 1), col("ServiceAccounts", 1)]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let subj = |k: &str| -> String {
            arr(obj, "/subjects")
                .iter()
                .filter(|x| s(x, "/kind") == k)
                .map(|x| if k == "ServiceAccount" { format!("{}/{}", s(x, "/namespace"), s(x, "/name")) } else { s(x, "/name") })
                .collect::<Vec<_>>()
                .join(", ")
        };
        vec![
            json!(crate::meta::name(obj)),
            json!(format!("{}/{}", s(obj, "/roleRef/kind"), s(obj, "/roleRef/name"))),
            age(obj),
            json!(subj("User")),
            json!(subj("Group")),
            json!(subj("ServiceAccount")),
        ]
    }
}
