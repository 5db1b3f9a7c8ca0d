//! exec and attach for the kubelet server: the API server proxies the client's WebSocket
//! (`v5.channel.k8s.io`, or v4) here; the kubelet asks the runtime for a streaming URL (CRI Exec /
//! Attach) and relays the channel messages to the runtime's streaming server, which speaks the
//! v4 channel protocol. Channel messages are the same in both versions (first byte: 0 stdin,
//! 1 stdout, 2 stderr, 3 error/exit status, 4 resize); v5's close-stdin message (255) has no v4
//! equivalent and is dropped.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use http::StatusCode;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

use crate::cri::{CALL_TIMEOUT, pb, req};
use crate::pods::{Kubelet, runtime_state};
use crate::server::status;

const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];

fn flag(q: &[(String, String)], k: &str) -> bool {
    q.iter().any(|(n, v)| n == k && (v == "true" || v == "1"))
}

pub async fn exec(State(k): State<Arc<Kubelet>>, Path((ns, pod, container)): Path<(String, String, String)>, req: http::Request<axum::body::Body>) -> Response {
    serve(k, ns, pod, container, req, true).await
}

pub async fn attach(
    State(k): State<Arc<Kubelet>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    req: http::Request<axum::body::Body>,
) -> Response {
    serve(k, ns, pod, container, req, false).await
}

async fn serve(k: Arc<Kubelet>, ns: String, pod: String, container: String, mut req: http::Request<axum::body::Body>, is_exec: bool) -> Response {
    let q: Vec<(String, String)> = url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
    let Some(p) = k.pod(&ns, &pod) else {
        return status(StatusCode::NOT_FOUND, "NotFound", format!("pod \"{pod}\" not found"));
    };
    let uid = p.metadata.uid.clone().unwrap_or_default();
    let rs = match runtime_state::read(k.runtime(), &uid).await {
        Ok(rs) => rs,
        Err(e) => return status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e.message().to_string()),
    };
    let Some(c) = rs.latest(&container).filter(|c| c.state == pb::ContainerState::ContainerRunning as i32) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", format!("container {container} is not valid for pod {pod}"));
    };
    let (stdin, stdout, stderr, tty) =
        (flag(&q, "stdin") || flag(&q, "input"), flag(&q, "stdout") || flag(&q, "output"), flag(&q, "stderr") || flag(&q, "error"), flag(&q, "tty"));
    let url = if is_exec {
        let cmd: Vec<String> = q.iter().filter(|(n, _)| n == "command").map(|(_, v)| v.clone()).collect();
        if cmd.is_empty() {
            return status(StatusCode::BAD_REQUEST, "BadRequest", "you must specify at least 1 command".into());
        }
        let r = k.runtime().runtime.clone().exec(req_(pb::ExecRequest { container_id: c.id.clone(), cmd, tty, stdin, stdout, stderr: stderr && !tty })).await;
        r.map(|r| r.into_inner().url)
    } else {
        let r = k.runtime().runtime.clone().attach(req_(pb::AttachRequest { container_id: c.id.clone(), stdin, tty, stdout, stderr: stderr && !tty })).await;
        r.map(|r| r.into_inner().url)
    };
    let url = match url {
        Ok(u) => u,
        Err(e) => return status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e.message().to_string()),
    };
    let headers = req.headers();
    let Some(key) = headers.get("sec-websocket-key").cloned() else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "Upgrade request required".into());
    };
    let offered: Vec<String> = headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()).collect::<Vec<_>>())
        .collect();
    let Some(proto) = offered.iter().find(|p| PROTOCOLS.contains(&p.as_str())).cloned() else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", format!("no supported WebSocket subprotocol among {offered:?} (want one of {PROTOCOLS:?})"));
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        let client = tokio_tungstenite::WebSocketStream::from_raw_socket(hyper_util::rt::TokioIo::new(upgraded), Role::Server, None).await;
        if let Err(e) = relay(client, &url).await {
            tracing::debug!(error = %e, "stream relay ended");
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "websocket")
        .header("Sec-WebSocket-Accept", derive_accept_key(key.as_bytes()))
        .header("Sec-WebSocket-Protocol", proto)
        .body(axum::body::Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn req_<T>(m: T) -> tonic::Request<T> {
    req(m, CALL_TIMEOUT)
}

async fn relay<S>(client: tokio_tungstenite::WebSocketStream<S>, url: &str) -> anyhow::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let ws_url = url.replacen("http://", "ws://", 1).replacen("https://", "wss://", 1);
    let mut request = ws_url.into_client_request()?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", http::HeaderValue::from_static("v4.channel.k8s.io"));
    let (runtime, _) = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(request)).await??;
    let (mut rt_tx, mut rt_rx) = runtime.split();
    let (mut cl_tx, mut cl_rx) = client.split();
    let up = async {
        while let Some(m) = cl_rx.next().await {
            match m? {
                Message::Binary(b) if b.first() == Some(&255) => {} // v5 close-stdin: no v4 form
                Message::Binary(b) => rt_tx.send(Message::Binary(b)).await?,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = rt_tx.close().await;
        anyhow::Ok(())
    };
    let down = async {
        while let Some(m) = rt_rx.next().await {
            match m? {
                Message::Binary(b) if b.len() > 1 => cl_tx.send(Message::Binary(b)).await?,
                Message::Close(_) => break,
                _ => {}
            }
        }
        // A normal closure (1000): kubectl treats a close without a status as an error.
        let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
            reason: "".into(),
        };
        let _ = cl_tx.send(Message::Close(Some(frame))).await;
        let _ = cl_tx.close().await;
        anyhow::Ok(())
    };
    // The runtime's side ends the session (the process exited); stdin ending does not.
    tokio::select! {
        r = down => r,
        r = async { up.await?; futures::future::pending::<anyhow::Result<()>>().await } => r,
    }
}
