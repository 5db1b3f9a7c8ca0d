//! CronJobs: defaults, schedule and policy validation, and the printer.

use serde_json::{Value, json};

use super::Kind;
use crate::errors::FieldError;
use crate::kinds::job::default_job;
use crate::meta::{default_field, obj_mut};
use crate::printers::{AGE, Column, NAME, age, arr, col, containers_images, int_col, label_selector_string, or_none, s, since};

pub struct CronJob;

impl Kind for CronJob {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        let spec = obj_mut(obj, &["spec"]);
        default_field(spec, "concurrencyPolicy", json!("Allow"));
        default_field(spec, "suspend", json!(false));
        default_field(spec, "successfulJobsHistoryLimit", json!(3));
        default_field(spec, "failedJobsHistoryLimit", json!(1));
        if let Some(jt) = obj.pointer_mut("/spec/jobTemplate") {
            default_job(jt);
        }
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>, errs: &mut Vec<FieldError>) {
        match obj.pointer("/spec/schedule").and_then(Value::as_str) {
            None | Some("") => errs.push(FieldError::required("spec.schedule", "")),
            Some(s) if s.split_whitespace().count() != 5 && !s.starts_with('@') => {
                errs.push(FieldError::invalid("spec.schedule", &json!(s), format!("expected exactly 5 fields, found {}: {s}", s.split_whitespace().count())));
            }
            _ => {}
        }
        crate::workload_validation::cron_job(obj, errs);
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME,
            col("Schedule", 0),
            col("Timezone", 0),
            col("Suspend", 0),
            int_col("Active", 0),
            col("Last Schedule", 0),
            AGE,
            col("Containers", 1),
            col("Images", 1),
            col("Selector", 1),
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let (c, im) = containers_images(obj, "/spec/jobTemplate/spec/template/spec/containers");
        let last = obj.pointer("/status/lastScheduleTime").and_then(Value::as_str).map(|t| since(Some(t))).unwrap_or_else(|| "<none>".into());
        vec![
            json!(crate::meta::name(obj)),
            json!(s(obj, "/spec/schedule")),
            json!(or_none(s(obj, "/spec/timeZone"))),
            json!(if obj.pointer("/spec/suspend") == Some(&json!(true)) { "True" } else { "False" }),
            json!(arr(obj, "/status/active").len()),
            json!(last),
            age(obj),
            json!(c),
            json!(im),
            json!(label_selector_string(obj.pointer("/spec/jobTemplate/spec/selector"))),
        ]
    }
}
