//! Port forwarding on the kubelet (`/portForward/{ns}/{pod}`), as kubectl port-forward speaks
//! it: one SPDY session per `kubectl port-forward`, tunnelled in a WebSocket
//! ("SPDY/3.1+portforward.k8s.io", kubectl 1.31+) or on the raw upgraded connection (`Upgrade:
//! SPDY/3.1`, older kubectl). Each local connection opens two streams with the headers
//! `streamType` (error|data), `port` and `requestID`; once both are there, the kubelet asks the
//! runtime for a port-forward URL (CRI PortForward) and relays the data stream to the runtime's
//! streaming server (WebSocket channel protocol: channel 0 data, 1 error, each starting with
//! the port as two little-endian bytes), which connects to the port inside the pod's network
//! namespace. Errors go back as text on the error stream, as upstream's kubelet does.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

use crate::cri::{CALL_TIMEOUT, Runtime, pb, req};
use crate::pods::{Kubelet, runtime_state};
use crate::server::status;
use crate::spdy::{self, Frame};

/// The WebSocket subprotocol of SPDY tunnelled in WebSocket (client-go's tunneling dialer).
const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
const PORTFORWARD_PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket channel protocols of port forwarding (upstream's kubelet: "", v4 binary and
/// base64; v5 and the bare names are read the same way).
const CHANNEL_PROTOCOLS: &[&str] =
    &["v4.channel.k8s.io", "v5.channel.k8s.io", "v4.base64.channel.k8s.io", "channel.k8s.io", "base64.channel.k8s.io", PORTFORWARD_PROTOCOL, TUNNEL_PROTOCOL];

/// The ports of a WebSocket port-forward: `ports=` (as clients send it to the API) or
/// `port=` (as upstream's API server passes it to the kubelet), each repeatable and
/// comma-separated.
fn requested_ports(query: &str) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if k != "ports" && k != "port" {
            continue;
        }
        if v.is_empty() {
            return Err(format!("query parameter {k:?} cannot be empty"));
        }
        for p in v.split(',') {
            match p.trim().parse::<u16>() {
                Ok(0) => return Err(format!("port {v:?} must be > 0")),
                Ok(n) => ports.push(n),
                Err(e) => return Err(format!("unable to parse {v:?} as a port: {e}")),
            }
        }
    }
    if ports.is_empty() {
        return Err("query parameter \"ports\" is required".into());
    }
    Ok(ports)
}

/// Port forwarding over the WebSocket channel protocol: for the i-th requested port, channel
/// 2i carries its data and 2i+1 its errors; each channel first says its port (two bytes, little
/// endian) in a message of its own. Every port's connection to the pod opens at once; the
/// WebSocket closes when all of them have ended.
async fn channel_session<S>(ws: tokio_tungstenite::WebSocketStream<S>, framing: crate::streaming::Framing, rt: Runtime, sandbox: String, ports: Vec<u16>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut ws_tx, mut ws_rx) = ws.split();
    for (i, port) in ports.iter().enumerate() {
        for ch in [2 * i as u8, 2 * i as u8 + 1] {
            if ws_tx.send(framing.encode(ch, &port.to_le_bytes())).await.is_err() {
                return;
            }
        }
    }
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<(u8, Bytes)>();
    let mut inputs = Vec::new();
    for (i, port) in ports.iter().copied().enumerate() {
        let (tx, rx) = mpsc::unbounded_channel::<Option<Bytes>>();
        inputs.push(tx);
        let out = out_tx.clone();
        let (rt, sandbox) = (rt.clone(), sandbox.clone());
        let (data_ch, err_ch) = (2 * i as u8, 2 * i as u8 + 1);
        tokio::spawn(async move {
            let mut rx = rx;
            let emit = |is_error: bool, b: Bytes| out.send((if is_error { err_ch } else { data_ch }, b)).is_ok();
            if let Err(e) = relay(&rt, &sandbox, port, &mut rx, &emit).await {
                emit(true, Bytes::from(format!("error forwarding port {port} to pod {sandbox}: {e}")));
            }
        });
    }
    drop(out_tx);
    let mut all_done = false;
    loop {
        tokio::select! {
            m = ws_rx.next() => match m {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(m)) => {
                    if let Some((ch, data)) = framing.decode(&m)
                        && ch % 2 == 0
                        && let Some(tx) = inputs.get(ch as usize / 2)
                        && !data.is_empty()
                    {
                        let _ = tx.send(Some(Bytes::from(data)));
                    }
                }
            },
            out = out_rx.recv() => match out {
                Some((ch, data)) => {
                    if ws_tx.send(framing.encode(ch, &data)).await.is_err() {
                        break;
                    }
                }
                None => {
                    all_done = true;
                    break;
                }
            },
        }
    }
    drop(inputs);
    if all_done {
        let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
            reason: "".into(),
        };
        let _ = ws_tx.send(Message::Close(Some(frame))).await;
    }
    let _ = ws_tx.close().await;
}
/// After the client closes its side, how long the pod's side may still answer (containerd
/// waits the same second before closing both).
const HALF_CLOSE_GRACE: Duration = Duration::from_secs(1);

