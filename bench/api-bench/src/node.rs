//! Node agent benchmark: pod startup latency (create -> Running seen by a watch, image present)
//! for 1 pod at a time and for 30 at once, against the raw runtime floor (`ctr run --rm` of the
//! same image on the agent's containerd); 100 pods at once until all Running; the agent's idle
//! RSS and its CPU with 30 running pods. The node runs in a lab network namespace like the tests.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use r8s_tests::lab::{BUSYBOX, Lab};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"bench": "1"}},
        "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "c", "image": BUSYBOX, "command": ["sleep", "3600"]}]},
    }))
    .unwrap()
}

/// Creates `names` at once; returns each pod's create -> Running time in ms.
async fn start_pods(api: &Api<Pod>, names: &[String]) -> Vec<f64> {
    let mut stream = watcher(api.clone(), watcher::Config::default().labels("bench=1")).boxed();
    // Wait for the watch to be established before starting the clock.
    while let Some(ev) = stream.next().await {
        if matches!(ev, Ok(watcher::Event::InitDone)) {
            break;
        }
    }
    let started: HashMap<String, Instant> = futures::future::join_all(names.iter().map(|n| async move {
        let t = Instant::now();
        api.create(&PostParams::default(), &pod(n)).await.expect("create pod");
        (n.clone(), t)
    }))
    .await
    .into_iter()
    .collect();
    let mut done: HashMap<String, f64> = HashMap::new();
    while done.len() < names.len() {
        let Some(Ok(watcher::Event::Apply(p))) = stream.next().await else { continue };
        let name = p.metadata.name.clone().unwrap_or_default();
        if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            && let Some(t) = started.get(&name)
        {
            done.entry(name).or_insert_with(|| t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    done.into_values().collect()
}

async fn delete_all(api: &Api<Pod>) {
    let _ = api.delete_collection(&DeleteParams { grace_period_seconds: Some(0), ..Default::default() }, &ListParams::default().labels("bench=1")).await;
    for _ in 0..600 {
        if api.list(&ListParams::default().labels("bench=1")).await.map(|l| l.items.is_empty()).unwrap_or(false) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

/// Children too (containerd is the agent's child): user+system ticks of the process.
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let lab = Lab::start();
    let mut out = String::new();
    let mut line = |s: String| {
        println!("{s}");
        out.push_str(&s);
        out.push('\n');
    };
    let sock = lab.agent.data_dir.join("agent/containerd/containerd.sock");
    let agent_pid = lab.agent.pid().expect("agent pid");
    rt.block_on(async {
        let client = lab.server.client().await;
        let api: Api<Pod> = Api::namespaced(client, "default");
        // Warm up: the first container unpacks the image.
        let _ = start_pods(&api, &["warm".to_string()]).await;
        delete_all(&api).await;

        // The floor: the raw runtime running the same image (ctr is a measuring tool only).
        let mut raw = Vec::new();
        for i in 0..10 {
            let t = Instant::now();
            let st = std::process::Command::new("ip")
                .args(["netns", "exec", &lab.agent.ns.name, "ctr", "-a"])
                .arg(&sock)
                .args(["-n", "k8s.io", "run", "--rm", BUSYBOX, &format!("raw{i}"), "true"])
                .status();
            let _ = st;
            raw.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let (r50, r99) = (pct(&mut raw.clone(), 0.5), pct(&mut raw, 0.99));
        // The floor for 30 at once: 30 `ctr run --rm` started together, each timed to its exit.
        let t = Instant::now();
        let waits: Vec<_> = (0..30)
            .map(|i| {
                let (ns, sock) = (lab.agent.ns.name.clone(), sock.clone());
                std::thread::spawn(move || {
                    let _ = std::process::Command::new("ip")
                        .args(["netns", "exec", &ns, "ctr", "-a"])
                        .arg(&sock)
                        .args(["-n", "k8s.io", "run", "--rm", BUSYBOX, &format!("raw30-{i}"), "true"])
                        .status();
                    t.elapsed().as_secs_f64() * 1000.0
                })
            })
            .collect();
        let mut raw30: Vec<f64> = waits.into_iter().filter_map(|w| w.join().ok()).collect();
        let (r30_50, r30_99) = (pct(&mut raw30.clone(), 0.5), pct(&mut raw30, 0.99));

        let mut one = Vec::new();
        for i in 0..10 {
            one.extend(start_pods(&api, &[format!("one-{i}")]).await);
            delete_all(&api).await;
        }
        let (o50, o99) = (pct(&mut one.clone(), 0.5), pct(&mut one, 0.99));

        let names: Vec<String> = (0..30).map(|i| format!("thirty-{i}")).collect();
        let mut thirty = start_pods(&api, &names).await;
        let (t50, t99) = (pct(&mut thirty.clone(), 0.5), pct(&mut thirty, 0.99));
        let c0 = cpu_ticks(agent_pid);
        let w0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(20)).await;
        let ticks_per_sec = 100.0;
        let cpu_pct = (cpu_ticks(agent_pid) - c0) as f64 / ticks_per_sec / w0.elapsed().as_secs_f64() * 100.0;
        let rss30 = rss_kib(agent_pid);
        delete_all(&api).await;

        let names: Vec<String> = (0..100).map(|i| format!("hundred-{i}")).collect();
        let t = Instant::now();
        let _ = start_pods(&api, &names).await;
        let hundred = t.elapsed().as_secs_f64();
        delete_all(&api).await;
        tokio::time::sleep(Duration::from_secs(15)).await;
        let idle = rss_kib(agent_pid);

        line("| measure | result |".into());
        line("|---|---|".into());
        line(format!("| raw runtime: `ctr run --rm` of the test image (p50 / p99, 10 runs) | {r50:.0} ms / {r99:.0} ms |"));
        line(format!("| pod create -> Running, 1 at a time (p50 / p99, 10 pods) | {o50:.0} ms / {o99:.0} ms |"));
        line(format!("| raw runtime: 30 `ctr run --rm` at once (p50 / p99 of their exits) | {r30_50:.0} ms / {r30_99:.0} ms |"));
        line(format!("| pod create -> Running, 30 at once (p50 / p99) | {t50:.0} ms / {t99:.0} ms |"));
        line(format!("| 100 pods created at once: all Running after | {hundred:.1} s |"));
        line(format!("| agent CPU with 30 running pods (agent process, 20 s) | {cpu_pct:.1} % of one core |"));
        line(format!("| agent RSS with 30 running pods | {:.1} MiB |", rss30 as f64 / 1024.0));
        line(format!("| agent idle RSS (pods deleted) | {:.1} MiB |", idle as f64 / 1024.0));
    });
    if let Ok(p) = std::env::var("BENCH_OUT") {
        std::fs::write(p, out)?;
    }
    Ok(())
}
