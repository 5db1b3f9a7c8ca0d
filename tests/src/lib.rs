//! Shared helpers for the end-to-end tests: start a real `r8s server` on a free port with its own
//! data dir, drive it with the real kubectl (own discovery cache per test), kube-rs and raw HTTP,
//! and wait on conditions with deadlines (never sleeps as synchronisation).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod lab;
pub mod ws;

/// Path of the `r8s` binary built by this workspace.
pub fn r8s_bin() -> PathBuf {
    if let Ok(p) = std::env::var("R8S_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test binary> -> target/<profile>/r8s
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target profile dir");
    let bin = profile_dir.join("r8s");
    assert!(bin.exists(), "r8s binary not found at {} (build the workspace first)", bin.display());
    bin
}

/// Polls `f` until it returns Some (backing off from 10 to 200 ms), or None after `timeout`.
pub fn poll_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(10);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

/// Polls `f` until it returns Some, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll_until(timeout, f).unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub kubeconfig: PathBuf,
    pub cache_dir: PathBuf,
    pub url: String,
    pub log: PathBuf,
    extra_args: Vec<String>,
    bind_address: String,
    /// Run inside this network namespace, with the server's own node agent.
    netns: Option<String>,
}

impl TestServer {
    /// Starts an API server alone (no scheduler, no controllers) on a free port and waits
    /// until /readyz answers: the API tests check exactly what the API server stores.
    pub fn start() -> TestServer {
        Self::start_with(&[])
    }

    pub fn start_with(args: &[&str]) -> TestServer {
        let mut all = vec!["--disable-scheduler", "--disable-controller-manager"];
        all.extend_from_slice(args);
        Self::start_raw(&all)
    }

    /// Starts the whole control plane (API server, scheduler, controllers).
    pub fn start_cluster(args: &[&str]) -> TestServer {
        Self::start_raw(args)
    }

    /// The whole control plane listening on `bind` (a lab's host-side address, so agents in
    /// network namespaces reach it).
    pub fn start_cluster_on(bind: &str, args: &[&str]) -> TestServer {
        Self::start_raw_on(bind, args)
    }

    /// `r8s server` as the README runs it, agent included, inside a lab network namespace;
    /// `prepare` may put files in the data dir (airgap images) before it starts.
    pub fn start_in_netns(netns: &str, bind: &str, args: &[&str], prepare: impl FnOnce(&Path)) -> TestServer {
        let dir = tempfile::Builder::new().prefix("r8s-e2e-").tempdir().expect("tempdir");
        prepare(&dir.path().join("data"));
        let mut s = Self::unstarted(dir, bind, args, Some(netns.into()));
        s.spawn(0);
        s
    }

    fn start_raw(args: &[&str]) -> TestServer {
        Self::start_raw_on("127.0.0.1", args)
    }

    fn start_raw_on(bind: &str, args: &[&str]) -> TestServer {
        let dir = tempfile::Builder::new().prefix("r8s-e2e-").tempdir().expect("tempdir");
        let mut s = Self::unstarted(dir, bind, args, None);
        s.spawn(0);
        s
    }

    fn unstarted(dir: tempfile::TempDir, bind: &str, args: &[&str], netns: Option<String>) -> TestServer {
        TestServer {
            kubeconfig: dir.path().join("admin.kubeconfig"),
            cache_dir: dir.path().join("kubecache"),
            log: dir.path().join("server.log"),
            dir,
            child: None,
            url: String::new(),
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            bind_address: bind.into(),
            netns,
        }
    }