pub async fn handler(State(k): State<Arc<Kubelet>>, Path((ns, pod)): Path<(String, String)>, mut request: http::Request<axum::body::Body>) -> Response {
    let Some(p) = k.pod(&ns, &pod) else {
        return status(StatusCode::NOT_FOUND, "NotFound", format!("pod \"{pod}\" not found"));
    };
    let uid = p.metadata.uid.clone().unwrap_or_default();
    let sandbox = match runtime_state::read(k.runtime(), &uid).await {
        Ok(rs) => rs.ready_sandbox().map(|s| s.id.clone()),
        Err(e) => return status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e.message().to_string()),
    };
    let Some(sandbox) = sandbox else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", format!("pod {pod} does not have a running sandbox"));
    };
    let headers = request.headers().clone();
    let on_upgrade = hyper::upgrade::on(&mut request);
    let rt = k.runtime().clone();
    if let Some(key) = headers.get("sec-websocket-key") {
        let offered = crate::streaming::offered_protocols(&headers);
        if !offered.iter().any(|p| p == TUNNEL_PROTOCOL) {
            // The channel protocol the Python and JavaScript clients speak.
            let ports = match requested_ports(request.uri().query().unwrap_or("")) {
                Ok(p) => p,
                Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", e),
            };
            let proto = match crate::streaming::negotiate(&offered, CHANNEL_PROTOCOLS) {
                Ok(p) => p,
                Err(resp) => return *resp,
            };
            let framing = crate::streaming::Framing::of(proto.as_deref().unwrap_or(""));
            tokio::spawn(async move {
                let Ok(upgraded) = on_upgrade.await else { return };
                let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(hyper_util::rt::TokioIo::new(upgraded), Role::Server, None).await;
                channel_session(ws, framing, rt, sandbox, ports).await;
            });
            return crate::streaming::switching_protocols(key, proto.as_deref());
        }
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else { return };
            let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(hyper_util::rt::TokioIo::new(upgraded), Role::Server, None).await;
            let (session_io, tunnel_io) = tokio::io::duplex(256 * 1024);
            tokio::spawn(unwrap_tunnel(ws, tunnel_io));
            session(session_io, rt, sandbox).await;
        });
        return crate::streaming::switching_protocols(key, Some(TUNNEL_PROTOCOL));
    }
    let is_spdy = headers.get(http::header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("SPDY/3.1"));
    if !is_spdy {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "Upgrade request required".into());
    }
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        session(hyper_util::rt::TokioIo::new(upgraded), rt, sandbox).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", PORTFORWARD_PROTOCOL)
        .body(axum::body::Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Turns the tunnel's binary messages into a byte stream for the session, and the session's
/// bytes back into binary messages.
async fn unwrap_tunnel<S>(ws: tokio_tungstenite::WebSocketStream<S>, io: tokio::io::DuplexStream)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (mut rd, mut wr) = tokio::io::split(io);
    let inbound = async {
        while let Some(Ok(m)) = ws_rx.next().await {
            match m {
                Message::Binary(b) if wr.write_all(&b).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = wr.shutdown().await;
    };
    let outbound = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if ws_tx.send(Message::Binary(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                        return;
                    }
                }
            }
        }
        let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
            reason: "".into(),
        };
        let _ = ws_tx.send(Message::Close(Some(frame))).await;
    };
    tokio::select! {
        _ = inbound => {}
        _ = outbound => {}
    }
}

