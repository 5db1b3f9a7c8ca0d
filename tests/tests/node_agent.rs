//! The node agent running real pods through containerd, each test's node inside its own network
//! namespace (tests/src/lab.rs).

use std::time::Duration;

use r8s_tests::lab::{BUSYBOX, Lab};
use r8s_tests::wait_for;

fn jsonpath(lab: &Lab, what: &[&str], path: &str) -> String {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    let p = format!("jsonpath={path}");
    args.extend_from_slice(&["-o", &p]);
    String::from_utf8_lossy(&lab.server.kubectl(&args).stdout).into_owned()
}

#[test]
fn kubectl_run_gives_a_running_pod_with_an_ip_exec_and_logs() {
    let lab = Lab::start();
    let s = &lab.server;
    s.k(&["run", "mybusybox", &format!("--image={BUSYBOX}"), "--command", "--", "sh", "-c", "echo started-$(hostname); sleep 300"]);
    let ip = wait_for("mybusybox Running with a pod IP", Duration::from_secs(90), || {
        let out = jsonpath(&lab, &["pod", "mybusybox"], "{.status.phase} {.status.podIP}");
        let (phase, ip) = out.split_once(' ')?;
        (phase == "Running" && !ip.is_empty()).then(|| ip.to_string())
    });
    assert!(ip.starts_with("10.244."), "pod IP {ip} is from the node's podCIDR");
    let ready = jsonpath(&lab, &["pod", "mybusybox"], "{.status.containerStatuses[0].ready} {.status.containerStatuses[0].containerID}");
    assert!(ready.starts_with("true containerd://"), "{ready}");
    // What the container printed, through the API server's pods/log proxy to the kubelet.
    let logs = wait_for("the container's output in kubectl logs", Duration::from_secs(30), || {
        let out = s.kubectl(&["logs", "mybusybox"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("started-").then_some(text)
    });
    assert_eq!(logs, "started-mybusybox\n", "the pod's hostname is its name");
    let ts = s.k(&["logs", "mybusybox", "--timestamps", "--tail=1"]);
    assert!(ts.ends_with(" started-mybusybox\n") && ts.starts_with("20"), "{ts}");
    // exec through the API server and the kubelet (WebSocket v5 from kubectl 1.32).
    assert_eq!(s.k(&["exec", "mybusybox", "--", "hostname"]), "mybusybox\n");
    let out = s.kubectl(&["exec", "mybusybox", "--", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("err\n"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(7), "kubectl exec passes the exit code on");
    assert_eq!(s.k_stdin(&["exec", "-i", "mybusybox", "--", "sh", "-c", "head -n1"], "piped-in\n"), "piped-in\n");
    // The end of kubectl's stdin reaches the process (v5's close-stdin, a FIN on the runtime's stdin stream).
    assert_eq!(s.k_stdin(&["exec", "-i", "mybusybox", "--", "sh", "-c", "wc -l"], "one\ntwo\nthree\n").trim(), "3");
    let err = s.k_err(&["logs", "mybusybox", "-c", "nope"]);
    assert!(err.contains("container nope is not valid for pod mybusybox"), "{err}");
}

#[test]
fn a_crashing_container_is_restarted_with_back_off() {
    let lab = Lab::start();
    let s = &lab.server;
    s.k(&["run", "crasher", &format!("--image={BUSYBOX}"), "--command", "--", "sh", "-c", "echo boom; exit 3"]);
    wait_for("crasher in CrashLoopBackOff with restarts", Duration::from_secs(90), || {
        let out = s.k(&["get", "pod", "crasher", "--no-headers"]);
        let cells: Vec<&str> = out.split_whitespace().collect();
        (cells.get(2) == Some(&"CrashLoopBackOff") && cells.get(3).and_then(|r| r.parse::<u32>().ok()).is_some_and(|r| r >= 1)).then_some(())
    });
    let last = jsonpath(&lab, &["pod", "crasher"], "{.status.containerStatuses[0].lastState.terminated.exitCode} {.status.phase}");
    assert_eq!(last, "3 Running");
    let prev = s.k(&["logs", "crasher", "--previous"]);
    assert_eq!(prev, "boom\n");
}

#[test]
fn deleting_a_pod_runs_pre_stop_then_sigterm_then_kills_after_the_grace_period() {
    let lab = Lab::start();
    let s = &lab.server;
    let dir = lab.agent.data_dir.join("observed");
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = |name: &str, on_term: &str, grace: u32| {
        format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}"}},"spec":{{"terminationGracePeriodSeconds":{grace},
              "volumes":[{{"name":"obs","hostPath":{{"path":"{dir}","type":"Directory"}}}}],
              "containers":[{{"name":"c","image":"{BUSYBOX}","volumeMounts":[{{"name":"obs","mountPath":"/obs"}}],
                "command":["sh","-c","trap '{on_term}' TERM; echo started > /obs/{name}; while true; do sleep 0.2; done"],
                "lifecycle":{{"preStop":{{"exec":{{"command":["sh","-c","echo prestop >> /obs/{name}"]}}}}}}}}]}}}}"#,
            dir = dir.display()
        )
    };
    // One container exits on SIGTERM; the other ignores it and is killed when the grace period ends.
    s.k_stdin(&["apply", "-f", "-"], &manifest("polite", "echo sigterm >> /obs/polite; exit 0", 30));
    s.k_stdin(&["apply", "-f", "-"], &manifest("stubborn", "echo ignored-sigterm >> /obs/stubborn", 2));
    for p in ["polite", "stubborn"] {
        wait_for(&format!("{p} started"), Duration::from_secs(60), || std::fs::read_to_string(dir.join(p)).ok().filter(|t| t.contains("started")));
    }
    s.k(&["delete", "pod", "polite", "stubborn", "--wait=true", "--timeout=60s"]);
    assert_eq!(std::fs::read_to_string(dir.join("polite")).unwrap(), "started\nprestop\nsigterm\n");
    assert_eq!(std::fs::read_to_string(dir.join("stubborn")).unwrap(), "started\nprestop\nignored-sigterm\n");
    let left = s.k(&["get", "pods", "--no-headers"]);
    assert!(left.trim().is_empty(), "{left}");
    // --grace-period=0 --force: the API object goes at once and the agent kills what is left.
    let marker = format!("{}", 40000 + std::process::id() % 20000);
    s.k(&["run", "forced", &format!("--image={BUSYBOX}"), "--command", "--", "sleep", &marker]);
    let running = || std::process::Command::new("pgrep").args(["-f", &format!("^sleep {marker}$")]).output().map(|o| o.status.success()).unwrap_or(false);
    wait_for("forced's process running", Duration::from_secs(60), || running().then_some(()));
    s.k(&["delete", "pod", "forced", "--grace-period=0", "--force"]);
    wait_for("forced's process gone", Duration::from_secs(30), || (!running()).then_some(()));
}

