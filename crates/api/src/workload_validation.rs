//! Cross-field validation of the workload kinds, as upstream's `pkg/apis/apps/validation` and
//! `pkg/apis/batch/validation` do it: update strategies, rolling-update bounds, counts that must
//! not be negative, the restart policy a controller's pod template may have, and the fields that
//! are immutable after create. Field paths and messages are upstream's.

use serde_json::{Value, json};

use crate::errors::FieldError;

type Errs = Vec<FieldError>;

fn at<'a>(obj: &'a Value, ptr: &str) -> Option<&'a Value> {
    obj.pointer(ptr).filter(|v| !v.is_null())
}

/// `ValidateNonnegativeField` for every (pointer, field path) that is set.
fn nonnegative(obj: &Value, fields: &[(&str, &str)], errs: &mut Errs) {
    for (ptr, path) in fields {
        if let Some(n) = at(obj, ptr).and_then(Value::as_i64)
            && n < 0
        {
            errs.push(FieldError::invalid(*path, &json!(n), "must be greater than or equal to 0"));
        }
    }
}

/// The value of an int-or-percent (a percent counts as its number), and whether it was valid.
fn int_or_percent(v: &Value, path: &str, errs: &mut Errs) -> Option<(i64, bool)> {
    match v {
        Value::Number(n) => {
            let n = n.as_i64().unwrap_or(0);
            if n < 0 {
                errs.push(FieldError::invalid(path, v, "must be greater than or equal to 0"));
            }
            Some((n, false))
        }
        Value::String(s) => {
            let digits = s.strip_suffix('%').filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
            match digits {
                Some(d) => Some((d.parse().unwrap_or(i64::MAX), true)),
                None => {
                    errs.push(FieldError::invalid(path, v, "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"));
                    None
                }
            }
        }
        _ => None,
    }
}

/// maxUnavailable / maxSurge of a Deployment or DaemonSet rolling update.
fn rolling_update(ru: &Value, path: &str, errs: &mut Errs) {
    let unavailable_path = format!("{path}.maxUnavailable");
    let unavailable = ru.get("maxUnavailable").filter(|v| !v.is_null());
    let surge = ru.get("maxSurge").filter(|v| !v.is_null());
    let u = unavailable.and_then(|v| int_or_percent(v, &unavailable_path, errs));
    let s = surge.and_then(|v| int_or_percent(v, &format!("{path}.maxSurge"), errs));
    if u.is_some_and(|(n, _)| n == 0) && s.is_none_or(|(n, _)| n == 0) {
        errs.push(FieldError::invalid(&unavailable_path, unavailable.unwrap_or(&Value::Null), "may not be 0 when `maxSurge` is 0"));
    }
    if let (Some((n, true)), Some(v)) = (u, unavailable)
        && n > 100
    {
        errs.push(FieldError::invalid(&unavailable_path, v, "must not be greater than 100%"));
    }
}

/// Pod templates of controllers that keep pods running (Deployment, ReplicaSet, RC,
/// DaemonSet, StatefulSet) must restart them always.
fn template_restarts_always(obj: &Value, errs: &mut Errs) {
    let Some(spec) = at(obj, "/spec/template/spec") else {
        return;
    };
    let rp = spec.get("restartPolicy").and_then(Value::as_str).unwrap_or("Always");
    if rp != "Always" {
        errs.push(FieldError::not_supported("spec.template.spec.restartPolicy", &json!(rp), &["Always"]));
    }
    if spec.get("activeDeadlineSeconds").is_some_and(|v| !v.is_null()) {
        errs.push(FieldError::forbidden("spec.template.spec.activeDeadlineSeconds", "activeDeadlineSeconds in ReplicaSet is not Supported"));
    }
}

pub fn deployment(obj: &Value, errs: &mut Errs) {
    template_restarts_always(obj, errs);
    nonnegative(
        obj,
        &[
            ("/spec/minReadySeconds", "spec.minReadySeconds"),
            ("/spec/revisionHistoryLimit", "spec.revisionHistoryLimit"),
            ("/spec/progressDeadlineSeconds", "spec.progressDeadlineSeconds"),
        ],
        errs,
    );
    if let Some(strategy) = at(obj, "/spec/strategy") {
        let ru = strategy.get("rollingUpdate").filter(|v| !v.is_null());
        match strategy.get("type").and_then(Value::as_str).unwrap_or("") {
            "Recreate" => {
                if ru.is_some() {
                    errs.push(FieldError::forbidden("spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'"));
                }
            }
            "RollingUpdate" => match ru {
                Some(ru) => rolling_update(ru, "spec.strategy.rollingUpdate", errs),
                None => errs.push(FieldError::required("spec.strategy.rollingUpdate", "this should be defaulted and never be nil")),
            },
            other => errs.push(FieldError::not_supported("spec.strategy.type", &json!(other), &["Recreate", "RollingUpdate"])),
        }
    }
    if let Some(pd) = at(obj, "/spec/progressDeadlineSeconds").and_then(Value::as_i64) {
        let min_ready = at(obj, "/spec/minReadySeconds").and_then(Value::as_i64).unwrap_or(0);
        if pd <= min_ready {
            errs.push(FieldError::invalid("spec.progressDeadlineSeconds", &json!(pd), "must be greater than minReadySeconds"));
        }
    }
}

