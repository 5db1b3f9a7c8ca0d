//! `r8s server` as the README's first command runs it: control plane and its own node agent in
//! one process (inside a lab network namespace here), and the seed 002 walkthrough on real pods.

use std::time::Duration;

use r8s_tests::lab::{BUSYBOX, HTTPD_1, HTTPD_2, NetNs, write_test_images};
use r8s_tests::{TestServer, wait_for};

#[test]
fn the_server_runs_its_own_node_and_the_seed_walkthrough_runs_for_real() {
    let ns = NetNs::create();
    let node = format!("server-{}", ns.n);
    let cgroup = format!("/r8s-lab-{}", ns.n);
    let s = TestServer::start_in_netns(&ns.name, &ns.node_ip(), &["--node-ip", &ns.node_ip(), "--node-name", &node, "--cgroup-root", &cgroup], |data| {
        write_test_images(&data.join("agent/images"))
    });
    let _cleanup = Cleanup { data: s.data_dir(), cgroup: cgroup.clone() };
    wait_for("the server's own node Ready", Duration::from_secs(90), || {
        let out = s.kubectl(&["get", "node", &node, "--no-headers"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (text.split_whitespace().nth(1) == Some("Ready")).then_some(())
    });
    let roles = s.k(&["get", "node", &node, "--no-headers"]);
    assert_eq!(roles.split_whitespace().nth(2), Some("control-plane,master"), "{roles}");
    let taints = s.k(&["get", "node", &node, "-o", "jsonpath={.spec.taints}"]);
    assert!(taints.is_empty(), "a one-node cluster's node is not tainted: {taints}");

    // Seed 002: create, scale, set image, undo.
    s.k(&["create", "deployment", "test1", &format!("--image={HTTPD_1}"), "--replicas=2", "--port=80"]);
    s.k(&["rollout", "status", "deployment/test1", "--timeout=120s"]);
    s.k(&["scale", "deployment/test1", "--replicas=3"]);
    s.k(&["rollout", "status", "deployment/test1", "--timeout=120s"]);
    let ready = s.k(&["get", "deployment", "test1", "-o", "jsonpath={.status.readyReplicas}"]);
    assert_eq!(ready, "3");
    s.k(&["set", "image", "deployment/test1", &format!("httpd={HTTPD_2}")]);
    s.k(&["rollout", "status", "deployment/test1", "--timeout=120s"]);
    assert_eq!(served_page(&s, HTTPD_2), "httpd version 2\n");
    s.k(&["rollout", "undo", "deployment/test1"]);
    s.k(&["rollout", "status", "deployment/test1", "--timeout=120s"]);
    wait_for("only version-1 pods left", Duration::from_secs(120), || {
        let imgs = s.k(&["get", "pods", "-l", "app=test1", "-o", "jsonpath={.items[*].spec.containers[0].image}"]);
        let v: Vec<&str> = imgs.split_whitespace().collect();
        (v.len() == 3 && v.iter().all(|i| *i == HTTPD_1)).then_some(())
    });
    assert_eq!(served_page(&s, HTTPD_1), "httpd version 1\n");
    let _ = BUSYBOX;
}

/// The page a test1 pod of `image` serves (not one being replaced), fetched from another pod.
fn served_page(s: &TestServer, image: &str) -> String {
    let out = s.kubectl(&["get", "pod", "fetcher", "-o", "name"]);
    if !out.status.success() {
        s.k(&["run", "fetcher", &format!("--image={BUSYBOX}"), "--command", "--", "sleep", "3600"]);
    }
    wait_for("fetcher Running", Duration::from_secs(60), || (s.k(&["get", "pod", "fetcher", "-o", "jsonpath={.status.phase}"]) == "Running").then_some(()));
    let rows = s.k(&[
        "get",
        "pods",
        "-l",
        "app=test1",
        "-o",
        "jsonpath={range .items[*]}{.spec.containers[0].image} {.status.podIP} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
    ]);
    let ip = rows
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|c| c.len() == 2 && c[0] == image)
        .map(|c| c[1].to_string())
        .unwrap_or_else(|| panic!("no live pod of {image}: {rows}"));
    s.k(&["exec", "fetcher", "--", "wget", "-qO-", &format!("http://{ip}/")])
}

/// The server's containers outlive it in their shims: stop them and unmount what they left.
struct Cleanup {
    data: std::path::PathBuf,
    cgroup: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // Dropped before the server (declared after it): end the server first, so its
        // containerd cannot start anything while its node is being cleaned.
        let _ = std::process::Command::new("pkill").arg("-9").arg("-f").arg(format!("r8s server .*--data-dir {}", self.data.display())).status();
        r8s_tests::lab::clean_node(&self.data.join("agent"), self.cgroup.trim_start_matches('/'));
    }
}
