//! The built-in kinds' Rust types (k8s-openapi): used to reject bodies whose fields have the
//! wrong JSON types (400, as upstream's decoder does) and to generate OpenAPI schemas.

use k8s_openapi::api::{apps, autoscaling, batch, certificates, coordination, core, discovery, events, networking, policy, rbac, scheduling, storage};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
use r8s_api::ResourceInfo;
use serde_json::Value;

use crate::status::{ApiError, ApiResult};

macro_rules! kinds {
    ($( ($g:literal, $v:literal, $k:literal, $t:ty) ),* $(,)?) => {
        /// Every built-in (group, version, kind) with a Rust type.
        pub const KINDS: &[(&str, &str, &str)] = &[$( ($g, $v, $k) ),*];

        fn decode_check(group: &str, version: &str, kind: &str, obj: &Value) -> Option<Result<(), String>> {
            match (group, version, kind) {
                $( ($g, $v, $k) => Some(serde_json::from_value::<$t>(obj.clone()).map(|_| ()).map_err(|e| e.to_string())), )*
                _ => None,
            }
        }

        /// Adds the schema of a built-in kind (and everything it references) to `generator`;
        /// returns the schema's definition name.
        pub fn schema_for(generator: &mut schemars::SchemaGenerator, group: &str, version: &str, kind: &str) -> Option<String> {
            match (group, version, kind) {
                $( ($g, $v, $k) => {
                    generator.subschema_for::<$t>();
                    Some(<$t as schemars::JsonSchema>::schema_name().into_owned())
                } )*
                _ => None,
            }
        }
    };
}

kinds! {
    ("", "v1", "Binding", core::v1::Binding),
    ("", "v1", "ComponentStatus", core::v1::ComponentStatus),
    ("", "v1", "ConfigMap", core::v1::ConfigMap),
    ("", "v1", "Endpoints", core::v1::Endpoints),
    ("", "v1", "Event", core::v1::Event),
    ("", "v1", "LimitRange", core::v1::LimitRange),
    ("", "v1", "Namespace", core::v1::Namespace),
    ("", "v1", "Node", core::v1::Node),
    ("", "v1", "PersistentVolumeClaim", core::v1::PersistentVolumeClaim),
    ("", "v1", "PersistentVolume", core::v1::PersistentVolume),
    ("", "v1", "Pod", core::v1::Pod),
    ("", "v1", "PodTemplate", core::v1::PodTemplate),
    ("", "v1", "ReplicationController", core::v1::ReplicationController),
    ("", "v1", "ResourceQuota", core::v1::ResourceQuota),
    ("", "v1", "Secret", core::v1::Secret),
    ("", "v1", "ServiceAccount", core::v1::ServiceAccount),
    ("", "v1", "Service", core::v1::Service),
    ("apiextensions.k8s.io", "v1", "CustomResourceDefinition", apiext::CustomResourceDefinition),
    ("apps", "v1", "ControllerRevision", apps::v1::ControllerRevision),
    ("apps", "v1", "DaemonSet", apps::v1::DaemonSet),
    ("apps", "v1", "Deployment", apps::v1::Deployment),
    ("apps", "v1", "ReplicaSet", apps::v1::ReplicaSet),
    ("apps", "v1", "StatefulSet", apps::v1::StatefulSet),
    ("autoscaling", "v1", "HorizontalPodAutoscaler", autoscaling::v1::HorizontalPodAutoscaler),
    ("autoscaling", "v2", "HorizontalPodAutoscaler", autoscaling::v2::HorizontalPodAutoscaler),
    ("batch", "v1", "CronJob", batch::v1::CronJob),
    ("batch", "v1", "Job", batch::v1::Job),
    ("certificates.k8s.io", "v1", "CertificateSigningRequest", certificates::v1::CertificateSigningRequest),
    ("coordination.k8s.io", "v1", "Lease", coordination::v1::Lease),
    ("discovery.k8s.io", "v1", "EndpointSlice", discovery::v1::EndpointSlice),
    ("events.k8s.io", "v1", "Event", events::v1::Event),
    ("networking.k8s.io", "v1", "IngressClass", networking::v1::IngressClass),
    ("networking.k8s.io", "v1", "Ingress", networking::v1::Ingress),
    ("networking.k8s.io", "v1", "NetworkPolicy", networking::v1::NetworkPolicy),
    ("policy", "v1", "PodDisruptionBudget", policy::v1::PodDisruptionBudget),
    ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", rbac::v1::ClusterRoleBinding),
    ("rbac.authorization.k8s.io", "v1", "ClusterRole", rbac::v1::ClusterRole),
    ("rbac.authorization.k8s.io", "v1", "RoleBinding", rbac::v1::RoleBinding),
    ("rbac.authorization.k8s.io", "v1", "Role", rbac::v1::Role),
    ("scheduling.k8s.io", "v1", "PriorityClass", scheduling::v1::PriorityClass),
    ("storage.k8s.io", "v1", "StorageClass", storage::v1::StorageClass),
}

/// Rejects a body that does not decode as the kind's type (wrong field types). Missing required
/// fields are left to validation, which reports them as upstream does (422).
pub fn check(info: &ResourceInfo, obj: &Value) -> ApiResult<()> {
    match decode_check(&info.group, &info.version, &info.kind, obj) {
        Some(Err(e)) if !e.starts_with("missing field") => {
            Err(ApiError::bad_request(format!("{} in version \"{}\" cannot be handled as a {}: {e}", info.kind, info.version, info.kind)))
        }
        _ => Ok(()),
    }
}
