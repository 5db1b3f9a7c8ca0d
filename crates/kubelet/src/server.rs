//! The kubelet's HTTPS server (port 10250): container logs, exec, attach, port-forward and
//! stats. Clients must present a certificate signed by the cluster CA (the API
//! server's apiserver-kubelet-client); the serving certificate is self-signed, as upstream's
//! kubelet does without server TLS bootstrap.

use std::collections::HashMap;
use std::io::{BufRead, Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;

use crate::config::Config;
use crate::cri::pb;
use crate::pods::{Kubelet, runtime_state};

pub async fn spawn(cfg: Arc<Config>, kubelet: Arc<Kubelet>) -> anyhow::Result<()> {
    tracing::info!("kubelet server: building TLS");
    let tls = tls_config(&cfg)?;
    let sampler = Arc::new(crate::stats::Sampler::default());
    crate::stats::spawn_sampler(cfg.clone(), kubelet.clone(), sampler.clone());
    let app_state = AppState { kubelet: kubelet.clone(), cfg: cfg.clone(), sampler };
    tracing::info!(addr = %cfg.node_ip, port = cfg.kubelet_port, "kubelet server listening");
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(cfg.node_ip, cfg.kubelet_port))
        .await
        .map_err(|e| anyhow::anyhow!("kubelet server on {}:{}: {e}", cfg.node_ip, cfg.kubelet_port))?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/containerLogs/{ns}/{pod}/{container}", get(container_logs))
        .route("/stats/summary", get(stats_summary))
        .route("/exec/{ns}/{pod}/{container}", get(crate::streaming::exec).post(crate::streaming::exec))
        .route("/attach/{ns}/{pod}/{container}", get(crate::streaming::attach).post(crate::streaming::attach))
        .route("/portForward/{ns}/{pod}", get(crate::portforward::handler).post(crate::portforward::handler))
        .with_state(app_state);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            // Streams (exec, port-forward) send small frames that must not wait for Nagle.
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else { return };
                let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let app = app.clone();
                    async move { Ok::<_, std::convert::Infallible>(tower::ServiceExt::oneshot(app, req.map(axum::body::Body::new)).await.into_response()) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(())
}

#[derive(Clone)]
pub struct AppState {
    kubelet: Arc<Kubelet>,
    cfg: Arc<Config>,
    sampler: Arc<crate::stats::Sampler>,
}

impl axum::extract::FromRef<AppState> for Arc<Kubelet> {
    fn from_ref(s: &AppState) -> Arc<Kubelet> {
        s.kubelet.clone()
    }
}

async fn stats_summary(State(s): State<AppState>) -> Response {
    let v = crate::stats::summary(&s.cfg, &s.kubelet, &s.sampler).await;
    (StatusCode::OK, [(http::header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

fn tls_config(cfg: &Config) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for der in &cfg.client_ca_der {
        roots.add(rustls::pki_types::CertificateDer::from(der.clone()))?;
    }
    if roots.is_empty() {
        anyhow::bail!("the kubelet server needs the cluster CA to verify clients (certificate-authority-data in the kubeconfig)");
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let names = vec![cfg.node_name.clone(), cfg.node_ip.to_string()];
    let cert = rcgen::generate_simple_self_signed(names)?;
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert.cert.der().clone()], key)?;
    Ok(Arc::new(cfg))
}

/// A `Status` error answer, as the API server relays it to clients.
pub(crate) fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()});
    (code, [(http::header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// One line of a CRI log file: `<RFC3339Nano> <stream> <P|F> <message>`.
struct LogLine {
    ts: String,
    partial: bool,
    msg: String,
}

fn parse_line(line: &str) -> Option<LogLine> {
    let mut it = line.splitn(4, ' ');
    let ts = it.next()?.to_string();
    let _stream = it.next()?;
    let tag = it.next()?;
    let msg = it.next().unwrap_or("").to_string();
    Some(LogLine { ts, partial: tag == "P", msg })
}

#[derive(Default, Clone)]
struct LogOptions {
    follow: bool,
    timestamps: bool,
    tail: Option<usize>,
    since: Option<chrono::DateTime<chrono::Utc>>,
    limit_bytes: Option<usize>,
}

fn render(line: &LogLine, opts: &LogOptions, out: &mut String) {
    if opts.timestamps {
        out.push_str(&line.ts);
        out.push(' ');
    }
    out.push_str(&line.msg);
    if !line.partial {
        out.push('\n');
    }
}

fn keep(line: &LogLine, opts: &LogOptions) -> bool {
    match opts.since {
        Some(since) => chrono::DateTime::parse_from_rfc3339(&line.ts).map(|t| t >= since).unwrap_or(true),
        None => true,
    }
}

/// Reads the whole file as of now: the text to send and the offset reached.
fn read_existing(path: &PathBuf, opts: &LogOptions) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut text = String::new();
    f.read_to_string(&mut text)?;
    let offset = text.len() as u64;
    let lines: Vec<LogLine> = text.lines().filter_map(parse_line).filter(|l| keep(l, opts)).collect();
    // tailLines counts whole lines (a partial line belongs to the next full one).
    let mut start = 0;
    if let Some(n) = opts.tail {
        let mut full = 0;
        start = lines.len();
        while start > 0 {
            if !lines[start - 1].partial {
                if full == n {
                    break;
                }
                full += 1;
            }
            start -= 1;
        }
    }
    let mut out = String::new();
    for l in &lines[start..] {
        render(l, opts, &mut out);
    }
    Ok((out, offset))
}

async fn container_logs(
    State(k): State<Arc<Kubelet>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(p) = k.pod(&ns, &pod) else {
        return status(StatusCode::NOT_FOUND, "NotFound", format!("pod \"{pod}\" not found"));
    };
    let uid = p.metadata.uid.clone().unwrap_or_default();
    let rs = match runtime_state::read(k.runtime(), &uid).await {
        Ok(rs) => rs,
        Err(e) => return status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e.message().to_string()),
    };
    let previous = q.get("previous").is_some_and(|v| r8s_api::validation::parse_bool(v) == Ok(true));
    let instance = if previous { rs.previous(&container) } else { rs.latest(&container) };
    let Some(inst) = instance.cloned() else {
        let msg = if previous {
            format!("previous terminated container \"{container}\" in pod \"{pod}\" not found")
        } else {
            format!("container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating")
        };
        return status(StatusCode::BAD_REQUEST, "BadRequest", msg);
    };
    let opts = LogOptions {
        follow: q.get("follow").is_some_and(|v| r8s_api::validation::parse_bool(v) == Ok(true)) && !previous,
        timestamps: q.get("timestamps").is_some_and(|v| r8s_api::validation::parse_bool(v) == Ok(true)),
        tail: q.get("tailLines").and_then(|v| v.parse().ok()),
        since: q
            .get("sinceSeconds")
            .and_then(|v| v.parse::<i64>().ok())
            .map(|s| chrono::Utc::now() - chrono::Duration::seconds(s))
            .or_else(|| q.get("sinceTime").and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&chrono::Utc))),
        limit_bytes: q.get("limitBytes").and_then(|v| v.parse().ok()),
    };
    let path = PathBuf::from(&inst.log_path);
    let (mut first, offset) = match read_existing(&path, &opts) {
        Ok(x) => x,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), 0),
        Err(e) => return status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e.to_string()),
    };
    if let Some(limit) = opts.limit_bytes {
        first.truncate(limit.min(first.len()));
    }
    let running = inst.state == pb::ContainerState::ContainerRunning as i32;
    if !opts.follow || !running {
        return (StatusCode::OK, [(http::header::CONTENT_TYPE, "text/plain")], first).into_response();
    }
    // Follow: send what exists, then what is appended, until the container stops.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(16);
    let rt = k.runtime().clone();
    let id = inst.id.clone();
    tokio::spawn(async move {
        if tx.send(Ok(bytes::Bytes::from(first))).await.is_err() {
            return;
        }
        let mut offset = offset;
        let mut pending = String::new();
        let mut checks = 0u32;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut chunk = String::new();
            if let Ok(mut f) = std::fs::File::open(&path)
                && f.seek(SeekFrom::Start(offset)).is_ok()
            {
                let mut r = std::io::BufReader::new(f);
                let mut line = String::new();
                while r.read_line(&mut line).unwrap_or(0) > 0 {
                    if !line.ends_with('\n') {
                        break;
                    }
                    offset += line.len() as u64;
                    pending.push_str(line.trim_end_matches('\n'));
                    if let Some(l) = parse_line(&pending) {
                        render(&l, &LogOptions { timestamps: opts.timestamps, ..Default::default() }, &mut chunk);
                    }
                    pending.clear();
                    line.clear();
                }
            }
            if !chunk.is_empty() && tx.send(Ok(bytes::Bytes::from(chunk))).await.is_err() {
                return;
            }
            checks += 1;
            if checks.is_multiple_of(10) {
                let st = rt
                    .runtime
                    .clone()
                    .container_status(crate::cri::req(pb::ContainerStatusRequest { container_id: id.clone(), verbose: false }, Duration::from_secs(10)))
                    .await;
                let still = st.ok().and_then(|s| s.into_inner().status).is_some_and(|s| s.state == pb::ContainerState::ContainerRunning as i32);
                if !still {
                    return;
                }
            }
        }
    });
    let body = axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    (StatusCode::OK, [(http::header::CONTENT_TYPE, "text/plain")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_log_lines_render_with_tail_and_partials() {
        let dir = std::env::temp_dir().join(format!("r8s-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("0.log");
        std::fs::write(
            &p,
            "2026-01-01T00:00:00.1Z stdout F one\n2026-01-01T00:00:01.1Z stdout P tw\n2026-01-01T00:00:01.2Z stdout F o\n2026-01-01T00:00:02Z stderr F three\n",
        )
        .unwrap();
        let (all, _) = read_existing(&p, &LogOptions::default()).unwrap();
        assert_eq!(all, "one\ntwo\nthree\n");
        let (tail, _) = read_existing(&p, &LogOptions { tail: Some(2), ..Default::default() }).unwrap();
        assert_eq!(tail, "two\nthree\n");
        let (ts, _) = read_existing(&p, &LogOptions { tail: Some(1), timestamps: true, ..Default::default() }).unwrap();
        assert_eq!(ts, "2026-01-01T00:00:02Z three\n");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
