//! PATCH requests: picks the engine from the content type and runs it inside the registry's
//! read-modify-write loop (so concurrent writers retry instead of losing updates).

use std::collections::HashMap;

use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use r8s_api::{ResourceInfo, Subresource};
use serde_json::{Value, json};

use crate::handlers::{AppState, render_object, with_warnings, write_options};
use crate::patch::{json_patch, merge_patch, strategic_merge_patch};
use crate::pipeline::RequestContext;
use crate::registry::{FieldValidation, WriteOptions, WriteOrigin};
use crate::request::{BodyFormat, Output, body_format, decode_body};
use crate::status::{ApiError, ApiResult};
use crate::subresources::scale::{scale_of, update_scale};

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
            let merged =
                strategic_merge_patch(current, patch).map_err(|e| ApiError::new(422, "Invalid", format!("{} \"{name}\" is invalid: {e}", info.kind)))?;
            // Upstream merges maps before it decodes the result (FromUnstructured): a value of
            // the wrong shape is reported against the whole patch, with the converter's words.
            let mut typed = merged.clone();
            match crate::fieldcheck::check(&info.group, &info.version, &info.kind, &mut typed).unstructured_error {
                Some(e) => Err(invalid_patch(patch, &e)),
                None => Ok(merged),
            }
        }
        _ => Err(ApiError::unsupported_media_type("")),
    }
}

/// Upstream's `field.Invalid(field.NewPath("patch"), fmt.Sprintf("%+v", patchMap), err)` in
/// an Invalid error without a kind or name.
fn invalid_patch(patch: &Value, err: &str) -> ApiError {
    let body = format!("Invalid value: {}: {err}", go_quote(&go_format(patch)));
    ApiError::new(422, "Invalid", format!(" \"\" is invalid: patch: {body}"))
        .with_details(json!({"causes": [{"reason": "FieldValueInvalid", "message": body, "field": "patch"}]}))
}

/// A decoded JSON value as Go's `%+v` prints it: `map[k:v ...]` with sorted keys, `[a b]`.
fn go_format(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys.iter().map(|k| format!("{k}:{}", go_format(&m[*k]))).collect();
            format!("map[{}]", parts.join(" "))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(go_format).collect::<Vec<_>>().join(" ")),
        Value::String(s) => s.clone(),
        Value::Null => "<nil>".into(),
        other => other.to_string(),
    }
}

/// Go's `%q` of a string (the field error's rendering of an invalid value).
fn go_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

#[allow(clippy::too_many_arguments)]
pub async fn patch(
    state: &AppState,
    ctx: &RequestContext,
    info: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    sub: Option<Subresource>,
    query: &HashMap<String, String>,
    body: &Bytes,
    out: Output,
) -> ApiResult<Response> {
    let headers = &ctx.parts.headers;
    let fmt = body_format(headers)?;
    let reg = &state.registry;
    match fmt {
        BodyFormat::Json | BodyFormat::Yaml | BodyFormat::Protobuf => {
            return Err(ApiError::unsupported_media_type(headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("")));
        }
        BodyFormat::ApplyPatch => {
            return server_side_apply(state, ctx, info, ns, name, sub, query, body, out).await;
        }
        _ => {}
    }
    let patch = decode_body(body, false)?;
    let opts = WriteOptions { origin: WriteOrigin::Patch, ..write_options(ctx, true)? };
    crate::handlers::check_duplicates(info, body, &opts)?;
    if sub == Some(Subresource::Scale) {
        let updated = update_scale(reg, info, ns, name, &opts, |scale| apply_patch(fmt, info, name, &scale, &patch)).await?;
        return crate::handlers::render_object(state, info, scale_of(info, &updated), Output::Json, query, StatusCode::OK);
    }
    let updated = reg.update_with(info, ns, name, sub, &opts, |current| apply_patch(fmt, info, name, &current, &patch)).await?;
    Ok(with_warnings(render_object(state, info, updated, out, query, StatusCode::OK)?, &opts))
}

