//! pods/binding: assigns a pod to a node, writing nodeName and the PodScheduled condition at once.

use axum::response::Response;
use http::StatusCode;
use r8s_api::{ResourceInfo, Subresource};
use serde_json::{Value, json};

use crate::handlers::{AppState, json_response, write_options};
use crate::pipeline::RequestContext;
use crate::request::Output;
use crate::status::{ApiError, ApiResult, success_status};

pub async fn bind(state: &AppState, ctx: &RequestContext, info: &ResourceInfo, ns: Option<&str>, name: &str, binding: &Value) -> ApiResult<Response> {
    let node = binding.pointer("/target/name").and_then(Value::as_str).unwrap_or("").to_string();
    if node.is_empty() {
        return Err(ApiError::invalid(info, name, &[r8s_api::errors::FieldError::required("target.name", "")]));
    }
    let opts = write_options(ctx, false)?;
    let now = r8s_api::meta::now_rfc3339();
    state
        .registry
        .update_with(info, ns, name, Some(Subresource::Binding), &opts, |mut pod| {
            if pod.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()) {
                return Err(ApiError::conflict(info, name, "pod is being deleted, cannot be assigned to a host"));
            }
            if let Some(existing) = pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|s| !s.is_empty()) {
                return Err(ApiError::conflict(info, name, &format!("pod {name} is already assigned to node \"{existing}\"")));
            }
            pod["spec"]["nodeName"] = json!(node);
            // The PodScheduled condition goes in the same write.
            let conds = r8s_api::meta::obj_mut(&mut pod, &["status"]).entry("conditions").or_insert(json!([]));
            if let Some(list) = conds.as_array_mut() {
                list.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
                list.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now}));
            }
            Ok(pod)
        })
        .await?;
    Ok(json_response(StatusCode::CREATED, &success_status(json!({})), Output::Json))
}
