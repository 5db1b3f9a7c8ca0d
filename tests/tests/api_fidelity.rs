//! Upstream behaviours real clients hit on day one: bodies without apiVersion/kind, server-side
//! apply of a map applied empty then filled, retainKeys in `kubectl apply`, cross-field
//! validation of workloads, defaulting, and the Deployment's Progressing reasons.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, WatchEvent, WatchParams};
use r8s_tests::{SimNodes, TestServer, raw};
use serde_json::{Value, json};

#[tokio::test]
async fn bodies_without_api_version_and_kind_take_them_from_the_url() {
    let s = TestServer::start();
    let c = s.client().await;
    // What the official Python client sends for a plain dict body.
    let (code, v) = raw(&c, "POST", "/api/v1/namespaces", "application/json", serde_json::to_vec(&json!({"metadata": {"name": "fromdict"}})).unwrap()).await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["kind"], "Namespace");
    assert_eq!(v["apiVersion"], "v1");
    let (code, v) = raw(
        &c,
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        "application/json",
        serde_json::to_vec(&json!({"kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}}))
        .unwrap(),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["apiVersion"], "apps/v1");
    // A mismatch is still an error.
    let (code, v) =
        raw(&c, "POST", "/api/v1/namespaces", "application/json", serde_json::to_vec(&json!({"kind": "Pod", "metadata": {"name": "x"}})).unwrap()).await;
    assert_eq!(code, 400, "{v}");
    assert!(v["message"].as_str().unwrap().starts_with("the object provided is unrecognized (must be of type Namespace): "), "{v}");
    // The Python client itself.
    let script = format!(
        "import kubernetes\nkubernetes.config.load_kube_config(config_file={:?})\nv1 = kubernetes.client.CoreV1Api()\nns = v1.create_namespace(body={{'metadata': {{'name': 'py-dict'}}}})\nprint(ns.metadata.name, ns.status.phase)\n",
        s.kubeconfig.display().to_string()
    );
    let out = std::process::Command::new("python3").args(["-c", &script]).output().expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "py-dict Active");
}

#[test]
fn server_side_apply_fills_a_map_applied_empty() {
    let s = TestServer::start();
    let cm = |data: &str| format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: m}}\ndata: {data}\n");
    s.k_stdin(&["apply", "--server-side", "-f", "-"], &cm("{}"));
    assert_eq!(s.k(&["get", "cm", "m", "-o", "jsonpath={.data}"]), "{}");
    s.k_stdin(&["apply", "--server-side", "-f", "-"], &cm("{b: \"2\"}"));
    assert_eq!(s.k(&["get", "cm", "m", "-o", "jsonpath={.data}"]), r#"{"b":"2"}"#);
    let mf: Value = serde_json::from_str(&s.k(&["get", "cm", "m", "--show-managed-fields", "-o", "jsonpath={.metadata.managedFields[0]}"])).unwrap();
    assert_eq!(mf["manager"], "kubectl");
    assert_eq!(mf["operation"], "Apply");
    assert_eq!(mf["fieldsV1"]["f:data"], json!({".": {}, "f:b": {}}));
}

#[test]
fn kubectl_apply_retains_only_the_new_union_member() {
    let s = TestServer::start();
    let deploy = |strategy: &str, volume: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\nspec:\n{strategy}  selector: {{matchLabels: {{app: d}}}}\n  template:\n    metadata: {{labels: {{app: d}}}}\n    spec:\n      containers: [{{name: c, image: nginx}}]\n      volumes: [{{name: v, {volume}}}]\n"
        )
    };
    s.k_stdin(&["apply", "-f", "-"], &deploy("", "emptyDir: {}"));
    assert_eq!(s.k(&["get", "deploy", "d", "-o", "jsonpath={.spec.strategy.type}"]), "RollingUpdate");
    s.k_stdin(&["apply", "-f", "-"], &deploy("  strategy: {type: Recreate}\n", "hostPath: {path: /tmp}"));
    assert_eq!(s.k(&["get", "deploy", "d", "-o", "jsonpath={.spec.strategy}"]), r#"{"type":"Recreate"}"#);
    let vols: Value = serde_json::from_str(&s.k(&["get", "deploy", "d", "-o", "jsonpath={.spec.template.spec.volumes}"])).unwrap();
    assert_eq!(vols, json!([{"name": "v", "hostPath": {"path": "/tmp", "type": ""}}]));
}

