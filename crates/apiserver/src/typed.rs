//! The built-in kinds' Rust types (k8s-openapi), as the resource table names them for each
//! served version: type checking of bodies and schema generation for OpenAPI.

use r8s_api::ResourceInfo;
use serde_json::Value;

use crate::status::{ApiError, ApiResult};

/// Rejects a body that does not decode as the kind's type (wrong field types). Missing required
/// fields are left to validation, which reports them as upstream does (422).
pub fn check(info: &ResourceInfo, obj: &Value) -> ApiResult<()> {
    match info.behavior.typed.map(|t| t.check(obj)) {
        Some(Err(e)) if !e.starts_with("missing field") => {
            Err(ApiError::bad_request(format!("{} in version \"{}\" cannot be handled as a {}: {e}", info.kind, info.version, info.kind)))
        }
        _ => Ok(()),
    }
}

/// Adds the schema of a built-in resource's type (and everything it references) to
/// `generator`; returns the schema's definition name.
pub fn schema_for(generator: &mut schemars::SchemaGenerator, info: &ResourceInfo) -> Option<String> {
    info.behavior.typed.map(|t| t.schema(generator))
}
