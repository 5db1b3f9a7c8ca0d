//! Subresources the node agent serves (pods/log, exec, attach, portforward; later nodes/proxy):
//! the API server finds the pod's node and forwards the request to that node's kubelet port with
//! the apiserver-kubelet-client certificate, streaming the answer back. As upstream does by
//! default, the kubelet's serving certificate is not verified (--kubelet-certificate-authority
//! is not set); the kubelet verifies ours.

use std::collections::HashMap;
use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use r8s_api::resources::ResourceInfo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde_json::Value;

use crate::handlers::AppState;
use crate::pipeline::RequestContext;
use crate::status::{ApiError, ApiResult};

#[derive(Debug)]
struct AcceptAnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &rustls::DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &rustls::DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The client TLS configuration towards kubelets.
pub fn client_tls(cert_pem: &str, key_pem: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_bytes()).collect::<Result<_, _>>()?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_bytes())?.ok_or_else(|| anyhow::anyhow!("no private key"))?;
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
        .with_client_auth_cert(certs, key)?;
    Ok(Arc::new(cfg))
}

/// GETs a JSON document from a node's kubelet (e.g. `/stats/summary`).
pub async fn kubelet_json(state: &Arc<AppState>, node: &Value, path: &str) -> ApiResult<Value> {
    let (ip, port) = endpoint_of(node)?;
    let mut sender = connect(state, &ip, port).await?;
    let req = http::Request::get(path)
        .header(http::header::HOST, format!("{ip}:{port}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let resp = sender.send_request(req).await.map_err(|e| ApiError::internal(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(error_from(resp).await);
    }
    let body = http_body_util::BodyExt::collect(resp.into_body()).await.map_err(|e| ApiError::internal(e.to_string()))?.to_bytes();
    serde_json::from_slice(&body).map_err(|e| ApiError::internal(e.to_string()))
}

fn endpoint_of(n: &Value) -> ApiResult<(String, u16)> {
    let node = n["metadata"]["name"].as_str().unwrap_or_default();
    // A simulated node's address is made up (198.18.0.0/15): nothing may be sent there.
    if n["metadata"]["annotations"]["r8s.io/simulated"] == "true" {
        return Err(ApiError::bad_request(format!(
            "node {node} is simulated (r8s sim-nodes): it has no kubelet serving logs, exec, attach, port-forward or stats"
        )));
    }
    let addrs = n["status"]["addresses"].as_array().cloned().unwrap_or_default();
    let ip = addrs
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .or_else(|| addrs.first())
        .and_then(|a| a["address"].as_str())
        .ok_or_else(|| ApiError::bad_request(format!("node {node} has no address")))?
        .to_string();
    let port = n["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64().unwrap_or(10250) as u16;
    Ok((ip, port))
}

/// The kubelet endpoint (address, port) of a node.
async fn kubelet_of(state: &Arc<AppState>, node: &str) -> ApiResult<(String, u16)> {
    let info = state.catalog.find("", "v1", "nodes").ok_or_else(|| ApiError::internal("nodes resource missing"))?;
    let n = state.registry.get(&info, None, node).await?;
    endpoint_of(&n)
}

/// GET pods/{name}/log: picks the container as upstream does, then streams the kubelet's answer.
pub async fn pod_log(state: &Arc<AppState>, info: &ResourceInfo, ns: &str, name: &str, query: &HashMap<String, String>) -> ApiResult<Response> {
    let pod = state.registry.get(info, Some(ns), name).await?;
    let container = match query.get("container").filter(|c| !c.is_empty()) {
        Some(c) => {
            let known = all_containers(&pod);
            if !known.contains(c) {
                return Err(ApiError::bad_request(format!("container {c} is not valid for pod {name}")));
            }
            c.clone()
        }
        None => {
            let names: Vec<String> =
                pod["spec"]["containers"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str().map(str::to_string)).collect();
            if names.len() != 1 {
                return Err(ApiError::bad_request(format!("a container name must be specified for pod {name}, choose one of: [{}]", names.join(" "))));
            }
            names[0].clone()
        }
    };
    let node =
        pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()).ok_or_else(|| ApiError::bad_request(format!("pod {name} does not have a host assigned")))?;
    let (ip, port) = kubelet_of(state, node).await?;
    let mut q: Vec<String> = Vec::new();
    for k in ["follow", "previous", "timestamps", "tailLines", "sinceSeconds", "sinceTime", "limitBytes"] {
        if let Some(v) = query.get(k) {
            q.push(format!("{k}={}", percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)));
        }
    }
    let path = format!("/containerLogs/{ns}/{name}/{container}{}", if q.is_empty() { String::new() } else { format!("?{}", q.join("&")) });
    forward_get(state, &ip, port, &path).await
}

