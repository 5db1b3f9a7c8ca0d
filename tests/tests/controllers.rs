//! DaemonSet, StatefulSet, Job, CronJob and node lifecycle controllers on simulated nodes.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::watcher;
use r8s_tests::{SimNodes, TestServer, rows, wait_for};

const T: Duration = Duration::from_secs(60);

/// (node, pod) of the Running pods that are not being deleted.
fn pods_by_node(s: &TestServer, selector: &str) -> Vec<(String, String)> {
    let out = s.k(&[
        "get",
        "pods",
        "-l",
        selector,
        "--no-headers",
        "-o",
        "custom-columns=NAME:.metadata.name,NODE:.spec.nodeName,PHASE:.status.phase,DELETING:.metadata.deletionTimestamp",
    ]);
    let mut v: Vec<(String, String)> = rows(&out)
        .into_iter()
        .filter(|r| r.get(2).map(String::as_str) == Some("Running") && r.get(3).map(String::as_str) == Some("<none>"))
        .map(|r| (r[1].clone(), r[0].clone()))
        .collect();
    v.sort();
    v
}

#[test]
fn daemonset_runs_one_pod_per_eligible_node() {
    let s = TestServer::start_cluster(&[]);
    let _plain = SimNodes::start(&s, "ds", 2, &[]);
    let _tainted = SimNodes::start(&s, "gpu", 1, &["--taints", "gpu=true:NoSchedule"]);
    let ds = |name: &str, tolerate: bool| {
        let tol = if tolerate { "      tolerations: [{key: gpu, operator: Exists, effect: NoSchedule}]\n" } else { "" };
        format!(
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: {name}}}\nspec:\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n{tol}      containers: [{{name: c, image: busybox}}]\n"
        )
    };
    s.k_stdin(&["apply", "-f", "-"], &ds("agent", false));
    s.k_stdin(&["apply", "-f", "-"], &ds("gpu-agent", true));
    let nodes = |sel: &str| pods_by_node(&s, sel).into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    wait_for("agent on ds0 and ds1 only", T, || (nodes("app=agent") == ["ds0", "ds1"]).then_some(()));
    wait_for("gpu-agent on all three nodes", T, || (nodes("app=gpu-agent") == ["ds0", "ds1", "gpu0"]).then_some(()));
    let st = s.k(&["get", "ds", "agent", "--no-headers"]);
    assert_eq!(rows(&st)[0][1..6], ["2", "2", "2", "2", "2"], "{st}");
    // A node that joins gets its daemon pod.
    let _more = SimNodes::start(&s, "late", 1, &[]);
    wait_for("agent on the new node", T, || (nodes("app=agent") == ["ds0", "ds1", "late0"]).then_some(()));
    wait_for("DESIRED 3", T, || (rows(&s.k(&["get", "ds", "agent", "--no-headers"]))[0][1] == "3").then_some(()));
    // The pods stay one per node (no duplicates after the dust settles).
    assert_eq!(s.k(&["get", "pods", "-l", "app=agent", "--no-headers"]).lines().count(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn statefulset_creates_in_order_and_deletes_in_reverse() {
    let s = TestServer::start_cluster(&[]);
    let _nodes = SimNodes::start(&s, "st", 2, &[]);
    let client = s.client().await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut w = watcher(pods, watcher::Config::default().labels("app=web")).boxed();
        while let Some(Ok(ev)) = w.next().await {
            match ev {
                watcher::Event::Apply(p) if p.metadata.deletion_timestamp.is_none() => {
                    let _ = tx.send(("add", p.metadata.name.unwrap_or_default()));
                }
                watcher::Event::Delete(p) => {
                    let _ = tx.send(("del", p.metadata.name.unwrap_or_default()));
                }
                _ => {}
            }
        }
    });
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {clusterIP: None, selector: {app: web}, ports: [{port: 80}]}\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: web}\nspec:\n  serviceName: web\n  replicas: 3\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: nginx, image: nginx}]}\n  volumeClaimTemplates:\n  - metadata: {name: www}\n    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n";
    let s2 = &s;
    tokio::task::block_in_place(|| {
        s2.k_stdin(&["apply", "-f", "-"], yaml);
        wait_for("web 3/3", T, || (rows(&s2.k(&["get", "sts", "web", "--no-headers"]))[0][1] == "3/3").then_some(()));
    });
    let mut first_seen = Vec::new();
    while first_seen.len() < 3 {
        let (kind, name) = tokio::time::timeout(T, rx.recv()).await.expect("pod events").unwrap();
        if kind == "add" && !first_seen.contains(&name) {
            first_seen.push(name);
        }
    }
    assert_eq!(first_seen, ["web-0", "web-1", "web-2"]);
    tokio::task::block_in_place(|| {
        let host = s2.k(&["get", "pod", "web-1", "-o", "jsonpath={.spec.hostname}.{.spec.subdomain}"]);
        assert_eq!(host, "web-1.web");
        let pvcs = s2.k(&["get", "pvc", "-o", "name"]);
        assert_eq!(pvcs.lines().collect::<Vec<_>>(), ["persistentvolumeclaim/www-web-0", "persistentvolumeclaim/www-web-1", "persistentvolumeclaim/www-web-2"]);
        s2.k(&["scale", "sts", "web", "--replicas=0"]);
    });
    let mut deleted = Vec::new();
    while deleted.len() < 3 {
        let (kind, name) = tokio::time::timeout(T, rx.recv()).await.expect("pod deletions").unwrap();
        if kind == "del" {
            deleted.push(name);
        }
    }
    assert_eq!(deleted, ["web-2", "web-1", "web-0"]);
}

