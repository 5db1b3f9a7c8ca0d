//! DaemonSet: one pod on every node the template may run on (nodeSelector, required node
//! affinity, taints), placed by the scheduler through a node-name affinity, rolled
//! node by node within maxUnavailable, with ControllerRevisions as history.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Toleration};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use r8s_client::events::Recorder;
use r8s_client::informer::{Informers, ObjKey};
use r8s_client::queue::WorkQueue;
use serde_json::{Value, json};

use crate::expectations::Expectations;
use crate::util;

pub struct Controller {
    informers: Informers,
    queue: WorkQueue<ObjKey>,
    recorder: Recorder,
    expectations: Expectations,
}

/// The node a daemon pod is for: its nodeName, or the node its affinity pins it to.
pub fn target_node(p: &Pod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    if let Some(n) = spec.node_name.clone().filter(|n| !n.is_empty()) {
        return Some(n);
    }
    let terms = &spec.affinity.as_ref()?.node_affinity.as_ref()?.required_during_scheduling_ignored_during_execution.as_ref()?.node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|f| f.key == "metadata.name" && f.operator == "In")
        .and_then(|f| f.values.as_ref()?.first().cloned())
}

/// An int-or-percent of `total` (rounded up for surge, down for unavailability, as upstream).
fn scaled(v: &IntOrString, total: i32, round_up: bool) -> i32 {
    match v {
        IntOrString::Int(i) => *i,
        IntOrString::String(s) => {
            let x = s.trim_end_matches('%').parse::<f64>().unwrap_or(0.0) * total as f64 / 100.0;
            (if round_up { x.ceil() } else { x.floor() }) as i32
        }
    }
}

/// Tolerations every daemon pod gets (upstream's AddOrUpdateDaemonPodTolerations).
fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration { key: Some(key.into()), operator: Some("Exists".into()), effect: Some(effect.into()), ..Default::default() };
    let mut v = vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        v.push(t("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    v
}

/// Should a daemon pod of this template run on the node?
fn should_run(ds: &DaemonSet, node: &Node) -> bool {
    let Some(spec) = ds.spec.as_ref().and_then(|s| s.template.spec.as_ref()) else {
        return false;
    };
    let labels = node.labels();
    if let Some(sel) = &spec.node_selector
        && sel.iter().any(|(k, v)| labels.get(k) != Some(v))
    {
        return false;
    }
    if let Some(req) =
        spec.affinity.as_ref().and_then(|a| a.node_affinity.as_ref()).and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref())
    {
        let name = node.name_any();
        if !req.node_selector_terms.iter().any(|t| r8s_api::matching::term_matches(t, &name, labels)) {
            return false;
        }
    }
    let mut tols = spec.tolerations.clone().unwrap_or_default();
    tols.extend(daemon_tolerations(spec.host_network == Some(true)));
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| tols.iter().any(|tol| r8s_api::matching::tolerates(tol, t)))
}

impl Controller {
    pub async fn start(informers: Informers) {
        let c = Arc::new(Controller {
            recorder: Recorder::new(informers.client().clone(), "daemonset-controller"),
            informers: informers.clone(),
            queue: WorkQueue::new(),
            expectations: Expectations::default(),
        });
        let dss = informers.get::<DaemonSet>();
        let pods = informers.get::<Pod>();
        let nodes = informers.get::<Node>();
        informers.get::<ControllerRevision>();
        util::queue_self(&dss, &c.queue);
        {
            let c2 = c.clone();
            pods.on_change(move |old, new| {
                let p = new.or(old).unwrap();
                if let Some(r) = util::controller_ref(p.as_ref()).filter(|r| r.kind == "DaemonSet") {
                    let key = (p.namespace().unwrap_or_default(), r.name.clone());
                    c2.expectations.observe(&key, old.map(|o| o.as_ref()), new.map(|n| n.as_ref()));
                    c2.queue.add(key);
                }
            });
        }
        {
            // Node changes (new nodes, labels, taints) concern every DaemonSet.
            let c2 = c.clone();
            nodes.on_change(move |old, new| {
                let relevant = match (old, new) {
                    (Some(o), Some(n)) => o.metadata.labels != n.metadata.labels || o.spec.as_ref().map(|s| &s.taints) != n.spec.as_ref().map(|s| &s.taints),
                    _ => true,
                };
                if relevant {
                    for k in c2.informers.get::<DaemonSet>().keys() {
                        c2.queue.add(k);
                    }
                }
            });
        }
        dss.synced().await;
        pods.synced().await;
        nodes.synced().await;
        util::run_over("daemonset", &dss, &c.queue, 2, c.clone(), |c, key| async move { c.sync(key).await });
    }

