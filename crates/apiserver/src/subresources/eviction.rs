//! pods/eviction: deletes a pod unless that would break a PodDisruptionBudget, taking the
//! budget's disruption in a compare-and-swap so parallel evictions cannot both spend it.

use axum::response::Response;
use http::StatusCode;
use r8s_api::{ResourceInfo, Subresource};
use serde_json::{Value, json};

use crate::handlers::{AppState, json_response};
use crate::registry::{DeleteOptions, ListOptions, WriteOptions};
use crate::request::Output;
use crate::status::{ApiError, ApiResult, success_status};

pub async fn evict(state: &AppState, info: &ResourceInfo, ns: Option<&str>, name: &str, eviction: &Value) -> ApiResult<Response> {
    let pod = state.registry.get(info, ns, name).await?;
    let labels = r8s_api::meta::labels(&pod);
    let pdb_info = state.catalog.find("policy", "v1", "poddisruptionbudgets").expect("pdb resource");
    let pdbs = state.registry.list(&pdb_info, ns, &ListOptions::default()).await?;
    let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
    let terminal = phase == "Succeeded" || phase == "Failed";
    for b in &pdbs.items {
        let pdb: Value = serde_json::from_slice(b).map_err(ApiError::internal)?;
        let Some(sel) = pdb.pointer("/spec/selector") else {
            continue;
        };
        if terminal || !r8s_api::strategy::selector_matches(sel, &labels) {
            continue;
        }
        let pdb_name = r8s_api::meta::name(&pdb).to_string();
        // Check and take the disruption in one compare-and-swap of the budget, so concurrent
        // evictions (kubectl drain sends them in parallel) cannot both spend the last one.
        state
            .registry
            .update_with(&pdb_info, ns, &pdb_name, Some(Subresource::Status), &WriteOptions::default(), |mut p| {
                let a = p.pointer("/status/disruptionsAllowed").and_then(Value::as_i64).unwrap_or(0);
                if a < 1 {
                    let current = p.pointer("/status/currentHealthy").and_then(Value::as_i64).unwrap_or(0);
                    let desired = p.pointer("/status/desiredHealthy").and_then(Value::as_i64).unwrap_or(0);
                    return Err(ApiError::too_many_requests("Cannot evict pod as it would violate the pod's disruption budget.").with_details(json!({
                        "causes": [{"reason": "DisruptionBudget", "message": format!("The disruption budget {pdb_name} needs {desired} healthy pods and has {current} currently")}]
                    })));
                }
                p["status"]["disruptionsAllowed"] = json!(a - 1);
                // The disruption controller must not count this pod as healthy while it goes.
                let disrupted = r8s_api::meta::obj_mut(&mut p, &["status"]).entry("disruptedPods").or_insert(json!({}));
                if let Some(m) = disrupted.as_object_mut() {
                    m.insert(name.to_string(), json!(r8s_api::meta::now_rfc3339()));
                }
                Ok(p)
            })
            .await?;
    }
    let mut opts = DeleteOptions::default();
    if let Some(d) = eviction.get("deleteOptions") {
        opts.grace_period_seconds = d.get("gracePeriodSeconds").and_then(Value::as_i64);
        opts.precondition_uid = d.pointer("/preconditions/uid").and_then(Value::as_str).map(str::to_string);
    }
    state.registry.delete(info, ns, name, &opts).await?;
    Ok(json_response(StatusCode::CREATED, &success_status(json!({})), Output::Json))
}
