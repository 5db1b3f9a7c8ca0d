//! The scale subresource: an autoscaling/v1 Scale view of spec.replicas.

use r8s_api::ResourceInfo;
use serde_json::{Value, json};

use crate::registry::{Registry, WriteOptions};
use crate::status::{ApiError, ApiResult};

/// The autoscaling/v1 Scale of a scalable object.
pub fn scale_of(info: &ResourceInfo, obj: &Value) -> Value {
    let selector = match obj.pointer("/spec/selector") {
        Some(Value::Object(m)) if m.contains_key("matchLabels") || m.contains_key("matchExpressions") => {
            r8s_api::printers::label_selector_string(Some(&Value::Object(m.clone())))
        }
        Some(Value::Object(m)) => {
            let mut parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect();
            parts.sort();
            parts.join(",")
        }
        _ => String::new(),
    };
    let md = obj.get("metadata").cloned().unwrap_or(json!({}));
    let mut smd = json!({});
    for k in ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"] {
        if let Some(v) = md.get(k) {
            smd[k] = v.clone();
        }
    }
    let _ = info;
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": smd,
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)},
        "status": {"replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0), "selector": selector},
    })
}

/// Updates spec.replicas through the scale subresource: `f` maps the current Scale to the new.
pub async fn update_scale<F>(reg: &Registry, info: &ResourceInfo, ns: Option<&str>, name: &str, opts: &WriteOptions, mut f: F) -> ApiResult<Value>
where
    F: FnMut(Value) -> ApiResult<Value>,
{
    reg.update_with(info, ns, name, None, opts, |mut cur| {
        let scale = scale_of(info, &cur);
        let new_scale = f(scale)?;
        if let Some(rv) = new_scale.pointer("/metadata/resourceVersion").and_then(Value::as_str)
            && !rv.is_empty()
            && Some(rv) != cur.pointer("/metadata/resourceVersion").and_then(Value::as_str)
        {
            return Err(ApiError::stale(info, name));
        }
        let replicas = new_scale.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0);
        if replicas < 0 {
            return Err(ApiError::invalid(
                info,
                name,
                &[r8s_api::errors::FieldError::invalid("spec.replicas", &json!(replicas), "must be greater than or equal to 0")],
            ));
        }
        cur["spec"]["replicas"] = json!(replicas);
        Ok(cur)
    })
    .await
}
