//! Restart safety: kill -9 during a burst of writes loses no acknowledged write, and a watch
//! resumed from an old resourceVersion after the restart replays everything after it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use r8s_tests::{TestServer, raw, wait_for};

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "data": {"v": name}})).unwrap()
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_burst_keeps_acknowledged_writes_and_watch_resumes() {
    let mut s = TestServer::start();
    let client = s.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let rv0 = api.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    // 16 writers create as fast as they can.
    let mut tasks = Vec::new();
    for w in 0..16 {
        let api = api.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("burst-{w}-{i}");
                match api.create(&PostParams::default(), &cm(&name)).await {
                    Ok(_) => {
                        acked.lock().unwrap().insert(name);
                    }
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    let a2 = acked.clone();
    tokio::task::spawn_blocking(move || wait_for("300 acknowledged creates", Duration::from_secs(60), || (a2.lock().unwrap().len() >= 300).then_some(())))
        .await
        .unwrap();
    // Every acknowledgement so far was preceded by the fsync of its commit.
    let (code, metrics) = raw(&client, "GET", "/metrics", "application/json", vec![]).await;
    assert_eq!(code, 200);
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(metric(&metrics, "r8s_store_durable_revision") >= metric(&metrics, "r8s_store_acked_revision"), "{metrics}");
    assert!(metric(&metrics, "r8s_store_fsyncs_total") >= 1);
    // Kill -9 mid-burst, then restart on the same data dir and port.
    s.kill9();
    for t in tasks {
        let _ = t.await;
    }
    let acked: BTreeSet<String> = acked.lock().unwrap().clone();
    s.kill_and_restart();
    let client = s.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let after: BTreeSet<String> = api.list(&ListParams::default()).await.unwrap().items.into_iter().filter_map(|c| c.metadata.name).collect();
    let missing: Vec<&String> = acked.difference(&after).collect();
    assert!(missing.is_empty(), "{} acknowledged writes lost, e.g. {:?}", missing.len(), &missing[..missing.len().min(5)]);
    // A watch resumed from before the burst replays every create after it.
    let wp = kube::api::WatchParams::default();
    let mut stream = api.watch(&wp, &rv0).await.unwrap().boxed();
    let mut seen = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !acked.is_subset(&seen) {
        let ev = tokio::time::timeout_at(deadline, stream.next()).await.expect("watch replay timed out").expect("stream ended").unwrap();
        if let kube::api::WatchEvent::Added(c) = ev {
            seen.insert(c.metadata.name.unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_watch_answers_410() {
    let s = TestServer::start_with(&["--compaction-interval", "1s"]);
    let client = s.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let rv0: i64 = api.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap().parse().unwrap();
    // The compactor keeps 1000 revisions: write past that, then wait for compaction.
    for chunk in 0..11 {
        let futs: Vec<_> = (0..100)
            .map(|i| {
                let api = api.clone();
                async move { api.create(&PostParams::default(), &cm(&format!("c{chunk}-{i}"))).await.unwrap() }
            })
            .collect();
        futures::future::join_all(futs).await;
    }
    let c2 = client.clone();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        wait_for("compaction", Duration::from_secs(30), || {
            let (_, m) = handle.block_on(raw(&c2, "GET", "/metrics", "application/json", vec![]));
            let m = m.as_str().unwrap_or("").to_string();
            let _ = m;
            let (code, v) = handle.block_on(raw(
                &c2,
                "GET",
                &format!("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv0}&timeoutSeconds=1"),
                "application/json",
                vec![],
            ));
            // A compacted revision: one ERROR event carrying a 410 Expired Status.
            let text = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
            (code == 200 && text.contains("\"code\":410") && text.contains("Expired")).then_some(())
        })
    })
    .await
    .unwrap();
    // A continue token from the compacted revision answers 410 too.
    let tok = r8s_apiserver_token(rv0);
    let (code, body) = raw(&client, "GET", &format!("/api/v1/namespaces/default/configmaps?limit=1&continue={tok}"), "application/json", vec![]).await;
    assert_eq!(code, 410, "{body}");
    assert_eq!(body["reason"], "Expired");
}

/// A continue token as the server encodes it (base64 of {"v","rv","start"}).
fn r8s_apiserver_token(rv: i64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE.encode(format!("{{\"v\":\"meta.k8s.io/v1\",\"rv\":{rv},\"start\":\"default/a\\u0000\"}}"))
}
