//! What a request asks for, built once from the HTTP request before anything else looks at it
//! (upstream's `RequestInfoFactory`): the verb (get, list, watch, create, update, patch, delete,
//! deletecollection, or the HTTP method for paths outside the resource API), API group and
//! version, resource, subresource, namespace and name. Authorization and admission read it.

use http::Method;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// True under /api and /apis with a resource; false for /healthz, /version, discovery...
    pub is_resource_request: bool,
    pub path: String,
    pub verb: String,
    pub api_group: String,
    pub api_version: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

impl RequestInfo {
    /// Reads the request line (method, path, query). Never fails: what is not a resource request
    /// is a non-resource one, with the lowercased method as its verb.
    pub fn new(method: &Method, path: &str, query: Option<&str>) -> RequestInfo {
        let mut info = RequestInfo { path: path.to_string(), verb: method.as_str().to_lowercase(), ..Default::default() };
        let parts: Vec<String> = path.trim_matches('/').split('/').filter(|p| !p.is_empty()).map(decode).collect();
        let rest: &[String] = match parts.first().map(String::as_str) {
            Some("api") if parts.len() >= 2 => {
                info.api_version = parts[1].clone();
                &parts[2..]
            }
            Some("apis") if parts.len() >= 3 => {
                info.api_group = parts[1].clone();
                info.api_version = parts[2].clone();
                &parts[3..]
            }
            _ => return info,
        };
        if rest.is_empty() {
            // Discovery of a group/version.
            return info;
        }
        info.is_resource_request = true;
        let mut rest: Vec<String> = rest.to_vec();
        // The deprecated /watch/ prefix.
        let mut watch_prefix = false;
        if rest.first().map(String::as_str) == Some("watch") {
            watch_prefix = true;
            rest.remove(0);
        }
        // namespaces/<ns>/<resource>...; "namespaces/<name>" and its own subresources
        // (status, finalize) are the namespace itself.
        if rest.first().map(String::as_str) == Some("namespaces") && rest.len() > 1 {
            info.namespace = rest[1].clone();
            if rest.len() > 2 && !["status", "finalize"].contains(&rest[2].as_str()) {
                rest.drain(..2);
            }
        }
        info.resource = rest.first().cloned().unwrap_or_default();
        info.name = rest.get(1).cloned().unwrap_or_default();
        info.subresource = rest.get(2).cloned().unwrap_or_default();
        let watch_param = query.is_some_and(|q| {
            q.split('&').any(|kv| matches!(kv.split_once('='), Some(("watch", v)) if matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True")))
        });
        let no_name = info.name.is_empty();
        info.verb = match *method {
            Method::GET | Method::HEAD if watch_prefix || (no_name && watch_param) => "watch",
            Method::GET | Method::HEAD if no_name => "list",
            Method::GET | Method::HEAD => "get",
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE if no_name => "deletecollection",
            Method::DELETE => "delete",
            _ => {
                return RequestInfo { verb: method.as_str().to_lowercase(), ..info };
            }
        }
        .to_string();
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ri(method: Method, path: &str, query: Option<&str>) -> RequestInfo {
        RequestInfo::new(&method, path, query)
    }

    #[test]
    fn resource_requests() {
        let r = ri(Method::GET, "/api/v1/namespaces/default/pods", None);
        assert_eq!(
            (r.verb.as_str(), r.api_group.as_str(), r.api_version.as_str(), r.namespace.as_str(), r.resource.as_str(), r.name.as_str()),
            ("list", "", "v1", "default", "pods", "")
        );
        assert!(r.is_resource_request);
        let r = ri(Method::GET, "/api/v1/namespaces/default/pods", Some("watch=true&resourceVersion=5"));
        assert_eq!(r.verb, "watch");
        let r = ri(Method::GET, "/api/v1/watch/namespaces/default/pods/p", None);
        assert_eq!((r.verb.as_str(), r.name.as_str()), ("watch", "p"));
        let r = ri(Method::POST, "/api/v1/namespaces/default/pods/web-0/exec", Some("command=sh"));
        assert_eq!((r.verb.as_str(), r.name.as_str(), r.subresource.as_str()), ("create", "web-0", "exec"));
        let r = ri(Method::PUT, "/apis/apps/v1/namespaces/ns1/deployments/d/status", None);
        assert_eq!(
            (r.verb.as_str(), r.api_group.as_str(), r.namespace.as_str(), r.resource.as_str(), r.subresource.as_str()),
            ("update", "apps", "ns1", "deployments", "status")
        );
        let r = ri(Method::PATCH, "/api/v1/nodes/n1", None);
        assert_eq!((r.verb.as_str(), r.namespace.as_str(), r.resource.as_str(), r.name.as_str()), ("patch", "", "nodes", "n1"));
        let r = ri(Method::DELETE, "/apis/batch/v1/namespaces/x/jobs", None);
        assert_eq!(r.verb, "deletecollection");
        let r = ri(Method::DELETE, "/api/v1/namespaces/x", None);
        assert_eq!((r.verb.as_str(), r.resource.as_str(), r.name.as_str(), r.namespace.as_str()), ("delete", "namespaces", "x", "x"));
        let r = ri(Method::PUT, "/api/v1/namespaces/x/finalize", None);
        assert_eq!((r.verb.as_str(), r.resource.as_str(), r.name.as_str(), r.subresource.as_str()), ("update", "namespaces", "x", "finalize"));
        let r = ri(Method::GET, "/api/v1/namespaces", None);
        assert_eq!((r.verb.as_str(), r.resource.as_str()), ("list", "namespaces"));
    }

    #[test]
    fn non_resource_requests() {
        for p in ["/healthz", "/version", "/api", "/api/v1", "/apis/apps/v1", "/openapi/v3"] {
            let r = ri(Method::GET, p, None);
            assert!(!r.is_resource_request, "{p}");
            assert_eq!(r.verb, "get");
            assert_eq!(r.path, p);
        }
    }
}
