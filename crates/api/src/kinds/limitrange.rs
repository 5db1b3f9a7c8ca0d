//! LimitRanges: SetDefaults_LimitRangeItem, create-on-update.

use serde_json::Value;

use super::Kind;

pub struct LimitRange;

impl Kind for LimitRange {
    fn default(&self, obj: &mut Value) {
        for item in obj.pointer_mut("/spec/limits").and_then(Value::as_array_mut).into_iter().flatten() {
            default_limit_range_item(item);
        }
    }

    fn allow_create_on_update(&self) -> bool {
        true
    }
}

/// SetDefaults_LimitRangeItem: for containers, the default limit falls back to max, the default
/// request to the default limit, then to min.
fn default_limit_range_item(item: &mut Value) {
    if item.get("type").and_then(Value::as_str) != Some("Container") {
        return;
    }
    let resources = |v: &Value, k: &str| v.get(k).and_then(Value::as_object).cloned().unwrap_or_default();
    let mut default = resources(item, "default");
    let mut request = resources(item, "defaultRequest");
    for (k, v) in resources(item, "max") {
        default.entry(k).or_insert(v);
    }
    for (k, v) in &default {
        request.entry(k.clone()).or_insert(v.clone());
    }
    for (k, v) in resources(item, "min") {
        request.entry(k).or_insert(v);
    }
    let Some(m) = item.as_object_mut() else {
        return;
    };
    for (k, v) in [("default", default), ("defaultRequest", request)] {
        if !v.is_empty() {
            m.insert(k.into(), Value::Object(v));
        }
    }
}
