//! The scheduler's filters on simulated nodes: each test checks the FailedScheduling message
//! upstream 1.32 gives, and that a pod is placed once the cluster changes.

use std::time::Duration;

use r8s_tests::{SimNodes, TestServer, wait_for};

const T: Duration = Duration::from_secs(60);

fn node_of(s: &TestServer, pod: &str) -> String {
    s.k(&["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"])
}

/// Waits for the pod's FailedScheduling event and returns its message; checks the pod's
/// PodScheduled condition carries the same.
fn failed_scheduling(s: &TestServer, pod: &str) -> String {
    let msg = wait_for(&format!("FailedScheduling for {pod}"), T, || {
        let out =
            s.k(&["get", "events", "--field-selector", &format!("involvedObject.name={pod},reason=FailedScheduling"), "-o", "jsonpath={.items[*].message}"]);
        (!out.is_empty()).then_some(out)
    });
    let cond = s.k(&[
        "get",
        "pod",
        pod,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].status}/{.status.conditions[?(@.type==\"PodScheduled\")].reason}",
    ]);
    assert_eq!(cond, "False/Unschedulable");
    assert_eq!(s.k(&["get", "pod", pod, "-o", "jsonpath={.status.phase}"]), "Pending");
    msg
}

fn apply(s: &TestServer, yaml: &str) {
    s.k_stdin(&["apply", "-f", "-"], yaml);
}

#[test]
fn node_selector_waits_for_a_matching_node() {
    let s = TestServer::start_cluster(&[]);
    let _nodes = SimNodes::start(&s, "sel", 3, &[]);
    s.k(&["run", "picky", "--image=busybox", "--overrides={\"spec\":{\"nodeSelector\":{\"disk\":\"ssd\"}}}", "--", "sleep", "300"]);
    assert_eq!(
        failed_scheduling(&s, "picky"),
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );
    s.k(&["label", "node", "sel1", "disk=ssd"]);
    wait_for("picky scheduled on sel1", T, || (node_of(&s, "picky") == "sel1").then_some(()));
    wait_for("picky running", T, || (s.k(&["get", "pod", "picky", "-o", "jsonpath={.status.phase}"]) == "Running").then_some(()));
    let events = s.k(&["get", "events", "--field-selector", "involvedObject.name=picky,reason=Scheduled", "-o", "jsonpath={.items[*].message}"]);
    assert_eq!(events, "Successfully assigned default/picky to sel1");
}

#[test]
fn resource_fit_and_taints() {
    let s = TestServer::start_cluster(&[]);
    let _plain = SimNodes::start(&s, "small", 3, &["--cpu", "2", "--memory", "4Gi"]);
    let _tainted = SimNodes::start(&s, "cp", 3, &["--taints", "node-role.kubernetes.io/control-plane=:NoSchedule"]);
    apply(
        &s,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: big}\nspec:\n  containers:\n  - name: c\n    image: nginx\n    resources: {requests: {memory: 8Gi}}\n",
    );
    assert_eq!(
        failed_scheduling(&s, "big"),
        "0/6 nodes are available: 3 Insufficient memory, 3 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }. preemption: 0/6 nodes are available: 3 No preemption victims found for incoming pod, 3 Preemption is not helpful for scheduling."
    );
    // Tolerating the taint lets it go to the big nodes.
    apply(
        &s,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: big-ok}\nspec:\n  tolerations: [{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}]\n  containers:\n  - name: c\n    image: nginx\n    resources: {requests: {memory: 8Gi}}\n",
    );
    wait_for("big-ok scheduled on a cp node", T, || Some(node_of(&s, "big-ok")).filter(|n| n.starts_with("cp")));
    // Two cpu-hungry pods fill a small node's cpu; the third fits nowhere. (TaintToleration
    // runs before NodeAffinity, so the tainted nodes report their taint.)
    for i in 0..3 {
        apply(
            &s,
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: cpu{i}}}\nspec:\n  nodeSelector: {{kubernetes.io/hostname: small0}}\n  containers:\n  - name: c\n    image: nginx\n    resources: {{requests: {{cpu: 900m}}}}\n"
            ),
        );
    }
    wait_for("cpu0 and cpu1 bound", T, || (node_of(&s, "cpu0") == "small0" && node_of(&s, "cpu1") == "small0").then_some(()));
    assert_eq!(
        failed_scheduling(&s, "cpu2"),
        "0/6 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node affinity/selector, 3 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }. preemption: 0/6 nodes are available: 1 No preemption victims found for incoming pod, 5 Preemption is not helpful for scheduling."
    );
    // Freeing cpu retries the pending pod.
    s.k(&["delete", "pod", "cpu0"]);
    wait_for("cpu2 scheduled after cpu0 left", T, || (node_of(&s, "cpu2") == "small0").then_some(()));
}

#[test]
fn host_port_conflicts() {
    let s = TestServer::start_cluster(&[]);
    let _nodes = SimNodes::start(&s, "hp", 1, &[]);
    let pod = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers:\n  - name: c\n    image: nginx\n    ports: [{{containerPort: 80, hostPort: 8080}}]\n"
        )
    };
    apply(&s, &pod("first"));
    wait_for("first bound", T, || (node_of(&s, "first") == "hp0").then_some(()));
    apply(&s, &pod("second"));
    assert_eq!(
        failed_scheduling(&s, "second"),
        "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
    );
}

