//! Helpers the controllers share: controller references, pod states, label selection.

use std::collections::BTreeMap;

use r8s_client::informer::{Informer, ObjKey, Object, key_of};
use r8s_client::queue::WorkQueue;
use serde_json::{Value, json};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::{Resource, ResourceExt};

pub fn controller_ref<K: Resource>(o: &K) -> Option<&OwnerReference> {
    o.meta().owner_references.as_ref()?.iter().find(|r| r.controller == Some(true))
}

/// Queues the changed object's own key.
pub fn queue_self<K: Object>(inf: &Informer<K>, q: &WorkQueue<ObjKey>) {
    let q = q.clone();
    inf.on_change(move |old, new| q.add(key_of(new.or(old).unwrap().as_ref())));
}

/// Queues the controller (an owner of kind `kind`, same namespace) of the changed object.
pub fn queue_controller<K: Object>(inf: &Informer<K>, q: &WorkQueue<ObjKey>, kind: &'static str) {
    let q = q.clone();
    inf.on_change(move |old, new| {
        let o = new.or(old).unwrap();
        if let Some(r) = controller_ref(o.as_ref()).filter(|r| r.kind == kind) {
            q.add((o.namespace().unwrap_or_default(), r.name.clone()));
        }
    });
}

/// Queues every object `existing` holds now, then runs `n` workers that call `sync` for
/// each key (the common tail of every controller's start).
pub fn run_over<K, C, F, Fut>(name: &'static str, existing: &Informer<K>, queue: &WorkQueue<ObjKey>, n: usize, c: std::sync::Arc<C>, sync: F)
where
    K: Object,
    C: Send + Sync + 'static,
    F: Fn(std::sync::Arc<C>, ObjKey) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = anyhow::Result<Option<std::time::Duration>>> + Send + 'static,
{
    for k in existing.keys() {
        queue.add(k);
    }
    r8s_client::run_workers(name, queue.clone(), n, move |key| sync(c.clone(), key));
}

pub fn owner_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).to_string(),
        kind: K::kind(&()).to_string(),
        name: owner.name_any(),
        uid: owner.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

pub fn is_owned_by<K: Resource, O: Resource>(o: &K, owner: &O) -> bool {
    controller_ref(o).is_some_and(|r| Some(&r.uid) == owner.meta().uid.as_ref())
}

pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    if sel.match_labels.as_ref().is_none_or(|m| m.is_empty()) && sel.match_expressions.as_ref().is_none_or(|m| m.is_empty()) {
        // An empty selector selects nothing for controllers (upstream).
        return false;
    }
    r8s_api::matching::selector_matches(sel, labels)
}

pub fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// Not finished and not being deleted: counts toward a controller's replicas.
pub fn is_active(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none() && !matches!(phase(p), "Succeeded" | "Failed")
}

pub fn is_ready(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Ready for at least `min_ready_seconds`.
pub fn is_available(p: &Pod, min_ready_seconds: i32) -> bool {
    if !is_ready(p) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    let since = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0);
    since.is_some_and(|t| k8s_openapi::jiff::Timestamp::now().duration_since(t).as_secs() >= min_ready_seconds as i64)
}

pub fn is_not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<kube::Error>().is_some_and(r8s_client::is_not_found)
}

/// Upstream's ordering of pods to delete first when scaling down: unassigned before
/// assigned, pending before running, not ready before ready, more restarts first, newer first.
pub fn deletion_rank(p: &Pod) -> (u8, u8, u8, i64, std::cmp::Reverse<String>) {
    let assigned = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some_and(|n| !n.is_empty()) as u8;
    let phase_rank = match phase(p) {
        "Pending" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    };
    let restarts: i64 = p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).map(|cs| cs.iter().map(|c| c.restart_count as i64).sum()).unwrap_or(0);
    let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
    (assigned, phase_rank, is_ready(p) as u8, -restarts, std::cmp::Reverse(created))
}

/// The hash upstream puts in `pod-template-hash` / controller-revision-hash: FNV-1a over the
/// template (plus the collision count), written in the alphabet of generated names.
pub fn template_hash(template: &serde_json::Value, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c9dc5;
    let mut feed = |b: &[u8]| {
        for x in b {
            h ^= *x as u32;
            h = h.wrapping_mul(0x01000193);
        }
    };
    feed(serde_json::to_string(template).unwrap_or_default().as_bytes());
    if let Some(c) = collision_count {
        feed(&c.to_le_bytes());
    }
    // Upstream writes the decimal form of the hash through the alphabet of generated names,
    // each character's byte value modulo its length (hence names like `7c5ddbdf54`).
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string().bytes().map(|d| ALPHABET[d as usize % ALPHABET.len()] as char).collect()
}

/// Drops zero values (0, false, "", null, empty lists and maps) recursively: upstream compares
/// templates as Go structs, where an absent field and its zero value are the same, and
/// clients differ in which of the two they send (kubectl's protobuf bodies carry the zeros).
pub fn without_zeros(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), without_zeros(v))).filter(|(_, v)| !is_zero(v)).collect()),
        Value::Array(a) => Value::Array(a.iter().map(without_zeros).collect()),
        other => other.clone(),
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
    }
}

/// Status fields as upstream writes them: zero counts are omitted (except `replicas`).
pub fn norm(v: Option<&Value>, keep_zero: bool) -> Value {
    match v {
        None | Some(Value::Null) if keep_zero => json!(0),
        None | Some(Value::Null) => Value::Null,
        Some(v) if *v == json!(0) && !keep_zero => Value::Null,
        Some(v) => v.clone(),
    }
}

pub fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_safe() {
        let t = serde_json::json!({"spec": {"containers": [{"name": "a"}]}});
        let a = template_hash(&t, None);
        assert_eq!(a, template_hash(&t, None));
        assert_ne!(a, template_hash(&t, Some(1)));
        assert!(a.chars().all(|c| "456789bcdf".contains(c)), "{a}");
        assert!(!a.is_empty() && a.len() <= 10);
    }
}
