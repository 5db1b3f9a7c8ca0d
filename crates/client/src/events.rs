//! Event recording: core/v1 Events about an object, as `kubectl describe` shows them.
//! Repeats of the same (object, type, reason, message) bump `count` and `lastTimestamp` of the
//! first Event instead of creating new ones, as upstream's event correlator does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

/// What identifies an event for aggregation (object, type, reason, message).
type EventKey = (String, String, String, String);

#[derive(Clone)]
pub struct Recorder {
    client: Client,
    component: String,
    host: Option<String>,
    seen: Arc<Mutex<HashMap<EventKey, (String, i32)>>>,
}

pub fn object_ref<K: Resource<DynamicType = ()>>(o: &K) -> ObjectReference {
    let kind = K::kind(&()).to_string();
    // Node events carry the node's name as uid (kubelets have always done so, and
    // `kubectl describe node` looks them up that way).
    let uid = if kind == "Node" { Some(o.name_any()) } else { o.uid() };
    ObjectReference {
        api_version: Some(K::api_version(&()).to_string()),
        kind: Some(kind),
        name: Some(o.name_any()),
        namespace: o.namespace(),
        uid,
        resource_version: o.resource_version(),
        ..Default::default()
    }
}

impl Recorder {
    pub fn new(client: Client, component: &str) -> Self {
        Recorder { client, component: component.into(), host: None, seen: Default::default() }
    }

    pub fn with_host(mut self, host: &str) -> Self {
        self.host = Some(host.into());
        self
    }

    pub fn normal<K: Resource<DynamicType = ()>>(&self, o: &K, reason: &str, message: String) {
        self.record(object_ref(o), "Normal", reason, message);
    }

    pub fn warning<K: Resource<DynamicType = ()>>(&self, o: &K, reason: &str, message: String) {
        self.record(object_ref(o), "Warning", reason, message);
    }

    /// Records in the background: events are best effort and never block a controller.
    pub fn record(&self, obj: ObjectReference, type_: &str, reason: &str, message: String) {
        let this = self.clone();
        let type_ = type_.to_string();
        let reason = reason.to_string();
        tokio::spawn(async move {
            if let Err(e) = this.write(obj, &type_, &reason, message).await {
                tracing::debug!(error = %e, "recording event failed");
            }
        });
    }

    async fn write(&self, obj: ObjectReference, type_: &str, reason: &str, message: String) -> Result<(), kube::Error> {
        let ns = obj.namespace.clone().unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let key = (obj.uid.clone().unwrap_or_default(), type_.to_string(), reason.to_string(), message.clone());
        let now = crate::now();
        let prior = self.seen.lock().unwrap().get(&key).cloned();
        if let Some((name, count)) = prior {
            let patch = json!({"count": count + 1, "lastTimestamp": now});
            if api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.is_ok() {
                self.seen.lock().unwrap().insert(key, (name, count + 1));
                return Ok(());
            }
        }
        let stamp = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let name = format!("{}.{:x}", obj.name.clone().unwrap_or_default(), stamp);
        let ev = Event {
            metadata: kube::api::ObjectMeta { name: Some(name.clone()), namespace: Some(ns.clone()), ..Default::default() },
            involved_object: obj,
            reason: Some(reason.into()),
            message: Some(message),
            type_: Some(type_.into()),
            count: Some(1),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            source: Some(EventSource { component: Some(self.component.clone()), host: self.host.clone() }),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.host.clone().unwrap_or_else(|| self.component.clone())),
            ..Default::default()
        };
        api.create(&PostParams::default(), &ev).await?;
        let mut seen = self.seen.lock().unwrap();
        if seen.len() > 4096 {
            seen.clear();
        }
        seen.insert(key, (name, 1));
        Ok(())
    }
}