#[test]
fn required_anti_affinity_and_topology_spread() {
    let s = TestServer::start_cluster(&[]);
    let _nodes = SimNodes::start(&s, "aa", 2, &[]);
    let anti = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: solo}\nspec:\n  replicas: 3\n  selector: {matchLabels: {app: solo}}\n  template:\n    metadata: {labels: {app: solo}}\n    spec:\n      affinity:\n        podAntiAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n          - labelSelector: {matchLabels: {app: solo}}\n            topologyKey: kubernetes.io/hostname\n      containers: [{name: c, image: nginx}]\n";
    apply(&s, anti);
    let pending = wait_for("one solo pod pending", T, || {
        let out = s.k(&["get", "pods", "-l", "app=solo", "--field-selector", "status.phase=Pending", "-o", "jsonpath={.items[*].metadata.name}"]);
        let running = s.k(&["get", "pods", "-l", "app=solo", "--field-selector", "status.phase=Running", "-o", "name"]).lines().count();
        (running == 2 && out.split_whitespace().count() == 1).then(|| out.trim().to_string())
    });
    assert_eq!(
        failed_scheduling(&s, &pending),
        "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules. preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod."
    );
    s.k(&["delete", "deploy", "solo"]);

    // Topology spread: with aa1 cordoned, a second pod would skew aa0 by 2.
    s.k(&["cordon", "aa1"]);
    let spread = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: spread}}}}\nspec:\n  topologySpreadConstraints:\n  - maxSkew: 1\n    topologyKey: kubernetes.io/hostname\n    whenUnsatisfiable: DoNotSchedule\n    labelSelector: {{matchLabels: {{app: spread}}}}\n  containers: [{{name: c, image: nginx}}]\n"
        )
    };
    apply(&s, &spread("s1"));
    wait_for("s1 on aa0", T, || (node_of(&s, "s1") == "aa0").then_some(()));
    apply(&s, &spread("s2"));
    assert_eq!(
        failed_scheduling(&s, "s2"),
        "0/2 nodes are available: 1 node(s) didn't match pod topology spread constraints, 1 node(s) were unschedulable. preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling."
    );
    s.k(&["uncordon", "aa1"]);
    wait_for("s2 on aa1 after uncordon", T, || (node_of(&s, "s2") == "aa1").then_some(()));
}

#[test]
fn priority_preempts_lower_priority_pods() {
    let s = TestServer::start_cluster(&[]);
    let _nodes = SimNodes::start(&s, "pr", 1, &["--cpu", "2"]);
    apply(&s, "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: high}\nvalue: 1000\n");
    let pod = |name: &str, class: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  {class}containers:\n  - name: c\n    image: nginx\n    resources: {{requests: {{cpu: 900m}}}}\n"
        )
    };
    apply(&s, &pod("low1", ""));
    apply(&s, &pod("low2", ""));
    wait_for("low pods bound", T, || (node_of(&s, "low1") == "pr0" && node_of(&s, "low2") == "pr0").then_some(()));
    // Admission resolved the class into the pod's priority.
    apply(&s, &pod("vip", "priorityClassName: high\n  "));
    assert_eq!(s.k(&["get", "pod", "vip", "-o", "jsonpath={.spec.priority}"]), "1000");
    wait_for("vip scheduled after preempting a low pod", T, || (node_of(&s, "vip") == "pr0").then_some(()));
    let preempted = s.k(&["get", "events", "--field-selector", "reason=Preempted", "-o", "jsonpath={.items[*].involvedObject.name}"]);
    assert_eq!(preempted.split_whitespace().count(), 1, "exactly one victim: {preempted}");
    assert!(preempted.starts_with("low"), "{preempted}");
    // An unknown class is refused by admission.
    let err = s.k_err(&["run", "nope", "--image=nginx", "--overrides={\"spec\":{\"priorityClassName\":\"missing\"}}"]);
    assert!(err.contains("no PriorityClass with name missing was found"), "{err}");
}

#[test]
fn a_missing_claim_blocks_scheduling_until_it_exists() {
    let s = TestServer::start_cluster(&[]);
    let _nodes = SimNodes::start(&s, "vol", 2, &[]);
    apply(
        &s,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: db}\nspec:\n  containers: [{name: c, image: postgres}]\n  volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]\n",
    );
    assert_eq!(
        failed_scheduling(&s, "db"),
        "0/2 nodes are available: persistentvolumeclaim \"data\" not found. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
    );
    apply(
        &s,
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: pv1}\nspec: {capacity: {storage: 1Gi}, accessModes: [ReadWriteOnce], hostPath: {path: /tmp/pv1}}\n",
    );
    apply(
        &s,
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\nspec: {storageClassName: \"\", accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n",
    );
    wait_for("db scheduled once its claim exists", T, || Some(node_of(&s, "db")).filter(|n| n.starts_with("vol")));
}

#[test]
fn preemption_removes_a_lower_priority_pod_in_the_way_of_anti_affinity() {
    let s = TestServer::start_cluster(&[]);
    let _nodes = SimNodes::start(&s, "aff", 1, &[]);
    apply(&s, "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: high}\nvalue: 1000\n");
    apply(&s, "apiVersion: v1\nkind: Pod\nmetadata: {name: noisy, labels: {app: noisy}}\nspec:\n  containers: [{name: c, image: nginx}]\n");
    wait_for("noisy bound", T, || (node_of(&s, "noisy") == "aff0").then_some(()));
    apply(
        &s,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: quiet}\nspec:\n  priorityClassName: high\n  affinity:\n    podAntiAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - labelSelector: {matchLabels: {app: noisy}}\n        topologyKey: kubernetes.io/hostname\n  containers: [{name: c, image: nginx}]\n",
    );
    wait_for("quiet scheduled once noisy is preempted", T, || (node_of(&s, "quiet") == "aff0").then_some(()));
    let preempted = s.k(&["get", "events", "--field-selector", "reason=Preempted", "-o", "jsonpath={.items[*].involvedObject.name}"]);
    assert_eq!(preempted, "noisy");
}