#[test]
fn job_completes_and_cronjob_fires() {
    // A cron minute of 2 s keeps the test short.
    let s = TestServer::start_cluster(&["--cronjob-minute", "2s"]);
    let _nodes = SimNodes::start(&s, "job", 2, &[]);
    s.k_stdin(
        &["apply", "-f", "-"],
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: pi}\nspec:\n  completions: 3\n  parallelism: 2\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: pi, image: perl, command: [perl, -e, print 1]}]\n",
    );
    s.k(&["wait", "--for=condition=complete", "job/pi", "--timeout=60s"]);
    let row = rows(&s.k(&["get", "job", "pi", "--no-headers"]));
    assert_eq!(row[0][..3], ["pi", "Complete", "3/3"], "{row:?}");
    let done = s.k(&["get", "pods", "-l", "job-name=pi", "--field-selector", "status.phase=Succeeded", "-o", "name"]);
    assert_eq!(done.lines().count(), 3);

    // A failing job stops at its backoff limit.
    s.k_stdin(
        &["apply", "-f", "-"],
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: bad}\nspec:\n  backoffLimit: 1\n  template:\n    metadata: {annotations: {r8s.io/sim-exit-code: \"1\"}}\n    spec:\n      restartPolicy: Never\n      containers: [{name: c, image: busybox}]\n",
    );
    s.k(&["wait", "--for=condition=failed", "job/bad", "--timeout=60s"]);
    let reason = s.k(&["get", "job", "bad", "-o", "jsonpath={.status.conditions[?(@.type==\"Failed\")].reason}"]);
    assert_eq!(reason, "BackoffLimitExceeded");
    assert_eq!(s.k(&["get", "job", "bad", "-o", "jsonpath={.status.failed}"]), "2");

    s.k(&["create", "cronjob", "tick", "--image=busybox", "--schedule=* * * * *", "--", "date"]);
    let job = wait_for("a job from the cronjob", T, || {
        let out = s.k(&["get", "jobs", "-o", "jsonpath={.items[?(@.metadata.ownerReferences[0].name==\"tick\")].metadata.name}"]);
        out.split_whitespace().next().map(str::to_string)
    });
    assert!(job.starts_with("tick-"), "{job}");
    s.k(&["wait", "--for=condition=complete", &format!("job/{job}"), "--timeout=60s"]);
    wait_for("lastScheduleTime and lastSuccessfulTime", T, || {
        let st = s.k(&["get", "cronjob", "tick", "-o", "jsonpath={.status.lastScheduleTime}/{.status.lastSuccessfulTime}"]);
        (st.len() > 10 && !st.ends_with('/')).then_some(())
    });
    // The finished run is reported once, as upstream's controller does.
    let saw = format!("Saw completed job: {job}, condition: Complete");
    wait_for("SawCompletedJob event", T, || {
        let msgs = s.k(&["get", "events", "--field-selector", "involvedObject.name=tick,reason=SawCompletedJob", "-o", "jsonpath={.items[*].message}"]);
        msgs.contains(&saw).then_some(())
    });
    // History is capped at successfulJobsHistoryLimit (3) as the schedule keeps firing.
    wait_for("four runs seen, three kept", T, || {
        let names = s.k(&["get", "events", "--field-selector", "involvedObject.name=tick,reason=SuccessfulDelete", "-o", "name"]);
        (!names.trim().is_empty()).then_some(())
    });
    let kept = s.k(&["get", "jobs", "-o", "jsonpath={.items[?(@.metadata.ownerReferences[0].name==\"tick\")].metadata.name}"]);
    assert!(kept.split_whitespace().count() <= 4, "{kept}");
}

