//! The service proxy on a real node (inside the lab's network namespace): cluster IPs and node
//! ports reach the ready pods through nftables rules, a service without endpoints refuses,
//! and the proxy answers /proxyMode and /healthz.

use std::time::Duration;

use r8s_tests::lab::{BUSYBOX, Lab};
use r8s_tests::wait_for;

fn text(o: std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

/// Asks the ingress at `node_ip:80` to switch `ws.example` to the `echo` protocol, then sends a
/// line and returns the line that comes back (None while the route is not there yet).
fn upgrade_echo(node_ip: &str) -> Option<String> {
    use std::io::{BufRead, BufReader, Write};
    let mut tcp = std::net::TcpStream::connect_timeout(&format!("{node_ip}:80").parse().unwrap(), Duration::from_secs(5)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    tcp.write_all(b"GET /chat HTTP/1.1\r\nHost: ws.example\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n").ok()?;
    let mut reader = BufReader::new(tcp.try_clone().ok()?);
    let mut status = String::new();
    reader.read_line(&mut status).ok()?;
    if !status.starts_with("HTTP/1.1 101") {
        return None;
    }
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        if h.trim().is_empty() {
            break;
        }
    }
    tcp.write_all(b"hello\n").ok()?;
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    Some(line.trim().to_string())
}

fn proxy_mode(mode: &'static str) -> impl FnOnce(&r8s_tests::lab::NetNs) -> Vec<String> {
    move |_| vec!["--proxy-mode".into(), mode.into()]
}

// Both proxy backends pass the same data-path tests.
#[test]
fn cluster_ips_and_node_ports_reach_ready_pods_nftables() {
    cluster_ips_and_node_ports_reach_ready_pods("nftables");
}

#[test]
fn cluster_ips_and_node_ports_reach_ready_pods_iptables() {
    cluster_ips_and_node_ports_reach_ready_pods("iptables");
}

#[test]
fn pods_on_two_nodes_reach_each_other_and_services_by_name_nftables() {
    pods_on_two_nodes_reach_each_other_and_services_by_name(&["--proxy-mode", "nftables"]);
}

#[test]
fn pods_on_two_nodes_reach_each_other_and_services_by_name_iptables() {
    pods_on_two_nodes_reach_each_other_and_services_by_name(&["--proxy-mode", "iptables"]);
}

/// The same with the nodes on different subnets behind a router, where host-gw's routes via
/// the other node's address cannot exist: pod traffic travels in VXLAN between the nodes'
/// addresses.
#[test]
fn pods_on_two_routed_nodes_reach_each_other_over_vxlan() {
    pods_on_two_nodes_reach_each_other_and_services_by_name(&["--flannel-backend", "vxlan"]);
}

#[test]
fn rolling_updates_fail_no_request_and_unready_pods_get_no_traffic_nftables() {
    rolling_updates_fail_no_request_and_unready_pods_get_no_traffic("nftables");
}

#[test]
fn rolling_updates_fail_no_request_and_unready_pods_get_no_traffic_iptables() {
    rolling_updates_fail_no_request_and_unready_pods_get_no_traffic("iptables");
}

fn cluster_ips_and_node_ports_reach_ready_pods(mode: &'static str) {
    let lab = Lab::start_with(proxy_mode(mode));
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

    // sessionAffinity ClientIP: every request from the client goes to the same pod.
    s.k_stdin(
        &["apply", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"sticky"},"spec":{"type":"NodePort","selector":{"app":"test1"},"sessionAffinity":"ClientIP","ports":[{"port":80}]}}"#,
    );
    let sticky_ip = s.k(&["get", "svc", "sticky", "-o", "jsonpath={.spec.clusterIP}"]);
    let script = format!("for i in $(seq 1 12); do wget -qO- http://{sticky_ip}/; done");
    let mut answers = String::new();
    wait_for("12 answers through the sticky service", Duration::from_secs(60), || {
        answers = text(s.kubectl(&["exec", "client", "--", "sh", "-c", &script]));
        (answers.lines().filter(|l| l.starts_with("served-by-")).count() == 12).then_some(())
    });
    let distinct: std::collections::BTreeSet<&str> = answers.lines().collect();
    assert_eq!(distinct.len(), 1, "one pod answers a client with affinity: {answers}");
    // The same through its node port, from the node.
    let sticky_port = s.k(&["get", "svc", "sticky", "-o", "jsonpath={.spec.ports[0].nodePort}"]);
    let answers = text(ns.exec(&format!("for i in $(seq 1 12); do curl -s -m 5 http://{}:{sticky_port}/; done", ns.node_ip())));
    assert_eq!(answers.lines().filter(|l| l.starts_with("served-by-")).count(), 12, "{answers}");
    let distinct: std::collections::BTreeSet<&str> = answers.lines().collect();
    assert_eq!(distinct.len(), 1, "one pod answers a client of the node port with affinity: {answers}");

    // From the node: its address and 127.0.0.1 on the node port.
    for addr in [ns.node_ip(), "127.0.0.1".to_string()] {
        let out = ns.exec(&format!("curl -s -m 5 http://{addr}:{node_port}/"));
        let body = text(out);
        assert!(body.starts_with("served-by-test1-"), "curl {addr}:{node_port}: {body}");
    }

    // The proxy's own endpoints, as seed 003 shows them.
    assert_eq!(text(ns.exec("curl -s -m 5 http://127.0.0.1:10249/proxyMode")), mode);
    let health = text(ns.exec("curl -s -m 5 http://127.0.0.1:10256/healthz"));
    assert!(health.contains("\"lastUpdated\"") && health.contains("\"currentTime\""), "{health}");

    // A LoadBalancer Service gets the node's address as EXTERNAL-IP and answers there.
    s.k(&["expose", "deployment", "test1", "--type=LoadBalancer", "--port=8081", "--target-port=80", "--name=test1-lb"]);
    wait_for("test1-lb's EXTERNAL-IP", Duration::from_secs(30), || {
        let row = s.k(&["get", "svc", "test1-lb", "--no-headers"]);
        (row.split_whitespace().nth(3) == Some(ns.node_ip().as_str())).then_some(())
    });
    let body = text(ns.exec(&format!("curl -s -m 5 http://{}:8081/", ns.node_ip())));
    assert!(body.starts_with("served-by-test1-"), "load balancer address: {body}");

    // externalTrafficPolicy Local: a health check node port, answered 200 by a node with
    // endpoints of the service.
    s.k_stdin(
        &["apply", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"test1-local"},"spec":{"type":"LoadBalancer","externalTrafficPolicy":"Local","selector":{"app":"test1"},"ports":[{"port":8083,"targetPort":80}]}}"#,
    );
    let hc = s.k(&["get", "svc", "test1-local", "-o", "jsonpath={.spec.healthCheckNodePort}"]);
    assert!(hc.parse::<u16>().is_ok_and(|p| (30000..=32767).contains(&p)), "a health check port from the node port range: {hc:?}");
    let probe = |want: &str| {
        let out = text(ns.exec(&format!("curl -s -m 5 -w ' %{{http_code}}' http://{}:{hc}/", ns.node_ip())));
        out.contains(want).then_some(out)
    };
    let out = wait_for("the health check port answering 200", Duration::from_secs(30), || probe(" 200"));
    assert!(out.contains(r#""localEndpoints":2"#) && out.contains(r#""name":"test1-local""#), "{out}");

    // No ready endpoints: the service refuses at once instead of timing out.
    s.k(&["scale", "deployment", "test1", "--replicas=0"]);
    wait_for("the service refuses with no endpoints", Duration::from_secs(60), || {
        let out = s.kubectl(&["exec", "client", "--", "wget", "-qO-", &format!("http://{cluster_ip}/")]);
        let t = text(out);
        t.contains("refused").then_some(())
    });
    let out = text(ns.exec(&format!("curl -s -m 5 -o /dev/null -w '%{{http_code}} %{{errormsg}}' http://{}:{node_port}/", ns.node_ip())));
    assert!(out.contains("refused") || out.contains("Couldn't connect"), "node port without endpoints: {out}");
    let out = wait_for("the health check port answering 503", Duration::from_secs(30), || probe(" 503"));
    assert!(out.contains(r#""localEndpoints":0"#), "{out}");
    // Back to the cluster-wide policy: the health check port is given back.
    s.k(&["patch", "svc", "test1-local", "-p", r#"{"spec":{"externalTrafficPolicy":"Cluster"}}"#]);
    assert_eq!(s.k(&["get", "svc", "test1-local", "-o", "jsonpath={.spec.healthCheckNodePort}"]), "");
}

/// A stand-in for the outside world's resolver, on the lab's host-side address: answers any A
/// question with 192.0.2.1 (TEST-NET-1, never contacted).
fn upstream_resolver(addr: String) {
    use hickory_proto::op::Message;
    use hickory_proto::rr::{RData, Record, rdata::A};
    let sock = std::net::UdpSocket::bind(addr).expect("bind the test resolver");
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
            let mut r = Message::response(q.metadata.id, q.metadata.op_code);
            for query in &q.queries {
                r.add_query(query.clone());
                if query.query_type() == hickory_proto::rr::RecordType::A {
                    r.add_answer(Record::from_rdata(query.name().clone(), 60, RData::A(A("192.0.2.1".parse().unwrap()))));
                }
            }
            let _ = sock.send_to(&r.to_vec().unwrap(), peer);
        }
    });
}

#[test]
fn cluster_dns_answers_service_names_from_pods_nftables() {
    cluster_dns_answers_service_names_from_pods("nftables");
}

#[test]
fn cluster_dns_answers_service_names_from_pods_iptables() {
    cluster_dns_answers_service_names_from_pods("iptables");
}

fn cluster_dns_answers_service_names_from_pods(mode: &'static str) {
    let lab = Lab::start_full(|ns| vec!["--cluster-dns-upstream".into(), format!("{}:5353", ns.host_ip())], proxy_mode(mode));
    upstream_resolver(format!("{}:5353", lab.agent.ns.host_ip()));
    let s = &lab.server;
    let deploy = format!(
        r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"my-nginx"}},"spec":{{"replicas":2,"selector":{{"matchLabels":{{"app":"my-nginx"}}}},
        "template":{{"metadata":{{"labels":{{"app":"my-nginx"}}}},"spec":{{"containers":[{{"name":"httpd","image":"{BUSYBOX}",
          "command":["sh","-c","mkdir -p /w; echo served-by-$(hostname) > /w/index.html; exec httpd -f -p 80 -h /w"],
          "ports":[{{"containerPort":80,"name":"http"}}]}}]}}}}}}}}"#
    );
    s.k_stdin(&["apply", "-f", "-"], &deploy);
    s.k(&["expose", "deployment", "my-nginx", "--port=80", "--name=my-nginx"]);
    s.k_stdin(
        &["apply", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"my-nginx-headless"},"spec":{"clusterIP":"None","selector":{"app":"my-nginx"},"ports":[{"name":"http","port":80}]}}"#,
    );
    s.k_stdin(
        &["apply", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"named"},"spec":{"selector":{"app":"my-nginx"},"ports":[{"name":"http","port":8080,"targetPort":80}]}}"#,
    );
    s.k_stdin(
        &["apply", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"ext"},"spec":{"type":"ExternalName","externalName":"example.org"}}"#,
    );
    s.k_stdin(
        &["apply", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"sts"},"spec":{"clusterIP":"None","selector":{"app":"sts"},"ports":[{"name":"http","port":80}]}}"#,
    );
    s.k_stdin(
        &["apply", "-f", "-"],
        &format!(
            r#"{{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{{"name":"sts"}},"spec":{{"serviceName":"sts","replicas":2,"selector":{{"matchLabels":{{"app":"sts"}}}},
              "template":{{"metadata":{{"labels":{{"app":"sts"}}}},"spec":{{"containers":[{{"name":"c","image":"{BUSYBOX}","command":["sleep","600"]}}]}}}}}}}}"#
        ),
    );
    s.k(&["run", "client", &format!("--image={BUSYBOX}"), "--command", "--", "sleep", "600"]);
    wait_for("my-nginx 2/2, sts 2/2 and client Running", Duration::from_secs(120), || {
        let st = s.k(&["get", "statefulset", "sts", "--no-headers"]);
        if st.split_whitespace().nth(1) != Some("2/2") {
            return None;
        }
        let d = s.k(&["get", "deployment", "my-nginx", "--no-headers"]);
        let c = s.k(&["get", "pod", "client", "-o", "jsonpath={.status.phase}"]);
        (d.split_whitespace().nth(1) == Some("2/2") && c == "Running").then_some(())
    });
    let resolv = s.k(&["exec", "client", "--", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 10.96.0.10") && resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"), "{resolv}");
    let cluster_ip = s.k(&["get", "svc", "my-nginx", "-o", "jsonpath={.spec.clusterIP}"]);
    let nslookup = |args: &[&str]| {
        let mut a = vec!["exec", "client", "--", "nslookup"];
        a.extend_from_slice(args);
        text(s.kubectl(&a))
    };
    let out = wait_for("the service name resolves", Duration::from_secs(30), || {
        let out = nslookup(&["my-nginx.default.svc.cluster.local"]);
        out.contains(&format!("Address: {cluster_ip}")).then_some(out)
    });
    assert!(out.contains("Server:") && out.contains("10.96.0.10"), "{out}");
    // Headless: every ready pod's address.
    let pod_ips = s.k(&["get", "pods", "-l", "app=my-nginx", "-o", "jsonpath={.items[*].status.podIP}"]);
    let out = nslookup(&["my-nginx-headless.default.svc.cluster.local"]);
    for ip in pod_ips.split_whitespace() {
        assert!(out.contains(&format!("Address: {ip}")), "{ip} in {out}");
    }
    // SRV for the named port, CNAME for ExternalName, NXDOMAIN for a missing name.
    let out = nslookup(&["-type=SRV", "_http._tcp.named.default.svc.cluster.local"]);
    assert!(out.contains("named.default.svc.cluster.local") && out.contains(" 8080 "), "{out}");
    let out = nslookup(&["-type=CNAME", "ext.default.svc.cluster.local"]);
    assert!(out.contains("canonical name = example.org"), "{out}");
    let out = nslookup(&["nope.default.svc.cluster.local"]);
    assert!(out.contains("NXDOMAIN"), "{out}");
    // StatefulSet pods by name under their governing service.
    let sts1 = s.k(&["get", "pod", "sts-1", "-o", "jsonpath={.status.podIP}"]);
    let out = nslookup(&["sts-1.sts.default.svc.cluster.local"]);
    assert!(out.contains(&format!("Address: {sts1}")), "{out}");
    // Other names go to the upstream resolver.
    // Pod names by dashed address (CoreDNS's `pods insecure`).
    let client_ip = s.k(&["get", "pod", "client", "-o", "jsonpath={.status.podIP}"]);
    let out = nslookup(&[&format!("{}.default.pod.cluster.local", client_ip.replace('.', "-"))]);
    assert!(out.contains(&format!("Address: {client_ip}")), "{out}");
    let out = nslookup(&["outside.test"]);
    assert!(out.contains("Address: 192.0.2.1"), "{out}");
    // The short name through the search path, all the way to a pod (DNS, then the proxy).
    let page = text(s.kubectl(&["exec", "client", "--", "wget", "-qO-", "http://my-nginx/"]));
    assert!(page.starts_with("served-by-my-nginx-"), "{page}");
    // CoreDNS's metrics through the kube-dns Service's metrics port.
    let metrics = text(s.kubectl(&["exec", "client", "--", "wget", "-qO-", "http://kube-dns.kube-system:9153/metrics"]));
    let udp = metrics
        .lines()
        .find(|l| l.starts_with("coredns_dns_requests_total") && l.contains("proto=\"udp\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(udp.is_some_and(|n| n > 5), "the queries above were counted: {metrics}");
    assert!(metrics.contains("coredns_dns_responses_total{server=\"dns://:53\",zone=\".\",rcode=\"NXDOMAIN\"}"), "{metrics}");
}

fn pods_on_two_nodes_reach_each_other_and_services_by_name(agent_args: &[&str]) {
    let vxlan = agent_args.contains(&"vxlan");
    let cluster = if vxlan { r8s_tests::lab::Cluster::start_routed(2, agent_args) } else { r8s_tests::lab::Cluster::start_with(2, agent_args) };
    let s = &cluster.server;
    let (a, b) = (&cluster.agents[0].node_name, &cluster.agents[1].node_name);
    let deploy = format!(
        r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"my-nginx"}},"spec":{{"replicas":4,"selector":{{"matchLabels":{{"app":"my-nginx"}}}},
        "template":{{"metadata":{{"labels":{{"app":"my-nginx"}}}},"spec":{{
          "topologySpreadConstraints":[{{"maxSkew":1,"topologyKey":"kubernetes.io/hostname","whenUnsatisfiable":"DoNotSchedule","labelSelector":{{"matchLabels":{{"app":"my-nginx"}}}}}}],
          "containers":[{{"name":"httpd","image":"{BUSYBOX}",
          "command":["sh","-c","mkdir -p /w; echo served-by-$(hostname) > /w/index.html; exec httpd -f -p 80 -h /w"],
          "ports":[{{"containerPort":80}}]}}]}}}}}}}}"#
    );
    s.k_stdin(&["apply", "-f", "-"], &deploy);
    s.k(&["expose", "deployment", "my-nginx", "--port=80"]);
    s.k_stdin(
        &["apply", "-f", "-"],
        &format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"client"}},"spec":{{"nodeSelector":{{"kubernetes.io/hostname":"{a}"}},
              "containers":[{{"name":"c","image":"{BUSYBOX}","command":["sleep","600"]}}]}}}}"#
        ),
    );
    wait_for("my-nginx 4/4 and client Running", Duration::from_secs(120), || {
        let d = s.k(&["get", "deployment", "my-nginx", "--no-headers"]);
        let c = s.k(&["get", "pod", "client", "-o", "jsonpath={.status.phase}"]);
        (d.split_whitespace().nth(1) == Some("4/4") && c == "Running").then_some(())
    });
    let rows = s.k(&["get", "pods", "-l", "app=my-nginx", "-o", "jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.spec.nodeName}{\"\\n\"}{end}"]);
    let pods: Vec<Vec<String>> = rows.lines().map(|l| l.split_whitespace().map(str::to_string).collect()).collect();
    assert!(pods.iter().any(|p| &p[2] == a) && pods.iter().any(|p| &p[2] == b), "pods on both nodes: {rows}");
    // The route to the other node's pods: via its address (host-gw) or the VXLAN device.
    let b_cidr = s.k(&["get", "node", b, "-o", "jsonpath={.spec.podCIDR}"]);
    let route = text(cluster.agents[0].ns.exec(&format!("ip route show {b_cidr}")));
    if vxlan {
        assert!(route.contains("dev r8s.1"), "{b_cidr} through the VXLAN device: {route}");
    } else {
        assert!(route.contains(&format!("via {}", cluster.agents[1].ns.node_ip())), "{b_cidr} via node b: {route}");
    }
    // Pod IPs on the other node answer directly (host-gw routes, no NAT needed).
    for p in &pods {
        let page = text(s.kubectl(&["exec", "client", "--", "wget", "-qO-", &format!("http://{}/", p[1])]));
        assert_eq!(page.trim(), format!("served-by-{}", p[0]), "pod {} on {}", p[0], p[2]);
    }
    // The service by short name, full name and cluster IP reaches pods on both nodes.
    let cluster_ip = s.k(&["get", "svc", "my-nginx", "-o", "jsonpath={.spec.clusterIP}"]);
    let node_of: std::collections::HashMap<String, String> = pods.iter().map(|p| (p[0].clone(), p[2].clone())).collect();
    for target in ["http://my-nginx/".to_string(), "http://my-nginx.default.svc.cluster.local/".to_string(), format!("http://{cluster_ip}/")] {
        let mut nodes_seen = std::collections::BTreeSet::new();
        wait_for(&format!("{target} reaching pods on both nodes"), Duration::from_secs(60), || {
            let page = text(s.kubectl(&["exec", "client", "--", "wget", "-qO-", &target]));
            if let Some(n) = page.trim().strip_prefix("served-by-").and_then(|p| node_of.get(p)) {
                nodes_seen.insert(n.clone());
            }
            (nodes_seen.len() == 2).then_some(())
        });
    }
}

