//! `metrics.k8s.io/v1beta1` (what metrics-server provides upstream), served by the API server
//! itself so `kubectl top` works with nothing to install: NodeMetrics and PodMetrics built from
//! each kubelet's `/stats/summary`, fetched when asked (no cache; a node that does not answer
//! is left out, as metrics-server leaves out nodes it cannot scrape).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::response::Response;
use http::{Method, StatusCode};
use r8s_api::resources::ResourceInfo;
use serde_json::{Value, json};

use crate::handlers::{AppState, json_response};
use crate::status::{ApiError, ApiResult};

const GV: &str = "metrics.k8s.io/v1beta1";

fn cpu(nanos: u64) -> String {
    format!("{nanos}n")
}

fn memory(bytes: u64) -> String {
    format!("{}Ki", bytes / 1024)
}

pub async fn serve(state: &Arc<AppState>, info: &ResourceInfo, ns: Option<&str>, name: Option<&str>, method: &Method) -> ApiResult<Response> {
    if method != Method::GET {
        return Err(ApiError::method_not_allowed());
    }
    let nodes_info = state.catalog.find("", "v1", "nodes").ok_or_else(|| ApiError::internal("nodes resource missing"))?;
    let nodes: Vec<Value> = state
        .registry
        .list(&nodes_info, None, &Default::default())
        .await?
        .items
        .iter()
        .filter_map(|b| serde_json::from_slice(b).ok())
        .filter(|n: &Value| n["metadata"]["annotations"]["r8s.io/simulated"] != "true")
        .collect();
    let summaries = futures::future::join_all(nodes.iter().map(|n| async move {
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), crate::kubelet_proxy::kubelet_json(state, n, "/stats/summary")).await;
        (n.clone(), r.ok().and_then(|r| r.ok()))
    }))
    .await;
    let now = serde_json::to_value(k8s_openapi_time()).unwrap_or_default();
    if info.plural == "nodes" {
        let mut items = Vec::new();
        for (n, s) in &summaries {
            let Some(s) = s else { continue };
            let node_name = n["metadata"]["name"].as_str().unwrap_or_default();
            if name.is_some_and(|x| x != node_name) {
                continue;
            }
            items.push(json!({
                "metadata": {"name": node_name, "creationTimestamp": now, "labels": n["metadata"]["labels"]},
                "timestamp": s["node"]["cpu"]["time"], "window": "10s",
                "usage": {"cpu": cpu(s["node"]["cpu"]["usageNanoCores"].as_u64().unwrap_or(0)), "memory": memory(s["node"]["memory"]["workingSetBytes"].as_u64().unwrap_or(0))},
            }));
        }
        return finish(name, items, "NodeMetrics", "nodes");
    }
    let mut items = Vec::new();
    let pods_info = state.catalog.find("", "v1", "pods").ok_or_else(|| ApiError::internal("pods resource missing"))?;
    let labels: HashMap<(String, String), Value> = state
        .registry
        .list(&pods_info, ns, &Default::default())
        .await?
        .items
        .iter()
        .filter_map(|b| serde_json::from_slice::<Value>(b).ok())
        .map(|p| {
            (
                (p["metadata"]["namespace"].as_str().unwrap_or_default().to_string(), p["metadata"]["name"].as_str().unwrap_or_default().to_string()),
                p["metadata"]["labels"].clone(),
            )
        })
        .collect();
    for (_, s) in &summaries {
        let Some(s) = s else { continue };
        for p in s["pods"].as_array().into_iter().flatten() {
            let (pns, pname) = (p["podRef"]["namespace"].as_str().unwrap_or_default(), p["podRef"]["name"].as_str().unwrap_or_default());
            if ns.is_some_and(|x| x != pns) || name.is_some_and(|x| x != pname) {
                continue;
            }
            let Some(l) = labels.get(&(pns.to_string(), pname.to_string())) else { continue };
            let containers: Vec<Value> = p["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    json!({"name": c["name"], "usage": {"cpu": cpu(c["cpu"]["usageNanoCores"].as_u64().unwrap_or(0)), "memory": memory(c["memory"]["workingSetBytes"].as_u64().unwrap_or(0))}})
                })
                .collect();
            items.push(json!({
                "metadata": {"name": pname, "namespace": pns, "creationTimestamp": now, "labels": l},
                "timestamp": p["cpu"]["time"], "window": "10s",
                "containers": containers,
            }));
        }
    }
    finish(name, items, "PodMetrics", "pods")
}

fn finish(name: Option<&str>, items: Vec<Value>, kind: &str, plural: &str) -> ApiResult<Response> {
    let out = crate::request::Output::Json;
    match name {
        Some(n) => match items.into_iter().next() {
            Some(mut m) => {
                m["kind"] = json!(kind);
                m["apiVersion"] = json!(GV);
                Ok(json_response(StatusCode::OK, &m, out))
            }
            None => Err(ApiError::new(404, "NotFound", format!("{plural}.metrics.k8s.io \"{n}\" not found"))),
        },
        None => {
            let mut sorted: BTreeMap<String, Value> = BTreeMap::new();
            for m in items {
                let key = format!("{}/{}", m["metadata"]["namespace"].as_str().unwrap_or(""), m["metadata"]["name"].as_str().unwrap_or(""));
                sorted.insert(key, m);
            }
            let list = json!({"kind": format!("{kind}List"), "apiVersion": GV, "metadata": {}, "items": sorted.into_values().collect::<Vec<_>>()});
            Ok(json_response(StatusCode::OK, &list, out))
        }
    }
}

fn k8s_openapi_time() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
