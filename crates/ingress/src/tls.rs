//! HTTPS for the ingress controller: the certificate for each TLS host of the class's Ingresses
//! comes from the `kubernetes.io/tls` Secret its `spec.tls` entry names (same namespace), chosen
//! by the client's SNI name. Hosts without one get a self-signed default certificate, as
//! ingress-nginx does with its "fake certificate".

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A certificate and key from PEM text, ready to serve.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<CertifiedKey> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut &cert_pem[..]).collect::<Result<_, _>>()?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in tls.crt");
    let key = rustls_pemfile::private_key(&mut &key_pem[..])?.ok_or_else(|| anyhow::anyhow!("no private key in tls.key"))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| anyhow::anyhow!("tls.key: {e}"))?;
    Ok(CertifiedKey::new(certs, signer))
}

/// The default certificate: self-signed, for names no Ingress has a Secret for.
pub fn default_key() -> anyhow::Result<CertifiedKey> {
    let cert = rcgen::generate_simple_self_signed(vec!["ingress.local".to_string()])?;
    certified_key(cert.cert.pem().as_bytes(), cert.signing_key.serialize_pem().as_bytes())
}

/// TLS host -> certificate, from the Ingresses of the class and their Secrets. A Secret that
/// is missing or does not parse leaves its hosts on the default certificate (and is logged).
pub fn certificates(ingresses: &[&Ingress], secret: impl Fn(&str, &str) -> Option<Arc<Secret>>) -> HashMap<String, Arc<CertifiedKey>> {
    let mut out = HashMap::new();
    for ing in ingresses {
        let ns = ing.metadata.namespace.clone().unwrap_or_default();
        for tls in ing.spec.iter().flat_map(|s| s.tls.iter().flatten()) {
            let Some(name) = tls.secret_name.as_deref() else { continue };
            let Some(s) = secret(&ns, name) else {
                tracing::debug!(%ns, secret = name, "ingress TLS secret not found");
                continue;
            };
            let data = s.data.clone().unwrap_or_default();
            let (Some(crt), Some(key)) = (data.get("tls.crt"), data.get("tls.key")) else { continue };
            match certified_key(&crt.0, &key.0) {
                Ok(ck) => {
                    let ck = Arc::new(ck);
                    for h in tls.hosts.iter().flatten() {
                        out.entry(h.to_ascii_lowercase()).or_insert_with(|| ck.clone());
                    }
                }
                Err(e) => tracing::warn!(%ns, secret = name, error = %e, "ingress TLS secret unusable"),
            }
        }
    }
    out
}

/// Picks the certificate by SNI: the exact host, then a `*.` wildcard one label up, then the
/// default.
#[derive(Debug)]
pub struct Resolver {
    pub by_host: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    pub default: Arc<CertifiedKey>,
}

impl Resolver {
    fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let hosts = self.by_host.read().unwrap();
        let Some(name) = sni.map(str::to_ascii_lowercase) else { return self.default.clone() };
        if let Some(k) = hosts.get(&name) {
            return k.clone();
        }
        if let Some((_, parent)) = name.split_once('.')
            && let Some(k) = hosts.get(&format!("*.{parent}"))
        {
            return k.clone();
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()))
    }
}

pub fn server_config(resolver: Arc<Resolver>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg =
        rustls::ServerConfig::builder_with_provider(provider).with_safe_default_protocol_versions()?.with_no_client_auth().with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_picks_the_host_then_the_wildcard_then_the_default() {
        let k = |n: &str| Arc::new(default_key().unwrap_or_else(|e| panic!("{n}: {e}")));
        let (a, wild, def) = (k("a"), k("wild"), k("default"));
        let r =
            Resolver { by_host: RwLock::new(HashMap::from([("a.example".into(), a.clone()), ("*.apps.example".into(), wild.clone())])), default: def.clone() };
        assert!(Arc::ptr_eq(&r.pick(Some("A.example")), &a));
        assert!(Arc::ptr_eq(&r.pick(Some("x.apps.example")), &wild));
        assert!(Arc::ptr_eq(&r.pick(Some("x.y.apps.example")), &def), "a wildcard covers one label");
        assert!(Arc::ptr_eq(&r.pick(None), &def));
    }

    #[test]
    fn a_secret_that_does_not_parse_is_skipped() {
        assert!(certified_key(b"not pem", b"nor this").is_err());
    }
}
