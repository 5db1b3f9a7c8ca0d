//! LIST and WATCH come from the watch cache: proven with the store's read counter, and paging
//! stays consistent at the first page's revision.

use r8s_tests::{TestServer, raw};
use serde_json::json;

async fn store_reads(c: &kube::Client) -> u64 {
    let (_, m) = raw(c, "GET", "/metrics", "application/json", vec![]).await;
    let text = m.as_str().unwrap().to_string();
    text.lines().find(|l| l.starts_with("r8s_store_reads_total ")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap()
}

async fn create_cm(c: &kube::Client, name: &str, labels: serde_json::Value) {
    let body = serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}})).unwrap();
    let (code, v) = raw(c, "POST", "/api/v1/namespaces/default/configmaps", "application/json", body).await;
    assert_eq!(code, 201, "{v}");
}

#[tokio::test]
async fn list_is_served_from_cache_and_pages_are_consistent() {
    let s = TestServer::start();
    let c = s.client().await;
    for i in 0..5 {
        create_cm(&c, &format!("cm-{i}"), json!({"i": i.to_string()})).await;
    }
    let before = store_reads(&c).await;
    for _ in 0..5 {
        let (code, list) = raw(&c, "GET", "/api/v1/namespaces/default/configmaps", "application/json", vec![]).await;
        assert_eq!(code, 200);
        assert_eq!(list["items"].as_array().unwrap().len(), 5);
        let (_, sel) = raw(&c, "GET", "/api/v1/configmaps?labelSelector=i%20in%20(1,3)", "application/json", vec![]).await;
        assert_eq!(sel["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap()).collect::<Vec<_>>(), vec!["cm-1", "cm-3"]);
    }
    // First page from cache too.
    let (_, page1) = raw(&c, "GET", "/api/v1/namespaces/default/configmaps?limit=2", "application/json", vec![]).await;
    assert_eq!(store_reads(&c).await, before, "LIST must not read the store");
    assert_eq!(page1["metadata"]["remainingItemCount"], 3);
    let token = page1["metadata"]["continue"].as_str().unwrap().to_string();
    // A write between pages: the next pages still show the first page's snapshot.
    create_cm(&c, "cm-9", json!({})).await;
    let (_, page2) = raw(&c, "GET", &format!("/api/v1/namespaces/default/configmaps?limit=10&continue={token}"), "application/json", vec![]).await;
    let names: Vec<&str> = page2["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["cm-2", "cm-3", "cm-4"]);
    assert_eq!(page2["metadata"]["resourceVersion"], page1["metadata"]["resourceVersion"]);
    assert!(page2["metadata"].get("continue").is_none());
    // Cluster-scoped resources page too.
    let (_, ns1) = raw(&c, "GET", "/api/v1/namespaces?limit=1", "application/json", vec![]).await;
    assert_eq!(ns1["items"].as_array().unwrap().len(), 1);
    let tok = ns1["metadata"]["continue"].as_str().unwrap();
    let (_, ns2) = raw(&c, "GET", &format!("/api/v1/namespaces?limit=10&continue={tok}"), "application/json", vec![]).await;
    assert_eq!(ns2["items"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn selector_watch_reports_objects_entering_and_leaving() {
    let s = TestServer::start();
    let c = s.client().await;
    create_cm(&c, "w", json!({"team": "a"})).await;
    let (_, list) = raw(&c, "GET", "/api/v1/namespaces/default/configmaps", "application/json", vec![]).await;
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    // Relabel b, then back to a, then delete; a watcher for team=a from rv sees DELETED (left
    // the selector), ADDED (came back), DELETED.
    for team in ["b", "a"] {
        let patch = serde_json::to_vec(&json!({"metadata": {"labels": {"team": team}}})).unwrap();
        let (code, _) = raw(&c, "PATCH", "/api/v1/namespaces/default/configmaps/w", "application/merge-patch+json", patch).await;
        assert_eq!(code, 200);
    }
    let (code, _) = raw(&c, "DELETE", "/api/v1/namespaces/default/configmaps/w", "application/json", vec![]).await;
    assert_eq!(code, 200);
    let (code, body) = raw(
        &c,
        "GET",
        &format!("/api/v1/namespaces/default/configmaps?watch=true&labelSelector=team%3Da&resourceVersion={rv}&timeoutSeconds=2"),
        "application/json",
        vec![],
    )
    .await;
    assert_eq!(code, 200);
    let text = body.as_str().map(str::to_string).unwrap_or_else(|| body.to_string());
    let types: Vec<String> = text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["type"].as_str().unwrap().to_string()).collect();
    assert_eq!(types, vec!["DELETED", "ADDED", "DELETED"]);
}