/// Terminating pods leave the rotation before they stop: with a preStop delay, a rolling
/// update under steady traffic fails no request; a pod that is not ready gets none.
fn rolling_updates_fail_no_request_and_unready_pods_get_no_traffic(mode: &'static str) {
    let lab = Lab::start_with(proxy_mode(mode));
    let s = &lab.server;
    let deploy = |version: &str| {
        format!(
            r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"roll"}},"spec":{{"replicas":2,
            "strategy":{{"rollingUpdate":{{"maxUnavailable":0,"maxSurge":1}}}},"selector":{{"matchLabels":{{"app":"roll"}}}},
            "template":{{"metadata":{{"labels":{{"app":"roll"}}}},"spec":{{"terminationGracePeriodSeconds":10,"containers":[{{"name":"httpd","image":"{BUSYBOX}",
              "command":["sh","-c","mkdir -p /w; echo {version} > /w/index.html; exec httpd -f -p 80 -h /w"],
              "lifecycle":{{"preStop":{{"exec":{{"command":["sleep","2"]}}}}}},
              "readinessProbe":{{"httpGet":{{"path":"/","port":80}},"periodSeconds":1}}}}]}}}}}}}}"#
        )
    };
    s.k_stdin(&["apply", "-f", "-"], &deploy("v1"));
    s.k(&["expose", "deployment", "roll", "--port=80"]);
    // A pod that never becomes ready, carrying the service's label.
    s.k_stdin(
        &["apply", "-f", "-"],
        &format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"unready","labels":{{"app":"roll"}}}},"spec":{{"containers":[{{"name":"httpd","image":"{BUSYBOX}",
              "command":["sh","-c","mkdir -p /w; echo unready > /w/index.html; exec httpd -f -p 80 -h /w"],
              "readinessProbe":{{"exec":{{"command":["false"]}},"periodSeconds":1}}}}]}}}}"#
        ),
    );
    s.k(&["run", "client", &format!("--image={BUSYBOX}"), "--command", "--", "sleep", "600"]);
    wait_for("roll 2/2 and client Running", Duration::from_secs(120), || {
        let d = s.k(&["get", "deployment", "roll", "--no-headers"]);
        let c = s.k(&["get", "pod", "client", "-o", "jsonpath={.status.phase}"]);
        (d.split_whitespace().nth(1) == Some("2/2") && c == "Running").then_some(())
    });
    // Steady traffic from inside the client while the image's page changes to v2.
    let script = "ok=0; bad=0; other=0; end=$(( $(date +%s) + 25 )); while [ $(date +%s) -lt $end ]; do \
                  r=$(wget -qO- http://roll/ 2>/dev/null); case \"$r\" in v1|v2) ok=$((ok+1)); touch /tmp/started;; '') bad=$((bad+1));; *) other=$((other+1));; esac; \
                  [ -f /tmp/stop ] && break; done; echo ok=$ok bad=$bad other=$other";
    let traffic = {
        let kubeconfig = s.kubeconfig.clone();
        let script = script.to_string();
        std::thread::spawn(move || {
            let out = std::process::Command::new("kubectl").args(["exec", "client", "--", "sh", "-c", &script]).env("KUBECONFIG", kubeconfig).output().unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    wait_for("traffic flowing", Duration::from_secs(30), || s.kubectl(&["exec", "client", "--", "test", "-f", "/tmp/started"]).status.success().then_some(()));
    s.k_stdin(&["apply", "-f", "-"], &deploy("v2"));
    s.k(&["rollout", "status", "deployment/roll", "--timeout=120s"]);
    wait_for("the old pods gone", Duration::from_secs(60), || {
        let n = s.k(&["get", "pods", "-l", "app=roll", "--no-headers"]).lines().count();
        (n == 3).then_some(())
    });
    s.k(&["exec", "client", "--", "touch", "/tmp/stop"]);
    let result = traffic.join().unwrap();
    let field = |k: &str| result.split_whitespace().find_map(|f| f.strip_prefix(&format!("{k}="))).and_then(|v| v.parse::<u32>().ok()).unwrap_or(u32::MAX);
    assert!(field("ok") > 10, "traffic flowed during the rollout: {result}");
    assert_eq!((field("bad"), field("other")), (0, 0), "no failed request and never the unready pod: {result}");
    assert_eq!(text(s.kubectl(&["exec", "client", "--", "wget", "-qO-", "http://roll/"])).trim(), "v2");
}

#[test]
fn a_network_policy_admits_only_the_labelled_pods() {
    let lab = Lab::start();
    let s = &lab.server;
    let pod = |name: &str, labels: &str, cmd: &str| {
        format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","labels":{labels}}},"spec":{{"containers":[{{"name":"c","image":"{BUSYBOX}","command":["sh","-c","{cmd}"]}}]}}}}"#
        )
    };
    s.k_stdin(&["apply", "-f", "-"], &pod("web", r#"{"app":"web"}"#, "mkdir -p /w; echo hello > /w/index.html; exec httpd -f -p 80 -h /w"));
    s.k_stdin(&["apply", "-f", "-"], &pod("allowed", r#"{"access":"true"}"#, "sleep 600"));
    s.k_stdin(&["apply", "-f", "-"], &pod("denied", "{}", "sleep 600"));
    wait_for("the three pods Running", Duration::from_secs(90), || {
        let out = s.k(&["get", "pods", "--no-headers"]);
        (out.lines().filter(|l| l.contains(" Running ")).count() == 3).then_some(())
    });
    let ip = s.k(&["get", "pod", "web", "-o", "jsonpath={.status.podIP}"]);
    let fetch = |from: &str| text(s.kubectl(&["exec", from, "--", "timeout", "3", "wget", "-qO-", &format!("http://{ip}/")]));
    assert_eq!(fetch("denied").trim(), "hello", "before any policy every pod may connect");
    s.k_stdin(
        &["apply", "-f", "-"],
        r#"{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"web-access"},"spec":{
             "podSelector":{"matchLabels":{"app":"web"}},"ingress":[{"from":[{"podSelector":{"matchLabels":{"access":"true"}}}],"ports":[{"port":80}]}]}}"#,
    );
    wait_for("the unlabelled pod blocked", Duration::from_secs(30), || (fetch("denied").trim() != "hello").then_some(()));
    assert_eq!(fetch("allowed").trim(), "hello", "the labelled pod still gets through");
    s.k(&["delete", "networkpolicy", "web-access"]);
    wait_for("open again without the policy", Duration::from_secs(30), || (fetch("denied").trim() == "hello").then_some(()));

    // An ipBlock: the pod network, except the denied pod's address, on port 80 only.
    let denied_ip = s.k(&["get", "pod", "denied", "-o", "jsonpath={.status.podIP}"]);
    s.k_stdin(
        &["apply", "-f", "-"],
        &format!(
            r#"{{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{{"name":"web-block"}},"spec":{{
                 "podSelector":{{"matchLabels":{{"app":"web"}}}},"ingress":[{{"from":[{{"ipBlock":{{"cidr":"10.244.0.0/16","except":["{denied_ip}/32"]}}}}],"ports":[{{"port":80}}]}}]}}}}"#
        ),
    );
    wait_for("the excepted address blocked", Duration::from_secs(30), || (fetch("denied").trim() != "hello").then_some(()));
    assert_eq!(fetch("allowed").trim(), "hello", "the rest of the block gets through");
}

