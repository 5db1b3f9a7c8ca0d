//! ServiceAccount controller: every active namespace has a `default` ServiceAccount.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use r8s_client::informer::{Informers, ObjKey};
use r8s_client::queue::WorkQueue;

pub struct Controller {
    informers: Informers,
    queue: WorkQueue<ObjKey>,
}

impl Controller {
    pub async fn start(informers: Informers) {
        let c = Arc::new(Controller { informers: informers.clone(), queue: WorkQueue::new() });
        let nss = informers.get::<Namespace>();
        let sas = informers.get::<ServiceAccount>();
        {
            let q = c.queue.clone();
            nss.on_change(move |_old, new| {
                if let Some(n) = new {
                    q.add((String::new(), n.name_any()));
                }
            });
        }
        {
            let q = c.queue.clone();
            sas.on_change(move |old, new| {
                if new.is_none()
                    && let Some(o) = old.filter(|o| o.name_any() == "default")
                {
                    q.add((String::new(), o.namespace().unwrap_or_default()));
                }
            });
        }
        nss.synced().await;
        sas.synced().await;
        for n in nss.list() {
            c.queue.add((String::new(), n.name_any()));
        }
        let c2 = c.clone();
        r8s_client::run_workers("serviceaccount", c.queue.clone(), 2, move |key| {
            let c = c2.clone();
            async move { c.sync(key).await }
        });
    }

    async fn sync(&self, (_, ns): ObjKey) -> anyhow::Result<Option<Duration>> {
        let Some(n) = self.informers.get::<Namespace>().get("", &ns) else {
            return Ok(None);
        };
        if n.metadata.deletion_timestamp.is_some() || self.informers.get::<ServiceAccount>().get(&ns, "default").is_some() {
            return Ok(None);
        }
        let api: Api<ServiceAccount> = Api::namespaced(self.informers.client().clone(), &ns);
        let sa = ServiceAccount {
            metadata: kube::api::ObjectMeta { name: Some("default".into()), namespace: Some(ns.clone()), ..Default::default() },
            ..Default::default()
        };
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => Ok(None),
            Err(e) if r8s_client::is_conflict(&e) => Ok(None),
            // The namespace started terminating meanwhile.
            Err(kube::Error::Api(s)) if s.code == 403 => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}
