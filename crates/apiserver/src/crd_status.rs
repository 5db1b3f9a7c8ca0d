//! The API server's own CustomResourceDefinition controllers, as upstream's
//! apiextensions-apiserver runs them beside its handlers:
//! - naming: `status.acceptedNames` and NamesAccepted (False with upstream's reason and
//!   message when a name is another CRD's in the group);
//! - establishing: Established once this server serves the accepted names;
//! - finalizer: a deleted CRD (held by `customresourcecleanup.apiextensions.k8s.io`, added on
//!   the first DELETE) is Terminating while every custom resource it defines is deleted, then
//!   goes, so re-creating it (even with another scope) serves at once.
//!
//! The follower of the CRD watch (`bootstrap::follow_crds`) serves a CRD's resources first and
//! then hands the event here, so "served" is true by the time Established is written. The
//! decisions are pure (`r8s_api::kinds::customresourcedefinition`); this module only reads and
//! writes through the registry. A CRD write by a client is answered once this controller has
//! settled every CRD event up to it (`Catalog::set_crds_seen`), so a client's next request
//! finds the resources served and the CRD Established.

use std::sync::Arc;
use std::time::Duration;

use r8s_api::kinds::customresourcedefinition::{self as crd_kind, CLEANUP_FINALIZER};
use r8s_api::{ResourceInfo, Subresource};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::catalog::Catalog;
use crate::registry::{DeleteOptions, ListOptions, Registry, WriteOptions};
use crate::status::ApiResult;

/// A CRD event for the controller: the CRD's name and the store revision of the event.
pub struct Event {
    pub name: String,
    pub rev: i64,
}

/// What one reconcile did.
enum Outcome {
    /// Nothing to write: the CRD is settled at this revision.
    Settled,
    /// A write was made; its own event follows.
    Wrote,
    /// Custom resources are still going (finalizers): look again shortly.
    Again,
    /// The CRD is gone.
    Gone,
}

async fn requeue_group(reg: &Registry, crds: &ResourceInfo, tx: &mpsc::UnboundedSender<Event>, ev: &Event) {
    let Some((_, group)) = ev.name.split_once('.') else { return };
    let Ok(list) = reg.list(crds, None, &ListOptions::default()).await else { return };
    for v in list.items.iter().filter_map(|b| serde_json::from_slice::<Value>(b).ok()) {
        let name = r8s_api::meta::name(&v);
        if name != ev.name && v.pointer("/spec/group").and_then(Value::as_str) == Some(group) && v.pointer("/spec/names") != v.pointer("/status/acceptedNames")
        {
            let _ = tx.send(Event { name: name.to_string(), rev: ev.rev });
        }
    }
}

pub fn start(reg: Arc<Registry>, catalog: Arc<Catalog>) -> mpsc::UnboundedSender<Event> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let again = tx.clone();
    tokio::spawn(async move {
        let crds = catalog.find("apiextensions.k8s.io", "v1", "customresourcedefinitions").expect("crds");
        while let Some(ev) = rx.recv().await {
            let result = reconcile(&reg, &catalog, &crds, &ev.name).await;
            // A CRD gone, or its accepted names changed, may free names another CRD of the
            // group waits for (upstream's requeueAllOtherGroupCRDs).
            if matches!(result, Ok(Outcome::Gone | Outcome::Wrote)) {
                requeue_group(&reg, &crds, &again, &ev).await;
            }
            match result {
                Ok(Outcome::Gone) => catalog.set_crds_seen(ev.rev),
                Ok(Outcome::Settled) => catalog.set_crds_seen(ev.rev),
                Ok(Outcome::Wrote) => {}
                Ok(Outcome::Again) => {
                    catalog.set_crds_seen(ev.rev);
                    requeue(&again, ev.name, ev.rev, Duration::from_millis(500));
                }
                Err(e) => {
                    tracing::warn!(crd = %ev.name, error = %e.message, "CRD status controller");
                    catalog.set_crds_seen(ev.rev);
                    requeue(&again, ev.name, ev.rev, Duration::from_secs(1));
                }
            }
        }
    });
    tx
}

fn requeue(tx: &mpsc::UnboundedSender<Event>, name: String, rev: i64, after: Duration) {
    let tx = tx.clone();
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        let _ = tx.send(Event { name, rev });
    });
}

fn internal() -> WriteOptions {
    WriteOptions { field_manager: Some("kube-apiserver".into()), ..Default::default() }
}

