//! Authorization: may this user do what the RequestInfo says? A trait with one implementation
//! today (`AlwaysAllow`); RBAC and the Node authorizer are further implementations. A denial
//! answers upstream's 403 Status.

use futures::future::BoxFuture;
use serde_json::json;

use crate::authn::UserInfo;
use crate::request_info::RequestInfo;
use crate::status::ApiError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Denied, with an optional reason appended to the message.
    Deny(String),
    /// This authorizer has no opinion (the next one decides; none left: denied).
    NoOpinion,
}

/// What a user may do in a namespace, as `kubectl auth can-i --list` shows it
/// (SelfSubjectRulesReview): PolicyRule-shaped resource and non-resource rules.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rules {
    pub resource_rules: Vec<serde_json::Value>,
    pub non_resource_rules: Vec<serde_json::Value>,
    /// The list may leave out what the authorizer cannot enumerate.
    pub incomplete: bool,
}

pub trait Authorizer: Send + Sync {
    fn authorize<'a>(&'a self, user: &'a UserInfo, req: &'a RequestInfo) -> BoxFuture<'a, Decision>;

    /// The rules that apply to `user` in `namespace`; an authorizer that cannot list them
    /// answers an incomplete, empty list.
    fn rules_for<'a>(&'a self, _user: &'a UserInfo, _namespace: &'a str) -> BoxFuture<'a, Rules> {
        Box::pin(async { Rules { incomplete: true, ..Rules::default() } })
    }
}

pub struct AlwaysAllow;

impl Authorizer for AlwaysAllow {
    fn authorize<'a>(&'a self, _user: &'a UserInfo, _req: &'a RequestInfo) -> BoxFuture<'a, Decision> {
        Box::pin(async { Decision::Allow })
    }

    /// Everything, as upstream's AlwaysAllow lists it.
    fn rules_for<'a>(&'a self, _user: &'a UserInfo, _namespace: &'a str) -> BoxFuture<'a, Rules> {
        Box::pin(async {
            Rules {
                resource_rules: vec![json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})],
                non_resource_rules: vec![json!({"verbs": ["*"], "nonResourceURLs": ["*"]})],
                incomplete: false,
            }
        })
    }
}

/// Upstream's 403 for a denied request (responsewriters.Forbidden).
pub fn forbidden(user: &UserInfo, req: &RequestInfo, reason: &str) -> ApiError {
    let what = if !req.is_resource_request {
        format!("User {:?} cannot {} path {:?}", user.name, req.verb, req.path)
    } else {
        let resource = if req.subresource.is_empty() { req.resource.clone() } else { format!("{}/{}", req.resource, req.subresource) };
        if req.namespace.is_empty() {
            format!("User {:?} cannot {} resource {:?} in API group {:?} at the cluster scope", user.name, req.verb, resource, req.api_group)
        } else {
            format!("User {:?} cannot {} resource {:?} in API group {:?} in the namespace {:?}", user.name, req.verb, resource, req.api_group, req.namespace)
        }
    };
    let msg = if reason.is_empty() { what } else { format!("{what}: {reason}") };
    let qualified = if req.api_group.is_empty() { req.resource.clone() } else { format!("{}.{}", req.resource, req.api_group) };
    let full = match (qualified.is_empty(), req.name.is_empty()) {
        (true, _) => format!("forbidden: {msg}"),
        (false, true) => format!("{qualified} is forbidden: {msg}"),
        (false, false) => format!("{qualified} {:?} is forbidden: {msg}", req.name),
    };
    let mut details = json!({"kind": req.resource});
    if !req.name.is_empty() {
        details["name"] = json!(req.name);
    }
    if !req.api_group.is_empty() {
        details["group"] = json!(req.api_group);
    }
    ApiError::forbidden(full).with_details(details)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn forbidden_messages_are_upstreams() {
        let bob = UserInfo { name: "bob".into(), ..Default::default() };
        let r = RequestInfo::new(&Method::GET, "/api/v1/namespaces/default/pods", None);
        let e = forbidden(&bob, &r, "");
        assert_eq!(e.code, 403);
        assert_eq!(e.message, "pods is forbidden: User \"bob\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\"");
        let r = RequestInfo::new(&Method::DELETE, "/apis/apps/v1/namespaces/x/deployments/d", None);
        assert_eq!(
            forbidden(&bob, &r, "").message,
            "deployments.apps \"d\" is forbidden: User \"bob\" cannot delete resource \"deployments\" in API group \"apps\" in the namespace \"x\""
        );
        let r = RequestInfo::new(&Method::GET, "/api/v1/nodes", None);
        assert!(forbidden(&bob, &r, "").message.ends_with("at the cluster scope"));
        let r = RequestInfo::new(&Method::GET, "/metrics", None);
        assert_eq!(forbidden(&bob, &r, "").message, "forbidden: User \"bob\" cannot get path \"/metrics\"");
    }
}
