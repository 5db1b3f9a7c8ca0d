//! The built-in admission plugins, as upstream's default chain runs them: defaulting, Priority
//! (priority from the PriorityClass), LimitRanger (container defaults and min/max from
//! LimitRanges) and ResourceQuota (refuse what would exceed a quota, and charge what is
//! admitted to the quota's status).

use std::collections::BTreeMap;

use r8s_api::quantity::{format_milli, parse_milli};
use r8s_api::{ResourceInfo, Subresource, meta};
use serde_json::{Value, json};

use crate::registry::{ListOptions, Registry, WriteOptions};
use crate::status::{ApiError, ApiResult};

use super::{Attributes, Operation, Plugin};
use futures::future::BoxFuture;

/// What the watch cache holds now, without waiting for it to reach the store's latest
/// revision (resourceVersion=0): admission reads policy objects the way upstream's plugins
/// read their informers, and must not add a consistency wait to every create.
async fn cached(reg: &Registry, info: &ResourceInfo, ns: Option<&str>) -> ApiResult<Vec<Value>> {
    let opts = ListOptions { resource_version: Some("0".into()), ..Default::default() };
    Ok(reg.list(info, ns, &opts).await?.items.iter().filter_map(|b| serde_json::from_slice(b).ok()).collect())
}

/// Priority: a pod's priority and preemption policy come from its PriorityClass, or from
/// the class marked globalDefault.
async fn priority(reg: &Registry, obj: &mut Value) -> ApiResult<()> {
    let Some(pc_info) = reg.catalog.find("scheduling.k8s.io", "v1", "priorityclasses") else {
        return Ok(());
    };
    let wanted = obj.pointer("/spec/priorityClassName").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    let class = match &wanted {
        Some(name) => match reg.get(&pc_info, None, name).await {
            Ok(pc) => Some(pc),
            Err(e) if e.code == 404 => {
                return Err(ApiError::forbidden(format!("pods \"{}\" is forbidden: no PriorityClass with name {name} was found", meta::name(obj))));
            }
            Err(e) => return Err(e),
        },
        None => cached(reg, &pc_info, None).await?.into_iter().find(|pc| pc.get("globalDefault") == Some(&json!(true))),
    };
    if let Some(pc) = class {
        let spec = meta::obj_mut(obj, &["spec"]);
        spec.insert("priority".into(), pc.get("value").cloned().unwrap_or(json!(0)));
        spec.insert("priorityClassName".into(), json!(meta::name(&pc)));
        spec.insert("preemptionPolicy".into(), pc.get("preemptionPolicy").cloned().unwrap_or(json!("PreemptLowerPriority")));
    }
    Ok(())
}

fn q(v: Option<&Value>) -> Option<i64> {
    v.and_then(Value::as_str).and_then(parse_milli)
}

