//! Table responses (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`) and
//! PartialObjectMetadata, built from the printers in `r8s_api::printers`.

use std::collections::HashMap;

use r8s_api::ResourceInfo;
use r8s_api::printers::{cells, column_definitions, columns};
use serde_json::{Value, json};

use crate::handlers::AppState;

pub fn partial(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))})
}

fn custom_columns(cols: &[Value]) -> Value {
    let mut defs = vec![json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0})];
    for c in cols {
        defs.push(json!({
            "name": c.get("name").cloned().unwrap_or(json!("")),
            "type": c.get("type").cloned().unwrap_or(json!("string")),
            "format": c.get("format").cloned().unwrap_or(json!("")),
            "description": c.get("description").cloned().unwrap_or(json!("")),
            "priority": c.get("priority").cloned().unwrap_or(json!(0)),
        }));
    }
    defs.push(json!({"name": "Age", "type": "date", "format": "", "description": "", "priority": 0}));
    Value::Array(defs)
}

/// A Table of `items` (objects in `info`'s version).
pub fn table(state: &AppState, info: &ResourceInfo, items: &[Value], list_md: Option<Value>, query: &HashMap<String, String>) -> Value {
    let include = query.get("includeObject").map(String::as_str).unwrap_or("Metadata");
    let custom_cols = if info.custom { Some(state.catalog.columns(info)) } else { None };
    let defs = match &custom_cols {
        Some(c) => custom_columns(c),
        None => column_definitions(&columns(info)),
    };
    let rows: Vec<Value> = items
        .iter()
        .map(|obj| {
            let cs = match &custom_cols {
                Some(c) => crate::crd::custom_cells(c, obj),
                None => cells(info, obj),
            };
            let object = match include {
                "None" => Value::Null,
                "Object" => obj.clone(),
                _ => partial(obj),
            };
            json!({"cells": cs, "object": object})
        })
        .collect();
    let md =
        list_md.unwrap_or_else(|| json!({"resourceVersion": items.first().and_then(|o| o.pointer("/metadata/resourceVersion")).cloned().unwrap_or(json!(""))}));
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": md, "columnDefinitions": defs, "rows": rows})
}
