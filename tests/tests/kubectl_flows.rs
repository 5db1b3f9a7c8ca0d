//! The real kubectl against `r8s server`: the flows of issue 3's first acceptance line.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use r8s_tests::{TestServer, normalize_ages, wait_for};
use serde_json::Value;

fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

#[test]
fn api_resources_and_namespaces() {
    let s = TestServer::start();
    let all = s.k(&["api-resources"]);
    let header = all.lines().next().unwrap();
    assert_eq!(header.split_whitespace().collect::<Vec<_>>(), vec!["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]);
    for want in [
        ["pods", "po", "v1", "true", "Pod"],
        ["deployments", "deploy", "apps/v1", "true", "Deployment"],
        ["horizontalpodautoscalers", "hpa", "autoscaling/v2", "true", "HorizontalPodAutoscaler"],
        ["customresourcedefinitions", "crd,crds", "apiextensions.k8s.io/v1", "false", "CustomResourceDefinition"],
        ["events", "ev", "events.k8s.io/v1", "true", "Event"],
        ["leases", "", "coordination.k8s.io/v1", "true", "Lease"],
    ] {
        let want: Vec<&str> = want.iter().copied().filter(|w| !w.is_empty()).collect();
        assert!(all.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == want), "missing {want:?} in\n{all}");
    }
    let cluster = s.k(&["api-resources", "--namespaced=false"]);
    assert!(cluster.lines().any(|l| l.starts_with("nodes ")), "{cluster}");
    assert!(cluster.lines().any(|l| l.starts_with("namespaces ")), "{cluster}");
    assert!(!cluster.lines().any(|l| l.starts_with("pods ")), "{cluster}");
    let ns = normalize_ages(&s.k(&["get", "ns"]));
    assert_eq!(
        ns.trim_end(),
        "NAME              STATUS   AGE\ndefault           Active   <age>\nkube-node-lease   Active   <age>\nkube-public       Active   <age>\nkube-system       Active   <age>"
    );
    // The kubernetes Service holds the first service IP.
    assert_eq!(s.k(&["get", "svc", "kubernetes", "-o", "jsonpath={.spec.clusterIP}"]), "10.96.0.1");
}

#[test]
fn deployment_workflow_of_the_seeds() {
    let s = TestServer::start();
    let yaml = s.k(&["create", "deployment", "my-nginx", "--image=nginx:1.21.1", "--port=80", "-o", "yaml", "--dry-run=client"]);
    assert_eq!(s.k_stdin(&["apply", "-f", "-"], &yaml).trim(), "deployment.apps/my-nginx created");
    assert_eq!(s.k(&["run", "mybusybox", "--image=busybox", "--command", "--", "sleep", "300"]).trim(), "pod/mybusybox created");
    assert_eq!(s.k(&["label", "pod", "mybusybox", "app666=001"]).trim(), "pod/mybusybox labeled");
    let got = s.k(&["get", "pod", "-l", "app666=001", "-o", "name"]);
    assert_eq!(got.trim(), "pod/mybusybox");
    assert_eq!(s.k(&["label", "pod", "mybusybox", "app666-"]).trim(), "pod/mybusybox unlabeled");
    assert_eq!(s.k(&["get", "pod", "-l", "app666=001", "-o", "name"]).trim(), "");
    assert_eq!(s.k(&["expose", "deployment", "my-nginx", "--port=80", "--target-port=80", "--type=NodePort"]).trim(), "service/my-nginx exposed");
    let np: u32 = s.k(&["get", "svc", "my-nginx", "-o", "jsonpath={.spec.ports[0].nodePort}"]).parse().unwrap();
    assert!((30000..=32767).contains(&np));
    assert_eq!(s.k(&["scale", "deployment", "my-nginx", "--replicas=3"]).trim(), "deployment.apps/my-nginx scaled");
    assert_eq!(s.k(&["get", "deploy", "my-nginx", "-o", "jsonpath={.spec.replicas}"]), "3");
    assert_eq!(s.k(&["set", "image", "deploy", "my-nginx", "nginx=nginx:1.13.0-alpine"]).trim(), "deployment.apps/my-nginx image updated");
    assert_eq!(s.k(&["get", "deploy", "my-nginx", "-o", "jsonpath={.spec.template.spec.containers[0].image}"]), "nginx:1.13.0-alpine");
    // set image changed the template: generation moved on.
    assert_eq!(s.k(&["get", "deploy", "my-nginx", "-o", "jsonpath={.metadata.generation}"]), "3");
    let all = normalize_ages(&s.k(&["get", "all"]));
    assert!(all.contains("pod/mybusybox   0/1     Pending   0          <age>"), "{all}");
    assert!(all.contains("deployment.apps/my-nginx   0/3     0            0           <age>"), "{all}");
    assert!(all.lines().any(|l| l.starts_with("service/my-nginx ") && l.contains("NodePort") && l.contains(&format!("80:{np}/TCP"))), "{all}");
    let del = s.k(&["delete", "deployment,services", "-l", "app=my-nginx"]);
    assert_eq!(del.trim(), "deployment.apps \"my-nginx\" deleted\nservice \"my-nginx\" deleted");
    assert!(s.k(&["get", "deploy,svc", "-l", "app=my-nginx", "-o", "name"]).trim().is_empty());
}

#[test]
fn apply_directory_tree_twice_reports_unchanged() {
    let s = TestServer::start();
    let dir = fixtures().join("tree");
    let first = s.k(&["apply", "-R", "-f", dir.to_str().unwrap()]);
    let mut lines: Vec<&str> = first.lines().collect();
    lines.sort();
    assert_eq!(lines, vec!["configmap/app-config created", "deployment.apps/tree-web created", "service/tree-svc created", "serviceaccount/tree-sa created"]);
    let second = s.k(&["apply", "-R", "-f", dir.to_str().unwrap()]);
    let mut lines: Vec<&str> = second.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        vec!["configmap/app-config unchanged", "deployment.apps/tree-web unchanged", "service/tree-svc unchanged", "serviceaccount/tree-sa unchanged"]
    );
}