#[test]
fn a_container_over_its_memory_limit_is_oom_killed() {
    let lab = Lab::start();
    let s = &lab.server;
    s.k_stdin(
        &["apply", "-f", "-"],
        &format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"hog"}},"spec":{{"restartPolicy":"Never","containers":[{{"name":"c","image":"{BUSYBOX}",
               "command":["sh","-c","x=$(yes | head -c 200000000); echo survived"],"resources":{{"limits":{{"memory":"16Mi"}}}}}}]}}}}"#
        ),
    );
    wait_for("hog OOMKilled", Duration::from_secs(90), || {
        let r = jsonpath(&lab, &["pod", "hog"], "{.status.phase} {.status.containerStatuses[0].state.terminated.reason}");
        (r == "Failed OOMKilled").then_some(())
    });
    let table = s.k(&["get", "pod", "hog", "--no-headers"]);
    assert_eq!(table.split_whitespace().nth(2), Some("OOMKilled"), "{table}");
}

#[test]
fn restarting_the_agent_leaves_running_containers_alone() {
    let mut lab = Lab::start();
    lab.server.k(&["run", "steady", &format!("--image={BUSYBOX}"), "--command", "--", "sleep", "600"]);
    let before = wait_for("steady Running", Duration::from_secs(60), || {
        let out = jsonpath(&lab, &["pod", "steady"], "{.status.phase} {.status.containerStatuses[0].containerID}");
        out.strip_prefix("Running ").map(str::to_string)
    });
    lab.agent.restart();
    wait_for("the restarted agent renews its lease", Duration::from_secs(60), || {
        lab.agent.log_text().matches("container runtime connected").count().ge(&2).then_some(())
    });
    // Give the new agent a full sync: a status write would show up as a new containerID or restart.
    wait_for("the restarted kubelet serves logs", Duration::from_secs(60), || lab.server.kubectl(&["logs", "steady"]).status.success().then_some(()));
    let after = jsonpath(&lab, &["pod", "steady"], "{.status.phase} {.status.containerStatuses[0].containerID} {.status.containerStatuses[0].restartCount}");
    assert_eq!(after, format!("Running {before} 0"));
}