    fn spawn(&mut self, port: u16) {
        let _ = std::fs::remove_file(&self.kubeconfig);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log file");
        let mut cmd = match &self.netns {
            // nsenter keeps the host's /sys (cgroups) visible, unlike `ip netns exec`.
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg(r8s_bin());
                c
            }
            None => Command::new(r8s_bin()),
        };
        cmd.arg("server");
        if self.netns.is_none() {
            // Node agents in tests run in network namespaces of their own (tests/src/lab.rs).
            cmd.arg("--disable-agent");
        }
        let child = cmd
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .arg("--https-listen-port")
            .arg(port.to_string())
            .arg("--bind-address")
            .arg(&self.bind_address)
            .arg("--write-kubeconfig")
            .arg(&self.kubeconfig)
            // Parallel servers share addresses (127.0.0.1): cluster DNS takes any free port.
            .args(["--cluster-dns-port", "0", "--cluster-dns-metrics-port", "0"])
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn r8s server");
        self.child = Some(child);
        let kc = self.kubeconfig.clone();
        let url = wait_for("kubeconfig to be written", Duration::from_secs(30), || {
            let text = std::fs::read_to_string(&kc).ok()?;
            let line = text.lines().find(|l| l.trim_start().starts_with("server:"))?;
            Some(line.trim_start().trim_start_matches("server:").trim().to_string())
        });
        self.url = url;
        let me = &*self;
        wait_for("/readyz", Duration::from_secs(30), || {
            let out = me.kubectl(&["get", "--raw", "/readyz"]);
            (out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok").then_some(())
        });
    }

    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port in url")
    }

    /// kill -9, then start again on the same port and data dir.
    pub fn kill_and_restart(&mut self) {
        self.kill9();
        let port = self.port();
        self.spawn(port);
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    /// Runs kubectl (the real one on PATH, or `bin`) against this server.
    pub fn kubectl_bin(&self, bin: &str, args: &[&str]) -> Output {
        Command::new(bin)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", &self.cache_dir)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .expect("run kubectl")
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_bin("kubectl", args)
    }

    /// Runs kubectl with stdin.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", &self.cache_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs kubectl and returns stdout, panicking with stderr on failure.
    pub fn k(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.status.success(), "kubectl {args:?} failed: {}\n{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn k_stdin(&self, args: &[&str], stdin: &str) -> String {
        let out = self.kubectl_stdin(args, stdin);
        assert!(out.status.success(), "kubectl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl expecting failure; returns stderr.
    pub fn k_err(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(!out.status.success(), "kubectl {args:?} unexpectedly succeeded: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// A kube-rs client for this server.
    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.expect("kube config");
        kube::Client::try_from(cfg).expect("kube client")
    }

    /// A kube-rs client without credentials (anonymous).
    pub async fn anonymous_client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.expect("kube config");
        cfg.auth_info = Default::default();
        kube::Client::try_from(cfg).expect("kube client")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
        // A failing test shows what the server said last (CI keeps only the output).
        if std::thread::panicking() {
            let log = self.server_log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- last lines of the server log ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// Replaces AGE-like cells (`0s`, `12s`, `3m4s`) with `<age>`, keeping the columns after them
/// where they were, so tables compare exactly.
pub fn normalize_ages(s: &str) -> String {
    let is_age = |t: &str| {
        !t.is_empty()
            && t.starts_with(|c: char| c.is_ascii_digit())
            && t.ends_with(|c: char| "smhdy".contains(c))
            && t.chars().all(|c| c.is_ascii_digit() || "smhdy".contains(c))
    };
    s.lines()
        .map(|line| {
            let mut out = String::new();
            let mut rest = line;
            while !rest.is_empty() {
                let word_end = rest.find(' ').unwrap_or(rest.len());
                let word = &rest[..word_end];
                let after = &rest[word_end..];
                let spaces = after.len() - after.trim_start_matches(' ').len();
                if is_age(word) {
                    out.push_str("<age>");
                    if word_end + spaces < rest.len() {
                        out.push_str(&" ".repeat((word.len() + spaces).saturating_sub(5).max(1)));
                    }
                } else {
                    out.push_str(word);
                    out.push_str(&after[..spaces]);
                }
                rest = &after[spaces..];
            }
            out
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Raw HTTP against the server through kube-rs's transport: (status, body as JSON or text).
pub async fn raw(client: &kube::Client, method: &str, path: &str, content_type: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    let (status, v, _) = raw_with_headers(client, method, path, content_type, body).await;
    (status, v)
}

/// Raw HTTP, the response body exactly as the server sent it.
pub async fn raw_bytes(client: &kube::Client, method: &str, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let req = http::Request::builder().method(method).uri(path).header("Content-Type", content_type).body(body).unwrap();
    let resp = client.send(req.map(kube::client::Body::from)).await.expect("send");
    let status = resp.status().as_u16();
    (status, http_body_util::BodyExt::collect(resp.into_body()).await.expect("body").to_bytes().to_vec())
}

/// Like `raw`, also returning the response headers.
pub async fn raw_with_headers(client: &kube::Client, method: &str, path: &str, content_type: &str, body: Vec<u8>) -> (u16, serde_json::Value, http::HeaderMap) {
    let req = http::Request::builder().method(method).uri(path).header("Content-Type", content_type).body(body).unwrap();
    let resp = client.send(req.map(kube::client::Body::from)).await.expect("send");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = http_body_util::BodyExt::collect(resp.into_body()).await.expect("body").to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, v, headers)
}

/// Simulated nodes (`r8s sim-nodes`) registered with a test server; killed on drop.
pub struct SimNodes {
    child: Option<Child>,
    pub names: Vec<String>,
}

impl SimNodes {
    /// Starts `count` nodes named `prefix0..` and waits until they are all Ready.
    pub fn start(server: &TestServer, prefix: &str, count: usize, extra: &[&str]) -> SimNodes {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(server.dir.path().join(format!("sim-{prefix}.log"))).expect("log file");
        let child = Command::new(r8s_bin())
            .args(["sim-nodes", "--count", &count.to_string(), "--name-prefix", prefix])
            .arg("--data-dir")
            .arg(server.dir.path().join(format!("sim-{prefix}")))
            .arg("--kubeconfig")
            .arg(&server.kubeconfig)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn r8s sim-nodes");
        let names: Vec<String> = (0..count).map(|i| format!("{prefix}{i}")).collect();
        let sim = SimNodes { child: Some(child), names };
        for n in &sim.names {
            // Simulated nodes need no podCIDR: their pods' addresses come from the simulator.
            wait_for(&format!("node {n} Ready"), Duration::from_secs(30), || {
                let out = server.kubectl(&["get", "node", n, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"]);
                (String::from_utf8_lossy(&out.stdout) == "True").then_some(())
            });
        }
        sim
    }

    /// Stops the simulator (its nodes stop renewing their leases).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for SimNodes {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Lines of kubectl output split into whitespace-separated cells.
pub fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines().map(|l| l.split_whitespace().map(str::to_string).collect()).collect()
}
