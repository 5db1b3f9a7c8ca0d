//! Namespace lifecycle: a namespace being deleted (phase Terminating) is emptied of every
//! namespaced resource the API serves (found through discovery, so custom resources too),
//! then its `kubernetes` finalizer is removed through `namespaces/finalize`, and the API
//! server removes it.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, DynamicObject, ListParams};
use kube::discovery::{Discovery, Scope, verbs};
use kube::{Api, ResourceExt};
use r8s_client::informer::{Informers, ObjKey, key_of};
use r8s_client::queue::WorkQueue;

pub struct Controller {
    informers: Informers,
    queue: WorkQueue<ObjKey>,
}

impl Controller {
    pub async fn start(informers: Informers) {
        let c = Arc::new(Controller { informers: informers.clone(), queue: WorkQueue::with_backoff(Duration::from_millis(200), Duration::from_secs(30)) });
        let nss = informers.get::<Namespace>();
        {
            let q = c.queue.clone();
            nss.on_change(move |_old, new| {
                if let Some(n) = new.filter(|n| n.metadata.deletion_timestamp.is_some()) {
                    q.add(key_of(n.as_ref()));
                }
            });
        }
        nss.synced().await;
        for n in nss.list() {
            if n.metadata.deletion_timestamp.is_some() {
                c.queue.add(key_of(n.as_ref()));
            }
        }
        let c2 = c.clone();
        r8s_client::run_workers("namespace", c.queue.clone(), 2, move |key| {
            let c = c2.clone();
            async move { c.sync(key).await }
        });
    }

    async fn sync(&self, (_, name): ObjKey) -> anyhow::Result<Option<Duration>> {
        let Some(ns) = self.informers.get::<Namespace>().get("", &name) else {
            return Ok(None);
        };
        if ns.metadata.deletion_timestamp.is_none() {
            return Ok(None);
        }
        let client = self.informers.client().clone();
        let discovery = Discovery::new(client.clone()).run().await?;
        let mut remaining = 0usize;
        for group in discovery.groups() {
            for (res, caps) in group.recommended_resources() {
                if caps.scope != Scope::Namespaced || !caps.supports_operation(verbs::LIST) || !caps.supports_operation(verbs::DELETE) {
                    continue;
                }
                if res.kind == "Event" && res.group == "events.k8s.io" {
                    continue; // the same objects as core Events
                }
                let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &name, &res);
                let items = api.list_metadata(&ListParams::default()).await?.items;
                if items.is_empty() {
                    continue;
                }
                remaining += items.len();
                if caps.supports_operation(verbs::DELETE_COLLECTION) {
                    api.delete_collection(&DeleteParams::background(), &ListParams::default()).await?;
                } else {
                    for o in items.iter().filter(|o| o.metadata.deletion_timestamp.is_none()) {
                        let _ = api.delete(&o.name_any(), &DeleteParams::background()).await;
                    }
                }
            }
        }
        if remaining > 0 {
            // Pods wait for their kubelets and objects for their finalizers: look again soon.
            return Ok(Some(Duration::from_millis(500)));
        }
        let mut body = serde_json::to_value(ns.as_ref())?;
        body["spec"]["finalizers"] = serde_json::json!([]);
        let req =
            http::Request::put(format!("/api/v1/namespaces/{name}/finalize")).header("Content-Type", "application/json").body(serde_json::to_vec(&body)?)?;
        match client.request::<Namespace>(req).await {
            Ok(_) => Ok(None),
            Err(e) if r8s_client::is_not_found(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}
