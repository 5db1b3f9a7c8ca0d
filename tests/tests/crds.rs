//! CustomResourceDefinitions as installers and operators use them: Established reached through
//! a watch (what `kubectl wait` and client libraries do) with the resources served at once,
//! names another CRD holds refused with upstream's reason, and deletion that removes every
//! custom resource first so the CRD can come back (even with another scope).

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, PostParams, WatchEvent, WatchParams};
use kube::discovery::ApiResource;
use r8s_tests::{TestServer, wait_for};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);

fn crd(plural: &str, kind: &str, scope: &str, short: &[&str]) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.example.com")},
        "spec": {"group": "example.com", "scope": scope,
            "names": {"plural": plural, "kind": kind, "shortNames": short},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    })
}

fn condition(crd: &CustomResourceDefinition, ty: &str) -> Option<(String, String, String)> {
    let c = crd.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == ty)?;
    Some((c.status.clone(), c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default()))
}

fn widgets() -> ApiResource {
    ApiResource { group: "example.com".into(), version: "v1".into(), api_version: "example.com/v1".into(), kind: "Widget".into(), plural: "widgets".into() }
}

#[tokio::test]
async fn a_crd_becomes_established_through_a_watch_and_serves_at_once() {
    let s = TestServer::start();
    let c = s.client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    // Watch first, as an installer waiting for its CRD does.
    let mut w = crds.watch(&WatchParams::default().fields("metadata.name=widgets.example.com"), "0").await.unwrap().boxed();
    let created = crds.create(&PostParams::default(), &serde_json::from_value(crd("widgets", "Widget", "Namespaced", &["wd"])).unwrap()).await.unwrap();
    let status = created.status.clone().unwrap_or_default();
    assert_eq!(status.stored_versions, Some(vec!["v1".to_string()]));
    let established = tokio::time::timeout(T, async {
        while let Some(ev) = w.try_next().await.unwrap() {
            if let WatchEvent::Added(o) | WatchEvent::Modified(o) = ev
                && condition(&o, "Established").is_some_and(|c| c.0 == "True")
            {
                return o;
            }
        }
        panic!("watch ended before Established");
    })
    .await
    .expect("Established within the deadline");
    assert_eq!(condition(&established, "Established").unwrap(), ("True".into(), "InitialNamesAccepted".into(), "the initial names have been accepted".into()));
    assert_eq!(condition(&established, "NamesAccepted").unwrap(), ("True".into(), "NoConflicts".into(), "no conflicts found".into()));
    let accepted = established.status.unwrap().accepted_names.unwrap();
    assert_eq!((accepted.plural.as_str(), accepted.kind.as_str(), accepted.list_kind.as_deref()), ("widgets", "Widget", Some("WidgetList")));
    assert_eq!(accepted.short_names, Some(vec!["wd".to_string()]));
    // A custom resource right after.
    let api: Api<DynamicObject> = Api::namespaced_with(c.clone(), "default", &widgets());
    let w1: DynamicObject =
        serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}})).unwrap();
    api.create(&PostParams::default(), &w1).await.unwrap();
    // kubectl: a file with the CRD applied, then `kubectl wait` as installers do, then its resource.
    let gadgets = serde_json::to_string(&crd("gadgets", "Gadget", "Namespaced", &[])).unwrap();
    s.k_stdin(&["apply", "-f", "-"], &gadgets);
    assert_eq!(
        s.k(&["wait", "--for=condition=established", "crd/gadgets.example.com", "--timeout=30s"]).trim(),
        "customresourcedefinition.apiextensions.k8s.io/gadgets.example.com condition met"
    );
    assert_eq!(s.k_stdin(&["create", "-f", "-"], "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g1}\n").trim(), "gadget.example.com/g1 created");
    assert_eq!(s.k(&["get", "wd", "-o", "name"]).trim(), "widget.example.com/w1");
}

