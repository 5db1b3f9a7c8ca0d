//! Server-side apply and field ownership (metadata.managedFields, FieldsV1 format).
//!
//! A field set is kept as a FieldsV1 tree (`{"f:spec": {"f:replicas": {}}}`); set algebra works
//! on its flattened paths. Lists follow `mergekeys`: map lists are keyed (`k:{"name":"x"}`),
//! sets by value (`v:"x"`), atomic lists are owned whole.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::mergekeys::{ListKind, list_kind};

type Path = Vec<String>;

/// Metadata fields the system owns (never part of a manager's set).
const SYSTEM_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

fn is_string_map(field: &str, v: &Map<String, Value>) -> bool {
    matches!(
        field,
        "labels"
            | "annotations"
            | "matchLabels"
            | "nodeSelector"
            | "data"
            | "binaryData"
            | "selector"
            | "stringData"
            | "parameters"
            | "capacity"
            | "allocatable"
            | "limits"
            | "requests"
            | "hard"
    ) && v.values().all(|x| !x.is_object() && !x.is_array())
}

/// Key fields the schema gives a default (upstream's structured merge uses the default when
/// the applied item leaves the key out, so `ports: [{port: 80}]` applied twice is one port).
fn key_default(key: &str) -> Option<Value> {
    (key == "protocol").then(|| Value::String("TCP".into()))
}

/// Whether a list item has these key values (a missing key field counting as its default).
fn has_keys(item: &Value, keys: &Map<String, Value>) -> bool {
    keys.iter().all(|(k, v)| item.get(k).cloned().or_else(|| key_default(k)).as_ref() == Some(v))
}

fn key_element(item: &Value, keys: &[&str]) -> Option<String> {
    let mut m = Map::new();
    for k in keys {
        if let Some(v) = item.get(*k).cloned().or_else(|| key_default(k)) {
            m.insert(k.to_string(), v);
        }
    }
    if m.is_empty() {
        return None;
    }
    Some(format!("k:{}", Value::Object(m)))
}

fn collect(v: &Value, parent: &str, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    let Value::Object(m) = v else {
        out.insert(prefix.clone());
        return;
    };
    for (k, child) in m {
        prefix.push(format!("f:{k}"));
        match child {
            Value::Object(cm) if cm.is_empty() => {
                out.insert(prefix.clone());
            }
            Value::Object(cm) if is_string_map(k, cm) => {
                prefix.push(".".into());
                out.insert(prefix.clone());
                prefix.pop();
                for ck in cm.keys() {
                    prefix.push(format!("f:{ck}"));
                    out.insert(prefix.clone());
                    prefix.pop();
                }
            }
            Value::Object(_) => collect(child, k, prefix, out),
            Value::Array(items) => match list_kind(parent, k) {
                ListKind::Map(keys) => {
                    if items.is_empty() {
                        out.insert(prefix.clone());
                    }
                    for item in items {
                        match key_element(item, keys) {
                            Some(el) => {
                                prefix.push(el);
                                prefix.push(".".into());
                                out.insert(prefix.clone());
                                prefix.pop();
                                collect(item, k, prefix, out);
                                prefix.pop();
                            }
                            None => {
                                out.insert(prefix.clone());
                            }
                        }
                    }
                }
                ListKind::Set => {
                    if items.is_empty() {
                        out.insert(prefix.clone());
                    }
                    for item in items {
                        prefix.push(format!("v:{item}"));
                        out.insert(prefix.clone());
                        prefix.pop();
                    }
                }
                ListKind::Atomic => {
                    out.insert(prefix.clone());
                }
            },
            _ => {
                out.insert(prefix.clone());
            }
        }
        prefix.pop();
    }
}

/// The field paths an object sets (excluding system metadata and status).
fn path_set(obj: &Value) -> BTreeSet<Path> {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
        m.remove("status");
        if let Some(md) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in SYSTEM_METADATA {
                md.remove(*k);
            }
            if md.is_empty() {
                m.remove("metadata");
            }
        }
    }
    let mut out = BTreeSet::new();
    collect(&o, "", &mut Vec::new(), &mut out);
    out
}

fn to_tree(paths: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut cur = &mut root;
        for el in p {
            cur = cur.entry(el.clone()).or_insert_with(|| json!({})).as_object_mut().unwrap();
        }
    }
    Value::Object(root)
}

