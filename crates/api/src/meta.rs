//! Small helpers over JSON objects (every object travels as `serde_json::Value` through the
//! generic registry; typed k8s-openapi structs are used where a kind's logic needs them).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

pub fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    Some(cur)
}

pub fn get_str<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    get(v, path).and_then(Value::as_str)
}

/// Returns the object at `path`, creating empty objects on the way (replacing non-objects).
pub fn obj_mut<'a>(v: &'a mut Value, path: &[&str]) -> &'a mut Map<String, Value> {
    let mut cur = v;
    for p in path {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        cur = cur.as_object_mut().unwrap().entry(p.to_string()).or_insert_with(|| Value::Object(Map::new()));
    }
    if !cur.is_object() {
        *cur = Value::Object(Map::new());
    }
    cur.as_object_mut().unwrap()
}

/// Sets `key` in `map` when missing or null.
pub fn default_field(map: &mut Map<String, Value>, key: &str, value: Value) {
    match map.get(key) {
        None | Some(Value::Null) => {
            map.insert(key.to_string(), value);
        }
        _ => {}
    }
}

pub fn name(v: &Value) -> &str {
    get_str(v, &["metadata", "name"]).unwrap_or("")
}

pub fn namespace(v: &Value) -> Option<&str> {
    get_str(v, &["metadata", "namespace"])
}

pub fn labels(v: &Value) -> BTreeMap<String, String> {
    string_map(get(v, &["metadata", "labels"]))
}

pub fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object).map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect()).unwrap_or_default()
}

pub fn metadata_mut(v: &mut Value) -> &mut Map<String, Value> {
    obj_mut(v, &["metadata"])
}

/// The object with everything but metadata and status (what "spec changed" compares).
pub fn spec_part(v: &Value) -> Value {
    let mut out = Map::new();
    if let Some(m) = v.as_object() {
        for (k, val) in m {
            if k != "metadata" && k != "status" && k != "apiVersion" && k != "kind" {
                out.insert(k.clone(), val.clone());
            }
        }
    }
    Value::Object(out)
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&chrono::Utc))
}

pub fn empty_object() -> Value {
    json!({})
}

/// A JSON value with every object's keys in sorted order, as Go's encoder writes a map (byte
/// comparisons with what kubectl computes depend on it).
pub fn sorted_keys(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(keys.into_iter().map(|k| (k.clone(), sorted_keys(&m[k]))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted_keys).collect()),
        other => other.clone(),
    }
}