#[allow(clippy::too_many_arguments)]
async fn server_side_apply(
    state: &AppState,
    ctx: &RequestContext,
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
    let mut config = decode_body(body, true)?;
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
        return Err(ApiError::bad_request(format!("the API version in the data ({av}) does not match the expected API version ({})", info.api_version())));
    }
    let opts = WriteOptions { field_manager: Some(manager.clone()), operation: "Apply", origin: WriteOrigin::Apply, ..write_options(ctx, false)? };
    check_apply_config(state, info, ns, name, &mut config, &opts)?;
    let api_version = info.api_version();
    for _ in 0..8 {
        match state.registry.get(info, ns, name).await {
            Err(e) if e.code == 404 && sub.is_none() => {
                let mut obj = crate::apply::apply(None, &config, &manager, force, &api_version).map_err(|c| conflict_error(info, name, &c))?;
                r8s_api::meta::metadata_mut(&mut obj).insert("name".into(), json!(name));
                match state.registry.create(info, ns, obj, &opts).await {
                    Ok(created) => {
                        return Ok(with_warnings(render_object(state, info, created, out, query, StatusCode::CREATED)?, &opts));
                    }
                    Err(e) if e.code == 409 && e.reason == "AlreadyExists" => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
            Ok(_) => {
                let res = state
                    .registry
                    .update_with(info, ns, name, sub, &opts, |current| {
                        let mut merged = crate::apply::apply_as_kubectl_upgrade(&current, &config, &manager, force, &api_version)
                            .map_err(|c| conflict_error(info, name, &c))?;
                        // Apply never carries a resourceVersion precondition of its own.
                        if let Some(rv) = current.pointer("/metadata/resourceVersion") {
                            r8s_api::meta::metadata_mut(&mut merged).insert("resourceVersion".into(), rv.clone());
                        }
                        Ok(merged)
                    })
                    .await;
                match res {
                    Ok(updated) => {
                        return Ok(with_warnings(render_object(state, info, updated, out, query, StatusCode::OK)?, &opts));
                    }
                    Err(e) if e.code == 404 => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Err(ApiError::stale(info, name))
}

/// Unknown fields in an apply configuration: upstream's typed conversion of the patch object
/// names them "field not declared in schema"; under Warn and Ignore they are dropped.
fn check_apply_config(state: &AppState, info: &ResourceInfo, ns: Option<&str>, name: &str, config: &mut Value, opts: &WriteOptions) -> ApiResult<()> {
    let mut unknown = Vec::new();
    if info.custom {
        if let Some(schema) = state.catalog.schema(info) {
            crate::crd::prune_reporting(config, &schema, &mut unknown);
        }
    } else {
        let f = crate::fieldcheck::check(&info.group, &info.version, &info.kind, config);
        let gvk = format!("{}/{}, Kind={}", info.group, info.version, info.kind);
        let what = format!("{gvk} {}/{name}", ns.unwrap_or(""));
        if let Some(e) = f.type_error {
            return Err(ApiError::bad_request(format!("failed to create typed patch object ({what}): {e}")));
        }
        if opts.field_validation == FieldValidation::Strict && !f.unknown.is_empty() {
            let errs: Vec<String> = f.unknown.iter().map(|p| format!(".{p}: field not declared in schema")).collect();
            return Err(ApiError::bad_request(format!("failed to create typed patch object ({what}): {}", errs.join(", "))));
        }
        unknown = f.unknown;
    }
    match opts.field_validation {
        FieldValidation::Strict if !unknown.is_empty() => {
            let listed: Vec<String> = unknown.iter().map(|p| format!("unknown field \"{p}\"")).collect();
            Err(ApiError::bad_request(format!("strict decoding error: {}", listed.join(", "))))
        }
        FieldValidation::Warn => {
            unknown.into_iter().for_each(|p| opts.warn(format!("unknown field \"{p}\"")));
            Ok(())
        }
        _ => Ok(()),
    }
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
