//! exec and attach for the kubelet server: the API server proxies the client's WebSocket
//! (`v5.channel.k8s.io`, or v4) here; the kubelet asks the runtime for a streaming URL (CRI Exec /
//! Attach) and relays the channel messages (first byte: 0 stdin, 1 stdout, 2 stderr, 3 error/exit
//! status, 4 resize, 255 close) to the runtime's streaming server as a SPDY session, one stream
//! per channel, so that closing stdin reaches the process.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use http::StatusCode;
use std::collections::{HashMap, HashSet};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::cri::{CALL_TIMEOUT, pb, req};
use crate::pods::{Kubelet, runtime_state};
use crate::server::status;

/// The WebSocket subprotocols of the remote command protocol, as upstream's kubelet serves
/// them (and v3/v2, which older clients offer, read as the pre-v4 protocol).
const PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

/// How a negotiated subprotocol frames channel messages and reports the exit status.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Framing {
    /// base64 protocols: text messages, the channel as an ASCII digit, the data base64.
    pub base64: bool,
    /// v4 and later: the error channel carries a JSON Status (with the exit code); before v4,
    /// only a failure's message as text.
    pub status_json: bool,
    /// v5: the client may close a channel (stdin) with [255, channel].
    pub can_close: bool,
}

impl Framing {
    pub fn of(protocol: &str) -> Framing {
        Framing {
            base64: protocol.contains("base64"),
            status_json: protocol.starts_with("v4.") || protocol.starts_with("v5."),
            can_close: protocol.starts_with("v5."),
        }
    }

    /// One channel message as it goes on the wire.
    pub fn encode(&self, channel: u8, data: &[u8]) -> Message {
        use base64::Engine;
        if self.base64 {
            let mut text = String::with_capacity(1 + data.len() * 4 / 3 + 4);
            text.push((b'0' + channel) as char);
            text.push_str(&base64::engine::general_purpose::STANDARD.encode(data));
            Message::Text(text.into())
        } else {
            let mut msg = Vec::with_capacity(data.len() + 1);
            msg.push(channel);
            msg.extend_from_slice(data);
            Message::Binary(msg.into())
        }
    }

    /// A client message as (channel, data); None for what carries no channel data.
    pub fn decode(&self, m: &Message) -> Option<(u8, Vec<u8>)> {
        use base64::Engine;
        match m {
            Message::Binary(b) if !self.base64 => b.split_first().map(|(c, d)| (*c, d.to_vec())),
            // Upstream reads a text frame like a binary one (the Python client writes a str
            // to stdin as text: "\x00" then the data).
            Message::Text(t) if !self.base64 => t.as_bytes().split_first().map(|(c, d)| (*c, d.to_vec())),
            Message::Text(t) if self.base64 => {
                let (c, rest) = t.as_str().split_at_checked(1)?;
                let ch = c.as_bytes()[0].checked_sub(b'0')?;
                // [255, ch] has no digit form: base64 protocols cannot close a channel.
                Some((ch, base64::engine::general_purpose::STANDARD.decode(rest).ok()?))
            }
            _ => None,
        }
    }

    /// What the error channel carries for the runtime's v4 Status: the Status itself (v4+), or
    /// before v4 a failure's message and nothing on success.
    pub fn status_bytes(&self, status_json: &[u8]) -> Vec<u8> {
        if self.status_json {
            return status_json.to_vec();
        }
        match serde_json::from_slice::<serde_json::Value>(status_json) {
            Ok(v) if v["status"] == "Success" => Vec::new(),
            Ok(v) => v["message"].as_str().unwrap_or_default().as_bytes().to_vec(),
            Err(_) => status_json.to_vec(),
        }
    }
}

fn flag(q: &[(String, String)], k: &str) -> bool {
    q.iter().any(|(n, v)| n == k && r8s_api::validation::parse_bool(v) == Ok(true))
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
    if !(stdin || stdout || stderr) {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "you must specify at least 1 of stdin, stdout, stderr".into());
    }
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
    let proto = match negotiate(&offered_protocols(headers), PROTOCOLS) {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    let framing = Framing::of(proto.as_deref().unwrap_or(""));
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        let client = tokio_tungstenite::WebSocketStream::from_raw_socket(hyper_util::rt::TokioIo::new(upgraded), Role::Server, None).await;
        if let Err(e) = relay(client, &url, Streams { stdin, stdout, stderr, tty }, framing).await {
            tracing::debug!(error = %e, "stream relay ended");
        }
    });
    switching_protocols(&key, proto.as_deref())
}

/// The 101 answer to a WebSocket upgrade, naming the negotiated subprotocol (if any).
pub(crate) fn switching_protocols(key: &http::HeaderValue, protocol: Option<&str>) -> Response {
    let mut resp = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "websocket")
        .header("Sec-WebSocket-Accept", derive_accept_key(key.as_bytes()));
    if let Some(p) = protocol {
        resp = resp.header("Sec-WebSocket-Protocol", p);
    }
    resp.body(axum::body::Body::empty()).unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The first subprotocol the client offers (in its order) that `supported` has; None when the
