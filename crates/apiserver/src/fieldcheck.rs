//! Type checking and unknown-field detection of built-in objects against their schemas (the
//! k8s-openapi types' schemas), as upstream's strict decoder does on every write path: a value
//! of the wrong JSON type is an error worded like Go's `json: cannot unmarshal ...`, and fields
//! the type does not declare are reported (path as upstream prints it, `spec.template.spec.
//! containers[0].bogus`) so the caller can reject them (Strict) or drop them (Warn, Ignore).

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{Map, Value};

struct Schemas {
    defs: Map<String, Value>,
    /// (group, version, kind) -> definition name of the kind's root schema.
    roots: HashMap<(String, String, String), String>,
}

fn schemas() -> &'static Schemas {
    static S: OnceLock<Schemas> = OnceLock::new();
    S.get_or_init(|| {
        let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
        let mut roots = HashMap::new();
        for r in r8s_api::resources::builtin_resources() {
            if let Some(name) = crate::typed::schema_for(&mut generator, &r) {
                roots.insert((r.group.clone(), r.version.clone(), r.kind.clone()), name);
            }
        }
        let defs = generator.take_definitions(true);
        Schemas { defs, roots }
    })
}

/// What checking an object found.
#[derive(Debug, Default, PartialEq)]
pub struct Findings {
    /// Paths of fields the schema does not declare (already removed from the object).
    pub unknown: Vec<String>,
    /// The first wrongly-typed value, as Go's decoder words it.
    pub type_error: Option<String>,
    /// The same value as upstream's unstructured converter (`FromUnstructured`, which a
    /// strategic merge patch's result goes through) words it: `cannot restore map from string`.
    pub unstructured_error: Option<String>,
}

/// Checks `obj` (a built-in kind in `group/version`) and removes the unknown fields it finds.
/// Kinds without a schema are left alone.
pub fn check(group: &str, version: &str, kind: &str, obj: &mut Value) -> Findings {
    let s = schemas();
    let mut findings = Findings::default();
    let Some(root) = s.roots.get(&(group.to_string(), version.to_string(), kind.to_string())) else {
        return findings;
    };
    let mut walk = Walk { defs: &s.defs, path: String::new(), go_fields: Vec::new(), go_struct: String::new(), findings: &mut findings };
    walk.def(obj, root);
    findings
}

struct Walk<'a> {
    defs: &'a Map<String, Value>,
    /// Upstream's field path (`spec.containers[0].name`).
    path: String,
    /// Go's error context: the JSON field names from the root and the innermost struct.
    go_fields: Vec<String>,
    go_struct: String,
    findings: &'a mut Findings,
}

/// The definition a property schema refers to (`$ref` or `allOf: [{$ref}]`).
fn ref_name(schema: &Value) -> Option<&str> {
    let r = schema.get("$ref").or_else(|| schema.get("allOf")?.get(0)?.get("$ref"))?;
    r.as_str()?.rsplit('/').next()
}

fn short(def: &str) -> &str {
    def.rsplit('.').next().unwrap_or(def)
}

/// The Go type upstream names in its decoding errors (`int32`, `[]v1.Container`, ...).
fn go_type(defs: &Map<String, Value>, schema: &Value) -> String {
    if let Some(name) = ref_name(schema) {
        let mut parts = name.rsplitn(3, '.');
        let ty = parts.next().unwrap_or(name);
        let pkg = parts.next().unwrap_or("");
        return match defs.get(name) {
            Some(d)
                if d.get("type").is_some()
                    && d.get("properties").is_none()
                    && d.get("x-kubernetes-int-or-string").is_none()
                    && ty != "Time"
                    && ty != "MicroTime" =>
            {
                go_type(defs, d)
            }
            _ => format!("{pkg}.{ty}"),
        };
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("integer") => schema.get("format").and_then(Value::as_str).unwrap_or("int64").to_string(),
        Some("number") => "float64".into(),
        Some("boolean") => "bool".into(),
        Some("string") => "string".into(),
        Some("array") => format!("[]{}", schema.get("items").map(|i| go_type(defs, i)).unwrap_or_else(|| "interface {}".into())),
        Some("object") => match schema.get("additionalProperties") {
            Some(a) if a.is_object() => format!("map[string]{}", go_type(defs, a)),
            _ => "map[string]interface {}".into(),
        },
        _ => "interface {}".into(),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "bool",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
        Value::Null => "null",
    }
}

