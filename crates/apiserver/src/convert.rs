//! Conversion between a served version and the storage version of multi-version kinds:
//! events.k8s.io/v1 Event <-> core v1 Event, autoscaling/v1 HPA <-> autoscaling/v2 HPA.

use r8s_api::ResourceInfo;
use serde_json::{Map, Value, json};

fn move_field(from: &mut Map<String, Value>, to: &mut Map<String, Value>, a: &str, b: &str) {
    if let Some(v) = from.remove(a)
        && !v.is_null()
    {
        to.insert(b.to_string(), v);
    }
}

/// Converts an object of `info`'s version into its storage version.
pub fn to_storage(info: &ResourceInfo, mut obj: Value) -> Value {
    let target = info.storage_version.clone();
    if target != info.api_version() {
        obj = match (info.group.as_str(), info.kind.as_str()) {
            ("events.k8s.io", "Event") => event_to_core(obj),
            ("autoscaling", "HorizontalPodAutoscaler") if info.version == "v1" => hpa_v1_to_v2(obj),
            _ => obj,
        };
    }
    set_type(&mut obj, &target, &info.kind);
    obj
}

/// Converts a stored object into `info`'s version.
pub fn from_storage(info: &ResourceInfo, mut obj: Value) -> Value {
    if info.storage_version != info.api_version() {
        obj = match (info.group.as_str(), info.kind.as_str()) {
            ("events.k8s.io", "Event") => event_from_core(obj),
            ("autoscaling", "HorizontalPodAutoscaler") if info.version == "v1" => hpa_v2_to_v1(obj),
            _ => obj,
        };
    }
    set_type(&mut obj, &info.api_version(), &info.kind);
    obj
}

pub fn needs_conversion(info: &ResourceInfo) -> bool {
    info.storage_version != info.api_version()
}

fn set_type(obj: &mut Value, api_version: &str, kind: &str) {
    if let Some(m) = obj.as_object_mut() {
        // Keep apiVersion and kind first, as upstream serializes them.
        let mut out = Map::new();
        out.insert("kind".into(), json!(kind));
        out.insert("apiVersion".into(), json!(api_version));
        for (k, v) in std::mem::take(m) {
            if k != "kind" && k != "apiVersion" {
                out.insert(k, v);
            }
        }
        *m = out;
    }
}

const EVENT_FIELDS: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("reportingInstance", "reportingInstance"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("eventTime", "eventTime"),
    ("series", "series"),
    ("action", "action"),
    ("reason", "reason"),
    ("related", "related"),
    ("type", "type"),
    ("metadata", "metadata"),
];

fn event_to_core(obj: Value) -> Value {
    let Value::Object(mut from) = obj else {
        return obj;
    };
    let mut to = Map::new();
    for (new, old) in EVENT_FIELDS {
        move_field(&mut from, &mut to, new, old);
    }
    Value::Object(to)
}

fn event_from_core(obj: Value) -> Value {
    let Value::Object(mut from) = obj else {
        return obj;
    };
    let mut to = Map::new();
    for (new, old) in EVENT_FIELDS {
        move_field(&mut from, &mut to, old, new);
    }
    if !to.contains_key("eventTime") {
        to.insert("eventTime".into(), Value::Null);
    }
    Value::Object(to)
}

fn hpa_v1_to_v2(obj: Value) -> Value {
    let Value::Object(mut m) = obj else {
        return obj;
    };
    if let Some(Value::Object(spec)) = m.get_mut("spec")
        && let Some(t) = spec.remove("targetCPUUtilizationPercentage")
    {
        spec.insert("metrics".into(), json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": t}}}]));
    }
    if let Some(Value::Object(status)) = m.get_mut("status")
        && let Some(c) = status.remove("currentCPUUtilizationPercentage")
    {
        status.insert("currentMetrics".into(), json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": c}}}]));
    }
    Value::Object(m)
}

fn hpa_v2_to_v1(obj: Value) -> Value {
    let Value::Object(mut m) = obj else {
        return obj;
    };
    if let Some(Value::Object(spec)) = m.get_mut("spec") {
        let metrics = spec.remove("metrics");
        spec.remove("behavior");
        let cpu = metrics.as_ref().and_then(Value::as_array).and_then(|ms| {
            ms.iter()
                .find(|x| x.pointer("/resource/name").and_then(Value::as_str) == Some("cpu"))
                .and_then(|x| x.pointer("/resource/target/averageUtilization").cloned())
        });
        if let Some(c) = cpu {
            spec.insert("targetCPUUtilizationPercentage".into(), c);
        }
    }
    if let Some(Value::Object(status)) = m.get_mut("status") {
        let current = status.remove("currentMetrics");
        status.remove("conditions");
        let cpu = current.as_ref().and_then(Value::as_array).and_then(|ms| {
            ms.iter()
                .find(|x| x.pointer("/resource/name").and_then(Value::as_str) == Some("cpu"))
                .and_then(|x| x.pointer("/resource/current/averageUtilization").cloned())
        });
        if let Some(c) = cpu {
            status.insert("currentCPUUtilizationPercentage".into(), c);
        }
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use r8s_api::resources::builtin_resources;

    #[test]
    fn hpa_round_trip() {
        let v1 = builtin_resources().into_iter().find(|r| r.plural == "horizontalpodautoscalers" && r.version == "v1").unwrap();
        let obj = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"}, "spec": {"maxReplicas": 5, "targetCPUUtilizationPercentage": 50}});
        let stored = to_storage(&v1, obj);
        assert_eq!(stored["apiVersion"], json!("autoscaling/v2"));
        assert_eq!(stored["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], json!(50));
        let back = from_storage(&v1, stored);
        assert_eq!(back["spec"]["targetCPUUtilizationPercentage"], json!(50));
        assert_eq!(back["apiVersion"], json!("autoscaling/v1"));
    }

    #[test]
    fn event_round_trip() {
        let ev = builtin_resources().into_iter().find(|r| r.group == "events.k8s.io").unwrap();
        let obj = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}, "regarding": {"kind": "Pod", "name": "p"}, "note": "hi", "reason": "R"});
        let stored = to_storage(&ev, obj);
        assert_eq!(stored["involvedObject"]["name"], json!("p"));
        assert_eq!(stored["message"], json!("hi"));
        let back = from_storage(&ev, stored);
        assert_eq!(back["note"], json!("hi"));
    }
}
