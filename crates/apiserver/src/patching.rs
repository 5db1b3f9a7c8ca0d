//! PATCH requests: picks the engine from the content type and runs it inside the registry's
//! read-modify-write loop (so concurrent writers retry instead of losing updates).

use std::collections::HashMap;

use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use r8s_api::{ResourceInfo, Subresource};
use serde_json::{Value, json};

use crate::handlers::{AppState, render_object, scale_of, update_scale};
use crate::patch::{json_patch, merge_patch, strategic_merge_patch};
use crate::registry::WriteOptions;
use crate::request::{BodyFormat, Output, body_format, decode_body};
use crate::status::{ApiError, ApiResult};

fn apply_patch(fmt: BodyFormat, info: &ResourceInfo, name: &str, current: &Value, patch: &Value) -> ApiResult<Value> {
    match fmt {
        BodyFormat::JsonPatch => json_patch(current, patch).map_err(|e| ApiError::new(422, "Invalid", e)),
        BodyFormat::MergePatch => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("merge patch must be an object"));
            }
            Ok(merge_patch(current, patch))
        }
        BodyFormat::StrategicMergePatch => {
            if info.custom {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    "strategic merge patch is not supported for custom resources; use application/merge-patch+json",
                ));
            }
            if !patch.is_object() {
                return Err(ApiError::bad_request("strategic merge patch must be an object"));
            }
            strategic_merge_patch(current, patch).map_err(|e| ApiError::new(422, "Invalid", format!("{} \"{name}\" is invalid: {e}", info.kind)))
        }
        _ => Err(ApiError::unsupported_media_type("")),
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn patch(
    state: &AppState,
    info: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    sub: Option<Subresource>,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    body: &Bytes,
    out: Output,
) -> ApiResult<Response> {
    let fmt = body_format(headers)?;
    let reg = &state.registry;
    match fmt {
        BodyFormat::Json | BodyFormat::Yaml | BodyFormat::Protobuf => {
            return Err(ApiError::unsupported_media_type(headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("")));
        }
        BodyFormat::ApplyPatch => return server_side_apply(state, info, ns, name, sub, query, body, out).await,
        _ => {}
    }
    let patch = decode_body(body, false)?;
    let opts = write_options(query, headers)?;
    if sub == Some(Subresource::Scale) {
        let updated = update_scale(reg, info, ns, name, &opts, |scale| apply_patch(fmt, info, name, &scale, &patch)).await?;
        return Ok(crate::handlers::render_object(state, info, scale_of(info, &updated), Output::Json, query, StatusCode::OK)?);
    }
    let updated = reg.update_with(info, ns, name, sub, &opts, |current| apply_patch(fmt, info, name, &current, &patch)).await?;
    render_object(state, info, updated, out, query, StatusCode::OK)
}

fn write_options(query: &HashMap<String, String>, headers: &HeaderMap) -> ApiResult<WriteOptions> {
    let dry_run = query.get("dryRun").map(String::as_str) == Some("All");
    let field_manager = query.get("fieldManager").cloned().filter(|s| !s.is_empty()).or_else(|| {
        headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()).map(|ua| ua.split('/').next().unwrap_or(ua).to_string())
    });
    Ok(WriteOptions { dry_run, field_manager, operation: "Update" })
}

#[allow(clippy::too_many_arguments)]
async fn server_side_apply(
    state: &AppState,
    info: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    sub: Option<Subresource>,
    query: &HashMap<String, String>,
    body: &Bytes,
    out: Output,
) -> ApiResult<Response> {
    let manager = query.get("fieldManager").cloned().unwrap_or_default();
    if manager.is_empty() {
        return Err(ApiError::new(422, "Invalid", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"));
    }
    let force = crate::handlers::query_bool(query, "force");
    let config = decode_body(body, true)?;
    if !config.is_object() {
        return Err(ApiError::bad_request("apply patch must be an object"));
    }
    let cfg_name = r8s_api::meta::name(&config);
    if !cfg_name.is_empty() && cfg_name != name {
        return Err(ApiError::bad_request(format!("the name of the object ({cfg_name}) does not match the name on the URL ({name})")));
    }
    let av = config.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = config.get("kind").and_then(Value::as_str).unwrap_or("");
    if av != info.api_version() || kind != info.kind {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            info.api_version()
        )));
    }
    let opts = WriteOptions { dry_run: query.get("dryRun").map(String::as_str) == Some("All"), field_manager: Some(manager.clone()), operation: "Apply" };
    let api_version = info.api_version();
    for _ in 0..8 {
        match state.registry.get(info, ns, name).await {
            Err(e) if e.code == 404 && sub.is_none() => {
                let mut obj = crate::apply::apply(None, &config, &manager, force, &api_version).map_err(|c| conflict_error(info, name, &c))?;
                r8s_api::meta::metadata_mut(&mut obj).insert("name".into(), json!(name));
                match state.registry.create(info, ns, obj, &opts).await {
                    Ok(created) => return render_object(state, info, created, out, query, StatusCode::CREATED),
                    Err(e) if e.code == 409 && e.reason == "AlreadyExists" => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
            Ok(_) => {
                let res = state
                    .registry
                    .update_with(info, ns, name, sub, &opts, |current| {
                        let mut merged = crate::apply::apply(Some(&current), &config, &manager, force, &api_version).map_err(|c| conflict_error(info, name, &c))?;
                        // Apply never carries a resourceVersion precondition of its own.
                        if let Some(rv) = current.pointer("/metadata/resourceVersion") {
                            r8s_api::meta::metadata_mut(&mut merged).insert("resourceVersion".into(), rv.clone());
                        }
                        Ok(merged)
                    })
                    .await;
                match res {
                    Ok(updated) => return render_object(state, info, updated, out, query, StatusCode::OK),
                    Err(e) if e.code == 404 => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Err(ApiError::stale(info, name))
}

fn conflict_error(info: &ResourceInfo, name: &str, conflicts: &[crate::apply::Conflict]) -> ApiError {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{}\" using {}", c.manager, c.api_version), "field": c.path}))
        .collect();
    let mut details = json!({"name": name, "kind": info.plural, "causes": causes});
    if !info.group.is_empty() {
        details["group"] = json!(info.group);
    }
    ApiError::new(409, "Conflict", crate::apply::conflict_message(conflicts)).with_details(details)
}
