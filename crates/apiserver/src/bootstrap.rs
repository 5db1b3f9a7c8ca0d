//! What the API server puts in place at start: the system namespaces, the `kubernetes`
//! Service, allocator state rebuilt from stored Services, and the CRDs' resources.

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
            reg.alloc.restore(&v);
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
    // Serve what stored CRDs define, and follow CRD writes from now on.
    let crd = catalog.find("apiextensions.k8s.io", "v1", "customresourcedefinitions").expect("crds");
    let hook_catalog = catalog.clone();
    *reg.crd_hook.write().unwrap() = Some(Arc::new(move |obj: &Value, deleted: bool| register_crd(&hook_catalog, obj, deleted)));
    let crds = reg.list(&crd, None, &ListOptions::default()).await.map_err(|e| anyhow::anyhow!(e.message))?;
    for b in &crds.items {
        if let Ok(v) = serde_json::from_slice::<Value>(b) {
            register_crd(catalog, &v, false);
        }
    }
    Ok(())
}

pub fn register_crd(catalog: &Catalog, crd: &Value, deleted: bool) {
    let group = crd.pointer("/spec/group").and_then(Value::as_str).unwrap_or("");
    let plural = crd.pointer("/spec/names/plural").and_then(Value::as_str).unwrap_or("");
    if deleted || crd.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()) {
        if deleted {
            catalog.remove_custom(group, plural);
        }
        return;
    }
    for (info, schema) in crate::crd::resources(crd) {
        catalog.set_schema(&info, schema);
        catalog.set_columns(&info, crate::crd::printer_columns(crd, &info.version));
        catalog.add(Arc::new(info));
    }
}
