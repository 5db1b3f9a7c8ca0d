//! Benchmarks the API server on loopback: `r8s-api-bench [--objects 100000]`.
//! Starts its own `r8s server` (release build next to this binary, or $R8S_BIN) in a temp dir.

mod common;

use common::{client, pct, rss_mib, send, start};

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::StreamExt;

/// The API server alone: no scheduler or controllers reacting to the benchmark's pods.
const API_ONLY: &[&str] = &["--disable-scheduler", "--disable-controller-manager"];

fn pod(ns: &str, name: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "bench", "tier": "web"}},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.21.1", "ports": [{"containerPort": 80}],
                  "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}
    }))
    .unwrap()
}

async fn create_many(c: &kube::Client, ns: &str, prefix: &str, n: usize, concurrency: usize) -> Result<Duration> {
    let t0 = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let c = c.clone();
        let next = next.clone();
        let ns = ns.to_string();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                let (code, body) = send(&c, "POST", &format!("/api/v1/namespaces/{ns}/pods"), pod(&ns, &format!("{prefix}-{i}"))).await?;
                anyhow::ensure!(code == 201, "create failed: {code} {}", String::from_utf8_lossy(&body));
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(t0.elapsed())
}

async fn ensure_ns(c: &kube::Client, ns: &str) -> Result<()> {
    let body = serde_json::to_vec(&serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))?;
    send(c, "POST", "/api/v1/namespaces", body).await?;
    Ok(())
}

async fn latency(c: &kube::Client, path: &str, n: usize) -> Result<(f64, f64)> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let (code, _) = send(c, "GET", path, vec![]).await?;
        anyhow::ensure!(code == 200, "GET {path}: {code}");
        v.push(t.elapsed());
    }
    Ok((pct(v.clone(), 0.5), pct(v, 0.99)))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let big: usize = args.iter().position(|a| a == "--objects").and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let port = 17443;
    let mut out = Vec::new();
    let mut line = |s: String| {
        println!("{s}");
        out.push(s);
    };

    // Time to ready: first start (creates the PKI) and a restart.
    let (srv, first) = start(tempfile::tempdir()?, port, API_ONLY)?;
    let (srv, restart) = start(srv.kill(), port, API_ONLY)?;
    line(format!("| time from `r8s server` start to /readyz (first start, with PKI) | {:.0} ms |", first.as_secs_f64() * 1000.0));
    line(format!("| time from `r8s server` start to /readyz (restart) | {:.0} ms |", restart.as_secs_f64() * 1000.0));
    let pid = srv.child.id();
    let c = client(&srv.kubeconfig()).await?;
    // Warm the connection, then idle memory.
    send(&c, "GET", "/api/v1/namespaces", vec![]).await?;
    std::thread::sleep(Duration::from_millis(500));
    line(format!("| idle RSS | {:.1} MiB |", rss_mib(pid)));

    ensure_ns(&c, "seq").await?;
    let n_seq = 2000;
    let d = create_many(&c, "seq", "p", n_seq, 1).await?;
    line(format!("| durable creates/s, 1 client ({n_seq} pods) | {:.0} |", n_seq as f64 / d.as_secs_f64()));
    ensure_ns(&c, "b10k").await?;
    let rss0 = rss_mib(pid);
    let d = create_many(&c, "b10k", "p", 10_000, 64).await?;
    line(format!("| durable creates/s, 64 clients (10,000 pods) | {:.0} |", 10_000.0 / d.as_secs_f64()));
    line(format!("| RSS growth per 10k pods | {:.1} MiB |", rss_mib(pid) - rss0));
    let (p50, p99) = latency(&c, "/api/v1/namespaces/b10k/pods/p-5000", 1000).await?;
    line(format!("| GET latency at 10k objects (p50 / p99) | {p50:.2} ms / {p99:.2} ms |"));
    let (p50, p99) = latency(&c, "/api/v1/namespaces/b10k/pods", 20).await?;
    line(format!("| LIST 10k pods from cache (p50 / p99) | {p50:.1} ms / {p99:.1} ms |"));

    // Watch fan-out: 100 watchers, 200 events.
    let watchers = 100;
    let events = 200;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let (_, list) = send(&c, "GET", "/api/v1/namespaces/fan/pods", vec![]).await?;
    let rv = serde_json::from_slice::<serde_json::Value>(&list)?["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
    ensure_ns(&c, "fan").await?;
    for _ in 0..watchers {
        let c = c.clone();
        let tx = tx.clone();
        let rv = rv.clone();
        tokio::spawn(async move {
            let req = http::Request::builder().uri(format!("/api/v1/namespaces/fan/pods?watch=true&resourceVersion={rv}")).body(Vec::new()).unwrap();
            let mut s = c.request_events::<serde_json::Value>(req.map(Into::into)).await.unwrap().boxed();
            while let Some(Ok(ev)) = s.next().await {
                if let kube::api::WatchEvent::Added(o) = ev {
                    let _ = tx.send((o["metadata"]["name"].as_str().unwrap_or("").to_string(), Instant::now()));
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut sent = std::collections::HashMap::new();
    for i in 0..events {
        let name = format!("f-{i}");
        let t = Instant::now();
        let (code, _) = send(&c, "POST", "/api/v1/namespaces/fan/pods", pod("fan", &name)).await?;
        anyhow::ensure!(code == 201);
        sent.insert(name, t);
    }
    let mut lat = Vec::new();
    while lat.len() < watchers * events {
        let (name, at) = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await?.unwrap();
        lat.push(at - sent[&name]);
    }
    line(format!(
        "| watch fan-out latency, 100 watchers (create sent -> event received, p50 / p99) | {:.1} ms / {:.1} ms |",
        pct(lat.clone(), 0.5),
        pct(lat, 0.99)
    ));

    if big > 10_000 {
        ensure_ns(&c, "big").await?;
        let d = create_many(&c, "big", "p", big - 10_000, 64).await?;
        line(format!("| durable creates/s, 64 clients ({} more pods) | {:.0} |", big - 10_000, (big - 10_000) as f64 / d.as_secs_f64()));
        let (p50, p99) = latency(&c, "/api/v1/namespaces/big/pods/p-5000", 1000).await?;
        line(format!("| GET latency at {big} objects (p50 / p99) | {p50:.2} ms / {p99:.2} ms |"));
        let (p50, p99) = latency(&c, "/api/v1/namespaces/b10k/pods", 20).await?;
        line(format!("| LIST 10k pods (one namespace) at {big} objects (p50 / p99) | {p50:.1} ms / {p99:.1} ms |"));
        let (p50, p99) = latency(&c, "/api/v1/pods", 5).await?;
        line(format!("| LIST all {big} pods (p50 / p99) | {p50:.0} ms / {p99:.0} ms |"));
        line(format!("| RSS with {big} pods | {:.0} MiB |", rss_mib(pid)));
    }
    let path = std::env::var("BENCH_OUT").unwrap_or_default();
    if !path.is_empty() {
        std::fs::write(&path, out.join("\n") + "\n")?;
    }
    Ok(())
}