async fn reconcile(reg: &Registry, catalog: &Catalog, crds: &ResourceInfo, name: &str) -> ApiResult<Outcome> {
    let crd = match reg.get(crds, None, name).await {
        Ok(c) => c,
        Err(e) if e.code == 404 => return Ok(Outcome::Gone),
        Err(e) => return Err(e),
    };
    if crd.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()) {
        return finalize(reg, catalog, crds, &crd).await;
    }
    // Naming: only when the requested names differ from the accepted ones.
    if crd.pointer("/spec/names") != crd.pointer("/status/acceptedNames") {
        let others: Vec<Value> =
            reg.list(crds, None, &ListOptions::default()).await?.items.iter().filter_map(|b| serde_json::from_slice::<Value>(b).ok()).collect();
        let n = crd_kind::names_and_conditions(&crd, &others);
        let cond = &n.names_accepted;
        let unchanged_cond = crd_kind::condition(&crd, "NamesAccepted").is_some_and(|c| {
            c.get("status").and_then(Value::as_str) == Some(cond.status)
                && c.get("reason").and_then(Value::as_str) == Some(cond.reason)
                && c.get("message").and_then(Value::as_str) == Some(cond.message.as_str())
        });
        if crd.pointer("/status/acceptedNames") != Some(&n.accepted_names) || !unchanged_cond {
            write_status(reg, crds, name, |c| {
                c["status"]["acceptedNames"] = n.accepted_names.clone();
                crd_kind::set_condition(c, "NamesAccepted", cond.status, cond.reason, &cond.message);
                if let Some(e) = &n.established {
                    crd_kind::set_condition(c, "Established", e.status, e.reason, &e.message);
                }
            })
            .await?;
            return Ok(Outcome::Wrote);
        }
    }
    // Establishing: once the names are accepted and this server serves them.
    if crd_kind::condition_true(&crd, "NamesAccepted") && !crd_kind::condition_true(&crd, "Established") && served(catalog, &crd) {
        write_status(reg, crds, name, |c| crd_kind::set_condition(c, "Established", "True", "InitialNamesAccepted", "the initial names have been accepted"))
            .await?;
        return Ok(Outcome::Wrote);
    }
    Ok(Outcome::Settled)
}

/// Whether this server serves the CRD's accepted plural in its group.
fn served(catalog: &Catalog, crd: &Value) -> bool {
    let group = crd.pointer("/spec/group").and_then(Value::as_str).unwrap_or("");
    let plural = crd.pointer("/status/acceptedNames/plural").and_then(Value::as_str).unwrap_or("");
    catalog.all().iter().any(|r| r.custom && r.group == group && r.plural == plural)
}

async fn write_status(reg: &Registry, crds: &ResourceInfo, name: &str, change: impl Fn(&mut Value)) -> ApiResult<Value> {
    reg.update_with(crds, None, name, Some(Subresource::Status), &internal(), |mut c| {
        change(&mut c);
        Ok(c)
    })
    .await
}

/// Upstream's finalizer controller: Terminating (InstanceDeletionInProgress) while the custom
/// resources are deleted, then (InstanceDeletionCompleted) the finalizer comes off.
async fn finalize(reg: &Registry, catalog: &Catalog, crds: &ResourceInfo, crd: &Value) -> ApiResult<Outcome> {
    let name = r8s_api::meta::name(crd).to_string();
    let holds = crd.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| f.iter().any(|x| x == CLEANUP_FINALIZER));
    if !holds {
        return Ok(Outcome::Settled);
    }
    let in_progress = crd_kind::condition(crd, "Terminating").and_then(|c| c.get("reason")).and_then(Value::as_str) == Some("InstanceDeletionInProgress");
    if !in_progress {
        write_status(reg, crds, &name, |c| {
            crd_kind::set_condition(c, "Terminating", "True", "InstanceDeletionInProgress", "CustomResource deletion is in progress")
        })
        .await?;
    }
    if let Some(storage) = storage_resource(catalog, crd) {
        reg.delete_collection(&storage, None, &ListOptions::default(), &DeleteOptions::default()).await?;
        // Objects held by finalizers of their own stay (marked) until those are removed.
        if !reg.list(&storage, None, &ListOptions::default()).await?.items.is_empty() {
            return Ok(Outcome::Again);
        }
    }
    write_status(reg, crds, &name, |c| crd_kind::set_condition(c, "Terminating", "False", "InstanceDeletionCompleted", "removed all instances")).await?;
    reg.update_with(crds, None, &name, None, &internal(), |mut c| {
        if let Some(f) = c.pointer_mut("/metadata/finalizers").and_then(Value::as_array_mut) {
            f.retain(|x| x != &json!(CLEANUP_FINALIZER));
        }
        Ok(c)
    })
    .await?;
    Ok(Outcome::Wrote)
}

/// The served resource of the CRD's storage version (where its objects are stored).
fn storage_resource(catalog: &Catalog, crd: &Value) -> Option<Arc<ResourceInfo>> {
    let group = crd.pointer("/spec/group").and_then(Value::as_str).unwrap_or("");
    let plural = crd.pointer("/spec/names/plural").and_then(Value::as_str).unwrap_or("");
    catalog.all().into_iter().find(|r| r.custom && r.group == group && r.plural == plural)
}