impl Walk<'_> {
    fn def(&mut self, v: &mut Value, name: &str) {
        let Some(schema) = self.defs.get(name) else {
            return;
        };
        let outer = std::mem::replace(&mut self.go_struct, short(name).to_string());
        self.schema(v, schema);
        self.go_struct = outer;
    }

    fn mismatch(&mut self, v: &Value, schema: &Value, value_desc: Option<String>) {
        if self.findings.type_error.is_some() {
            return;
        }
        self.findings.unstructured_error = Some(self.unstructured_wording(v, schema));
        let what = value_desc.unwrap_or_else(|| json_kind(v).to_string());
        let ty = go_type(self.defs, schema);
        self.findings.type_error = Some(if self.go_fields.is_empty() {
            format!("json: cannot unmarshal {what} into Go value of type {ty}")
        } else {
            format!("json: cannot unmarshal {what} into Go struct field {}.{} of type {ty}", self.go_struct, self.go_fields.join("."))
        });
    }

    fn schema(&mut self, v: &mut Value, schema: &Value) {
        if v.is_null() {
            return;
        }
        if let Some(name) = ref_name(schema) {
            let name = name.to_string();
            // A reference's own type errors name the referring property's type.
            if let Some(d) = self.defs.get(&name)
                && !self.compatible(v, d)
            {
                self.mismatch(v, schema, None);
                return;
            }
            return self.def(v, &name);
        }
        if !self.compatible(v, schema) {
            let desc = match (&*v, schema.get("type").and_then(Value::as_str)) {
                (Value::Number(n), Some("integer")) => Some(format!("number {n}")),
                _ => None,
            };
            self.mismatch(v, schema, desc);
            return;
        }
        match v {
            Value::Object(m) => {
                if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                    let keys: Vec<String> = m.keys().cloned().collect();
                    for k in keys {
                        let len = self.path.len();
                        if !self.path.is_empty() {
                            self.path.push('.');
                        }
                        self.path.push_str(&k);
                        match props.get(&k) {
                            Some(ps) => {
                                self.go_fields.push(k.clone());
                                self.schema(m.get_mut(&k).unwrap(), ps);
                                self.go_fields.pop();
                            }
                            None => {
                                m.remove(&k);
                                self.findings.unknown.push(self.path.clone());
                            }
                        }
                        self.path.truncate(len);
                    }
                } else if let Some(a) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                    for (k, item) in m.iter_mut() {
                        let len = self.path.len();
                        self.path.push_str(&format!("[{k}]"));
                        self.schema(item, a);
                        self.path.truncate(len);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(is) = schema.get("items") {
                    for (i, item) in items.iter_mut().enumerate() {
                        let len = self.path.len();
                        self.path.push_str(&format!("[{i}]"));
                        self.schema(item, is);
                        self.path.truncate(len);
                    }
                }
            }
            _ => {}
        }
    }

    /// runtime.DefaultUnstructuredConverter's error for a value of the wrong shape: maps,
    /// slices and structs cannot be restored from another kind; simple types cannot be
    /// converted.
    fn unstructured_wording(&self, v: &Value, schema: &Value) -> String {
        // Go's reflect kind and type of a decoded JSON value.
        let (kind, ty) = match v {
            Value::String(_) => ("string", "string"),
            Value::Bool(_) => ("bool", "bool"),
            Value::Number(n) if n.is_i64() || n.is_u64() => ("int64", "int64"),
            Value::Number(_) => ("float64", "float64"),
            Value::Array(_) => ("slice", "[]interface {}"),
            Value::Object(_) => ("map", "map[string]interface {}"),
            Value::Null => ("ptr", "<nil>"),
        };
        let target = ref_name(schema).and_then(|n| self.defs.get(n)).unwrap_or(schema);
        match target.get("type").and_then(Value::as_str) {
            Some("object") if target.get("properties").is_some() => format!("cannot restore struct from: {kind}"),
            Some("object") => format!("cannot restore map from {kind}"),
            Some("array") => format!("cannot restore slice from {kind}"),
            _ => {
                // Simple types: Go converts integers to numbers (and an integral float to an
                // integer) and integers to strings, but a conversion JSON does not allow is
                // refused; a value Go cannot convert at all falls through to the kind switch.
                let target = go_type(self.defs, schema);
                let numeric = |t: &str| t.starts_with("int") || t.starts_with("uint") || t.starts_with("float");
                let convertible = match kind {
                    "int64" => numeric(&target) || target == "string",
                    "float64" => numeric(&target),
                    "string" => target == "string",
                    "bool" => target == "bool",
                    _ => false,
                };
                if convertible { format!("cannot convert {ty} to {target}") } else { format!("unrecognized type: {target}") }
            }
        }
    }

    /// Whether a JSON value can decode as the schema's type.
    fn compatible(&self, v: &Value, schema: &Value) -> bool {
        if v.is_null() {
            return true;
        }
        if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
            return v.is_string() || v.is_number();
        }
        match schema.get("type").and_then(Value::as_str) {
            // A free-form object (apiextensions JSON, RawExtension) holds any value.
            Some("object") => v.is_object() || (schema.get("properties").is_none() && schema.get("additionalProperties").is_none()),
            Some("array") => v.is_array(),
            Some("string") => v.is_string(),
            Some("boolean") => v.is_boolean(),
            Some("number") => v.is_number(),
            Some("integer") => match v.as_i64() {
                Some(n) if schema.get("format").and_then(Value::as_str) == Some("int32") => i32::try_from(n).is_ok(),
                Some(_) => true,
                None => false,
            },
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wrong_types_are_worded_like_go() {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": "three"}});
        let f = check("apps", "v1", "Deployment", &mut d);
        assert_eq!(f.type_error.as_deref(), Some("json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32"));
        let mut cm = json!({"data": {"a": "1"}, "metadata": {"labels": {"x": true}}});
        let f = check("", "v1", "ConfigMap", &mut cm);
        assert_eq!(f.type_error.as_deref(), Some("json: cannot unmarshal bool into Go struct field ObjectMeta.metadata.labels of type string"));
        let mut p = json!({"spec": {"containers": {"name": "c"}}});
        let f = check("", "v1", "Pod", &mut p);
        assert_eq!(f.type_error.as_deref(), Some("json: cannot unmarshal object into Go struct field PodSpec.spec.containers of type []v1.Container"));
        let mut p = json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 1.5}]}]}});
        let f = check("", "v1", "Pod", &mut p);
        assert_eq!(
            f.type_error.as_deref(),
            Some("json: cannot unmarshal number 1.5 into Go struct field ContainerPort.spec.containers.ports.containerPort of type int32")
        );
    }

    #[test]
    fn unknown_fields_are_listed_and_removed() {
        let mut d = json!({"spec": {"bogusField": 1, "replicas": 2, "template": {"spec": {"containers": [{"name": "c", "imagee": "x"}]}}}, "extra": {}});
        let f = check("apps", "v1", "Deployment", &mut d);
        assert_eq!(f.type_error, None);
        assert_eq!(f.unknown, vec!["spec.bogusField", "spec.template.spec.containers[0].imagee", "extra"]);
        assert_eq!(d, json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c"}]}}}}));
    }

    #[test]
    fn free_form_json_takes_anything() {
        let mut crd = json!({"spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": {"type": "object", "properties": {"size": {"type": "integer", "default": 3}}}}}]}});
        assert_eq!(check("apiextensions.k8s.io", "v1", "CustomResourceDefinition", &mut crd), Findings::default());
    }

    #[test]
    fn quantities_and_int_or_string_take_both() {
        let mut p = json!({"spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": 1, "memory": "1Gi"}}, "ports": [{"containerPort": 80}],
            "readinessProbe": {"httpGet": {"port": "http"}}}]}, "metadata": {"creationTimestamp": null}});
        assert_eq!(check("", "v1", "Pod", &mut p), Findings::default());
    }
}
