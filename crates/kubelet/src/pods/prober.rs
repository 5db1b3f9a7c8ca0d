//! Probes (liveness, readiness, startup; exec, httpGet, tcpSocket) with upstream's timing:
//! initialDelaySeconds, periodSeconds, timeoutSeconds, failureThreshold, successThreshold. One
//! task per running container instance and probe kind; a result change requeues the pod.
//! Liveness and startup failures stop the container (the worker restarts it per
//! restartPolicy); readiness feeds the container's `ready` and so the pod's Ready condition.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cri::{CALL_TIMEOUT, Runtime, pb, req};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Liveness,
    Readiness,
    Startup,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
            Kind::Startup => "Startup",
        }
    }
}

/// Probe results by (container id, kind); a missing entry means "not yet known".
#[derive(Default)]
pub struct Results {
    map: Mutex<HashMap<(String, Kind), bool>>,
    running: Mutex<std::collections::HashSet<(String, Kind)>>,
}

impl Results {
    pub fn get(&self, id: &str, kind: Kind) -> Option<bool> {
        self.map.lock().unwrap().get(&(id.to_string(), kind)).copied()
    }
    fn set(&self, id: &str, kind: Kind, v: bool) -> bool {
        self.map.lock().unwrap().insert((id.to_string(), kind), v) != Some(v)
    }
    fn forget(&self, id: &str, kind: Kind) {
        self.map.lock().unwrap().remove(&(id.to_string(), kind));
        self.running.lock().unwrap().remove(&(id.to_string(), kind));
    }
    /// Is the container ready (readiness passed, or no readiness probe)?
    pub fn ready(&self, c: &Container, id: &str) -> bool {
        if c.readiness_probe.is_none() {
            return self.started(c, id);
        }
        self.started(c, id) && self.get(id, Kind::Readiness) == Some(true)
    }
    /// Has the container started (startup probe passed, or none)?
    pub fn started(&self, c: &Container, id: &str) -> bool {
        c.startup_probe.is_none() || self.get(id, Kind::Startup) == Some(true)
    }
}

/// What a prober needs from the kubelet.
pub struct Ctx {
    pub rt: Runtime,
    /// False on simulated nodes: network probes pass without connecting.
    pub network: bool,
    pub results: Arc<Results>,
    pub recorder: r8s_client::events::Recorder,
    /// Called when a result changes (requeues the pod).
    pub changed: Arc<dyn Fn() + Send + Sync>,
}

/// Starts the probe tasks a running container instance needs (idempotent).
pub fn ensure(ctx: &Arc<Ctx>, pod: &Pod, c: &Container, id: &str, pod_ip: &str, started_at_nanos: i64) {
    for (kind, probe) in [(Kind::Startup, &c.startup_probe), (Kind::Liveness, &c.liveness_probe), (Kind::Readiness, &c.readiness_probe)] {
        let Some(probe) = probe.clone() else { continue };
        if !ctx.results.running.lock().unwrap().insert((id.to_string(), kind)) {
            continue;
        }
        let ctx = ctx.clone();
        let (pod, c, id, ip) = (pod.clone(), c.clone(), id.to_string(), pod_ip.to_string());
        tokio::spawn(async move {
            run(&ctx, &pod, &c, &id, &ip, kind, &probe, started_at_nanos).await;
            ctx.results.forget(&id, kind);
        });
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(ctx: &Ctx, pod: &Pod, c: &Container, id: &str, ip: &str, kind: Kind, probe: &Probe, started_at_nanos: i64) {
    let delay = Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
    let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    let fail_n = probe.failure_threshold.unwrap_or(3).max(1);
    let ok_n = if kind == Kind::Readiness { probe.success_threshold.unwrap_or(1).max(1) } else { 1 };
    let started = std::time::UNIX_EPOCH + Duration::from_nanos(started_at_nanos.max(0) as u64);
    let since = std::time::SystemTime::now().duration_since(started).unwrap_or_default();
    if since < delay {
        tokio::time::sleep(delay - since).await;
    }
    let (mut fails, mut oks) = (0, 0);
    loop {
        // The container instance must still run; otherwise this prober is done.
        let st = ctx.rt.runtime.clone().container_status(req(pb::ContainerStatusRequest { container_id: id.to_string(), verbose: false }, CALL_TIMEOUT)).await;
        let running = st.ok().and_then(|s| s.into_inner().status).is_some_and(|s| s.state == pb::ContainerState::ContainerRunning as i32);
        if !running {
            return;
        }
        // Liveness and readiness wait for the startup probe.
        if kind != Kind::Startup && !ctx.results.started(c, id) {
            tokio::time::sleep(period).await;
            continue;
        }
        let outcome = check(ctx, c, id, ip, probe, timeout).await;
        match outcome {
            Ok(()) => {
                fails = 0;
                oks += 1;
                if oks >= ok_n && ctx.results.set(id, kind, true) {
                    (ctx.changed)();
                }
                if kind == Kind::Startup && oks >= ok_n {
                    return;
                }
            }
            Err(msg) => {
                oks = 0;
                fails += 1;
                ctx.recorder.warning(pod, "Unhealthy", format!("{} probe failed: {msg}", kind.name()));
                if fails >= fail_n {
                    match kind {
                        Kind::Readiness => {
                            if ctx.results.set(id, kind, false) {
                                (ctx.changed)();
                            }
                        }
                        Kind::Liveness | Kind::Startup => {
                            ctx.recorder.normal(pod, "Killing", format!("Container {} failed {} probe, will be restarted", c.name, kind.name().to_lowercase()));
                            let grace =
                                probe.termination_grace_period_seconds.or(pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds)).unwrap_or(30);
                            let _ = ctx
                                .rt
                                .runtime
                                .clone()
                                .stop_container(req(
                                    pb::StopContainerRequest { container_id: id.to_string(), timeout: grace },
                                    Duration::from_secs(grace as u64 + 30),
                                ))
                                .await;
                            (ctx.changed)();
                            return;
                        }
                    }
                }
            }
        }
        if kind == Kind::Readiness && ctx.results.get(id, kind).is_none() {
            // Not ready until the first success: make the initial state explicit.
            ctx.results.set(id, kind, false);
        }
        tokio::time::sleep(period).await;
    }
}

fn port_of(c: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(p) => Ok(*p as u16),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port as u16)
            .ok_or_else(|| format!("port {name} not found in the container's ports")),
    }
}

