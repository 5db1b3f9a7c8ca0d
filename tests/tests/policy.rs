//! Namespace policy and storage: ResourceQuota (status and admission), LimitRange defaults,
//! the PersistentVolume binder and the HorizontalPodAutoscaler on simulated nodes.

use std::time::Duration;

use r8s_tests::{SimNodes, TestServer, rows, wait_for};

const T: Duration = Duration::from_secs(60);

#[test]
fn resource_quota_tracks_usage_and_refuses_excess() {
    let s = TestServer::start_cluster(&[]);
    s.k(&["create", "namespace", "q"]);
    s.k(&["create", "quota", "compute", "-n", "q", "--hard=pods=2,requests.cpu=1,requests.memory=1Gi"]);
    wait_for("quota status", T, || {
        let used = s.k(&["get", "quota", "compute", "-n", "q", "-o", "jsonpath={.status.used.pods}"]);
        (used == "0").then_some(())
    });
    let pod = |name: &str, cpu: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: q}}\nspec:\n  containers:\n  - name: c\n    image: nginx\n    resources: {{requests: {{cpu: {cpu}, memory: 256Mi}}}}\n"
        )
    };
    s.k_stdin(&["apply", "-f", "-"], &pod("a", "600m"));
    // Over the cpu quota: upstream's message.
    let out = s.kubectl_stdin(&["apply", "-f", "-"], &pod("b", "500m"));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(
        err.contains("pods \"b\" is forbidden: exceeded quota: compute, requested: requests.cpu=500m, used: requests.cpu=600m, limited: requests.cpu=1"),
        "{err}"
    );
    assert!(!s.kubectl(&["get", "pod", "b", "-n", "q"]).status.success(), "nothing stored");
    // Containers must say what they request when compute is under quota.
    let err = s.k_err(&["run", "bare", "-n", "q", "--image=nginx"]);
    assert!(err.contains("failed quota: compute: must specify requests.cpu for: bare; requests.memory for: bare"), "{err}");
    s.k_stdin(&["apply", "-f", "-"], &pod("c", "400m"));
    let err = s.k_err(&[
        "run",
        "d",
        "-n",
        "q",
        "--image=nginx",
        "--overrides={\"spec\":{\"containers\":[{\"name\":\"d\",\"image\":\"nginx\",\"resources\":{\"requests\":{\"cpu\":\"1m\",\"memory\":\"1Mi\"}}}]}}",
    ]);
    assert!(err.contains("exceeded quota: compute, requested: pods=1,requests.cpu=1m, used: pods=2,requests.cpu=1, limited: pods=2,requests.cpu=1"), "{err}");
    let used = s.k(&["get", "quota", "compute", "-n", "q", "-o", "jsonpath={.status.used.requests\\.cpu}/{.status.used.pods}"]);
    assert_eq!(used, "1/2");
    // Deleting gives the quota back.
    s.k(&["delete", "pod", "a", "-n", "q", "--wait=false"]);
    wait_for("usage drops", T, || (s.k(&["get", "quota", "compute", "-n", "q", "-o", "jsonpath={.status.used.pods}"]) == "1").then_some(()));
}

#[test]
fn limit_range_fills_defaults_and_enforces_max() {
    let s = TestServer::start_cluster(&[]);
    s.k_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: LimitRange\nmetadata: {name: limits, namespace: default}\nspec:\n  limits:\n  - type: Container\n    default: {cpu: 500m, memory: 256Mi}\n    defaultRequest: {cpu: 100m}\n    max: {cpu: \"1\"}\n",
    );
    s.k(&["run", "plain", "--image=nginx"]);
    let res = s.k(&["get", "pod", "plain", "-o", "jsonpath={.spec.containers[0].resources.requests.cpu}/{.spec.containers[0].resources.requests.memory}/{.spec.containers[0].resources.limits.cpu}/{.spec.containers[0].resources.limits.memory}"]);
    assert_eq!(res, "100m/256Mi/500m/256Mi");
    let ann = s.k(&["get", "pod", "plain", "-o", "jsonpath={.metadata.annotations.kubernetes\\.io/limit-ranger}"]);
    assert_eq!(ann, "LimitRanger plugin set: cpu, memory request for container plain; cpu, memory limit for container plain");
    let err = s.k_err(&[
        "run",
        "big",
        "--image=nginx",
        "--overrides={\"spec\":{\"containers\":[{\"name\":\"big\",\"image\":\"nginx\",\"resources\":{\"limits\":{\"cpu\":\"2\"}}}]}}",
    ]);
    assert!(err.contains("pods \"big\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"), "{err}");
}

