//! A WebSocket client of our own for the streaming subresources (exec, attach, port-forward),
//! so tests choose the subprotocols and see every message byte for byte, as the Python and
//! JavaScript clients do. TLS with the admin kubeconfig's client certificate.

use std::sync::Arc;

use base64::Engine;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub type Socket = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

fn pem(kc: &serde_yaml::Value, path: &[&str]) -> Vec<u8> {
    let mut v = kc;
    for p in path {
        v = match p.parse::<usize>() {
            Ok(i) => &v[i],
            Err(_) => &v[*p],
        };
    }
    base64::engine::general_purpose::STANDARD.decode(v.as_str().expect("kubeconfig field")).expect("base64")
}

/// Opens `path` (with its query) on the server as a WebSocket offering `protocols`; returns the
/// negotiated subprotocol (None if the server named none) and the socket.
pub async fn connect(kubeconfig: &std::path::Path, path: &str, protocols: &[&str]) -> Result<(Option<String>, Socket), String> {
    let kc: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(kubeconfig).unwrap()).unwrap();
    let server = kc["clusters"][0]["cluster"]["server"].as_str().unwrap().to_string();
    let ca = pem(&kc, &["clusters", "0", "cluster", "certificate-authority-data"]);
    let cert = pem(&kc, &["users", "0", "user", "client-certificate-data"]);
    let key = pem(&kc, &["users", "0", "user", "client-key-data"]);
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca.as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<_> = rustls_pemfile::certs(&mut cert.as_slice()).map(Result::unwrap).collect();
    let key = rustls_pemfile::private_key(&mut key.as_slice()).unwrap().unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let hostport = server.trim_start_matches("https://").to_string();
    let host = hostport.rsplit_once(':').map(|(h, _)| h.to_string()).unwrap();
    let tcp = tokio::net::TcpStream::connect(&hostport).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(host).unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls)).connect(name, tcp).await.map_err(|e| e.to_string())?;
    let mut req = format!("wss://{hostport}{path}").into_client_request().unwrap();
    if !protocols.is_empty() {
        req.headers_mut().insert("Sec-WebSocket-Protocol", protocols.join(", ").parse().unwrap());
    }
    let (ws, resp) = tokio_tungstenite::client_async(req, stream).await.map_err(|e| match e {
        tokio_tungstenite::tungstenite::Error::Http(r) => {
            format!("{} {}", r.status(), String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()))
        }
        other => other.to_string(),
    })?;
    let proto = resp.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()).map(str::to_string);
    Ok((proto, ws))
}

/// Every message until the server closes (or `deadline` passes), as (channel, data) with the
/// base64 framing undone when `base64`; the close code last (None if the server never closed).
pub async fn drain(ws: &mut Socket, base64: bool, deadline: std::time::Duration) -> (Vec<(u8, Vec<u8>)>, Option<u16>) {
    let mut out = Vec::new();
    let end = tokio::time::Instant::now() + deadline;
    loop {
        match tokio::time::timeout_at(end, ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) if !base64 => out.push((b[0], b[1..].to_vec())),
            Ok(Some(Ok(Message::Text(t)))) if base64 => {
                let t = t.as_str();
                out.push((t.as_bytes()[0] - b'0', base64::engine::general_purpose::STANDARD.decode(&t[1..]).unwrap()))
            }
            Ok(Some(Ok(Message::Close(f)))) => return (out, Some(f.map(|f| u16::from(f.code)).unwrap_or(1005))),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_))) | Ok(None) | Err(_) => return (out, None),
        }
    }
}

/// A channel message in the binary framing.
pub async fn send(ws: &mut Socket, channel: u8, data: &[u8]) {
    let mut m = vec![channel];
    m.extend_from_slice(data);
    ws.send(Message::Binary(m.into())).await.unwrap();
}

/// What one channel carried, all messages joined.
pub fn channel(msgs: &[(u8, Vec<u8>)], ch: u8) -> Vec<u8> {
    msgs.iter().filter(|(c, _)| *c == ch).flat_map(|(_, d)| d.clone()).collect()
}
