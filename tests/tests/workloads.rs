//! Workload controllers on simulated nodes, driven by the real kubectl: the Deployment flows
//! of seeds 000 and 002, garbage collection and namespace deletion.

use std::time::Duration;

use r8s_tests::{SimNodes, TestServer, rows, wait_for};

const T: Duration = Duration::from_secs(60);

fn running_pods(s: &TestServer, ns: &str, selector: &str) -> Vec<Vec<String>> {
    let out = s.k(&["get", "pods", "-n", ns, "-l", selector, "--no-headers", "-o", "wide"]);
    rows(&out).into_iter().filter(|r| r.get(2).map(String::as_str) == Some("Running") && r.get(1).map(String::as_str) == Some("1/1")).collect()
}

fn history(s: &TestServer, deploy: &str) -> Vec<String> {
    s.k(&["rollout", "history", "deploy", deploy]).lines().map(|l| l.trim_end().to_string()).filter(|l| !l.is_empty()).collect()
}

#[test]
fn deployment_flows_of_the_seeds() {
    let s = TestServer::start_cluster(&[]);
    let _nodes = SimNodes::start(&s, "node", 3, &[]);
    s.k(&["create", "deployment", "nginx-app", "--image=nginx:1.21.1", "--replicas=3", "--port=80"]);
    s.k(&["rollout", "status", "deploy/nginx-app", "--timeout=60s"]);
    let get = s.k(&["get", "deploy", "nginx-app", "--no-headers"]);
    assert_eq!(rows(&get)[0][..4], ["nginx-app", "3/3", "3", "3"], "{get}");
    // Three Running pods, spread over the three nodes (default topology spreading).
    let pods = wait_for("3 running pods", T, || Some(running_pods(&s, "default", "app=nginx-app")).filter(|p| p.len() == 3));
    let mut nodes: Vec<&str> = pods.iter().map(|r| r[6].as_str()).collect();
    nodes.sort();
    assert_eq!(nodes, ["node0", "node1", "node2"]);
    assert!(pods.iter().all(|r| r[5].starts_with("100.64.")), "pod IPs come from the simulator's own pool: {pods:?}");
    // Simulated nodes need no podCIDR (node IPAM leaves them alone).
    assert_eq!(s.k(&["get", "nodes", "-o", "jsonpath={.items[*].spec.podCIDR}"]), "");
    // Simulated nodes have no kubelet to ask for logs: a clear error, and no packet sent.
    let out = s.kubectl(&["logs", &pods[0][0]]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("is simulated (r8s sim-nodes)"), "{err}");

    // Scale down and up (seed 002).
    s.k(&["scale", "deployment", "nginx-app", "--replicas=1"]);
    wait_for("1 pod left", T, || Some(()).filter(|_| s.k(&["get", "pods", "-l", "app=nginx-app", "--no-headers"]).lines().count() == 1));
    s.k(&["rollout", "status", "deploy/nginx-app", "--timeout=60s"]);
    assert_eq!(rows(&s.k(&["get", "deploy", "nginx-app", "--no-headers"]))[0][1], "1/1");
    s.k(&["scale", "deployment", "nginx-app", "--replicas=3"]);
    s.k(&["rollout", "status", "deploy/nginx-app", "--timeout=60s"]);
    wait_for("3 running pods again", T, || Some(()).filter(|_| running_pods(&s, "default", "app=nginx-app").len() == 3));

    // set image --record, twice (seed 000).
    s.k(&["set", "image", "deploy", "nginx-app", "nginx=nginx:1.13.0-alpine", "--record"]);
    s.k(&["rollout", "status", "deploy/nginx-app", "--timeout=60s"]);
    s.k(&["set", "image", "deploy", "nginx-app", "nginx=nginx:1.10.2-alpine", "--record"]);
    s.k(&["rollout", "status", "deploy/nginx-app", "--timeout=60s"]);
    let c13 = "kubectl set image deploy nginx-app nginx=nginx:1.13.0-alpine --record=true";
    let c10 = "kubectl set image deploy nginx-app nginx=nginx:1.10.2-alpine --record=true";
    assert_eq!(
        history(&s, "nginx-app"),
        ["deployment.apps/nginx-app", "REVISION  CHANGE-CAUSE", "1         <none>", &format!("2         {c13}"), &format!("3         {c10}")]
    );
    // The running pods are the new template's.
    wait_for("pods of revision 3 only", T, || {
        let images = s.k(&["get", "pods", "-l", "app=nginx-app", "-o", "jsonpath={.items[*].spec.containers[0].image}"]);
        Some(()).filter(|_| images.split_whitespace().count() == 3 && images.split_whitespace().all(|i| i == "nginx:1.10.2-alpine"))
    });

    // Undo: revision 2's ReplicaSet becomes revision 4 (upstream 1.32 numbering).
    assert!(s.k(&["rollout", "undo", "deploy", "nginx-app"]).contains("rolled back"));
    s.k(&["rollout", "status", "deploy/nginx-app", "--timeout=60s"]);
    assert_eq!(
        history(&s, "nginx-app"),
        ["deployment.apps/nginx-app", "REVISION  CHANGE-CAUSE", "1         <none>", &format!("3         {c10}"), &format!("4         {c13}")]
    );
    assert_eq!(s.k(&["get", "deploy", "nginx-app", "-o", "jsonpath={.spec.template.spec.containers[0].image}"]), "nginx:1.13.0-alpine");
    // Undo to a named revision.
    s.k(&["rollout", "undo", "deploy", "nginx-app", "--to-revision=3"]);
    s.k(&["rollout", "status", "deploy/nginx-app", "--timeout=60s"]);
    assert_eq!(
        history(&s, "nginx-app"),
        ["deployment.apps/nginx-app", "REVISION  CHANGE-CAUSE", "1         <none>", &format!("4         {c13}"), &format!("5         {c10}")]
    );
    // Three ReplicaSets (one per template), only the current one scaled up.
    let rs = rows(&s.k(&["get", "rs", "-l", "app=nginx-app", "--no-headers"]));
    assert_eq!(rs.len(), 3, "{rs:?}");
    let mut desired: Vec<&str> = rs.iter().map(|r| r[1].as_str()).collect();
    desired.sort();
    assert_eq!(desired, ["0", "0", "3"]);
    let rev = s.k(&["get", "deploy", "nginx-app", "-o", "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}"]);
    assert_eq!(rev, "5");
    // describe shows the controller's events in upstream's wording.
    let describe = s.k(&["describe", "deploy", "nginx-app"]);
    assert!(
        describe.contains("ScalingReplicaSet") && describe.contains("deployment-controller") && describe.contains("Scaled up replica set nginx-app-"),
        "{describe}"
    );
    assert!(describe.contains("NewReplicaSetAvailable"), "{describe}");
}

