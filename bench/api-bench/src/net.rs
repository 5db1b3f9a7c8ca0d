//! Service networking benchmark (issue 9), three parts, each printing a markdown section:
//!
//! - `proxy`: the service proxy's sync cost with 1,000 and 10,000 Services (2 endpoints each),
//!   both backends: a full sync, and one Service's endpoints changing (model rebuilt from all
//!   objects, the difference rendered and applied), in a scratch network namespace.
//! - `dns`: queries per second and latency for service names with dnsperf, against r8s's
//!   cluster DNS and against dnsmasq serving the same names from a hosts file, each pinned to
//!   one core (dnsperf on the other), on loopback.
//! - `datapath`: wrk from the node's namespace to a pod (busybox httpd) by its pod IP and
//!   through its ClusterIP, in both proxy modes: what the NAT costs per request.
//!
//! Usage: r8s-net-bench [proxy|dns|datapath]... (all when none is named).

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use r8s_proxy::{iptables, model, nftables, run};
use r8s_tests::lab::{BUSYBOX, Lab};
use r8s_tests::{TestServer, wait_for};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

// ---------------------------------------------------------------------------------------------
// proxy

fn objects(n: usize, generation: u32) -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut svcs = Vec::with_capacity(n);
    let mut slices = Vec::with_capacity(n);
    for i in 0..n {
        let ip = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 96, 0, 0)) + 16 + i as u32);
        let mut spec = serde_json::json!({"clusterIP": ip.to_string(), "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]});
        if i % 10 == 0 {
            spec["type"] = "NodePort".into();
            spec["ports"][0]["nodePort"] = (30000 + (i / 10) as i64 % 2700).into();
        }
        svcs.push(serde_json::from_value(serde_json::json!({"metadata": {"name": format!("svc-{i}"), "namespace": "default"}, "spec": spec})).unwrap());
        // Service 0's second endpoint moves with `generation`: the one change being measured.
        let (a, b) = (i * 2, i * 2 + 1);
        let ep = |k: usize| format!("10.{}.{}.{}", 128 + (k >> 16) % 64, (k >> 8) & 255, k & 255);
        let second = if i == 0 { format!("10.250.{}.{}", (generation >> 8) & 255, generation & 255) } else { ep(b) };
        slices.push(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("svc-{i}-x"), "namespace": "default", "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
                "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": [{"addresses": [ep(a)], "conditions": {"ready": true}}, {"addresses": [second], "conditions": {"ready": true}}],
            }))
            .unwrap(),
        );
    }
    (svcs, slices)
}

async fn apply_iptables(text: &str) {
    run::pipe_to("iptables-restore", &["--noflush"], text).await.expect("iptables-restore");
}

async fn proxy_section() -> String {
    let ns = "r8s-bench-proxy";
    sh(&format!("ip netns del {ns} 2>/dev/null; ip netns add {ns}"));
    // This thread (and the tools it starts) work inside the scratch namespace.
    let f = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns");
    // SAFETY: setns on this thread with a namespace fd we hold open.
    let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns");
    let mut out = String::from(
        "## Service proxy sync\n\n2 endpoints per Service, every tenth a NodePort. \"One change\" is one Service's endpoint moving: compute is the change tracker taking the new EndpointSlice and the backend rendering the difference (nftables: the changed elements; iptables: the whole ruleset rebuilt and compared), apply is the transaction (one `nft -f` or `iptables-restore --noflush`); 15 changes, p50 / max.\n\n",
    );
    out.push_str("| services | mode | full sync | one change: compute | one change: apply | one change: total p50 / max |\n|---|---|---|---|---|---|\n");
    for n in [1000usize, 10000] {
        let (svcs, slices0) = objects(n, 0);
        let svcs: Vec<Arc<Service>> = svcs.into_iter().map(Arc::new).collect();
        let slices0: Vec<Arc<EndpointSlice>> = slices0.into_iter().map(Arc::new).collect();
        let seeded = || {
            let mut t = model::Tracker::new("bench-node");
            for s in &svcs {
                t.service(None, Some(s));
            }
            for s in &slices0 {
                t.slice(None, Some(s));
            }
            t.take_change();
            t
        };
        // The one change: service 0's slice, generation g.
        let slice0 = |g: u32| Arc::new(objects(1, g).1.remove(0));
        for mode in ["nftables", "iptables"] {
            let mut tracker = seeded();
            let nopts = nftables::Options { table: "r8s-proxy".into(), cluster_cidr: Some("10.244.0.0/16".into()) };
            let iopts = iptables::Options { cluster_cidr: Some("10.244.0.0/16".into()) };
            let t = Instant::now();
            let mut nft_applied = None;
            let mut ipt_applied = None;
            if mode == "nftables" {
                let (text, applied) = nftables::full(tracker.model(), &nopts);
                run::nft_apply(&text).await.expect("nft full");
                nft_applied = Some(applied);
            } else {
                let rs = iptables::ruleset(tracker.model(), &iopts);
                apply_iptables(&iptables::full(&rs, &[])).await;
                ipt_applied = Some(rs);
            }
            let full_ms = t.elapsed().as_secs_f64() * 1000.0;
            let (mut compute, mut apply, mut total) = (vec![], vec![], vec![]);
            let mut prev = slice0(0);
            for g in 1..=15u32 {
                let next = slice0(g);
                let t = Instant::now();
                tracker.slice(Some(&prev), Some(&next));
                let change = tracker.take_change();
                let text = if let Some(a) = nft_applied.as_mut() {
                    a.delta(&change, &nopts).expect("delta")
                } else {
                    let rs = iptables::ruleset(tracker.model(), &iopts);
                    let d = iptables::delta(ipt_applied.as_ref().unwrap(), &rs);
                    ipt_applied = Some(rs);
                    d
                };
                let c = t.elapsed().as_secs_f64() * 1000.0;
                let t2 = Instant::now();
                if mode == "nftables" {
                    run::nft_apply(&text).await.expect("nft delta");
                } else {
                    apply_iptables(&text).await;
                }
                let a = t2.elapsed().as_secs_f64() * 1000.0;
                compute.push(c);
                apply.push(a);
                total.push(c + a);
                prev = next;
            }
            let mx = total.iter().cloned().fold(0.0, f64::max);
            out.push_str(&format!(
                "| {n} | {mode} | {full_ms:.0} ms | {:.2} ms | {:.1} ms | {:.1} / {mx:.1} ms |\n",
                pct(&mut compute, 0.5),
                pct(&mut apply, 0.5),
                pct(&mut total, 0.5)
            ));
            sh("nft delete table ip r8s-proxy 2>/dev/null; iptables -t nat -F; iptables -t nat -X; iptables -t filter -F; iptables -t filter -X");
        }
    }
    drop(f);
    out
}

