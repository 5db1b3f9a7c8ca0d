//! Endpoints and EndpointSlice controllers: for every Service with a selector, the addresses
//! of the pods it selects, ready or not (publishNotReadyAddresses counts all as ready), with
//! each service port's targetPort resolved per pod (named ports), grouped by port set.
//! Endpoints carry ready/notReady addresses; EndpointSlices (at most 100 endpoints each)
//! carry ready/serving/terminating conditions.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use r8s_client::informer::{Informers, ObjKey, key_of};
use r8s_client::queue::WorkQueue;
use serde_json::{Value, json};

use crate::util;

const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
const MANAGER: &str = "endpointslice-controller.k8s.io";
const SERVICE_NAME: &str = "kubernetes.io/service-name";
const MAX_PER_SLICE: usize = 100;

pub struct Controller {
    informers: Informers,
    queue: WorkQueue<ObjKey>,
}

/// A set of ports (name, number, protocol, appProtocol): endpoints with the same set share a slice.
type PortSet = Vec<(String, i32, String, Option<String>)>;

fn selects(svc: &Service, p: &Pod) -> bool {
    let Some(sel) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()).filter(|s| !s.is_empty()) else {
        return false;
    };
    sel.iter().all(|(k, v)| p.labels().get(k) == Some(v))
}

/// A service port's target on a pod: a number, or a named container port.
fn target_port(p: &Pod, tp: Option<&IntOrString>, port: i32, protocol: &str) -> Option<i32> {
    match tp {
        None => Some(port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => p
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|cp| cp.name.as_deref() == Some(name.as_str()) && cp.protocol.as_deref().unwrap_or("TCP") == protocol)
            .map(|cp| cp.container_port),
    }
}

struct Member {
    pod: Arc<Pod>,
    ready: bool,
    terminating: bool,
}

impl Controller {
    pub async fn start(informers: Informers) {
        let c = Arc::new(Controller { informers: informers.clone(), queue: WorkQueue::new() });
        let svcs = informers.get::<Service>();
        let pods = informers.get::<Pod>();
        let eps = informers.get::<Endpoints>();
        let slices = informers.get::<EndpointSlice>();
        crate::util::queue_self(&svcs, &c.queue);
        {
            let c2 = c.clone();
            pods.on_change(move |old, new| {
                let p = new.or(old).unwrap();
                let ns = p.namespace().unwrap_or_default();
                for svc in c2.informers.get::<Service>().list_ns(&ns) {
                    if old.is_some_and(|o| selects(&svc, o)) || new.is_some_and(|n| selects(&svc, n)) {
                        c2.queue.add(key_of(svc.as_ref()));
                    }
                }
            });
        }
        svcs.synced().await;
        pods.synced().await;
        eps.synced().await;
        slices.synced().await;
        util::run_over("endpoints", &svcs, &c.queue, 4, c.clone(), |c, key| async move { c.sync(key).await });
    }

    async fn sync(&self, (ns, name): ObjKey) -> anyhow::Result<Option<Duration>> {
        let client = self.informers.client().clone();
        let ep_api: Api<Endpoints> = Api::namespaced(client.clone(), &ns);
        let slice_api: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
        let mine: Vec<Arc<EndpointSlice>> = self
            .informers
            .get::<EndpointSlice>()
            .list_ns(&ns)
            .into_iter()
            .filter(|s| s.labels().get(SERVICE_NAME) == Some(&name) && s.labels().get(MANAGED_BY).map(String::as_str) == Some(MANAGER))
            .collect();
        let svc = self.informers.get::<Service>().get(&ns, &name);
        let selector_less = svc.as_ref().is_none_or(|s| {
            s.spec.as_ref().and_then(|sp| sp.selector.as_ref()).is_none_or(|m| m.is_empty())
                || s.spec.as_ref().and_then(|sp| sp.type_.as_deref()) == Some("ExternalName")
        });
        if selector_less {
            // Gone, or endpoints managed by someone else: remove what we made.
            if svc.is_none() && self.informers.get::<Endpoints>().get(&ns, &name).is_some() {
                let _ = ep_api.delete(&name, &DeleteParams::default()).await;
            }
            for s in &mine {
                let _ = slice_api.delete(&s.name_any(), &DeleteParams::default()).await;
            }
            return Ok(None);
        }
        let svc = svc.unwrap();
        let spec = svc.spec.clone().unwrap_or_default();
        let publish_all = spec.publish_not_ready_addresses == Some(true);
        let members: Vec<Member> = self
            .informers
            .get::<Pod>()
            .list_ns(&ns)
            .into_iter()
            .filter(|p| selects(&svc, p) && !matches!(util::phase(p), "Succeeded" | "Failed"))
            .filter(|p| p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some_and(|ip| !ip.is_empty()))
            .map(|p| {
                let terminating = p.metadata.deletion_timestamp.is_some();
                let ready = publish_all || (util::is_ready(&p) && !terminating);
                Member { pod: p, ready, terminating }
            })
            .collect();
        // Group pods by the ports they resolve to.
        let svc_ports = spec.ports.clone().unwrap_or_default();
        let mut groups: BTreeMap<PortSet, Vec<&Member>> = BTreeMap::new();
        for m in &members {
            let ports: Vec<(String, i32, String, Option<String>)> = svc_ports
                .iter()
                .filter_map(|sp| {
                    let proto = sp.protocol.clone().unwrap_or_else(|| "TCP".into());
                    target_port(&m.pod, sp.target_port.as_ref(), sp.port, &proto)
                        .map(|tp| (sp.name.clone().unwrap_or_default(), tp, proto, sp.app_protocol.clone()))
                })
                .collect();
            if !ports.is_empty() || svc_ports.is_empty() {
                groups.entry(ports).or_default().push(m);
            }
        }
        self.write_endpoints(&svc, &ep_api, &groups, publish_all).await?;
        self.write_slices(&svc, &slice_api, &mine, &groups).await?;
        Ok(None)
    }

