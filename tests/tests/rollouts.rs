//! Rollout controls beyond the seeds' flows: pause/resume and restart of Deployments,
//! ReplicationControllers, DaemonSet and StatefulSet updates, and the components' leases.

use std::time::Duration;

use r8s_tests::{SimNodes, TestServer, rows, wait_for};

const T: Duration = Duration::from_secs(60);

/// Waits until exactly `n` Running pods match `sel`, all with `image`.
fn wait_running_images(s: &TestServer, sel: &str, n: usize, image: &str) {
    wait_for(&format!("{n} running {sel} pods on {image}"), T, || {
        let imgs = s.k(&["get", "pods", "-l", sel, "--field-selector", "status.phase=Running", "-o", "jsonpath={.items[*].spec.containers[0].image}"]);
        (imgs.split_whitespace().count() == n && imgs.split_whitespace().all(|i| i == image)).then_some(())
    });
}

fn rs_count(s: &TestServer, sel: &str) -> usize {
    s.k(&["get", "rs", "-l", sel, "--no-headers"]).lines().count()
}

#[test]
fn pause_resume_and_restart() {
    let s = TestServer::start_cluster(&[]);
    let _nodes = SimNodes::start(&s, "pr", 2, &[]);
    s.k(&["create", "deployment", "app", "--image=nginx:1.21.1", "--replicas=2"]);
    s.k(&["rollout", "status", "deploy/app", "--timeout=60s"]);
    s.k(&["rollout", "pause", "deploy/app"]);
    s.k(&["set", "image", "deploy/app", "nginx=nginx:1.23.0"]);
    // Paused: the template changed but no new ReplicaSet appears.
    wait_for("Progressing=Unknown (DeploymentPaused)", T, || {
        (s.k(&["get", "deploy", "app", "-o", "jsonpath={.status.conditions[?(@.type==\"Progressing\")].reason}"]) == "DeploymentPaused").then_some(())
    });
    assert_eq!(rs_count(&s, "app=app"), 1);
    s.k(&["rollout", "resume", "deploy/app"]);
    s.k(&["rollout", "status", "deploy/app", "--timeout=60s"]);
    assert_eq!(rs_count(&s, "app=app"), 2);
    // Restart rolls the pods through a new ReplicaSet.
    s.k(&["rollout", "restart", "deploy/app"]);
    s.k(&["rollout", "status", "deploy/app", "--timeout=60s"]);
    assert_eq!(rs_count(&s, "app=app"), 3);
    wait_for("all pods restarted", T, || {
        let ann = s.k(&[
            "get",
            "pods",
            "-l",
            "app=app",
            "--field-selector",
            "status.phase=Running",
            "-o",
            "jsonpath={.items[*].metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt}",
        ]);
        (ann.split_whitespace().count() == 2).then_some(())
    });
}

#[test]
fn replication_controller_keeps_its_replicas() {
    let s = TestServer::start_cluster(&[]);
    let _nodes = SimNodes::start(&s, "rc", 2, &[]);
    s.k_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ReplicationController\nmetadata: {name: legacy}\nspec:\n  replicas: 2\n  selector: {app: legacy}\n  template:\n    metadata: {labels: {app: legacy}}\n    spec: {containers: [{name: c, image: nginx}]}\n",
    );
    let ready = |n: &str| wait_for(&format!("rc ready {n}"), T, || (rows(&s.k(&["get", "rc", "legacy", "--no-headers"]))[0][1..4] == [n, n, n]).then_some(()));
    ready("2");
    // A deleted pod is replaced.
    let victim = s.k(&["get", "pods", "-l", "app=legacy", "-o", "jsonpath={.items[0].metadata.name}"]);
    s.k(&["delete", "pod", &victim]);
    wait_for("replacement pod", T, || {
        let names = s.k(&["get", "pods", "-l", "app=legacy", "--field-selector", "status.phase=Running", "-o", "jsonpath={.items[*].metadata.name}"]);
        (names.split_whitespace().count() == 2 && !names.contains(&victim)).then_some(())
    });
    s.k(&["scale", "rc", "legacy", "--replicas=3"]);
    ready("3");
}