// ---------------------------------------------------------------------------------------------
// dns

/// dnsperf's summary: (queries per second, average latency ms, lost queries).
fn dnsperf(port: u16, queries: &str) -> (f64, f64, String) {
    let out = sh(&format!("taskset -c 0 dnsperf -s 127.0.0.1 -p {port} -d {queries} -l 10 -c 4 -q 200 -S 0 2>&1"));
    let field = |label: &str| {
        out.lines().find(|l| l.trim_start().starts_with(label)).and_then(|l| l.split(':').nth(1)).map(|v| v.trim().to_string()).unwrap_or_default()
    };
    let qps: f64 = field("Queries per second").parse().unwrap_or(0.0);
    let avg = field("Average Latency (s)").split_whitespace().next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) * 1000.0;
    (qps, avg, field("Queries lost"))
}

/// p50 and p99 latency (ms) at a fixed rate below saturation, from dnsperf's per-query report.
fn dnsperf_latency(port: u16, queries: &str, qps: u32) -> (f64, f64) {
    let out = sh(&format!("taskset -c 0 dnsperf -s 127.0.0.1 -p {port} -d {queries} -l 5 -Q {qps} -v 2>/dev/null"));
    let mut lat: Vec<f64> = out
        .lines()
        .filter(|l| l.starts_with("> "))
        .filter_map(|l| l.split_whitespace().last().and_then(|v| v.parse::<f64>().ok()))
        .map(|s| s * 1000.0)
        .collect();
    if lat.is_empty() {
        return (0.0, 0.0);
    }
    (pct(&mut lat, 0.5), pct(&mut lat, 0.99))
}