#[test]
fn reapply_after_removing_a_container_removes_it() {
    let s = TestServer::start();
    let manifest = std::fs::read_to_string(fixtures().join("tree/sub/deploy.yaml")).unwrap();
    s.k_stdin(&["apply", "-f", "-"], &manifest);
    // Another writer changes the replica count; apply must keep it (three-way merge).
    s.k(&["scale", "deploy", "tree-web", "--replicas=4"]);
    let without_sidecar: String = manifest.split("      - name: sidecar").next().unwrap().to_string();
    assert_eq!(s.k_stdin(&["apply", "-f", "-"], &without_sidecar).trim(), "deployment.apps/tree-web configured");
    assert_eq!(s.k(&["get", "deploy", "tree-web", "-o", "jsonpath={.spec.template.spec.containers[*].name}"]), "web");
    assert_eq!(s.k(&["get", "deploy", "tree-web", "-o", "jsonpath={.spec.replicas}"]), "2");
    assert_eq!(s.k(&["get", "deploy", "tree-web", "-o", "jsonpath={.spec.template.spec.containers[0].env[0].value}"]), "production");
}

#[test]
fn watch_sees_a_later_create() {
    let s = TestServer::start();
    s.k(&["run", "first", "--image=busybox", "--", "sleep", "1"]);
    let mut child = Command::new("kubectl")
        .args(["get", "po", "-w"])
        .env("KUBECONFIG", &s.kubeconfig)
        .env("KUBECACHEDIR", &s.cache_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let mut next_row = |prefix: &str| loop {
        let l = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| panic!("no watch line for {prefix}; got {seen:?}"));
        if l.starts_with(prefix) {
            return l;
        }
        seen.push(l);
    };
    // The initial list (with its header) comes first; then the watch delivers the new pod.
    next_row("first ");
    s.k(&["run", "watched", "--image=busybox", "--", "sleep", "1"]);
    let line = next_row("watched ");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(normalize_ages(&line), "watched   0/1     Pending   0          <age>");
}

