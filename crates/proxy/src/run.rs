//! The proxy as a process (`r8s proxy`, and inside every agent): follows Services and
//! EndpointSlices, keeps the node's packet filter in step (a full transaction at start and
//! after any failure, element-wise ones after that), and answers `/proxyMode` on
//! 127.0.0.1:10249 and `/healthz` on :10256 as kube-proxy does.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use r8s_client::informer::Informers;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::model::{Change, Model, Tracker};
use crate::{conntrack, iptables, nftables};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Nftables,
    Iptables,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "nftables" | "" => Ok(Mode::Nftables),
            "iptables" => Ok(Mode::Iptables),
            other => Err(format!("unknown proxy mode {other:?}: want nftables or iptables")),
        }
    }
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Nftables => "nftables",
            Mode::Iptables => "iptables",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    pub mode: Mode,
    pub cluster_cidr: Option<String>,
    pub metrics_addr: SocketAddr,
    pub healthz_addr: SocketAddr,
    pub table: String,
}

impl Config {
    pub fn new(node_name: &str) -> Config {
        Config {
            node_name: node_name.to_string(),
            mode: Mode::Nftables,
            cluster_cidr: Some("10.244.0.0/16".into()),
            metrics_addr: "127.0.0.1:10249".parse().unwrap(),
            healthz_addr: "0.0.0.0:10256".parse().unwrap(),
            table: "r8s-proxy".into(),
        }
    }
}

/// Last successful sync, for /healthz.
#[derive(Default)]
struct Health {
    last: Option<SystemTime>,
}