#[test]
fn workload_cross_field_validation_matches_upstream() {
    let s = TestServer::start();
    let out = s.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: r}\nspec:\n  strategy: {type: Recreate, rollingUpdate: {maxSurge: 1}}\n  selector: {matchLabels: {app: r}}\n  template:\n    metadata: {labels: {app: r}}\n    spec: {containers: [{name: c, image: nginx}]}\n",
    );
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "The Deployment \"r\" is invalid: spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"
    );
    let out = s.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: r}\nspec:\n  selector: {matchLabels: {app: r}}\n  template:\n    metadata: {labels: {app: r}}\n    spec: {restartPolicy: Never, containers: [{name: c, image: nginx}]}\n",
    );
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "The ReplicaSet \"r\" is invalid: spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""
    );
    let out = s.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: z}\nspec:\n  strategy: {rollingUpdate: {maxSurge: 0, maxUnavailable: 0}}\n  selector: {matchLabels: {app: z}}\n  template:\n    metadata: {labels: {app: z}}\n    spec: {containers: [{name: c, image: nginx}]}\n",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "The Deployment \"z\" is invalid: spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0"
    );
}

#[test]
fn defaults_from_upstream_set_defaults() {
    let s = TestServer::start();
    s.k_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    image: busybox:1.36\n    env: [{name: ME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]\n  volumes: [{name: scratch}]\n",
    );
    let pod: Value = serde_json::from_str(&s.k(&["get", "pod", "p", "-o", "json"])).unwrap();
    assert_eq!(pod["spec"]["volumes"][0], json!({"name": "scratch", "emptyDir": {}}));
    assert_eq!(pod["spec"]["containers"][0]["env"][0]["valueFrom"]["fieldRef"], json!({"apiVersion": "v1", "fieldPath": "metadata.name"}));
    let describe = s.k(&["describe", "pod", "p"]);
    assert!(describe.contains("ME:    p (v1:metadata.name)"), "{describe}");
    assert!(describe.contains("EmptyDir (a temporary directory that shares a pod's lifetime)"), "{describe}");
}

#[tokio::test]
async fn deployment_progressing_reasons_follow_upstream() {
    let s = TestServer::start_cluster(&[]);
    let _nodes = SimNodes::start(&s, "prog", 2, &[]);
    s.k(&["create", "deployment", "web", "--image=nginx:1.21.1", "--replicas=3"]);
    s.k(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    let client = s.client().await;
    let api: Api<Deployment> = Api::namespaced(client, "default");
    let rv = api.get("web").await.unwrap().metadata.resource_version.unwrap();
    let mut events = api.watch(&WatchParams::default().fields("metadata.name=web"), &rv).await.unwrap().boxed();
    s.k(&["set", "image", "deploy/web", "nginx=nginx:1.23.0"]);
    let mut seen: Vec<(String, String)> = Vec::new();
    let done = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(ev) = events.try_next().await.unwrap() {
            let WatchEvent::Modified(d) = ev else {
                continue;
            };
            let conds = d.status.and_then(|s| s.conditions).unwrap_or_default();
            let Some(p) = conds.into_iter().find(|c| c.type_ == "Progressing") else {
                continue;
            };
            let entry = (p.reason.unwrap_or_default(), p.message.unwrap_or_default());
            if seen.last() != Some(&entry) {
                seen.push(entry.clone());
            }
            if entry.0 == "NewReplicaSetAvailable" && seen.iter().any(|(r, _)| r == "ReplicaSetUpdated") {
                return;
            }
        }
    })
    .await;
    assert!(done.is_ok(), "rollout did not finish: {seen:?}");
    let new_rs = s.k(&["get", "rs", "-l", "app=web", "--sort-by=.metadata.creationTimestamp", "-o", "jsonpath={.items[-1:].metadata.name}"]);
    assert!(seen.contains(&("NewReplicaSetCreated".into(), format!("Created new replica set \"{new_rs}\""))), "{seen:?}");
    assert!(seen.contains(&("ReplicaSetUpdated".into(), format!("ReplicaSet \"{new_rs}\" is progressing."))), "{seen:?}");
    assert_eq!(seen.last().unwrap(), &("NewReplicaSetAvailable".to_string(), format!("ReplicaSet \"{new_rs}\" has successfully progressed.")));
}