#[test]
fn explain_and_output_formats() {
    let s = TestServer::start();
    let explain = s.k(&["explain", "pod.spec"]);
    assert!(explain.starts_with("KIND:       Pod\nVERSION:    v1\n\nFIELD: spec <PodSpec>"), "{explain}");
    assert!(explain.contains("  containers\t<[]Container> -required-"), "{explain}");
    let deploy = s.k(&["explain", "deployment.spec.strategy"]);
    assert!(deploy.contains("GROUP:      apps"), "{deploy}");
    s.k(&["create", "configmap", "c1", "--from-literal=k=v"]);
    let yaml = s.k(&["get", "cm", "c1", "-o", "yaml"]);
    assert!(yaml.starts_with("apiVersion: v1\ndata:\n  k: v\nkind: ConfigMap\nmetadata:\n  creationTimestamp: "), "{yaml}");
    let json: serde_json::Value = serde_json::from_str(&s.k(&["get", "cm", "c1", "-o", "json"])).unwrap();
    assert_eq!(json["data"]["k"], "v");
    assert!(json["metadata"]["uid"].as_str().unwrap().len() == 36);
    assert_eq!(s.k(&["get", "cm", "-o", "name"]).lines().collect::<Vec<_>>(), vec!["configmap/c1"]);
    assert_eq!(s.k(&["get", "cm", "c1", "-o", "jsonpath={.data.k}"]), "v");
    s.k(&["run", "p1", "--image=busybox"]);
    let wide = normalize_ages(&s.k(&["get", "po", "-o", "wide"]));
    assert_eq!(
        wide.trim_end(),
        "NAME   READY   STATUS    RESTARTS   AGE   IP       NODE     NOMINATED NODE   READINESS GATES\np1     0/1     Pending   0          <age> <none>   <none>   <none>           <none>"
    );
}

#[test]
fn edit_through_sed() {
    let s = TestServer::start();
    s.k(&["create", "deployment", "ed", "--image=nginx:1.21.1"]);
    let out = Command::new("kubectl")
        .args(["edit", "deploy", "ed"])
        .env("KUBECONFIG", &s.kubeconfig)
        .env("KUBECACHEDIR", &s.cache_dir)
        .env("EDITOR", "sed -i s/nginx:1.21.1/nginx:1.22.0/")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "deployment.apps/ed edited");
    assert_eq!(s.k(&["get", "deploy", "ed", "-o", "jsonpath={.spec.template.spec.containers[0].image}"]), "nginx:1.22.0");
}

#[test]
fn patch_in_all_three_types() {
    let s = TestServer::start();
    s.k(&["create", "deployment", "pt", "--image=nginx:1.21.1"]);
    assert_eq!(
        s.k(&["patch", "deploy", "pt", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"extra","image":"busybox"}]}}}}"#]).trim(),
        "deployment.apps/pt patched"
    );
    // Strategic merge: containers merge by name, so both are there.
    assert_eq!(s.k(&["get", "deploy", "pt", "-o", "jsonpath={.spec.template.spec.containers[*].name}"]), "nginx extra");
    s.k(&["patch", "deploy", "pt", "--type=merge", "-p", r#"{"metadata":{"labels":{"tier":"web"}},"spec":{"replicas":2}}"#]);
    assert_eq!(s.k(&["get", "deploy", "pt", "-o", "jsonpath={.metadata.labels.tier} {.spec.replicas}"]), "web 2");
    s.k(&[
        "patch",
        "deploy",
        "pt",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/template/spec/containers/1"},{"op":"replace","path":"/spec/replicas","value":5}]"#,
    ]);
    assert_eq!(s.k(&["get", "deploy", "pt", "-o", "jsonpath={.spec.template.spec.containers[*].name} {.spec.replicas}"]), "nginx 5");
    // Merge patch replaces lists: the JSON merge patch of containers drops the others.
    s.k(&["patch", "deploy", "pt", "--type=merge", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"only","image":"busybox"}]}}}}"#]);
    assert_eq!(s.k(&["get", "deploy", "pt", "-o", "jsonpath={.spec.template.spec.containers[*].name}"]), "only");
    // A failing JSON patch test op changes nothing.
    let err = s.k_err(&[
        "patch",
        "deploy",
        "pt",
        "--type=json",
        "-p",
        r#"[{"op":"test","path":"/spec/replicas","value":9},{"op":"replace","path":"/spec/replicas","value":1}]"#,
    ]);
    assert!(err.contains("failed at path '/spec/replicas'"), "{err}");
    assert_eq!(s.k(&["get", "deploy", "pt", "-o", "jsonpath={.spec.replicas}"]), "5");
}

