//! The network lab for tests that run node agents: each node lives in a network namespace the
//! test creates (ip netns + a veth pair to the host) with no route out of the machine, its own
//! containerd, data dir and cgroup parent. Lab addresses come from 198.19.0.0/16 (the benchmark
//! range): no packet to them, to pods or to services can leave this host.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{TestServer, poll_until, r8s_bin, wait_for};

/// The test image: busybox-static with its applets, imported from the airgap directory.
pub const BUSYBOX: &str = "r8s.test/busybox:1";

fn sh(cmd: &str) -> std::process::Output {
    Command::new("sh").arg("-c").arg(cmd).output().expect("run sh")
}

fn must(cmd: &str) {
    let out = sh(cmd);
    assert!(out.status.success(), "`{cmd}` failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// One node's network namespace: host side 198.19.N.1, node side 198.19.N.2 (or, on a
/// switch, the switch's 198.19.S.1 and 198.19.S.(i+2)).
pub struct NetNs {
    pub n: u32,
    pub name: String,
    host: String,
    node: String,
}

/// Claims a free namespace index (an existing name means another test has it).
fn claim() -> (u32, String) {
    let start = (std::process::id() % 200) + 20;
    for i in 0..230 {
        let n = (start + i) % 250 + 1;
        let name = format!("r8s-lab-{n}");
        if sh(&format!("ip netns add {name}")).status.success() {
            return (n, name);
        }
    }
    panic!("no free lab network namespace index");
}

impl NetNs {
    /// Creates a namespace with a free index and a veth pair to the host.
    pub fn create() -> NetNs {
        let (n, name) = claim();
        must(&format!(
            "ip link add r8sh{n} type veth peer name r8sn{n} && ip link set r8sn{n} netns {name} && \
             ip addr add 198.19.{n}.1/24 dev r8sh{n} && ip link set r8sh{n} up && \
             ip netns exec {name} ip addr add 198.19.{n}.2/24 dev r8sn{n} && \
             ip netns exec {name} ip link set r8sn{n} up && ip netns exec {name} ip link set lo up"
        ));
        NetNs { n, host: format!("198.19.{n}.1"), node: format!("198.19.{n}.2"), name }
    }

    /// A switch: a namespace holding a bridge, joined to the host (198.19.S.1) by a veth pair.
    /// Nodes created `on_switch` share its L2 segment, as machines on one LAN do.
    pub fn switch() -> NetNs {
        let (n, name) = claim();
        must(&format!(
            "ip link add r8sh{n} type veth peer name r8sp{n} && ip link set r8sp{n} netns {name} && \
             ip addr add 198.19.{n}.1/24 dev r8sh{n} && ip link set r8sh{n} up && \
             ip netns exec {name} sh -c 'ip link add br0 type bridge && ip link set br0 up && \
             ip link set r8sp{n} master br0 && ip link set r8sp{n} up'"
        ));
        NetNs { n, host: format!("198.19.{n}.1"), node: String::new(), name }
    }

    /// Node `i` on a switch: 198.19.S.(i+2).
    pub fn on_switch(sw: &NetNs, i: u32) -> NetNs {
        let (m, name) = claim();
        let node = format!("198.19.{}.{}", sw.n, i + 2);
        must(&format!(
            "ip link add r8sn{m} type veth peer name r8sq{m} && ip link set r8sn{m} netns {name} && ip link set r8sq{m} netns {sw} && \
             ip netns exec {sw} sh -c 'ip link set r8sq{m} master br0 && ip link set r8sq{m} up' && \
             ip netns exec {name} sh -c 'ip addr add {node}/24 dev r8sn{m} && ip link set r8sn{m} up && ip link set lo up'",
            sw = sw.name
        ));
        NetNs { n: m, host: sw.host.clone(), node, name }
    }

    /// A router: a namespace that forwards between the host side (198.19.R.1 on the host,
    /// 198.19.R.254 here) and nodes that each sit on a subnet of their own
    /// (`behind_router`): machines that do not share an L2 segment.
    pub fn router() -> NetNs {
        let (n, name) = claim();
        must(&format!(
            "ip link add r8sh{n} type veth peer name r8sp{n} && ip link set r8sp{n} netns {name} && \
             ip addr add 198.19.{n}.1/24 dev r8sh{n} && ip link set r8sh{n} up && \
             ip netns exec {name} sh -c 'ip addr add 198.19.{n}.254/24 dev r8sp{n} && ip link set r8sp{n} up && \
             ip link set lo up && echo 1 > /proc/sys/net/ipv4/ip_forward'"
        ));
        NetNs { n, host: format!("198.19.{n}.1"), node: format!("198.19.{n}.254"), name }
    }

    /// A node on a subnet of its own behind `router`: 198.19.M.2, reaching the host side and
    /// the other nodes through the router (198.19.M.1); the host reaches it the same way.
    pub fn behind_router(router: &NetNs) -> NetNs {
        let (m, name) = claim();
        must(&format!(
            "ip link add r8sn{m} type veth peer name r8sq{m} && ip link set r8sn{m} netns {name} && ip link set r8sq{m} netns {r} && \
             ip netns exec {r} sh -c 'ip addr add 198.19.{m}.1/24 dev r8sq{m} && ip link set r8sq{m} up' && \
             ip netns exec {name} sh -c 'ip addr add 198.19.{m}.2/24 dev r8sn{m} && ip link set r8sn{m} up && ip link set lo up && \
             ip route add 198.19.0.0/16 via 198.19.{m}.1' && \
             ip route add 198.19.{m}.0/24 via {gw}",
            r = router.name,
            gw = router.node
        ));
        NetNs { n: m, host: router.host.clone(), node: format!("198.19.{m}.2"), name }
    }

    pub fn host_ip(&self) -> String {
        self.host.clone()
    }

    pub fn node_ip(&self) -> String {
        self.node.clone()
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, cmd: &str) -> std::process::Output {
        Command::new("ip").args(["netns", "exec", &self.name, "sh", "-c", cmd]).output().expect("ip netns exec")
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // A node behind a router has a host route of its own (the others' routes go with
        // their links).
        let _ = sh(&format!("ip netns del {}; ip link del r8sh{n} 2>/dev/null; ip route del 198.19.{n}.0/24 2>/dev/null", self.name, n = self.n));
    }
}

/// An httpd image (busybox's httpd as entrypoint, serving /www); `:1` and `:2` differ in their page.
pub const HTTPD_1: &str = "r8s.test/httpd:1";
pub const HTTPD_2: &str = "r8s.test/httpd:2";

/// Builds the test images into `dir` as OCI archives (what the airgap directory takes).
pub fn write_test_images(dir: &Path) {
    write_busybox_image(dir);
    let bin = std::fs::read("/usr/bin/busybox").expect("/usr/bin/busybox");
    for (name, page, file) in [(HTTPD_1, "httpd version 1\n", "httpd1.tar"), (HTTPD_2, "httpd version 2\n", "httpd2.tar")] {
        let img = r8s_kubelet::images::build_image(
            name,
            &[("/bin/busybox", 0o755, &bin), ("/www/index.html", 0o644, page.as_bytes())],
            &[("/bin/sh", "busybox"), ("/bin/httpd", "busybox"), ("/bin/hostname", "busybox"), ("/bin/cat", "busybox")],
            &["/bin/httpd", "-f", "-p", "80", "-h", "/www"],
            &["PATH=/bin"],
        )
        .expect("build httpd image");
        r8s_kubelet::images::write_oci_archive(&img, &dir.join(file)).expect("write image archive");
    }
}

/// Builds the busybox test image into `dir` as an OCI archive (what the airgap directory takes).
pub fn write_busybox_image(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let bin = std::fs::read("/usr/bin/busybox").expect("/usr/bin/busybox (apt-get install busybox-static)");
    let applets = [
        "sh", "sleep", "hostname", "echo", "cat", "ls", "wget", "httpd", "nc", "env", "true", "false", "kill", "ps", "date", "mkdir", "touch", "yes", "dd",
        "id", "printf", "grep", "test", "head", "tail", "sed", "awk", "nslookup", "ip", "ifconfig", "mount", "rm", "cp", "mv", "tr", "wc", "seq", "tee",
        "trap", "uname", "whoami", "stat", "chmod", "sync", "tar", "tty", "stty", "timeout",
    ];
    let links: Vec<(String, &str)> = applets.iter().map(|a| (format!("/bin/{a}"), "busybox")).collect();
    let link_refs: Vec<(&str, &str)> = links.iter().map(|(a, b)| (a.as_str(), *b)).collect();
    let img = r8s_kubelet::images::build_image(
        BUSYBOX,
        &[
            ("/bin/busybox", 0o755, &bin),
            ("/etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"),
            ("/etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n"),
            ("/tmp/.keep", 0o644, b""),
            ("/www/index.html", 0o644, b"hello from r8s\n"),
        ],
        &link_refs,
        &["/bin/sh"],
        &["PATH=/bin"],
    )
    .expect("build busybox image");
    let out = dir.join("busybox.tar");
    r8s_kubelet::images::write_oci_archive(&img, &out).expect("write image archive");
    out
}

/// A node agent (`r8s agent`) in its own namespace, registered with a lab server.
pub struct Agent {
    pub ns: NetNs,
    pub node_name: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    args: Vec<String>,
}

/// A control plane reachable from lab namespaces, plus one agent.
pub struct Lab {
    // Dropped in this order: the agent (its log still exists), then the server and its dir.
    pub agent: Agent,
    pub server: TestServer,
}

impl Lab {
    /// Starts a server on the namespace's host-side address and an agent inside it, and waits
    /// until the node is Ready.
    pub fn start() -> Lab {
        Self::start_with(|_| Vec::new())
    }

    /// Like `start`, with extra agent flags (which may name the namespace's addresses).
    pub fn start_with(agent_args: impl FnOnce(&NetNs) -> Vec<String>) -> Lab {
        Self::start_full(|_| Vec::new(), agent_args)
    }

    /// Like `start`, with extra server and agent flags.
    pub fn start_full(server_args: impl FnOnce(&NetNs) -> Vec<String>, agent_args: impl FnOnce(&NetNs) -> Vec<String>) -> Lab {
        let ns = NetNs::create();
        let extra = agent_args(&ns);
        let mut sargs = vec!["--node-monitor-grace-period".to_string(), "40s".to_string()];
        sargs.extend(server_args(&ns));
        let sargs: Vec<&str> = sargs.iter().map(String::as_str).collect();
        let server = TestServer::start_cluster_on(&ns.host_ip(), &sargs);
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let agent = Agent::start_with(&server, ns, &extra);
        Lab { server, agent }
    }
}

/// Several nodes on one L2 segment (a switch namespace), the server on the host side.
pub struct Cluster {
    // Dropped in this order: the agents, the server, then the switch.
    pub agents: Vec<Agent>,
    pub server: TestServer,
    pub switch: NetNs,
}

impl Cluster {
    /// Nodes on subnets of their own behind a router (no shared L2 segment).
    pub fn start_routed(nodes: u32, agent_args: &[&str]) -> Cluster {
        let router = NetNs::router();
        let server = TestServer::start_cluster_on(&router.host_ip(), &["--node-monitor-grace-period", "40s"]);
        let agents = (0..nodes).map(|_| Agent::start_with(&server, NetNs::behind_router(&router), agent_args)).collect();
        Cluster { agents, server, switch: router }
    }

    pub fn start(nodes: u32) -> Cluster {
        Self::start_with(nodes, &[])
    }

    /// Like `start`, with extra flags for every agent.
    pub fn start_with(nodes: u32, agent_args: &[&str]) -> Cluster {
        let switch = NetNs::switch();
        let server = TestServer::start_cluster_on(&switch.host_ip(), &["--node-monitor-grace-period", "40s"]);
        let agents = (0..nodes).map(|i| Agent::start_with(&server, NetNs::on_switch(&switch, i), agent_args)).collect();
        Cluster { agents, server, switch }
    }
}

impl Agent {
    pub fn start(server: &TestServer, ns: NetNs) -> Agent {
        Self::start_with(server, ns, &[])
    }

    pub fn start_with(server: &TestServer, ns: NetNs, extra: &[&str]) -> Agent {
        let node_name = format!("lab-{}", ns.n);
        let data_dir = server.dir.path().join(format!("agent-{}", ns.n));
        let images = data_dir.join("agent").join("images");
        write_test_images(&images);
        let args: Vec<String> = vec![
            "agent".into(),
            "--server".into(),
            server.url.clone(),
            "--kubeconfig".into(),
            server.kubeconfig.display().to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--node-ip".into(),
            ns.node_ip(),
            "--node-name".into(),
            node_name.clone(),
            "--cgroup-root".into(),
            format!("/r8s-lab-{}", ns.n),
        ];
        let args: Vec<String> = args.into_iter().chain(extra.iter().map(|s| s.to_string())).collect();
        let log = server.dir.path().join(format!("agent-{}.log", ns.n));
        let mut a = Agent { ns, node_name, data_dir, log, child: None, args };
        a.spawn();
        let name = a.node_name.clone();
        wait_for(&format!("node {name} Ready"), Duration::from_secs(90), || {
            let out = server.kubectl(&["get", "node", &name, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"]);
            (String::from_utf8_lossy(&out.stdout) == "True").then_some(())
        });
        a
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("agent log");
        // nsenter, not `ip netns exec`: the latter mounts a fresh /sys, which hides the cgroup
        // hierarchies from containerd and runc.
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns.name))
            .arg(r8s_bin())
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn r8s agent");
        self.child = Some(child);
    }

    /// The agent's process id (inside `nsenter`, which execs it: the same process).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// kill -9 the agent (containerd dies with it; containers live on in their shims).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log_text();
            eprintln!("--- last lines of the agent log ---");
            for l in log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev() {
                eprintln!("{l}");
            }
            let cd = std::fs::read_to_string(self.data_dir.join("agent/containerd/containerd.log")).unwrap_or_default();
            eprintln!("--- containerd errors ---");
            for l in cd.lines().filter(|l| l.contains("level=error")).rev().take(15).collect::<Vec<_>>().into_iter().rev() {
                eprintln!("{l}");
            }
        }
        self.kill9();
        clean_node(&self.data_dir.join("agent"), &format!("r8s-lab-{}", self.ns.n));
    }
}

