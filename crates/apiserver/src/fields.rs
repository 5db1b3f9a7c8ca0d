//! managedFields bookkeeping for non-apply writes: every write records, for its field manager,
//! an `Update` entry owning the fields it set (see `apply` for server-side apply's own rules).

use serde_json::{Map, Value, json};

use crate::registry::WriteOptions;

/// Records the write in metadata.managedFields. `old` is the previous object (None on create).
pub fn record_operation(obj: &mut Value, old: Option<&Value>, opts: &WriteOptions, api_version: &str) {
    if opts.operation == "Apply" {
        return; // The apply engine maintains its own entries.
    }
    let Some(manager) = opts.field_manager.clone() else {
        return;
    };
    let owned = crate::apply::fieldset_of(obj, old);
    if owned.as_object().is_none_or(Map::is_empty) {
        return;
    }
    let md = r8s_api::meta::metadata_mut(obj);
    let mut entries: Vec<Value> = md.get("managedFields").and_then(Value::as_array).cloned().unwrap_or_default();
    let now = r8s_api::meta::now_rfc3339();
    // Fields this write changed move to this manager; other managers lose them.
    for e in entries.iter_mut() {
        if let Some(fs) = e.get_mut("fieldsV1") {
            crate::apply::subtract(fs, &owned);
        }
    }
    entries.retain(|e| e.get("fieldsV1").and_then(Value::as_object).is_some_and(|m| !m.is_empty()) || e.get("operation") == Some(&json!("Apply")));
    let existing = entries.iter_mut().find(|e| {
        e.get("manager").and_then(Value::as_str) == Some(manager.as_str())
            && e.get("operation") == Some(&json!("Update"))
            && e.get("apiVersion").and_then(Value::as_str) == Some(api_version)
    });
    match existing {
        Some(e) => {
            let mut fs = e.get("fieldsV1").cloned().unwrap_or(json!({}));
            crate::apply::union(&mut fs, &owned);
            e["fieldsV1"] = fs;
            e["time"] = json!(now);
        }
        None => entries.push(json!({
            "manager": manager,
            "operation": "Update",
            "apiVersion": api_version,
            "time": now,
            "fieldsType": "FieldsV1",
            "fieldsV1": owned,
        })),
    }
    md.insert("managedFields".into(), Value::Array(entries));
}
