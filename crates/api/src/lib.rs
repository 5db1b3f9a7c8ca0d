//! The API's facts: the resource table, per-kind strategies (defaults, validation, field
//! selectors), server-side table printers, label/field selectors and name rules. No I/O here.

pub mod errors;
pub mod kinds;
pub mod matching;
pub mod meta;
pub mod printers;
pub mod quantity;
pub mod quota;
pub mod resources;
pub mod selectors;
pub mod strategy;
pub mod validation;
pub mod workload_validation;

pub use resources::{ResourceInfo, ResourceRef, Subresource};
