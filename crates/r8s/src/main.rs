//! The `r8s` binary: flag parsing and wiring only.

mod local;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "r8s", version, about = "Kubernetes in one small binary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane (API server on the embedded store, scheduler, controllers).
    Server(ServerArgs),
    /// Register simulated nodes and play their kubelet (capacity planning, controller tests).
    SimNodes(SimNodesArgs),
    /// Run the scheduler against a cluster.
    Scheduler(RemoteArgs),
    /// Run the controller-manager against a cluster.
    ControllerManager(ControllerManagerArgs),
    /// Run a node agent (kubelet over CRI to containerd) that joins a cluster.
    Agent(AgentArgs),
    /// Run the kubelet alone (the agent without its service proxy).
    Kubelet(AgentArgs),
    /// Run the service proxy (kube-proxy) against a cluster.
    Proxy(ProxyArgs),
    /// Run the cluster DNS server (CoreDNS's job) against a cluster.
    Dns(DnsArgs),
}

#[derive(Args)]
struct DnsArgs {
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Where to answer queries (UDP and TCP).
    #[arg(long, default_value = "0.0.0.0:53")]
    bind_address: std::net::SocketAddr,
    /// Prometheus metrics (/metrics) and /health.
    #[arg(long, default_value = "0.0.0.0:9153")]
    metrics_bind_address: std::net::SocketAddr,
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Resolvers for other names (repeatable ADDR or ADDR:PORT; default: /etc/resolv.conf's).
    #[arg(long)]
    upstream: Vec<String>,
}

#[derive(Args)]
struct ProxyArgs {
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// The node whose endpoints count as local (default: the hostname).
    #[arg(long, alias = "hostname-override")]
    node_name: Option<String>,
    #[arg(long, default_value = "nftables")]
    proxy_mode: String,
    /// The pod network; traffic to cluster IPs from outside it is masqueraded.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: String,
    #[arg(long, default_value = "127.0.0.1:10249")]
    metrics_bind_address: std::net::SocketAddr,
    #[arg(long, default_value = "0.0.0.0:10256")]
    healthz_bind_address: std::net::SocketAddr,
}

/// Flags of the node agent, shared by `server`, `agent` and `kubelet`.
#[derive(Args, Clone)]
struct NodeFlags {
    /// The node's address (default: the default route's interface address).
    #[arg(long)]
    node_ip: Option<IpAddr>,
    /// The node's name (default: the hostname).
    #[arg(long)]
    node_name: Option<String>,
    /// Use this CRI runtime (unix:///path) instead of starting containerd.
    #[arg(long)]
    container_runtime_endpoint: Option<String>,
    /// Image archives imported at start (default DATA_DIR/agent/images).
    #[arg(long)]
    airgap_images_dir: Option<PathBuf>,
    /// Static pod manifests (default DATA_DIR/manifests).
    #[arg(long)]
    pod_manifest_path: Option<PathBuf>,
    /// Parent cgroup of the pods' kubepods hierarchy.
    #[arg(long, default_value = "/")]
    cgroup_root: String,
    /// Where the CNI plugins are.
    #[arg(long, default_value = "/usr/lib/cni")]
    cni_bin_dir: PathBuf,
    /// Where the node's CNI configuration lives (default: DATA_DIR/agent/cni). With
    /// `--flannel-backend none`, the CNI you install (flannel, calico) writes its conflist here.
    #[arg(long)]
    cni_conf_dir: Option<PathBuf>,
    /// Node labels at registration (repeatable, key=value).
    #[arg(long = "node-label")]
    node_label: Vec<String>,
    /// Node taints at registration (repeatable, key=value:Effect).
    #[arg(long = "node-taint")]
    node_taint: Vec<String>,
    /// DNS servers pods with dnsPolicy ClusterFirst use: the kube-dns Service's address.
    #[arg(long = "cluster-dns", default_value = "10.96.0.10")]
    cluster_dns: Vec<String>,
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Kubelet HTTPS port.
    #[arg(long, default_value_t = 10250)]
    kubelet_port: u16,
    /// A registry reached over plain HTTP (HOST:PORT, repeatable); written as a containerd
    /// hosts.toml under DATA_DIR/agent/registries.d, where other registry configs may go too.
    #[arg(long = "insecure-registry")]
    insecure_registry: Vec<String>,
    /// The service proxy's backend: nftables (default) or iptables.
    #[arg(long, default_value = "nftables")]
    proxy_mode: String,
    /// Do not run the service proxy with the agent (k3s's flag).
    #[arg(long)]
    disable_kube_proxy: bool,
    /// Do not run the built-in ingress controller with the agent (k3s: --disable traefik).
    #[arg(long)]
    disable_ingress: bool,
    /// Port the ingress controller serves HTTP on, at the node's address.
    #[arg(long, default_value_t = 80)]
    ingress_http_port: u16,
    /// Port the ingress controller serves HTTPS on (certificates from the Ingresses' TLS
    /// Secrets); 0 to serve no HTTPS.
    #[arg(long, default_value_t = 443)]
    ingress_https_port: u16,
    /// The pod network across nodes: host-gw (routes via each node's address; the nodes share
    /// an L2 segment), vxlan (encapsulated between the nodes' addresses), or none to leave it
    /// to another CNI (k3s's flag).
    #[arg(long, default_value = "host-gw", value_parser = ["host-gw", "vxlan", "none"])]
    flannel_backend: String,
}

impl NodeFlags {
    fn ingress_config(&self, node_ip: std::net::IpAddr) -> r8s_ingress::Config {
        let https = (self.ingress_https_port != 0).then(|| std::net::SocketAddr::new(node_ip, self.ingress_https_port));
        r8s_ingress::Config { http: std::net::SocketAddr::new(node_ip, self.ingress_http_port), https }
    }