#[test]
fn deleting_a_deployment_cascades_unless_orphaned() {
    let s = TestServer::start_cluster(&[]);
    let _nodes = SimNodes::start(&s, "gc", 2, &[]);
    s.k(&["create", "deployment", "web", "--image=nginx", "--replicas=2"]);
    s.k(&["create", "deployment", "keep", "--image=nginx", "--replicas=2"]);
    s.k(&["create", "deployment", "fg", "--image=nginx", "--replicas=2"]);
    s.k(&["rollout", "status", "deploy/fg", "--timeout=60s"]);
    // Foreground: kubectl waits until the dependents are gone, then the owner.
    s.k(&["delete", "deployment", "fg", "--cascade=foreground", "--timeout=60s"]);
    assert!(s.k(&["get", "rs,pods", "-l", "app=fg", "--no-headers"]).trim().is_empty());
    assert!(!s.kubectl(&["get", "deploy", "fg"]).status.success());
    s.k(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    s.k(&["rollout", "status", "deploy/keep", "--timeout=60s"]);
    // Background deletion: the ReplicaSet and its pods go too.
    s.k(&["delete", "deployment", "web"]);
    wait_for("web's ReplicaSets and pods collected", T, || {
        let rs = s.k(&["get", "rs", "-l", "app=web", "--no-headers"]);
        let pods = s.k(&["get", "pods", "-l", "app=web", "--no-headers"]);
        (rs.trim().is_empty() && pods.trim().is_empty()).then_some(())
    });
    // Orphan: the ReplicaSet and pods stay, without an owner.
    s.k(&["delete", "deployment", "keep", "--cascade=orphan"]);
    wait_for("deployment keep gone", T, || (!s.kubectl(&["get", "deploy", "keep"]).status.success()).then_some(()));
    let owners = wait_for("ReplicaSet released", T, || {
        let o = s.k(&["get", "rs", "-l", "app=keep", "-o", "jsonpath={.items[*].metadata.ownerReferences}"]);
        o.trim().is_empty().then_some(o)
    });
    assert!(owners.is_empty());
    assert_eq!(s.k(&["get", "rs", "-l", "app=keep", "--no-headers"]).lines().count(), 1);
    assert_eq!(running_pods(&s, "default", "app=keep").len(), 2);
}

#[test]
fn deleting_a_namespace_empties_it() {
    let s = TestServer::start_cluster(&[]);
    let _nodes = SimNodes::start(&s, "ns", 1, &[]);
    s.k(&["create", "namespace", "team"]);
    // The ServiceAccount controller gives every namespace its default account.
    wait_for("default ServiceAccount in team", T, || s.kubectl(&["get", "sa", "default", "-n", "team"]).status.success().then_some(()));
    s.k(&["create", "deployment", "app", "--image=nginx", "--replicas=2", "-n", "team"]);
    s.k(&["create", "configmap", "cfg", "--from-literal=a=b", "-n", "team"]);
    s.k(&["rollout", "status", "deploy/app", "-n", "team", "--timeout=60s"]);
    s.k(&["delete", "namespace", "team", "--wait=false"]);
    let phase = String::from_utf8_lossy(&s.kubectl(&["get", "ns", "team", "-o", "jsonpath={.status.phase}", "--ignore-not-found"]).stdout).into_owned();
    // Terminating until emptied (it may already be gone on a fast machine).
    assert!(phase == "Terminating" || phase.is_empty(), "{phase}");
    wait_for("namespace team removed", T, || (!s.kubectl(&["get", "ns", "team"]).status.success()).then_some(()));
    let left = s.k(&["get", "pods,rs,deploy,cm", "-n", "team", "--no-headers", "--ignore-not-found"]);
    assert!(left.trim().is_empty(), "{left}");
}

#[test]
fn custom_resources_are_garbage_collected_with_their_owners() {
    let s = TestServer::start_cluster(&[]);
    s.k_stdin(&["create", "-f", "-"], &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/crd.yaml")).unwrap());
    let crd = s.k(&[
        "get",
        "crd",
        "-o",
        "jsonpath={.items[0].spec.names.kind} {.items[0].spec.group} {.items[0].spec.versions[0].name} {.items[0].spec.names.plural}",
    ]);
    let parts: Vec<&str> = crd.split_whitespace().collect();
    let (kind, group, version, plural) = (parts[0], parts[1], parts[2], parts[3]);
    wait_for("the CRD served", T, || s.kubectl(&["get", plural]).status.success().then_some(()));
    // A ConfigMap owns a custom resource; a custom resource owns a ConfigMap.
    s.k(&["create", "configmap", "owner"]);
    let cm_uid = s.k(&["get", "cm", "owner", "-o", "jsonpath={.metadata.uid}"]);
    let cr = format!(
        "apiVersion: {group}/{version}\nkind: {kind}\nmetadata:\n  name: child\n  ownerReferences: [{{apiVersion: v1, kind: ConfigMap, name: owner, uid: {cm_uid}}}]\nspec: {{cronSpec: \"* * * * *\"}}\n"
    );
    s.k_stdin(&["create", "-f", "-"], &cr);
    let cr_uid = s.k(&["get", plural, "child", "-o", "jsonpath={.metadata.uid}"]);
    let dep = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: grandchild\n  ownerReferences: [{{apiVersion: {group}/{version}, kind: {kind}, name: child, uid: {cr_uid}}}]\n"
    );
    s.k_stdin(&["create", "-f", "-"], &dep);
    s.k(&["delete", "cm", "owner"]);
    wait_for("custom resource collected", T, || (!s.kubectl(&["get", plural, "child"]).status.success()).then_some(()));
    wait_for("its dependent collected", T, || (!s.kubectl(&["get", "cm", "grandchild"]).status.success()).then_some(()));
}

#[test]
fn a_terminating_namespace_reports_what_holds_it() {
    let s = TestServer::start_cluster(&[]);
    s.k(&["create", "namespace", "held"]);
    s.k_stdin(
        &["create", "-n", "held", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: pinned, finalizers: [example.com/hold]}\ndata: {a: b}\n",
    );
    s.k(&["delete", "namespace", "held", "--wait=false"]);
    let cond = |t: &str| {
        s.k(&["get", "ns", "held", "-o", &format!("jsonpath={{.status.conditions[?(@.type==\"{t}\")].status}}/{{.status.conditions[?(@.type==\"{t}\")].reason}}/{{.status.conditions[?(@.type==\"{t}\")].message}}")])
    };
    wait_for("the finalizer reported", T, || {
        (cond("NamespaceFinalizersRemaining")
            == "True/SomeFinalizersRemain/Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances")
            .then_some(())
    });
    assert_eq!(cond("NamespaceContentRemaining"), "True/SomeResourcesRemain/Some resources are remaining: configmaps. has 1 resource instances");
    assert_eq!(cond("NamespaceDeletionDiscoveryFailure"), "False/ResourcesDiscovered/All resources successfully discovered");
    assert_eq!(s.k(&["get", "ns", "held", "-o", "jsonpath={.status.phase}"]), "Terminating");
    s.k(&["patch", "configmap", "pinned", "-n", "held", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
    wait_for("namespace held removed", T, || (!s.kubectl(&["get", "ns", "held"]).status.success()).then_some(()));
}
