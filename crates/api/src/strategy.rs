//! The registry's view of a resource's behaviour: the generic rules plus its kind module's
//! (`kinds/`), and the metadata validation every kind shares. Objects are JSON values in the
//! resource's storage version.

use serde_json::{Value, json};

use crate::errors::FieldError;
use crate::kinds::Kind;
use crate::meta::{get, get_str};
use crate::resources::{ResourceInfo, Subresource};
use crate::validation::{NameRule, validate_dns1123_label, validate_label_value, validate_qualified_name};

pub use crate::kinds::podspec::{default_pull_policy, qos_class, selector_matches, set_default_toleration_seconds};

/// The strategy of one resource: the generic rules (status reset on create, generation,
/// metadata field selectors) around what its kind module (`kinds/`) does.
pub struct Strategy<'a> {
    pub info: &'a ResourceInfo,
}

pub fn strategy(info: &ResourceInfo) -> Strategy<'_> {
    Strategy { info }
}

impl Strategy<'_> {
    pub fn kind(&self) -> &'static dyn Kind {
        self.info.behavior.kind
    }

    pub fn name_rule(&self) -> NameRule {
        self.kind().name_rule()
    }

    /// Whether metadata.generation is kept and bumped on spec changes.
    pub fn tracks_generation(&self) -> bool {
        self.kind().tracks_generation()
    }

    /// Upstream's PrepareForCreate: status starts over (kinds with a status subresource),
    /// generation 1, and what the kind adds.
    pub fn prepare_create(&self, obj: &mut Value) {
        if (self.info.has(Subresource::Status) || self.info.custom)
            && let Some(status) = self.kind().initial_status(obj)
            && let Some(m) = obj.as_object_mut()
        {
            m.insert("status".into(), status);
        }
        if self.tracks_generation() {
            crate::meta::metadata_mut(obj).insert("generation".into(), json!(1));
        }
        self.kind().prepare_create(obj);
    }

    /// Defaults applied on create and update (upstream's SetDefaults_*).
    pub fn default(&self, obj: &mut Value) {
        self.kind().default(obj)
    }

    /// Kind-specific validation. Name and metadata checks are done by the registry.
    pub fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        self.kind().validate(obj, old, &mut errs);
        errs
    }

    /// The field selector values of an object: metadata.name and metadata.namespace, then the
    /// kind's.
    pub fn field_attrs(&self, obj: &Value) -> Vec<(String, String)> {
        let mut out = vec![
            ("metadata.name".to_string(), crate::meta::name(obj).to_string()),
            ("metadata.namespace".to_string(), crate::meta::namespace(obj).unwrap_or("").to_string()),
        ];
        self.kind().field_attrs(obj, &mut |k, v| out.push((k.to_string(), v)));
        out
    }

    pub fn supports_field(&self, field: &str) -> bool {
        if field == "metadata.name" || field == "metadata.namespace" || self.kind().extra_field_selectors().contains(&field) {
            return true;
        }
        // The supported set is exactly the attributes this kind extracts.
        self.field_attrs(&json!({})).iter().any(|(f, _)| f == field)
    }
}

