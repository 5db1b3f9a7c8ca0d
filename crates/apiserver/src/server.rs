//! The HTTPS listener: rustls with optional client certificates (verified against the cluster
//! CA), HTTP/1.1 and HTTP/2 (ALPN); the verified client certificate rides on each request.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::authn::PeerCertificate;
use crate::handlers::AppState;
use crate::pipeline::handle;

pub fn tls_config(ca_pem: &str, cert_pem: &str, key_pem: &str) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).allow_unauthenticated().build()?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_bytes()).collect::<Result<_, _>>()?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_bytes())?.ok_or_else(|| anyhow::anyhow!("no private key"))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Accepts connections until the listener fails; each connection runs on its own task.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, state: Arc<AppState>) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(acceptor, tcp, peer, state).await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}

async fn serve_connection(acceptor: TlsAcceptor, tcp: tokio::net::TcpStream, _peer: SocketAddr, state: Arc<AppState>) -> anyhow::Result<()> {
    let tls = tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await??;
    // The verified client certificate goes with every request of the connection; who the
    // user is gets decided per request by the authenticator chain.
    let peer = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| PeerCertificate::new(c.as_ref().to_vec()));
    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let state = state.clone();
        let peer = peer.clone();
        async move {
            let (mut parts, body) = req.into_parts();
            if let Some(p) = peer {
                parts.extensions.insert(p);
            }
            let resp = handle(state, http::Request::from_parts(parts, axum::body::Body::new(body))).await;
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(tls), svc)
        .await
        .map_err(|e| anyhow::anyhow!(e))
}