#[test]
fn daemonset_and_statefulset_updates() {
    let s = TestServer::start_cluster(&[]);
    let _nodes = SimNodes::start(&s, "up", 3, &[]);
    s.k_stdin(
        &["apply", "-f", "-"],
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent}\nspec:\n  selector: {matchLabels: {app: agent}}\n  template:\n    metadata: {labels: {app: agent}}\n    spec: {containers: [{name: a, image: busybox:1.35}]}\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n  serviceName: db\n  replicas: 3\n  selector: {matchLabels: {app: db}}\n  updateStrategy: {type: RollingUpdate, rollingUpdate: {partition: 2}}\n  template:\n    metadata: {labels: {app: db}}\n    spec: {containers: [{name: c, image: postgres:15}]}\n",
    );
    s.k(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    wait_for("db 3/3", T, || (rows(&s.k(&["get", "sts", "db", "--no-headers"]))[0][1] == "3/3").then_some(()));
    // DaemonSet rolling update: every node's pod is replaced with the new template.
    s.k(&["set", "image", "ds/agent", "a=busybox:1.36"]);
    s.k(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    wait_running_images(&s, "app=agent", 3, "busybox:1.36");
    // With maxSurge the new pod starts beside the old one, node by node.
    s.k_stdin(
        &["apply", "-f", "-"],
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: surge}\nspec:\n  selector: {matchLabels: {app: surge}}\n  updateStrategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}\n  template:\n    metadata: {labels: {app: surge}}\n    spec: {containers: [{name: a, image: busybox:1.35}]}\n",
    );
    s.k(&["rollout", "status", "ds/surge", "--timeout=60s"]);
    s.k(&["set", "image", "ds/surge", "a=busybox:1.36"]);
    s.k(&["rollout", "status", "ds/surge", "--timeout=60s"]);
    wait_for("three surge pods on 1.36, one per node", T, || {
        let out = s.k(&["get", "pods", "-l", "app=surge", "-o", "jsonpath={range .items[*]}{.spec.nodeName}={.spec.containers[0].image} {end}"]);
        let mut v: Vec<&str> = out.split_whitespace().collect();
        v.sort();
        (v == ["up0=busybox:1.36", "up1=busybox:1.36", "up2=busybox:1.36"]).then_some(())
    });
    let hist = s.k(&["rollout", "history", "ds/agent"]);
    assert!(hist.contains("1         <none>") && hist.contains("2         <none>"), "{hist}");
    // Undo restores the previous template from its ControllerRevision.
    s.k(&["rollout", "undo", "ds/agent"]);
    s.k(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    assert_eq!(s.k(&["get", "ds", "agent", "-o", "jsonpath={.spec.template.spec.containers[0].image}"]), "busybox:1.35");
    wait_running_images(&s, "app=agent", 3, "busybox:1.35");
    // StatefulSet with partition 2: only db-2 moves to the new template.
    s.k(&["set", "image", "sts/db", "c=postgres:16"]);
    wait_for("db-2 updated", T, || {
        (s.k(&["get", "pod", "db-2", "-o", "jsonpath={.spec.containers[0].image}/{.status.phase}"]) == "postgres:16/Running").then_some(())
    });
    assert_eq!(s.k(&["get", "pod", "db-0", "-o", "jsonpath={.spec.containers[0].image}"]), "postgres:15");
    assert_eq!(s.k(&["get", "pod", "db-1", "-o", "jsonpath={.spec.containers[0].image}"]), "postgres:15");
    // Lowering the partition finishes the update, highest ordinal first.
    s.k(&["patch", "sts", "db", "-p", "{\"spec\":{\"updateStrategy\":{\"rollingUpdate\":{\"partition\":0}}}}"]);
    s.k(&["rollout", "status", "sts/db", "--timeout=60s"]);
    wait_running_images(&s, "app=db", 3, "postgres:16");
}

