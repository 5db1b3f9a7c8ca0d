//! Request parsing: the resource path, query parameters, body decoding and content negotiation.

use std::collections::HashMap;

use bytes::Bytes;
use http::HeaderMap;
use serde_json::Value;

use crate::status::{ApiError, ApiResult};

/// Bodies larger than this are refused (upstream's default for JSON/YAML).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// A path under /api or /apis that names resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePath {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub plural: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// The legacy `/watch/` path prefix.
    pub watch_prefix: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/<group>`
    Group(String),
    /// `/api/v1`, `/apis/<group>/<version>`
    ResourceList {
        group: String,
        version: String,
    },
    Resource(ResourcePath),
}

fn decode_segment(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

pub fn parse_route(path: &str) -> Option<Route> {
    let segs: Vec<String> = path.trim_end_matches('/').split('/').filter(|s| !s.is_empty()).map(decode_segment).collect();
    let (group, version, rest) = match segs.first().map(String::as_str) {
        Some("api") => match segs.len() {
            1 => return Some(Route::CoreVersions),
            _ => (String::new(), segs[1].clone(), &segs[2..]),
        },
        Some("apis") => match segs.len() {
            1 => return Some(Route::Groups),
            2 => return Some(Route::Group(segs[1].clone())),
            _ => (segs[1].clone(), segs[2].clone(), &segs[3..]),
        },
        _ => return None,
    };
    let mut rest = rest.to_vec();
    if rest.is_empty() {
        return Some(Route::ResourceList { group, version });
    }
    let mut watch_prefix = false;
    if rest[0] == "watch" {
        watch_prefix = true;
        rest.remove(0);
    }
    let mut p = ResourcePath { group, version, namespace: None, plural: String::new(), name: None, subresource: None, watch_prefix };
    if rest[0] == "namespaces" && rest.len() >= 3 && !(rest.len() == 3 && (rest[2] == "status" || rest[2] == "finalize")) {
        p.namespace = Some(rest[1].clone());
        rest.drain(..2);
    }
    p.plural = rest[0].clone();
    if rest.len() > 1 {
        p.name = Some(rest[1].clone());
    }
    if rest.len() > 2 {
        p.subresource = Some(rest[2..].join("/"));
    }
    if p.plural.is_empty() {
        return None;
    }
    Some(Route::Resource(p))
}

pub fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(q.unwrap_or("").as_bytes()).into_owned().collect()
}

/// What the client wants back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Json,
    Yaml,
    Table,
    PartialMetadata,
}

/// Picks the response format from the Accept header (first acceptable entry wins).
pub fn negotiate(headers: &HeaderMap) -> ApiResult<Output> {
    let accept = headers.get(http::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.trim().is_empty() {
        return Ok(Output::Json);
    }
    for entry in accept.split(',') {
        let mut parts = entry.split(';').map(str::trim);
        let mt = parts.next().unwrap_or("");
        let params: HashMap<&str, &str> = parts.filter_map(|p| p.split_once('=')).collect();
        match mt {
            "application/json" | "*/*" | "application/*" => match params.get("as").copied() {
                Some("Table") => {
                    if params.get("g").copied() == Some("meta.k8s.io") {
                        return Ok(Output::Table);
                    }
                }
                Some("PartialObjectMetadata") | Some("PartialObjectMetadataList") => {
                    return Ok(Output::PartialMetadata);
                }
                Some(_) => continue,
                None => return Ok(Output::Json),
            },
            "application/yaml" => return Ok(Output::Yaml),
            _ => continue,
        }
    }
    Err(ApiError::not_acceptable())
}

/// The body format a request sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Yaml,
    JsonPatch,
    MergePatch,
    StrategicMergePatch,
    ApplyPatch,
    Protobuf,
}

pub fn body_format(headers: &HeaderMap) -> ApiResult<BodyFormat> {
    let ct = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    let mt = ct.split(';').next().unwrap_or("").trim();
    Ok(match mt {
        "application/json" | "" | "*/*" => BodyFormat::Json,
        "application/yaml" => BodyFormat::Yaml,
        "application/json-patch+json" => BodyFormat::JsonPatch,
        "application/merge-patch+json" => BodyFormat::MergePatch,
        "application/strategic-merge-patch+json" => BodyFormat::StrategicMergePatch,
        "application/apply-patch+yaml" | "application/apply-patch+json" => BodyFormat::ApplyPatch,
        "application/vnd.kubernetes.protobuf" => BodyFormat::Protobuf,
        other => return Err(ApiError::unsupported_media_type(other)),
    })
}

/// Decodes an object body in any accepted format.
pub fn decode_object(body: &Bytes, fmt: BodyFormat) -> ApiResult<Value> {
    match fmt {
        BodyFormat::Protobuf => {
            if body.len() > MAX_BODY {
                return Err(ApiError::too_large(MAX_BODY));
            }
            crate::protobuf::decode(body).map_err(|e| ApiError::bad_request(format!("failed to decode protobuf body: {e}")))
        }
        BodyFormat::Yaml => decode_body(body, true),
        _ => decode_body(body, false),
    }
}

/// Decodes a JSON or YAML body into a value.
pub fn decode_body(body: &Bytes, yaml: bool) -> ApiResult<Value> {
    if body.len() > MAX_BODY {
        return Err(ApiError::too_large(MAX_BODY));
    }
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::bad_request("the body of the request was empty"));
    }
    let trimmed = body.iter().position(|b| !b.is_ascii_whitespace()).map(|i| &body[i..]).unwrap_or(&body[..]);
    let looks_json = trimmed.first().is_some_and(|c| *c == b'{' || *c == b'[');
    if !yaml || looks_json {
        match serde_json::from_slice::<Value>(body) {
            Ok(v) => return Ok(v),
            // A YAML document sent as JSON (`kubectl create --raw -f pod.yaml` sends the file
            // as it is): read it as YAML, as upstream's YAML-or-JSON decoder does.
            Err(e) if !yaml => {
                let as_yaml = (!looks_json).then(|| serde_yaml::from_slice::<serde_yaml::Value>(body).ok()).flatten();
                match as_yaml.and_then(|v| serde_json::to_value(v).ok()).filter(Value::is_object) {
                    Some(v) => return Ok(v),
                    None => return Err(ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))),
                }
            }
            Err(_) => {}
        }
    }
    let v: serde_yaml::Value = serde_yaml::from_slice(body).map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: yaml: {e}")))?;
    serde_json::to_value(v).map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(parse_route("/api"), Some(Route::CoreVersions));
        assert_eq!(parse_route("/apis/apps/v1"), Some(Route::ResourceList { group: "apps".into(), version: "v1".into() }));
        let Some(Route::Resource(p)) = parse_route("/api/v1/namespaces/default/pods/web/status") else { panic!() };
        assert_eq!(
            (p.namespace.as_deref(), p.plural.as_str(), p.name.as_deref(), p.subresource.as_deref()),
            (Some("default"), "pods", Some("web"), Some("status"))
        );
        let Some(Route::Resource(p)) = parse_route("/api/v1/namespaces/kube-system") else { panic!() };
        assert_eq!((p.namespace, p.plural.as_str(), p.name.as_deref()), (None, "namespaces", Some("kube-system")));
        let Some(Route::Resource(p)) = parse_route("/api/v1/namespaces/x/finalize") else { panic!() };
        assert_eq!((p.plural.as_str(), p.name.as_deref(), p.subresource.as_deref()), ("namespaces", Some("x"), Some("finalize")));
        let Some(Route::Resource(p)) = parse_route("/apis/apps/v1/deployments") else { panic!() };
        assert_eq!((p.namespace, p.name), (None, None));
    }

    #[test]
    fn accept_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::ACCEPT,
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json".parse().unwrap(),
        );
        assert_eq!(negotiate(&h).unwrap(), Output::Table);
        h.insert(http::header::ACCEPT, "application/vnd.kubernetes.protobuf".parse().unwrap());
        assert!(negotiate(&h).is_err());
    }
}