#[test]
fn server_side_apply_with_two_managers() {
    let s = TestServer::start();
    let manifest = |replicas: u32, with_label: bool| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: ssa\n{}spec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: ssa}}}}\n  template:\n    metadata: {{labels: {{app: ssa}}}}\n    spec:\n      containers:\n      - name: c\n        image: nginx:1.21.1\n",
            if with_label { "  labels: {team: a}\n" } else { "" }
        )
    };
    assert_eq!(s.k_stdin(&["apply", "--server-side", "-f", "-"], &manifest(2, true)).trim(), "deployment.apps/ssa serverside-applied");
    // A second manager takes replicas with a forced apply of its own.
    let other = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: ssa\nspec:\n  replicas: 4\n";
    let out = s.kubectl_stdin(&["apply", "--server-side", "--field-manager=other", "-f", "-"], other);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Apply failed with 1 conflict: conflict with \"kubectl\" using apps/v1: .spec.replicas"), "{err}");
    assert_eq!(s.k(&["get", "deploy", "ssa", "-o", "jsonpath={.spec.replicas}"]), "2");
    s.k_stdin(&["apply", "--server-side", "--field-manager=other", "--force-conflicts", "-f", "-"], other);
    assert_eq!(s.k(&["get", "deploy", "ssa", "-o", "jsonpath={.spec.replicas}"]), "4");
    // The first manager re-applies without the label and without replicas: the label goes
    // (only it owned it); replicas stay (now owned by "other").
    let mut m = manifest(2, false);
    m = m.replace("  replicas: 2\n", "");
    s.k_stdin(&["apply", "--server-side", "-f", "-"], &m);
    assert_eq!(s.k(&["get", "deploy", "ssa", "-o", "jsonpath={.metadata.labels}"]), "");
    assert_eq!(s.k(&["get", "deploy", "ssa", "-o", "jsonpath={.spec.replicas}"]), "4");
    let mf = s.k(&["get", "deploy", "ssa", "--show-managed-fields", "-o", "jsonpath={.metadata.managedFields[*].manager}"]);
    assert_eq!(mf, "other kubectl");
}

