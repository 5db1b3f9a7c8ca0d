//! CustomResourceDefinitions: turning a CRD into served resources, and the structural-schema
//! work on custom resources (pruning unknown fields, defaulting, validation).

use r8s_api::errors::FieldError;
use r8s_api::resources::{ALL_VERBS, ResourceInfo, Subresource};
use serde_json::{Map, Value, json};

/// The served resources a CRD defines, each with its schema.
pub fn resources(crd: &Value) -> Vec<(ResourceInfo, Option<Value>)> {
    let group = crd.pointer("/spec/group").and_then(Value::as_str).unwrap_or("").to_string();
    let names = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let kind = names.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
    let plural = names.get("plural").and_then(Value::as_str).unwrap_or("").to_string();
    let singular = names.get("singular").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| kind.to_lowercase());
    let short: Vec<String> = names.get("shortNames").and_then(Value::as_array).into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect();
    let categories: Vec<String> =
        names.get("categories").and_then(Value::as_array).into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect();
    let namespaced = crd.pointer("/spec/scope").and_then(Value::as_str) != Some("Cluster");
    let versions = crd.pointer("/spec/versions").and_then(Value::as_array).cloned().unwrap_or_default();
    let storage =
        versions.iter().find(|v| v.get("storage") == Some(&json!(true))).and_then(|v| v.get("name")).and_then(Value::as_str).unwrap_or("v1").to_string();
    let mut served: Vec<&Value> = versions.iter().filter(|v| v.get("served") != Some(&json!(false))).collect();
    served.sort_by_key(|v| std::cmp::Reverse(crate::discovery::version_priority(v.get("name").and_then(Value::as_str).unwrap_or(""))));
    served
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let version = v.get("name").and_then(Value::as_str).unwrap_or("").to_string();
            let mut subs = Vec::new();
            if v.pointer("/subresources/status").is_some() {
                subs.push(Subresource::Status);
            }
            if v.pointer("/subresources/scale").is_some() {
                subs.push(Subresource::Scale);
            }
            let info = ResourceInfo {
                group: group.clone(),
                version: version.clone(),
                kind: kind.clone(),
                plural: plural.clone(),
                singular: singular.clone(),
                short_names: short.clone(),
                namespaced,
                verbs: ALL_VERBS.iter().map(|s| s.to_string()).collect(),
                categories: categories.clone(),
                subresources: subs,
                // Versions of a CRD share storage (conversion strategy None: only apiVersion changes).
                storage_version: format!("{group}/{version}"),
                storage_resource: format!("{group}/{plural}"),
                preferred: i == 0,
                custom: true,
                behavior: r8s_api::kinds::Behavior::CUSTOM,
            };
            let _ = &storage;
            (info, v.pointer("/schema/openAPIV3Schema").cloned())
        })
        .collect()
}

/// The printer columns a CRD version declares (additionalPrinterColumns).
pub fn printer_columns(crd: &Value, version: &str) -> Vec<Value> {
    crd.pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(version))
        .and_then(|v| v.get("additionalPrinterColumns"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn preserves_unknown(schema: &Value) -> bool {
    schema.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true))
}

/// Drops fields the schema does not declare, listing their paths (`spec.bogus`,
/// `spec.items[0].x`) for field validation. apiVersion, kind and metadata at the root are the
/// API's, never pruned here.
pub fn prune_reporting(obj: &mut Value, schema: &Value, pruned: &mut Vec<String>) {
    fn walk(obj: &mut Value, schema: &Value, path: &mut String, root: bool, pruned: &mut Vec<String>) {
        if preserves_unknown(schema) && schema.get("properties").is_none() {
            return;
        }
        match obj {
            Value::Object(m) => {
                let props = schema.get("properties").and_then(Value::as_object);
                let additional = schema.get("additionalProperties");
                let keys: Vec<String> = m.keys().cloned().collect();
                for k in keys {
                    if root && (k == "apiVersion" || k == "kind" || k == "metadata") {
                        continue;
                    }
                    let len = path.len();
                    if let Some(ps) = props.and_then(|p| p.get(&k)) {
                        if !path.is_empty() {
                            path.push('.');
                        }
                        path.push_str(&k);
                        walk(m.get_mut(&k).unwrap(), ps, path, false, pruned);
                    } else if let Some(a) = additional.filter(|a| a.is_object()) {
                        path.push_str(&format!("[{k}]"));
                        walk(m.get_mut(&k).unwrap(), a, path, false, pruned);
                    } else if !(additional == Some(&json!(true)) || preserves_unknown(schema)) {
                        m.remove(&k);
                        pruned.push(if path.is_empty() { k.clone() } else { format!("{path}.{k}") });
                    }
                    path.truncate(len);
                }
            }
            Value::Array(items) => {
                if let Some(is) = schema.get("items") {
                    for (i, it) in items.iter_mut().enumerate() {
                        let len = path.len();
                        path.push_str(&format!("[{i}]"));
                        walk(it, is, path, false, pruned);
                        path.truncate(len);
                    }
                }
            }
            _ => {}
        }
    }
    walk(obj, schema, &mut String::new(), true, pruned);
}