    fn proxy_config(&self, node_name: &str, cluster_cidr: &str) -> anyhow::Result<r8s_proxy::run::Config> {
        let mut cfg = r8s_proxy::run::Config::new(node_name);
        cfg.mode = self.proxy_mode.parse().map_err(|e: String| anyhow::anyhow!(e))?;
        cfg.cluster_cidr = Some(cluster_cidr.to_string());
        Ok(cfg)
    }
}

#[derive(Args)]
struct AgentArgs {
    /// The API server (overrides the kubeconfig's server).
    #[arg(long)]
    server: Option<String>,
    /// Kubeconfig with the cluster's address and credentials (a kubeconfig the server wrote).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Where the agent keeps its state (DATA_DIR/agent).
    #[arg(long, default_value = "/var/lib/r8s")]
    data_dir: PathBuf,
    /// The cluster's pod network (the server's --cluster-cidr).
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: String,
    /// The cluster's service addresses (the server's --service-cidr).
    #[arg(long, alias = "service-cluster-ip-range", default_value = "10.96.0.0/12")]
    service_cidr: String,
    #[command(flatten)]
    node: NodeFlags,
}

impl NodeFlags {
    fn config(&self, data_dir: &std::path::Path, extra_labels: &[(&str, &str)], client_ca_der: Vec<Vec<u8>>) -> anyhow::Result<r8s_kubelet::Config> {
        let node_ip = match self.node_ip {
            Some(ip) => ip,
            None => r8s_kubelet::sysinfo::default_node_ip().ok_or_else(|| anyhow::anyhow!("cannot find this host's address: pass --node-ip"))?,
        };
        let mut labels: Vec<(String, String)> = extra_labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        for l in &self.node_label {
            let (k, v) = l.split_once('=').ok_or_else(|| anyhow::anyhow!("invalid --node-label {l:?}: want key=value"))?;
            labels.push((k.into(), v.into()));
        }
        let taints = r8s_simnodes::parse_taints(&self.node_taint.join(","))?
            .into_iter()
            .map(|(key, value, effect)| k8s_openapi::api::core::v1::Taint { key, value: (!value.is_empty()).then_some(value), effect, time_added: None })
            .collect();
        let agent_dir = data_dir.join("agent");
        Ok(r8s_kubelet::Config {
            node_name: self.node_name.clone().unwrap_or_else(r8s_kubelet::sysinfo::hostname),
            node_ip,
            airgap_images_dir: self.airgap_images_dir.clone().unwrap_or_else(|| agent_dir.join("images")),
            pod_manifest_path: self.pod_manifest_path.clone().unwrap_or_else(|| data_dir.join("manifests")),
            data_dir: agent_dir,
            runtime_endpoint: self.container_runtime_endpoint.clone(),
            cgroup_root: self.cgroup_root.clone(),
            cni_bin_dir: self.cni_bin_dir.clone(),
            cni_conf_dir_override: self.cni_conf_dir.clone(),
            write_cni_config: self.flannel_backend != "none",
            node_labels: labels,
            node_taints: taints,
            lease_renew_interval: Duration::from_secs(10),
            cluster_dns: self.cluster_dns.clone(),
            cluster_domain: self.cluster_domain.clone(),
            kubelet_port: self.kubelet_port,
            client_ca_der,
            insecure_registries: self.insecure_registry.clone(),
            pod_workers: 16,
            resync_interval: Duration::from_secs(10),
            simulated: false,
        })
    }
}

#[derive(Args)]
struct RemoteArgs {
    /// Kubeconfig with the cluster's address and credentials.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
}

#[derive(Args)]
struct ControllerManagerArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    #[command(flatten)]
    controllers: ControllerFlags,
}

