//! What the API server puts in place at start: the system namespaces, the `kubernetes`
//! Service, the allocations of stored Services re-reserved, and the CRDs' resources.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::catalog::Catalog;
use crate::registry::{ListOptions, Registry};

pub async fn run(reg: &Arc<Registry>, catalog: &Arc<Catalog>, https_port: u16, advertise: std::net::IpAddr) -> anyhow::Result<()> {
    let ns = catalog.find("", "v1", "namespaces").expect("namespaces");
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        reg.ensure(&ns, None, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})).await.map_err(|e| anyhow::anyhow!(e.message))?;
    }
    let svc = catalog.find("", "v1", "services").expect("services");
    let existing = reg.list(&svc, None, &ListOptions::default()).await.map_err(|e| anyhow::anyhow!(e.message))?;
    for b in &existing.items {
        if let Ok(v) = serde_json::from_slice::<Value>(b) {
            reg.alloc.restore(&v).await?;
        }
    }
    let first = reg.alloc.first_ip().to_string();
    reg.ensure(
        &svc,
        Some("default"),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "clusterIP": first, "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": https_port}], "sessionAffinity": "None"}
        }),
    )
    .await
    .map_err(|e| anyhow::anyhow!(e.message))?;
    // The `kubernetes` Service's endpoints are this API server (upstream's endpoint reconciler).
    let ep = catalog.find("", "v1", "endpoints").expect("endpoints");
    let want = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": advertise.to_string()}], "ports": [{"name": "https", "port": https_port, "protocol": "TCP"}]}],
    });
    match reg.get(&ep, Some("default"), "kubernetes").await {
        Ok(cur) if cur.get("subsets") == want.get("subsets") => {}
        Ok(_) => {
            reg.update_with(&ep, Some("default"), "kubernetes", None, &Default::default(), |mut cur| {
                cur["subsets"] = want["subsets"].clone();
                Ok(cur)
            })
            .await
            .map_err(|e| anyhow::anyhow!(e.message))?;
        }
        Err(_) => {
            reg.ensure(&ep, Some("default"), want.clone()).await.map_err(|e| anyhow::anyhow!(e.message))?;
        }
    }
    // The built-in priority classes critical system pods use.
    let pc = catalog.find("scheduling.k8s.io", "v1", "priorityclasses").expect("priorityclasses");
    for (name, value, desc) in [
        ("system-node-critical", 2000001000, "Used for system critical pods that must not be moved from their current node."),
        ("system-cluster-critical", 2000000000, "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary."),
    ] {
        reg.ensure(
            &pc,
            None,
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name}, "value": value, "description": desc, "preemptionPolicy": "PreemptLowerPriority"}),
        )
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?;
    }
    follow_crds(reg, catalog).await?;
    Ok(())
}

/// Serves what the stored CRDs define and follows every CRD change through the CRD watch
/// cache (so every API server over one store serves the same custom resources, whichever
/// server wrote the CRD).
pub async fn follow_crds(reg: &Arc<Registry>, catalog: &Arc<Catalog>) -> anyhow::Result<()> {
    let crd = catalog.find("apiextensions.k8s.io", "v1", "customresourcedefinitions").expect("crds");
    let cache = catalog.cache(&crd).ok_or_else(|| anyhow::anyhow!("no watch cache for CRDs"))?;
    // Start from a cache that holds every stored CRD.
    anyhow::ensure!(cache.wait_consistent(catalog.store().as_ref(), std::time::Duration::from_secs(30)).await?, "the CRD watch cache did not catch up");
    let prefix = catalog.storage_info(&crd).key_prefix();
    let decode = |e: &crate::cache::CacheEntry| serde_json::from_slice::<Value>(&e.bytes).ok();
    let catalog = catalog.clone();
    // The CRD status controllers see each event after it is served here.
    let status = crate::crd_status::start(reg.clone(), catalog.clone());
    let settle = move |v: &Value, rev: i64| {
        let _ = status.send(crate::crd_status::Event { name: r8s_api::meta::name(v).to_string(), rev });
    };
    let mut sub = cache.subscribe(None, &prefix).map_err(|_| anyhow::anyhow!("cannot subscribe to CRDs"))?;
    for e in &sub.initial {
        if let Some(v) = decode(e) {
            register_crd(&catalog, &v, false);
            settle(&v, sub.rev);
        }
    }
    catalog.set_crds_seen(sub.rev);
    tokio::spawn(async move {
        loop {
            match sub.live.recv().await {
                Ok(ev) => {
                    if let Some(v) = decode(&ev.obj) {
                        register_crd(&catalog, &v, ev.kind == crate::cache::EventKind::Deleted);
                        settle(&v, ev.rev);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // Missed events: start over from the cache's current state.
                    let Ok(fresh) = cache.subscribe(None, &prefix) else { return };
                    sub = fresh;
                    let live: Vec<Value> = sub.initial.iter().filter_map(|e| decode(e)).collect();
                    catalog.retain_custom(|group, plural| live.iter().any(|c| crd_names(c) == (group, plural)));
                    for v in &live {
                        register_crd(&catalog, v, false);
                        settle(v, sub.rev);
                    }
                    catalog.set_crds_seen(sub.rev);
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Ok(())
}

fn crd_names(crd: &Value) -> (&str, &str) {
    (crd.pointer("/spec/group").and_then(Value::as_str).unwrap_or(""), crd.pointer("/spec/names/plural").and_then(Value::as_str).unwrap_or(""))
}

pub fn register_crd(catalog: &Catalog, crd: &Value, deleted: bool) {
    let (group, plural) = crd_names(crd);
    let deleting = crd.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null());
    catalog.set_terminating(group, plural, deleting && !deleted);
    if deleted || deleting {
        if deleted {
            catalog.remove_custom(group, plural);
        }
        return;
    }
    // Served under the names the naming controller accepted (upstream serves a CRD once its
    // names are accepted or it is established).
    let accepted = r8s_api::kinds::customresourcedefinition::condition_true(crd, "NamesAccepted")
        || r8s_api::kinds::customresourcedefinition::condition_true(crd, "Established");
    if !accepted {
        return;
    }
    let mut served = crd.clone();
    if let Some(names) = crd.pointer("/status/acceptedNames").filter(|n| n.get("plural").and_then(Value::as_str).is_some_and(|p| !p.is_empty())) {
        served["spec"]["names"] = names.clone();
    }
    for (info, schema) in crate::crd::resources(&served) {
        catalog.set_schema(&info, schema);
        catalog.set_columns(&info, crate::crd::printer_columns(crd, &info.version));
        catalog.add(Arc::new(info));
    }
}