#[test]
fn lost_nodes_go_not_ready_and_their_pods_are_replaced() {
    let s = TestServer::start_cluster(&["--node-monitor-grace-period", "3s", "--node-monitor-period", "1s", "--default-unreachable-toleration-seconds", "2"]);
    let _stay = SimNodes::start(&s, "stay", 2, &["--lease-duration-seconds", "4"]);
    let mut lost = SimNodes::start(&s, "lost", 1, &["--lease-duration-seconds", "4"]);
    s.k(&["create", "deployment", "app", "--image=nginx", "--replicas=3"]);
    s.k(&["rollout", "status", "deploy/app", "--timeout=60s"]);
    // Pin one replica's node: the spreading puts one on each node.
    wait_for("a pod on lost0", T, || pods_by_node(&s, "app=app").iter().any(|(n, _)| n == "lost0").then_some(()));
    let tol =
        s.k(&["get", "pods", "-l", "app=app", "-o", "jsonpath={.items[0].spec.tolerations[?(@.key==\"node.kubernetes.io/unreachable\")].tolerationSeconds}"]);
    assert_eq!(tol, "2", "admission uses --default-unreachable-toleration-seconds");
    lost.stop();
    wait_for("lost0 NotReady", T, || {
        let st = s.k(&["get", "node", "lost0", "--no-headers"]);
        (rows(&st)[0][1] == "NotReady").then_some(())
    });
    let taints = s.k(&["get", "node", "lost0", "-o", "jsonpath={.spec.taints[*].key}"]);
    assert!(taints.contains("node.kubernetes.io/unreachable"), "{taints}");
    let reason = s.k(&["get", "node", "lost0", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}"]);
    assert_eq!(reason, "NodeStatusUnknown");
    // Its pods stop being Ready at once (before their eviction).
    wait_for("pods on lost0 not ready", T, || {
        let out = s.k(&["get", "pods", "--field-selector", "spec.nodeName=lost0", "-o", "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}"]);
        (!out.is_empty() && out.split_whitespace().all(|v| v == "False")).then_some(())
    });
    // After the toleration, the pod is evicted and replaced on the remaining nodes.
    wait_for("3 running pods on stay nodes", T, || {
        let p = pods_by_node(&s, "app=app");
        (p.iter().filter(|(n, _)| n.starts_with("stay")).count() == 3).then_some(())
    });
    // `kubectl describe node` shows the kubelet's and the node controller's events.
    let describe = s.k(&["describe", "node", "lost0"]);
    for want in ["Starting kubelet.", "Node lost0 status is now: NodeReady", "Registered Node lost0 in Controller", "Node lost0 status is now: NodeNotReady"] {
        assert!(describe.contains(want), "{want}: {describe}");
    }
    let evicted = s.k(&["get", "events", "--field-selector", "reason=TaintManagerEviction", "-o", "jsonpath={.items[*].message}"]);
    assert!(evicted.contains("Marking for deletion Pod default/app-"), "{evicted}");
    // The evicted pod stays Terminating (no kubelet confirms it), as upstream; nothing new
    // goes to the lost node.
    s.k(&["scale", "deploy", "app", "--replicas=5"]);
    s.k(&["rollout", "status", "deploy/app", "--timeout=60s"]);
    assert!(pods_by_node(&s, "app=app").iter().all(|(n, _)| n.starts_with("stay")));
}

#[test]
fn drain_respects_a_pod_disruption_budget() {
    let s = TestServer::start_cluster(&[]);
    let _nodes = SimNodes::start(&s, "dr", 3, &[]);
    s.k(&["create", "deployment", "web", "--image=nginx", "--replicas=4"]);
    s.k(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    s.k(&["create", "poddisruptionbudget", "web-pdb", "--selector=app=web", "--min-available=3"]);
    wait_for("PDB allows one disruption", T, || {
        let st = s.k(&["get", "pdb", "web-pdb", "-o", "jsonpath={.status.currentHealthy}/{.status.desiredHealthy}/{.status.disruptionsAllowed}"]);
        (st == "4/3/1").then_some(())
    });
    // The node with two of the pods: evicting both at once would break the budget.
    let placed = pods_by_node(&s, "app=web");
    let busy = ["dr0", "dr1", "dr2"].into_iter().find(|n| placed.iter().filter(|(m, _)| m == n).count() == 2).expect("a node with two pods").to_string();
    let out = s.kubectl(&["drain", &busy, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=60s"]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Cannot evict pod as it would violate the pod's disruption budget."), "the second eviction waited for the budget: {text}");
    assert!(text.contains(&format!("node/{busy} drained")), "{text}");
    // Cordoned, empty, and the four replicas run elsewhere.
    assert!(rows(&s.k(&["get", "node", &busy, "--no-headers"]))[0][1].contains("SchedulingDisabled"));
    wait_for("4 pods on the other nodes", T, || {
        let p = pods_by_node(&s, "app=web");
        (p.len() == 4 && p.iter().all(|(n, _)| *n != busy)).then_some(())
    });
}

#[test]
fn endpoints_follow_the_pods_a_service_selects() {
    let s = TestServer::start_cluster(&[]);
    let _nodes = SimNodes::start(&s, "ep", 2, &[]);
    s.k_stdin(
        &["apply", "-f", "-"],
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: c, image: nginx, ports: [{name: http, containerPort: 8080}]}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{name: web, port: 80, targetPort: http}]\n",
    );
    s.k(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    let ips = |s: &TestServer| {
        let mut v: Vec<String> =
            s.k(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].status.podIP}"]).split_whitespace().map(str::to_string).collect();
        v.sort();
        v
    };
    let want = ips(&s);
    // `kubectl get ep` shows IP:targetPort, the named port resolved per pod.
    let expect = want.iter().map(|ip| format!("{ip}:8080")).collect::<Vec<_>>().join(",");
    wait_for("endpoints with both pods", T, || (rows(&s.k(&["get", "ep", "web", "--no-headers"]))[0][1] == expect).then_some(()));
    let slice = s.k(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=web",
        "-o",
        "jsonpath={.items[0].ports[0].port} {.items[0].endpoints[*].conditions.ready}",
    ]);
    assert_eq!(slice, "8080 true true");
    // Scaling changes the endpoints.
    s.k(&["scale", "deploy", "web", "--replicas=3"]);
    s.k(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    wait_for("three endpoints", T, || (rows(&s.k(&["get", "ep", "web", "--no-headers"]))[0][1].split(',').count() == 3).then_some(()));
    let n = s.k(&["get", "endpointslices", "-l", "kubernetes.io/service-name=web", "-o", "jsonpath={.items[*].endpoints[*].addresses[0]}"]);
    assert_eq!(n.split_whitespace().count(), 3);
    // Deleting the service removes its endpoints.
    s.k(&["delete", "svc", "web"]);
    wait_for("endpoints removed", T, || (!s.kubectl(&["get", "ep", "web"]).status.success()).then_some(()));
    wait_for("slices removed", T, || s.k(&["get", "endpointslices", "-l", "kubernetes.io/service-name=web", "-o", "name"]).trim().is_empty().then_some(()));
}