/// A JSON value as a field-selector value (strings bare, others as JSON).
pub fn value_as_field(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Validates metadata common to every object: name syntax, labels and annotations.
pub fn validate_object_meta(obj: &Value, rule: NameRule, namespaced: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = crate::meta::name(obj);
    let generate = get_str(obj, &["metadata", "generateName"]).unwrap_or("");
    if name.is_empty() && generate.is_empty() {
        errs.push(FieldError::required("metadata.name", "name or generateName is required"));
    } else if !name.is_empty()
        && let Err(msgs) = crate::validation::validate_name(rule, name)
    {
        for m in msgs {
            errs.push(FieldError::invalid("metadata.name", &json!(name), m));
        }
    }
    if namespaced
        && let Some(ns) = crate::meta::namespace(obj)
        && let Err(msgs) = validate_dns1123_label(ns)
    {
        for m in msgs {
            errs.push(FieldError::invalid("metadata.namespace", &json!(ns), m));
        }
    }
    if let Some(labels) = get(obj, &["metadata", "labels"]).and_then(Value::as_object) {
        for (k, v) in labels {
            if let Err(msgs) = validate_qualified_name(k) {
                for m in msgs {
                    errs.push(FieldError::invalid("metadata.labels", &json!(k), m));
                }
            }
            match v.as_str() {
                Some(s) => {
                    if let Err(msgs) = validate_label_value(s) {
                        for m in msgs {
                            errs.push(FieldError::invalid("metadata.labels".to_string(), &json!(s), m));
                        }
                    }
                }
                None => errs.push(FieldError::invalid("metadata.labels", v, "label values must be strings")),
            }
        }
    }
    if let Some(ann) = get(obj, &["metadata", "annotations"]).and_then(Value::as_object) {
        let mut total = 0;
        for (k, v) in ann {
            total += k.len() + v.as_str().map(str::len).unwrap_or(0);
            if let Err(msgs) = validate_qualified_name(k) {
                for m in msgs {
                    errs.push(FieldError::invalid("metadata.annotations", &json!(k), m));
                }
            }
        }
        if total > 256 * 1024 {
            errs.push(FieldError {
                kind: crate::errors::FieldErrorKind::TooLong,
                field: "metadata.annotations".into(),
                value: None,
                detail: "may not be more than 262144 bytes".into(),
            });
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::builtin_resources;

    fn info(plural: &str) -> ResourceInfo {
        builtin_resources().into_iter().find(|r| r.plural == plural).unwrap()
    }

    #[test]
    fn deployment_defaults_match_upstream() {
        let i = info("deployments");
        let mut d = json!({"spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "nginx", "image": "nginx:1.21.1", "ports": [{"containerPort": 80}]}]}}}});
        strategy(&i).default(&mut d);
        assert_eq!(d["spec"]["strategy"], json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}));
        assert_eq!(d["spec"]["revisionHistoryLimit"], json!(10));
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["imagePullPolicy"], json!("IfNotPresent"));
        assert_eq!(c["ports"][0]["protocol"], json!("TCP"));
        assert!(strategy(&i).validate(&d, None).is_empty());
    }

    #[test]
    fn pull_policy() {
        assert_eq!(default_pull_policy("busybox"), "Always");
        assert_eq!(default_pull_policy("busybox:latest"), "Always");
        assert_eq!(default_pull_policy("localhost:5000/busybox"), "Always");
        assert_eq!(default_pull_policy("nginx:1.21.1"), "IfNotPresent");
    }

    #[test]
    fn selector_mismatch_is_invalid() {
        let i = info("deployments");
        let d = json!({"spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}});
        let errs = strategy(&i).validate(&d, None);
        assert_eq!(
            errs[0].message(),
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"b\"}: `selector` does not match template `labels`"
        );
    }

    #[test]
    fn pod_defaults_from_set_defaults() {
        let i = info("pods");
        let mut p = json!({"spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "x:1",
            "ports": [{"containerPort": 8080}],
            "resources": {"limits": {"cpu": "1"}},
            "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}],
            "volumes": [{"name": "scratch"}, {"name": "info", "downwardAPI": {"items": [{"path": "n", "fieldRef": {"fieldPath": "metadata.name"}}]}}]}});
        strategy(&i).default(&mut p);
        let c = &p["spec"]["containers"][0];
        assert_eq!(c["env"][0]["valueFrom"]["fieldRef"], json!({"fieldPath": "metadata.name", "apiVersion": "v1"}));
        assert_eq!(c["resources"]["requests"], json!({"cpu": "1"}));
        assert_eq!(c["ports"][0]["hostPort"], json!(8080));
        assert_eq!(p["spec"]["volumes"][0], json!({"name": "scratch", "emptyDir": {}}));
        assert_eq!(p["spec"]["volumes"][1]["downwardAPI"]["items"][0]["fieldRef"]["apiVersion"], json!("v1"));
    }

    #[test]
    fn limit_range_defaults() {
        let i = info("limitranges");
        let mut lr = json!({"spec": {"limits": [{"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "1Mi"}}]}});
        strategy(&i).default(&mut lr);
        assert_eq!(lr["spec"]["limits"][0]["default"], json!({"cpu": "2"}));
        assert_eq!(lr["spec"]["limits"][0]["defaultRequest"], json!({"cpu": "2", "memory": "1Mi"}));
    }
}
