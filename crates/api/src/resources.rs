//! The resource table: one entry per served resource. Routes, discovery, OpenAPI, short names,
//! printing and field selectors are all driven from here; each entry names its kind module
//! (`kinds/`) and the Rust type of its version, so adding a built-in kind is one module plus one
//! entry here.

use std::sync::Arc;

use k8s_openapi::api::{
    apps, authentication, authorization, autoscaling, batch, certificates, coordination, core, discovery, events, networking, policy, rbac, scheduling, storage,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;

use crate::kinds::{self, Behavior, Typed};

/// Subresources a resource can serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    Status,
    Scale,
    Binding,
    Eviction,
    /// Served by the node agent through the API server (listed in discovery; proxied later).
    Log,
    Exec,
    Attach,
    PortForward,
    Proxy,
    EphemeralContainers,
    Approval,
    Finalize,
    Token,
}

impl Subresource {
    pub fn name(self) -> &'static str {
        match self {
            Subresource::Status => "status",
            Subresource::Scale => "scale",
            Subresource::Binding => "binding",
            Subresource::Eviction => "eviction",
            Subresource::Log => "log",
            Subresource::Exec => "exec",
            Subresource::Attach => "attach",
            Subresource::PortForward => "portforward",
            Subresource::Proxy => "proxy",
            Subresource::EphemeralContainers => "ephemeralcontainers",
            Subresource::Approval => "approval",
            Subresource::Finalize => "finalize",
            Subresource::Token => "token",
        }
    }

    pub fn parse(s: &str) -> Option<Subresource> {
        Some(match s {
            "status" => Subresource::Status,
            "scale" => Subresource::Scale,
            "binding" => Subresource::Binding,
            "eviction" => Subresource::Eviction,
            "log" => Subresource::Log,
            "exec" => Subresource::Exec,
            "attach" => Subresource::Attach,
            "portforward" => Subresource::PortForward,
            "proxy" => Subresource::Proxy,
            "ephemeralcontainers" => Subresource::EphemeralContainers,
            "approval" => Subresource::Approval,
            "finalize" => Subresource::Finalize,
            "token" => Subresource::Token,
            _ => return None,
        })
    }

    /// (kind, group, version, verbs) as discovery lists them.
    pub fn discovery(self, parent_kind: &str) -> (&'static str, &'static str, &'static str, &'static [&'static str]) {
        const GUP: &[&str] = &["get", "patch", "update"];
        match self {
            Subresource::Status | Subresource::Approval | Subresource::EphemeralContainers => {
                let _ = parent_kind;
                ("", "", "", GUP)
            }
            Subresource::Scale => ("Scale", "autoscaling", "v1", GUP),
            Subresource::Binding => ("Binding", "", "v1", &["create"]),
            Subresource::Eviction => ("Eviction", "policy", "v1", &["create"]),
            Subresource::Log => ("Pod", "", "v1", &["get"]),
            Subresource::Exec | Subresource::Attach | Subresource::PortForward => ("PodExecOptions", "", "v1", &["create", "get"]),
            Subresource::Proxy => ("PodProxyOptions", "", "v1", &["create", "delete", "get", "patch", "update"]),
            Subresource::Finalize => ("", "", "", &["update"]),
            Subresource::Token => ("TokenRequest", "authentication.k8s.io", "v1", &["create"]),
        }
    }
}

pub const ALL_VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// One served resource at one group/version.
#[derive(Clone, Debug)]
pub struct ResourceInfo {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub namespaced: bool,
    pub verbs: Vec<String>,
    pub categories: Vec<String>,
    pub subresources: Vec<Subresource>,
    /// The group/version objects of this resource are stored in; others convert on the way.
    pub storage_version: String,
    /// Store prefix segment: `<plural>` for core, `<group>/<plural>` otherwise.
    pub storage_resource: String,
    /// Whether this version is the group's preferred one (discovery and OpenAPI).
    pub preferred: bool,
    /// Set for custom resources (served from a CRD).
    pub custom: bool,
    /// The kind's behaviour (its module under `kinds/`) and this version's Rust type.
    pub behavior: Behavior,
}

pub type ResourceRef = Arc<ResourceInfo>;

impl ResourceInfo {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    pub fn group_version(&self) -> String {
        self.api_version()
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    pub fn has(&self, sub: Subresource) -> bool {
        self.subresources.contains(&sub)
    }

    /// `deployments.apps` style name; the core group has none.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }

