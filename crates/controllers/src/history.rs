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
        data: Some(RawExtension(revision_data(template))),
        revision: max + 1,
    };
    match api.create(&PostParams::default(), &cr).await {
        Ok(_) => Ok(h),
        Err(e) if r8s_client::is_conflict(&e) => Ok(h),
        Err(e) => Err(e.into()),
    }
}

/// A revision's data: what `kubectl rollout undo` applies as a strategic merge patch (the
/// `$patch: replace` directive sits inside the template, so the rest of the spec is
/// untouched), laid out byte for byte as upstream's controllers and kubectl write it (Go's
/// typed encoding, then a map's: keys sorted, `creationTimestamp: null` in the template's
/// metadata, `resources: {}` in every container). kubectl compares these bytes with the same
/// patch made from the live object to skip a rollback to the current revision.
pub fn revision_data(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(m) = t.as_object_mut() {
        let md = m.entry("metadata").or_insert_with(|| json!({}));
        if let Some(md) = md.as_object_mut() {
            md.entry("creationTimestamp").or_insert(Value::Null);
        }
        for list in ["initContainers", "containers"] {
            for c in m.get_mut("spec").and_then(|s| s.get_mut(list)).and_then(Value::as_array_mut).into_iter().flatten() {
                if let Some(c) = c.as_object_mut() {
                    c.entry("resources").or_insert_with(|| json!({}));
                }
            }
        }
        m.entry("spec").or_insert_with(|| json!({}));
        m.insert("$patch".into(), json!("replace"));
    }
    r8s_api::meta::sorted_keys(&json!({"spec": {"template": t}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_data_is_laid_out_as_go_writes_it() {
        let template =
            json!({"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}], "restartPolicy": "Always"}});
        let text = serde_json::to_string(&revision_data(&template)).unwrap();
        assert_eq!(
            text,
            r#"{"spec":{"template":{"$patch":"replace","metadata":{"creationTimestamp":null,"labels":{"app":"a"}},"spec":{"containers":[{"image":"busybox:1.36","name":"c","resources":{}}],"restartPolicy":"Always"}}}}"#
        );
    }
}
