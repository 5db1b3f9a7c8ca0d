//! API errors and their `Status` bodies, with upstream's codes, reasons and messages.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use r8s_api::ResourceInfo;
use r8s_api::errors::{FieldError, invalid_message};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError { code, reason, message: message.into(), details: None }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", msg)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", msg)
    }

    pub fn not_found(info: &ResourceInfo, name: &str) -> Self {
        let mut d = json!({"name": name, "kind": info.plural});
        if !info.group.is_empty() {
            d["group"] = json!(info.group);
        }
        Self::new(404, "NotFound", format!("{} \"{}\" not found", info.group_resource(), name)).with_details(d)
    }

    pub fn namespace_not_found(ns: &str) -> Self {
        Self::new(404, "NotFound", format!("namespaces \"{ns}\" not found")).with_details(json!({"name": ns, "kind": "namespaces"}))
    }

    pub fn no_route() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource").with_details(json!({}))
    }

    pub fn already_exists(info: &ResourceInfo, name: &str) -> Self {
        let mut d = json!({"name": name, "kind": info.plural});
        if !info.group.is_empty() {
            d["group"] = json!(info.group);
        }
        Self::new(409, "AlreadyExists", format!("{} \"{}\" already exists", info.group_resource(), name)).with_details(d)
    }

    pub fn conflict(info: &ResourceInfo, name: &str, why: &str) -> Self {
        let mut d = json!({"name": name, "kind": info.plural});
        if !info.group.is_empty() {
            d["group"] = json!(info.group);
        }
        Self::new(409, "Conflict", format!("Operation cannot be fulfilled on {} \"{}\": {}", info.group_resource(), name, why)).with_details(d)
    }

    pub fn stale(info: &ResourceInfo, name: &str) -> Self {
        Self::conflict(info, name, "the object has been modified; please apply your changes to the latest version and try again")
    }

    pub fn invalid(info: &ResourceInfo, name: &str, errs: &[FieldError]) -> Self {
        let qualified = if info.group.is_empty() { info.kind.clone() } else { format!("{}.{}", info.kind, info.group) };
        let causes: Vec<Value> = errs.iter().map(|e| json!({"reason": e.reason(), "message": e.body(), "field": e.field})).collect();
        let mut d = json!({"name": name, "kind": info.kind, "causes": causes});
        if !info.group.is_empty() {
            d["group"] = json!(info.group);
        }
        Self::new(422, "Invalid", invalid_message(&qualified, name, errs)).with_details(d)
    }

    /// A patch whose result does not decode: upstream's NewInvalid with no kind or name and
    /// the patched object as the invalid value of the field "patch".
    pub fn invalid_patch(patched: &str, err: &str) -> Self {
        let e = FieldError::invalid("patch", &json!(patched), err);
        let causes = json!([{"reason": e.reason(), "message": e.body(), "field": e.field}]);
        Self::new(422, "Invalid", invalid_message("", "", &[e])).with_details(json!({"causes": causes}))
    }

    pub fn method_not_allowed() -> Self {
        Self::new(405, "MethodNotAllowed", "the server does not allow this method on the requested resource").with_details(json!({}))
    }

    pub fn gone(msg: impl Into<String>) -> Self {
        Self::new(410, "Expired", msg)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(413, "RequestEntityTooLarge", format!("Request entity too large: limit is {limit}"))
    }

    pub fn unsupported_media_type(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {ct})"
            ),
        )
    }

    pub fn not_acceptable() -> Self {
        Self::new(406, "NotAcceptable", "only the following media types are accepted: application/json, application/yaml")
    }

    pub fn internal(msg: impl std::fmt::Display) -> Self {
        Self::new(500, "InternalError", format!("Internal error occurred: {msg}"))
    }

    pub fn timeout(msg: impl Into<String>) -> Self {
        Self::new(504, "Timeout", msg)
    }

    pub fn too_many_requests(msg: impl Into<String>) -> Self {
        Self::new(429, "TooManyRequests", msg)
    }

    pub fn to_status(&self) -> Value {
        // Go's field order of metav1.Status: kind, apiVersion, metadata, status, message,
        // reason, details, code (clients print and some compare these bodies verbatim).
        let mut s = serde_json::Map::new();
        s.insert("kind".into(), json!("Status"));
        s.insert("apiVersion".into(), json!("v1"));
        s.insert("metadata".into(), json!({}));
        s.insert("status".into(), json!("Failure"));
        s.insert("message".into(), json!(self.message));
        if !self.reason.is_empty() {
            s.insert("reason".into(), json!(self.reason));
        }
        if let Some(d) = &self.details {
            s.insert("details".into(), go_order(d, &["name", "group", "kind", "uid", "causes", "retryAfterSeconds"]));
        }
        s.insert("code".into(), json!(self.code));
        Value::Object(s)
    }
}

/// An object's members in a Go struct's field order (the listed ones first, the rest after).
fn go_order(v: &Value, order: &[&str]) -> Value {
    let Some(m) = v.as_object() else { return v.clone() };
    let mut out = serde_json::Map::new();
    for k in order {
        if let Some(x) = m.get(*k) {
            out.insert((*k).to_string(), x.clone());
        }
    }
    for (k, x) in m {
        if !order.contains(&k.as_str()) {
            out.insert(k.clone(), x.clone());
        }
    }
    Value::Object(out)
}

impl From<r8s_store::StoreError> for ApiError {
    fn from(e: r8s_store::StoreError) -> Self {
        match e {
            r8s_store::StoreError::Compacted { compacted } => {
                ApiError::gone(format!("The resourceVersion for the provided list is too old. Current compacted revision: {compacted}"))
            }
            r8s_store::StoreError::FutureRevision { current } => {
                ApiError::timeout(format!("Too large resource version: requested revision is newer than the current revision {current}"))
            }
            e @ (r8s_store::StoreError::Unavailable(_) | r8s_store::StoreError::Timeout) => {
                ApiError::new(503, "ServiceUnavailable", format!("the storage is unavailable: {e}"))
            }
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        crate::handlers::json_response(code, &self.to_status(), crate::request::Output::Json)
    }
}

/// A success Status (e.g. for deletes of some resources).
pub fn success_status(details: Value) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_details_keep_go_field_order() {
        let e = ApiError::new(404, "NotFound", "x").with_details(json!({"kind": "deployments", "causes": [], "name": "n", "group": "apps"}));
        assert_eq!(
            serde_json::to_string(&e.to_status()).unwrap(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"x","reason":"NotFound","details":{"name":"n","group":"apps","kind":"deployments","causes":[]},"code":404}"#
        );
    }
}