#[test]
fn persistent_volume_claims_bind_to_fitting_volumes() {
    let s = TestServer::start_cluster(&[]);
    let pv = |name: &str, size: &str| {
        format!(
            "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: {name}}}\nspec:\n  capacity: {{storage: {size}}}\n  accessModes: [ReadWriteOnce]\n  persistentVolumeReclaimPolicy: Retain\n  hostPath: {{path: /tmp/{name}}}\n"
        )
    };
    s.k_stdin(&["apply", "-f", "-"], &pv("small", "1Gi"));
    s.k_stdin(&["apply", "-f", "-"], &pv("large", "10Gi"));
    s.k_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\nspec:\n  storageClassName: \"\"\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 2Gi}}\n",
    );
    wait_for("claim bound", T, || (s.k(&["get", "pvc", "data", "-o", "jsonpath={.status.phase}"]) == "Bound").then_some(()));
    assert_eq!(s.k(&["get", "pvc", "data", "-o", "jsonpath={.spec.volumeName}"]), "large", "the smallest volume that fits");
    let pvs = rows(&s.k(&["get", "pv", "--no-headers"]));
    let large = pvs.iter().find(|r| r[0] == "large").unwrap();
    assert_eq!(large[4], "Bound");
    assert_eq!(large[5], "default/data");
    s.k(&["delete", "pvc", "data"]);
    wait_for("volume released", T, || (s.k(&["get", "pv", "large", "-o", "jsonpath={.status.phase}"]) == "Released").then_some(()));
}

#[test]
fn autoscaler_follows_reported_cpu_usage() {
    let s = TestServer::start_cluster(&["--horizontal-pod-autoscaler-sync-period", "1s"]);
    let _nodes = SimNodes::start(&s, "hpa", 2, &[]);
    // Each pod reports 400m of its 200m request: 200% against a 50% target.
    s.k_stdin(
        &["apply", "-f", "-"],
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: busy}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: busy}}\n  template:\n    metadata: {labels: {app: busy}, annotations: {r8s.io/sim-cpu-usage: 400m}}\n    spec: {containers: [{name: c, image: nginx, resources: {requests: {cpu: 200m}}}]}\n",
    );
    s.k(&["rollout", "status", "deploy/busy", "--timeout=60s"]);
    s.k(&["autoscale", "deployment", "busy", "--cpu-percent=50", "--min=1", "--max=5"]);
    wait_for("scaled to 4", T, || (s.k(&["get", "deploy", "busy", "-o", "jsonpath={.spec.replicas}"]) == "4").then_some(()));
    wait_for("hpa status", T, || {
        let line = s.k(&["get", "hpa", "busy", "--no-headers"]);
        let cells = rows(&line);
        (line.contains("cpu: 200%/50%") && cells[0].iter().rev().nth(1).map(String::as_str) == Some("4")).then_some(())
    });
    let ev = s.k(&["get", "events", "--field-selector", "reason=SuccessfulRescale", "-o", "jsonpath={.items[*].message}"]);
    assert!(ev.contains("New size: 4; reason: cpu resource utilization (percentage of request) above target"), "{ev}");
    // Still at 200% with 4 pods, the recommendation (16) passes the maximum (5): upstream's
    // conditions say so.
    let cond = |t: &str| {
        s.k(&[
            "get",
            "hpa",
            "busy",
            "-o",
            &format!("jsonpath={{.status.conditions[?(@.type==\"{t}\")].status}}/{{.status.conditions[?(@.type==\"{t}\")].reason}}"),
        ])
    };
    wait_for("ScalingLimited TooManyReplicas", T, || (cond("ScalingLimited") == "True/TooManyReplicas").then_some(()));
    assert_eq!(cond("ScalingActive"), "True/ValidMetricFound");
    assert!(cond("AbleToScale").starts_with("True/"), "{}", cond("AbleToScale"));
}