/// LimitRanger for pods: fills containers' missing requests/limits from the namespace's
/// Container limit ranges, then enforces their min, max and maxLimitRequestRatio.
async fn limit_ranger(reg: &Registry, ns: &str, obj: &mut Value) -> ApiResult<()> {
    let Some(info) = reg.catalog.find("", "v1", "limitranges") else {
        return Ok(());
    };
    let ranges = cached(reg, &info, Some(ns)).await?;
    let items: Vec<Value> = ranges
        .iter()
        .flat_map(|r| r.pointer("/spec/limits").and_then(Value::as_array).cloned().unwrap_or_default())
        .filter(|i| i.get("type").and_then(Value::as_str) == Some("Container"))
        .collect();
    if items.is_empty() {
        return Ok(());
    }
    let name = meta::name(obj).to_string();
    let mut set_req: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut set_lim: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut errors: Vec<String> = Vec::new();
    for key in ["initContainers", "containers"] {
        let Some(cs) = obj.pointer_mut(&format!("/spec/{key}")).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in cs.iter_mut() {
            let cname = c.get("name").and_then(Value::as_str).unwrap_or("").to_string();
            for item in &items {
                // Upstream defaulting: default limit falls back to max, default request to the default limit.
                let mut default = item.get("default").and_then(Value::as_object).cloned().unwrap_or_default();
                for (k, v) in item.get("max").and_then(Value::as_object).into_iter().flatten() {
                    default.entry(k.clone()).or_insert(v.clone());
                }
                let mut default_req = item.get("defaultRequest").and_then(Value::as_object).cloned().unwrap_or_default();
                for (k, v) in &default {
                    default_req.entry(k.clone()).or_insert(v.clone());
                }
                let res = c.as_object_mut().unwrap().entry("resources").or_insert(json!({}));
                for (k, v) in &default {
                    let lim = meta::obj_mut(res, &["limits"]);
                    if !lim.contains_key(k) {
                        lim.insert(k.clone(), v.clone());
                        set_lim.entry(cname.clone()).or_default().push(k.clone());
                    }
                }
                for (k, v) in &default_req {
                    let has_req = res.pointer(&format!("/requests/{k}")).is_some();
                    if !has_req {
                        // An explicit limit without a request makes the request equal to it.
                        let from_limit = res.pointer(&format!("/limits/{k}")).cloned();
                        let value = from_limit.filter(|_| !default.contains_key(k) || set_lim.get(&cname).is_none_or(|l| !l.contains(k))).unwrap_or(v.clone());
                        meta::obj_mut(res, &["requests"]).insert(k.clone(), value);
                        set_req.entry(cname.clone()).or_default().push(k.clone());
                    }
                }
                for (k, min) in item.get("min").and_then(Value::as_object).into_iter().flatten() {
                    let req = q(res.pointer(&format!("/requests/{k}")));
                    if let (Some(r), Some(m)) = (req, q(Some(min)))
                        && r < m
                    {
                        errors.push(format!("minimum {k} usage per Container is {}, but request is {}", min.as_str().unwrap_or(""), format_milli(r)));
                    }
                }
                for (k, max) in item.get("max").and_then(Value::as_object).into_iter().flatten() {
                    let lim = q(res.pointer(&format!("/limits/{k}")));
                    if let (Some(l), Some(m)) = (lim, q(Some(max)))
                        && l > m
                    {
                        errors.push(format!("maximum {k} usage per Container is {}, but limit is {}", max.as_str().unwrap_or(""), format_milli(l)));
                    }
                }
                for (k, ratio) in item.get("maxLimitRequestRatio").and_then(Value::as_object).into_iter().flatten() {
                    let (Some(l), Some(r), Some(max)) = (q(res.pointer(&format!("/limits/{k}"))), q(res.pointer(&format!("/requests/{k}"))), q(Some(ratio)))
                    else {
                        continue;
                    };
                    if r > 0 && l * 1000 / r > max {
                        errors.push(format!(
                            "{k} max limit to request ratio per Container is {}, but provided ratio is {:.6}",
                            ratio.as_str().unwrap_or(""),
                            l as f64 / r as f64
                        ));
                    }
                }
            }
        }
    }
    if !errors.is_empty() {
        let msg = if errors.len() == 1 { errors.remove(0) } else { format!("[{}]", errors.join(", ")) };
        return Err(ApiError::forbidden(format!("pods \"{name}\" is forbidden: {msg}")));
    }
    let mut notes = Vec::new();
    for (c, ks) in &set_req {
        notes.push(format!("{} request for {} {c}", ks.join(", "), "container"));
    }
    for (c, ks) in &set_lim {
        notes.push(format!("{} limit for {} {c}", ks.join(", "), "container"));
    }
    if !notes.is_empty() {
        let md = meta::metadata_mut(obj);
        let ann = md.entry("annotations").or_insert(json!({}));
        if let Some(a) = ann.as_object_mut() {
            a.insert("kubernetes.io/limit-ranger".into(), json!(format!("LimitRanger plugin set: {}", notes.join("; "))));
        }
    }
    Ok(())
}