#[test]
fn liveness_failures_restart_and_readiness_gates_ready() {
    let lab = Lab::start();
    let s = &lab.server;
    let pod = |name: &str, cmd: &str, probe: &str, spec: &str| {
        format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}"}},"spec":{{"terminationGracePeriodSeconds":1,"containers":[{{"name":"c","image":"{BUSYBOX}",
               "command":["sh","-c","{cmd}"],"{probe}":{spec}}}]}}}}"#
        )
    };
    s.k_stdin(
        &["apply", "-f", "-"],
        &pod(
            "live",
            "touch /tmp/healthy; sleep 2; rm /tmp/healthy; sleep 600",
            "livenessProbe",
            r#"{"exec":{"command":["cat","/tmp/healthy"]},"periodSeconds":1,"failureThreshold":1}"#,
        ),
    );
    s.k_stdin(&["apply", "-f", "-"], &pod("ready", "sleep 600", "readinessProbe", r#"{"exec":{"command":["cat","/tmp/ready"]},"periodSeconds":1}"#));
    // Readiness: Running but not Ready while the probe fails (an Unhealthy event says so).
    wait_for("a failed readiness probe", Duration::from_secs(60), || {
        let ev = s.k(&["get", "events", "--field-selector", "involvedObject.name=ready,reason=Unhealthy", "-o", "jsonpath={.items[*].message}"]);
        ev.contains("Readiness probe failed").then_some(())
    });
    assert_eq!(jsonpath(&lab, &["pod", "ready"], "{.status.phase} {.status.containerStatuses[0].ready}"), "Running false");
    let conds = jsonpath(&lab, &["pod", "ready"], "{.status.conditions[?(@.type==\"Ready\")].status}");
    assert_eq!(conds, "False");
    s.k(&["exec", "ready", "--", "touch", "/tmp/ready"]);
    wait_for("ready becomes Ready", Duration::from_secs(30), || {
        (jsonpath(&lab, &["pod", "ready"], "{.status.conditions[?(@.type==\"Ready\")].status}") == "True").then_some(())
    });
    // Liveness: the container is killed and restarted; RESTARTS grows.
    wait_for("live restarted after failing its liveness probe", Duration::from_secs(90), || {
        let r = jsonpath(&lab, &["pod", "live"], "{.status.containerStatuses[0].restartCount}");
        r.parse::<u32>().ok().filter(|r| *r >= 1)
    });
    let ev = s.k(&["get", "events", "--field-selector", "involvedObject.name=live", "-o", "jsonpath={.items[*].message}"]);
    assert!(ev.contains("Liveness probe failed") && ev.contains("Container c failed liveness probe, will be restarted"), "{ev}");
}

#[test]
fn bad_input_gives_clear_events_and_the_agent_keeps_going() {
    let lab = Lab::start();
    let s = &lab.server;
    s.k(&["run", "noimage", "--image=r8s.test/does-not-exist:1"]);
    wait_for("ErrImagePull or ImagePullBackOff", Duration::from_secs(60), || {
        let r = jsonpath(&lab, &["pod", "noimage"], "{.status.containerStatuses[0].state.waiting.reason}");
        (r == "ErrImagePull" || r == "ImagePullBackOff").then_some(())
    });
    wait_for("ImagePullBackOff", Duration::from_secs(60), || {
        (jsonpath(&lab, &["pod", "noimage"], "{.status.containerStatuses[0].state.waiting.reason}") == "ImagePullBackOff").then_some(())
    });
    let ev = s.k(&["get", "events", "--field-selector", "involvedObject.name=noimage", "-o", "jsonpath={.items[*].message}"]);
    assert!(ev.contains("Failed to pull image \"r8s.test/does-not-exist:1\"") && ev.contains("Back-off pulling image"), "{ev}");
    // A volume that refers to a missing ConfigMap: a FailedMount event, the pod stays pending.
    s.k_stdin(
        &["apply", "-f", "-"],
        &format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"novol"}},"spec":{{"volumes":[{{"name":"cfg","configMap":{{"name":"missing"}}}}],
               "containers":[{{"name":"c","image":"{BUSYBOX}","command":["sleep","600"],"volumeMounts":[{{"name":"cfg","mountPath":"/cfg"}}]}}]}}}}"#
        ),
    );
    wait_for("a FailedMount event", Duration::from_secs(60), || {
        let ev = s.k(&["get", "events", "--field-selector", "involvedObject.name=novol,reason=FailedMount", "-o", "jsonpath={.items[*].message}"]);
        ev.contains("MountVolume.SetUp failed for volume \"cfg\" : configmap \"missing\" not found").then_some(())
    });
    assert_eq!(jsonpath(&lab, &["pod", "novol"], "{.status.phase}"), "Pending");
    // The agent is still healthy: a good pod runs.
    s.k(&["run", "fine", &format!("--image={BUSYBOX}"), "--command", "--", "sleep", "600"]);
    wait_for("fine Running", Duration::from_secs(60), || (jsonpath(&lab, &["pod", "fine"], "{.status.phase}") == "Running").then_some(()));
    s.k(&["create", "configmap", "missing", "--from-literal=k=v"]);
    wait_for("novol Running once its ConfigMap exists", Duration::from_secs(60), || {
        (jsonpath(&lab, &["pod", "novol"], "{.status.phase}") == "Running").then_some(())
    });
}