    /// Store key prefix for all objects of this resource.
    pub fn key_prefix(&self) -> String {
        format!("/registry/{}/", self.storage_resource)
    }

    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => {
                format!("/registry/{}/{}/{}", self.storage_resource, ns, name)
            }
            _ => format!("/registry/{}/{}", self.storage_resource, name),
        }
    }

    /// Prefix for one namespace of a namespaced resource.
    pub fn namespace_prefix(&self, namespace: &str) -> String {
        format!("/registry/{}/{}/", self.storage_resource, namespace)
    }
}

struct Entry {
    gv: &'static str,
    kind: &'static str,
    plural: &'static str,
    short: &'static [&'static str],
    namespaced: bool,
    all: bool,
    subs: &'static [Subresource],
    /// Storage group/version if different from `gv`; `(resource)` storage name if shared.
    storage: Option<(&'static str, &'static str)>,
    preferred: bool,
    behavior: Behavior,
}

use Subresource::*;

#[allow(clippy::too_many_arguments)]
const fn e(
    gv: &'static str,
    kind: &'static str,
    plural: &'static str,
    short: &'static [&'static str],
    namespaced: bool,
    all: bool,
    subs: &'static [Subresource],
    behavior: Behavior,
) -> Entry {
    Entry { gv, kind, plural, short, namespaced, all, subs, storage: None, preferred: true, behavior }
}

/// A kind module and the Rust type of the entry's version.
macro_rules! b {
    ($kind:expr, $ty:ty) => {
        Behavior { kind: &$kind, typed: Some(&Typed::<$ty>::NEW) }
    };
}

