//! The request pipeline, in upstream's order, each stage in its own module:
//! `request_info` (what is asked) -> `authn` (who asks; per request) -> `authz` (may they) ->
//! body read with the size limit -> `handlers` (routing, decoding) -> `registry` (with the
//! `admission` chain) -> store. Remote requests (TLS) and in-process ones go through the same
//! stages; only the identity they carry differs.
//!
//! The whole request is kept until dispatch (extensions included): an upgrade (the coming
//! `pods/exec`, `attach`, `portforward` WebSocket proxies) needs the raw request, so such
//! requests get their body unread (`RequestContext::raw_body`).

use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use http::request::Parts;

use crate::authn::UserInfo;
use crate::authz::Decision;
use crate::handlers::AppState;
use crate::request_info::RequestInfo;
use crate::status::ApiError;

/// Everything the later stages know about a request.
pub struct RequestContext {
    pub info: RequestInfo,
    pub user: UserInfo,
    /// Method, URI, headers and extensions (the TLS peer, hyper's upgrade handle).
    pub parts: Parts,
    /// The body of an upgrade request, left unread for the handler that takes the connection
    /// (behind a lock only so the context can be shared across awaits).
    pub raw_body: std::sync::Mutex<Option<Body>>,
    /// hyper's handle on the client connection of an upgrade request (WebSocket exec/attach),
    /// taken by the handler that proxies the stream.
    pub upgrade: std::sync::Mutex<Option<hyper::upgrade::OnUpgrade>>,
}

/// Paths anyone may read, anonymous requests included (until RBAC exists, anonymous requests
/// get 401 everywhere else).
const PUBLIC_PATHS: &[&str] = &["/healthz", "/livez", "/readyz", "/version"];

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.get(http::header::CONNECTION).and_then(|v| v.to_str().ok()).is_some_and(|v| v.to_ascii_lowercase().contains("upgrade"))
}

