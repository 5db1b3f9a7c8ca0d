//! `kubectl get` tables compared in full with upstream's columns and cell rules.

use r8s_tests::{TestServer, normalize_ages};

fn apply(s: &TestServer, yaml: &str) {
    s.k_stdin(&["apply", "-f", "-"], yaml);
}

fn status(s: &TestServer, kind: &str, name: &str, patch: &str) {
    s.k(&["patch", kind, name, "--subresource=status", "--type=merge", "-p", patch]);
}

fn table(s: &TestServer, args: &[&str]) -> String {
    normalize_ages(&s.k(args)).trim_end().to_string()
}

#[test]
fn pod_table_statuses() {
    let s = TestServer::start();
    for (name, extra) in [
        ("run", ""),
        ("crash", ""),
        ("done", ""),
        ("init", "  initContainers:\n  - {name: i1, image: busybox}\n  - {name: i2, image: busybox}\n"),
        ("term", "  nodeName: node-1\n"),
    ] {
        apply(&s, &format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n{extra}  containers:\n  - {{name: c, image: busybox}}\n"));
    }
    status(
        &s,
        "pod",
        "run",
        r#"{"status":{"phase":"Running","podIP":"10.244.1.5","podIPs":[{"ip":"10.244.1.5"}],"conditions":[{"type":"Ready","status":"True"}],"containerStatuses":[{"name":"c","ready":true,"restartCount":0,"image":"busybox","imageID":"","state":{"running":{"startedAt":"2026-01-01T00:00:00Z"}}}]}}"#,
    );
    status(
        &s,
        "pod",
        "crash",
        r#"{"status":{"phase":"Running","containerStatuses":[{"name":"c","ready":false,"restartCount":3,"image":"busybox","imageID":"","state":{"waiting":{"reason":"CrashLoopBackOff"}}}]}}"#,
    );
    status(
        &s,
        "pod",
        "done",
        r#"{"status":{"phase":"Succeeded","containerStatuses":[{"name":"c","ready":false,"restartCount":0,"image":"busybox","imageID":"","state":{"terminated":{"exitCode":0,"reason":"Completed"}}}]}}"#,
    );
    status(
        &s,
        "pod",
        "init",
        r#"{"status":{"phase":"Pending","initContainerStatuses":[{"name":"i1","ready":true,"restartCount":0,"image":"busybox","imageID":"","state":{"terminated":{"exitCode":0,"reason":"Completed"}}},{"name":"i2","ready":false,"restartCount":0,"image":"busybox","imageID":"","state":{"running":{}}}]}}"#,
    );
    // A bound pod is deleted gracefully: it shows Terminating until its kubelet confirms.
    assert_eq!(s.k(&["delete", "pod", "term", "--wait=false"]).trim(), "pod \"term\" deleted");
    assert_eq!(
        table(&s, &["get", "pods"]),
        "NAME    READY   STATUS             RESTARTS   AGE\n\
         crash   0/1     CrashLoopBackOff   3          <age>\n\
         done    0/1     Completed          0          <age>\n\
         init    0/1     Init:1/2           0          <age>\n\
         run     1/1     Running            0          <age>\n\
         term    0/1     Terminating        0          <age>"
    );
    assert_eq!(
        table(&s, &["get", "pod", "run", "-o", "wide"]),
        "NAME   READY   STATUS    RESTARTS   AGE   IP           NODE     NOMINATED NODE   READINESS GATES\n\
         run    1/1     Running   0          <age> 10.244.1.5   <none>   <none>           <none>"
    );
    // The kubelet's confirmation (grace period 0) removes it.
    s.k(&["delete", "pod", "term", "--grace-period=0", "--force"]);
    assert!(!s.k(&["get", "pods", "-o", "name"]).contains("pod/term"));
    // A pod never bound to a node is deleted at once, whatever the grace period.
    assert_eq!(s.k(&["delete", "pod", "crash", "--wait=false"]).trim(), "pod \"crash\" deleted");
    assert!(!s.k(&["get", "pods", "-o", "name"]).contains("pod/crash"));
}

#[test]
fn workload_tables() {
    let s = TestServer::start();
    s.k(&["create", "deployment", "web", "--image=nginx:1.21.1", "--replicas=3"]);
    status(&s, "deploy", "web", r#"{"status":{"replicas":3,"readyReplicas":2,"updatedReplicas":3,"availableReplicas":2}}"#);
    assert_eq!(
        table(&s, &["get", "deploy"]),
        "NAME   READY   UP-TO-DATE   AVAILABLE   AGE\n\
         web    2/3     3            2           <age>"
    );
    assert_eq!(
        table(&s, &["get", "deploy", "-o", "wide"]),
        "NAME   READY   UP-TO-DATE   AVAILABLE   AGE   CONTAINERS   IMAGES         SELECTOR\n\
         web    2/3     3            2           <age> nginx        nginx:1.21.1   app=web"
    );
    apply(
        &s,
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: web-rs}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: rs}}\n  template:\n    metadata: {labels: {app: rs}}\n    spec: {containers: [{name: c, image: busybox}]}\n",
    );
    status(&s, "rs", "web-rs", r#"{"status":{"replicas":2,"readyReplicas":1}}"#);
    assert_eq!(
        table(&s, &["get", "rs"]),
        "NAME     DESIRED   CURRENT   READY   AGE\n\
         web-rs   2         2         1       <age>"
    );
}

