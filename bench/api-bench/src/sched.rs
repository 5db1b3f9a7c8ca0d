//! Scheduler benchmark: `r8s-sched-bench --nodes 5000 --pods 10000 --mode basic|anti|spread`.
//! Starts a release `r8s server` (scheduler and controllers in-process) and `r8s sim-nodes`,
//! creates the pods with 64 clients and watches them get bound and then Running (reported by
//! the simulated kubelets): throughput is pods over the time from the first create to the last
//! binding (and to the last Running), latency is create-sent to bound-seen (Running-seen). The
//! row ends with the RSS of the server and of the sim-nodes process.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use common::{client, pct, rss_mib, send, start};
use futures::StreamExt;
use serde_json::json;

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_string())
}

fn pod(i: usize, mode: &str) -> Vec<u8> {
    let mut spec = json!({"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
        "resources": {"requests": {"cpu": "100m", "memory": "100Mi"}}}]});
    let group = format!("g{}", i / 10);
    match mode {
        // Groups of 10 pods that may not share a node.
        "anti" => {
            spec["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"group": group}}, "topologyKey": "kubernetes.io/hostname"}]}});
        }
        // Groups of 10 spread evenly over nodes.
        "spread" => {
            spec["topologySpreadConstraints"] = json!([{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"group": group}}}]);
        }
        _ => {}
    }
    serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("p-{i}"), "namespace": "bench", "labels": {"group": group}}, "spec": spec}))
    .unwrap()
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let nodes: usize = arg(&args, "--nodes", "1000").parse()?;
    let pods: usize = arg(&args, "--pods", "10000").parse()?;
    let mode = arg(&args, "--mode", "basic");
    let port: u16 = arg(&args, "--port", "17444").parse()?;
    let (mut srv, _) = start(tempfile::tempdir()?, port, &[])?;
    let c = client(&srv.kubeconfig()).await?;
    srv.spawn_with(&["sim-nodes", "--count", &nodes.to_string(), "--cpu", "8", "--memory", "32Gi", "--pods", "110"])?;
    // Wait for all nodes.
    let t0 = Instant::now();
    loop {
        let (_, body) = send(&c, "GET", "/api/v1/nodes?limit=1", vec![]).await?;
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        let rest = v["metadata"]["remainingItemCount"].as_u64().unwrap_or(0) as usize + v["items"].as_array().map(|a| a.len()).unwrap_or(0);
        if rest >= nodes {
            break;
        }
        anyhow::ensure!(t0.elapsed() < Duration::from_secs(600), "nodes did not register");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("{nodes} nodes registered in {:.1}s", t0.elapsed().as_secs_f64());
    send(&c, "POST", "/api/v1/namespaces", serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}))?).await?;
    if mode == "deploy" {
        return deployment_bench(&c, &srv, nodes, pods).await;
    }

    // Watch bindings and Running (re-watching from the last seen revision if the stream ends).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let (run_tx, mut run_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    {
        let c = c.clone();
        tokio::spawn(async move {
            let mut rv = "0".to_string();
            loop {
                let req = http::Request::builder().uri(format!("/api/v1/namespaces/bench/pods?watch=true&resourceVersion={rv}")).body(Vec::new()).unwrap();
                let Ok(s) = c.request_events::<serde_json::Value>(req.map(Into::into)).await else {
                    continue;
                };
                let mut s = s.boxed();
                while let Some(Ok(ev)) = s.next().await {
                    if let kube::api::WatchEvent::Modified(o) | kube::api::WatchEvent::Added(o) = ev {
                        rv = o["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
                        let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
                        if o["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty()) {
                            let _ = tx.send((name.clone(), Instant::now()));
                        }
                        if o["status"]["phase"] == "Running" {
                            let _ = run_tx.send((name, Instant::now()));
                        }
                    }
                }
            }
        });
    }
    let writes_before = store_writes(&c).await?;
    let start_t = Instant::now();
    let sent: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Default::default();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (c, next, sent, mode) = (c.clone(), next.clone(), sent.clone(), mode.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= pods {
                    return Ok::<_, anyhow::Error>(());
                }
                let t = Instant::now();
                sent.lock().unwrap().insert(format!("p-{i}"), t);
                let (code, body) = send(&c, "POST", "/api/v1/namespaces/bench/pods", pod(i, &mode)).await?;
                anyhow::ensure!(code == 201, "create: {code} {}", String::from_utf8_lossy(&body));
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let created = start_t.elapsed();
    let mut bound: HashMap<String, Instant> = HashMap::new();
    while bound.len() < pods {
        let (name, at) = tokio::time::timeout(Duration::from_secs(300), rx.recv()).await?.unwrap();
        bound.entry(name).or_insert(at);
    }
    let last = bound.values().max().copied().unwrap();
    let total = last - start_t;
    // Then every pod reported Running by its (simulated) kubelet.
    // Bounded: a build whose pods never all run reports how many did.
    let mut running: HashMap<String, Instant> = HashMap::new();
    while running.len() < pods {
        match tokio::time::timeout(Duration::from_secs(60), run_rx.recv()).await {
            Ok(Some((name, at))) => {
                running.entry(name).or_insert(at);
            }
            _ => break,
        }
    }
    if running.len() < pods {
        eprintln!("only {} of {pods} pods Running (none more within 60 s)", running.len());
    }
    let run_total = running.values().max().copied().unwrap_or(start_t) - start_t;
    // Everything written while the pods went from created to Running (creates, bindings, the
    // kubelets' status patches and events), per pod.
    let writes_per_pod = (store_writes(&c).await? - writes_before) as f64 / pods as f64;
    let sent = sent.lock().unwrap();
    let lat: Vec<Duration> = bound.iter().map(|(n, at)| *at - sent[n]).collect();
    let run_lat: Vec<Duration> = running.iter().map(|(n, at)| *at - sent[n]).collect();
    let sim_rss: f64 = srv.children.iter().map(|c| rss_mib(c.id())).sum();
    let line = format!(
        "| {mode} | {nodes} | {pods} | {:.0} | {:.0} ms / {:.0} ms | {:.0} | {:.0} ms / {:.0} ms | {:.1} s | {writes_per_pod:.1} | {:.0} MiB | {:.0} MiB |",
        pods as f64 / total.as_secs_f64(),
        pct(lat.clone(), 0.5),
        pct(lat, 0.99),
        running.len() as f64 / run_total.as_secs_f64().max(0.001),
        pct(run_lat.clone(), 0.5),
        pct(run_lat, 0.99),
        created.as_secs_f64(),
        rss_mib(srv.child.id()),
        sim_rss,
    );
    println!("{line}");
    let out = std::env::var("BENCH_OUT").unwrap_or_default();
    if !out.is_empty() {
        use std::io::Write;
        std::fs::OpenOptions::new().create(true).append(true).open(out)?.write_all(format!("{line}\n").as_bytes())?;
    }
    Ok(())
}

