//! The r8s API server: the Kubernetes REST API over the [`r8s_store::Store`].
//!
//! Request path: TLS + client-certificate authentication (`server`, `auth`) -> routing from
//! the resource table (`handlers`, `request`, `catalog`) -> the generic registry (`registry`:
//! defaults, validation, admission, optimistic concurrency, graceful deletion) -> the store.
//! LIST and WATCH are served from per-resource watch caches (`cache`, `watch`).

pub mod admission;
pub mod alloc;
pub mod apply;
pub mod authn;
pub mod authz;
pub mod bootstrap;
pub mod cache;
pub mod catalog;
pub mod convert;
pub mod crd;
pub mod crd_status;
pub mod discovery;
pub mod duplicates;
pub mod fieldcheck;
pub mod fields;
pub mod handlers;
pub mod kubelet_proxy;
pub mod mergekeys;
pub mod metrics;
pub mod openapi;
pub mod openapi_v2;
pub mod patch;
pub mod patching;
pub mod pipeline;
pub mod protobuf;
pub mod registry;
pub mod request;
pub mod request_info;
pub mod request_metrics;
pub mod reviews;
pub mod server;
pub mod status;
pub mod subresources;
pub mod table;
pub mod typed;
pub mod watch;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use r8s_store::Store;
use serde_json::json;

/// The Kubernetes version this server speaks.
pub const KUBE_MINOR: &str = "32";
pub const GIT_VERSION: &str = concat!("v1.32.0-r8s.", env!("CARGO_PKG_VERSION"));

#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub bind_address: IpAddr,
    pub https_port: u16,
    pub service_cidr: String,
    pub cluster_cidr: String,
    /// Where the admin kubeconfig goes (default DATA_DIR/admin.kubeconfig).
    pub kubeconfig_path: Option<PathBuf>,
    /// Extra names and addresses for the serving certificate.
    pub tls_sans: Vec<String>,
    /// A garbage collector runs: Orphan/Foreground deletes get the finalizers it removes.
    pub gc_enabled: bool,
}

pub struct RunningServer {
    pub addr: SocketAddr,
    /// The address other hosts reach this server on (the `kubernetes` Service's endpoint).
    pub advertise: IpAddr,
    pub state: Arc<handlers::AppState>,
    pub kubeconfig_path: PathBuf,
}

/// Addresses of this host (for the serving certificate), from the kernel's local routes.
fn local_addresses() -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap()];
    if let Ok(trie) = std::fs::read_to_string("/proc/net/fib_trie") {
        let lines: Vec<&str> = trie.lines().collect();
        for w in lines.windows(2) {
            if w[1].contains("/32 host LOCAL")
                && let Ok(ip) = w[0].trim().trim_start_matches("|-- ").trim().parse::<IpAddr>()
                && !out.contains(&ip)
            {
                out.push(ip);
            }
        }
    }
    out
}