/// What the session knows of one client stream.
enum StreamEnd {
    /// A data stream: where its bytes go (None marks the client's FIN).
    Data(mpsc::UnboundedSender<Option<Bytes>>),
    Error,
}

#[derive(Default)]
struct Pair {
    port: u16,
    data: Option<(u32, mpsc::UnboundedReceiver<Option<Bytes>>)>,
    error: Option<u32>,
}

/// One SPDY session: answers streams and pings, pairs streams by requestID and starts a
/// forward for each complete pair. Ends when the client goes away.
async fn session<IO>(io: IO, rt: Runtime, sandbox: String)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Frame>();
    let writer = tokio::spawn(async move {
        let mut enc = spdy::Encoder::default();
        let mut buf = BytesMut::new();
        while let Some(f) = out_rx.recv().await {
            let _ = enc.encode(&f, &mut buf);
            // Batch whatever else is ready into one write.
            while let Ok(f) = out_rx.try_recv() {
                let _ = enc.encode(&f, &mut buf);
            }
            if wr.write_all(&buf).await.is_err() || wr.flush().await.is_err() {
                break;
            }
            buf.clear();
        }
        let _ = wr.shutdown().await;
    });
    let mut dec = spdy::Decoder::default();
    let mut streams: HashMap<u32, StreamEnd> = HashMap::new();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    'read: loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        dec.feed(&buf[..n]);
        loop {
            let frame = match dec.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "port-forward session: bad frame");
                    let _ = out_tx.send(Frame::GoAway { last_stream: 0, status: 1 });
                    break 'read;
                }
            };
            match frame {
                Frame::SynStream { stream, headers, .. } => {
                    let get = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                    let port = get("port").and_then(|p| p.parse::<u16>().ok()).filter(|p| *p > 0);
                    let kind = get("streamtype");
                    let (Some(port), Some(kind @ ("data" | "error"))) = (port, kind.as_deref()) else {
                        let _ = out_tx.send(Frame::RstStream { stream, status: spdy::RST_REFUSED_STREAM });
                        continue;
                    };
                    let _ = out_tx.send(Frame::SynReply { stream, fin: false, headers: vec![] });
                    // Clients before request IDs existed: derive one from the stream IDs.
                    let request = get("requestid").unwrap_or_else(|| if kind == "error" { stream.to_string() } else { (stream.saturating_sub(2)).to_string() });
                    let pair = pairs.entry(request.clone()).or_default();
                    pair.port = port;
                    if kind == "data" {
                        let (tx, rx) = mpsc::unbounded_channel();
                        streams.insert(stream, StreamEnd::Data(tx));
                        pair.data = Some((stream, rx));
                    } else {
                        streams.insert(stream, StreamEnd::Error);
                        pair.error = Some(stream);
                    }
                    if pair.data.is_some() && pair.error.is_some() {
                        let mut p = pairs.remove(&request).unwrap_or_default();
                        let (Some((data_id, rx)), Some(error_id)) = (p.data.take(), p.error) else { continue };
                        tokio::spawn(forward(rt.clone(), sandbox.clone(), p.port, data_id, error_id, rx, out_tx.clone()));
                    }
                }
                Frame::Data { stream, fin, data } => {
                    if let Some(StreamEnd::Data(tx)) = streams.get(&stream) {
                        if !data.is_empty() {
                            let _ = tx.send(Some(data));
                        }
                        if fin {
                            let _ = tx.send(None);
                        }
                    }
                }
                Frame::RstStream { stream, .. } => {
                    // Dropping the sender ends that forward at once.
                    streams.remove(&stream);
                }
                Frame::Ping(id) => {
                    let _ = out_tx.send(Frame::Ping(id));
                }
                Frame::GoAway { .. } => break 'read,
                _ => {}
            }
        }
    }
    drop(streams);
    drop(out_tx);
    let _ = writer.await;
}