/// A `kind: List` file (what `kubectl get -o yaml` writes) applies: kubectl validates it
/// against OpenAPI v2, read as protobuf. An unknown field in an item is still caught.
#[test]
fn apply_a_list_file_and_move_from_client_side_to_server_side_apply() {
    let s = TestServer::start();
    let list = r#"{"apiVersion":"v1","kind":"List","items":[
        {"apiVersion":"v1","kind":"Service","metadata":{"name":"web"},"spec":{"selector":{"app":"web"},"ports":[{"port":80}]}},
        {"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"web"},"data":{"a":"1"}}]}"#;
    let out = s.k_stdin(&["apply", "-f", "-"], list);
    assert_eq!(out.trim(), "service/web created\nconfigmap/web created");
    let bad = list.replace("\"selector\"", "\"selectorz\"");
    let out = s.kubectl_stdin(&["apply", "-f", "-"], &bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("unknown field \"selectorz\" in io.k8s.api.core.v1.ServiceSpec"), "{err}");
    // Client-side apply, then server-side: kubectl moves the ownership to its SSA manager,
    // and the port applied without a protocol is still one port (the key's default, TCP).
    let out = s.k_stdin(&["apply", "--server-side", "-f", "-"], list);
    assert_eq!(out.trim(), "service/web serverside-applied\nconfigmap/web serverside-applied");
    let mf = s.k(&["get", "svc", "web", "--show-managed-fields", "-o", "jsonpath={range .metadata.managedFields[*]}{.manager}/{.operation} {end}"]);
    assert_eq!(mf.trim(), "kubectl-last-applied/Apply kubectl/Apply");
    assert_eq!(s.k(&["get", "svc", "web", "-o", "jsonpath={.spec.ports}"]), r#"[{"port":80,"protocol":"TCP","targetPort":80}]"#);
    // Applying the same again changes nothing, not even the resourceVersion.
    let rv = s.k(&["get", "svc", "web", "-o", "jsonpath={.metadata.resourceVersion}"]);
    s.k_stdin(&["apply", "--server-side", "-f", "-"], list);
    assert_eq!(s.k(&["get", "svc", "web", "-o", "jsonpath={.metadata.resourceVersion}"]), rv);
}

/// `kubectl create ingress` sends protobuf, where an IngressRule's embedded value is a field of
/// its own; the Ingress without a class gets the default class, as upstream's admission does.
#[test]
fn create_ingress_gets_the_default_class() {
    let s = TestServer::start_cluster(&[]);
    wait_for("the r8s IngressClass", Duration::from_secs(30), || (!s.k(&["get", "ingressclass", "--no-headers"]).is_empty()).then_some(()));
    s.k(&["create", "ingress", "web", "--rule=a.example/*=web:80,tls=a-tls"]);
    s.k(&["create", "ingress", "other", "--class=nginx", "--rule=c.example/*=web:80"]);
    let rows = normalize_ages(&s.k(&["get", "ingress"]));
    assert_eq!(
        rows,
        "NAME    CLASS   HOSTS       ADDRESS   PORTS     AGE\nother   nginx   c.example             80        <age>\nweb     r8s     a.example             80, 443   <age>"
    );
    assert_eq!(s.k(&["get", "ingress", "web", "-o", "jsonpath={.spec.rules[0].http.paths[0].backend.service.name}"]), "web");
}

/// The review APIs answer from the authorizer (allow-all until RBAC): `kubectl auth`.
#[test]
fn auth_can_i_and_whoami() {
    let s = TestServer::start();
    assert_eq!(s.k(&["auth", "can-i", "create", "pods"]).trim(), "yes");
    assert_eq!(s.k(&["auth", "can-i", "get", "/healthz"]).trim(), "yes");
    let who = s.k(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}"]);
    assert_eq!(who, r#"kubernetes-admin ["system:masters","system:authenticated"]"#);
    let list = s.k(&["auth", "can-i", "--list"]);
    assert!(list.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["*.*", "[]", "[]", "[*]"]), "{list}");
    let sar = r#"{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","spec":{"user":"bob","resourceAttributes":{"verb":"get","resource":"pods","namespace":"default"}}}"#;
    assert_eq!(s.k_stdin(&["create", "-f", "-", "-o", "jsonpath={.status.allowed}"], sar), "true");
    // Asked, not stored.
    let out = s.kubectl(&["get", "subjectaccessreviews"]);
    assert!(!out.status.success(), "reviews cannot be listed");
    // Nothing to ask about: upstream's 422.
    let bad = r#"{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","spec":{"resourceAttributes":{"verb":"get","resource":"pods"}}}"#;
    let out = s.kubectl_stdin(&["create", "-f", "-"], bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("at least one of user or group must be specified"), "{err}");
}

#[test]
fn crd_then_custom_resources() {
    let s = TestServer::start();
    let crd = fixtures().join("crd.yaml");
    assert_eq!(s.k(&["create", "-f", crd.to_str().unwrap()]).trim(), "customresourcedefinition.apiextensions.k8s.io/crontabs.stable.example.com created");
    let cr = "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata:\n  name: my-cron\nspec:\n  cronSpec: '* * * * */5'\n  image: my-image\n";
    assert_eq!(s.k_stdin(&["create", "-f", "-"], cr).trim(), "crontab.stable.example.com/my-cron created");
    let table = normalize_ages(&s.k(&["get", "ct"]));
    assert_eq!(table.trim_end(), "NAME      SPEC          REPLICAS   AGE\nmy-cron   * * * * */5   1          <age>");
    assert_eq!(s.k(&["get", "crontabs", "my-cron", "-o", "jsonpath={.spec.replicas}"]), "1");
    // Schema validation: a string where an integer belongs, and a missing required field.
    let bad = "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata:\n  name: bad\nspec:\n  cronSpec: x\n  replicas: many\n";
    let err = String::from_utf8_lossy(&s.kubectl_stdin(&["create", "-f", "-"], bad).stderr).into_owned();
    assert!(
        err.contains("The CronTab \"bad\" is invalid: spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\""),
        "{err}"
    );
    let missing = "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata:\n  name: bad2\nspec:\n  image: x\n";
    let err = String::from_utf8_lossy(&s.kubectl_stdin(&["create", "-f", "-"], missing).stderr).into_owned();
    assert!(err.contains("spec.cronSpec: Required value"), "{err}");
    assert_eq!(s.k(&["get", "ct", "-o", "name"]).trim(), "crontab.stable.example.com/my-cron");
}

#[test]
fn kubectl_version_skew_131_and_133() {
    let s = TestServer::start();
    for bin in ["kubectl.1.31", "kubectl.1.33"] {
        let path = Command::new("sh").arg("-c").arg(format!("dpkg -L kubectl | grep 'bin/{bin}$' | head -1")).output().unwrap();
        let path = String::from_utf8_lossy(&path.stdout).trim().to_string();
        assert!(!path.is_empty(), "{bin} is not installed");
        let out = s.kubectl_bin(&path, &["get", "ns", "-o", "name"]);
        assert!(out.status.success(), "{bin}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("namespace/kube-system"));
        let name = format!("skew{}", &bin[bin.len() - 2..]);
        let out = s.kubectl_bin(&path, &["create", "deployment", &name, "--image=nginx"]);
        assert!(out.status.success(), "{bin}: {}", String::from_utf8_lossy(&out.stderr));
        let out = s.kubectl_bin(&path, &["explain", "deployment.spec.replicas"]);
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("replicas"), "{bin}: {}", String::from_utf8_lossy(&out.stderr));
    }
    wait_for("both deployments", Duration::from_secs(5), || (s.k(&["get", "deploy", "-o", "name"]).lines().count() == 2).then_some(()));
}

#[test]
fn server_side_apply_takes_over_what_client_side_apply_set() {
    let s = TestServer::start();
    let cm = |name: &str, a: &str| format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{a: \"{a}\", b: keep}}\n");
    // kubectl's documented upgrade path: client-side apply, then --server-side.
    s.k_stdin(&["apply", "-f", "-"], &cm("csa", "1"));
    assert_eq!(s.k_stdin(&["apply", "--server-side", "-f", "-"], &cm("csa", "2")).trim(), "configmap/csa serverside-applied");
    assert_eq!(s.k(&["get", "cm", "csa", "-o", "jsonpath={.data.a}"]), "2");
    // An object created with --save-config (manager kubectl-create): its fields equal the
    // last-applied annotation, so kubectl's server-side apply takes them without a conflict.
    s.k_stdin(&["create", "--save-config", "-f", "-"], &cm("saved", "x"));
    assert_eq!(s.k_stdin(&["apply", "--server-side", "-f", "-"], &cm("saved", "y")).trim(), "configmap/saved serverside-applied");
    assert_eq!(s.k(&["get", "cm", "saved", "-o", "jsonpath={.data.a}"]), "y");
    // The annotation now records the server-side applied configuration.
    let last: Value =
        serde_json::from_str(&s.k(&["get", "cm", "saved", "-o", "jsonpath={.metadata.annotations.kubectl\\.kubernetes\\.io/last-applied-configuration}"]))
            .unwrap();
    assert_eq!(last["data"]["a"], "y");
    // A field someone else changed since still conflicts.
    s.k(&["patch", "cm", "saved", "-p", r#"{"data":{"a":"edited"}}"#]);
    let out = s.kubectl_stdin(&["apply", "--server-side", "-f", "-"], &cm("saved", "z"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("conflict with \"kubectl-patch\"") && err.contains(".data.a"), "{err}");
    // Another field manager gets no such upgrade.
    s.k_stdin(&["create", "--save-config", "-f", "-"], &cm("other", "x"));
    let out = s.kubectl_stdin(&["apply", "--server-side", "--field-manager=tool", "-f", "-"], &cm("other", "y"));
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("conflict with \"kubectl-create\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
