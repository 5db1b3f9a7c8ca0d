//! The node agent (kubelet): registers its Node, keeps its Lease, and runs the pods bound to it
//! through a container runtime spoken to over CRI (containerd by default, which the agent starts
//! and supervises itself). Its truth is the runtime: after a restart it rebuilds its view from
//! CRI (ListPodSandbox/ListContainers) and the API, never from memory.

pub mod cni;
pub mod config;
pub mod containerd;
pub mod containerd_api;
pub mod cri;
pub mod grpc;
pub mod images;
pub mod node;
pub mod pods;
pub mod portforward;
pub mod provisioner;
pub mod server;
pub mod spdy;
pub mod static_pods;
pub mod stats;
pub mod streaming;
pub mod sysinfo;

pub use config::Config;

/// Runs the agent until the process ends.
pub async fn run(client: kube::Client, cfg: Config) -> anyhow::Result<()> {
    let cfg = std::sync::Arc::new(cfg);
    std::fs::create_dir_all(&cfg.data_dir)?;
    let endpoint = match &cfg.runtime_endpoint {
        Some(e) => e.clone(),
        None => containerd::Supervisor::start(&cfg).await?.socket(),
    };
    let runtime = cri::Runtime::connect(&endpoint).await?;
    let version = runtime.version().await?;
    tracing::info!(runtime = %version.runtime_name, version = %version.runtime_version, "container runtime connected");
    images::import_builtin_and_airgap(&cfg, &endpoint).await?;
    let node = node::register(&client, &cfg, &version).await?;
    if cfg.write_cni_config {
        cni::write_conflist(&cfg, &node)?;
    }
    node::spawn_heartbeat(client.clone(), cfg.clone(), runtime.clone());
    {
        let (client, cfg) = (client.clone(), cfg.clone());
        tokio::spawn(async move {
            if let Err(e) = provisioner::run(client, cfg).await {
                tracing::warn!(error = %e, "local-path provisioner stopped");
            }
        });
    }
    let client_for_static = client.clone();
    let kubelet = pods::Kubelet::new(client, cfg.clone(), runtime);
    server::spawn(cfg.clone(), kubelet.clone()).await?;
    tokio::spawn(static_pods::run(client_for_static, cfg, kubelet.clone()));
    kubelet.run(node).await
}
