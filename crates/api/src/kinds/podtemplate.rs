//! PodTemplates: the template's pod spec defaults.

use serde_json::Value;

use super::Kind;
use crate::kinds::podspec::default_template;

pub struct PodTemplate;

impl Kind for PodTemplate {
    fn default(&self, obj: &mut Value) {
        default_template(obj)
    }
}
