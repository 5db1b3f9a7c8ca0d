//! The review APIs: questions asked by creating an object, answered in its status, never
//! stored. `kubectl auth whoami` (SelfSubjectReview), `kubectl auth can-i`
//! (SelfSubjectAccessReview, `--list`: SelfSubjectRulesReview), and the SubjectAccessReview /
//! LocalSubjectAccessReview that components use to ask about someone else. Every answer comes
//! from the server's authorizer, so they stay true when RBAC replaces allow-all.

use serde_json::{Value, json};

use crate::authn::UserInfo;
use crate::authz::Decision;
use crate::pipeline::RequestContext;
use crate::request_info::RequestInfo;
use r8s_api::ResourceInfo;

use crate::handlers::AppState;
use crate::status::{ApiError, ApiResult};

/// Whether the resource is one of the review kinds (answered here, not stored).
pub fn is_review(info: &ResourceInfo) -> bool {
    matches!(info.group.as_str(), "authentication.k8s.io" | "authorization.k8s.io") && info.plural.ends_with("reviews")
}

fn user_json(u: &UserInfo) -> Value {
    let mut v = json!({"username": u.name, "groups": u.groups});
    if !u.uid.is_empty() {
        v["uid"] = json!(u.uid);
    }
    if !u.extra.is_empty() {
        v["extra"] = json!(u.extra);
    }
    v
}

/// The request a SubjectAccessReview spec describes, as the authorizer sees requests.
fn request_of(spec: &Value) -> Result<RequestInfo, String> {
    if let Some(r) = spec.get("resourceAttributes").filter(|v| v.is_object()) {
        let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        return Ok(RequestInfo {
            is_resource_request: true,
            path: String::new(),
            verb: s("verb"),
            api_group: s("group"),
            api_version: s("version"),
            namespace: s("namespace"),
            resource: s("resource"),
            subresource: s("subresource"),
            name: s("name"),
        });
    }
    if let Some(n) = spec.get("nonResourceAttributes").filter(|v| v.is_object()) {
        let s = |k: &str| n.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        return Ok(RequestInfo { is_resource_request: false, path: s("path"), verb: s("verb"), ..RequestInfo::default() });
    }
    Err("exactly one of nonResourceAttributes or resourceAttributes must be specified".into())
}

fn access_status(d: Decision) -> Value {
    match d {
        Decision::Allow => json!({"allowed": true}),
        Decision::Deny(reason) => json!({"allowed": false, "denied": true, "reason": reason}),
        Decision::NoOpinion => json!({"allowed": false}),
    }
}

fn invalid(info: &ResourceInfo, field: &str, msg: &str) -> ApiError {
    ApiError::invalid(info, "", &[r8s_api::errors::FieldError::invalid(field, &Value::Null, msg)])
}

/// Answers a review: the object back with its status filled in (201, as upstream).
pub async fn create(state: &AppState, ctx: &RequestContext, info: &ResourceInfo, ns: Option<&str>, mut obj: Value) -> ApiResult<Value> {
    let spec = obj.get("spec").cloned().unwrap_or(json!({}));
    let status = match info.plural.as_str() {
        "selfsubjectreviews" => json!({"userInfo": user_json(&ctx.user)}),
        "selfsubjectaccessreviews" => {
            let req = request_of(&spec).map_err(|m| invalid(info, "spec", &m))?;
            access_status(state.authz.authorize(&ctx.user, &req).await)
        }
        "subjectaccessreviews" | "localsubjectaccessreviews" => {
            let req = request_of(&spec).map_err(|m| invalid(info, "spec", &m))?;
            if info.plural == "localsubjectaccessreviews" && req.namespace != ns.unwrap_or_default() {
                return Err(invalid(info, "spec.resourceAttributes.namespace", "must match metadata.namespace"));
            }
            let s = |k: &str| spec.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            let user = UserInfo {
                name: s("user"),
                uid: s("uid"),
                groups: spec
                    .get("groups")
                    .and_then(Value::as_array)
                    .map(|g| g.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                    .unwrap_or_default(),
                extra: serde_json::from_value(spec.get("extra").cloned().unwrap_or(json!({}))).unwrap_or_default(),
            };
            if user.name.is_empty() && user.groups.is_empty() {
                return Err(invalid(info, "spec.user", "at least one of user or group must be specified"));
            }
            access_status(state.authz.authorize(&user, &req).await)
        }
        "selfsubjectrulesreviews" => {
            let namespace = spec.get("namespace").and_then(Value::as_str).unwrap_or_default();
            let rules = state.authz.rules_for(&ctx.user, namespace).await;
            json!({"resourceRules": rules.resource_rules, "nonResourceRules": rules.non_resource_rules, "incomplete": rules.incomplete})
        }
        _ => return Err(ApiError::method_not_allowed()),
    };
    obj["status"] = status;
    if let Some(md) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        md.insert("creationTimestamp".into(), Value::Null);
    } else {
        obj["metadata"] = json!({"creationTimestamp": null});
    }
    Ok(obj)
}