#[test]
fn volumes_env_and_init_containers_show_every_value() {
    let lab = Lab::start();
    let s = &lab.server;
    s.k(&["create", "configmap", "app-config", "--from-literal=greeting=hello"]);
    s.k(&["create", "secret", "generic", "app-secret", "--from-literal=password=s3cret"]);
    s.k_stdin(&["apply", "-f", "-"], r#"{"apiVersion":"v1","kind":"PersistentVolumeClaim","metadata":{"name":"data"},"spec":{"accessModes":["ReadWriteOnce"],"resources":{"requests":{"storage":"10Mi"}}}}"#);
    let pod = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"vol-demo","labels":{{"app":"vol-demo"}}}},"spec":{{
        "volumes":[{{"name":"cfg","configMap":{{"name":"app-config"}}}},{{"name":"sec","secret":{{"secretName":"app-secret"}}}},
                   {{"name":"info","downwardAPI":{{"items":[{{"path":"labels","fieldRef":{{"fieldPath":"metadata.labels"}}}},{{"path":"name","fieldRef":{{"fieldPath":"metadata.name"}}}}]}}}},
                   {{"name":"work","emptyDir":{{}}}},{{"name":"data","persistentVolumeClaim":{{"claimName":"data"}}}}],
        "initContainers":[{{"name":"init","image":"{BUSYBOX}","command":["sh","-c","echo init-done > /work/init.txt"],"volumeMounts":[{{"name":"work","mountPath":"/work"}}]}}],
        "containers":[
          {{"name":"main","image":"{BUSYBOX}","command":["sh","-c","echo $GREETING > /data/pvc.txt; sleep 600"],
            "resources":{{"limits":{{"memory":"64Mi","cpu":"500m"}}}},
            "env":[{{"name":"GREETING","valueFrom":{{"configMapKeyRef":{{"name":"app-config","key":"greeting"}}}}}},
                   {{"name":"PASSWORD","valueFrom":{{"secretKeyRef":{{"name":"app-secret","key":"password"}}}}}},
                   {{"name":"POD_NAME","valueFrom":{{"fieldRef":{{"fieldPath":"metadata.name"}}}}}},
                   {{"name":"NODE","valueFrom":{{"fieldRef":{{"fieldPath":"spec.nodeName"}}}}}},
                   {{"name":"MEM_LIMIT","valueFrom":{{"resourceFieldRef":{{"resource":"limits.memory","divisor":"1Mi"}}}}}},
                   {{"name":"COMPOSED","value":"$(POD_NAME)-on-$(NODE)"}}],
            "envFrom":[{{"prefix":"CFG_","configMapRef":{{"name":"app-config"}}}}],
            "volumeMounts":[{{"name":"cfg","mountPath":"/cfg"}},{{"name":"sec","mountPath":"/sec"}},{{"name":"info","mountPath":"/info"}},
                            {{"name":"work","mountPath":"/work"}},{{"name":"data","mountPath":"/data"}}]}},
          {{"name":"sidecar","image":"{BUSYBOX}","command":["sh","-c","cat /work/init.txt > /work/from-sidecar; sleep 600"],
            "volumeMounts":[{{"name":"work","mountPath":"/work"}}]}}]}}}}"#
    );
    s.k_stdin(&["apply", "-f", "-"], &pod);
    wait_for("vol-demo Running", Duration::from_secs(90), || (jsonpath(&lab, &["pod", "vol-demo"], "{.status.phase}") == "Running").then_some(()));
    let ex = |cmd: &str| s.k(&["exec", "vol-demo", "-c", "main", "--", "sh", "-c", cmd]);
    assert_eq!(ex("cat /cfg/greeting"), "hello");
    assert_eq!(ex("cat /sec/password"), "s3cret");
    assert_eq!(ex("cat /info/name"), "vol-demo");
    assert_eq!(ex("cat /info/labels"), "app=\"vol-demo\"");
    let node = lab.agent.node_name.clone();
    assert_eq!(
        ex("echo $GREETING $PASSWORD $CFG_greeting $POD_NAME $NODE $MEM_LIMIT $COMPOSED"),
        format!("hello s3cret hello vol-demo {node} 64 vol-demo-on-{node}\n")
    );
    assert_eq!(ex("cat /work/init.txt"), "init-done\n");
    wait_for("the sidecar's file in the shared emptyDir", Duration::from_secs(30), || {
        (ex("cat /work/from-sidecar 2>/dev/null || true") == "init-done\n").then_some(())
    });
    assert_eq!(ex("cat /data/pvc.txt"), "hello\n");
    let pvc = s.k(&["get", "pvc", "data", "-o", "jsonpath={.status.phase} {.spec.storageClassName} {.spec.volumeName}"]);
    assert!(pvc.starts_with("Bound local-path pvc-"), "{pvc}");
    let init = jsonpath(&lab, &["pod", "vol-demo"], "{.status.initContainerStatuses[0].state.terminated.reason}");
    assert_eq!(init, "Completed");
    // ConfigMap volumes follow the object; env vars keep the value they started with.
    s.k_stdin(&["apply", "-f", "-"], r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"app-config"},"data":{"greeting":"bonjour"}}"#);
    wait_for("the ConfigMap volume updated in place", Duration::from_secs(60), || (ex("cat /cfg/greeting") == "bonjour").then_some(()));
    assert_eq!(ex("echo $GREETING"), "hello\n");
}

