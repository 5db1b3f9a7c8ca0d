//! CustomResourceDefinitions: defaults, validation, deletion through the cleanup finalizer, and
//! the decisions of upstream's naming controller (run by the API server, `crd_status.rs`).

use serde_json::{Value, json};

use super::Kind;
use crate::errors::FieldError;

pub struct CustomResourceDefinition;

impl Kind for CustomResourceDefinition {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn normalize(&self, obj: &mut Value, _create: bool) {
        default_names(obj);
    }

    /// Upstream's PrepareForCreate: an empty status with the storage version recorded; the
    /// API server's naming and establishing controllers fill in the rest.
    fn initial_status(&self, obj: &Value) -> Option<Value> {
        Some(json!({"acceptedNames": {"plural": "", "kind": ""}, "storedVersions": storage_version(obj).into_iter().collect::<Vec<_>>()}))
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>, errs: &mut Vec<FieldError>) {
        validate_crd(obj, errs)
    }

    /// Deletion waits for the API server's finalizer controller to remove every custom
    /// resource first (upstream's CRD registry adds the finalizer on the first DELETE).
    fn deletion_waits(&self) -> bool {
        true
    }

    fn mark_deleting(&self, obj: &mut Value) {
        let md = crate::meta::metadata_mut(obj);
        let finalizers = md.entry("finalizers").or_insert_with(|| json!([]));
        if let Some(f) = finalizers.as_array_mut()
            && !f.iter().any(|x| x == CLEANUP_FINALIZER)
        {
            f.push(json!(CLEANUP_FINALIZER));
        }
        if condition(obj, "Terminating").is_none() {
            set_condition(
                obj,
                "Terminating",
                "True",
                "InstanceDeletionPending",
                "CustomResourceDefinition marked for deletion; CustomResource deletion will begin soon",
            );
        }
    }
}

/// The finalizer that holds a deleted CRD until its custom resources are gone.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// SetDefaults_CustomResourceDefinitionSpec: singular and listKind from the kind, conversion
/// strategy None.
fn default_names(crd: &mut Value) {
    if let Some(m) = crd.pointer_mut("/spec/names").and_then(Value::as_object_mut) {
        let kind = m.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
        if m.get("singular").and_then(Value::as_str).is_none_or(str::is_empty) {
            m.insert("singular".into(), json!(kind.to_lowercase()));
        }
        if m.get("listKind").and_then(Value::as_str).is_none_or(str::is_empty) {
            m.insert("listKind".into(), json!(format!("{kind}List")));
        }
    }
    if let Some(spec) = crd.get_mut("spec").and_then(Value::as_object_mut) {
        spec.entry("conversion").or_insert(json!({"strategy": "None"}));
    }
}

fn storage_version(crd: &Value) -> Option<Value> {
    crd.pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|v| v.get("storage") == Some(&json!(true)))
        .and_then(|v| v.get("name").cloned())
}

/// The condition of `type` in a CRD's status.
pub fn condition<'a>(crd: &'a Value, ty: &str) -> Option<&'a Value> {
    crd.pointer("/status/conditions").and_then(Value::as_array)?.iter().find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
}

/// Whether the condition of `type` is True.
pub fn condition_true(crd: &Value, ty: &str) -> bool {
    condition(crd, ty).and_then(|c| c.get("status")).and_then(Value::as_str) == Some("True")
}

/// Sets a condition as upstream's SetCRDCondition does: lastTransitionTime moves only when the
/// status changes.
pub fn set_condition(crd: &mut Value, ty: &str, status: &str, reason: &str, message: &str) {
    let now = crate::meta::now_rfc3339();
    let old = condition(crd, ty).cloned();
    let since = match &old {
        Some(o) if o.get("status").and_then(Value::as_str) == Some(status) => o.get("lastTransitionTime").cloned().unwrap_or(json!(now)),
        _ => json!(now),
    };
    let cond = json!({"type": ty, "status": status, "lastTransitionTime": since, "reason": reason, "message": message});
    if !crd.get("status").is_some_and(Value::is_object) {
        crd["status"] = json!({});
    }
    let conds = crd["status"].as_object_mut().unwrap().entry("conditions").or_insert_with(|| json!([]));
    if !conds.is_array() {
        *conds = json!([]);
    }
    let list = conds.as_array_mut().unwrap();
    match list.iter_mut().find(|c| c.get("type").and_then(Value::as_str) == Some(ty)) {
        Some(c) => *c = cond,
        None => list.push(cond),
    }
}

