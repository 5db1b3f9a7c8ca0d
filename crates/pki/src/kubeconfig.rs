//! kubeconfig files with embedded credentials (what kubeadm writes as admin.conf).

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use crate::{PkiError, Result};

/// Everything a client needs to reach the API server as one user.
pub struct KubeconfigSpec<'a> {
    pub cluster_name: &'a str,
    pub user_name: &'a str,
    pub server: &'a str,
    pub ca_pem: &'a str,
    pub client_cert_pem: &'a str,
    pub client_key_pem: &'a str,
}

pub fn render(spec: &KubeconfigSpec<'_>) -> Result<String> {
    let context = format!("{}@{}", spec.user_name, spec.cluster_name);
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": spec.cluster_name,
            "cluster": {
                "server": spec.server,
                "certificate-authority-data": STANDARD.encode(spec.ca_pem),
            }
        }],
        "contexts": [{
            "name": context,
            "context": {"cluster": spec.cluster_name, "user": spec.user_name}
        }],
        "current-context": context,
        "preferences": {},
        "users": [{
            "name": spec.user_name,
            "user": {
                "client-certificate-data": STANDARD.encode(spec.client_cert_pem),
                "client-key-data": STANDARD.encode(spec.client_key_pem),
            }
        }]
    });
    serde_yaml::to_string(&doc).map_err(|e| PkiError::Kubeconfig(e.to_string()))
}

/// Writes the kubeconfig with owner-only permissions.
pub fn write(path: &Path, spec: &KubeconfigSpec<'_>) -> Result<()> {
    crate::write(path, &render(spec)?, true)
}