/// Settings of the controllers (kube-controller-manager's flag names).
#[derive(Args, Clone)]
struct ControllerFlags {
    /// Pod IP range; each node gets a /24 of it.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: String,
    /// How long a node may go without a heartbeat before it is marked NotReady (Unknown).
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    node_monitor_grace_period: Duration,
    /// How often node health is checked.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    node_monitor_period: Duration,
    /// How long a cron minute lasts for CronJobs (a test knob; 60s is real time).
    #[arg(long, default_value = "60s", value_parser = parse_duration, hide = true)]
    cronjob_minute: Duration,
    /// Finished pods kept before the oldest are garbage collected.
    #[arg(long, default_value_t = 12500)]
    terminated_pod_gc_threshold: usize,
    /// How often HorizontalPodAutoscalers are evaluated.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    horizontal_pod_autoscaler_sync_period: Duration,
}

impl ControllerFlags {
    fn options(&self) -> r8s_controllers::Options {
        r8s_controllers::Options {
            cluster_cidr: self.cluster_cidr.clone(),
            node_lifecycle: r8s_controllers::nodelifecycle::Options { grace_period: self.node_monitor_grace_period, monitor_period: self.node_monitor_period },
            cron_minute: self.cronjob_minute,
            terminated_pod_gc_threshold: self.terminated_pod_gc_threshold,
            hpa_sync_period: self.horizontal_pod_autoscaler_sync_period,
        }
    }
}