#[test]
fn job_suspended_and_resumed_conditions_follow_upstream() {
    let s = TestServer::start_cluster(&[]);
    s.k_stdin(
        &["create", "-f", "-"],
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: later}\nspec:\n  suspend: true\n  template:\n    spec: {restartPolicy: Never, containers: [{name: c, image: busybox}]}\n",
    );
    let cond = || {
        s.k(&["get", "job", "later", "-o", "jsonpath={.status.conditions[?(@.type==\"Suspended\")].status}/{.status.conditions[?(@.type==\"Suspended\")].reason}/{.status.conditions[?(@.type==\"Suspended\")].message}"])
    };
    r8s_tests::wait_for("Suspended=True", Duration::from_secs(30), || (cond() == "True/JobSuspended/Job suspended").then_some(()));
    s.k(&["patch", "job", "later", "--type=merge", "-p", r#"{"spec":{"suspend":false}}"#]);
    r8s_tests::wait_for("Suspended=False", Duration::from_secs(30), || (cond() == "False/JobResumed/Job resumed").then_some(()));
    let events = s.k(&["get", "events", "--field-selector", "involvedObject.name=later", "-o", "jsonpath={.items[*].reason}"]);
    assert!(events.contains("Suspended") && events.contains("Resumed"), "{events}");
}

#[test]
fn more_kinds_validate_as_upstream() {
    let s = TestServer::start();
    let err = |yaml: &str| {
        let out = s.kubectl_stdin(&["create", "-f", "-"], yaml);
        assert!(!out.status.success(), "{yaml} was accepted");
        String::from_utf8_lossy(&out.stderr).trim().to_string()
    };
    assert_eq!(
        err(
            "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: h}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  minReplicas: 5\n  maxReplicas: 2\n"
        ),
        "The HorizontalPodAutoscaler \"h\" is invalid: spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`"
    );
    assert_eq!(
        err("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: c}\nspec: {resources: {requests: {storage: 1Gi}}}\n"),
        "The PersistentVolumeClaim \"c\" is invalid: spec.accessModes: Required value: at least 1 access mode is required"
    );
    assert_eq!(
        err("apiVersion: v1\nkind: Secret\nmetadata: {name: t}\ntype: kubernetes.io/tls\ndata: {tls.crt: YQ==}\n"),
        "The Secret \"t\" is invalid: data[tls.key]: Required value"
    );
    assert_eq!(
        err("apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: r}\nrules: [{apiGroups: [\"\"], resources: [pods]}]\n"),
        "The Role \"r\" is invalid: rules[0].verbs: Required value: verbs must contain at least one value"
    );
    s.k_stdin(
        &["create", "-f", "-"],
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: b}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: a}\nsubjects: [{kind: User, name: u}]\n",
    );
    let out = s.kubectl(&["patch", "rolebinding", "b", "--type=merge", "-p", r#"{"roleRef":{"name":"other"}}"#]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("roleRef: Invalid value"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot change roleRef"));
}

#[tokio::test]
async fn status_bodies_and_json_responses_are_byte_for_byte_upstreams() {
    let s = TestServer::start();
    let c = s.client().await;
    // metav1.Status in Go's field order, ended by the newline of Go's json.Encoder.
    let (code, body) = r8s_tests::raw_bytes(&c, "GET", "/api/v1/namespaces/default/pods/nope", "application/json", vec![]).await;
    assert_eq!(code, 404);
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"pods \\\"nope\\\" not found\",\"reason\":\"NotFound\",\"details\":{\"name\":\"nope\",\"kind\":\"pods\"},\"code\":404}\n"
    );
    // Objects, lists and discovery end the same way.
    for path in ["/api/v1/namespaces/default", "/api/v1/namespaces", "/api", "/apis/apps/v1"] {
        let (code, body) = r8s_tests::raw_bytes(&c, "GET", path, "application/json", vec![]).await;
        assert_eq!(code, 200, "{path}");
        assert!(body.ends_with(b"}\n") && !body.ends_with(b"\n\n"), "{path}: {:?}", String::from_utf8_lossy(&body[body.len().saturating_sub(20)..]));
        serde_json::from_slice::<Value>(&body).unwrap();
    }
}

#[tokio::test]
async fn boolean_query_parameters_read_as_go_parse_bool() {
    let s = TestServer::start();
    let c = s.client().await;
    // "True" is a watch (the Python client's spelling), and so are 1, t and TRUE.
    for v in ["True", "1", "t", "TRUE"] {
        let (code, body) = r8s_tests::raw_bytes(&c, "GET", &format!("/api/v1/namespaces?watch={v}&timeoutSeconds=1"), "application/json", vec![]).await;
        assert_eq!(code, 200, "{v}");
        let first: Value = serde_json::from_slice(body.split(|b| *b == b'\n').next().unwrap()).unwrap();
        assert_eq!(first["type"], "ADDED", "watch={v} streams events");
    }
    let (code, body) = r8s_tests::raw_bytes(&c, "GET", "/api/v1/namespaces?watch=False", "application/json", vec![]).await;
    assert_eq!((code, serde_json::from_slice::<Value>(&body).unwrap()["kind"].clone()), (200, json!("NamespaceList")));
    // What ParseBool cannot read is the client's error, never a 500.
    for q in ["watch=maybe", "pretty=yes", "allowWatchBookmarks=on&watch=1", "sendInitialEvents=2&watch=1"] {
        let (code, v) = raw(&c, "GET", &format!("/api/v1/namespaces?{q}"), "application/json", vec![]).await;
        assert_eq!(code, 400, "{q}: {v}");
        assert!(v["message"].as_str().unwrap().contains("strconv.ParseBool: parsing"), "{q}: {v}");
    }
    let (code, v) = raw(&c, "GET", "/api/v1/namespaces/default/pods/p/log?follow=sometimes", "application/json", vec![]).await;
    assert_eq!(code, 400, "{v}");
}