#[test]
fn a_deployment_of_httpd_serves_every_pod_ip_to_another_pod() {
    let lab = Lab::start();
    let s = &lab.server;
    let deploy = format!(
        r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"web"}},"spec":{{"replicas":3,"selector":{{"matchLabels":{{"app":"web"}}}},
        "template":{{"metadata":{{"labels":{{"app":"web"}}}},"spec":{{"containers":[{{"name":"httpd","image":"{BUSYBOX}",
          "command":["sh","-c","echo served-by-$(hostname) > /www/index.html; exec httpd -f -p 80 -h /www"],
          "ports":[{{"containerPort":80,"name":"http"}}],
          "readinessProbe":{{"httpGet":{{"path":"/","port":"http"}},"periodSeconds":1}}}}]}}}}}}}}"#
    );
    s.k_stdin(&["apply", "-f", "-"], &deploy);
    wait_for("web 3/3 Ready", Duration::from_secs(120), || {
        let out = s.k(&["get", "deployment", "web", "--no-headers"]);
        out.split_whitespace().nth(1).filter(|r| *r == "3/3").map(|_| ())
    });
    s.k(&["run", "client", &format!("--image={BUSYBOX}"), "--command", "--", "sleep", "600"]);
    wait_for("client Running", Duration::from_secs(60), || (jsonpath(&lab, &["pod", "client"], "{.status.phase}") == "Running").then_some(()));
    let pods = s.k(&["get", "pods", "-l", "app=web", "-o", "jsonpath={range .items[*]}{.metadata.name} {.status.podIP}{\"\\n\"}{end}"]);
    let pods: Vec<(String, String)> = pods.lines().filter_map(|l| l.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string()))).collect();
    assert_eq!(pods.len(), 3, "{pods:?}");
    // (No `-T`: Debian's busybox-static wget crashes on it.)
    for (name, ip) in &pods {
        let page = s.k(&["exec", "client", "--", "wget", "-qO-", &format!("http://{ip}/")]);
        assert_eq!(page, format!("served-by-{name}\n"));
    }
    // kubectl's own view agrees: READY 1/1 and an IP for every replica.
    let wide = s.k(&["get", "pods", "-l", "app=web", "-o", "wide", "--no-headers"]);
    for line in wide.lines() {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!((cells[1], cells[2]), ("1/1", "Running"), "{line}");
        assert!(cells[5].starts_with("10.244."), "{line}");
    }
}

#[test]
fn a_static_pod_manifest_runs_and_appears_as_a_mirror_pod() {
    let lab = Lab::start();
    let s = &lab.server;
    let dir = lab.agent.data_dir.join("manifests");
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = |msg: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: static-web\n  namespace: kube-system\n  labels:\n    role: static\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: web\n    image: {BUSYBOX}\n    command: [\"sh\", \"-c\", \"echo {msg}; sleep 600\"]\n"
        )
    };
    std::fs::write(dir.join("static-web.yaml"), manifest("version-one")).unwrap();
    let name = format!("static-web-{}", lab.agent.node_name);
    wait_for("the mirror pod Running", Duration::from_secs(60), || {
        (jsonpath(&lab, &["pod", "-n", "kube-system", &name], "{.status.phase}") == "Running").then_some(())
    });
    let ann =
        jsonpath(&lab, &["pod", "-n", "kube-system", &name], "{.metadata.annotations.kubernetes\\.io/config\\.source} {.metadata.ownerReferences[0].kind}");
    assert_eq!(ann, "file Node");
    let mirror = jsonpath(&lab, &["pod", "-n", "kube-system", &name], "{.metadata.annotations.kubernetes\\.io/config\\.mirror}");
    assert_eq!(mirror.len(), 32, "{mirror}");
    wait_for("its output", Duration::from_secs(30), || (s.k(&["logs", "-n", "kube-system", &name]) == "version-one\n").then_some(()));
    // Editing the file replaces the pod.
    std::fs::write(dir.join("static-web.yaml"), manifest("version-two")).unwrap();
    wait_for("the edited static pod's output", Duration::from_secs(90), || {
        let out = s.kubectl(&["logs", "-n", "kube-system", &name]);
        (String::from_utf8_lossy(&out.stdout) == "version-two\n").then_some(())
    });
    // Removing the file removes the pod.
    std::fs::remove_file(dir.join("static-web.yaml")).unwrap();
    wait_for("the mirror pod gone", Duration::from_secs(90), || {
        let out = s.kubectl(&["get", "pod", "-n", "kube-system", &name]);
        (!out.status.success()).then_some(())
    });
}

