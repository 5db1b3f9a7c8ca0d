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
        // What is left, for the conditions upstream reports on a terminating namespace.
        let mut left: Vec<String> = Vec::new();
        let mut finalizers: std::collections::BTreeMap<String, usize> = Default::default();
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
                left.push(format!("{}.{} has {} resource instances", res.plural, res.group, items.len()));
                for f in items.iter().flat_map(|o| o.metadata.finalizers.iter().flatten()) {
                    *finalizers.entry(f.clone()).or_default() += 1;
                }
                if caps.supports_operation(verbs::DELETE_COLLECTION) {
                    api.delete_collection(&DeleteParams::background(), &ListParams::default()).await?;
                } else {
                    for o in items.iter().filter(|o| o.metadata.deletion_timestamp.is_none()) {
                        let _ = api.delete(&o.name_any(), &DeleteParams::background()).await;
                    }
                }
            }
        }
        self.report(&ns, &left, &finalizers).await?;
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

    /// The deletion conditions upstream's namespace controller keeps on a terminating
    /// namespace (`kubectl describe namespace` shows them), written when they change.
    async fn report(&self, ns: &Namespace, left: &[String], finalizers: &std::collections::BTreeMap<String, usize>) -> anyhow::Result<()> {
        let mut left = left.to_vec();
        left.sort();
        let remaining = if left.is_empty() {
            ("False", "ContentRemoved", "All content successfully removed".to_string())
        } else {
            ("True", "SomeResourcesRemain", format!("Some resources are remaining: {}", left.join(", ")))
        };
        let with_finalizers = if finalizers.is_empty() {
            ("False", "ContentHasNoFinalizers", "All content-preserving finalizers finished".to_string())
        } else {
            let list: Vec<String> = finalizers.iter().map(|(f, n)| format!("{f} in {n} resource instances")).collect();
            ("True", "SomeFinalizersRemain", format!("Some content in the namespace has finalizers remaining: {}", list.join(", ")))
        };
        let wanted = [
            ("NamespaceDeletionDiscoveryFailure", ("False", "ResourcesDiscovered", "All resources successfully discovered".to_string())),
            ("NamespaceDeletionGroupVersionParsingFailure", ("False", "ParsedGroupVersions", "All legacy kube types successfully parsed".to_string())),
            ("NamespaceDeletionContentFailure", ("False", "ContentDeleted", "All content successfully deleted, may be waiting on finalization".to_string())),
            ("NamespaceContentRemaining", remaining),
            ("NamespaceFinalizersRemaining", with_finalizers),
        ];
        let current = ns.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        let now = r8s_client::now();
        let mut changed = false;
        let conditions: Vec<serde_json::Value> = wanted
            .iter()
            .map(|(t, (status, reason, message))| {
                let prev = current.iter().find(|c| c.type_ == *t);
                let same = prev.is_some_and(|p| p.status == *status && p.reason.as_deref() == Some(*reason) && p.message.as_deref() == Some(message.as_str()));
                changed |= !same;
                let since = prev.filter(|p| p.status == *status).and_then(|p| p.last_transition_time.clone()).unwrap_or(now.clone());
                serde_json::json!({"type": t, "status": status, "reason": reason, "message": message, "lastTransitionTime": since})
            })
            .collect();
        if changed {
            let api: Api<Namespace> = Api::all(self.informers.client().clone());
            let patch = serde_json::json!({"status": {"conditions": conditions}});
            match api.patch_status(&ns.name_any(), &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await {
                Ok(_) => {}
                Err(e) if r8s_client::is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}