/// pods/exec and pods/attach: a WebSocket upgrade proxied byte for byte to the kubelet's
/// `/exec` or `/attach` (the kubelet speaks the channel protocols; the API server only checks
/// the pod and container, then splices the two connections).
pub async fn pod_stream(state: &Arc<AppState>, ctx: &RequestContext, info: &ResourceInfo, ns: &str, name: &str, what: &str) -> ApiResult<Response> {
    let pod = state.registry.get(info, Some(ns), name).await?;
    let query: HashMap<String, String> = url::form_urlencoded::parse(ctx.parts.uri.query().unwrap_or("").as_bytes()).into_owned().collect();
    let names: Vec<String> = pod["spec"]["containers"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str().map(str::to_string)).collect();
    let container = match query.get("container").filter(|c| !c.is_empty()) {
        Some(c) if all_containers(&pod).contains(c) => c.clone(),
        Some(c) => return Err(ApiError::bad_request(format!("container {c} is not valid for pod {name}"))),
        None if names.len() == 1 => names[0].clone(),
        None => return Err(ApiError::bad_request(format!("a container name must be specified for pod {name}, choose one of: [{}]", names.join(" ")))),
    };
    let on = |k: &str| query.get(k).is_some_and(|v| r8s_api::validation::parse_bool(v) == Ok(true));
    if !(on("stdin") || on("stdout") || on("stderr")) {
        return Err(ApiError::bad_request("you must specify at least 1 of stdin, stdout, stderr"));
    }
    if pod["status"]["phase"] == "Succeeded" || pod["status"]["phase"] == "Failed" {
        return Err(ApiError::bad_request(format!(
            "cannot {what} into a container in a completed pod; current phase is {}",
            pod["status"]["phase"].as_str().unwrap_or_default()
        )));
    }
    let node =
        pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()).ok_or_else(|| ApiError::bad_request(format!("pod {name} does not have a host assigned")))?;
    let path = format!("/{what}/{ns}/{name}/{container}?{}", ctx.parts.uri.query().unwrap_or(""));
    splice_to_kubelet(state, ctx, node, &path).await
}

/// pods/portforward: the client's upgrade (SPDY tunnelled in a WebSocket, or SPDY itself) is
/// spliced to the kubelet's `/portForward`, which runs the session.
pub async fn pod_portforward(state: &Arc<AppState>, ctx: &RequestContext, info: &ResourceInfo, ns: &str, name: &str) -> ApiResult<Response> {
    let pod = state.registry.get(info, Some(ns), name).await?;
    let node =
        pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()).ok_or_else(|| ApiError::bad_request(format!("pod {name} does not have a host assigned")))?;
    let path = format!("/portForward/{ns}/{name}?{}", ctx.parts.uri.query().unwrap_or(""));
    splice_to_kubelet(state, ctx, node, &path).await
}

/// Sends the client's upgrade request on to the node's kubelet and, once both sides have
/// switched protocols, copies bytes between the two connections.
async fn splice_to_kubelet(state: &Arc<AppState>, ctx: &RequestContext, node: &str, path: &str) -> ApiResult<Response> {
    let Some(client_upgrade) = ctx.upgrade.lock().unwrap().take() else {
        return Err(ApiError::bad_request("Upgrade request required"));
    };
    let (ip, port) = kubelet_of(state, node).await?;
    let mut req = http::Request::builder().method(ctx.parts.method.clone()).uri(path).header(http::header::HOST, format!("{ip}:{port}"));
    for h in ["connection", "upgrade", "sec-websocket-key", "sec-websocket-version", "sec-websocket-protocol", "x-stream-protocol-version"] {
        for v in ctx.parts.headers.get_all(h) {
            req = req.header(h, v);
        }
    }
    let req = req.body(http_body_util::Empty::<bytes::Bytes>::new()).map_err(|e| ApiError::internal(e.to_string()))?;
    let (resp, kubelet_io) = send_upgrade(state, &ip, port, req).await?;
    let mut out = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for (k, v) in resp.headers() {
        out = out.header(k, v);
    }
    tokio::spawn(async move {
        let Ok(client) = client_upgrade.await else { return };
        let mut client = hyper_util::rt::TokioIo::new(client);
        let mut kubelet = hyper_util::rt::TokioIo::new(kubelet_io);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut kubelet).await;
    });
    out.body(axum::body::Body::empty()).map_err(|e| ApiError::internal(e.to_string()))
}