/// The built-in resources (Kubernetes 1.32), in discovery order within each group.
const BUILTIN: &[Entry] = &[
    e("v1", "Binding", "bindings", &[], true, false, &[], b!(kinds::Generic, core::v1::Binding)),
    e("v1", "ComponentStatus", "componentstatuses", &["cs"], false, false, &[], b!(kinds::Generic, core::v1::ComponentStatus)),
    e("v1", "ConfigMap", "configmaps", &["cm"], true, false, &[], b!(kinds::ConfigMap, core::v1::ConfigMap)),
    e("v1", "Endpoints", "endpoints", &["ep"], true, false, &[], b!(kinds::Endpoints, core::v1::Endpoints)),
    e("v1", "Event", "events", &["ev"], true, false, &[], b!(kinds::Event, core::v1::Event)),
    e("v1", "LimitRange", "limitranges", &["limits"], true, false, &[], b!(kinds::LimitRange, core::v1::LimitRange)),
    e("v1", "Namespace", "namespaces", &["ns"], false, false, &[Finalize, Status], b!(kinds::Namespace, core::v1::Namespace)),
    e("v1", "Node", "nodes", &["no"], false, false, &[Proxy, Status], b!(kinds::Node, core::v1::Node)),
    e(
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        &["pvc"],
        true,
        false,
        &[Status],
        b!(kinds::PersistentVolumeClaim, core::v1::PersistentVolumeClaim),
    ),
    e("v1", "PersistentVolume", "persistentvolumes", &["pv"], false, false, &[Status], b!(kinds::PersistentVolume, core::v1::PersistentVolume)),
    e(
        "v1",
        "Pod",
        "pods",
        &["po"],
        true,
        true,
        &[Attach, Binding, EphemeralContainers, Eviction, Exec, Log, PortForward, Proxy, Status],
        b!(kinds::Pod, core::v1::Pod),
    ),
    e("v1", "PodTemplate", "podtemplates", &[], true, false, &[], b!(kinds::PodTemplate, core::v1::PodTemplate)),
    e(
        "v1",
        "ReplicationController",
        "replicationcontrollers",
        &["rc"],
        true,
        true,
        &[Scale, Status],
        b!(kinds::ReplicationController, core::v1::ReplicationController),
    ),
    e("v1", "ResourceQuota", "resourcequotas", &["quota"], true, false, &[Status], b!(kinds::ResourceQuota, core::v1::ResourceQuota)),
    e("v1", "Secret", "secrets", &[], true, false, &[], b!(kinds::Secret, core::v1::Secret)),
    e("v1", "ServiceAccount", "serviceaccounts", &["sa"], true, false, &[Token], b!(kinds::ServiceAccount, core::v1::ServiceAccount)),
    e("v1", "Service", "services", &["svc"], true, true, &[Proxy, Status], b!(kinds::Service, core::v1::Service)),
    e(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        &["crd", "crds"],
        false,
        false,
        &[Status],
        b!(kinds::CustomResourceDefinition, apiext::CustomResourceDefinition),
    ),
    e("apps/v1", "ControllerRevision", "controllerrevisions", &[], true, false, &[], b!(kinds::ControllerRevision, apps::v1::ControllerRevision)),
    e("apps/v1", "DaemonSet", "daemonsets", &["ds"], true, true, &[Status], b!(kinds::DaemonSet, apps::v1::DaemonSet)),
    e("apps/v1", "Deployment", "deployments", &["deploy"], true, true, &[Scale, Status], b!(kinds::Deployment, apps::v1::Deployment)),
    e("apps/v1", "ReplicaSet", "replicasets", &["rs"], true, true, &[Scale, Status], b!(kinds::ReplicaSet, apps::v1::ReplicaSet)),
    e("apps/v1", "StatefulSet", "statefulsets", &["sts"], true, true, &[Scale, Status], b!(kinds::StatefulSet, apps::v1::StatefulSet)),
    // Reviews: asked, answered, never stored (create only).
    e("authentication.k8s.io/v1", "SelfSubjectReview", "selfsubjectreviews", &[], false, false, &[], b!(kinds::Generic, authentication::v1::SelfSubjectReview)),
    e(
        "authorization.k8s.io/v1",
        "LocalSubjectAccessReview",
        "localsubjectaccessreviews",
        &[],
        true,
        false,
        &[],
        b!(kinds::Generic, authorization::v1::LocalSubjectAccessReview),
    ),
    e(
        "authorization.k8s.io/v1",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        &[],
        false,
        false,
        &[],
        b!(kinds::Generic, authorization::v1::SelfSubjectAccessReview),
    ),
    e(
        "authorization.k8s.io/v1",
        "SelfSubjectRulesReview",
        "selfsubjectrulesreviews",
        &[],
        false,
        false,
        &[],
        b!(kinds::Generic, authorization::v1::SelfSubjectRulesReview),
    ),
    e(
        "authorization.k8s.io/v1",
        "SubjectAccessReview",
        "subjectaccessreviews",
        &[],
        false,
        false,
        &[],
        b!(kinds::Generic, authorization::v1::SubjectAccessReview),
    ),
    Entry {
        storage: None,
        preferred: true,
        ..e(
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            &["hpa"],
            true,
            true,
            &[Status],
            b!(kinds::HorizontalPodAutoscaler, autoscaling::v2::HorizontalPodAutoscaler),
        )
    },
    Entry {
        storage: Some(("autoscaling/v2", "")),
        preferred: false,
        ..e(
            "autoscaling/v1",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            &["hpa"],
            true,
            true,
            &[Status],
            b!(kinds::HorizontalPodAutoscaler, autoscaling::v1::HorizontalPodAutoscaler),
        )
    },
    e("batch/v1", "CronJob", "cronjobs", &["cj"], true, true, &[Status], b!(kinds::CronJob, batch::v1::CronJob)),
    e("batch/v1", "Job", "jobs", &[], true, true, &[Status], b!(kinds::Job, batch::v1::Job)),
    e(
        "certificates.k8s.io/v1",
        "CertificateSigningRequest",
        "certificatesigningrequests",
        &["csr"],
        false,
        false,
        &[Approval, Status],
        b!(kinds::CertificateSigningRequest, certificates::v1::CertificateSigningRequest),
    ),
    e("coordination.k8s.io/v1", "Lease", "leases", &[], true, false, &[], b!(kinds::Lease, coordination::v1::Lease)),
    e("discovery.k8s.io/v1", "EndpointSlice", "endpointslices", &[], true, false, &[], b!(kinds::EndpointSlice, discovery::v1::EndpointSlice)),
    // events.k8s.io/v1 Events share storage with core v1 Events, converted on the way in and out.
    Entry { storage: Some(("v1", "events")), ..e("events.k8s.io/v1", "Event", "events", &["ev"], true, false, &[], b!(kinds::Event, events::v1::Event)) },
    e("networking.k8s.io/v1", "IngressClass", "ingressclasses", &[], false, false, &[], b!(kinds::IngressClass, networking::v1::IngressClass)),
    e("networking.k8s.io/v1", "Ingress", "ingresses", &["ing"], true, false, &[Status], b!(kinds::Ingress, networking::v1::Ingress)),
    e("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", &["netpol"], true, false, &[], b!(kinds::NetworkPolicy, networking::v1::NetworkPolicy)),
    e(
        "policy/v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        &["pdb"],
        true,
        false,
        &[Status],
        b!(kinds::PodDisruptionBudget, policy::v1::PodDisruptionBudget),
    ),
    e(
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        &[],
        false,
        false,
        &[],
        b!(kinds::RoleBinding, rbac::v1::ClusterRoleBinding),
    ),
    e("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", &[], false, false, &[], b!(kinds::Role, rbac::v1::ClusterRole)),
    e("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings", &[], true, false, &[], b!(kinds::RoleBinding, rbac::v1::RoleBinding)),
    e("rbac.authorization.k8s.io/v1", "Role", "roles", &[], true, false, &[], b!(kinds::Role, rbac::v1::Role)),
    e("scheduling.k8s.io/v1", "PriorityClass", "priorityclasses", &["pc"], false, false, &[], b!(kinds::PriorityClass, scheduling::v1::PriorityClass)),
    e("storage.k8s.io/v1", "StorageClass", "storageclasses", &["sc"], false, false, &[], b!(kinds::StorageClass, storage::v1::StorageClass)),
    // Resource metrics, served by the API server from the kubelets' /stats/summary (not stored).
    e("metrics.k8s.io/v1beta1", "NodeMetrics", "nodes", &[], false, false, &[], Behavior { kind: &kinds::Generic, typed: None }),
    e("metrics.k8s.io/v1beta1", "PodMetrics", "pods", &[], true, false, &[], Behavior { kind: &kinds::Generic, typed: None }),
];

