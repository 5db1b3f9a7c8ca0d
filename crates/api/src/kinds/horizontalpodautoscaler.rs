//! HorizontalPodAutoscalers (stored as autoscaling/v2): defaults (minReplicas 1, 80% CPU) and
//! the printer.

use serde_json::{Value, json};

use super::Kind;
use crate::errors::FieldError;
use crate::meta::{default_field, obj_mut};
use crate::printers::{AGE, Column, NAME, age, arr, col, i, int_col, s};

pub struct HorizontalPodAutoscaler;

impl Kind for HorizontalPodAutoscaler {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn initial_status(&self, _obj: &Value) -> Option<Value> {
        Some(json!({"currentReplicas": 0, "desiredReplicas": 0}))
    }

    fn default(&self, obj: &mut Value) {
        let spec = obj_mut(obj, &["spec"]);
        default_field(spec, "minReplicas", json!(1));
        if spec.get("metrics").is_none() {
            spec.insert(
                "metrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]),
            );
        }
        default_behavior(spec);
    }

    /// ValidateHorizontalPodAutoscalerSpec.
    fn validate(&self, obj: &Value, _old: Option<&Value>, errs: &mut Vec<FieldError>) {
        for f in ["kind", "name"] {
            if obj.pointer(&format!("/spec/scaleTargetRef/{f}")).and_then(Value::as_str).is_none_or(str::is_empty) {
                errs.push(FieldError::required(format!("spec.scaleTargetRef.{f}"), ""));
            }
        }
        let min = obj.pointer("/spec/minReplicas").and_then(Value::as_i64);
        let max = obj.pointer("/spec/maxReplicas").and_then(Value::as_i64).unwrap_or(0);
        if let Some(m) = min.filter(|m| *m < 1) {
            errs.push(FieldError::invalid("spec.minReplicas", &json!(m), "must be greater than or equal to 1"));
        }
        if max < 1 {
            errs.push(FieldError::invalid("spec.maxReplicas", &json!(max), "must be greater than 0"));
        }
        if min.is_some_and(|m| max < m) {
            errs.push(FieldError::invalid("spec.maxReplicas", &json!(max), "must be greater than or equal to `minReplicas`"));
        }
    }

    fn columns(&self) -> Vec<Column> {
        vec![NAME, col("Reference", 0), col("Targets", 0), col("MinPods", 0), int_col("MaxPods", 0), int_col("Replicas", 0), AGE]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let reference = format!("{}/{}", s(obj, "/spec/scaleTargetRef/kind"), s(obj, "/spec/scaleTargetRef/name"));
        let targets = hpa_targets(obj);
        let min = obj.pointer("/spec/minReplicas").map(|v| v.to_string()).unwrap_or_else(|| "<unset>".into());
        vec![
            json!(crate::meta::name(obj)),
            json!(reference),
            json!(targets),
            json!(min),
            json!(i(obj, "/spec/maxReplicas")),
            json!(i(obj, "/status/currentReplicas")),
            age(obj),
        ]
    }
}

fn hpa_targets(obj: &Value) -> String {
    let metrics = arr(obj, "/spec/metrics");
    if metrics.is_empty() {
        return "<none>".into();
    }
    let current = arr(obj, "/status/currentMetrics");
    let mut parts = Vec::new();
    for (idx, m) in metrics.iter().enumerate() {
        if s(m, "/type") == "Resource" {
            let res = s(m, "/resource/name");
            let cur =
                current.get(idx).and_then(|c| c.pointer("/resource/current/averageUtilization")).map(|v| format!("{v}%")).unwrap_or_else(|| "<unknown>".into());
            if let Some(u) = m.pointer("/resource/target/averageUtilization") {
                parts.push(format!("{res}: {cur}/{u}%"));
            } else {
                parts.push(format!("{res}: <unknown>/{}", s(m, "/resource/target/averageValue")));
            }
        } else {
            parts.push("<unknown>/<unknown>".into());
        }
    }
    let n = parts.len();
    if n > 2 { format!("{} + {} more...", parts[..2].join(", "), n - 2) } else { parts.join(", ") }
}

/// SetDefaults_HorizontalPodAutoscalerBehavior: a behavior that is set gets upstream's scale-up
/// and scale-down rules wherever it leaves them out.
fn default_behavior(spec: &mut serde_json::Map<String, Value>) {
    let Some(behavior) = spec.get_mut("behavior").and_then(Value::as_object_mut) else { return };
    let rules = [
        ("scaleUp", 0, json!([{"type": "Pods", "value": 4, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 15}])),
        ("scaleDown", 300, json!([{"type": "Percent", "value": 100, "periodSeconds": 15}])),
    ];
    for (dir, window, policies) in rules {
        let rule = behavior.entry(dir).or_insert_with(|| json!({}));
        let Some(rule) = rule.as_object_mut() else { continue };
        default_field(rule, "stabilizationWindowSeconds", json!(window));
        default_field(rule, "selectPolicy", json!("Max"));
        default_field(rule, "policies", policies);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behavior_defaults_only_when_set() {
        let mut h = json!({"spec": {"maxReplicas": 3}});
        HorizontalPodAutoscaler.default(&mut h);
        assert!(h["spec"].get("behavior").is_none());
        let mut h = json!({"spec": {"maxReplicas": 3, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}});
        HorizontalPodAutoscaler.default(&mut h);
        assert_eq!(h["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"], json!(60));
        assert_eq!(h["spec"]["behavior"]["scaleDown"]["selectPolicy"], json!("Max"));
        assert_eq!(h["spec"]["behavior"]["scaleUp"]["policies"][0], json!({"type": "Pods", "value": 4, "periodSeconds": 15}));
    }
}