fn dns_section() -> String {
    let server = TestServer::start_cluster(&[]);
    let n = 1000;
    // A YAML stream rather than a List: kubectl validates a List against OpenAPI v2, which
    // it only reads as protobuf.
    let doc: String = (0..n).map(|i| format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{i}\nspec:\n  ports:\n  - port: 80\n---\n")).collect();
    server.k_stdin(&["apply", "-f", "-", "--server-side"], &doc);
    let port: u16 = wait_for("cluster DNS port", Duration::from_secs(30), || {
        server.k(&["get", "endpointslice", "-n", "kube-system", "kube-dns-r8s", "-o", "jsonpath={.ports[?(@.name==\"dns\")].port}"]).parse().ok()
    });
    let rows = server.k(&["get", "svc", "-o", "jsonpath={range .items[*]}{.metadata.name} {.spec.clusterIP}{\"\\n\"}{end}"]);
    let dir = server.dir.path();
    let (hosts, queries) = (dir.join("hosts"), dir.join("queries"));
    let mut h = String::new();
    let mut q = String::new();
    for l in rows.lines() {
        let mut it = l.split_whitespace();
        let (Some(name), Some(ip)) = (it.next(), it.next()) else { continue };
        if name.starts_with("svc-") {
            h.push_str(&format!("{ip} {name}.default.svc.cluster.local\n"));
            q.push_str(&format!("{name}.default.svc.cluster.local A\n"));
        }
    }
    std::fs::write(&hosts, h).unwrap();
    std::fs::write(&queries, q).unwrap();
    // Warm-up: the names resolve in both.
    let pid = server.child.as_ref().map(|c| c.id()).unwrap();
    sh(&format!("taskset -a -c -p 1 {pid} >/dev/null"));
    let dnsmasq_port = 15353;
    let mut dnsmasq = Command::new("taskset")
        .args(["-c", "1", "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces", "--listen-address=127.0.0.1"])
        .arg(format!("--port={dnsmasq_port}"))
        .arg(format!("--addn-hosts={}", hosts.display()))
        .args(["--cache-size=10000", "--user=root", "--pid-file="])
        .spawn()
        .expect("dnsmasq (Debian package dnsmasq-base)");
    let check = |p: u16| {
        sh(&format!("dig +short -p {p} @127.0.0.1 svc-7.default.svc.cluster.local 2>&1 || nslookup -port={p} svc-7.default.svc.cluster.local 127.0.0.1"))
    };
    let mut out = String::from("## Cluster DNS\n\n");
    out.push_str(&format!(
        "{n} Services; dnsperf (on core 0) asks for their A records in turn for 10 s, 200 queries outstanding. Each server is pinned to core 1: r8s's DNS is inside `r8s server` (the whole process pinned), dnsmasq serves the same names from a hosts file.\n\n"
    ));
    out.push_str("| server | queries/s | average latency | lost |\n|---|---|---|---|\n");
    let _ = (check(port), check(dnsmasq_port));
    for (name, p) in [("r8s", port), ("dnsmasq 2.90", dnsmasq_port), ("r8s (again)", port), ("dnsmasq (again)", dnsmasq_port)] {
        let (qps, avg, lost) = dnsperf(p, &queries.display().to_string());
        out.push_str(&format!("| {name} | {qps:.0} | {avg:.2} ms | {lost} |\n"));
    }
    out.push_str("\nLatency at a fixed 50,000 queries/s for 5 s (below both servers' saturation), from dnsperf's per-query report:\n\n| server | p50 | p99 |\n|---|---|---|\n");
    for (name, p) in [("r8s", port), ("dnsmasq 2.90", dnsmasq_port)] {
        let (p50, p99) = dnsperf_latency(p, &queries.display().to_string(), 50_000);
        out.push_str(&format!("| {name} | {p50:.3} ms | {p99:.3} ms |\n"));
    }
    let _ = dnsmasq.kill();
    let _ = dnsmasq.wait();
    out
}

// ---------------------------------------------------------------------------------------------
// datapath

/// wrk's summary: (requests/s, latency average, latency p99, socket errors).
fn wrk(prefix: &str, url: &str) -> (f64, String, String, String) {
    let text = sh(&format!("{prefix} wrk -t1 -c8 -d8s --latency {url}"));
    let rps = text.lines().find(|l| l.starts_with("Requests/sec:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let avg = text.lines().find(|l| l.trim_start().starts_with("Latency ")).and_then(|l| l.split_whitespace().nth(1)).unwrap_or("?").to_string();
    let p99 = text.lines().find(|l| l.trim_start().starts_with("99%")).and_then(|l| l.split_whitespace().nth(1)).unwrap_or("?").to_string();
    let errors = text
        .lines()
        .find(|l| l.trim_start().starts_with("Socket errors:"))
        .map(|l| l.trim().trim_start_matches("Socket errors: ").to_string())
        .unwrap_or_else(|| "none".into());
    (rps, avg, p99, errors)
}

fn datapath_section() -> String {
    let mut out = String::from(
        "## Data path\n\nwrk (1 thread, 8 keep-alive connections, 8 s) to one pod, by its pod IP (no proxy rule on the path) and through its Service's ClusterIP (DNAT by the proxy's rules), from another pod on the node (wrk run in that pod's network namespace) and from the node itself. The pod's server is a minimal keep-alive HTTP server (this benchmark's `serve`, started in the pod's network namespace), so the numbers are the data path's rather than the server's. Targets alternate, twice each.\n\n",
    );
    out.push_str("| proxy mode | from | target | requests/s | latency avg | latency p99 | socket errors |\n|---|---|---|---|---|---|---|\n");
    let modes = std::env::var("BENCH_PROXY_MODES").unwrap_or_else(|_| "nftables,iptables".into());
    let me = std::env::current_exe().expect("own path");
    for mode in modes.split(',') {
        let mode = mode.to_string();
        let lab = Lab::start_with(|_| vec!["--proxy-mode".into(), mode.clone()]);
        let s = &lab.server;
        // busybox httpd makes the pod ready; the measured server listens on 8080 beside it.
        let pod = format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"web","labels":{{"app":"web"}}}},"spec":{{"containers":[{{"name":"httpd","image":"{BUSYBOX}",
              "command":["sh","-c","mkdir -p /w{n}; echo hello > /w{n}/index.html; exec httpd -f -p 80 -h /w{n}"],"readinessProbe":{{"tcpSocket":{{"port":80}},"periodSeconds":1}}}}]}}}}"#,
            n = lab.agent.ns.n
        );
        s.k_stdin(&["apply", "-f", "-"], &pod);
        s.k(&["expose", "pod", "web", "--port=80", "--target-port=8080"]);
        // The client pod: a marker command so its process (and network namespace) can be found.
        let marker = format!("sleep 86{}", lab.agent.ns.n);
        s.k(&["run", "client", &format!("--image={BUSYBOX}"), "--command", "--", "sh", "-c", &format!("exec {marker}")]);
        wait_for("web ready and client Running", Duration::from_secs(120), || {
            let out = s.kubectl(&["get", "endpointslice", "-l", "kubernetes.io/service-name=web", "-o", "jsonpath={.items[*].endpoints[*].conditions.ready}"]);
            let client = s.kubectl(&["get", "pod", "client", "-o", "jsonpath={.status.phase}"]);
            (String::from_utf8_lossy(&out.stdout).trim() == "true" && String::from_utf8_lossy(&client.stdout) == "Running").then_some(())
        });
        let pid_of = |pattern: &str| sh(&format!("pgrep -f '{pattern}'")).lines().next().unwrap_or_default().trim().to_string();
        let web_pid = pid_of(&format!("^httpd -f -p 80 -h /w{}$", lab.agent.ns.n));
        let client_pid = pid_of(&format!("^{marker}$"));
        let mut server =
            Command::new("nsenter").arg(format!("--net=/proc/{web_pid}/ns/net")).arg(&me).args(["serve", "8080"]).spawn().expect("serve in the pod");
        let pod_ip = s.k(&["get", "pod", "web", "-o", "jsonpath={.status.podIP}"]);
        let cluster_ip = s.k(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
        let ns = &lab.agent.ns;
        wait_for("the cluster IP answers", Duration::from_secs(30), || {
            String::from_utf8_lossy(&ns.exec(&format!("curl -s -m 2 http://{cluster_ip}/")).stdout).contains("hello").then_some(())
        });
        let from_pod = format!("nsenter --net=/proc/{client_pid}/ns/net");
        let from_node = format!("nsenter --net=/run/netns/{}", ns.name);
        // The pod's own address and port, or the Service's (port 80 -> targetPort 8080).
        let direct = format!("{pod_ip}:8080");
        for (from, prefix) in [("pod", &from_pod), ("node", &from_node)] {
            for (target, ip) in [("pod IP", &direct), ("ClusterIP", &cluster_ip), ("pod IP", &direct), ("ClusterIP", &cluster_ip)] {
                let (rps, avg, p99, errors) = wrk(prefix, &format!("http://{ip}/"));
                out.push_str(&format!("| {mode} | {from} | {target} | {rps:.0} | {avg} | {p99} | {errors} |\n"));
            }
        }
        let _ = server.kill();
        let _ = server.wait();
    }
    out
}