/// Feeds `text` to a program's standard input (one transaction for nft -f and iptables-restore).
pub async fn pipe_to(program: &str, args: &[&str], text: &str) -> anyhow::Result<String> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("running {program}: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = text.to_string();
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(input.as_bytes()).await;
    });
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await??;
    let _ = writer.await;
    anyhow::ensure!(out.status.success(), "{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Applies one nft transaction (all or nothing).
pub async fn nft_apply(text: &str) -> anyhow::Result<()> {
    pipe_to("nft", &["-f", "-"], text).await.map(|_| ())
}

/// A proxy backend: brings the node's rules to a model, whole or by one change.
trait Backend {
    /// Replaces everything this backend owns with `model`'s rules.
    async fn full(&mut self, model: &Model) -> anyhow::Result<()>;
    /// Applies `change` (after which the whole model is `model`); Ok(false) when only a full
    /// sync can.
    async fn delta(&mut self, change: &Change, model: &Model) -> anyhow::Result<bool>;
}

struct Nftables {
    opts: nftables::Options,
    applied: Option<nftables::Applied>,
}

impl Backend for Nftables {
    async fn full(&mut self, model: &Model) -> anyhow::Result<()> {
        self.applied = None;
        let (text, applied) = nftables::full(model, &self.opts);
        nft_apply(&text).await?;
        self.applied = Some(applied);
        Ok(())
    }
    async fn delta(&mut self, change: &Change, _model: &Model) -> anyhow::Result<bool> {
        let Some(applied) = self.applied.as_mut() else { return Ok(false) };
        match applied.delta(change, &self.opts) {
            None => Ok(false),
            Some(t) if t.is_empty() => Ok(true),
            Some(t) => {
                let r = nft_apply(&t).await;
                if r.is_err() {
                    self.applied = None;
                }
                r.map(|_| true)
            }
        }
    }
}

struct Iptables {
    opts: iptables::Options,
    /// The ruleset applied last (None until a full sync succeeds).
    applied: Option<iptables::Ruleset>,
}

impl Backend for Iptables {
    async fn full(&mut self, model: &Model) -> anyhow::Result<()> {
        self.applied = None;
        let mut stale = Vec::new();
        for table in [iptables::Table::Nat, iptables::Table::Filter] {
            let save = pipe_to("iptables-save", &["-t", table.name()], "").await?;
            stale.extend(iptables::chains_in_save(table, &save));
        }
        let rs = iptables::ruleset(model, &self.opts);
        pipe_to("iptables-restore", &["--noflush"], &iptables::full(&rs, &stale)).await?;
        for (table, chain, rule) in iptables::JUMPS {
            let t = table.name();
            let script = format!("iptables -w -t {t} -C {chain} {rule} 2>/dev/null || iptables -w -t {t} -I {chain} 1 {rule}");
            pipe_to("sh", &["-c", &script], "").await?;
        }
        self.applied = Some(rs);
        Ok(())
    }
    async fn delta(&mut self, _change: &Change, model: &Model) -> anyhow::Result<bool> {
        let Some(applied) = &self.applied else { return Ok(false) };
        let rs = iptables::ruleset(model, &self.opts);
        let text = iptables::delta(applied, &rs);
        if !text.is_empty() {
            self.applied = None;
            pipe_to("iptables-restore", &["--noflush"], &text).await?;
        }
        self.applied = Some(rs);
        Ok(true)
    }
}

fn sysctl(key: &str, value: &str) {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    if let Err(e) = std::fs::write(&path, value) {
        tracing::warn!(%path, error = %e, "setting sysctl");
    }
}

/// Runs until the process ends.
pub async fn run(client: kube::Client, cfg: Config) -> anyhow::Result<()> {
    // Forwarding for pod traffic, and DNAT of 127.0.0.1 node-port traffic to pods.
    sysctl("net.ipv4.ip_forward", "1");
    sysctl("net.ipv4.conf.all.route_localnet", "1");
    // Pods on one bridge talking through a service: their packets must pass the NAT hooks.
    sysctl("net.bridge.bridge-nf-call-iptables", "1");
    let health = Arc::new(Mutex::new(Health::default()));
    spawn_http(cfg.metrics_addr, cfg.mode, health.clone(), false).await;
    spawn_http(cfg.healthz_addr, cfg.mode, health.clone(), true).await;

    let informers = Informers::new(client);
    let services = informers.get::<Service>();
    let slices = informers.get::<EndpointSlice>();
    // Every change goes to the sync loop's tracker, in order.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    {
        let t = tx.clone();
        services.on_change(move |o, n| {
            let _ = t.send(Event::Service(o.cloned(), n.cloned()));
        });
        let t = tx.clone();
        slices.on_change(move |o, n| {
            let _ = t.send(Event::Slice(o.cloned(), n.cloned()));
        });
    }
    services.synced().await;
    slices.synced().await;
    // What the informers held before the handlers were in place (adding twice is harmless).
    for s in services.list() {
        let _ = tx.send(Event::Service(None, Some(s)));
    }
    for s in slices.list() {
        let _ = tx.send(Event::Slice(None, Some(s)));
    }
    drop(tx);
    match cfg.mode {
        Mode::Nftables => {
            let opts = nftables::Options { table: cfg.table.clone(), cluster_cidr: cfg.cluster_cidr.clone() };
            sync_loop(Nftables { opts, applied: None }, &cfg, rx, health).await
        }
        Mode::Iptables => {
            // Switching modes: the other backend's table goes.
            let _ = pipe_to("nft", &["delete", "table", "ip", &cfg.table], "").await;
            let opts = iptables::Options { cluster_cidr: cfg.cluster_cidr.clone() };
            sync_loop(Iptables { opts, applied: None }, &cfg, rx, health).await
        }
    }
}

enum Event {
    Service(Option<Arc<Service>>, Option<Arc<Service>>),
    Slice(Option<Arc<EndpointSlice>>, Option<Arc<EndpointSlice>>),
}

impl Event {
    fn apply(self, t: &mut Tracker) {
        match self {
            Event::Service(o, n) => t.service(o.as_ref(), n.as_ref()),
            Event::Slice(o, n) => t.slice(o.as_ref(), n.as_ref()),
        }
    }
}

/// Answers load balancers' health checks on each LoadBalancer's healthCheckNodePort (200 when
/// this node has endpoints of the service, 503 when not), as kube-proxy does.
#[derive(Default)]
struct HealthCheckServers {
    answers: Arc<Mutex<crate::model::HealthChecks>>,
    listeners: std::collections::BTreeMap<u16, tokio::task::JoinHandle<()>>,
}

