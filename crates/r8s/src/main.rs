//! The `r8s` binary: flag parsing and wiring only.

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
    /// Run the control plane (API server on the embedded store).
    Server(ServerArgs),
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
    #[arg(long = "service-cluster-ip-range", alias = "service-cidr", default_value = "10.96.0.0/12")]
    service_cluster_ip_range: String,
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: String,
    /// Extra SANs for the serving certificate (repeatable).
    #[arg(long = "tls-san")]
    tls_san: Vec<String>,
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
    }
}

async fn server(args: ServerArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let store: Arc<dyn r8s_store::Store> = Arc::new(
        r8s_store::embedded::EmbeddedStore::open(&args.data_dir.join("db")).with_context(|| format!("opening store in {}", args.data_dir.display()))?,
    );
    let _ = args.disable_agent;
    let running = r8s_apiserver::start(
        r8s_apiserver::Config {
            data_dir: args.data_dir.clone(),
            bind_address: args.bind_address,
            https_port: args.https_listen_port,
            service_cidr: args.service_cluster_ip_range,
            cluster_cidr: args.cluster_cidr,
            kubeconfig_path: args.write_kubeconfig,
            tls_sans: args.tls_san,
        },
        store.clone(),
    )
    .await?;
    r8s_apiserver::spawn_compactor(store, args.compaction_interval, 1000);
    tracing::info!(addr = %running.addr, elapsed_ms = started.elapsed().as_millis() as u64, "r8s server ready");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
