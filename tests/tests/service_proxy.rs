//! The service proxy on a real node (inside the lab's network namespace): cluster IPs and node
//! ports reach the ready pods through nftables rules, a service without endpoints refuses,
//! and the proxy answers /proxyMode and /healthz.

use std::time::Duration;

use r8s_tests::lab::{BUSYBOX, Lab};
use r8s_tests::wait_for;

fn text(o: std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

#[test]
fn cluster_ips_and_node_ports_reach_ready_pods() {
    let lab = Lab::start();
    let s = &lab.server;
    let ns = &lab.agent.ns;
    let deploy = format!(
        r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"test1"}},"spec":{{"replicas":2,"selector":{{"matchLabels":{{"app":"test1"}}}},
        "template":{{"metadata":{{"labels":{{"app":"test1"}}}},"spec":{{"containers":[{{"name":"httpd","image":"{BUSYBOX}",
          "command":["sh","-c","mkdir -p /w; echo served-by-$(hostname) > /w/index.html; exec httpd -f -p 80 -h /w"],
          "ports":[{{"containerPort":80}}],
          "readinessProbe":{{"tcpSocket":{{"port":80}},"periodSeconds":1}}}}]}}}}}}}}"#
    );
    s.k_stdin(&["apply", "-f", "-"], &deploy);
    // Seed 002: expose the deployment on a node port.
    s.k(&["expose", "deployment", "test1", "--type=NodePort", "--port=80"]);
    s.k(&["run", "client", &format!("--image={BUSYBOX}"), "--command", "--", "sleep", "600"]);
    wait_for("test1 2/2 and client Running", Duration::from_secs(120), || {
        let d = s.k(&["get", "deployment", "test1", "--no-headers"]);
        let c = s.k(&["get", "pod", "client", "-o", "jsonpath={.status.phase}"]);
        (d.split_whitespace().nth(1) == Some("2/2") && c == "Running").then_some(())
    });
    let cluster_ip = s.k(&["get", "svc", "test1", "-o", "jsonpath={.spec.clusterIP}"]);
    let node_port = s.k(&["get", "svc", "test1", "-o", "jsonpath={.spec.ports[0].nodePort}"]);
    let pods = s.k(&["get", "pods", "-l", "app=test1", "-o", "jsonpath={.items[*].metadata.name}"]);
    let pods: Vec<&str> = pods.split_whitespace().collect();

    // From a pod, the cluster IP reaches both replicas (random choice: poll until both answered).
    let mut seen = std::collections::BTreeSet::new();
    wait_for("the cluster IP spreads over both pods", Duration::from_secs(60), || {
        let page = s.kubectl(&["exec", "client", "--", "wget", "-qO-", &format!("http://{cluster_ip}/")]);
        if let Some(name) = String::from_utf8_lossy(&page.stdout).trim().strip_prefix("served-by-") {
            seen.insert(name.to_string());
        }
        (seen.len() == 2).then_some(())
    });
    assert_eq!(seen.iter().map(String::as_str).collect::<Vec<_>>(), {
        let mut p = pods.clone();
        p.sort();
        p
    });

    // From the node: its address and 127.0.0.1 on the node port.
    for addr in [ns.node_ip(), "127.0.0.1".to_string()] {
        let out = ns.exec(&format!("curl -s -m 5 http://{addr}:{node_port}/"));
        let body = text(out);
        assert!(body.starts_with("served-by-test1-"), "curl {addr}:{node_port}: {body}");
    }

    // The proxy's own endpoints, as seed 003 shows them.
    assert_eq!(text(ns.exec("curl -s -m 5 http://127.0.0.1:10249/proxyMode")), "nftables");
    let health = text(ns.exec("curl -s -m 5 http://127.0.0.1:10256/healthz"));
    assert!(health.contains("\"lastUpdated\"") && health.contains("\"currentTime\""), "{health}");

    // No ready endpoints: the service refuses at once instead of timing out.
    s.k(&["scale", "deployment", "test1", "--replicas=0"]);
    wait_for("the service refuses with no endpoints", Duration::from_secs(60), || {
        let out = s.kubectl(&["exec", "client", "--", "wget", "-qO-", &format!("http://{cluster_ip}/")]);
        let t = text(out);
        t.contains("refused").then_some(())
    });
    let out = text(ns.exec(&format!("curl -s -m 5 -o /dev/null -w '%{{http_code}} %{{errormsg}}' http://{}:{node_port}/", ns.node_ip())));
    assert!(out.contains("refused") || out.contains("Couldn't connect"), "node port without endpoints: {out}");
}