#[test]
fn names_another_crd_holds_are_not_accepted_until_it_goes() {
    let s = TestServer::start();
    s.k_stdin(&["apply", "-f", "-"], &serde_json::to_string(&crd("widgets", "Widget", "Namespaced", &["wd"])).unwrap());
    s.k(&["wait", "--for=condition=established", "crd/widgets.example.com", "--timeout=30s"]);
    // Same kind in the same group (with a list kind of its own): upstream's KindConflict.
    let mut gizmos = crd("gizmos", "Widget", "Namespaced", &[]);
    gizmos["spec"]["names"]["listKind"] = json!("GizmoList");
    s.k_stdin(&["apply", "-f", "-"], &serde_json::to_string(&gizmos).unwrap());
    let conds = wait_for("gizmos NamesAccepted False", T, || {
        let out = s.k(&["get", "crd", "gizmos.example.com", "-o", "jsonpath={.status.conditions}"]);
        out.contains("KindConflict").then_some(out)
    });
    let conds: Value = serde_json::from_str(&conds).unwrap();
    let find = |ty: &str| conds.as_array().unwrap().iter().find(|c| c["type"] == ty).cloned().unwrap();
    assert_eq!((&find("NamesAccepted")["status"], &find("NamesAccepted")["message"]), (&json!("False"), &json!("\"Widget\" is already in use")));
    assert_eq!((&find("Established")["status"], &find("Established")["reason"]), (&json!("False"), &json!("NotAccepted")));
    let err = s.k_err(&["get", "gizmos"]);
    assert!(err.contains("the server doesn't have a resource type \"gizmos\""), "not served: {err}");
    // Once the holder is deleted, the names are free and the waiting CRD is established.
    s.k(&["delete", "crd", "widgets.example.com"]);
    s.k(&["wait", "--for=condition=established", "crd/gizmos.example.com", "--timeout=30s"]);
    assert_eq!(s.k(&["get", "crd", "gizmos.example.com", "-o", "jsonpath={.status.acceptedNames.kind}"]), "Widget");
}

#[tokio::test]
async fn deleting_a_crd_removes_its_resources_first_and_it_can_come_back_with_another_scope() {
    let s = TestServer::start();
    let c = s.client().await;
    s.k_stdin(&["apply", "-f", "-"], &serde_json::to_string(&crd("widgets", "Widget", "Namespaced", &["wd"])).unwrap());
    s.k(&["wait", "--for=condition=established", "crd/widgets.example.com", "--timeout=30s"]);
    s.k_stdin(&["create", "-f", "-"], "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: plain}\n");
    s.k_stdin(&["create", "-f", "-"], "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: held, finalizers: [example.com/hold]}\n");
    s.k(&["delete", "crd", "widgets.example.com", "--wait=false"]);
    // Terminating while the instances go: the plain one at once, the held one marked.
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    let terminating = wait_for("InstanceDeletionInProgress", T, || {
        let out = s.k(&["get", "crd", "widgets.example.com", "-o", "jsonpath={.status.conditions[?(@.type==\"Terminating\")].reason}"]);
        (out == "InstanceDeletionInProgress").then_some(out)
    });
    assert_eq!(terminating, "InstanceDeletionInProgress");
    let current = crds.get("widgets.example.com").await.unwrap();
    assert_eq!(current.metadata.finalizers, Some(vec!["customresourcecleanup.apiextensions.k8s.io".to_string()]));
    let api: Api<DynamicObject> = Api::namespaced_with(c.clone(), "default", &widgets());
    wait_for("the plain widget deleted", T, || {
        let names = s.k(&["get", "widgets", "-o", "jsonpath={.items[*].metadata.name}"]);
        (names == "held").then_some(())
    });
    assert!(api.get("held").await.unwrap().metadata.deletion_timestamp.is_some());
    // No new instances while it terminates.
    let out = s.kubectl_stdin(&["create", "-f", "-"], "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: late}\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("create not allowed while custom resource definition is terminating"), "{err}");
    // The instance's own finalizer goes: then the CRD goes.
    s.k(&["patch", "widget", "held", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
    s.k(&["wait", "--for=delete", "crd/widgets.example.com", "--timeout=30s"]);
    // Back, cluster-scoped: served at once, with nothing left of the namespaced instances.
    s.k_stdin(&["apply", "-f", "-"], &serde_json::to_string(&crd("widgets", "Widget", "Cluster", &["wd"])).unwrap());
    s.k(&["wait", "--for=condition=established", "crd/widgets.example.com", "--timeout=30s"]);
    let cluster: Api<DynamicObject> = Api::all_with(c.clone(), &widgets());
    assert!(cluster.list(&Default::default()).await.unwrap().items.is_empty());
    let w: DynamicObject = serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "global"}})).unwrap();
    let made = cluster.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(made.metadata.namespace, None);
}
