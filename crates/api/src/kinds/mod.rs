//! One module per built-in kind, each holding all of that kind's behaviour behind the [`Kind`]
//! trait, as upstream's `pkg/registry/<group>/<resource>/strategy.go` and its printer do:
//! defaults, what create prepares, validation, field-selector attributes, generation tracking,
//! the name rule, the Table columns and cells, and the registry hooks some kinds need (graceful
//! deletion, protected names, create-on-update). The resource table (`resources.rs`) names each
//! entry's kind module and its Rust type; nothing else matches on kind names.
//!
//! Adding a built-in kind: a module here implementing `Kind` (every method has a default) and
//! one entry in the resource table.

use std::marker::PhantomData;

use serde_json::{Value, json};

use crate::errors::FieldError;
use crate::printers::{self, Column};
use crate::validation::NameRule;

mod certificatesigningrequest;
mod configmap;
mod controllerrevision;
mod cronjob;
pub mod customresourcedefinition;
mod daemonset;
mod deployment;
mod endpoints;
mod endpointslice;
mod event;
mod generic;
mod horizontalpodautoscaler;
mod ingress;
mod ingressclass;
mod job;
mod lease;
mod limitrange;
mod namespace;
mod networkpolicy;
mod node;
mod persistentvolume;
mod persistentvolumeclaim;
mod pod;
mod poddisruptionbudget;
pub mod podspec;
mod podtemplate;
mod priorityclass;
mod rbac;
mod replicaset;
mod replicationcontroller;
mod resourcequota;
mod secret;
mod service;
mod serviceaccount;
mod statefulset;
mod storageclass;

pub use certificatesigningrequest::CertificateSigningRequest;
pub use configmap::ConfigMap;
pub use controllerrevision::ControllerRevision;
pub use cronjob::CronJob;
pub use customresourcedefinition::CustomResourceDefinition;
pub use daemonset::DaemonSet;
pub use deployment::Deployment;
pub use endpoints::Endpoints;
pub use endpointslice::EndpointSlice;
pub use event::Event;
pub use generic::{Custom, Generic};
pub use horizontalpodautoscaler::HorizontalPodAutoscaler;
pub use ingress::Ingress;
pub use ingressclass::IngressClass;
pub use job::Job;
pub use lease::Lease;
pub use limitrange::LimitRange;
pub use namespace::Namespace;
pub use networkpolicy::NetworkPolicy;
pub use node::Node;
pub use persistentvolume::PersistentVolume;
pub use persistentvolumeclaim::PersistentVolumeClaim;
pub use pod::Pod;
pub use poddisruptionbudget::PodDisruptionBudget;
pub use podtemplate::PodTemplate;
pub use priorityclass::PriorityClass;
pub use rbac::{Role, RoleBinding};
pub use replicaset::ReplicaSet;
pub use replicationcontroller::ReplicationController;
pub use resourcequota::ResourceQuota;
pub use secret::Secret;
pub use service::Service;
pub use serviceaccount::ServiceAccount;
pub use statefulset::StatefulSet;
pub use storageclass::StorageClass;