/// ReplicationControllers are not validated by the apps path that checks replicas.
pub fn replication_controller(obj: &Value, errs: &mut Errs) {
    nonnegative(obj, &[("/spec/replicas", "spec.replicas")], errs);
    replica_set(obj, errs);
}

pub fn replica_set(obj: &Value, errs: &mut Errs) {
    template_restarts_always(obj, errs);
    nonnegative(obj, &[("/spec/minReadySeconds", "spec.minReadySeconds")], errs);
}

pub fn daemon_set(obj: &Value, errs: &mut Errs) {
    template_restarts_always(obj, errs);
    nonnegative(obj, &[("/spec/minReadySeconds", "spec.minReadySeconds"), ("/spec/revisionHistoryLimit", "spec.revisionHistoryLimit")], errs);
    if let Some(strategy) = at(obj, "/spec/updateStrategy") {
        match strategy.get("type").and_then(Value::as_str).unwrap_or("") {
            "OnDelete" => {}
            "RollingUpdate" => match strategy.get("rollingUpdate").filter(|v| !v.is_null()) {
                Some(ru) => rolling_update(ru, "spec.updateStrategy.rollingUpdate", errs),
                None => errs.push(FieldError::required("spec.updateStrategy.rollingUpdate", "")),
            },
            other => errs.push(FieldError::not_supported("spec.updateStrategy.type", &json!(other), &["RollingUpdate", "OnDelete"])),
        }
    }
}

pub fn stateful_set(obj: &Value, old: Option<&Value>, errs: &mut Errs) {
    template_restarts_always(obj, errs);
    nonnegative(
        obj,
        &[
            ("/spec/minReadySeconds", "spec.minReadySeconds"),
            ("/spec/revisionHistoryLimit", "spec.revisionHistoryLimit"),
            ("/spec/updateStrategy/rollingUpdate/partition", "spec.updateStrategy.rollingUpdate.partition"),
        ],
        errs,
    );
    if let Some(p) = at(obj, "/spec/podManagementPolicy").and_then(Value::as_str)
        && p != "OrderedReady"
        && p != "Parallel"
    {
        errs.push(FieldError::not_supported("spec.podManagementPolicy", &json!(p), &["OrderedReady", "Parallel"]));
    }
    if let Some(strategy) = at(obj, "/spec/updateStrategy") {
        let ru = strategy.get("rollingUpdate").filter(|v| !v.is_null());
        match strategy.get("type").and_then(Value::as_str).unwrap_or("") {
            "OnDelete" => {
                if let Some(ru) = ru {
                    errs.push(FieldError::invalid("spec.updateStrategy.rollingUpdate", ru, "only allowed for updateStrategy 'RollingUpdate'"));
                }
            }
            "RollingUpdate" => {
                if let Some(mu) = ru.and_then(|r| r.get("maxUnavailable")).filter(|v| !v.is_null()) {
                    let path = "spec.updateStrategy.rollingUpdate.maxUnavailable";
                    if let Some((n, pct)) = int_or_percent(mu, path, errs) {
                        if n == 0 {
                            errs.push(FieldError::invalid(path, mu, "must be greater than 0"));
                        } else if pct && n > 100 {
                            errs.push(FieldError::invalid(path, mu, "must not be greater than 100%"));
                        }
                    }
                }
            }
            other => errs.push(FieldError::not_supported("spec.updateStrategy.type", &json!(other), &["OnDelete", "RollingUpdate"])),
        }
    }
    if let Some(old) = old {
        // Only these spec fields may change after create.
        let strip = |v: &Value| {
            let mut s = v.get("spec").cloned().unwrap_or(json!({}));
            if let Some(m) = s.as_object_mut() {
                for k in ["replicas", "ordinals", "template", "updateStrategy", "persistentVolumeClaimRetentionPolicy", "minReadySeconds", "selector"] {
                    m.remove(k);
                }
            }
            s
        };
        if strip(old) != strip(obj) {
            errs.push(FieldError::forbidden(
                "spec",
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            ));
        }
    }
}