#[test]
fn components_hold_their_leader_leases() {
    let s = TestServer::start_cluster(&[]);
    for lease in ["kube-scheduler", "kube-controller-manager"] {
        let holder = wait_for(&format!("{lease} lease"), T, || {
            let h = s.kubectl(&["get", "lease", lease, "-n", "kube-system", "-o", "jsonpath={.spec.holderIdentity}"]);
            let h = String::from_utf8_lossy(&h.stdout).to_string();
            (!h.is_empty()).then_some(h)
        });
        assert!(!holder.is_empty());
    }
    // A second controller-manager waits as a candidate and does not take over a held lease.
    let mut extra = std::process::Command::new(r8s_tests::r8s_bin())
        .args(["controller-manager", "--kubeconfig"])
        .arg(&s.kubeconfig)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let before = s.k(&["get", "lease", "kube-controller-manager", "-n", "kube-system", "-o", "jsonpath={.spec.holderIdentity}/{.spec.leaseTransitions}"]);
    // The in-process holder keeps renewing: the renew time moves, the holder does not.
    let first = s.k(&["get", "lease", "kube-controller-manager", "-n", "kube-system", "-o", "jsonpath={.spec.renewTime}"]);
    wait_for("a renewal", T, || {
        (s.k(&["get", "lease", "kube-controller-manager", "-n", "kube-system", "-o", "jsonpath={.spec.renewTime}"]) != first).then_some(())
    });
    let after = s.k(&["get", "lease", "kube-controller-manager", "-n", "kube-system", "-o", "jsonpath={.spec.holderIdentity}/{.spec.leaseTransitions}"]);
    assert_eq!(before, after);
    assert!(extra.try_wait().unwrap().is_none(), "the candidate keeps waiting");
    let _ = extra.kill();
    let _ = extra.wait();
}

#[test]
fn controller_revisions_carry_the_change_cause_and_undo_to_the_current_revision_is_a_no_op() {
    let s = TestServer::start_cluster(&[]);
    let _nodes = SimNodes::start(&s, "hist", 2, &[]);
    s.k_stdin(
        &["apply", "--record", "-f", "-"],
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: logs}\nspec:\n  selector: {matchLabels: {app: logs}}\n  template:\n    metadata: {labels: {app: logs}}\n    spec: {containers: [{name: a, image: busybox:1.35}]}\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: store}\nspec:\n  serviceName: store\n  replicas: 1\n  selector: {matchLabels: {app: store}}\n  template:\n    metadata: {labels: {app: store}}\n    spec: {containers: [{name: c, image: postgres:15}]}\n",
    );
    s.k(&["rollout", "status", "ds/logs", "--timeout=60s"]);
    s.k(&["rollout", "status", "sts/store", "--timeout=60s"]);
    s.k(&["set", "image", "ds/logs", "a=busybox:1.36", "--record"]);
    s.k(&["set", "image", "sts/store", "c=postgres:16", "--record"]);
    s.k(&["rollout", "status", "ds/logs", "--timeout=60s"]);
    s.k(&["rollout", "status", "sts/store", "--timeout=60s"]);
    // Every revision copies its owner's annotations, the change cause among them.
    let causes = s.k(&["get", "controllerrevisions", "-o", "jsonpath={range .items[*]}{.metadata.annotations.kubernetes\\.io/change-cause}{\"\\n\"}{end}"]);
    assert_eq!(causes.lines().filter(|l| l.contains("kubectl apply")).count(), 2, "{causes}");
    assert_eq!(causes.lines().filter(|l| l.contains("kubectl set image")).count(), 2, "{causes}");
    for (what, image) in [("ds/logs", "busybox:1.36"), ("sts/store", "postgres:16")] {
        let hist = s.k(&["rollout", "history", what]);
        let lines: Vec<&str> = hist.lines().collect();
        assert!(lines[2].starts_with("1         kubectl apply") && lines[3].starts_with("2         kubectl set image"), "{what}: {hist}");
        // Undo to the revision that is already current changes nothing.
        let out = s.k(&["rollout", "undo", what, "--to-revision=2"]);
        assert!(out.contains("skipped rollback (current template already matches revision 2)"), "{what}: {out}");
        let path = "jsonpath={.spec.template.spec.containers[0].image}";
        assert_eq!(s.k(&["get", what, "-o", path]), image, "{what}");
    }
}