/// ResourceQuota: refuses a create that would take a namespace's usage past a quota's hard
/// limits (upstream's message), else charges it to the quota's status.used with a
/// compare-and-swap so concurrent creates cannot both take the last unit.
async fn quota(reg: &Registry, info: &ResourceInfo, ns: &str, obj: &Value) -> ApiResult<()> {
    let Some(rq) = reg.catalog.find("", "v1", "resourcequotas") else {
        return Ok(());
    };
    // The quota object itself is re-read and charged with a compare-and-swap below.
    let quotas = cached(reg, &rq, Some(ns)).await?;
    if quotas.is_empty() {
        return Ok(());
    }
    let usage = r8s_api::quota::usage(&info.group, &info.plural, obj);
    let name = meta::name(obj).to_string();
    let is_pod = info.group.is_empty() && info.plural == "pods";
    for quota in quotas {
        let qname = meta::name(&quota).to_string();
        let hard: BTreeMap<String, i64> =
            quota.pointer("/spec/hard").and_then(Value::as_object).into_iter().flatten().filter_map(|(k, v)| Some((k.clone(), q(Some(v))?))).collect();
        let charged: BTreeMap<String, i64> = usage.iter().filter(|(k, _)| hard.contains_key(*k)).map(|(k, v)| (k.clone(), *v)).collect();
        if is_pod && !r8s_api::quota::is_terminal_pod(obj) {
            // Compute quotas need every container to say what it asks for.
            let mut missing: Vec<String> = Vec::new();
            for r in hard.keys().filter(|k| ["requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "cpu", "memory"].contains(&k.as_str())) {
                let (which, res) = match r.split_once('.') {
                    Some(("limits", res)) => ("limits", res),
                    Some((_, res)) => ("requests", res),
                    None => ("requests", r.as_str()),
                };
                let lacking: Vec<String> = obj
                    .pointer("/spec/containers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|c| {
                        c.pointer(&format!("/resources/{which}/{res}")).is_none()
                            && (which == "limits" || c.pointer(&format!("/resources/limits/{res}")).is_none())
                    })
                    .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                    .collect();
                if !lacking.is_empty() {
                    missing.push(format!("{r} for: {}", lacking.join(",")));
                }
            }
            if !missing.is_empty() {
                return Err(ApiError::forbidden(format!(
                    "{} \"{name}\" is forbidden: failed quota: {qname}: must specify {}",
                    info.plural,
                    missing.join("; ")
                )));
            }
        }
        if charged.values().all(|v| *v == 0) {
            continue;
        }
        let plural = info.plural.clone();
        reg.update_with(&rq, Some(ns), &qname, Some(Subresource::Status), &WriteOptions::default(), |mut cur| {
            if cur.pointer("/status/used").is_none() {
                // The quota controller has not counted yet: upstream refuses until it has.
                return Err(ApiError::forbidden(format!(
                    "{plural} \"{name}\" is forbidden: status unknown for quota: {qname}, resources: {}",
                    charged.keys().cloned().collect::<Vec<_>>().join(",")
                )));
            }
            let used: BTreeMap<String, i64> =
                cur.pointer("/status/used").and_then(Value::as_object).into_iter().flatten().filter_map(|(k, v)| Some((k.clone(), q(Some(v))?))).collect();
            let over: Vec<&String> = charged.iter().filter(|(k, v)| used.get(*k).copied().unwrap_or(0) + **v > hard[*k]).map(|(k, _)| k).collect();
            if !over.is_empty() {
                let fmt = |m: &dyn Fn(&String) -> i64| over.iter().map(|k| format!("{k}={}", format_milli(m(k)))).collect::<Vec<_>>().join(",");
                return Err(ApiError::forbidden(format!(
                    "{plural} \"{name}\" is forbidden: exceeded quota: {qname}, requested: {}, used: {}, limited: {}",
                    fmt(&|k| charged[k]),
                    fmt(&|k| used.get(k).copied().unwrap_or(0)),
                    fmt(&|k| hard[k]),
                )));
            }
            let st = meta::obj_mut(&mut cur, &["status", "used"]);
            for (k, v) in &charged {
                st.insert(k.clone(), json!(format_milli(used.get(k).copied().unwrap_or(0) + v)));
            }
            Ok(cur)
        })
        .await?;
    }
    Ok(())
}

/// Upstream's `SetDefaults_*` for the kind (in upstream they run while decoding, just before
/// the admission chain; here they are its first mutating step).
pub struct Defaulting;

impl Plugin for Defaulting {
    fn name(&self) -> &'static str {
        "Defaulting"
    }
    fn admit<'a>(&'a self, _reg: &'a Registry, a: &'a mut Attributes) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            if matches!(a.operation, Operation::Create | Operation::Update)
                && a.subresource.is_none()
                && let Some(obj) = a.object.as_mut()
            {
                r8s_api::strategy::strategy(&a.resource).default(obj);
            }
            Ok(())
        })
    }
}

/// Priority on pod create.
pub struct Priority;

impl Plugin for Priority {
    fn name(&self) -> &'static str {
        "Priority"
    }
    fn admit<'a>(&'a self, reg: &'a Registry, a: &'a mut Attributes) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            let pod_create = a.operation == Operation::Create && a.is_core("Pod");
            match a.object.as_mut() {
                Some(obj) if pod_create => priority(reg, obj).await,
                _ => Ok(()),
            }
        })
    }
}