fn from_tree(tree: &Value) -> BTreeSet<Path> {
    fn walk(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
        match v.as_object() {
            Some(m) if !m.is_empty() => {
                for (k, c) in m {
                    prefix.push(k.clone());
                    walk(c, prefix, out);
                    prefix.pop();
                }
            }
            _ => {
                if !prefix.is_empty() {
                    out.insert(prefix.clone());
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(tree, &mut Vec::new(), &mut out);
    out
}

/// Resolves a field path in an object.
fn resolve<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for el in path {
        if el == "." {
            return Some(cur);
        }
        if let Some(f) = el.strip_prefix("f:") {
            cur = cur.get(f)?;
        } else if let Some(k) = el.strip_prefix("k:") {
            let keys: Map<String, Value> = serde_json::from_str(k).ok()?;
            cur = cur.as_array()?.iter().find(|item| has_keys(item, &keys))?;
        } else if let Some(v) = el.strip_prefix("v:") {
            let val: Value = serde_json::from_str(v).ok()?;
            cur = cur.as_array()?.iter().find(|item| **item == val)?;
        } else {
            return None;
        }
    }
    Some(cur)
}

fn remove_path(obj: &mut Value, path: &[String]) {
    let (last, parent) = match path.split_last() {
        Some((l, p)) if l == "." => match p.split_last() {
            Some((l2, p2)) => (l2.clone(), p2.to_vec()),
            None => return,
        },
        Some((l, p)) => (l.clone(), p.to_vec()),
        None => return,
    };
    let mut cur = obj;
    for el in &parent {
        let next = if let Some(f) = el.strip_prefix("f:") {
            cur.get_mut(f)
        } else if let Some(k) = el.strip_prefix("k:") {
            let Ok(keys) = serde_json::from_str::<Map<String, Value>>(k) else {
                return;
            };
            cur.as_array_mut().and_then(|a| a.iter_mut().find(|item| has_keys(item, &keys)))
        } else {
            None
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(k) = last.strip_prefix("k:") {
        if let (Ok(keys), Some(a)) = (serde_json::from_str::<Map<String, Value>>(k), cur.as_array_mut()) {
            a.retain(|item| !has_keys(item, &keys));
        }
    } else if let Some(v) = last.strip_prefix("v:")
        && let (Ok(val), Some(a)) = (serde_json::from_str::<Value>(v), cur.as_array_mut())
    {
        a.retain(|item| *item != val);
    }
}

/// The fields a write sets: all of them on create, those that changed on update.
pub fn fieldset_of(obj: &Value, old: Option<&Value>) -> Value {
    let paths = path_set(obj);
    let owned: BTreeSet<Path> = match old {
        None => paths,
        Some(old) => paths
            .into_iter()
            .filter(|p| resolve(old, p) != resolve(obj, p) || (p.last().map(String::as_str) == Some(".") && resolve(old, p).is_none()))
            .collect(),
    };
    to_tree(&owned)
}

pub fn union(a: &mut Value, b: &Value) {
    let mut s = from_tree(a);
    s.extend(from_tree(b));
    *a = to_tree(&s);
}

pub fn subtract(a: &mut Value, b: &Value) {
    let remove = from_tree(b);
    let s: BTreeSet<Path> = from_tree(a).into_iter().filter(|p| !remove.contains(p)).collect();
    *a = to_tree(&s);
}

/// Renders a field path as upstream prints it in conflict messages.
fn render_path(p: &[String]) -> String {
    let mut out = String::new();
    for el in p {
        if el == "." {
            continue;
        } else if let Some(f) = el.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            let keys: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = keys.iter().map(|(kk, kv)| format!("{kk}={kv}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = el.strip_prefix("v:") {
            out.push_str(&format!("[{v}]"));
        }
    }
    out
}

#[derive(Debug)]
pub struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub path: String,
    field: Path,
}

pub fn conflict_message(conflicts: &[Conflict]) -> String {
    let mut by_manager: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for c in conflicts {
        by_manager.entry((c.manager.clone(), c.api_version.clone())).or_default().push(c.path.clone());
    }
    let n = conflicts.len();
    let mut parts = Vec::new();
    for ((m, v), paths) in &by_manager {
        if paths.len() == 1 {
            parts.push(format!("conflict with \"{m}\" using {v}: {}", paths[0]));
        } else {
            let lines: Vec<String> = paths.iter().map(|p| format!("- {p}")).collect();
            parts.push(format!("conflicts with \"{m}\" using {v}:\n{}", lines.join("\n")));
        }
    }
    let noun = if n == 1 { "conflict" } else { "conflicts" };
    format!("Apply failed with {n} {noun}: {}", parts.join("\n"))
}

/// Merges an apply configuration into the live object (maps merge, map lists merge by key,
/// sets union, everything else is replaced).
fn merge(live: &Value, cfg: &Value, parent: &str) -> Value {
    match (live, cfg) {
        (Value::Object(l), Value::Object(c)) => {
            let mut out = l.clone();
            for (k, cv) in c {
                let merged = match (l.get(k), cv) {
                    (Some(lv @ Value::Object(_)), Value::Object(_)) => merge(lv, cv, k),
                    (Some(Value::Array(la)), Value::Array(ca)) => merge_list(la, ca, parent, k),
                    _ => cv.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        _ => cfg.clone(),
    }
}

fn merge_list(live: &[Value], cfg: &[Value], parent: &str, field: &str) -> Value {
    match list_kind(parent, field) {
        ListKind::Map(keys) => {
            let mut out: Vec<Value> = live.to_vec();
            for item in cfg {
                let k = key_element(item, keys);
                match out.iter().position(|x| k.is_some() && key_element(x, keys) == k) {
                    Some(i) => out[i] = merge(&out[i], item, field),
                    None => out.push(item.clone()),
                }
            }
            Value::Array(out)
        }
        ListKind::Set => {
            let mut out = live.to_vec();
            for item in cfg {
                if !out.contains(item) {
                    out.push(item.clone());
                }
            }
            Value::Array(out)
        }
        ListKind::Atomic => Value::Array(cfg.to_vec()),
    }
}

/// Server-side apply of `config` by `manager` onto `live` (None: the object does not exist).
/// Returns the new object with managedFields updated, or the conflicts.
pub fn apply(live: Option<&Value>, config: &Value, manager: &str, force: bool, api_version: &str) -> Result<Value, Vec<Conflict>> {
    let empty = json!({});
    let live = live.unwrap_or(&empty);
    let mut entries: Vec<Value> = live.pointer("/metadata/managedFields").and_then(Value::as_array).cloned().unwrap_or_default();
    let cfg_paths = path_set(config);
    let is_mine = |e: &Value| e.get("manager").and_then(Value::as_str) == Some(manager) && e.get("operation").and_then(Value::as_str) == Some("Apply");
    let mut conflicts = Vec::new();
    let mut others: BTreeSet<Path> = BTreeSet::new();
    for e in &entries {
        if is_mine(e) {
            continue;
        }
        let theirs = from_tree(e.get("fieldsV1").unwrap_or(&empty));
        for p in cfg_paths.intersection(&theirs) {
            if p.last().map(String::as_str) == Some(".") {
                continue;
            }
            if resolve(live, p) != resolve(config, p) {
                conflicts.push(Conflict {
                    manager: e.get("manager").and_then(Value::as_str).unwrap_or("").to_string(),
                    api_version: e.get("apiVersion").and_then(Value::as_str).unwrap_or("").to_string(),
                    path: render_path(p),
                    field: p.clone(),
                });
            }
        }
        others.extend(theirs);
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    if force {
        let cfg_tree = to_tree(&cfg_paths);
        for e in entries.iter_mut().filter(|e| !is_mine(e)) {
            if let Some(fs) = e.get_mut("fieldsV1") {
                subtract(fs, &cfg_tree);
            }
        }
        others = entries.iter().filter(|e| !is_mine(e)).flat_map(|e| from_tree(e.get("fieldsV1").unwrap_or(&empty))).collect();
    }
    let previous: BTreeSet<Path> = entries.iter().filter(|e| is_mine(e)).flat_map(|e| from_tree(e.get("fieldsV1").unwrap_or(&empty))).collect();
    let mut cfg = config.clone();
    if let Some(md) = cfg.get_mut("metadata").and_then(Value::as_object_mut) {
        md.remove("managedFields");
        md.remove("resourceVersion");
    }
    let mut merged = merge(live, &cfg, "");
    // Fields this manager applied before, dropped now, and owned by nobody else are removed.
    // A field the config still holds stays even when its path changed shape (a map applied as
    // empty, then with members: `f:data` becomes `f:data/f:b`).
    let mut removed: Vec<&Path> = previous.iter().filter(|p| !cfg_paths.contains(*p) && !others.contains(*p) && resolve(&cfg, p).is_none()).collect();
    removed.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in removed {
        // A list item's "." goes only when none of its fields remain owned.
        remove_path(&mut merged, p);
    }
    entries.retain(|e| !is_mine(e) && e.get("fieldsV1").and_then(Value::as_object).is_some_and(|m| !m.is_empty()));
    entries.push(json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": api_version,
        "time": r8s_api::meta::now_rfc3339(),
        "fieldsType": "FieldsV1",
        "fieldsV1": to_tree(&cfg_paths),
    }));
    r8s_api::meta::metadata_mut(&mut merged).insert("managedFields".into(), Value::Array(entries));
    Ok(merged)
}

/// kubectl's last-applied-configuration annotation (client-side apply's record).
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Server-side apply as upstream's apiserver wraps it for kubectl (`lastAppliedManager` and
/// `lastAppliedUpdater`): when the manager is `kubectl` and the object was applied client-side,
/// conflicts on fields whose live value still equals the last-applied annotation's are no
/// conflicts (the apply takes them: kubectl's documented move from client-side to server-side
/// apply); conflicts on fields changed since remain. A successful apply by `kubectl` on such an
/// object rewrites the annotation to the applied configuration, so a later client-side apply
/// starts from it.
pub fn apply_as_kubectl_upgrade(live: &Value, config: &Value, manager: &str, force: bool, api_version: &str) -> Result<Value, Vec<Conflict>> {
    let last = (manager == "kubectl")
        .then(|| live.pointer("/metadata/annotations").and_then(|a| a.get(LAST_APPLIED)).and_then(Value::as_str))
        .flatten()
        .and_then(|a| serde_json::from_str::<Value>(a).ok());
    let Some(last) = last else {
        return apply(Some(live), config, manager, force, api_version);
    };
    let mut out = match apply(Some(live), config, manager, force, api_version) {
        Ok(v) => v,
        Err(conflicts) => {
            // Fields of the last-applied configuration that still hold its value.
            let allowed: BTreeSet<Path> =
                path_set(&last).into_iter().filter(|p| resolve(&last, p).is_some() && resolve(&last, p) == resolve(live, p)).collect();
            let remaining: Vec<Conflict> = conflicts.into_iter().filter(|c| !allowed.contains(&c.field)).collect();
            if !remaining.is_empty() {
                return Err(remaining);
            }
            apply(Some(live), config, manager, true, api_version)?
        }
    };
    let mut applied = config.clone();
    if let Some(a) = applied.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
        a.remove(LAST_APPLIED);
        if a.is_empty() {
            applied["metadata"].as_object_mut().map(|m| m.remove("annotations"));
        }
    }
    // Go's encoder: keys sorted, a newline at the end.
    let text = format!("{}\n", serde_json::to_string(&r8s_api::meta::sorted_keys(&applied)).unwrap_or_default());
    if let Some(a) = out.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
        a.insert(LAST_APPLIED.into(), Value::String(text));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_takes_unchanged_client_side_fields_without_conflict() {
        let cm = |data: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data});
        // What `kubectl apply` (client-side) leaves: the annotation, and an Update entry.
        let mut live = cm(json!({"a": "1", "b": "2"}));
        live["metadata"]["annotations"] = json!({LAST_APPLIED: "{\"apiVersion\":\"v1\",\"data\":{\"a\":\"1\",\"b\":\"2\"},\"kind\":\"ConfigMap\",\"metadata\":{\"annotations\":{},\"name\":\"c\"}}\n"});
        live["metadata"]["managedFields"] = json!([{"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "v1",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {".": {}, "f:a": {}, "f:b": {}}, "f:metadata": {"f:annotations": {".": {}, format!("f:{LAST_APPLIED}"): {}}}}}]);
        let out = apply_as_kubectl_upgrade(&live, &cm(json!({"a": "10", "b": "2"})), "kubectl", false, "v1").unwrap();
        assert_eq!(out["data"], json!({"a": "10", "b": "2"}));
        let ann = out["metadata"]["annotations"][LAST_APPLIED].as_str().unwrap();
        assert_eq!(ann, "{\"apiVersion\":\"v1\",\"data\":{\"a\":\"10\",\"b\":\"2\"},\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"c\"}}\n");
        // Another manager gets the conflict, as upstream: only kubectl upgrades.
        let err = apply_as_kubectl_upgrade(&live, &cm(json!({"a": "10", "b": "2"})), "other", false, "v1").unwrap_err();
        assert_eq!(err.len(), 1);
        // A field changed since the client-side apply (someone edited it) still conflicts.
        let mut edited = live.clone();
        edited["data"]["a"] = json!("5");
        let err = apply_as_kubectl_upgrade(&edited, &cm(json!({"a": "10", "b": "2"})), "kubectl", false, "v1").unwrap_err();
        assert_eq!(conflict_message(&err), "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using v1: .data.a");
    }

    fn deploy(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": {"app": "d"}},
               "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "c", "image": image}]}}}})
    }

    #[test]
    fn fieldsets_use_keys() {
        let t = fieldset_of(&deploy(1, "x"), None);
        assert!(t.pointer("/f:spec/f:template/f:spec/f:containers/k:{\"name\":\"c\"}/f:image").is_some());
        assert!(t.pointer("/f:metadata/f:labels/.").is_some());
    }

    #[test]
    fn two_managers_conflict_then_force() {
        let a = apply(None, &deploy(1, "x"), "a", false, "apps/v1").unwrap();
        // Same values: no conflict, shared ownership.
        let b = apply(Some(&a), &deploy(1, "x"), "b", false, "apps/v1").unwrap();
        let err = apply(Some(&b), &deploy(3, "x"), "b", false, "apps/v1").unwrap_err();
        assert_eq!(conflict_message(&err), "Apply failed with 1 conflict: conflict with \"a\" using apps/v1: .spec.replicas");
        let forced = apply(Some(&b), &deploy(3, "x"), "b", true, "apps/v1").unwrap();
        assert_eq!(forced["spec"]["replicas"], json!(3));
        // Now "a" no longer owns replicas.
        // "a" owned only what "b" now applied and forced: it owns nothing and is dropped.
        let managers: Vec<&str> = forced["metadata"]["managedFields"].as_array().unwrap().iter().map(|e| e["manager"].as_str().unwrap()).collect();
        assert_eq!(managers, vec!["b"]);
    }

    #[test]
    fn map_applied_empty_then_filled() {
        let cm = |data: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data});
        let first = apply(None, &cm(json!({})), "a", false, "v1").unwrap();
        assert_eq!(first["data"], json!({}));
        let second = apply(Some(&first), &cm(json!({"b": "2"})), "a", false, "v1").unwrap();
        assert_eq!(second["data"], json!({"b": "2"}));
        let fields = &second["metadata"]["managedFields"][0]["fieldsV1"];
        assert!(fields.pointer("/f:data/f:b").is_some(), "{fields}");
        // And emptied again: the member goes, the map stays owned.
        let third = apply(Some(&second), &cm(json!({})), "a", false, "v1").unwrap();
        assert_eq!(third["data"], json!({}));
    }

    #[test]
    fn a_defaulted_key_matches_the_item_it_defaulted() {
        let cfg = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "q"}, "spec": {"ports": [{"port": 80}]}});
        let live = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "q"},
            "spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}]}});
        let first = apply(Some(&live), &cfg, "kubectl", false, "v1").unwrap();
        assert_eq!(first["spec"]["ports"].as_array().unwrap().len(), 1, "{first}");
        let again = apply(Some(&first), &cfg, "kubectl", false, "v1").unwrap();
        assert_eq!(again["spec"]["ports"], json!([{"port": 80, "protocol": "TCP", "targetPort": 80}]));
        // Another manager applying the same value co-owns the key field: no conflict.
        assert!(apply(Some(&again), &cfg, "other", false, "v1").is_ok());
    }

    #[test]
    fn reapply_removes_dropped_fields() {
        let a = apply(None, &deploy(1, "x"), "a", false, "apps/v1").unwrap();
        let mut cfg = deploy(1, "x");
        cfg["metadata"].as_object_mut().unwrap().remove("labels");
        let out = apply(Some(&a), &cfg, "a", false, "apps/v1").unwrap();
        assert!(out["metadata"].get("labels").is_none_or(|l| l.as_object().unwrap().is_empty()));
    }
}