async fn check(ctx: &Ctx, c: &Container, id: &str, ip: &str, probe: &Probe, timeout: Duration) -> Result<(), String> {
    if let Some(e) = &probe.exec {
        let cmd = e.command.clone().unwrap_or_default();
        let r = ctx
            .rt
            .runtime
            .clone()
            .exec_sync(req(pb::ExecSyncRequest { container_id: id.to_string(), cmd, timeout: timeout.as_secs() as i64 }, timeout + Duration::from_secs(5)))
            .await;
        return match r {
            Ok(r) => {
                let r = r.into_inner();
                if r.exit_code == 0 {
                    Ok(())
                } else {
                    let out = String::from_utf8_lossy(&r.stdout).into_owned() + &String::from_utf8_lossy(&r.stderr);
                    Err(if out.trim().is_empty() { format!("command exited with code {}", r.exit_code) } else { out })
                }
            }
            Err(s) => Err(s.message().to_string()),
        };
    }
    if !ctx.network {
        return Ok(());
    }
    if let Some(h) = &probe.http_get {
        let port = port_of(c, &h.port)?;
        let host = h.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| ip.to_string());
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        let scheme = h.scheme.clone().unwrap_or_else(|| "HTTP".into());
        if scheme == "HTTPS" {
            // Upstream skips certificate verification; a TCP connect is the honest subset here.
            return tcp(&host, port, timeout).await;
        }
        return match tokio::time::timeout(timeout, http_get(&host, port, &path, h.http_headers.as_deref().unwrap_or_default())).await {
            Ok(Ok(code)) if (200..400).contains(&code) => Ok(()),
            Ok(Ok(code)) => Err(format!("HTTP probe failed with statuscode: {code}")),
            Ok(Err(e)) => Err(format!("Get \"http://{host}:{port}{path}\": {e}")),
            Err(_) => Err(format!("Get \"http://{host}:{port}{path}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)")),
        };
    }
    if let Some(t) = &probe.tcp_socket {
        let port = port_of(c, &t.port)?;
        let host = t.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| ip.to_string());
        return tcp(&host, port, timeout).await;
    }
    Ok(())
}

async fn tcp(host: &str, port: u16, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: connect: {e}")),
        Err(_) => Err(format!("dial tcp {host}:{port}: i/o timeout")),
    }
}

async fn http_get(host: &str, port: u16, path: &str, headers: &[k8s_openapi::api::core::v1::HTTPHeader]) -> std::io::Result<u16> {
    let mut s = tokio::net::TcpStream::connect((host, port)).await?;
    let mut reqs = format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.32\r\nAccept: */*\r\nConnection: close\r\n");
    for h in headers {
        reqs.push_str(&format!("{}: {}\r\n", h.name, h.value));
    }
    reqs.push_str("\r\n");
    s.write_all(reqs.as_bytes()).await?;
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await?;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| std::io::Error::other("malformed HTTP response"))
}