fn version_info() -> serde_json::Value {
    json!({
        "major": "1",
        "minor": KUBE_MINOR,
        "gitVersion": GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.23.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// The API server's state over a store, without a listener: the pipeline (authenticators, the
/// given authorizer), catalog, registry with its admission chain. `start` serves it over TLS;
/// tests drive it in-process.
pub fn build_state(
    store: Arc<dyn Store>,
    service_cidr: ipnet::Ipv4Net,
    gc_enabled: bool,
    server_address: String,
    authz: Box<dyn authz::Authorizer>,
    admission: admission::Chain,
) -> Arc<handlers::AppState> {
    let catalog = catalog::Catalog::new(store.clone());
    let allocators = Arc::new(alloc::Allocators::new(service_cidr, store));
    let mut registry = registry::Registry::new(catalog.clone(), allocators);
    registry.gc_enabled = gc_enabled;
    registry.admission = admission;
    Arc::new(handlers::AppState {
        authn: authn::Chain::default(),
        authz,
        registry: Arc::new(registry),
        catalog,
        server_address,
        version: version_info(),
        openapi: openapi::OpenApi::default(),
        ready: std::sync::atomic::AtomicBool::new(false),
        kubelet_tls: Default::default(),
        requests: Default::default(),
    })
}

/// Opens the store, creates or loads the PKI, writes the admin kubeconfig, binds and starts
/// serving. Returns once the server is ready.
pub async fn start(cfg: Config, store: Arc<dyn Store>) -> anyhow::Result<RunningServer> {
    let service_cidr: ipnet::Ipv4Net = cfg.service_cidr.parse().map_err(|_| anyhow::anyhow!("invalid --service-cluster-ip-range {}", cfg.service_cidr))?;
    let first_ip = alloc::nth(&service_cidr, 1);
    let mut names = r8s_pki::ServingNames {
        dns_names: ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ..Default::default()
    };
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim().to_lowercase();
        if !h.is_empty() {
            names.dns_names.push(h);
        }
    }
    names.ips = local_addresses();
    names.ips.push(IpAddr::V4(first_ip));
    if !cfg.bind_address.is_unspecified() && !names.ips.contains(&cfg.bind_address) {
        names.ips.push(cfg.bind_address);
    }
    for s in &cfg.tls_sans {
        match s.parse::<IpAddr>() {
            Ok(ip) => names.ips.push(ip),
            Err(_) => names.dns_names.push(s.clone()),
        }
    }
    let pki_dir = cfg.data_dir.join("pki");
    let pki = tokio::task::spawn_blocking(move || r8s_pki::ClusterPki::ensure(&pki_dir, &names)).await??;
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(cfg.bind_address, cfg.https_port)).await?;
    let addr = listener.local_addr()?;
    let client_host = if cfg.bind_address.is_unspecified() { "127.0.0.1".to_string() } else { cfg.bind_address.to_string() };
    let server_url = format!("https://{client_host}:{}", addr.port());
    let kubeconfig_path = cfg.kubeconfig_path.clone().unwrap_or_else(|| cfg.data_dir.join("admin.kubeconfig"));
    r8s_pki::kubeconfig::write(
        &kubeconfig_path,
        &r8s_pki::kubeconfig::KubeconfigSpec {
            cluster_name: "kubernetes",
            user_name: "kubernetes-admin",
            server: &server_url,
            ca_pem: &pki.ca.cert_pem,
            client_cert_pem: &pki.admin.cert_pem,
            client_key_pem: &pki.admin.key_pem,
        },
    )?;
    let state =
        build_state(store, service_cidr, cfg.gc_enabled, format!("{client_host}:{}", addr.port()), Box::new(authz::AlwaysAllow), admission::Chain::default());
    let (registry, catalog) = (state.registry.clone(), state.catalog.clone());
    let _ = state.kubelet_tls.set(kubelet_proxy::client_tls(&pki.kubelet_client.cert_pem, &pki.kubelet_client.key_pem)?);
    let tls = server::tls_config(&pki.ca.cert_pem, &pki.apiserver.cert_pem, &pki.apiserver.key_pem)?;
    tokio::spawn(server::serve(listener, tls, state.clone()));
    let advertise = if cfg.bind_address.is_unspecified() {
        local_addresses().into_iter().find(|ip| !ip.is_loopback()).unwrap_or(cfg.bind_address)
    } else {
        cfg.bind_address
    };
    bootstrap::run(&registry, &catalog, addr.port(), advertise).await?;
    state.ready.store(true, Ordering::SeqCst);
    tracing::info!(%addr, kubeconfig = %kubeconfig_path.display(), "API server ready");
    Ok(RunningServer { addr, advertise, state, kubeconfig_path })
}

/// Every `interval`, releases Service address and port reservations no Service holds and that
/// are older than the previous pass (upstream's repair loops run every 3 minutes).
pub fn spawn_allocation_repair(state: Arc<handlers::AppState>, interval: std::time::Duration) {
    tokio::spawn(async move {
        let store = state.catalog.store().clone();
        let svc = state.catalog.find("", "v1", "services").expect("services");
        let mut since = 0;
        loop {
            tokio::time::sleep(interval).await;
            let Ok(now) = store.current_revision().await else { continue };
            if since > 0 {
                let list = async || {
                    let res = state.registry.list(&svc, None, &registry::ListOptions::default()).await;
                    // A failed list skips the pass: an empty one would release everything.
                    res.ok().map(|r| r.items.iter().filter_map(|b| serde_json::from_slice(b).ok()).collect())
                };
                if let Err(e) = state.registry.alloc.repair(since, list).await {
                    tracing::warn!(error = %e, "service allocation repair failed");
                }
            }
            since = now;
        }
    });
}

/// Compacts the store's history every `interval`, keeping at least `keep` revisions.
pub fn spawn_compactor(store: Arc<dyn Store>, interval: std::time::Duration, keep: i64) {
    tokio::spawn(async move {
        let mut last = 0;
        loop {
            tokio::time::sleep(interval).await;
            // Compact to the revision seen one interval ago: watchers get a full interval to
            // resume, as with upstream's compaction.
            let (Ok(current), Ok(compacted)) = (store.current_revision().await, store.compacted_revision().await) else { continue };
            let target = last.min(current - keep);
            if target > compacted
                && let Err(e) = store.compact(target).await
            {
                tracing::warn!(error = %e, "compaction failed");
            }
            last = current;
        }
    });
}
