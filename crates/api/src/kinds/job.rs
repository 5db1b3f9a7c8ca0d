//! Jobs: defaults, the generated selector tied to the job's uid, validation (restart policy,
//! counts, immutable template), the status.successful field selector and the printer.

use serde_json::{Value, json};

use super::Kind;
use crate::errors::FieldError;
use crate::kinds::podspec::{default_template, validate_pod_spec};
use crate::meta::parse_time;
use crate::meta::{default_field, obj_mut};
use crate::printers::{AGE, Column, NAME, age, arr, col, containers_images, human_duration, i, label_selector_string, s};

pub struct Job;

impl Kind for Job {
    fn tracks_generation(&self) -> bool {
        true
    }

    /// Jobs get a generated selector and labels tied to their uid (unless manualSelector).
    fn normalize(&self, obj: &mut Value, create: bool) {
        if !create || obj.pointer("/spec/manualSelector") == Some(&json!(true)) {
            return;
        }
        let uid = obj.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("").to_string();
        let name = crate::meta::name(obj).to_string();
        obj["spec"]["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
        let labels = obj_mut(obj, &["spec", "template", "metadata", "labels"]);
        labels.insert("batch.kubernetes.io/controller-uid".into(), json!(uid));
        labels.insert("batch.kubernetes.io/job-name".into(), json!(name));
        labels.insert("controller-uid".into(), json!(uid));
        labels.insert("job-name".into(), json!(name));
    }

    fn default(&self, obj: &mut Value) {
        default_job(obj)
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
        if let Some(spec) = obj.pointer("/spec/template/spec") {
            validate_pod_spec(spec, "spec.template.spec", errs);
            let rp = spec.get("restartPolicy").and_then(Value::as_str).unwrap_or("");
            if rp != "OnFailure" && rp != "Never" {
                errs.push(FieldError::not_supported("spec.template.spec.restartPolicy", &json!(rp), &["OnFailure", "Never"]));
            }
        } else {
            errs.push(FieldError::required("spec.template", ""));
        }
        crate::workload_validation::job(obj, old, errs);
    }

    fn field_attrs(&self, obj: &Value, add: &mut dyn FnMut(&str, String)) {
        add("status.successful", s(obj, "/status/succeeded"));
    }

    fn columns(&self) -> Vec<Column> {
        vec![NAME, col("Status", 0), col("Completions", 0), col("Duration", 0), AGE, col("Containers", 1), col("Images", 1), col("Selector", 1)]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        job_cells(obj)
    }
}

pub(crate) fn default_job(obj: &mut Value) {
    let spec = obj_mut(obj, &["spec"]);
    let has_c = spec.get("completions").is_some_and(|v| !v.is_null());
    let has_p = spec.get("parallelism").is_some_and(|v| !v.is_null());
    if !has_c && !has_p {
        spec.insert("completions".into(), json!(1));
        spec.insert("parallelism".into(), json!(1));
    } else if !has_p {
        spec.insert("parallelism".into(), json!(1));
    }
    default_field(spec, "backoffLimit", json!(6));
    default_field(spec, "completionMode", json!("NonIndexed"));
    default_field(spec, "suspend", json!(false));
    default_field(spec, "manualSelector", Value::Null);
    spec.remove("manualSelector");
    default_field(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    default_template(obj);
}

fn job_cells(obj: &Value) -> Vec<Value> {
    let (c, im) = containers_images(obj, "/spec/template/spec/containers");
    let completions = match obj.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(n) => format!("{}/{n}", i(obj, "/status/succeeded")),
        None => {
            let p = obj.pointer("/spec/parallelism").and_then(Value::as_i64).unwrap_or(0);
            if p > 1 { format!("{}/1 of {p}", i(obj, "/status/succeeded")) } else { format!("{}/1", i(obj, "/status/succeeded")) }
        }
    };
    let start = obj.pointer("/status/startTime").and_then(Value::as_str).and_then(parse_time);
    let end = obj.pointer("/status/completionTime").and_then(Value::as_str).and_then(parse_time);
    let duration = match (start, end) {
        (Some(st), Some(en)) => human_duration(en - st),
        (Some(st), None) => human_duration(chrono::Utc::now() - st),
        _ => String::new(),
    };
    let conds = arr(obj, "/status/conditions");
    let has = |t: &str| conds.iter().any(|c| s(c, "/type") == t && s(c, "/status") == "True");
    let status = if has("Failed") {
        "Failed"
    } else if has("Complete") {
        "Complete"
    } else if has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else if has("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    };
    vec![
        json!(crate::meta::name(obj)),
        json!(status),
        json!(completions),
        json!(duration),
        age(obj),
        json!(c),
        json!(im),
        json!(label_selector_string(obj.pointer("/spec/selector"))),
    ]
}