/// A Job spec at `base` (a JSON pointer: "/spec" or "/spec/jobTemplate/spec") with field paths
/// under `path`.
fn job_spec(obj: &Value, base: &str, path: &str, errs: &mut Errs) {
    let field = |f: &str| (format!("{base}/{f}"), format!("{path}.{f}"));
    let fields: Vec<(String, String)> =
        ["parallelism", "completions", "activeDeadlineSeconds", "backoffLimit", "ttlSecondsAfterFinished"].iter().map(|f| field(f)).collect();
    let refs: Vec<(&str, &str)> = fields.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    nonnegative(obj, &refs, errs);
    let mode = at(obj, &format!("{base}/completionMode")).and_then(Value::as_str);
    match mode {
        None | Some("NonIndexed") => {}
        Some("Indexed") => {
            if at(obj, &format!("{base}/completions")).is_none() {
                errs.push(FieldError::required(format!("{path}.completions"), "when completion mode is Indexed"));
            }
        }
        Some(other) => errs.push(FieldError::not_supported(format!("{path}.completionMode"), &json!(other), &["NonIndexed", "Indexed"])),
    }
}

pub fn job(obj: &Value, old: Option<&Value>, errs: &mut Errs) {
    job_spec(obj, "/spec", "spec", errs);
    if let Some(old) = old {
        // The pod template is immutable, except what upstream lets a suspended job change
        // (scheduling directives); a template change is reported as upstream reports it.
        let tmpl = |v: &Value| {
            let mut t = v.pointer("/spec/template").cloned().unwrap_or(Value::Null);
            if let Some(spec) = t.get_mut("spec").and_then(Value::as_object_mut) {
                for k in ["nodeSelector", "tolerations", "affinity", "schedulingGates"] {
                    spec.remove(k);
                }
            }
            if let Some(md) = t.get_mut("metadata").and_then(Value::as_object_mut) {
                md.remove("labels");
                md.remove("annotations");
            }
            t
        };
        if tmpl(old) != tmpl(obj) {
            errs.push(FieldError::invalid("spec.template", obj.pointer("/spec/template").unwrap_or(&Value::Null), "field is immutable"));
        }
        let mode = |v: &Value| at(v, "/spec/completionMode").and_then(Value::as_str).unwrap_or("NonIndexed").to_string();
        if mode(old) != mode(obj) {
            errs.push(FieldError::invalid("spec.completionMode", &json!(mode(obj)), "field is immutable"));
        }
    }
}

pub fn cron_job(obj: &Value, errs: &mut Errs) {
    nonnegative(
        obj,
        &[
            ("/spec/startingDeadlineSeconds", "spec.startingDeadlineSeconds"),
            ("/spec/successfulJobsHistoryLimit", "spec.successfulJobsHistoryLimit"),
            ("/spec/failedJobsHistoryLimit", "spec.failedJobsHistoryLimit"),
        ],
        errs,
    );
    if let Some(p) = at(obj, "/spec/concurrencyPolicy").and_then(Value::as_str)
        && !["Allow", "Forbid", "Replace"].contains(&p)
    {
        errs.push(FieldError::not_supported("spec.concurrencyPolicy", &json!(p), &["Allow", "Forbid", "Replace"]));
    }
    job_spec(obj, "/spec/jobTemplate/spec", "spec.jobTemplate.spec", errs);
    if let Some(spec) = at(obj, "/spec/jobTemplate/spec/template/spec") {
        let rp = spec.get("restartPolicy").and_then(Value::as_str).unwrap_or("");
        if rp != "OnFailure" && rp != "Never" {
            errs.push(FieldError::not_supported("spec.jobTemplate.spec.template.spec.restartPolicy", &json!(rp), &["OnFailure", "Never"]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(FieldError::message).collect()
    }

    fn deploy(strategy: Value) -> Value {
        json!({"spec": {"strategy": strategy, "progressDeadlineSeconds": 600, "template": {"spec": {"restartPolicy": "Always"}}}})
    }

    #[test]
    fn recreate_with_rolling_update_is_forbidden() {
        let mut errs = vec![];
        deployment(&deploy(json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}})), &mut errs);
        assert_eq!(messages(&errs), vec!["spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"]);
    }

    #[test]
    fn rolling_update_bounds() {
        let mut errs = vec![];
        deployment(&deploy(json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}})), &mut errs);
        assert_eq!(messages(&errs), vec!["spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0"]);
        let mut errs = vec![];
        deployment(&deploy(json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "x", "maxUnavailable": "150%"}})), &mut errs);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(messages(&errs)[1].ends_with("must not be greater than 100%"));
    }

    #[test]
    fn controller_templates_restart_always() {
        let mut errs = vec![];
        replica_set(&json!({"spec": {"template": {"spec": {"restartPolicy": "Never"}}}}), &mut errs);
        assert_eq!(messages(&errs), vec!["spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""]);
    }

    #[test]
    fn statefulset_spec_is_mostly_immutable() {
        let old = json!({"spec": {"serviceName": "a", "replicas": 1}});
        let mut errs = vec![];
        stateful_set(&json!({"spec": {"serviceName": "b", "replicas": 2}}), Some(&old), &mut errs);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message().starts_with("spec: Forbidden: updates to statefulset spec for fields other than 'replicas'"));
    }
}