#[test]
fn kubectl_top_shows_cpu_of_a_busy_pod() {
    let lab = Lab::start();
    let s = &lab.server;
    s.k(&["run", "busy", &format!("--image={BUSYBOX}"), "--command", "--", "sh", "-c", "while true; do :; done"]);
    wait_for("busy Running", Duration::from_secs(60), || (jsonpath(&lab, &["pod", "busy"], "{.status.phase}") == "Running").then_some(()));
    let cpu = wait_for("kubectl top pod with non-zero CPU", Duration::from_secs(60), || {
        let out = s.kubectl(&["top", "pod", "busy", "--no-headers"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let milli: u64 = text.split_whitespace().nth(1)?.trim_end_matches('m').parse().ok()?;
        (milli > 100).then_some(milli)
    });
    assert!(cpu <= 2100, "a single busy loop uses at most the machine: {cpu}m");
    let node = s.k(&["top", "node", "--no-headers"]);
    let cells: Vec<&str> = node.split_whitespace().collect();
    assert_eq!(cells[0], lab.agent.node_name);
    assert!(cells[1].ends_with('m') && cells[3].ends_with("Mi"), "{node}");
    let containers = s.k(&["top", "pod", "busy", "--containers", "--no-headers"]);
    assert!(containers.starts_with("busy ") && containers.split_whitespace().nth(1) == Some("busy"), "{containers}");
}

#[test]
fn images_are_pulled_from_a_registry_honouring_pull_policy() {
    use r8s_tests::lab::Registry;
    let lab = Lab::start_with(|ns| vec!["--insecure-registry".into(), format!("{}:5000", ns.node_ip())]);
    let reg = Registry::start(&lab.agent.ns, &lab.agent.data_dir.join("registry"));
    let bin = std::fs::read("/usr/bin/busybox").unwrap();
    let img = r8s_kubelet::images::build_image(
        "app",
        &[("/bin/busybox", 0o755, &bin)],
        &[("/bin/sh", "busybox"), ("/bin/sleep", "busybox"), ("/bin/echo", "busybox")],
        &["/bin/sh"],
        &["PATH=/bin"],
    )
    .unwrap();
    reg.push("app", "1", &img);
    assert!(lab.agent.data_dir.join("agent/registries.d").join(&reg.addr).join("hosts.toml").exists(), "--insecure-registry writes a hosts.toml");
    let s = &lab.server;
    let image = format!("{}/app:1", reg.addr);
    s.k(&["run", "pulled", &format!("--image={image}"), "--image-pull-policy=Always", "--command", "--", "sh", "-c", "echo from-registry; sleep 600"]);
    wait_for("pulled Running", Duration::from_secs(90), || (jsonpath(&lab, &["pod", "pulled"], "{.status.phase}") == "Running").then_some(()));
    let ev = s.k(&["get", "events", "--field-selector", "involvedObject.name=pulled", "-o", "jsonpath={.items[*].message}"]);
    assert!(ev.contains(&format!("Pulling image \"{image}\"")) && ev.contains(&format!("Successfully pulled image \"{image}\"")), "{ev}");
    let image_id = jsonpath(&lab, &["pod", "pulled"], "{.status.containerStatuses[0].imageID}");
    assert!(image_id.contains("sha256:"), "{image_id}");
    // IfNotPresent with the image present: no pull, the kubelet says so.
    s.k(&["run", "cached", &format!("--image={image}"), "--image-pull-policy=IfNotPresent", "--command", "--", "sleep", "600"]);
    wait_for("cached Running", Duration::from_secs(60), || (jsonpath(&lab, &["pod", "cached"], "{.status.phase}") == "Running").then_some(()));
    let ev = s.k(&["get", "events", "--field-selector", "involvedObject.name=cached", "-o", "jsonpath={.items[*].message}"]);
    assert!(ev.contains("already present on machine") && !ev.contains("Pulling"), "{ev}");
    // A tag the registry does not have.
    s.k(&["run", "missing", &format!("--image={}/app:nope", reg.addr)]);
    wait_for("ErrImagePull / ImagePullBackOff", Duration::from_secs(60), || {
        let r = jsonpath(&lab, &["pod", "missing"], "{.status.containerStatuses[0].state.waiting.reason}");
        (r == "ErrImagePull" || r == "ImagePullBackOff").then_some(())
    });
}

/// Reads kubectl port-forward's "Forwarding from 127.0.0.1:LOCAL -> REMOTE" lines until every
/// remote port has its local one.
fn forwarded_ports(stdout: std::process::ChildStdout, remotes: &[u16]) -> Option<std::collections::HashMap<u16, u16>> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Keep reading after the ports are known: kubectl dies of SIGPIPE if nobody reads its
        // "Handling connection" lines.
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut found = std::collections::HashMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while found.len() < remotes.len() {
        let line = rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())).ok()?;
        if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:")
            && let Some((local, remote)) = rest.split_once(" -> ")
        {
            found.insert(remote.trim().parse().unwrap(), local.parse().unwrap());
        }
    }
    Some(found)
}