fn split_gv(gv: &str) -> (String, String) {
    match gv.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), gv.to_string()),
    }
}

fn storage_resource(group: &str, plural: &str) -> String {
    if group.is_empty() { plural.to_string() } else { format!("{group}/{plural}") }
}

/// The built-in resource table.
pub fn builtin_resources() -> Vec<ResourceInfo> {
    BUILTIN
        .iter()
        .map(|en| {
            let (group, version) = split_gv(en.gv);
            let verbs: Vec<String> = match en.plural {
                "bindings" => vec!["create".into()],
                p if p.ends_with("reviews") => vec!["create".into()],
                "componentstatuses" => vec!["get".into(), "list".into()],
                _ if en.gv.starts_with("metrics.k8s.io/") => vec!["get".into(), "list".into()],
                _ => ALL_VERBS.iter().map(|s| s.to_string()).collect(),
            };
            let (storage_version, storage_res) = match en.storage {
                Some((sgv, res)) => {
                    let (sg, _) = split_gv(sgv);
                    let res = if res.is_empty() { en.plural } else { res };
                    (sgv.to_string(), storage_resource(&sg, res))
                }
                None => (en.gv.to_string(), storage_resource(&group, en.plural)),
            };
            ResourceInfo {
                singular: en.kind.to_lowercase(),
                kind: en.kind.to_string(),
                plural: en.plural.to_string(),
                short_names: en.short.iter().map(|s| s.to_string()).collect(),
                namespaced: en.namespaced,
                verbs,
                categories: if en.all { vec!["all".to_string()] } else { vec![] },
                subresources: en.subs.to_vec(),
                storage_version,
                storage_resource: storage_res,
                preferred: en.preferred,
                custom: false,
                behavior: en.behavior,
                group,
                version,
            }
        })
        .collect()
}

/// The built-in resource serving `kind` in `group`, at the group's preferred version.
pub fn builtin_by_kind(group: &str, kind: &str) -> Option<&'static ResourceInfo> {
    static TABLE: std::sync::OnceLock<Vec<ResourceInfo>> = std::sync::OnceLock::new();
    TABLE.get_or_init(builtin_resources).iter().filter(|r| r.group == group && r.kind == kind).max_by_key(|r| r.preferred)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_upstream_names() {
        let all = builtin_resources();
        let deploy = all.iter().find(|r| r.plural == "deployments").unwrap();
        assert_eq!(deploy.api_version(), "apps/v1");
        assert_eq!(deploy.key(Some("default"), "web"), "/registry/apps/deployments/default/web");
        let ev = all.iter().find(|r| r.group == "events.k8s.io").unwrap();
        assert_eq!(ev.storage_resource, "events");
        assert_eq!(ev.storage_version, "v1");
        let hpa1 = all.iter().find(|r| r.plural == "horizontalpodautoscalers" && r.version == "v1").unwrap();
        assert_eq!(hpa1.storage_version, "autoscaling/v2");
        assert_eq!(hpa1.storage_resource, "autoscaling/horizontalpodautoscalers");
    }
}