#[derive(Args)]
struct SimNodesArgs {
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// How many nodes.
    #[arg(long, default_value_t = 1)]
    count: usize,
    #[arg(long, default_value = "sim-")]
    name_prefix: String,
    /// Number of the first node (name_prefix + number).
    #[arg(long, default_value_t = 0)]
    first_index: usize,
    #[arg(long, default_value = "32")]
    cpu: String,
    #[arg(long, default_value = "256Gi")]
    memory: String,
    #[arg(long, default_value = "110")]
    pods: String,
    /// Node labels: k=v,k2=v2
    #[arg(long, default_value = "")]
    labels: String,
    /// Node taints: k=v:Effect,...
    #[arg(long, default_value = "")]
    taints: String,
    /// Lease duration; leases are renewed every quarter of it.
    #[arg(long, default_value_t = 40)]
    lease_duration_seconds: i32,
    /// Where the simulated kubelets keep pod directories (default: under the temporary
    /// directory, emptied at start).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Args)]
struct ServerArgs {
    /// Where state, certificates and kubeconfigs live.
    #[arg(long, default_value = "/var/lib/r8s")]
    data_dir: PathBuf,
    /// HTTPS port of the API server.
    #[arg(long, alias = "secure-port", default_value_t = 6443)]
    https_listen_port: u16,
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// Write the admin kubeconfig here (default DATA_DIR/admin.kubeconfig).
    #[arg(long)]
    write_kubeconfig: Option<PathBuf>,
    /// Do not run a node agent on this host.
    #[arg(long)]
    disable_agent: bool,
    /// Do not serve cluster DNS (k3s: --disable coredns).
    #[arg(long)]
    disable_cluster_dns: bool,
    /// Port the cluster DNS server listens on, at the server's address (0: any free port; the
    /// kube-dns Service's endpoints follow it).
    #[arg(long, default_value_t = 53)]
    cluster_dns_port: u16,
    /// Port of the cluster DNS server's Prometheus metrics (CoreDNS's 9153; 0: any free port).
    #[arg(long, default_value_t = 9153)]
    cluster_dns_metrics_port: u16,
    /// Resolvers for names outside the cluster (repeatable ADDR or ADDR:PORT; default: the
    /// nameservers of /etc/resolv.conf).
    #[arg(long = "cluster-dns-upstream")]
    cluster_dns_upstream: Vec<String>,
    #[command(flatten)]
    node: NodeFlags,
    #[arg(long = "service-cluster-ip-range", alias = "service-cidr", default_value = "10.96.0.0/12")]
    service_cluster_ip_range: String,
    #[command(flatten)]
    controllers: ControllerFlags,
    /// Toleration seconds admission gives pods for the not-ready taint.
    #[arg(long, default_value_t = 300)]
    default_not_ready_toleration_seconds: i64,
    /// Toleration seconds admission gives pods for the unreachable taint.
    #[arg(long, default_value_t = 300)]
    default_unreachable_toleration_seconds: i64,
    /// Extra SANs for the serving certificate (repeatable).
    #[arg(long = "tls-san")]
    tls_san: Vec<String>,
    /// Do not run the scheduler in this process.
    #[arg(long)]
    disable_scheduler: bool,
    /// Do not run the controllers in this process.
    #[arg(long)]
    disable_controller_manager: bool,
    /// How often store history is compacted.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    compaction_interval: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s}"))?;
    Ok(match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("invalid duration unit in {s}")),
    })
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Server(args) => rt.block_on(server(args)),
        Command::SimNodes(args) => rt.block_on(sim_nodes(args)),
        Command::Scheduler(args) => rt.block_on(async move {
            let client = r8s_client::client_from_kubeconfig(&args.kubeconfig).await?;
            leader_elect(client.clone(), "kube-scheduler", &r8s_client::leader::unique_identity()).await;
            r8s_scheduler::run(r8s_client::informer::Informers::new(client)).await
        }),
        Command::ControllerManager(args) => rt.block_on(async move {
            let client = r8s_client::client_from_kubeconfig(&args.remote.kubeconfig).await?;
            leader_elect(client.clone(), "kube-controller-manager", &r8s_client::leader::unique_identity()).await;
            r8s_controllers::start(r8s_client::informer::Informers::new(client), args.controllers.options()).await?;
            tokio::signal::ctrl_c().await?;
            Ok(())
        }),
        Command::Agent(args) => rt.block_on(agent(args, true)),
        Command::Kubelet(args) => rt.block_on(agent(args, false)),
        Command::Proxy(args) => rt.block_on(proxy(args)),
        Command::Dns(args) => rt.block_on(dns(args)),
    }
}