/// Runs a streaming kubectl command until its output has a line with `want` (then kills it).
fn stream_until(lab: &Lab, args: &[&str], want: &str) -> String {
    use std::io::BufRead;
    let mut child = std::process::Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", &lab.server.kubeconfig)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut seen = String::new();
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(want) {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    seen
}

/// A busybox httpd pod serving "forwarded-page" on port 80.
fn run_httpd(s: &r8s_tests::TestServer, name: &str) {
    let script = "mkdir -p /www; echo forwarded-page > /www/index.html; exec httpd -f -p 80 -h /www";
    s.k(&["run", name, &format!("--image={BUSYBOX}"), "--command", "--", "sh", "-c", script]);
}

/// One HTTP/1.0 request over the forwarded local port (loopback only), the whole answer back.
fn http_get(port: u16) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn port_forward_cp_attach_logs_follow_and_exec_with_a_tty() {
    let lab = Lab::start();
    let s = &lab.server;
    run_httpd(s, "pf");
    wait_for("pf Running", Duration::from_secs(90), || (jsonpath(&lab, &["pod", "pf"], "{.status.phase}") == "Running").then_some(()));

    // kubectl port-forward (SPDY tunnelled in a WebSocket, kubectl's default since 1.31): two
    // connections over one session reach httpd in the pod; a port nobody listens on reports
    // the error on kubectl's side.
    let stderr_path = lab.agent.data_dir.join("port-forward.stderr");
    let mut pf = std::process::Command::new("kubectl")
        .args(["port-forward", "pod/pf", ":80", ":81"])
        .env("KUBECONFIG", &s.kubeconfig)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let Some(ports) = forwarded_ports(pf.stdout.take().unwrap(), &[80, 81]) else {
        panic!("kubectl port-forward did not print its ports: {}", std::fs::read_to_string(&stderr_path).unwrap_or_default());
    };
    for _ in 0..2 {
        let answer = http_get(ports[&80]);
        assert!(
            answer.starts_with("HTTP/1.") && answer.contains(" 200 ") && answer.ends_with("forwarded-page\n"),
            "{answer:?}; kubectl: {}\nagent: {}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default(),
            lab.agent.log_text()
        );
    }
    let refused = http_get(ports[&81]);
    assert!(!refused.contains("forwarded-page"), "{refused}");
    let err = wait_for("kubectl reports the refused port", Duration::from_secs(30), || {
        std::fs::read_to_string(&stderr_path).ok().filter(|t| t.contains("error forwarding port 81"))
    });
    assert!(err.contains("an error occurred forwarding") && err.contains("-> 81"), "{err}");
    let _ = pf.kill();
    let _ = pf.wait();

    // kubectl cp both ways (tar through exec).
    let local = lab.agent.data_dir.join("to-pod.txt");
    std::fs::write(&local, "copied into the pod\n").unwrap();
    s.k(&["cp", local.to_str().unwrap(), "pf:/tmp/copied.txt"]);
    assert_eq!(s.k(&["exec", "pf", "--", "cat", "/tmp/copied.txt"]), "copied into the pod\n");
    let back = lab.agent.data_dir.join("from-pod.txt");
    s.k(&["cp", "pf:/www/index.html", back.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "forwarded-page\n");

    // logs -f and attach stream what a running container prints, as it prints it.
    s.k(&["run", "ticker", &format!("--image={BUSYBOX}"), "--command", "--", "sh", "-c", "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.3; done"]);
    wait_for("ticker Running", Duration::from_secs(60), || (jsonpath(&lab, &["pod", "ticker"], "{.status.phase}") == "Running").then_some(()));
    let followed = stream_until(&lab, &["logs", "-f", "ticker"], "tick-5");
    assert!(followed.starts_with("tick-0\n") && followed.contains("tick-5"), "{followed}");
    let attached = stream_until(&lab, &["attach", "ticker"], "tick-");
    let n: u32 = attached.lines().find_map(|l| l.strip_prefix("tick-")).and_then(|n| n.trim().parse().ok()).expect("a tick line from attach");
    assert!(n >= 5, "attach shows lines printed after it connected, not the log: {attached}");

    // exec -it: kubectl on a pseudo-terminal (script(1) gives it one) gets a TTY in the container.
    let out = std::process::Command::new("script")
        .args(["-qec", "kubectl exec -it pf -- sh", "/dev/null"])
        .env("KUBECONFIG", &s.kubeconfig)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"echo typed-$((6*7)); tty; exit\n")?;
            c.wait_with_output()
        })
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("typed-42") && text.contains("/dev/pts/"), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
}