#[test]
fn statefulset_claims_follow_the_retention_policy() {
    let s = TestServer::start_cluster(&[]);
    let _nodes = SimNodes::start(&s, "ret", 2, &[]);
    s.k_stdin(
        &["apply", "-f", "-"],
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: web}\nspec:\n  serviceName: web\n  replicas: 3\n  persistentVolumeClaimRetentionPolicy: {whenDeleted: Delete, whenScaled: Delete}\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: nginx, image: nginx}]}\n  volumeClaimTemplates:\n  - metadata: {name: www}\n    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n",
    );
    wait_for("web 3/3", T, || (rows(&s.k(&["get", "sts", "web", "--no-headers"]))[0][1] == "3/3").then_some(()));
    s.k(&["scale", "sts", "web", "--replicas=1"]);
    wait_for("claims of scaled-away ordinals deleted", T, || (s.k(&["get", "pvc", "-o", "name"]).trim() == "persistentvolumeclaim/www-web-0").then_some(()));
    s.k(&["delete", "sts", "web"]);
    wait_for("the last claim goes with the set", T, || s.k(&["get", "pvc", "-o", "name"]).trim().is_empty().then_some(()));
}

#[test]
fn nodes_beyond_the_cluster_cidr_get_cidr_not_available() {
    // One /24 in the cluster CIDR: the first node takes it, the second gets none.
    let s = TestServer::start_cluster(&["--cluster-cidr", "10.250.0.0/24"]);
    let node = |n: &str| format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {n}}}\n");
    s.k_stdin(&["create", "-f", "-"], &node("first"));
    wait_for("first node's podCIDR", Duration::from_secs(30), || {
        (s.k(&["get", "node", "first", "-o", "jsonpath={.spec.podCIDR}"]) == "10.250.0.0/24").then_some(())
    });
    s.k_stdin(&["create", "-f", "-"], &node("second"));
    let ev = wait_for("CIDRNotAvailable on the second node", Duration::from_secs(30), || {
        let out =
            s.k(&["get", "events", "--field-selector", "involvedObject.name=second", "-o", "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}"]);
        out.contains("CIDRNotAvailable").then_some(out)
    });
    assert!(ev.contains("CIDRNotAvailable: Node second status is now: CIDRNotAvailable"), "{ev}");
    assert_eq!(s.k(&["get", "node", "second", "-o", "jsonpath={.spec.podCIDR}"]), "");
    assert!(s.server_log().contains("no podCIDR left in the cluster CIDR"), "a clear log line");
}
