//! The agent's settings (kubelet flag names where upstream has them).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Config {
    pub node_name: String,
    pub node_ip: IpAddr,
    /// The agent's own directory (DATA_DIR/agent): containerd root/state/socket, CNI config, pod
    /// directories, logs.
    pub data_dir: PathBuf,
    /// `unix:///path` of an existing CRI runtime; None starts and supervises containerd.
    pub runtime_endpoint: Option<String>,
    /// Image archives (*.tar, OCI layout or `docker save`) imported at start.
    pub airgap_images_dir: PathBuf,
    /// Static pod manifests.
    pub pod_manifest_path: PathBuf,
    /// Parent of the pods' cgroup hierarchy ("/" gives /kubepods/...).
    pub cgroup_root: String,
    /// Where the distribution's CNI plugins live.
    pub cni_bin_dir: PathBuf,
    /// Where containerd reads CNI configuration (None: DATA_DIR/cni).
    pub cni_conf_dir_override: Option<PathBuf>,
    /// Write the bridge network's conflist for the node's podCIDR (false when another CNI,
    /// flannel or calico, provides the pod network: `--flannel-backend none`).
    pub write_cni_config: bool,
    /// Labels added to the Node at registration (node-role labels for a server's node).
    pub node_labels: Vec<(String, String)>,
    pub node_taints: Vec<k8s_openapi::api::core::v1::Taint>,
    /// Lease renewal interval (upstream: 10 s).
    pub lease_renew_interval: Duration,
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    /// Port of the kubelet's HTTPS server.
    pub kubelet_port: u16,
    /// CA certificates (DER) whose client certificates the kubelet server accepts (the
    /// cluster CA, which signs the apiserver-kubelet-client certificate).
    pub client_ca_der: Vec<Vec<u8>>,
    /// Registries pulled from over plain HTTP (HOST:PORT).
    pub insecure_registries: Vec<String>,
    /// Pods synced at once (upstream runs a worker per pod; 16 is plenty for one node).
    pub pod_workers: usize,
    /// Full resync of the node's pods (upstream's syncFrequency), which also refreshes
    /// ConfigMap/Secret volumes.
    pub resync_interval: Duration,
    /// A simulated node (sim-nodes, on an in-memory runtime): httpGet/tcpSocket probes pass
    /// without a packet being sent (the pod addresses exist nowhere), and volumes that would
    /// touch the host (hostPath, persistent volumes, tmpfs) are plain directories in the pod's
    /// directory.
    pub simulated: bool,
}

impl Config {
    pub fn containerd_dir(&self) -> PathBuf {
        self.data_dir.join("containerd")
    }
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.cni_conf_dir_override.clone().unwrap_or_else(|| self.data_dir.join("cni"))
    }
    pub fn pods_dir(&self) -> PathBuf {
        self.data_dir.join("pods")
    }
    pub fn pod_logs_dir(&self) -> PathBuf {
        self.data_dir.join("pod-logs")
    }
    /// containerd's registry host configuration directory (hosts.toml per registry).
    pub fn registries_dir(&self) -> PathBuf {
        self.data_dir.join("registries.d")
    }
    /// The kubepods cgroup (cgroupfs syntax) under the configured root.
    pub fn kubepods_cgroup(&self) -> String {
        format!("{}/kubepods", self.cgroup_root.trim_end_matches('/'))
    }
}
