//! How lists of the built-in API merge: upstream's `patchMergeKey` / `patchStrategy` (strategic
//! merge patch) and `listType` / `listMapKeys` (server-side apply). These are facts about the
//! API, written down here by field name and the name of the field that contains it (the
//! built-in types are unambiguous at that depth).

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListKind {
    /// Items are objects identified by these keys (the first is SMP's merge key).
    Map(&'static [&'static str]),
    /// A list of primitives merged as a set.
    Set,
    /// Replaced as a whole.
    Atomic,
}

const CONTAINER_LISTS: &[&str] = &["containers", "initContainers", "ephemeralContainers"];

/// `parent` is the field holding the object that has `field` (for list items, the list's field).
pub fn list_kind(parent: &str, field: &str) -> ListKind {
    match field {
        "containers" | "initContainers" | "ephemeralContainers" => ListKind::Map(&["name"]),
        "ports" if CONTAINER_LISTS.contains(&parent) => ListKind::Map(&["containerPort", "protocol"]),
        "ports" if parent == "spec" => ListKind::Map(&["port", "protocol"]),
        "env" => ListKind::Map(&["name"]),
        "volumeMounts" => ListKind::Map(&["mountPath"]),
        "volumeDevices" => ListKind::Map(&["devicePath"]),
        "resizePolicy" => ListKind::Map(&["resourceName"]),
        "volumes" if parent == "spec" => ListKind::Map(&["name"]),
        "imagePullSecrets" => ListKind::Map(&["name"]),
        "hostAliases" => ListKind::Map(&["ip"]),
        "topologySpreadConstraints" => ListKind::Map(&["topologyKey", "whenUnsatisfiable"]),
        "schedulingGates" => ListKind::Map(&["name"]),
        "resourceClaims" if parent == "spec" => ListKind::Map(&["name"]),
        "ownerReferences" => ListKind::Map(&["uid"]),
        "finalizers" => ListKind::Set,
        "conditions" => ListKind::Map(&["type"]),
        "addresses" if parent == "status" => ListKind::Map(&["type"]),
        "secrets" if parent.is_empty() => ListKind::Map(&["name"]),
        "podIPs" | "hostIPs" => ListKind::Map(&["ip"]),
        _ => ListKind::Atomic,
    }
}

/// Object fields (not lists) whose patch strategy is `retainKeys` upstream: a strategic merge
/// patch from `kubectl apply` then names the keys to keep (`$retainKeys`), so switching a
/// union's member (RollingUpdate -> Recreate) drops the old member. By definition name.
pub fn retains_keys(definition: &str, field: &str) -> bool {
    matches!((definition, field), ("DeploymentSpec", "strategy"))
}

/// SMP's merge key for a list (None: replace the list; Some("") : primitive set merge).
pub fn smp_merge_key(parent: &str, field: &str) -> Option<&'static str> {
    match list_kind(parent, field) {
        ListKind::Map(keys) => Some(keys[0]),
        ListKind::Set => Some(""),
        ListKind::Atomic => None,
    }
}