/// client offers none (upstream's "" entry); a 400 when it offers only others.
pub(crate) fn negotiate(offered: &[String], supported: &[&str]) -> Result<Option<String>, Box<Response>> {
    if offered.is_empty() {
        return Ok(None);
    }
    match offered.iter().find(|p| supported.contains(&p.as_str())) {
        Some(p) => Ok(Some(p.clone())),
        None => Err(Box::new(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("no supported WebSocket subprotocol among {offered:?} (want one of {supported:?})"),
        ))),
    }
}

/// The WebSocket subprotocols a client offers, in its order.
pub(crate) fn offered_protocols(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()).collect::<Vec<_>>())
        .collect()
}

fn req_<T>(m: T) -> tonic::Request<T> {
    req(m, CALL_TIMEOUT)
}

/// Which streams the runtime's session has (what the client asked for).
#[derive(Clone, Copy)]
struct Streams {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

/// Opens the runtime's streaming URL as a SPDY session (remote command protocol v4).
async fn connect_runtime(url: &str) -> anyhow::Result<hyper::upgrade::Upgraded> {
    let uri: http::Uri = url.parse()?;
    let host = uri.host().ok_or_else(|| anyhow::anyhow!("streaming URL {url} has no host"))?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let tcp = tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect((host.as_str(), port))).await??;
    tcp.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(conn.with_upgrades());
    let path = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    let request = http::Request::post(path)
        .header(http::header::HOST, format!("{host}:{port}"))
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", "v4.channel.k8s.io")
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let mut resp = sender.send_request(request).await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        anyhow::bail!("runtime streaming server answered {}", resp.status());
    }
    Ok(hyper::upgrade::on(&mut resp).await?)
}

/// Relays the client's channel messages to the runtime's SPDY session: one stream per channel
/// (error, stdin, stdout, stderr, resize). Unlike the runtime's WebSocket endpoint (v4 only),
/// SPDY can end stdin alone, so v5's close-stdin message becomes a FIN on the stdin stream
/// (what `kubectl cp` and `exec -i` with a finite input need).
async fn relay<S>(client: tokio_tungstenite::WebSocketStream<S>, url: &str, want: Streams, framing: Framing) -> anyhow::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use crate::spdy::{Decoder, Encoder, Frame};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upgraded = connect_runtime(url).await?;
    let (mut rt_rd, mut rt_wr) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
    let mut enc = Encoder::default();
    let mut dec = Decoder::default();
    // Stream id -> client channel. The error stream carries v4's status, channel 3.
    let mut channel_of: HashMap<u32, u8> = HashMap::new();
    let mut stream_of: HashMap<u8, u32> = HashMap::new();
    let mut out = bytes::BytesMut::new();
    let mut next_id = 1u32;
    for (kind, ch, on) in
        [("error", 3u8, true), ("stdin", 0, want.stdin), ("stdout", 1, want.stdout), ("stderr", 2, want.stderr && !want.tty), ("resize", 4, want.tty)]
    {
        if !on {
            continue;
        }
        enc.encode(&Frame::SynStream { stream: next_id, fin: false, headers: vec![("streamtype".into(), kind.into())] }, &mut out)?;
        channel_of.insert(next_id, ch);
        stream_of.insert(ch, next_id);
        next_id += 2;
    }
    rt_wr.write_all(&out).await?;
    out.clear();
    // Data for a stream the runtime has not answered yet would be dropped by it: hold it back.
    let mut replied: HashSet<u32> = HashSet::new();
    let mut held: HashMap<u32, Vec<Frame>> = HashMap::new();
    let (mut cl_tx, mut cl_rx) = client.split();
    // Upstream tells the client the session is up with an empty message on the lowest
    // writable channel.
    let first = if want.stdout {
        1
    } else if want.stderr && !want.tty {
        2
    } else {
        3
    };
    cl_tx.send(framing.encode(first, &[])).await?;
    // The runtime's Status arrives in pieces on the error stream: sent once it is complete.
    let mut status_buf: Vec<u8> = Vec::new();
    let mut status_sent = false;
    let mut buf = vec![0u8; 64 * 1024];
    let mut client_open = true;
    loop {
        tokio::select! {
            n = rt_rd.read(&mut buf) => {
                let n = n?;
                if n == 0 {
                    break;
                }
                dec.feed(&buf[..n]);
                while let Some(frame) = dec.next_frame()? {
                    match frame {
                        Frame::SynReply { stream, .. } => {
                            replied.insert(stream);
                            for f in held.remove(&stream).unwrap_or_default() {
                                enc.encode(&f, &mut out)?;
                            }
                        }
                        Frame::Data { stream, data, fin } => {
                            match channel_of.get(&stream) {
                                Some(3) => {
                                    status_buf.extend_from_slice(&data);
                                    if fin && !status_sent {
                                        status_sent = true;
                                        send_status(&mut cl_tx, framing, &status_buf).await?;
                                    }
                                }
                                Some(ch @ (1 | 2)) if !data.is_empty() => cl_tx.send(framing.encode(*ch, &data)).await?,
                                _ => {}
                            }
                        }
                        Frame::Ping(id) => enc.encode(&Frame::Ping(id), &mut out)?,
                        Frame::GoAway { .. } => break,
                        _ => {}
                    }
                }
            }
            m = cl_rx.next(), if client_open => {
                let frame = match m {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        // The client is gone; the runtime's side ends the session.
                        client_open = false;
                        None
                    }
                    Some(Ok(m)) => match framing.decode(&m) {
                        // v5 close: [255, channel]; only stdin can be closed.
                        Some((255, rest)) if framing.can_close && rest.first() == Some(&0) => {
                            stream_of.get(&0).map(|s| Frame::Data { stream: *s, fin: true, data: bytes::Bytes::new() })
                        }
                        Some((ch, data)) if !data.is_empty() && (ch == 0 || ch == 4) => {
                            stream_of.get(&ch).map(|s| Frame::Data { stream: *s, fin: false, data: bytes::Bytes::from(data) })
                        }
                        _ => None,
                    },
                };
                if let Some(f) = frame {
                    let Frame::Data { stream, .. } = &f else { continue };
                    if replied.contains(stream) {
                        enc.encode(&f, &mut out)?;
                    } else {
                        held.entry(*stream).or_default().push(f);
                    }
                }
            }
        }
        if !out.is_empty() {
            rt_wr.write_all(&out).await?;
            out.clear();
        }
        if !client_open {
            break;
        }
    }
    if !status_sent && !status_buf.is_empty() {
        send_status(&mut cl_tx, framing, &status_buf).await?;
    }
    // A normal closure (1000): kubectl treats a close without a status as an error.
    let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "".into(),
    };
    let _ = cl_tx.send(Message::Close(Some(frame))).await;
    let _ = cl_tx.close().await;
    let _ = rt_wr.shutdown().await;
    Ok(())
}