/// Polls the Deployment until `done` says its status is there.
/// The store's acknowledged writes so far (the server's /metrics).
async fn store_writes(c: &kube::Client) -> Result<u64> {
    let (_, body) = send(c, "GET", "/metrics", vec![]).await?;
    let text = String::from_utf8_lossy(&body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("r8s_store_writes_acked_total "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no r8s_store_writes_acked_total in /metrics"))
}

async fn wait_deploy(c: &kube::Client, done: impl Fn(&serde_json::Value) -> bool) -> Result<()> {
    let t0 = Instant::now();
    loop {
        let (_, body) = send(c, "GET", "/apis/apps/v1/namespaces/bench/deployments/big", vec![]).await?;
        let d: serde_json::Value = serde_json::from_slice(&body)?;
        if done(&d) {
            return Ok(());
        }
        anyhow::ensure!(t0.elapsed() < Duration::from_secs(600), "deployment did not converge: {}", d["status"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Deployment of `replicas` pods: time until all are available, then a rolling update.
async fn deployment_bench(c: &kube::Client, srv: &common::Server, nodes: usize, replicas: usize) -> Result<()> {
    let dep = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "big", "namespace": "bench"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "big"}},
                 "template": {"metadata": {"labels": {"app": "big"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1.21.1",
                    "resources": {"requests": {"cpu": "10m", "memory": "10Mi"}}}]}}}});
    let t0 = Instant::now();
    let (code, body) = send(c, "POST", "/apis/apps/v1/namespaces/bench/deployments", serde_json::to_vec(&dep)?).await?;
    anyhow::ensure!(code == 201, "{}", String::from_utf8_lossy(&body));
    let n = replicas as i64;
    wait_deploy(c, |d| d["status"]["availableReplicas"].as_i64() == Some(n)).await?;
    let up = t0.elapsed();
    let t1 = Instant::now();
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:1.23.0"}]}}}});
    let req = http::Request::builder()
        .method("PATCH")
        .uri("/apis/apps/v1/namespaces/bench/deployments/big")
        .header("Content-Type", "application/strategic-merge-patch+json")
        .body(serde_json::to_vec(&patch)?)?;
    c.send(req.map(kube::client::Body::from)).await?;
    wait_deploy(c, |d| {
        let st = &d["status"];
        d["metadata"]["generation"] == st["observedGeneration"]
            && st["updatedReplicas"].as_i64() == Some(n)
            && st["availableReplicas"].as_i64() == Some(n)
            && st["replicas"].as_i64() == Some(n)
    })
    .await?;
    let roll = t1.elapsed();
    let line = format!(
        "| deployment of {replicas} replicas on {nodes} nodes | {:.1} s to all available | rolling update {:.1} s | {:.0} MiB |",
        up.as_secs_f64(),
        roll.as_secs_f64(),
        rss_mib(srv.child.id())
    );
    println!("{line}");
    let out = std::env::var("BENCH_OUT").unwrap_or_default();
    if !out.is_empty() {
        use std::io::Write;
        std::fs::OpenOptions::new().create(true).append(true).open(out)?.write_all(format!("{line}\n").as_bytes())?;
    }
    Ok(())
}