/// Fills in `default`s for missing fields.
pub fn apply_defaults(obj: &mut Value, schema: &Value) {
    match obj {
        Value::Object(m) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, ps) in props {
                    if !m.contains_key(k)
                        && let Some(d) = ps.get("default")
                    {
                        m.insert(k.clone(), d.clone());
                    }
                    if let Some(child) = m.get_mut(k) {
                        apply_defaults(child, ps);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = schema.get("items") {
                for it in items {
                    apply_defaults(it, is);
                }
            }
        }
        _ => {}
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Validates against the OpenAPI v3 schema subset CRDs use (types, required, enum, bounds,
/// lengths, patterns are not checked).
pub fn validate(obj: &Value, schema: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut root_schema = schema.clone();
    if let Some(props) = root_schema.get_mut("properties").and_then(Value::as_object_mut) {
        props.remove("metadata");
        props.remove("apiVersion");
        props.remove("kind");
    }
    let mut body = obj.clone();
    if let Some(m) = body.as_object_mut() {
        m.remove("metadata");
        m.remove("apiVersion");
        m.remove("kind");
    }
    walk(&body, &root_schema, "", &mut errs);
    errs
}

fn walk(v: &Value, s: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let field = |p: &str, k: &str| {
        if p.is_empty() { k.to_string() } else { format!("{p}.{k}") }
    };
    if v.is_null() && s.get("nullable") == Some(&json!(true)) {
        return;
    }
    if let Some(t) = s.get("type").and_then(Value::as_str) {
        let actual = type_name(v);
        let ok = actual == t || (t == "number" && actual == "integer") || s.get("x-kubernetes-int-or-string") == Some(&json!(true));
        if !ok {
            errs.push(FieldError::not_supported_type(path, v, t));
            return;
        }
    }
    if s.get("x-kubernetes-int-or-string") == Some(&json!(true)) && !matches!(v, Value::String(_) | Value::Number(_)) {
        errs.push(FieldError::invalid(path, v, "must be an integer or a string"));
    }
    if let Some(en) = s.get("enum").and_then(Value::as_array)
        && !en.contains(v)
    {
        let allowed: Vec<String> = en.iter().map(|e| e.as_str().map(|x| format!("{x:?}")).unwrap_or_else(|| e.to_string())).collect();
        errs.push(FieldError {
            kind: r8s_api::errors::FieldErrorKind::NotSupported,
            field: path.to_string(),
            value: Some(r8s_api::errors::render_value(v)),
            detail: format!("supported values: {}", allowed.join(", ")),
        });
    }
    if let Some(n) = v.as_f64() {
        if let Some(min) = s.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            errs.push(FieldError::invalid(path, v, format!("should be greater than or equal to {min}")));
        }
        if let Some(max) = s.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            errs.push(FieldError::invalid(path, v, format!("should be less than or equal to {max}")));
        }
    }
    if let Some(st) = v.as_str() {
        if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
            && st.chars().count() as u64 > max
        {
            errs.push(FieldError::too_long(path, max));
        }
        if let Some(min) = s.get("minLength").and_then(Value::as_u64)
            && (st.chars().count() as u64) < min
        {
            errs.push(FieldError::invalid(path, v, format!("should be at least {min} chars long")));
        }
    }
    match v {
        Value::Object(m) => {
            for r in s.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
                if !m.contains_key(r) {
                    errs.push(FieldError::required(field(path, r), ""));
                }
            }
            let props = s.get("properties").and_then(Value::as_object);
            for (k, child) in m {
                if let Some(ps) = props.and_then(|p| p.get(k)) {
                    walk(child, ps, &field(path, k), errs);
                } else if let Some(a) = s.get("additionalProperties").filter(|a| a.is_object()) {
                    walk(child, a, &field(path, k), errs);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for (i, it) in items.iter().enumerate() {
                    walk(it, is, &format!("{path}[{i}]"), errs);
                }
            }
        }
        _ => {}
    }
}

trait FieldErrorExt {
    fn not_supported_type(path: &str, v: &Value, t: &str) -> FieldError;
    fn too_long(path: &str, max: u64) -> FieldError;
}

impl FieldErrorExt for FieldError {
    fn not_supported_type(path: &str, v: &Value, t: &str) -> FieldError {
        FieldError {
            kind: r8s_api::errors::FieldErrorKind::Invalid,
            field: path.to_string(),
            value: Some(format!("{:?}", type_name(v))),
            detail: format!("{path} in body must be of type {t}: {:?}", type_name(v)),
        }
    }
    fn too_long(path: &str, max: u64) -> FieldError {
        FieldError { kind: r8s_api::errors::FieldErrorKind::TooLong, field: path.to_string(), value: None, detail: format!("may not be more than {max} bytes") }
    }
}

/// Columns of a custom resource Table: NAME, the declared printer columns, AGE.
pub fn custom_cells(columns: &[Value], obj: &Value) -> Vec<Value> {
    let mut cells = vec![json!(r8s_api::meta::name(obj))];
    for c in columns {
        let path = c.get("jsonPath").and_then(Value::as_str).unwrap_or("");
        let ptr = path.trim_start_matches('.').replace('.', "/");
        let v = obj.pointer(&format!("/{ptr}")).cloned().unwrap_or(Value::Null);
        let cell = match (c.get("type").and_then(Value::as_str), &v) {
            (Some("date"), Value::String(s)) => json!(r8s_api::printers::since(Some(s))),
            (_, Value::Null) => json!("<none>"),
            _ => v,
        };
        cells.push(cell);
    }
    cells.push(json!(r8s_api::printers::since(obj.pointer("/metadata/creationTimestamp").and_then(Value::as_str))));
    cells
}

#[allow(dead_code)]
fn _unused(_: Map<String, Value>) {}