/// Starts the cluster DNS server at the server's address and points the `kube-dns` Service
/// (cluster IP `dns_ip`) at it with a hand-kept EndpointSlice.
async fn cluster_dns(client: kube::Client, args: &ServerArgs, advertise: IpAddr, dns_ip: &str) -> anyhow::Result<()> {
    let upstreams = parse_upstreams(&args.cluster_dns_upstream).map_err(|e| anyhow::anyhow!("--cluster-dns-upstream: {e}"))?;
    let cfg = r8s_dns::Config { bind: std::net::SocketAddr::new(advertise, args.cluster_dns_port), domain: args.node.cluster_domain.clone(), upstreams };
    let addr = r8s_dns::serve(client.clone(), cfg).await?;
    let metrics = r8s_dns::metrics::serve(std::net::SocketAddr::new(advertise, args.cluster_dns_metrics_port)).await?;
    tracing::info!(%addr, %metrics, "cluster DNS serving");
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "kube-dns", "namespace": "kube-system",
                     "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"}},
        "spec": {"clusterIP": dns_ip, "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": addr.port()},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": addr.port()},
            {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": metrics.port()}]},
    }))?;
    let services: kube::Api<k8s_openapi::api::core::v1::Service> = kube::Api::namespaced(client.clone(), "kube-system");
    match services.create(&Default::default(), &svc).await {
        Ok(_) => {}
        Err(e) if r8s_client::is_conflict(&e) => {}
        Err(e) => return Err(anyhow::anyhow!("creating the kube-dns Service: {e}")),
    }
    let slice: k8s_openapi::api::discovery::v1::EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "kube-dns-r8s", "namespace": "kube-system",
                     "labels": {"kubernetes.io/service-name": "kube-dns", "endpointslice.kubernetes.io/managed-by": "r8s-server"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [advertise.to_string()], "conditions": {"ready": true, "serving": true, "terminating": false}}],
        "ports": [{"name": "dns", "port": addr.port(), "protocol": "UDP"}, {"name": "dns-tcp", "port": addr.port(), "protocol": "TCP"},
                  {"name": "metrics", "port": metrics.port(), "protocol": "TCP"}],
    }))?;
    let slices: kube::Api<k8s_openapi::api::discovery::v1::EndpointSlice> = kube::Api::namespaced(client, "kube-system");
    let pp = kube::api::PatchParams::apply("r8s-server").force();
    slices.patch("kube-dns-r8s", &pp, &kube::api::Patch::Apply(&slice)).await.map_err(|e| anyhow::anyhow!("writing the kube-dns endpoints: {e}"))?;
    Ok(())
}

fn parse_upstreams(list: &[String]) -> anyhow::Result<Vec<std::net::SocketAddr>> {
    if list.is_empty() {
        return Ok(r8s_dns::upstreams_from_resolv_conf(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()));
    }
    list.iter()
        .map(|u| u.parse::<std::net::SocketAddr>().or_else(|_| u.parse::<IpAddr>().map(|ip| std::net::SocketAddr::new(ip, 53))))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("upstream resolver: {e}"))
}

async fn dns(args: DnsArgs) -> anyhow::Result<()> {
    let client = r8s_client::client_from_kubeconfig(&args.kubeconfig).await?;
    let cfg = r8s_dns::Config { bind: args.bind_address, domain: args.cluster_domain.clone(), upstreams: parse_upstreams(&args.upstream)? };
    let addr = r8s_dns::serve(client, cfg).await?;
    let metrics = r8s_dns::metrics::serve(args.metrics_bind_address).await?;
    tracing::info!(%addr, %metrics, "cluster DNS serving");
    tokio::signal::ctrl_c().await?;
    Ok(())
}