/// The distribution's registry (`docker-registry`) serving inside a lab namespace on
/// NODE_IP:5000 (reachable from the node's containerd and from the test), storage in `dir`.
pub struct Registry {
    child: Child,
    pub addr: String,
}

impl Registry {
    pub fn start(ns: &NetNs, dir: &Path) -> Registry {
        std::fs::create_dir_all(dir).unwrap();
        let addr = format!("{}:5000", ns.node_ip());
        let cfg = dir.join("config.yml");
        std::fs::write(
            &cfg,
            format!("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n", dir.join("data").display()),
        )
        .unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", ns.name))
            .args(["docker-registry", "serve"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("registry.log")).unwrap())
            .spawn()
            .expect("docker-registry (apt-get install docker-registry)");
        let r = Registry { child, addr };
        wait_for("the registry answers /v2/", Duration::from_secs(30), || http(&r.addr, "GET", "/v2/", &[], &[]).ok().filter(|(c, _)| *c == 200).map(|_| ()));
        r
    }

    /// Pushes an image (blobs, then the manifest under `tag`) with the distribution API.
    pub fn push(&self, repo: &str, tag: &str, img: &r8s_kubelet::images::ImageBundle) {
        for (digest, data) in &img.blobs {
            let (code, headers) = http(&self.addr, "POST", &format!("/v2/{repo}/blobs/uploads/"), &[], &[]).expect("start upload");
            assert_eq!(code, 202, "start upload");
            let loc = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("location")).map(|(_, v)| v.clone()).expect("Location");
            let path = loc.split_once("://").map(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()).unwrap_or_default()).unwrap_or(loc);
            let sep = if path.contains('?') { '&' } else { '?' };
            let (code, _) =
                http(&self.addr, "PUT", &format!("{path}{sep}digest={digest}"), &[("Content-Type", "application/octet-stream")], data).expect("upload");
            assert_eq!(code, 201, "upload blob {digest}");
        }
        let (code, _) =
            http(&self.addr, "PUT", &format!("/v2/{repo}/manifests/{tag}"), &[("Content-Type", &img.manifest.0)], &img.manifest.1).expect("put manifest");
        assert_eq!(code, 201, "put manifest");
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One plain HTTP/1.1 request: (status, headers). Lab addresses only.
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<(u16, Vec<(String, String)>)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut lines = head.lines();
    let code = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let hs = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    Ok((code, hs))
}

