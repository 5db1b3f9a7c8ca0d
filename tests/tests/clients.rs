//! Clients nobody here wrote: the official Python client and kube-rs.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use r8s_tests::TestServer;

#[test]
fn official_python_client() {
    let s = TestServer::start();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/client_flows.py");
    let out = std::process::Command::new("python3").arg(&script).arg(&s.kubeconfig).output().expect("python3");
    assert!(out.status.success(), "python client flows failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("python client flows ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_watcher_and_server_side_apply() {
    let s = TestServer::start();
    let client = s.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    // A kube-runtime watcher sees creates, updates and deletes in order.
    let mut stream = watcher(cms.clone(), watcher::Config::default().labels("feed=yes")).boxed();
    // The initial (empty) list completes first.
    loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.try_next()).await.unwrap().unwrap().unwrap() {
            watcher::Event::InitDone => break,
            _ => continue,
        }
    }
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": "fed", "labels": {"feed": "yes"}}, "data": {"a": "1"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    cms.patch("fed", &PatchParams::default(), &Patch::Merge(serde_json::json!({"data": {"a": "2"}}))).await.unwrap();
    cms.delete("fed", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(20), stream.try_next()).await.expect("watch event").unwrap().unwrap() {
            watcher::Event::Apply(c) => seen.push(format!("apply {}", c.data.unwrap()["a"])),
            watcher::Event::Delete(c) => seen.push(format!("delete {}", c.metadata.name.unwrap())),
            _ => {}
        }
    }
    assert_eq!(seen, vec!["apply 1", "apply 2", "delete fed"]);

    // Server-side apply through Api::patch: create, conflict between managers, force.
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let desired = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "rs-app"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "rs"}},
                 "template": {"metadata": {"labels": {"app": "rs"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1.21.1"}]}}}
    });
    let d = deps.patch("rs-app", &PatchParams::apply("rs-manager"), &Patch::Apply(&desired)).await.unwrap();
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(2));
    let mf = d.metadata.managed_fields.unwrap();
    assert_eq!(mf[0].manager.as_deref(), Some("rs-manager"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
    let other = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "rs-app"}, "spec": {"replicas": 5}});
    let err = deps.patch("rs-app", &PatchParams::apply("intruder"), &Patch::Apply(&other)).await.unwrap_err();
    match err {
        kube::Error::Api(e) => {
            assert_eq!(e.code, 409);
            assert_eq!(e.reason, "Conflict");
        }
        other => panic!("unexpected {other:?}"),
    }
    let forced = deps.patch("rs-app", &PatchParams::apply("intruder").force(), &Patch::Apply(&other)).await.unwrap();
    assert_eq!(forced.spec.unwrap().replicas, Some(5));
}
