//! Pod garbage collection: deletes finished pods beyond --terminated-pod-gc-threshold (oldest
//! first), force-deletes pods bound to nodes that no longer exist and terminating pods that
//! were never scheduled.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, Preconditions};
use kube::{Api, ResourceExt};
use r8s_client::informer::Informers;

use crate::util;

pub struct Controller {
    informers: Informers,
    threshold: usize,
}

impl Controller {
    pub async fn start(informers: Informers, threshold: usize) {
        let c = Arc::new(Controller { informers: informers.clone(), threshold });
        informers.get::<Pod>().synced().await;
        informers.get::<Node>().synced().await;
        let mut t = tokio::time::interval(Duration::from_secs(20));
        loop {
            t.tick().await;
            if let Err(e) = c.pass().await {
                tracing::debug!(error = %e, "pod gc pass failed");
            }
        }
    }

    async fn force_delete(&self, p: &Pod) -> anyhow::Result<()> {
        let api: Api<Pod> = Api::namespaced(self.informers.client().clone(), &p.namespace().unwrap_or_default());
        let dp =
            DeleteParams { grace_period_seconds: Some(0), preconditions: Some(Preconditions { uid: p.uid(), resource_version: None }), ..Default::default() };
        match api.delete(&p.name_any(), &dp).await {
            Ok(_) => Ok(()),
            Err(e) if r8s_client::is_not_found(&e) || r8s_client::is_conflict(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn pass(&self) -> anyhow::Result<()> {
        let pods = self.informers.get::<Pod>().list();
        let nodes = self.informers.get::<Node>();
        let mut finished: Vec<&Arc<Pod>> = pods.iter().filter(|p| matches!(util::phase(p), "Succeeded" | "Failed")).collect();
        if finished.len() > self.threshold {
            finished.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()));
            for p in finished.iter().take(finished.len() - self.threshold) {
                self.force_delete(p).await?;
            }
        }
        for p in &pods {
            let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty());
            match node {
                Some(n) if nodes.get("", &n).is_none() => self.force_delete(p).await?,
                None if p.metadata.deletion_timestamp.is_some() => self.force_delete(p).await?,
                _ => {}
            }
        }
        Ok(())
    }
}
