//! State several API servers must share lives in the store, not in one process: Service
//! address and port allocations, and the set of served custom resources. A restarted server
//! reads both back.

use std::time::Duration;

use r8s_tests::{TestServer, wait_for};

#[test]
fn allocations_and_served_crds_survive_a_restart() {
    let mut s = TestServer::start();
    s.k_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  type: NodePort\n  selector: {app: web}\n  ports: [{port: 80}]\n",
    );
    let ip = s.k(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let port = s.k(&["get", "svc", "web", "-o", "jsonpath={.spec.ports[0].nodePort}"]);
    assert!(!ip.is_empty() && !port.is_empty());
    let crd = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: gadgets.example.com}\nspec:\n  group: example.com\n  scope: Namespaced\n  names: {plural: gadgets, singular: gadget, kind: Gadget}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}\n";
    s.k_stdin(&["apply", "-f", "-"], crd);
    // The CRD's write is answered once its resources are served.
    s.k_stdin(&["apply", "-f", "-"], "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g1}\nspec: {size: 1}\n");

    s.kill_and_restart();

    // Served right after the restart, from the stored CRDs.
    assert_eq!(s.k(&["get", "gadgets", "-o", "jsonpath={.items[*].metadata.name}"]), "g1");
    // The address and the port are still taken.
    let svc = |name: &str, spec: &str| format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n{spec}");
    let out = s.kubectl_stdin(&["create", "-f", "-"], &svc("same-ip", &format!("  clusterIP: {ip}\n  ports: [{{port: 80}}]\n")));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("spec.clusterIPs: Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: provided IP is already allocated")),
        "{err}"
    );
    let out = s.kubectl_stdin(&["create", "-f", "-"], &svc("same-port", &format!("  type: NodePort\n  ports: [{{port: 80, nodePort: {port}}}]\n")));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("spec.ports[0].nodePort: Invalid value: {port}: provided port is already allocated")), "{err}");
    // Deleting the Service frees both, for the next one.
    s.k(&["delete", "svc", "web"]);
    s.k_stdin(&["create", "-f", "-"], &svc("reuse", &format!("  type: NodePort\n  clusterIP: {ip}\n  ports: [{{port: 80, nodePort: {port}}}]\n")));
    // And a deleted CRD stops being served.
    s.k(&["delete", "crd", "gadgets.example.com"]);
    wait_for("gadgets no longer served", Duration::from_secs(30), || (!s.kubectl(&["get", "gadgets"]).status.success()).then_some(()));
}