#[test]
fn an_ingress_routes_two_hosts_and_two_paths_to_their_services_nftables() {
    an_ingress_routes_two_hosts_and_two_paths_to_their_services("nftables");
}

#[test]
fn an_ingress_routes_two_hosts_and_two_paths_to_their_services_iptables() {
    an_ingress_routes_two_hosts_and_two_paths_to_their_services("iptables");
}

fn an_ingress_routes_two_hosts_and_two_paths_to_their_services(mode: &'static str) {
    let lab = Lab::start_with(proxy_mode(mode));
    let s = &lab.server;
    let ns = &lab.agent.ns;
    for name in ["app-a", "app-b", "api"] {
        s.k_stdin(
            &["apply", "-f", "-"],
            &format!(
                r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","labels":{{"app":"{name}"}}}},"spec":{{"containers":[{{"name":"c","image":"{BUSYBOX}",
                  "command":["sh","-c","mkdir -p /w/v1; echo {name} > /w/index.html; echo {name}-v1 > /w/v1/index.html; exec httpd -f -p 80 -h /w"]}}]}}}}"#
            ),
        );
        s.k(&["expose", "pod", name, "--port=80"]);
    }
    s.k_stdin(
        &["apply", "-f", "-"],
        r#"{"apiVersion":"networking.k8s.io/v1","kind":"Ingress","metadata":{"name":"routes"},"spec":{"rules":[
             {"host":"a.example","http":{"paths":[{"path":"/","pathType":"Prefix","backend":{"service":{"name":"app-a","port":{"number":80}}}},
                                                 {"path":"/v1","pathType":"Prefix","backend":{"service":{"name":"api","port":{"number":80}}}}]}},
             {"host":"b.example","http":{"paths":[{"path":"/","pathType":"Prefix","backend":{"service":{"name":"app-b","port":{"number":80}}}}]}}]}}"#,
    );
    wait_for("the three backends Running", Duration::from_secs(90), || {
        let out = s.k(&["get", "pods", "--no-headers"]);
        (out.lines().filter(|l| l.contains(" Running ")).count() == 3).then_some(())
    });
    // The Ingress gets the default class's address: the node's.
    wait_for("the ingress address", Duration::from_secs(30), || {
        let row = s.k(&["get", "ingress", "routes", "--no-headers"]);
        row.contains(&ns.node_ip()).then_some(())
    });
    let get = |host: &str, path: &str| text(ns.exec(&format!("curl -s -m 5 -H 'Host: {host}' http://{}{path}", ns.node_ip())));
    let page = wait_for("a.example served", Duration::from_secs(30), || Some(get("a.example", "/")).filter(|p| p.trim() == "app-a"));
    assert_eq!(page.trim(), "app-a");
    assert_eq!(get("a.example", "/v1/").trim(), "api-v1", "the longer prefix goes to the api service");
    assert_eq!(get("b.example", "/").trim(), "app-b");
    assert_eq!(get("b.example", "/v1/").trim(), "app-b-v1", "b.example has no /v1 rule: its / backend answers");
    assert!(get("c.example", "/").contains("404"), "no rule for the host");

    // A protocol upgrade (WebSocket's handshake) passes through, then bytes flow both ways.
    let echo = r#"while read -r l; do [ -z "$(echo "$l" | tr -d '\r')" ] && break; done; printf 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n'; while read -r l; do echo "echo: $l"; done"#;
    s.k_stdin(
        &["apply", "-f", "-"],
        &serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "echo", "labels": {"app": "echo"}},
            "spec": {"containers": [{"name": "c", "image": BUSYBOX, "command": ["sh", "-c", format!("printf '%s' '{}' > /echo.sh; exec nc -ll -p 80 -e sh /echo.sh", echo.replace('\'', "'\\''"))],
                "readinessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 1}}]}})
        .to_string(),
    );
    s.k(&["expose", "pod", "echo", "--port=80"]);
    s.k(&["create", "ingress", "echo", "--rule=ws.example/*=echo:80"]);
    wait_for("the echo pod ready", Duration::from_secs(60), || {
        (s.k(&["get", "pod", "echo", "-o", "jsonpath={.status.containerStatuses[0].ready}"]) == "true").then_some(())
    });
    let line = wait_for("an upgraded connection echoing through the ingress", Duration::from_secs(30), || upgrade_echo(&ns.node_ip()));
    assert_eq!(line, "echo: hello");

    // HTTPS: a.example's certificate from a TLS Secret, picked by SNI.
    let dir = s.dir.path().join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let (crt, key) = (dir.join("a.crt"), dir.join("a.key"));
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=a.example", "-addext", "subjectAltName=DNS:a.example"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    s.k(&["create", "secret", "tls", "a-tls", &format!("--cert={}", crt.display()), &format!("--key={}", key.display())]);
    s.k(&["patch", "ingress", "routes", "--type=merge", "-p", r#"{"spec":{"tls":[{"hosts":["a.example"],"secretName":"a-tls"}]}}"#]);
    let https = |host: &str, path: &str, verify: &str| {
        text(ns.exec(&format!("curl -s -m 5 {verify} --resolve {host}:443:{ip} https://{host}{path}", ip = ns.node_ip())))
    };
    let cacert = format!("--cacert {}", crt.display());
    let page =
        wait_for("https://a.example with its certificate", Duration::from_secs(30), || Some(https("a.example", "/", &cacert)).filter(|p| p.trim() == "app-a"));
    assert_eq!(page.trim(), "app-a");
    assert_eq!(https("a.example", "/v1/", &cacert).trim(), "api-v1", "routing is the same over HTTPS");
    // Another host gets the default certificate (not a.example's), and still its routes.
    let verify_b = text(ns.exec(&format!(
        "curl -s -m 5 -o /dev/null -w '%{{ssl_verify_result}} %{{http_code}}' {cacert} --resolve b.example:443:{ip} https://b.example/",
        ip = ns.node_ip()
    )));
    assert!(!verify_b.ends_with(" 200"), "b.example is not covered by a.example's certificate: {verify_b}");
    assert_eq!(https("b.example", "/", "-k").trim(), "app-b");
}

/// `--flannel-backend none`: the agent writes no CNI configuration of its own; the network
/// the user installs (here a bridge conflist the test writes into `--cni-conf-dir`, as a CNI's
/// installer would) gives pods their addresses.
#[test]
fn with_flannel_backend_none_pods_use_the_installed_cni() {
    let lab = Lab::start_with(|ns| {
        let dir = std::env::temp_dir().join(format!("r8s-user-cni-{}", ns.n));
        std::fs::create_dir_all(&dir).unwrap();
        let conflist = serde_json::json!({
            "cniVersion": "0.4.0", "name": "user-net",
            "plugins": [
                {"type": "bridge", "bridge": "user0", "isGateway": true, "ipMasq": false,
                 "ipam": {"type": "host-local", "dataDir": dir.join("ipam").display().to_string(),
                          "ranges": [[{"subnet": format!("10.88.{}.0/24", ns.n % 250)}]], "routes": [{"dst": "0.0.0.0/0"}]}},
                {"type": "loopback"}
            ]
        });
        std::fs::write(dir.join("10-user.conflist"), conflist.to_string()).unwrap();
        vec!["--flannel-backend".into(), "none".into(), "--cni-conf-dir".into(), dir.display().to_string()]
    });
    let s = &lab.server;
    let dir = std::env::temp_dir().join(format!("r8s-user-cni-{}", lab.agent.ns.n));
    s.k(&["run", "p", &format!("--image={BUSYBOX}"), "--command", "--", "sleep", "600"]);
    let ip = wait_for("p Running with an address", Duration::from_secs(90), || {
        let ip = s.k(&["get", "pod", "p", "-o", "jsonpath={.status.podIP}"]);
        (!ip.is_empty()).then_some(ip)
    });
    assert!(ip.starts_with(&format!("10.88.{}.", lab.agent.ns.n % 250)), "the installed network's address: {ip}");
    let files: Vec<String> = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(!files.iter().any(|f| f.contains("r8s")), "the agent wrote no conflist of its own: {files:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