/// The name of the class (a cluster-scoped `group/v1` resource) annotated as the default
/// (`annotation`, JSON-pointer escaped): the newest, if several, as upstream picks.
async fn newest_default(reg: &Registry, group: &str, plural: &str, annotation: &str) -> ApiResult<Option<String>> {
    let Some(info) = reg.catalog.find(group, "v1", plural) else { return Ok(None) };
    let pointer = format!("/metadata/annotations/{annotation}");
    let mut defaults: Vec<Value> =
        cached(reg, &info, None).await?.into_iter().filter(|c| c.pointer(&pointer).and_then(Value::as_str) == Some("true")).collect();
    defaults.sort_by(|a, b| {
        let t = |v: &Value| v.pointer("/metadata/creationTimestamp").and_then(Value::as_str).unwrap_or("").to_string();
        t(b).cmp(&t(a)).then_with(|| meta::name(a).cmp(meta::name(b)))
    });
    Ok(defaults.first().map(|c| meta::name(c).to_string()))
}

/// DefaultStorageClass: a claim created without `storageClassName` gets the class annotated
/// `storageclass.kubernetes.io/is-default-class: "true"` (the newest, if several).
pub struct DefaultStorageClass;

impl Plugin for DefaultStorageClass {
    fn name(&self) -> &'static str {
        "DefaultStorageClass"
    }
    fn admit<'a>(&'a self, reg: &'a Registry, a: &'a mut Attributes) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            if a.operation != Operation::Create || !a.is_core("PersistentVolumeClaim") {
                return Ok(());
            }
            let Some(obj) = a.object.as_mut() else { return Ok(()) };
            if obj.pointer("/spec/storageClassName").is_some_and(|v| !v.is_null()) {
                return Ok(());
            }
            if let Some(name) = newest_default(reg, "storage.k8s.io", "storageclasses", "storageclass.kubernetes.io~1is-default-class").await? {
                meta::obj_mut(obj, &["spec"]).insert("storageClassName".into(), json!(name));
            }
            Ok(())
        })
    }
}

/// DefaultIngressClass: an Ingress created without `ingressClassName` (and without the legacy
/// `kubernetes.io/ingress.class` annotation) gets the IngressClass annotated
/// `ingressclass.kubernetes.io/is-default-class: "true"` (the newest, if several).
pub struct DefaultIngressClass;

impl Plugin for DefaultIngressClass {
    fn name(&self) -> &'static str {
        "DefaultIngressClass"
    }
    fn admit<'a>(&'a self, reg: &'a Registry, a: &'a mut Attributes) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            if a.operation != Operation::Create || a.resource.group != "networking.k8s.io" || a.resource.kind != "Ingress" || a.subresource.is_some() {
                return Ok(());
            }
            let Some(obj) = a.object.as_mut() else { return Ok(()) };
            if obj.pointer("/spec/ingressClassName").is_some_and(|v| !v.is_null())
                || obj.pointer("/metadata/annotations/kubernetes.io~1ingress.class").is_some()
            {
                return Ok(());
            }
            if let Some(name) = newest_default(reg, "networking.k8s.io", "ingressclasses", "ingressclass.kubernetes.io~1is-default-class").await? {
                meta::obj_mut(obj, &["spec"]).insert("ingressClassName".into(), json!(name));
            }
            Ok(())
        })
    }
}

/// LimitRanger on pod create (defaults, then min/max).
pub struct LimitRanger;

impl Plugin for LimitRanger {
    fn name(&self) -> &'static str {
        "LimitRanger"
    }
    fn admit<'a>(&'a self, reg: &'a Registry, a: &'a mut Attributes) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            let pod_create = a.operation == Operation::Create && a.is_core("Pod");
            match (a.object.as_mut(), a.namespace.clone()) {
                (Some(obj), Some(ns)) if pod_create => limit_ranger(reg, &ns, obj).await,
                _ => Ok(()),
            }
        })
    }
}

/// ResourceQuota on create of namespaced objects: validating (it sees the final object), and
/// it charges the quota only for writes that happen (not dry-run).
pub struct ResourceQuota;

impl Plugin for ResourceQuota {
    fn name(&self) -> &'static str {
        "ResourceQuota"
    }
    fn validate<'a>(&'a self, reg: &'a Registry, a: &'a Attributes) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            match (a.operation, a.object.as_ref(), a.namespace.as_deref()) {
                (Operation::Create, Some(obj), Some(ns)) if !a.dry_run && a.resource.namespaced => quota(reg, &a.resource, ns, obj).await,
                _ => Ok(()),
            }
        })
    }
}
