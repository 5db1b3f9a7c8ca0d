//! Authentication: who a request comes from, decided per request by a chain of authenticators
//! over the whole request (upstream's union authenticator). Today: client certificates (CN =
//! user, O = groups; the TLS layer verified the chain against the cluster CA and attached the
//! peer certificate to every request of the connection) and the in-process identity of
//! components running inside the server. Bearer, bootstrap and service-account tokens are
//! further entries of the same chain.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use http::request::Parts;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    pub fn from_certificate(der: &[u8]) -> Option<UserInfo> {
        let (cn, orgs) = r8s_pki::certificate_subject(der)?;
        let mut groups = orgs;
        groups.push("system:authenticated".into());
        Some(UserInfo { name: cn, groups, ..Default::default() })
    }

    /// The identity of components running inside the server process.
    pub fn internal(component: &str) -> UserInfo {
        UserInfo { name: format!("system:{component}"), groups: vec!["system:masters".into(), "system:authenticated".into()], ..Default::default() }
    }
}

/// The verified client certificate of the request's TLS connection, as a request extension
/// the TLS server attaches to every request of the connection. The subject is parsed once per
/// connection (the `OnceLock` is shared by the connection's requests); which identity a
/// request carries is still decided per request by the chain.
#[derive(Clone, Debug)]
pub struct PeerCertificate {
    der: std::sync::Arc<Vec<u8>>,
    subject: std::sync::Arc<std::sync::OnceLock<Option<UserInfo>>>,
}

impl PeerCertificate {
    pub fn new(der: Vec<u8>) -> Self {
        PeerCertificate { der: std::sync::Arc::new(der), subject: Default::default() }
    }

    fn user(&self) -> Option<UserInfo> {
        self.subject.get_or_init(|| UserInfo::from_certificate(&self.der)).clone()
    }
}

/// The identity an in-process transport attaches to its requests (never set from the network:
/// only code in this process can put it in a request's extensions).
#[derive(Clone, Debug)]
pub struct InProcessIdentity(pub UserInfo);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthResult {
    Authenticated(UserInfo),
    /// This authenticator found no credentials of its kind.
    NoCredentials,
    /// Credentials of its kind that are not valid (the chain answers 401).
    Invalid(String),
}

pub trait Authenticator: Send + Sync {
    fn authenticate<'a>(&'a self, req: &'a Parts) -> BoxFuture<'a, AuthResult>;
}

/// Client certificates.
pub struct X509;

impl Authenticator for X509 {
    fn authenticate<'a>(&'a self, req: &'a Parts) -> BoxFuture<'a, AuthResult> {
        Box::pin(async move {
            match req.extensions.get::<PeerCertificate>() {
                None => AuthResult::NoCredentials,
                Some(c) => match c.user() {
                    Some(u) => AuthResult::Authenticated(u),
                    None => AuthResult::Invalid("x509: certificate has no usable subject".into()),
                },
            }
        })
    }
}

/// Components inside this process.
pub struct InProcess;

impl Authenticator for InProcess {
    fn authenticate<'a>(&'a self, req: &'a Parts) -> BoxFuture<'a, AuthResult> {
        Box::pin(async move {
            match req.extensions.get::<InProcessIdentity>() {
                Some(id) => AuthResult::Authenticated(id.0.clone()),
                None => AuthResult::NoCredentials,
            }
        })
    }
}

/// Tries each authenticator in order; the first that authenticates wins. None: anonymous.
pub struct Chain(pub Vec<Box<dyn Authenticator>>);

impl Default for Chain {
    fn default() -> Self {
        Chain(vec![Box::new(InProcess), Box::new(X509)])
    }
}

impl Chain {
    pub async fn authenticate(&self, req: &Parts) -> Result<Option<UserInfo>, String> {
        let mut errors = Vec::new();
        for a in &self.0 {
            match a.authenticate(req).await {
                AuthResult::Authenticated(u) => return Ok(Some(u)),
                AuthResult::NoCredentials => {}
                AuthResult::Invalid(e) => errors.push(e),
            }
        }
        if errors.is_empty() { Ok(None) } else { Err(errors.join(", ")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chain_takes_the_first_identity_and_is_per_request() {
        let chain = Chain::default();
        let (mut parts, _) = http::Request::new(()).into_parts();
        assert_eq!(chain.authenticate(&parts).await, Ok(None));
        parts.extensions.insert(InProcessIdentity(UserInfo::internal("scheduler")));
        let u = chain.authenticate(&parts).await.unwrap().unwrap();
        assert_eq!(u.name, "system:scheduler");
        parts.extensions.insert(PeerCertificate::new(b"not a certificate".to_vec()));
        // The in-process identity comes first in the chain.
        assert_eq!(chain.authenticate(&parts).await.unwrap().unwrap().name, "system:scheduler");
        let (mut parts, _) = http::Request::new(()).into_parts();
        parts.extensions.insert(PeerCertificate::new(b"not a certificate".to_vec()));
        assert!(chain.authenticate(&parts).await.is_err());
    }
}