#[test]
fn yaml_bodies_sent_as_json_are_read_and_mismatched_kinds_refused() {
    let s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let ns = dir.path().join("ns.yaml");
    std::fs::write(&ns, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: from-yaml\n").unwrap();
    let created: Value = serde_json::from_str(&s.k(&["create", "--raw", "/api/v1/namespaces", "-f", ns.to_str().unwrap()])).unwrap();
    assert_eq!(created["metadata"]["name"], "from-yaml");
    let pod = dir.path().join("pod.yaml");
    std::fs::write(&pod, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers: [{name: c, image: busybox}]\n").unwrap();
    let err = s.k_err(&["create", "--raw", "/api/v1/namespaces", "-f", pod.to_str().unwrap()]);
    assert!(
        err.contains(
            "Error from server (BadRequest): the object provided is unrecognized (must be of type Namespace): converting (v1.Pod) to (core.Namespace)"
        ),
        "{err}"
    );
    // Not YAML either: the JSON decoder's words.
    let junk = dir.path().join("junk");
    std::fs::write(&junk, "{not json").unwrap();
    let err = s.k_err(&["create", "--raw", "/api/v1/namespaces", "-f", junk.to_str().unwrap()]);
    assert!(err.contains("couldn't get version/kind; json parse error"), "{err}");
}

#[test]
fn strategic_merge_patch_of_the_wrong_shape_is_upstreams_invalid_patch() {
    let s = TestServer::start();
    s.k(&["create", "configmap", "m", "--from-literal=a=1"]);
    let err = s.k_err(&["patch", "configmap", "m", "-p", r#"{"metadata":{"labels":"invalid"}}"#]);
    assert_eq!(err.trim(), r#"The request is invalid: patch: Invalid value: "map[metadata:map[labels:invalid]]": cannot restore map from string"#);
    let err = s.k_err(&["patch", "configmap", "m", "-p", r#"{"data":["x"]}"#]);
    assert!(err.contains(r#"patch: Invalid value: "map[data:[x]]": cannot restore map from slice"#), "{err}");
    // Nothing was written.
    assert_eq!(s.k(&["get", "cm", "m", "-o", "jsonpath={.metadata.labels}{.data.a}"]), "1");
}

#[test]
fn node_specs_are_validated_as_upstream() {
    let s = TestServer::start();
    let node = |spec: &str| format!("apiVersion: v1\nkind: Node\nmetadata: {{name: n1}}\nspec: {spec}\n");
    let out = s.kubectl_stdin(&["create", "-f", "-"], &node(r#"{podCIDR: "10.0.0.0/24; flush ruleset"}"#));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"The Node "n1" is invalid: spec.podCIDRs[0]: Invalid value: "10.0.0.0/24; flush ruleset": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"#),
        "{err}"
    );
    let err = String::from_utf8_lossy(&s.kubectl_stdin(&["create", "-f", "-"], &node(r#"{podCIDRs: [10.244.1.0/24, 10.244.2.0/24]}"#)).stderr).into_owned();
    assert!(err.contains("may specify no more than one CIDR for each IP family"), "{err}");
    let err = String::from_utf8_lossy(&s.kubectl_stdin(&["create", "-f", "-"], &node(r#"{taints: [{key: a, effect: Sometimes}]}"#)).stderr).into_owned();
    assert!(err.contains(r#"spec.taints[0].effect: Unsupported value: "Sometimes""#), "{err}");
    // podCIDR becomes podCIDRs; once set it stays.
    s.k_stdin(&["create", "-f", "-"], &node(r#"{podCIDR: 10.244.7.0/24, providerID: "r8s://n1"}"#));
    assert_eq!(s.k(&["get", "node", "n1", "-o", "jsonpath={.spec.podCIDRs}"]), r#"["10.244.7.0/24"]"#);
    let err = s.k_err(&["patch", "node", "n1", "-p", r#"{"spec":{"podCIDR":"10.244.8.0/24","podCIDRs":["10.244.8.0/24"]}}"#]);
    assert!(err.contains(r#"spec.podCIDRs: Forbidden: node updates may not change podCIDR except from "" to valid"#), "{err}");
    let err = s.k_err(&["patch", "node", "n1", "-p", r#"{"spec":{"providerID":"r8s://other"}}"#]);
    assert!(err.contains("spec.providerID: Forbidden"), "{err}");
}
