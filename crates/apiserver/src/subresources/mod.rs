//! Subresources with behaviour of their own, one module each (upstream's
//! `pkg/registry/<group>/<resource>/storage`): `scale` (Deployments, ReplicaSets,
//! StatefulSets, RCs), `binding` (pods to nodes) and `eviction` (pod deletion within
//! disruption budgets). `status` and `finalize` are rules of the generic registry.

pub mod binding;
pub mod eviction;
pub mod scale;
