//! Events (core/v1, also served as events.k8s.io/v1): create-on-update, the involvedObject
//! field selectors and the printer.

use serde_json::{Value, json};

use super::Kind;
use crate::printers::{Column, col, i, int_col, s, since};

pub struct Event;

impl Kind for Event {
    fn allow_create_on_update(&self) -> bool {
        true
    }

    fn field_attrs(&self, obj: &Value, add: &mut dyn FnMut(&str, String)) {
        for f in ["kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath"] {
            add(&format!("involvedObject.{f}"), s(obj, &format!("/involvedObject/{f}")));
        }
        add("reason", s(obj, "/reason"));
        add("reportingComponent", s(obj, "/reportingComponent"));
        add("source", s(obj, "/source/component"));
        add("type", s(obj, "/type"));
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            col("Last Seen", 0),
            col("Type", 0),
            col("Reason", 0),
            col("Object", 0),
            col("Subobject", 1),
            col("Source", 1),
            col("Message", 0),
            col("First Seen", 1),
            int_col("Count", 1),
            col("Name", 1),
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        event_cells(obj)
    }
}

fn event_cells(obj: &Value) -> Vec<Value> {
    let first = match obj.pointer("/firstTimestamp").and_then(Value::as_str) {
        Some(t) => since(Some(t)),
        None => since(obj.pointer("/eventTime").and_then(Value::as_str)),
    };
    let mut last = match obj.pointer("/lastTimestamp").and_then(Value::as_str) {
        Some(t) => since(Some(t)),
        None => first.clone(),
    };
    let mut count = i(obj, "/count");
    if obj.pointer("/series").is_some_and(|v| !v.is_null()) {
        last = since(obj.pointer("/series/lastObservedTime").and_then(Value::as_str));
        count = i(obj, "/series/count");
    } else if count == 0 {
        count = 1;
    }
    let kind = s(obj, "/involvedObject/kind").to_lowercase();
    let target = if s(obj, "/involvedObject/name").is_empty() { kind } else { format!("{kind}/{}", s(obj, "/involvedObject/name")) };
    let source = {
        let comp = s(obj, "/source/component");
        if !comp.is_empty() {
            let host = s(obj, "/source/host");
            if host.is_empty() { comp } else { format!("{comp}, {host}") }
        } else {
            let rc = s(obj, "/reportingComponent");
            let ri = s(obj, "/reportingInstance");
            if ri.is_empty() { rc } else { format!("{rc}, {ri}") }
        }
    };
    vec![
        json!(last),
        json!(s(obj, "/type")),
        json!(s(obj, "/reason")),
        json!(target),
        json!(s(obj, "/involvedObject/fieldPath")),
        json!(source),
        json!(s(obj, "/message").trim()),
        json!(first),
        json!(count),
        json!(crate::meta::name(obj)),
    ]
}