/// Ends what a node agent left behind once its process is gone: containerd (it dies with the
/// agent, but not at once), the shims, the containers' processes (killing a shim leaves them
/// running), their mounts under `agent_dir`, and the cgroup tree `cgroup` (under every
/// hierarchy).
pub fn clean_node(agent_dir: &Path, cgroup: &str) {
    let state = agent_dir.join("containerd");
    let sock = state.join("containerd.sock");
    // containerd dies with the agent, but not at once: a shim it was starting can appear
    // after a first sweep. Wait for containerd to be gone, then sweep until no shim is left.
    // pgrep directly, not through sh: the shell's own command line would match.
    let pgrep = |pattern: String| {
        let out = Command::new("pgrep").arg("-f").arg(pattern).output().expect("pgrep");
        String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_string).collect::<Vec<_>>()
    };
    let gone = |pids: Vec<String>| pids.is_empty().then_some(());
    let _ = poll_until(Duration::from_secs(10), || gone(pgrep(format!("containerd --config {}", state.display()))));
    let kill_all = |pids: Vec<String>| {
        if !pids.is_empty() {
            let _ = sh(&format!("kill -9 {}", pids.join(" ")));
        }
        gone(pids)
    };
    let _ = poll_until(Duration::from_secs(10), || kill_all(pgrep(format!("containerd-shim-runc-v2 .*-address {}", sock.display()))));
    // Killing a shim leaves its container's processes running (reparented to init): end
    // every process in the agent's cgroups, then remove them.
    let cgroups = format!("/sys/fs/cgroup/*/{cgroup}");
    let _ = poll_until(Duration::from_secs(10), || {
        let out = sh(&format!("cat $(find {cgroups} -name cgroup.procs 2>/dev/null) 2>/dev/null"));
        kill_all(String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_string).collect())
    });
    // Then the sandboxes' and containers' mounts, so the data dir can go.
    let _ = sh(&format!("for m in $(awk '{{print $2}}' /proc/self/mounts | grep '^{d}' | sort -r); do umount -l $m; done", d = agent_dir.display()));
    let _ = sh(&format!("find {cgroups} -depth -type d -exec rmdir {{}} \\; 2>/dev/null"));
}
