//! ControllerRevisions: the template history of DaemonSets and StatefulSets (what
//! `kubectl rollout history ds|sts` lists), one per distinct template, named
//! `<owner>-<hash>`, with increasing `revision` numbers.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use r8s_client::informer::Informers;
use serde_json::{Value, json};

use crate::util;

/// The hash of a template as controllers label pods with it (`controller-revision-hash`).
pub fn hash(template: &Value) -> String {
    util::template_hash(&util::without_zeros(template), None)
}

/// Makes sure a ControllerRevision for `template` exists and is the newest; returns its name.
pub async fn ensure<K: Resource<DynamicType = ()>>(
    informers: &Informers,
    owner: &K,
    selector_labels: &std::collections::BTreeMap<String, String>,
    template: &Value,
) -> anyhow::Result<String> {
    let ns = owner.namespace().unwrap_or_default();
    let h = hash(template);
    let name = format!("{}-{}", owner.name_any(), h);
    let uid = owner.uid().unwrap_or_default();
    let mine: Vec<Arc<ControllerRevision>> =
        informers.get::<ControllerRevision>().list_ns(&ns).into_iter().filter(|cr| util::controller_ref(cr.as_ref()).is_some_and(|r| r.uid == uid)).collect();
    let max = mine.iter().map(|cr| cr.revision).max().unwrap_or(0);
    let api: Api<ControllerRevision> = Api::namespaced(informers.client().clone(), &ns);
    if let Some(cur) = mine.iter().find(|cr| cr.name_any() == name) {
        if cur.revision < max {
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&json!({"revision": max + 1}))).await?;
        }
        return Ok(h);
    }
    let mut labels = selector_labels.clone();
    labels.insert("controller-revision-hash".into(), h.clone());
    let cr = ControllerRevision {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            labels: Some(labels),
            // Upstream's DaemonSet and StatefulSet controllers copy the owner's annotations,
            // so `kubernetes.io/change-cause` shows as CHANGE-CAUSE in `rollout history`.
            annotations: owner.meta().annotations.clone().filter(|a| !a.is_empty()),
            owner_references: Some(vec![util::owner_ref(owner)]),
            ..Default::default()
        },
        // What `kubectl rollout undo` applies as a strategic merge patch: the directive sits
        // inside the template, so the rest of the spec (selector, strategy) is untouched.
        data: Some(RawExtension(json!({"spec": {"template": with_replace_directive(template)}}))),
        revision: max + 1,
    };
    match api.create(&PostParams::default(), &cr).await {
        Ok(_) => Ok(h),
        Err(e) if r8s_client::is_conflict(&e) => Ok(h),
        Err(e) => Err(e.into()),
    }
}

fn with_replace_directive(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(m) = t.as_object_mut() {
        m.insert("$patch".into(), json!("replace"));
    }
    t
}