    fn address(m: &Member, svc_name: &str) -> Value {
        let p = &m.pod;
        let spec = p.spec.as_ref();
        let mut a = json!({
            "ip": p.status.as_ref().and_then(|s| s.pod_ip.clone()),
            "nodeName": spec.and_then(|s| s.node_name.clone()),
            "targetRef": {"kind": "Pod", "namespace": p.namespace(), "name": p.name_any(), "uid": p.uid()},
        });
        if let Some(h) = spec.and_then(|s| s.hostname.clone())
            && spec.and_then(|s| s.subdomain.as_deref()) == Some(svc_name)
        {
            a["hostname"] = json!(h);
        }
        a
    }

    async fn write_endpoints(&self, svc: &Service, api: &Api<Endpoints>, groups: &BTreeMap<PortSet, Vec<&Member>>, publish_all: bool) -> anyhow::Result<()> {
        let name = svc.name_any();
        let subsets: Vec<Value> = groups
            .iter()
            .map(|(ports, ms)| {
                let mut ready: Vec<Value> = ms.iter().filter(|m| m.ready && (!m.terminating || publish_all)).map(|m| Self::address(m, &name)).collect();
                let mut not_ready: Vec<Value> = ms.iter().filter(|m| !m.ready && !m.terminating).map(|m| Self::address(m, &name)).collect();
                ready.sort_by(|a, b| a["ip"].as_str().cmp(&b["ip"].as_str()));
                not_ready.sort_by(|a, b| a["ip"].as_str().cmp(&b["ip"].as_str()));
                let ports: Vec<Value> = ports
                    .iter()
                    .map(|(n, p, proto, app)| {
                        let mut v = json!({"port": p, "protocol": proto});
                        if !n.is_empty() {
                            v["name"] = json!(n);
                        }
                        if let Some(a) = app {
                            v["appProtocol"] = json!(a);
                        }
                        v
                    })
                    .collect();
                let mut s = json!({});
                if !ready.is_empty() {
                    s["addresses"] = json!(ready);
                }
                if !not_ready.is_empty() {
                    s["notReadyAddresses"] = json!(not_ready);
                }
                if !ports.is_empty() {
                    s["ports"] = json!(ports);
                }
                s
            })
            .filter(|s| s.get("addresses").is_some() || s.get("notReadyAddresses").is_some())
            .collect();
        let current = self.informers.get::<Endpoints>().get(&svc.namespace().unwrap_or_default(), &name);
        let cur_subsets = current.as_ref().map(|e| serde_json::to_value(&e.subsets).unwrap_or(Value::Null)).unwrap_or(Value::Null);
        let want_subsets = if subsets.is_empty() { Value::Null } else { json!(subsets) };
        let labels = svc.labels().clone();
        if current.is_some()
            && util::without_zeros(&cur_subsets) == util::without_zeros(&want_subsets)
            && current.as_ref().is_some_and(|e| e.labels() == &labels)
        {
            return Ok(());
        }
        let mut ep = json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": name, "namespace": svc.namespace(), "labels": labels,
                         "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": r8s_client::now()}},
        });
        if !subsets.is_empty() {
            ep["subsets"] = json!(subsets);
        }
        let obj: Endpoints = serde_json::from_value(ep)?;
        match current {
            Some(cur) => {
                let mut obj = obj;
                obj.metadata.resource_version = cur.resource_version();
                api.replace(&name, &PostParams::default(), &obj).await?;
            }
            None => match api.create(&PostParams::default(), &obj).await {
                Ok(_) => {}
                Err(e) if r8s_client::is_conflict(&e) => {
                    anyhow::bail!("endpoints {name} appeared meanwhile")
                }
                Err(e) => return Err(e.into()),
            },
        }
        Ok(())
    }

    async fn write_slices(
        &self,
        svc: &Service,
        api: &Api<EndpointSlice>,
        existing: &[Arc<EndpointSlice>],
        groups: &BTreeMap<PortSet, Vec<&Member>>,
    ) -> anyhow::Result<()> {
        let name = svc.name_any();
        // The slices we want: per port set, chunks of at most 100 endpoints.
        let mut wanted: Vec<Value> = Vec::new();
        for (ports, ms) in groups {
            let mut ms: Vec<&&Member> = ms.iter().collect();
            ms.sort_by_key(|m| m.pod.status.as_ref().and_then(|s| s.pod_ip.clone()));
            for chunk in ms.chunks(MAX_PER_SLICE) {
                let endpoints: Vec<Value> = chunk
                    .iter()
                    .map(|m| {
                        let p = &m.pod;
                        let serving = m.ready || (m.terminating && util::is_ready(p));
                        let mut e = json!({
                            "addresses": [p.status.as_ref().and_then(|s| s.pod_ip.clone())],
                            "conditions": {"ready": m.ready && !m.terminating, "serving": serving, "terminating": m.terminating},
                            "nodeName": p.spec.as_ref().and_then(|s| s.node_name.clone()),
                            "targetRef": {"kind": "Pod", "namespace": p.namespace(), "name": p.name_any(), "uid": p.uid()},
                        });
                        if let Some(h) = p
                            .spec
                            .as_ref()
                            .and_then(|s| s.hostname.clone())
                            .filter(|_| p.spec.as_ref().and_then(|s| s.subdomain.as_deref()) == Some(name.as_str()))
                        {
                            e["hostname"] = json!(h);
                        }
                        e
                    })
                    .collect();
                let ports: Vec<Value> = ports.iter().map(|(n, p, proto, app)| json!({"name": n, "port": p, "protocol": proto, "appProtocol": app})).collect();
                wanted.push(json!({"endpoints": endpoints, "ports": ports}));
            }
        }
        let mut labels = svc.labels().clone();
        labels.insert(SERVICE_NAME.into(), name.clone());
        labels.insert(MANAGED_BY.into(), MANAGER.into());
        let mut used: HashSet<String> = HashSet::new();
        for (i, w) in wanted.iter().enumerate() {
            let reuse = existing.get(i);
            let mut obj = json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"namespace": svc.namespace(), "labels": labels,
                             "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": r8s_client::now()},
                             "ownerReferences": [util::owner_ref(svc)]},
                "addressType": "IPv4",
                "endpoints": w["endpoints"], "ports": w["ports"],
            });
            match reuse {
                Some(cur) => {
                    used.insert(cur.name_any());
                    let same = util::without_zeros(&serde_json::to_value(&cur.endpoints)?) == util::without_zeros(&w["endpoints"])
                        && util::without_zeros(&serde_json::to_value(&cur.ports)?) == util::without_zeros(&w["ports"])
                        && cur.labels() == &labels;
                    if same {
                        continue;
                    }
                    obj["metadata"]["name"] = json!(cur.name_any());
                    obj["metadata"]["resourceVersion"] = json!(cur.resource_version());
                    let s: EndpointSlice = serde_json::from_value(obj)?;
                    api.replace(&cur.name_any(), &PostParams::default(), &s).await?;
                }
                None => {
                    obj["metadata"]["generateName"] = json!(format!("{name}-"));
                    let s: EndpointSlice = serde_json::from_value(obj)?;
                    api.create(&PostParams::default(), &s).await?;
                }
            }
        }
        // A service with no endpoints still has one (empty) slice upstream; extra slices go.
        if wanted.is_empty() && existing.is_empty() {
            let obj = json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"generateName": format!("{name}-"), "namespace": svc.namespace(), "labels": labels, "ownerReferences": [util::owner_ref(svc)]},
                "addressType": "IPv4", "endpoints": [], "ports": null,
            });
            let s: EndpointSlice = serde_json::from_value(obj)?;
            api.create(&PostParams::default(), &s).await?;
        }
        for s in existing.iter().skip(wanted.len().max(1)) {
            if !used.contains(&s.name_any()) {
                let _ = api.delete(&s.name_any(), &DeleteParams::default()).await;
            }
        }
        Ok(())
    }
}
