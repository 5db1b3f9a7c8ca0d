//! The built-in service load balancer (k3s's servicelb): a LoadBalancer Service without a
//! loadBalancerClass gets the Ready nodes' internal addresses as status.loadBalancer.ingress,
//! and every node's service proxy answers on them (they are the service's external IPs).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use r8s_client::informer::{Informers, ObjKey, key_of};
use r8s_client::queue::WorkQueue;
use serde_json::json;

pub struct Controller {
    informers: Informers,
    queue: WorkQueue<ObjKey>,
}

impl Controller {
    pub async fn start(informers: Informers) {
        let c = Arc::new(Controller { informers: informers.clone(), queue: WorkQueue::new() });
        let services = informers.get::<Service>();
        let nodes = informers.get::<Node>();
        {
            let q = c.queue.clone();
            services.on_change(move |_, new| {
                if let Some(s) = new {
                    q.add(key_of(s.as_ref()));
                }
            });
        }
        {
            // A node joining, leaving or changing readiness changes every balancer's addresses.
            let (q, services) = (c.queue.clone(), services.clone());
            nodes.on_change(move |_, _| {
                for s in services.list() {
                    q.add(key_of(s.as_ref()));
                }
            });
        }
        services.synced().await;
        nodes.synced().await;
        for s in services.list() {
            c.queue.add(key_of(s.as_ref()));
        }
        let me = c.clone();
        r8s_client::run_workers("servicelb", c.queue.clone(), 2, move |key| {
            let me = me.clone();
            async move { me.sync(key).await }
        });
    }

    async fn sync(&self, (ns, name): ObjKey) -> anyhow::Result<Option<std::time::Duration>> {
        let Some(svc) = self.informers.get::<Service>().get(&ns, &name) else { return Ok(None) };
        let Some(spec) = svc.spec.as_ref() else { return Ok(None) };
        if spec.type_.as_deref() != Some("LoadBalancer") || spec.load_balancer_class.is_some() {
            return Ok(None);
        }
        let ips = r8s_api::matching::ready_node_addresses(&self.informers.get::<Node>().list());
        let want: Vec<serde_json::Value> = ips.iter().map(|ip| json!({"ip": ip, "ipMode": "VIP"})).collect();
        let have = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.clone()).unwrap_or_default();
        let have: Vec<serde_json::Value> = have.iter().map(|i| json!({"ip": i.ip, "ipMode": i.ip_mode.clone().unwrap_or_else(|| "VIP".into())})).collect();
        if have == want {
            return Ok(None);
        }
        let api: Api<Service> = Api::namespaced(self.informers.client().clone(), &ns);
        let ingress = if want.is_empty() { serde_json::Value::Null } else { json!(want) };
        api.patch_status(&svc.name_any(), &PatchParams::default(), &Patch::Merge(&json!({"status": {"loadBalancer": {"ingress": ingress}}}))).await?;
        Ok(None)
    }
}
