#![allow(dead_code)] // each binary uses a different part

//! Helpers shared by the benchmark binaries: start a release `r8s server` in a temp dir,
//! talk to it with kube-rs, percentiles, RSS.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

pub fn r8s_bin() -> std::path::PathBuf {
    std::env::var("R8S_BIN").map(Into::into).unwrap_or_else(|_| std::env::current_exe().unwrap().parent().unwrap().join("r8s"))
}

pub struct Server {
    pub child: Child,
    pub dir: Option<tempfile::TempDir>,
    pub children: Vec<Child>,
}

impl Server {
    pub fn path(&self) -> &std::path::Path {
        self.dir.as_ref().expect("data dir").path()
    }

    pub fn kubeconfig(&self) -> std::path::PathBuf {
        self.path().join("admin.kubeconfig")
    }

    /// Kills the server (like a crash) and hands back its data dir for a restart.
    pub fn kill(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.dir.take().expect("data dir")
    }

    /// Starts another r8s process (e.g. sim-nodes) that lives as long as the server.
    pub fn spawn_with(&mut self, args: &[&str]) -> Result<()> {
        let c = Command::new(r8s_bin()).args(args).arg("--kubeconfig").arg(self.kubeconfig()).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        self.children.push(c);
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for c in self.children.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(dir: tempfile::TempDir, port: u16, extra: &[&str]) -> Result<(Server, Duration)> {
    let t0 = Instant::now();
    let kc = dir.path().join("admin.kubeconfig");
    let _ = std::fs::remove_file(&kc);
    let child = Command::new(r8s_bin())
        .args(["server", "--disable-agent", "--bind-address", "127.0.0.1", "--https-listen-port", &port.to_string(), "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--write-kubeconfig")
        .arg(&kc)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawn r8s")?;
    // Ready = /readyz answers ok over TLS (what clients see).
    loop {
        if kc.exists() {
            let out = Command::new("curl").args(["-sk", &format!("https://127.0.0.1:{port}/readyz")]).output()?;
            if String::from_utf8_lossy(&out.stdout) == "ok" {
                break;
            }
        }
        if t0.elapsed() > Duration::from_secs(30) {
            anyhow::bail!("server not ready");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok((Server { child, dir: Some(dir), children: Vec::new() }, t0.elapsed()))
}

pub async fn client(kubeconfig: &std::path::Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(cfg)?)
}

pub async fn send(c: &kube::Client, method: &str, path: &str, body: Vec<u8>) -> Result<(u16, Vec<u8>)> {
    let req = http::Request::builder().method(method).uri(path).header("Content-Type", "application/json").body(body)?;
    let resp = c.send(req.map(kube::client::Body::from)).await?;
    let code = resp.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(resp.into_body()).await?.to_bytes();
    Ok((code, bytes.to_vec()))
}

pub fn pct(mut v: Vec<Duration>, p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

pub fn rss_mib(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 1024.0
}