#[test]
fn service_node_namespace_config_tables() {
    let s = TestServer::start();
    apply(&s, "apiVersion: v1\nkind: Service\nmetadata: {name: a-cip}\nspec:\n  clusterIP: 10.96.0.50\n  selector: {app: a}\n  ports: [{port: 80}]\n");
    apply(
        &s,
        "apiVersion: v1\nkind: Service\nmetadata: {name: b-np}\nspec:\n  type: NodePort\n  clusterIP: 10.96.0.51\n  selector: {app: b}\n  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]\n",
    );
    apply(&s, "apiVersion: v1\nkind: Service\nmetadata: {name: c-headless}\nspec:\n  clusterIP: None\n  selector: {app: c}\n  ports: [{port: 5432}]\n");
    apply(
        &s,
        "apiVersion: v1\nkind: Service\nmetadata: {name: d-lb}\nspec:\n  type: LoadBalancer\n  clusterIP: 10.96.0.52\n  ports: [{port: 443, nodePort: 30443, name: https}, {port: 80, nodePort: 30081, name: http}]\n",
    );
    apply(&s, "apiVersion: v1\nkind: Service\nmetadata: {name: e-ext}\nspec:\n  type: ExternalName\n  externalName: example.com\n");
    assert_eq!(
        table(&s, &["get", "svc"]),
        "NAME         TYPE           CLUSTER-IP   EXTERNAL-IP   PORT(S)                      AGE\n\
         a-cip        ClusterIP      10.96.0.50   <none>        80/TCP                       <age>\n\
         b-np         NodePort       10.96.0.51   <none>        80:30080/TCP                 <age>\n\
         c-headless   ClusterIP      None         <none>        5432/TCP                     <age>\n\
         d-lb         LoadBalancer   10.96.0.52   <pending>     443:30443/TCP,80:30081/TCP   <age>\n\
         e-ext        ExternalName   <none>       example.com   <none>                       <age>\n\
         kubernetes   ClusterIP      10.96.0.1    <none>        443/TCP                      <age>"
    );
    // A taken address or node port is refused with upstream's message.
    let err = String::from_utf8_lossy(
        &s.kubectl_stdin(
            &["apply", "-f", "-"],
            "apiVersion: v1\nkind: Service\nmetadata: {name: dup}\nspec:\n  type: NodePort\n  clusterIP: 10.96.0.50\n  ports: [{port: 80, nodePort: 30080}]\n",
        )
        .stderr,
    )
    .into_owned();
    assert!(err.contains("failed to allocate IP 10.96.0.50: provided IP is already allocated"), "{err}");
    assert!(err.contains("spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"), "{err}");
    let err = String::from_utf8_lossy(
        &s.kubectl_stdin(&["apply", "-f", "-"], "apiVersion: v1\nkind: Service\nmetadata: {name: far}\nspec:\n  clusterIP: 10.0.0.9\n  ports: [{port: 80}]\n")
            .stderr,
    )
    .into_owned();
    assert!(err.contains("provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12"), "{err}");
    // Deleting releases: the address can be taken again.
    s.k(&["delete", "svc", "a-cip"]);
    apply(&s, "apiVersion: v1\nkind: Service\nmetadata: {name: a-again}\nspec:\n  clusterIP: 10.96.0.50\n  ports: [{port: 80}]\n");

    for (name, ready, extra) in
        [("node-a", "True", "  labels: {node-role.kubernetes.io/control-plane: \"\"}\n"), ("node-b", "False", ""), ("node-c", "True", "")]
    {
        apply(&s, &format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n{extra}"));
        status(
            &s,
            "node",
            name,
            &format!(
                r#"{{"status":{{"conditions":[{{"type":"Ready","status":"{ready}"}}],"nodeInfo":{{"kubeletVersion":"v1.32.0-r8s","osImage":"Debian GNU/Linux 12 (bookworm)","kernelVersion":"6.1.0","containerRuntimeVersion":"containerd://1.6.20","machineID":"","systemUUID":"","bootID":"","kubeProxyVersion":"","operatingSystem":"linux","architecture":"amd64"}},"addresses":[{{"type":"InternalIP","address":"192.0.2.1"}}]}}}}"#
            ),
        );
    }
    s.k(&["cordon", "node-c"]);
    assert_eq!(
        table(&s, &["get", "nodes"]),
        "NAME     STATUS                     ROLES           AGE   VERSION\n\
         node-a   Ready                      control-plane   <age> v1.32.0-r8s\n\
         node-b   NotReady                   <none>          <age> v1.32.0-r8s\n\
         node-c   Ready,SchedulingDisabled   <none>          <age> v1.32.0-r8s"
    );
    assert_eq!(
        table(&s, &["get", "node", "node-a", "-o", "wide"]),
        "NAME     STATUS   ROLES           AGE   VERSION       INTERNAL-IP   EXTERNAL-IP   OS-IMAGE                         KERNEL-VERSION   CONTAINER-RUNTIME\n\
         node-a   Ready    control-plane   <age> v1.32.0-r8s   192.0.2.1     <none>        Debian GNU/Linux 12 (bookworm)   6.1.0            containerd://1.6.20"
    );

    s.k(&["create", "namespace", "team-a"]);
    assert!(table(&s, &["get", "ns", "team-a"]).ends_with("team-a   Active   <age>"));
    s.k(&["create", "configmap", "two", "--from-literal=a=1", "--from-literal=b=2"]);
    s.k(&["create", "secret", "generic", "creds", "--from-literal=user=u", "--from-literal=pass=p", "--from-literal=host=h"]);
    s.k(&["create", "secret", "docker-registry", "reg", "--docker-server=r.example", "--docker-username=u", "--docker-password=p"]);
    assert_eq!(
        table(&s, &["get", "cm"]),
        "NAME   DATA   AGE\n\
         two    2      <age>"
    );
    assert_eq!(
        table(&s, &["get", "secrets"]),
        "NAME    TYPE                             DATA   AGE\n\
         creds   Opaque                           3      <age>\n\
         reg     kubernetes.io/dockerconfigjson   1      <age>"
    );
}

#[test]
fn event_tables_core_and_events_api() {
    let s = TestServer::start();
    let now = chrono_like_now();
    apply(
        &s,
        &format!(
            "apiVersion: v1\nkind: Event\nmetadata: {{name: web.1}}\ninvolvedObject: {{kind: Deployment, name: web, namespace: default, apiVersion: apps/v1}}\nreason: ScalingReplicaSet\nmessage: Scaled up replica set web-7d4b9 to 3\ntype: Normal\nsource: {{component: deployment-controller}}\nfirstTimestamp: \"{now}\"\nlastTimestamp: \"{now}\"\ncount: 1\n"
        ),
    );
    assert_eq!(
        table(&s, &["get", "events"]),
        "LAST SEEN   TYPE     REASON              OBJECT           MESSAGE\n\
         <age>       Normal   ScalingReplicaSet   deployment/web   Scaled up replica set web-7d4b9 to 3"
    );
    // The same event through events.k8s.io/v1 (converted from the stored core Event).
    let ev = s.k(&["get", "events.v1.events.k8s.io", "web.1", "-o", "jsonpath={.regarding.name} {.note} {.reportingController}{.deprecatedSource.component}"]);
    assert_eq!(ev, "web Scaled up replica set web-7d4b9 to 3 deployment-controller");
}

fn chrono_like_now() -> String {
    let out = std::process::Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
