//! Admission: an ordered chain of plugins that see every write (create, update, delete and,
//! for the streaming subresources, connect) with upstream's attributes, first mutating (each
//! may change the object), then validating (each may only refuse). The registry runs the
//! mutating phase before its own validation and the validating phase just before the store
//! write. Webhooks and further built-ins are one entry each in `Chain::default`.

mod builtin;

use futures::future::BoxFuture;
use r8s_api::ResourceInfo;
use serde_json::Value;

use crate::authn::UserInfo;
use crate::registry::Registry;
use crate::status::ApiResult;

pub use builtin::{DefaultIngressClass, DefaultStorageClass, Defaulting, LimitRanger, Priority, ResourceQuota};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    /// As upstream spells it (`admission.Operation`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

/// Upstream's `admission.Attributes`.
#[derive(Clone, Debug)]
pub struct Attributes {
    pub operation: Operation,
    /// The resource (group, version, kind, plural) in the version the object is in.
    pub resource: ResourceInfo,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: String,
    /// The object being written (None for delete and connect).
    pub object: Option<Value>,
    /// What is stored now (None for create).
    pub old_object: Option<Value>,
    /// Who asks (None: the server itself).
    pub user: Option<UserInfo>,
    pub dry_run: bool,
}

impl Attributes {
    pub fn is_core(&self, kind: &str) -> bool {
        self.resource.group.is_empty() && self.resource.kind == kind
    }
}

/// One admission plugin: `admit` (mutating phase) and/or `validate` (validating phase).
pub trait Plugin: Send + Sync {
    fn name(&self) -> &'static str;
    fn admit<'a>(&'a self, _reg: &'a Registry, _a: &'a mut Attributes) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async { Ok(()) })
    }
    fn validate<'a>(&'a self, _reg: &'a Registry, _a: &'a Attributes) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async { Ok(()) })
    }
}

/// The ordered chain.
pub struct Chain {
    pub plugins: Vec<Box<dyn Plugin>>,
}

impl Default for Chain {
    /// Upstream's default order for the plugins r8s has.
    fn default() -> Self {
        Chain {
            plugins: vec![
                Box::new(Defaulting),
                Box::new(Priority),
                Box::new(LimitRanger),
                Box::new(DefaultStorageClass),
                Box::new(DefaultIngressClass),
                Box::new(ResourceQuota),
            ],
        }
    }
}

impl Chain {
    /// The mutating phase: every plugin's `admit`, in order.
    pub async fn admit(&self, reg: &Registry, a: &mut Attributes) -> ApiResult<()> {
        for p in &self.plugins {
            p.admit(reg, a).await?;
        }
        Ok(())
    }

    /// The validating phase: every plugin's `validate`, in order.
    pub async fn validate(&self, reg: &Registry, a: &Attributes) -> ApiResult<()> {
        for p in &self.plugins {
            p.validate(reg, a).await?;
        }
        Ok(())
    }
}