impl HealthCheckServers {
    async fn update(&mut self, want: crate::model::HealthChecks) {
        for port in self.listeners.keys().copied().filter(|p| !want.contains_key(p)).collect::<Vec<_>>() {
            if let Some(h) = self.listeners.remove(&port) {
                h.abort();
            }
        }
        for port in want.keys().copied().filter(|p| !self.listeners.contains_key(p)).collect::<Vec<_>>() {
            let listener = match tokio::net::TcpListener::bind(("0.0.0.0", port)).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(port, error = %e, "health check node port unavailable");
                    continue;
                }
            };
            let answers = self.answers.clone();
            self.listeners.insert(
                port,
                tokio::spawn(async move {
                    loop {
                        let Ok((mut s, _)) = listener.accept().await else { continue };
                        let answer = answers.lock().unwrap().get(&port).cloned();
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; 2048];
                            let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
                            let (ns, name, n) = answer.unwrap_or_default();
                            let body = serde_json::json!({"service": {"namespace": ns, "name": name}, "localEndpoints": n, "serviceProxyHealthy": true}).to_string();
                            let status = if n > 0 { "200 OK" } else { "503 Service Unavailable" };
                            let resp = format!(
                                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\nX-Load-Balancing-Endpoint-Weight: {n}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = s.write_all(resp.as_bytes()).await;
                        });
                    }
                }),
            );
        }
        *self.answers.lock().unwrap() = want;
    }
}

async fn sync_loop(
    mut backend: impl Backend,
    cfg: &Config,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
    health: Arc<Mutex<Health>>,
) -> anyhow::Result<()> {
    let mut tracker = Tracker::new(&cfg.node_name);
    let mut need_full = true;
    let mut health_checks = HealthCheckServers::default();
    loop {
        while let Ok(ev) = rx.try_recv() {
            ev.apply(&mut tracker);
        }
        let change = tracker.take_change();
        let model = tracker.model();
        let started = Instant::now();
        let result = if need_full {
            backend.full(model).await.map(|_| false)
        } else if change.is_empty() {
            Ok(true)
        } else {
            match backend.delta(&change, model).await {
                Ok(true) => Ok(true),
                Ok(false) => backend.full(model).await.map(|_| false),
                Err(e) => {
                    tracing::warn!(error = %e, "partial sync failed; rewriting the whole ruleset");
                    backend.full(model).await.map(|_| false)
                }
            }
        };
        match result {
            Ok(partial) => {
                tracing::debug!(services = model.len(), partial, elapsed_ms = started.elapsed().as_millis() as u64, "proxy rules synced");
                // The health check table walks the whole model: only when a change can touch it.
                let touches_health_checks = change.old.values().chain(change.new.values()).any(|sp| sp.health_check_node_port.is_some());
                if !partial || touches_health_checks {
                    health_checks.update(crate::model::health_checks(model)).await;
                }
                // Once no rule sends new packets there, the old UDP flows go too.
                let stale = conntrack::stale_udp_flows(&change);
                if !stale.is_empty() {
                    conntrack::flush(stale).await;
                }
                need_full = false;
                health.lock().unwrap().last = Some(SystemTime::now());
            }
            Err(e) => {
                tracing::warn!(error = %e, "proxy sync failed; retrying");
                need_full = true;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        match rx.recv().await {
            Some(ev) => ev.apply(&mut tracker),
            None => return Ok(()),
        }
        // Let a burst of changes (a rollout) land in one transaction.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A tiny HTTP/1.0 responder for /proxyMode, /healthz and /livez.
async fn spawn_http(addr: SocketAddr, mode: Mode, health: Arc<Mutex<Health>>, healthz: bool) {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(%addr, error = %e, "proxy status port unavailable");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { continue };
            let health = health.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.ok().and_then(|r| r.ok()).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                let path = req.split_whitespace().nth(1).unwrap_or("/").split('?').next().unwrap_or("/").to_string();
                let (code, ctype, body) = match path.as_str() {
                    "/proxyMode" if !healthz => (200, "text/plain; charset=utf-8", mode.name().to_string()),
                    "/healthz" | "/livez" if healthz => {
                        let last = health.lock().unwrap().last;
                        let now = SystemTime::now();
                        let fmt = |t: SystemTime| k8s_openapi::jiff::Timestamp::try_from(t).map(|t| t.to_string()).unwrap_or_default();
                        let body = serde_json::json!({"lastUpdated": last.map(fmt).unwrap_or_default(), "currentTime": fmt(now), "nodeEligible": true});
                        (if last.is_some() { 200 } else { 503 }, "application/json", body.to_string())
                    }
                    _ => (404, "text/plain; charset=utf-8", "404 page not found\n".to_string()),
                };
                let reason = match code {
                    200 => "OK",
                    503 => "Service Unavailable",
                    _ => "Not Found",
                };
                let resp = format!("HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
}