    async fn sync(&self, key: ObjKey) -> anyhow::Result<Option<Duration>> {
        let (ns, name) = key.clone();
        let Some(ds) = self.informers.get::<DaemonSet>().get(&ns, &name) else {
            return Ok(None);
        };
        if ds.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let spec = ds.spec.clone().unwrap_or_default();
        let template = serde_json::to_value(&spec.template)?;
        let sel_labels = spec.selector.match_labels.clone().unwrap_or_default();
        let hash = crate::history::ensure(&self.informers, ds.as_ref(), &sel_labels, &template).await?;
        let uid = ds.uid().unwrap_or_default();
        let pods: Vec<Arc<Pod>> =
            self.informers.get::<Pod>().list_ns(&ns).into_iter().filter(|p| util::controller_ref(p.as_ref()).is_some_and(|r| r.uid == uid)).collect();
        let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
        for p in &pods {
            if p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            if let Some(n) = target_node(p) {
                by_node.entry(n).or_default().push(p.clone());
            }
        }
        let nodes = self.informers.get::<Node>().list();
        let api: Api<Pod> = Api::namespaced(self.informers.client().clone(), &ns);
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let (mut desired, mut current, mut misscheduled, mut ready, mut available, mut updated) = (0, 0, 0, 0, 0, 0);
        let mut create_on: Vec<String> = Vec::new();
        let mut delete: Vec<Arc<Pod>> = Vec::new();
        let mut old_pods: Vec<(Arc<Pod>, bool)> = Vec::new();
        let rolling = spec.update_strategy.as_ref().and_then(|s| s.type_.as_deref()).unwrap_or("RollingUpdate") == "RollingUpdate";
        let ru = spec.update_strategy.as_ref().and_then(|s| s.rolling_update.as_ref());
        let max_surge = if rolling { ru.and_then(|r| r.max_surge.as_ref()).map(|v| scaled(v, nodes.len() as i32, true)).unwrap_or(0) } else { 0 };
        // Nodes where a new pod could start beside an available old one (maxSurge).
        let mut surge_candidates: Vec<String> = Vec::new();
        let mut surging = 0;
        for node in &nodes {
            let nn = node.name_any();
            let run = should_run(&ds, node);
            let mut here: Vec<Arc<Pod>> = by_node.remove(&nn).unwrap_or_default();
            // Failed daemon pods are replaced.
            for p in here.iter().filter(|p| util::phase(p) == "Failed") {
                delete.push(p.clone());
            }
            here.retain(|p| util::phase(p) != "Failed");
            if !run {
                if !here.is_empty() {
                    misscheduled += 1;
                    delete.extend(here);
                }
                continue;
            }
            desired += 1;
            if here.is_empty() {
                create_on.push(nn);
                continue;
            }
            current += 1;
            here.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()));
            let is_new = |p: &Arc<Pod>| p.labels().get("controller-revision-hash") == Some(&hash);
            let (new, old): (Vec<Arc<Pod>>, Vec<Arc<Pod>>) = here.into_iter().partition(|p| is_new(p));
            // One pod per node: the newest template's if there is one.
            let p = new.first().or(old.first()).unwrap().clone();
            for extra in new.iter().skip(1) {
                delete.push(extra.clone());
            }
            if util::is_ready(&p) {
                ready += 1;
            }
            let avail = util::is_available(&p, min_ready);
            if avail {
                available += 1;
            }
            if !new.is_empty() {
                updated += 1;
                if !old.is_empty() {
                    // A surge on this node: the old pod goes once the new one is available.
                    surging += 1;
                    if avail {
                        delete.extend(old);
                    }
                }
            } else {
                for extra in old.iter().skip(1) {
                    delete.push(extra.clone());
                }
                if max_surge > 0 && avail {
                    surge_candidates.push(nn);
                } else {
                    old_pods.push((p.clone(), avail));
                }
            }
        }
        for nn in surge_candidates.into_iter().take((max_surge - surging).max(0) as usize) {
            create_on.push(nn);
        }
        // Pods for nodes that no longer exist.
        for (_, ps) in by_node {
            delete.extend(ps);
        }
        // Rolling update: replace old pods while no more than maxUnavailable are unavailable
        // (with a surge, only unavailable old pods are replaced this way).
        if rolling && !old_pods.is_empty() {
            let default_unavailable = if max_surge > 0 { 0 } else { 1 };
            let max_unavailable = ru.and_then(|r| r.max_unavailable.as_ref()).map(|v| scaled(v, desired, false)).unwrap_or(default_unavailable);
            let max_unavailable = if max_surge > 0 { max_unavailable } else { max_unavailable.max(1) };
            let unavailable = desired - available;
            let mut budget = max_unavailable - unavailable;
            // Unavailable old pods first: replacing them costs nothing.
            old_pods.sort_by_key(|(_, avail)| *avail);
            for (p, avail) in old_pods {
                if !avail {
                    delete.push(p);
                } else if budget > 0 {
                    budget -= 1;
                    delete.push(p);
                }
            }
        }
        if self.expectations.satisfied(&key) {
            self.expectations.expect(&key, create_on.len() as i64, delete.len() as i64);
            for node in &create_on {
                let pod = self.daemon_pod(&ds, &hash, node);
                match api.create(&PostParams::default(), &pod).await {
                    Ok(p) => self.recorder.normal(ds.as_ref(), "SuccessfulCreate", format!("Created pod: {}", p.name_any())),
                    Err(e) => {
                        self.expectations.lower(&key, 1, 0);
                        self.recorder.warning(ds.as_ref(), "FailedCreate", format!("Error creating: {}", util::api_message(&e)));
                    }
                }
            }
            for p in &delete {
                match api.delete(&p.name_any(), &DeleteParams::default()).await {
                    Ok(_) => self.recorder.normal(ds.as_ref(), "SuccessfulDelete", format!("Deleted pod: {}", p.name_any())),
                    Err(_) => self.expectations.lower(&key, 0, 1),
                }
            }
        }
        let status = json!({
            "currentNumberScheduled": current,
            "numberMisscheduled": misscheduled,
            "desiredNumberScheduled": desired,
            "numberReady": ready,
            "observedGeneration": ds.metadata.generation,
            "updatedNumberScheduled": if updated == 0 { Value::Null } else { json!(updated) },
            "numberAvailable": if available == 0 { Value::Null } else { json!(available) },
            "numberUnavailable": if desired - available <= 0 { Value::Null } else { json!(desired - available) },
        });
        let cur = serde_json::to_value(&ds.status)?;
        let changed = status.as_object().unwrap().iter().any(|(k, v)| util::norm(cur.get(k), !v.is_null()) != util::norm(Some(v), !v.is_null()));
        if changed {
            let dsapi: Api<DaemonSet> = Api::namespaced(self.informers.client().clone(), &ns);
            match dsapi.patch_status(&name, &PatchParams::default(), &Patch::Merge(&json!({"status": status}))).await {
                Ok(_) => {}
                Err(e) if r8s_client::is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(if ready > available { Some(Duration::from_secs(min_ready.max(1) as u64)) } else { None })
    }

    fn daemon_pod(&self, ds: &DaemonSet, hash: &str, node: &str) -> Pod {
        let spec = ds.spec.clone().unwrap_or_default();
        let md = spec.template.metadata.clone().unwrap_or_default();
        let mut labels = md.labels.unwrap_or_default();
        labels.insert("controller-revision-hash".into(), hash.into());
        labels.insert("pod-template-generation".into(), ds.metadata.generation.unwrap_or(1).to_string());
        let mut pspec = spec.template.spec.clone().unwrap_or_default();
        // Pin to the node through affinity; the scheduler does the binding.
        let pin = NodeSelectorRequirement { key: "metadata.name".into(), operator: "In".into(), values: Some(vec![node.into()]) };
        let affinity = pspec.affinity.get_or_insert_with(Default::default);
        let na = affinity.node_affinity.get_or_insert_with(Default::default);
        let req = na.required_during_scheduling_ignored_during_execution.get_or_insert_with(Default::default);
        if req.node_selector_terms.is_empty() {
            req.node_selector_terms.push(NodeSelectorTerm::default());
        }
        for t in req.node_selector_terms.iter_mut() {
            t.match_fields = Some(vec![pin.clone()]);
        }
        let tols = pspec.tolerations.get_or_insert_with(Vec::new);
        for t in daemon_tolerations(pspec.host_network == Some(true)) {
            if !tols.iter().any(|x| x.key == t.key && x.effect == t.effect) {
                tols.push(t);
            }
        }
        Pod {
            metadata: kube::api::ObjectMeta {
                generate_name: Some(format!("{}-", ds.name_any())),
                namespace: ds.namespace(),
                labels: Some(labels),
                annotations: md.annotations,
                owner_references: Some(vec![util::owner_ref(ds)]),
                ..Default::default()
            },
            spec: Some(pspec),
            status: None,
        }
    }
}