/// One forwarded connection: the runtime's port-forward stream for `port`, relayed to the
/// client's data stream; the runtime's error text goes to the error stream. Both of our
/// streams end with FIN.
async fn forward(
    rt: Runtime,
    sandbox: String,
    port: u16,
    data_id: u32,
    error_id: u32,
    mut from_client: mpsc::UnboundedReceiver<Option<Bytes>>,
    out: mpsc::UnboundedSender<Frame>,
) {
    let emit = |is_error: bool, data: Bytes| out.send(Frame::Data { stream: if is_error { error_id } else { data_id }, fin: false, data }).is_ok();
    if let Err(e) = relay(&rt, &sandbox, port, &mut from_client, &emit).await {
        let msg = format!("error forwarding port {port} to pod {sandbox}: {e}");
        let _ = out.send(Frame::Data { stream: error_id, fin: false, data: Bytes::from(msg) });
    }
    let _ = out.send(Frame::Data { stream: data_id, fin: true, data: Bytes::new() });
    let _ = out.send(Frame::Data { stream: error_id, fin: true, data: Bytes::new() });
}

/// One forwarded connection to `port` in the pod: the client's bytes (None: the client is done
/// sending) go in; the pod's bytes and the runtime's error text come out through `emit`
/// (false: data, true: error), which answers false once the client side is gone.
async fn relay(
    rt: &Runtime,
    sandbox: &str,
    port: u16,
    from_client: &mut mpsc::UnboundedReceiver<Option<Bytes>>,
    emit: &(dyn Fn(bool, Bytes) -> bool + Sync),
) -> anyhow::Result<()> {
    let url = rt
        .runtime
        .clone()
        .port_forward(req(pb::PortForwardRequest { pod_sandbox_id: sandbox.to_string(), port: vec![port as i32] }, CALL_TIMEOUT))
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?
        .into_inner()
        .url;
    let sep = if url.contains('?') { '&' } else { '?' };
    let ws_url = format!("{}{sep}port={port}", url.replacen("http://", "ws://", 1).replacen("https://", "wss://", 1));
    let mut request = ws_url.into_client_request()?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", http::HeaderValue::from_static("v4.channel.k8s.io"));
    let (runtime, _) = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(request)).await??;
    let (mut rt_tx, mut rt_rx) = runtime.split();
    let up = async {
        while let Some(m) = from_client.recv().await {
            let Some(data) = m else { return true };
            let mut msg = Vec::with_capacity(data.len() + 1);
            msg.push(0u8);
            msg.extend_from_slice(&data);
            if rt_tx.send(Message::Binary(msg.into())).await.is_err() {
                return false;
            }
        }
        // The session ended (client gone or stream reset): stop now.
        false
    };
    let down = async {
        // Each channel starts with the port number (two bytes) before any payload.
        let mut prefix_left = [2usize, 2usize];
        while let Some(Ok(m)) = rt_rx.next().await {
            let Message::Binary(b) = m else {
                if matches!(m, Message::Close(_)) {
                    break;
                }
                continue;
            };
            let Some((&ch, mut payload)) = b.split_first() else { continue };
            let ch = ch as usize;
            if ch > 1 {
                continue;
            }
            let skip = prefix_left[ch].min(payload.len());
            prefix_left[ch] -= skip;
            payload = &payload[skip..];
            for chunk in payload.chunks(spdy::MAX_DATA) {
                if !emit(ch == 1, Bytes::copy_from_slice(chunk)) {
                    return;
                }
            }
        }
    };
    tokio::pin!(down);
    tokio::select! {
        _ = &mut down => {}
        half_closed = up => {
            if half_closed {
                // The client is done sending; let the pod finish its answer.
                let _ = tokio::time::timeout(HALF_CLOSE_GRACE, &mut down).await;
            }
        }
    }
    let _ = rt_tx.close().await;
    Ok(())
}