async fn proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let client = r8s_client::client_from_kubeconfig(&args.kubeconfig).await?;
    let mut cfg = r8s_proxy::run::Config::new(&args.node_name.unwrap_or_else(r8s_kubelet::sysinfo::hostname));
    cfg.mode = args.proxy_mode.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    cfg.cluster_cidr = Some(args.cluster_cidr);
    cfg.metrics_addr = args.metrics_bind_address;
    cfg.healthz_addr = args.healthz_bind_address;
    tokio::select! {
        r = r8s_proxy::run::run(client, cfg) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

async fn agent(args: AgentArgs, with_proxy: bool) -> anyhow::Result<()> {
    let kc = kube::config::Kubeconfig::read_from(&args.kubeconfig)?;
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    if let Some(server) = &args.server {
        cfg.cluster_url = server.parse().with_context(|| format!("--server {server}"))?;
    }
    let ca = cfg.root_cert.clone().unwrap_or_default();
    let client = kube::Client::try_from(cfg)?;
    let node = args.node.config(&args.data_dir, &[], ca)?;
    if with_proxy && args.node.flannel_backend != "none" {
        let cfg = r8s_net::Config {
            node_name: node.node_name.clone(),
            backend: args.node.flannel_backend.parse().map_err(|e: String| anyhow::anyhow!(e))?,
            cluster_cidr: args.cluster_cidr.parse().with_context(|| format!("--cluster-cidr {}", args.cluster_cidr))?,
            service_cidr: args.service_cidr.parse().with_context(|| format!("--service-cidr {}", args.service_cidr))?,
        };
        let client = client.clone();
        tokio::spawn(async move {
            if let Err(e) = r8s_net::run(client, cfg).await {
                tracing::error!(error = format!("{e:#}"), "pod network stopped");
            }
        });
    }
    if with_proxy && !args.node.disable_ingress {
        let cfg = args.node.ingress_config(node.node_ip);
        let client = client.clone();
        tokio::spawn(async move {
            if let Err(e) = r8s_ingress::run(client, cfg).await {
                tracing::error!(error = format!("{e:#}"), "ingress controller stopped");
            }
        });
    }
    if with_proxy && !args.node.disable_kube_proxy {
        let cfg = args.node.proxy_config(&node.node_name, &args.cluster_cidr)?;
        let client = client.clone();
        tokio::spawn(async move {
            if let Err(e) = r8s_proxy::run::run(client, cfg).await {
                tracing::error!(error = format!("{e:#}"), "service proxy stopped");
            }
        });
    }
    tokio::select! {
        r = r8s_kubelet::run(client, node) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

async fn server(args: ServerArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let store: Arc<dyn r8s_store::Store> =
        Arc::new(r8s_store::embedded::EmbeddedStore::open(&args.data_dir.join("db")).with_context(|| format!("opening store in {}", args.data_dir.display()))?);
    r8s_api::strategy::set_default_toleration_seconds(args.default_not_ready_toleration_seconds, args.default_unreachable_toleration_seconds);
    let running = r8s_apiserver::start(
        r8s_apiserver::Config {
            data_dir: args.data_dir.clone(),
            bind_address: args.bind_address,
            https_port: args.https_listen_port,
            service_cidr: args.service_cluster_ip_range.clone(),
            cluster_cidr: args.controllers.cluster_cidr.clone(),
            kubeconfig_path: args.write_kubeconfig.clone(),
            tls_sans: args.tls_san.clone(),
            gc_enabled: !args.disable_controller_manager,
        },
        store.clone(),
    )
    .await?;
    r8s_apiserver::spawn_compactor(store, args.compaction_interval, 1000);
    r8s_apiserver::spawn_allocation_repair(running.state.clone(), std::time::Duration::from_secs(180));
    // In-process components reach the API through the same handler as remote clients.
    if !args.disable_scheduler {
        let client = local::client(running.state.clone(), "kube-scheduler");
        tokio::spawn(async move {
            leader_elect(client.clone(), "kube-scheduler", &r8s_client::leader::hostname()).await;
            if let Err(e) = r8s_scheduler::run(r8s_client::informer::Informers::new(client)).await {
                tracing::error!(error = %e, "scheduler stopped");
            }
        });
    }
    if !args.disable_controller_manager {
        let client = local::client(running.state.clone(), "kube-controller-manager");
        let opts = args.controllers.options();
        tokio::spawn(async move {
            leader_elect(client.clone(), "kube-controller-manager", &r8s_client::leader::hostname()).await;
            if let Err(e) = r8s_controllers::start(r8s_client::informer::Informers::new(client), opts).await {
                tracing::error!(error = %e, "controllers stopped");
            }
        });
    }
    {
        // The built-in ingress class, the default one (agents serve it unless --disable-ingress).
        let client = local::client(running.state.clone(), "system:kube-controller-manager");
        let class: k8s_openapi::api::networking::v1::IngressClass = serde_json::from_value(serde_json::json!({
            "metadata": {"name": r8s_ingress::CLASS, "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
            "spec": {"controller": r8s_ingress::CONTROLLER},
        }))?;
        match kube::Api::<k8s_openapi::api::networking::v1::IngressClass>::all(client).create(&Default::default(), &class).await {
            Ok(_) => {}
            Err(e) if r8s_client::is_conflict(&e) => {}
            Err(e) => tracing::warn!(error = %e, "creating the r8s IngressClass"),
        }
    }
    if !args.disable_cluster_dns {
        let client = local::client(running.state.clone(), "system:serviceaccount:kube-system:coredns");
        let dns_ip = args.node.cluster_dns.first().cloned().unwrap_or_else(|| "10.96.0.10".into());
        if let Err(e) = cluster_dns(client, &args, running.advertise, &dns_ip).await {
            tracing::warn!(error = format!("{e:#}"), "cluster DNS not started");
        }
    }
    if !args.disable_agent {
        // The server's own node (k3s's labels for it); it reaches the API in-process.
        let ca_pem = std::fs::read(args.data_dir.join("pki/ca.crt"))?;
        let ca: Vec<Vec<u8>> = rustls_pemfile::certs(&mut ca_pem.as_slice()).map(|c| c.map(|c| c.to_vec())).collect::<Result<_, _>>()?;
        let node = args.node.config(&args.data_dir, &[("node-role.kubernetes.io/control-plane", "true"), ("node-role.kubernetes.io/master", "true")], ca)?;
        let client = local::client(running.state.clone(), &format!("system:node:{}", node.node_name));
        if args.node.flannel_backend != "none" {
            let cfg = r8s_net::Config {
                node_name: node.node_name.clone(),
                backend: args.node.flannel_backend.parse().map_err(|e: String| anyhow::anyhow!(e))?,
                cluster_cidr: args.controllers.cluster_cidr.parse().with_context(|| format!("--cluster-cidr {}", args.controllers.cluster_cidr))?,
                service_cidr: args.service_cluster_ip_range.parse().with_context(|| format!("--service-cidr {}", args.service_cluster_ip_range))?,
            };
            let client = local::client(running.state.clone(), &format!("system:node:{}", node.node_name));
            tokio::spawn(async move {
                if let Err(e) = r8s_net::run(client, cfg).await {
                    tracing::error!(error = format!("{e:#}"), "pod network stopped");
                }
            });
        }
        if !args.node.disable_ingress {
            let cfg = args.node.ingress_config(node.node_ip);
            let client = local::client(running.state.clone(), "system:serviceaccount:kube-system:r8s-ingress");
            tokio::spawn(async move {
                if let Err(e) = r8s_ingress::run(client, cfg).await {
                    tracing::error!(error = format!("{e:#}"), "ingress controller stopped");
                }
            });
        }
        if !args.node.disable_kube_proxy {
            let cfg = args.node.proxy_config(&node.node_name, &args.controllers.cluster_cidr)?;
            let client = local::client(running.state.clone(), "system:kube-proxy");
            tokio::spawn(async move {
                if let Err(e) = r8s_proxy::run::run(client, cfg).await {
                    tracing::error!(error = format!("{e:#}"), "service proxy stopped");
                }
            });
        }
        tokio::spawn(async move {
            if let Err(e) = r8s_kubelet::run(client, node).await {
                tracing::error!(error = format!("{e:#}"), "node agent stopped");
            }
        });
    }
    tracing::info!(addr = %running.addr, elapsed_ms = started.elapsed().as_millis() as u64, "r8s server ready");
    tokio::signal::ctrl_c().await?;
    Ok(())
}

async fn sim_nodes(args: SimNodesArgs) -> anyhow::Result<()> {
    let client = r8s_client::client_from_kubeconfig(&args.kubeconfig).await?;
    let cfg = r8s_simnodes::SimConfig {
        count: args.count,
        name_prefix: args.name_prefix,
        first_index: args.first_index,
        cpu: args.cpu,
        memory: args.memory,
        pods: args.pods,
        labels: r8s_simnodes::parse_labels(&args.labels)?,
        taints: r8s_simnodes::parse_taints(&args.taints)?,
        lease_duration_seconds: args.lease_duration_seconds,
        data_dir: args.data_dir,
    };
    tokio::select! {
        r = r8s_simnodes::run(client, cfg) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// Waits for leadership of the component's Lease in kube-system; losing it later ends the
/// process, as upstream components do, so a supervisor restarts it as a candidate.
async fn leader_elect(client: kube::Client, component: &str, identity: &str) {
    let cfg = r8s_client::leader::Config::new(component, identity);
    r8s_client::leader::run(client, cfg, || std::process::exit(1)).await;
}