/// `serve PORT`: a minimal HTTP/1.1 keep-alive server (run inside the pod's network namespace),
/// so the data path, not busybox's fork per connection, is what wrk measures.
fn serve(port: u16) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
        loop {
            let (mut s, _) = listener.accept().await?;
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut have = 0;
                loop {
                    let Ok(n) = s.read(&mut buf[have..]).await else { return };
                    if n == 0 {
                        return;
                    }
                    have += n;
                    // Answer each complete request in the buffer.
                    while let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                        if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n").await.is_err() {
                            return;
                        }
                        buf.copy_within(end + 4..have, 0);
                        have -= end + 4;
                    }
                    if have == buf.len() {
                        return;
                    }
                }
            });
        }
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve") {
        return serve(args.get(1).and_then(|p| p.parse().ok()).unwrap_or(8080));
    }
    let want = |p: &str| args.is_empty() || args.iter().any(|a| a == p);
    let machine = sh("nproc; uname -r; nft --version; iptables --version");
    println!("# Service networking benchmark\n\nMachine: {}\n", machine.split_whitespace().collect::<Vec<_>>().join(" "));
    if want("dns") {
        println!("{}", dns_section());
    }
    if want("datapath") {
        println!("{}", datapath_section());
    }
    if want("proxy") {
        // Last: this moves the main thread into a scratch namespace.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        println!("{}", rt.block_on(proxy_section()));
        sh("ip netns del r8s-bench-proxy");
    }
    Ok(())
}