async fn send_status<W>(tx: &mut W, framing: Framing, status: &[u8]) -> anyhow::Result<()>
where
    W: futures::Sink<Message> + Unpin,
    W::Error: std::error::Error + Send + Sync + 'static,
{
    let bytes = framing.status_bytes(status);
    if !bytes.is_empty() {
        tx.send(framing.encode(3, &bytes)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framings_of_each_subprotocol() {
        let v5 = Framing::of("v5.channel.k8s.io");
        assert!(v5.can_close && v5.status_json && !v5.base64);
        let v4b = Framing::of("v4.base64.channel.k8s.io");
        assert!(!v4b.can_close && v4b.status_json && v4b.base64);
        for pre in ["", "channel.k8s.io", "v2.channel.k8s.io", "v3.channel.k8s.io"] {
            assert_eq!(Framing::of(pre), Framing { base64: false, status_json: false, can_close: false }, "{pre}");
        }
        assert!(Framing::of("base64.channel.k8s.io").base64);
    }

    #[test]
    fn base64_messages_carry_the_channel_as_a_digit() {
        let f = Framing::of("base64.channel.k8s.io");
        assert_eq!(f.encode(1, b"hi\n"), Message::Text("1aGkK".into()));
        assert_eq!(f.decode(&Message::Text("0aGkK".into())), Some((0, b"hi\n".to_vec())));
        assert_eq!(f.decode(&Message::Binary(vec![0, 1].into())), None);
        let b = Framing::of("v4.channel.k8s.io");
        assert_eq!(b.encode(2, b"x"), Message::Binary(vec![2, b'x'].into()));
        assert_eq!(b.decode(&Message::Binary(vec![0, b'y'].into())), Some((0, b"y".to_vec())));
        assert_eq!(b.decode(&Message::Text("\u{0}typed\n".into())), Some((0, b"typed\n".to_vec())));
    }

    #[test]
    fn pre_v4_protocols_send_only_a_failure_message() {
        let failure = br#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit status 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;
        let success = br#"{"metadata":{},"status":"Success"}"#;
        let v1 = Framing::of("channel.k8s.io");
        assert_eq!(v1.status_bytes(failure), b"command terminated with non-zero exit code: exit status 3".to_vec());
        assert!(v1.status_bytes(success).is_empty());
        let v4 = Framing::of("v4.channel.k8s.io");
        assert_eq!(v4.status_bytes(failure), failure.to_vec());
        assert_eq!(v4.status_bytes(success), success.to_vec());
    }
}
