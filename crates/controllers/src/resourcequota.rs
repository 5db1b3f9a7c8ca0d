//! ResourceQuota controller: keeps each quota's status (`hard` from the spec, `used` counted
//! from what exists in the namespace). Admission charges new objects to `used` as they are
//! created; this controller recounts, so deletions give the quota back.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, ResourceQuota, Service};
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::discovery::Discovery;
use kube::{Api, ResourceExt};
use r8s_api::quantity::format_milli;
use r8s_client::informer::{Informers, ObjKey, key_of};
use r8s_client::queue::WorkQueue;
use serde_json::{Value, json};

pub struct Controller {
    informers: Informers,
    queue: WorkQueue<ObjKey>,
    /// (group, plural) -> API resource, from discovery (refreshed when a name is unknown).
    resources: Mutex<BTreeMap<(String, String), ApiResource>>,
}

/// The (group, plural) a quota resource name counts, e.g. `count/deployments.apps`.
fn counted(name: &str) -> Option<(String, String)> {
    if let Some(rest) = name.strip_prefix("count/") {
        return Some(match rest.split_once('.') {
            Some((plural, group)) => (group.to_string(), plural.to_string()),
            None => (String::new(), rest.to_string()),
        });
    }
    match name {
        "pods" | "services" | "configmaps" | "secrets" | "persistentvolumeclaims" | "replicationcontrollers" | "resourcequotas" => {
            Some((String::new(), name.to_string()))
        }
        n if n.starts_with("requests.") || n.starts_with("limits.") || n == "cpu" || n == "memory" => {
            if n == "requests.storage" {
                Some((String::new(), "persistentvolumeclaims".into()))
            } else {
                Some((String::new(), "pods".into()))
            }
        }
        "services.nodeports" | "services.loadbalancers" => Some((String::new(), "services".into())),
        _ => None,
    }
}

impl Controller {
    pub async fn start(informers: Informers) {
        let c = Arc::new(Controller { informers: informers.clone(), queue: WorkQueue::new(), resources: Default::default() });
        let quotas = informers.get::<ResourceQuota>();
        let pods = informers.get::<Pod>();
        let svcs = informers.get::<Service>();
        crate::util::queue_self(&quotas, &c.queue);
        pods_ns(&c);
        svcs_ns(&c);
        quotas.synced().await;
        pods.synced().await;
        svcs.synced().await;
        let c2 = c.clone();
        tokio::spawn(async move {
            // Other kinds are recounted periodically (upstream's quota resync).
            let mut t = tokio::time::interval(Duration::from_secs(10));
            loop {
                t.tick().await;
                for k in c2.informers.get::<ResourceQuota>().keys() {
                    c2.queue.add(k);
                }
            }
        });
        let c2 = c.clone();
        r8s_client::run_workers("resourcequota", c.queue.clone(), 2, move |key| {
            let c = c2.clone();
            async move { c.sync(key).await }
        });
    }

    async fn resource(&self, group: &str, plural: &str) -> anyhow::Result<Option<ApiResource>> {
        let key = (group.to_string(), plural.to_string());
        if let Some(r) = self.resources.lock().unwrap().get(&key) {
            return Ok(Some(r.clone()));
        }
        let d = Discovery::new(self.informers.client().clone()).run().await?;
        let mut map = self.resources.lock().unwrap();
        for g in d.groups() {
            for (r, _) in g.recommended_resources() {
                map.insert((r.group.clone(), r.plural.clone()), r);
            }
        }
        Ok(map.get(&key).cloned())
    }

    async fn sync(&self, (ns, name): ObjKey) -> anyhow::Result<Option<Duration>> {
        let Some(quota) = self.informers.get::<ResourceQuota>().get(&ns, &name) else {
            return Ok(None);
        };
        let hard = quota.spec.as_ref().and_then(|s| s.hard.clone()).unwrap_or_default();
        let mut used: BTreeMap<String, i64> = hard.keys().map(|k| (k.clone(), 0)).collect();
        let mut kinds: Vec<(String, String)> = hard.keys().filter_map(|k| counted(k)).collect();
        kinds.sort();
        kinds.dedup();
        for (group, plural) in kinds {
            let objs: Vec<Value> = if group.is_empty() && plural == "pods" {
                self.informers.get::<Pod>().list_ns(&ns).iter().map(|p| serde_json::to_value(p.as_ref()).unwrap()).collect()
            } else if group.is_empty() && plural == "services" {
                self.informers.get::<Service>().list_ns(&ns).iter().map(|p| serde_json::to_value(p.as_ref()).unwrap()).collect()
            } else {
                let Some(res) = self.resource(&group, &plural).await? else {
                    continue;
                };
                let api: Api<DynamicObject> = Api::namespaced_with(self.informers.client().clone(), &ns, &res);
                api.list(&ListParams::default()).await?.items.iter().map(|o| serde_json::to_value(o).unwrap()).collect()
            };
            for o in &objs {
                for (k, v) in r8s_api::quota::usage(&group, &plural, o) {
                    if let Some(u) = used.get_mut(&k) {
                        *u += v;
                    }
                }
            }
        }
        let used_json: BTreeMap<String, String> = used.iter().map(|(k, v)| (k.clone(), format_milli(*v))).collect();
        let cur = quota.status.clone().unwrap_or_default();
        let cur_used: BTreeMap<String, String> = cur.used.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
        let cur_hard: BTreeMap<String, String> = cur.hard.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
        let want_hard: BTreeMap<String, String> = hard.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect();
        if cur_used != used_json || cur_hard != want_hard {
            let api: Api<ResourceQuota> = Api::namespaced(self.informers.client().clone(), &ns);
            let patch = json!({"status": {"hard": want_hard, "used": used_json}});
            match api.patch_status(&quota.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {}
                Err(e) if r8s_client::is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }
}

/// Pod changes concern the quotas of their namespace.
fn pods_ns(c: &Arc<Controller>) {
    let c2 = c.clone();
    c.informers.get::<Pod>().on_change(move |old, new| {
        let p = new.or(old).unwrap();
        for q in c2.informers.get::<ResourceQuota>().list_ns(&p.namespace().unwrap_or_default()) {
            c2.queue.add(key_of(q.as_ref()));
        }
    });
}

fn svcs_ns(c: &Arc<Controller>) {
    let c2 = c.clone();
    c.informers.get::<Service>().on_change(move |old, new| {
        let s = new.or(old).unwrap();
        for q in c2.informers.get::<ResourceQuota>().list_ns(&s.namespace().unwrap_or_default()) {
            c2.queue.add(key_of(q.as_ref()));
        }
    });
}
