//! Starts and supervises the agent's own containerd (as k3s does): a generated config with the CRI
//! plugin on, r8s's pause image as the sandbox image, the distribution's CNI plugins and the
//! agent's conflist directory, and root, state and socket under the agent's data dir, so several
//! agents on one machine never share one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Config;
use crate::images::PAUSE_IMAGE;

pub struct Supervisor {
    socket: PathBuf,
}

impl Supervisor {
    /// Writes the config, starts containerd and restarts it whenever it exits. containerd gets
    /// SIGKILL when the agent dies (PR_SET_PDEATHSIG); the containers survive in their shims and
    /// the next containerd picks them up.
    pub async fn start(cfg: &Config) -> anyhow::Result<Supervisor> {
        let bin = which("containerd").ok_or_else(|| {
            anyhow::anyhow!(
                "containerd not found on PATH: install the distribution's package (apt-get install containerd runc), or pass --container-runtime-endpoint"
            )
        })?;
        let dir = cfg.containerd_dir();
        std::fs::create_dir_all(&dir)?;
        std::fs::create_dir_all(cfg.cni_conf_dir())?;
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        std::fs::write(&config, render_config(cfg, &socket))?;
        write_registry_hosts(cfg)?;
        let log_path = dir.join("containerd.log");
        let sock = socket.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(500);
            loop {
                let _ = std::fs::remove_file(&sock);
                let log = match std::fs::OpenOptions::new().create(true).append(true).open(&log_path) {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot open containerd log");
                        return;
                    }
                };
                let mut cmd = tokio::process::Command::new(&bin);
                cmd.arg("--config").arg(&config).stdout(log.try_clone().expect("dup log")).stderr(log).stdin(std::process::Stdio::null());
                // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death signal.
                unsafe {
                    cmd.pre_exec(|| {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                        Ok(())
                    });
                }
                match cmd.spawn() {
                    Ok(mut child) => {
                        let started = std::time::Instant::now();
                        let status = child.wait().await;
                        tracing::warn!(?status, "containerd exited; restarting");
                        if started.elapsed() > Duration::from_secs(30) {
                            backoff = Duration::from_millis(500);
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "starting containerd"),
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        });
        Ok(Supervisor { socket })
    }

    pub fn socket(&self) -> String {
        format!("unix://{}", self.socket.display())
    }
}

fn which(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(bin)).find(|p| p.is_file())
}

fn render_config(cfg: &Config, socket: &Path) -> String {
    let dir = cfg.containerd_dir();
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    format!(
        r#"# Written by r8s at every agent start.
version = 2
root = {root}
state = {state}

[grpc]
  address = {socket}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  enable_unprivileged_ports = false
  restrict_oom_score_adj = {restrict_oom}
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = {cni_bin}
    conf_dir = {cni_conf}
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = {registries}

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}
"#,
        root = q(&dir.join("root")),
        state = q(&dir.join("state")),
        socket = q(socket),
        pause = PAUSE_IMAGE,
        cni_bin = q(&cfg.cni_bin_dir),
        cni_conf = q(&cfg.cni_conf_dir()),
        registries = q(&cfg.registries_dir()),
        opt = q(&dir.join("opt")),
        restrict_oom = !has_cap_sys_resource(),
    )
}

/// Without CAP_SYS_RESOURCE (some sandboxed machines drop it) no process may lower its
/// oom_score_adj, and runc would fail every sandbox (CRI asks for -998): containerd must then
/// keep scores no lower than its own.
fn has_cap_sys_resource() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

/// A hosts.toml per insecure registry: containerd pulls from it over plain HTTP.
fn write_registry_hosts(cfg: &Config) -> anyhow::Result<()> {
    for r in &cfg.insecure_registries {
        let dir = cfg.registries_dir().join(r);
        std::fs::create_dir_all(&dir)?;
        let text = format!(
            "# Written by r8s (--insecure-registry {r}).\nserver = \"http://{r}\"\n\n[host.\"http://{r}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        );
        std::fs::write(dir.join("hosts.toml"), text)?;
    }
    Ok(())
}
