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
    let err = s.k_err(&["logs", "mybusybox", "-c", "nope"]);
    assert!(err.contains("container nope is not valid for pod mybusybox"), "{err}");
}