/// The official Python client's exec, attach and port-forward, and a WebSocket client of our own
/// over every subprotocol clients offer, compared message by message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_websocket_clients_exec_attach_and_port_forward() {
    use r8s_tests::ws;
    let lab = Lab::start();
    let s = &lab.server;
    run_httpd(s, "web");
    s.k(&["run", "ticker", &format!("--image={BUSYBOX}"), "--command", "--", "sh", "-c", "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.3; done"]);
    for p in ["web", "ticker"] {
        wait_for(&format!("{p} Running"), Duration::from_secs(90), || (jsonpath(&lab, &["pod", p], "{.status.phase}") == "Running").then_some(()));
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/streams.py");
    // Bounded: a client that hangs fails the test with what it printed.
    let out = tokio::process::Command::new("timeout")
        .args(["120", "python3", "-u"])
        .arg(&script)
        .arg(&s.kubeconfig)
        .args(["web", "ticker"])
        .output()
        .await
        .expect("python3");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("python streams ok"),
        "python streams failed:\n{}\n{}\nagent: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        lab.agent.log_text()
    );

    // exec over each subprotocol: the opening empty stdout message, the output on its channels,
    // the exit status (a v4 Status, or before v4 only the failure's text) and a normal close.
    let exec = "/api/v1/namespaces/default/pods/web/exec?command=sh&command=-c&command=echo%20out%3B%20echo%20err%20%3E%262%3B%20exit%203&stdout=True&stderr=1";
    // Go's encoder escapes '>' and '&' in the Status it writes.
    let failure = br#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c echo out; echo err \u003e\u00262; exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;
    for (offered, negotiated, b64, status_json) in [
        (vec!["v5.channel.k8s.io", "v4.channel.k8s.io"], Some("v5.channel.k8s.io"), false, true),
        (vec!["v4.channel.k8s.io"], Some("v4.channel.k8s.io"), false, true),
        (vec!["v4.base64.channel.k8s.io"], Some("v4.base64.channel.k8s.io"), true, true),
        (vec!["v3.channel.k8s.io"], Some("v3.channel.k8s.io"), false, false),
        (vec!["v2.channel.k8s.io"], Some("v2.channel.k8s.io"), false, false),
        (vec!["channel.k8s.io"], Some("channel.k8s.io"), false, false),
        (vec!["base64.channel.k8s.io"], Some("base64.channel.k8s.io"), true, false),
        (vec![], None, false, false),
    ] {
        let (proto, mut sock) = ws::connect(&s.kubeconfig, exec, &offered).await.unwrap_or_else(|e| panic!("{offered:?}: {e}"));
        assert_eq!(proto.as_deref(), negotiated);
        let (msgs, close) = ws::drain(&mut sock, b64, Duration::from_secs(30)).await;
        assert_eq!(msgs.first(), Some(&(1u8, vec![])), "{offered:?}: the session opens with an empty stdout message");
        assert_eq!(ws::channel(&msgs, 1), b"out\n", "{offered:?}");
        assert_eq!(ws::channel(&msgs, 2), b"err\n", "{offered:?}");
        let status = ws::channel(&msgs, 3);
        if status_json {
            assert_eq!(String::from_utf8_lossy(&status), String::from_utf8_lossy(failure), "{offered:?}");
        } else {
            let v: serde_json::Value = serde_json::from_slice(failure).unwrap();
            assert_eq!(String::from_utf8_lossy(&status), v["message"].as_str().unwrap(), "{offered:?}");
        }
        assert_eq!(close, Some(1000), "{offered:?}");
    }
    // A subprotocol nobody speaks is refused before the upgrade.
    let err = ws::connect(&s.kubeconfig, exec, &["v9.channel.k8s.io"]).await.err().unwrap_or_else(|| panic!("refused"));
    assert!(err.starts_with("400") && err.contains("no supported WebSocket subprotocol"), "{err}");
    // stdin with v5's close, and the exit status of a command that succeeds.
    let (_, mut sock) =
        ws::connect(&s.kubeconfig, "/api/v1/namespaces/default/pods/web/exec?command=wc&command=-l&stdin=true&stdout=true", &["v5.channel.k8s.io"])
            .await
            .unwrap();
    ws::send(&mut sock, 0, b"one\ntwo\n").await;
    ws::send(&mut sock, 255, &[0]).await;
    let (msgs, _) = ws::drain(&mut sock, false, Duration::from_secs(30)).await;
    assert_eq!(String::from_utf8_lossy(&ws::channel(&msgs, 1)).trim(), "2");
    assert_eq!(ws::channel(&msgs, 3), br#"{"metadata":{},"status":"Success"}"#);
    // The resize channel sets the TTY's size.
    let (_, mut sock) = ws::connect(
        &s.kubeconfig,
        "/api/v1/namespaces/default/pods/web/exec?command=sh&command=-c&command=sleep%201%3B%20stty%20size&stdin=true&stdout=true&tty=true",
        &["v4.channel.k8s.io"],
    )
    .await
    .unwrap();
    ws::send(&mut sock, 4, br#"{"Width":100,"Height":40}"#).await;
    let (msgs, _) = ws::drain(&mut sock, false, Duration::from_secs(30)).await;
    assert_eq!(String::from_utf8_lossy(&ws::channel(&msgs, 1)).trim(), "40 100");
    // No stream asked for: upstream's 400.
    let err = ws::connect(&s.kubeconfig, "/api/v1/namespaces/default/pods/web/exec?command=true&stdout=false", &["v4.channel.k8s.io"]).await.err().unwrap();
    assert!(err.starts_with("400") && err.contains("you must specify at least 1 of stdin, stdout, stderr"), "{err}");

    // Port-forward over the channel protocol: per port a data and an error channel, each
    // opened with its port (little endian); 80 answers, 81 reports its error, then a close.
    let (proto, mut sock) = ws::connect(&s.kubeconfig, "/api/v1/namespaces/default/pods/web/portforward?ports=80,81", &["v4.channel.k8s.io"]).await.unwrap();
    assert_eq!(proto.as_deref(), Some("v4.channel.k8s.io"));
    ws::send(&mut sock, 0, b"GET / HTTP/1.0\r\n\r\n").await;
    let (msgs, close) = ws::drain(&mut sock, false, Duration::from_secs(30)).await;
    assert_eq!(&msgs[..4], &[(0, vec![80, 0]), (1, vec![80, 0]), (2, vec![81, 0]), (3, vec![81, 0])]);
    let page = String::from_utf8_lossy(&ws::channel(&msgs[4..], 0)).into_owned();
    assert!(page.starts_with("HTTP/1.") && page.ends_with("forwarded-page\n"), "{page}");
    let refused = String::from_utf8_lossy(&ws::channel(&msgs[4..], 3)).into_owned();
    assert!(refused.contains("error forwarding port 81"), "{refused}");
    assert!(ws::channel(&msgs[4..], 1).is_empty() && ws::channel(&msgs[4..], 2).is_empty());
    assert_eq!(close, Some(1000));
    for offered in [vec!["v5.channel.k8s.io"], vec!["portforward.k8s.io"], vec![]] {
        let (_, mut sock) = ws::connect(&s.kubeconfig, "/api/v1/namespaces/default/pods/web/portforward?ports=80", &offered).await.unwrap();
        ws::send(&mut sock, 0, b"GET / HTTP/1.0\r\n\r\n").await;
        let (msgs, _) = ws::drain(&mut sock, false, Duration::from_secs(30)).await;
        assert!(String::from_utf8_lossy(&ws::channel(&msgs[2..], 0)).ends_with("forwarded-page\n"), "{offered:?}: {msgs:?}");
    }
    let err = ws::connect(&s.kubeconfig, "/api/v1/namespaces/default/pods/web/portforward?ports=http", &["v4.channel.k8s.io"]).await.err().unwrap();
    assert!(err.starts_with("400") && err.contains(r#"unable to parse \"http\" as a port"#), "{err}");
}
