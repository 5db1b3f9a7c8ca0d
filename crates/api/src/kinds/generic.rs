//! Kinds with no behaviour of their own (Binding, ComponentStatus), and custom resources
//! (whose schema work is the API server's: pruning, defaulting and validation from the CRD).

use super::Kind;

/// The trait's defaults.
pub struct Generic;

impl Kind for Generic {}

/// Custom resources: generation tracked, create-on-update allowed, as upstream's
/// customresource strategy does; columns come from the CRD.
pub struct Custom;

impl Kind for Custom {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn allow_create_on_update(&self) -> bool {
        true
    }
}