/// The API server's one entry point, for network and in-process requests alike.
pub async fn handle(state: Arc<AppState>, req: http::Request<Body>) -> Response {
    let (parts, body) = req.into_parts();
    let info = RequestInfo::new(&parts.method, parts.uri.path(), parts.uri.query());
    let user = match state.authn.authenticate(&parts).await {
        Ok(u) => u,
        Err(_) => return ApiError::unauthorized().into_response(),
    };
    if PUBLIC_PATHS.contains(&info.path.as_str()) {
        return crate::handlers::public(&state, &info.path);
    }
    let Some(user) = user else {
        return ApiError::unauthorized().into_response();
    };
    match state.authz.authorize(&user, &info).await {
        Decision::Allow => {}
        Decision::Deny(reason) => {
            return crate::authz::forbidden(&user, &info, &reason).into_response();
        }
        Decision::NoOpinion => return crate::authz::forbidden(&user, &info, "").into_response(),
    }
    let (raw_body, bytes) = if is_upgrade(&parts.headers) {
        (Some(body), bytes::Bytes::new())
    } else {
        match crate::handlers::read_body(body).await {
            Ok(b) => (None, b),
            Err(e) => return e.into_response(),
        }
    };
    if info.is_resource_request {
        state.requests.count(&info);
    }
    let mut parts = parts;
    let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let ctx = RequestContext { info, user, parts, raw_body: std::sync::Mutex::new(raw_body), upgrade: std::sync::Mutex::new(upgrade) };
    match crate::handlers::dispatch(&state, &ctx, bytes).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// Test and in-process helper: a request with an in-process identity.
pub fn in_process_request(user: UserInfo, req: http::Request<Body>) -> http::Request<Body> {
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(crate::authn::InProcessIdentity(user));
    http::Request::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    //! The pipeline in-process over an embedded store: no TLS, no kubectl.
    use std::sync::Arc;

    use axum::body::Body;
    use futures::future::BoxFuture;
    use http_body_util::BodyExt;
    use serde_json::{Value, json};

    use super::*;
    use crate::admission::{self, Attributes, Operation, Plugin};
    use crate::authz::{AlwaysAllow, Authorizer};
    use crate::registry::Registry;
    use crate::status::ApiResult;

    struct Harness {
        state: Arc<AppState>,
        _dir: tempfile::TempDir,
    }

    async fn harness(authz: Box<dyn Authorizer>, admission: admission::Chain) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn r8s_store::Store> = Arc::new(r8s_store::embedded::EmbeddedStore::open(dir.path()).unwrap());
        let cidr = "10.96.0.0/12".parse().unwrap();
        let state = crate::build_state(store, cidr, false, "127.0.0.1:6443".into(), authz, admission);
        crate::bootstrap::run(&state.registry, &state.catalog, 6443, "127.0.0.1".parse().unwrap()).await.unwrap();
        Harness { state, _dir: dir }
    }

    fn alice() -> UserInfo {
        UserInfo { name: "alice".into(), groups: vec!["system:authenticated".into()], ..Default::default() }
    }

    async fn send(h: &Harness, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(Body::from(body.map(|b| b.to_string()).unwrap_or_default()))
            .unwrap();
        let resp = handle(h.state.clone(), in_process_request(alice(), req)).await;
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    fn cm(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "b"}})
    }

    const CMS: &str = "/api/v1/namespaces/default/configmaps";

    /// Denies one verb, allows the rest.
    struct DenyVerb(&'static str);

    impl Authorizer for DenyVerb {
        fn authorize<'a>(&'a self, _user: &'a UserInfo, req: &'a RequestInfo) -> BoxFuture<'a, Decision> {
            Box::pin(async move { if req.verb == self.0 { Decision::Deny(String::new()) } else { Decision::Allow } })
        }
    }

    #[tokio::test]
    async fn a_denied_verb_answers_403_and_changes_nothing() {
        let h = harness(Box::new(DenyVerb("delete")), admission::Chain::default()).await;
        let (code, v) = send(&h, "POST", CMS, Some(cm("kept"))).await;
        assert_eq!(code, 201, "{v}");
        let (code, v) = send(&h, "DELETE", &format!("{CMS}/kept"), None).await;
        assert_eq!(code, 403, "{v}");
        assert_eq!(v["reason"], "Forbidden");
        assert_eq!(
            v["message"],
            "configmaps \"kept\" is forbidden: User \"alice\" cannot delete resource \"configmaps\" in API group \"\" in the namespace \"default\""
        );
        let (code, _) = send(&h, "GET", &format!("{CMS}/kept"), None).await;
        assert_eq!(code, 200);
        // Nothing was stored by a denied create either.
        let h = harness(Box::new(DenyVerb("create")), admission::Chain::default()).await;
        let (code, _) = send(&h, "POST", CMS, Some(cm("never"))).await;
        assert_eq!(code, 403);
        let (code, _) = send(&h, "GET", &format!("{CMS}/never"), None).await;
        assert_eq!(code, 404);
    }

    /// Labels every ConfigMap it admits with the requesting user and the operation.
    struct StampUser;

    impl Plugin for StampUser {
        fn name(&self) -> &'static str {
            "StampUser"
        }
        fn admit<'a>(&'a self, _reg: &'a Registry, a: &'a mut Attributes) -> BoxFuture<'a, ApiResult<()>> {
            Box::pin(async move {
                let who = a.user.as_ref().map(|u| u.name.clone()).unwrap_or_default();
                let op = a.operation.as_str().to_lowercase();
                if let Some(obj) = a.object.as_mut().filter(|_| a.resource.kind == "ConfigMap") {
                    obj["metadata"]["labels"] = json!({"stamped-by": who, "op": op});
                }
                Ok(())
            })
        }
    }

    /// Refuses objects named bad-*, and any delete of "guarded".
    struct RefuseBad;

    impl Plugin for RefuseBad {
        fn name(&self) -> &'static str {
            "RefuseBad"
        }
        fn validate<'a>(&'a self, _reg: &'a Registry, a: &'a Attributes) -> BoxFuture<'a, ApiResult<()>> {
            Box::pin(async move {
                if a.name.starts_with("bad-") || (a.operation == Operation::Delete && a.name == "guarded") {
                    return Err(crate::status::ApiError::forbidden(format!("configmaps \"{}\" is forbidden: refused by RefuseBad", a.name)));
                }
                Ok(())
            })
        }
    }

    #[tokio::test]
    async fn admission_plugins_mutate_and_reject() {
        let mut chain = admission::Chain::default();
        chain.plugins.push(Box::new(StampUser));
        chain.plugins.push(Box::new(RefuseBad));
        let h = harness(Box::new(AlwaysAllow), chain).await;
        let (code, v) = send(&h, "POST", CMS, Some(cm("good"))).await;
        assert_eq!(code, 201, "{v}");
        assert_eq!(v["metadata"]["labels"], json!({"stamped-by": "alice", "op": "create"}));
        // Updates pass through the chain too.
        let (code, v) = send(&h, "PATCH", &format!("{CMS}/good"), Some(json!({"data": {"a": "c"}}))).await;
        assert_eq!(code, 415, "merge patch needs its content type: {v}");
        let (code, v) = send(&h, "PUT", &format!("{CMS}/good"), Some(cm("good"))).await;
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["metadata"]["labels"]["op"], "update");
        // A refusal stores nothing.
        let (code, v) = send(&h, "POST", CMS, Some(cm("bad-one"))).await;
        assert_eq!(code, 403, "{v}");
        assert_eq!(v["message"], "configmaps \"bad-one\" is forbidden: refused by RefuseBad");
        let (code, _) = send(&h, "GET", &format!("{CMS}/bad-one"), None).await;
        assert_eq!(code, 404);
        // Deletes are admitted too.
        let (code, _) = send(&h, "POST", CMS, Some(cm("guarded"))).await;
        assert_eq!(code, 201);
        let (code, _) = send(&h, "DELETE", &format!("{CMS}/guarded"), None).await;
        assert_eq!(code, 403);
        let (code, _) = send(&h, "GET", &format!("{CMS}/guarded"), None).await;
        assert_eq!(code, 200);
    }

    #[tokio::test]
    async fn anonymous_requests_get_401_except_health() {
        let h = harness(Box::new(AlwaysAllow), admission::Chain::default()).await;
        h.state.ready.store(true, std::sync::atomic::Ordering::SeqCst);
        for (path, want) in [("/readyz", 200), ("/version", 200), (CMS, 401), ("/api", 401)] {
            let req = http::Request::builder().uri(path).body(Body::empty()).unwrap();
            assert_eq!(handle(h.state.clone(), req).await.status().as_u16(), want, "{path}");
        }
    }
}