/// Sends an upgrade request to a kubelet; a non-101 answer becomes the matching error.
async fn send_upgrade(
    state: &Arc<AppState>,
    ip: &str,
    port: u16,
    req: http::Request<http_body_util::Empty<bytes::Bytes>>,
) -> ApiResult<(http::Response<hyper::body::Incoming>, hyper::upgrade::Upgraded)> {
    let mut sender = connect(state, ip, port).await?;
    let unavailable = |e: String| ApiError::new(500, "InternalError", format!("error dialing backend: {e}"));
    let mut resp = sender.send_request(req).await.map_err(|e| unavailable(e.to_string()))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(error_from(resp).await);
    }
    let io = hyper::upgrade::on(&mut resp).await.map_err(|e| unavailable(e.to_string()))?;
    Ok((resp, io))
}

async fn connect(state: &Arc<AppState>, ip: &str, port: u16) -> ApiResult<hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>> {
    let tls = state.kubelet_tls.get().cloned().ok_or_else(|| ApiError::internal("no kubelet client certificate"))?;
    let unavailable = |e: String| ApiError::new(500, "InternalError", format!("error dialing backend: dial tcp {ip}:{port}: {e}"));
    let tcp = tokio::time::timeout(std::time::Duration::from_secs(10), tokio::net::TcpStream::connect((ip, port)))
        .await
        .map_err(|_| unavailable("i/o timeout".into()))?
        .map_err(|e| unavailable(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let server_name = ServerName::try_from(ip.to_string()).map_err(|e| unavailable(e.to_string()))?;
    let stream = tokio_rustls::TlsConnector::from(tls).connect(server_name, tcp).await.map_err(|e| unavailable(e.to_string()))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(|e| unavailable(e.to_string()))?;
    tokio::spawn(conn.with_upgrades());
    Ok(sender)
}

/// A kubelet's error answer as the API's error (a Status body keeps its code and message).
async fn error_from(resp: http::Response<hyper::body::Incoming>) -> ApiError {
    let status = resp.status();
    let body = http_body_util::BodyExt::collect(resp.into_body()).await.map(|b| b.to_bytes()).unwrap_or_default();
    let text = String::from_utf8_lossy(&body).trim().to_string();
    if let Ok(v) = serde_json::from_str::<Value>(&text)
        && v["kind"] == "Status"
    {
        let code = v["code"].as_u64().unwrap_or(status.as_u16() as u64) as u16;
        return ApiError::new(code, reason_for(code), v["message"].as_str().unwrap_or_default().to_string());
    }
    ApiError::new(status.as_u16(), reason_for(status.as_u16()), text)
}

fn all_containers(pod: &Value) -> Vec<String> {
    ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| pod["spec"][k].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect()
}

/// One GET to a kubelet over HTTPS/1.1, its body streamed back as it arrives.
async fn forward_get(state: &Arc<AppState>, ip: &str, port: u16, path: &str) -> ApiResult<Response> {
    let mut sender = connect(state, ip, port).await?;
    let req = http::Request::get(path)
        .header(http::header::HOST, format!("{ip}:{port}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let resp = sender.send_request(req).await.map_err(|e| ApiError::new(500, "InternalError", format!("Get \"https://{ip}:{port}{path}\": {e}")))?;
    if !resp.status().is_success() {
        return Err(error_from(resp).await);
    }
    let ctype = resp.headers().get(http::header::CONTENT_TYPE).cloned();
    let mut out = Response::new(axum::body::Body::new(resp.into_body()));
    *out.status_mut() = StatusCode::OK;
    out.headers_mut().insert(http::header::CONTENT_TYPE, ctype.unwrap_or(http::HeaderValue::from_static("text/plain")));
    Ok(out.into_response())
}

fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        _ => "InternalError",
    }
}