/// Everything the API server knows about one kind beyond its table entry. Objects are JSON in
/// the resource's storage version.
pub trait Kind: Send + Sync + 'static {
    /// How names are validated.
    fn name_rule(&self) -> NameRule {
        NameRule::Subdomain
    }

    /// Whether metadata.generation is kept and bumped on spec changes.
    fn tracks_generation(&self) -> bool {
        false
    }

    /// The status a new object starts with, for kinds with a status subresource (upstream's
    /// PrepareForCreate resets status): `{}` unless the kind says otherwise; None keeps what
    /// the creator sent.
    fn initial_status(&self, _obj: &Value) -> Option<Value> {
        Some(json!({}))
    }

    /// What else create prepares after admission (e.g. a namespace's name label).
    fn prepare_create(&self, _obj: &mut Value) {}

    /// What the kind does to a written object before admission sees it (upstream does it while
    /// decoding or in PrepareForCreate/Update): Secret stringData, a Job's generated selector.
    fn normalize(&self, _obj: &mut Value, _create: bool) {}

    /// Upstream's SetDefaults_* for the kind.
    fn default(&self, _obj: &mut Value) {}

    /// Kind-specific validation (name and metadata checks are the registry's).
    fn validate(&self, _obj: &Value, _old: Option<&Value>, _errs: &mut Vec<FieldError>) {}

    /// Field-selector attributes besides metadata.name and metadata.namespace.
    fn field_attrs(&self, _obj: &Value, _add: &mut dyn FnMut(&str, String)) {}

    /// Field selectors accepted but not extracted as attributes (upstream's aliases).
    fn extra_field_selectors(&self) -> &'static [&'static str] {
        &[]
    }

    /// Whether a PUT of a missing object creates it.
    fn allow_create_on_update(&self) -> bool {
        false
    }

    /// The Table columns (`kubectl get`).
    fn columns(&self) -> Vec<Column> {
        vec![printers::NAME, printers::CREATED_AT]
    }

    /// The cells of one row, matching `columns`.
    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![json!(crate::meta::name(obj)), json!(crate::meta::get_str(obj, &["metadata", "creationTimestamp"]).unwrap_or(""))]
    }

    /// A DELETE of this name is refused with this message (protected objects).
    fn protected(&self, _name: &str) -> Option<String> {
        None
    }

    /// Whether deletion is graceful (a deletionTimestamp plus grace period the node agent honours).
    fn graceful(&self) -> bool {
        false
    }

    /// The grace period a DELETE gets (0: removed at once unless finalizers hold it).
    fn deletion_grace(&self, _current: &Value, _requested: Option<i64>) -> i64 {
        0
    }

    /// Whether deletion always goes through a deletionTimestamp first and the object stays until
    /// this says it may go (a Namespace waits for its spec finalizers).
    fn deletion_waits(&self) -> bool {
        false
    }

    /// What marking for deletion changes besides metadata (a Namespace turns Terminating).
    fn mark_deleting(&self, _obj: &mut Value) {}

    /// Whether an object marked for deletion (finalizers gone) may be removed now.
    fn may_remove(&self, _current: &Value, _obj: &Value) -> bool {
        true
    }

    /// Whether writes allocate Service cluster IPs and node ports.
    fn allocates_service_addresses(&self) -> bool {
        false
    }
}

/// What the resource table holds of one entry's behaviour: its kind module and the Rust type of
/// its served version (None for custom resources).
#[derive(Clone, Copy)]
pub struct Behavior {
    pub kind: &'static dyn Kind,
    pub typed: Option<&'static dyn TypedSchema>,
}

impl std::fmt::Debug for Behavior {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Behavior")
    }
}

impl Behavior {
    pub const CUSTOM: Behavior = Behavior { kind: &Custom, typed: None };
}

/// Type checks and schemas of one served version's Rust type (k8s-openapi).
pub trait TypedSchema: Send + Sync + 'static {
    /// Decodes `obj` as the type: the decoder's error for a wrong field type.
    fn check(&self, obj: &Value) -> Result<(), String>;
    /// Adds the type's schema (and what it references) to `generator`; its definition name.
    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> String;
}

/// The `TypedSchema` of `T`.
pub struct Typed<T>(PhantomData<fn() -> T>);

impl<T> Typed<T> {
    pub const NEW: Typed<T> = Typed(PhantomData);
}

impl<T: serde::de::DeserializeOwned + schemars::JsonSchema + 'static> TypedSchema for Typed<T> {
    fn check(&self, obj: &Value) -> Result<(), String> {
        serde_json::from_value::<T>(obj.clone()).map(|_| ()).map_err(|e| e.to_string())
    }
    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> String {
        generator.subschema_for::<T>();
        T::schema_name().into_owned()
    }
}
