//! The patch engines: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and strategic merge
//! patch with upstream's directives (`$patch`, `$setElementOrder/`, `$retainKeys`,
//! `$deleteFromPrimitiveList/`). Server-side apply lives in `apply`.

use serde_json::{Map, Value};

use crate::mergekeys::smp_merge_key;

pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value, String> {
    let p: json_patch::Patch = serde_json::from_value(patch.clone()).map_err(|e| e.to_string())?;
    let mut out = doc.clone();
    json_patch::patch(&mut out, &p).map_err(|e| e.to_string())?;
    Ok(out)
}

pub fn merge_patch(doc: &Value, patch: &Value) -> Value {
    match patch {
        Value::Object(p) => {
            let mut out = match doc {
                Value::Object(m) => m.clone(),
                _ => Map::new(),
            };
            for (k, v) in p {
                if v.is_null() {
                    out.remove(k);
                } else {
                    let cur = out.get(k).cloned().unwrap_or(Value::Null);
                    out.insert(k.clone(), merge_patch(&cur, v));
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// Applies a strategic merge patch to `doc` (the whole object).
pub fn strategic_merge_patch(doc: &Value, patch: &Value) -> Result<Value, String> {
    match smp_object(doc, patch, "")? {
        Some(v) => Ok(v),
        None => Ok(Value::Object(Map::new())),
    }
}

fn smp_object(doc: &Value, patch: &Value, field: &str) -> Result<Option<Value>, String> {
    let Value::Object(p) = patch else {
        return Ok(Some(patch.clone()));
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("delete") => return Ok(None),
        Some("replace") => {
            let mut m = p.clone();
            m.remove("$patch");
            return Ok(Some(Value::Object(m)));
        }
        Some("merge") | None => {}
        Some(other) => return Err(format!("Unknown patch type: {other}")),
    }
    let mut out = match doc {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    if let Some(retain) = p.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            out.remove(k);
            continue;
        }
        let cur = out.get(k).cloned().unwrap_or(Value::Null);
        let merged = match v {
            Value::Object(_) => smp_object(&cur, v, k)?,
            Value::Array(items) => Some(smp_list(&cur, items, field, k)?),
            _ => Some(v.clone()),
        };
        match merged {
            Some(m) => {
                out.insert(k.clone(), m);
            }
            None => {
                out.remove(k);
            }
        }
    }
    for (k, v) in p {
        if let Some(list_field) = k.strip_prefix("$deleteFromPrimitiveList/")
            && let (Some(Value::Array(cur)), Some(del)) = (out.get_mut(list_field), v.as_array())
        {
            cur.retain(|x| !del.contains(x));
        }
    }
    for (k, v) in p {
        if let Some(list_field) = k.strip_prefix("$setElementOrder/")
            && let (Some(Value::Array(cur)), Some(order)) = (out.get_mut(list_field), v.as_array())
        {
            let key = smp_merge_key(field, list_field).unwrap_or("");
            reorder(cur, order, key);
        }
    }
    Ok(Some(Value::Object(out)))
}

fn same_item(a: &Value, b: &Value, key: &str) -> bool {
    if key.is_empty() { a == b } else { a.get(key).is_some() && a.get(key) == b.get(key) }
}

fn reorder(items: &mut Vec<Value>, order: &[Value], key: &str) {
    let pos = |v: &Value| order.iter().position(|o| same_item(v, o, key));
    // Items named in the order come in that order; others keep their place relative to them.
    let mut ordered: Vec<(usize, Value)> = Vec::new();
    let mut rest: Vec<(usize, Value)> = Vec::new();
    for (i, v) in items.drain(..).enumerate() {
        match pos(&v) {
            Some(p) => ordered.push((p, v)),
            None => rest.push((i, v)),
        }
    }
    ordered.sort_by_key(|(p, _)| *p);
    let mut out: Vec<Value> = ordered.into_iter().map(|(_, v)| v).collect();
    for (i, v) in rest {
        let at = i.min(out.len());
        out.insert(at, v);
    }
    *items = out;
}

fn smp_list(doc: &Value, patch: &[Value], parent: &str, field: &str) -> Result<Value, String> {
    let cur: Vec<Value> = doc.as_array().cloned().unwrap_or_default();
    match smp_merge_key(parent, field) {
        None => {
            // Atomic list: replace (dropping directive items).
            Ok(Value::Array(patch.iter().filter(|i| i.get("$patch").is_none()).cloned().collect()))
        }
        Some("") => {
            let mut out = cur;
            for item in patch {
                if !out.contains(item) {
                    out.push(item.clone());
                }
            }
            Ok(Value::Array(out))
        }
        Some(key) => {
            if patch.iter().any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace")) {
                return Ok(Value::Array(patch.iter().filter(|i| i.get("$patch").is_none()).cloned().collect()));
            }
            let mut out = cur;
            for item in patch {
                if item.get("$patch").and_then(Value::as_str) == Some("delete") {
                    out.retain(|x| !same_item(x, item, key));
                    continue;
                }
                if !item.is_object() {
                    return Err(format!("unable to find api field in struct for the merge key {key}"));
                }
                match out.iter().position(|x| same_item(x, item, key)) {
                    Some(i) => {
                        if let Some(m) = smp_object(&out[i], item, field)? {
                            out[i] = m;
                        } else {
                            out.remove(i);
                        }
                    }
                    None => {
                        if let Some(m) = smp_object(&Value::Null, item, field)? {
                            out.push(m);
                        }
                    }
                }
            }
            Ok(Value::Array(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}], "ports": [{"containerPort": 80}]},
            {"name": "b", "image": "b:1"}
        ], "tolerations": [{"key": "k"}]}, "metadata": {"finalizers": ["f1"]}})
    }

    #[test]
    fn merges_containers_by_name() {
        let p = json!({"spec": {"containers": [{"name": "b", "image": "b:2"}]}});
        let out = strategic_merge_patch(&pod(), &p).unwrap();
        assert_eq!(out["spec"]["containers"][0]["image"], json!("a:1"));
        assert_eq!(out["spec"]["containers"][1]["image"], json!("b:2"));
    }

    #[test]
    fn delete_directive_and_element_order() {
        let p = json!({"spec": {"$setElementOrder/containers": [{"name": "a"}], "containers": [{"$patch": "delete", "name": "b"}]}});
        let out = strategic_merge_patch(&pod(), &p).unwrap();
        assert_eq!(out["spec"]["containers"].as_array().unwrap().len(), 1);
        let p = json!({"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}], "containers": [{"name": "c", "image": "c:1"}]}});
        let out = strategic_merge_patch(&pod(), &p).unwrap();
        let names: Vec<&str> = out["spec"]["containers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, vec!["c", "a", "b"]);
    }

    #[test]
    fn nested_env_and_ports_merge_atomic_replace() {
        let p = json!({"spec": {"containers": [{"name": "a", "env": [{"name": "Y", "value": "2"}], "ports": [{"containerPort": 81}]}], "tolerations": [{"key": "z"}]}, "metadata": {"finalizers": ["f2"]}});
        let out = strategic_merge_patch(&pod(), &p).unwrap();
        assert_eq!(out["spec"]["containers"][0]["env"].as_array().unwrap().len(), 2);
        assert_eq!(out["spec"]["containers"][0]["ports"].as_array().unwrap().len(), 2);
        assert_eq!(out["spec"]["tolerations"], json!([{"key": "z"}]));
        assert_eq!(out["metadata"]["finalizers"], json!(["f1", "f2"]));
        let p = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["f1"]}});
        assert_eq!(strategic_merge_patch(&pod(), &p).unwrap()["metadata"]["finalizers"], json!([]));
    }

    #[test]
    fn replace_and_null() {
        let p = json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "z", "image": "z"}], "tolerations": null}});
        let out = strategic_merge_patch(&pod(), &p).unwrap();
        assert_eq!(out["spec"]["containers"], json!([{"name": "z", "image": "z"}]));
        assert!(out["spec"].get("tolerations").is_none());
    }
}