/// A CRD condition's status, reason and message.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
}

impl Condition {
    fn new(status: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Condition { status, reason, message: message.into() }
    }
}

/// What upstream's naming controller decides for a CRD.
#[derive(Debug, Clone, PartialEq)]
pub struct Naming {
    pub accepted_names: Value,
    pub names_accepted: Condition,
    /// The Established condition to write, unless the CRD is established already.
    pub established: Option<Condition>,
}

/// The accepted names and NamesAccepted / Established conditions upstream's naming controller
/// computes for `crd`, given the other CRDs (their accepted names claim theirs): each requested
/// name is taken if it is already ours or nobody else's in the group.
pub fn names_and_conditions(crd: &Value, others: &[Value]) -> Naming {
    let group = crd.pointer("/spec/group").and_then(Value::as_str).unwrap_or("");
    let me = crate::meta::name(crd);
    let mut resources = std::collections::HashSet::new();
    let mut kinds = std::collections::HashSet::new();
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let short = |v: &Value| -> Vec<String> {
        v.get("shortNames").and_then(Value::as_array).into_iter().flatten().filter_map(|x| x.as_str().map(str::to_string)).collect()
    };
    for o in others.iter().filter(|o| o.pointer("/spec/group").and_then(Value::as_str) == Some(group) && crate::meta::name(o) != me) {
        let acc = o.pointer("/status/acceptedNames").cloned().unwrap_or(json!({}));
        resources.insert(s(&acc, "plural"));
        resources.insert(s(&acc, "singular"));
        resources.extend(short(&acc));
        kinds.insert(s(&acc, "kind"));
        kinds.insert(s(&acc, "listKind"));
    }
    let requested = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let accepted = crd.pointer("/status/acceptedNames").cloned().unwrap_or(json!({}));
    let mut names = accepted.clone();
    if !names.is_object() {
        names = json!({});
    }
    let fresh = |req: &str, acc: &str, used: &std::collections::HashSet<String>| -> Result<(), String> {
        if req == acc || !used.contains(req) { Ok(()) } else { Err(format!("{req:?} is already in use")) }
    };
    let mut failure: Option<(&'static str, String)> = None;
    for (field, reason, used) in [("plural", "PluralConflict", &resources), ("singular", "SingularConflict", &resources)] {
        match fresh(&s(&requested, field), &s(&accepted, field), used) {
            Ok(()) => names[field] = json!(s(&requested, field)),
            Err(e) => failure = Some((reason, e)),
        }
    }
    let (req_short, acc_short) = (short(&requested), short(&accepted));
    if req_short != acc_short {
        let errs: Vec<String> = req_short
            .iter()
            .filter(|n| !acc_short.contains(n) && **n != s(&accepted, "plural") && **n != s(&accepted, "singular"))
            .filter_map(|n| fresh(n, "", &resources).err())
            .collect();
        if errs.is_empty() {
            names["shortNames"] = json!(req_short);
        } else {
            // utilerrors.NewAggregate: one error alone, several as a bracketed list.
            failure = Some(("ShortNamesConflict", if errs.len() == 1 { errs[0].clone() } else { format!("[{}]", errs.join(", ")) }));
        }
    }
    for (field, reason) in [("kind", "KindConflict"), ("listKind", "ListKindConflict")] {
        match fresh(&s(&requested, field), &s(&accepted, field), &kinds) {
            Ok(()) => names[field] = json!(s(&requested, field)),
            Err(e) => failure = Some((reason, e)),
        }
    }
    if let Some(c) = requested.get("categories") {
        names["categories"] = c.clone();
    }
    let names_accepted = match failure {
        Some((reason, msg)) => Condition::new("False", reason, msg),
        None => Condition::new("True", "NoConflicts", "no conflicts found"),
    };
    let established = if condition_true(crd, "Established") {
        None
    } else if names_accepted.status == "True" {
        Some(Condition::new("False", "Installing", "the initial names have been accepted"))
    } else {
        Some(Condition::new("False", "NotAccepted", "not all names are accepted"))
    };
    Naming { accepted_names: names, names_accepted, established }
}

fn validate_crd(obj: &Value, errs: &mut Vec<FieldError>) {
    let group = obj.pointer("/spec/group").and_then(Value::as_str).unwrap_or("");
    let plural = obj.pointer("/spec/names/plural").and_then(Value::as_str).unwrap_or("");
    let name = crate::meta::name(obj);
    if group.is_empty() {
        errs.push(FieldError::required("spec.group", ""));
    }
    if plural.is_empty() {
        errs.push(FieldError::required("spec.names.plural", ""));
    }
    if obj.pointer("/spec/names/kind").and_then(Value::as_str).is_none_or(str::is_empty) {
        errs.push(FieldError::required("spec.names.kind", ""));
    }
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        errs.push(FieldError::invalid("metadata.name", &json!(name), "must be spec.names.plural+\".\"+spec.group"));
    }
    match obj.pointer("/spec/scope").and_then(Value::as_str) {
        Some("Namespaced") | Some("Cluster") => {}
        other => errs.push(FieldError::not_supported("spec.scope", &json!(other.unwrap_or("")), &["Cluster", "Namespaced"])),
    }
    let versions = obj.pointer("/spec/versions").and_then(Value::as_array).cloned().unwrap_or_default();
    if versions.is_empty() {
        errs.push(FieldError::invalid("spec.versions", &json!([]), "must have exactly one version marked as storage version"));
    } else if versions.iter().filter(|v| v.get("storage") == Some(&json!(true))).count() != 1 {
        errs.push(FieldError::invalid("spec.versions", &Value::Null, "must have exactly one version marked as storage version"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd(name: &str, names: Value, accepted: Option<Value>) -> Value {
        let mut v = json!({"metadata": {"name": name}, "spec": {"group": "example.com", "names": names}});
        if let Some(a) = accepted {
            v["status"] = json!({"acceptedNames": a});
        }
        v
    }

    #[test]
    fn fresh_names_are_accepted_and_wait_for_establishing() {
        let names = json!({"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList", "shortNames": ["wd"]});
        let n = names_and_conditions(&crd("widgets.example.com", names.clone(), None), &[]);
        assert_eq!(n.accepted_names, names);
        assert_eq!(n.names_accepted, Condition::new("True", "NoConflicts", "no conflicts found"));
        assert_eq!(n.established, Some(Condition::new("False", "Installing", "the initial names have been accepted")));
    }

    #[test]
    fn names_another_crd_of_the_group_holds_are_refused() {
        let taken = json!({"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList", "shortNames": ["wd"]});
        let other = crd("widgets.example.com", taken.clone(), Some(taken));
        let mine = crd(
            "gizmos.example.com",
            json!({"plural": "gizmos", "singular": "gizmo", "kind": "Widget", "listKind": "GizmoList", "shortNames": ["wd"]}),
            Some(json!({"plural": "", "kind": ""})),
        );
        let n = names_and_conditions(&mine, &[other.clone(), mine.clone()]);
        // Upstream checks kind after shortNames: the last conflict found is the one reported.
        assert_eq!(n.names_accepted, Condition::new("False", "KindConflict", "\"Widget\" is already in use"));
        assert_eq!(n.established, Some(Condition::new("False", "NotAccepted", "not all names are accepted")));
        assert_eq!(n.accepted_names["plural"], "gizmos");
        assert_eq!(n.accepted_names["kind"], "", "a refused name keeps the accepted one");
        assert!(n.accepted_names.get("shortNames").is_none());
        // Another group's names are no conflict.
        let mut elsewhere = other;
        elsewhere["spec"]["group"] = json!("other.io");
        assert_eq!(names_and_conditions(&mine, &[elsewhere]).names_accepted.status, "True");
    }

    #[test]
    fn deletion_adds_the_cleanup_finalizer_and_terminating_once() {
        let mut v = json!({"metadata": {"name": "widgets.example.com", "finalizers": ["other"]}, "status": {}});
        CustomResourceDefinition.mark_deleting(&mut v);
        CustomResourceDefinition.mark_deleting(&mut v);
        assert_eq!(v["metadata"]["finalizers"], json!(["other", CLEANUP_FINALIZER]));
        let t = condition(&v, "Terminating").unwrap();
        assert_eq!((t["status"].as_str(), t["reason"].as_str()), (Some("True"), Some("InstanceDeletionPending")));
        assert_eq!(v["status"]["conditions"].as_array().unwrap().len(), 1);
    }
}
