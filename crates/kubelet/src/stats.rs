//! Resource statistics from the cgroup hierarchy (cgroup v1, cgroupfs layout): CPU usage
//! rates and memory working sets for the node, each pod and each container, served as the
//! kubelet's `/stats/summary` (upstream's Summary API shape, the fields metrics use).
//! A sampler reads cpuacct every 5 s; rates are the change between the last two samples.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::config::Config;
use crate::cri::pb;
use crate::pods::{Kubelet, runtime_state, spec};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// One cpuacct reading: when, and the cumulative nanoseconds.
type Reading = (Instant, u64);

/// Last two cpuacct samples per cgroup path.
#[derive(Default)]
pub struct Sampler {
    samples: Mutex<HashMap<String, (Reading, Option<Reading>)>>,
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn cpu_usage(cgroup: &str) -> Option<u64> {
    read_u64(&PathBuf::from(CGROUP_ROOT).join("cpuacct").join(cgroup.trim_start_matches('/')).join("cpuacct.usage"))
}

/// Working set as upstream computes it: usage minus inactive file pages.
fn memory_working_set(cgroup: &str) -> Option<u64> {
    let dir = PathBuf::from(CGROUP_ROOT).join("memory").join(cgroup.trim_start_matches('/'));
    let usage = read_u64(&dir.join("memory.usage_in_bytes"))?;
    let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
    let inactive = stat.lines().find_map(|l| l.strip_prefix("total_inactive_file ")).and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0);
    Some(usage.saturating_sub(inactive))
}

impl Sampler {
    fn sample(&self, cgroup: &str) {
        let Some(v) = cpu_usage(cgroup) else { return };
        let now = Instant::now();
        let mut m = self.samples.lock().unwrap();
        let entry = m.entry(cgroup.to_string()).or_insert(((now, v), None));
        if entry.0.0 != now {
            *entry = ((now, v), Some(entry.0));
        }
    }

    /// Nanocores used between the last two samples (0 until there are two).
    fn rate(&self, cgroup: &str) -> u64 {
        let m = self.samples.lock().unwrap();
        match m.get(cgroup) {
            Some(((t1, v1), Some((t0, v0)))) if t1 > t0 => {
                let dt = t1.duration_since(*t0).as_nanos() as f64;
                ((v1.saturating_sub(*v0)) as f64 / dt * 1e9) as u64
            }
            _ => 0,
        }
    }

    fn forget_missing(&self, live: &std::collections::HashSet<String>) {
        self.samples.lock().unwrap().retain(|k, _| live.contains(k));
    }
}

/// The cgroups of the node's pods and containers: (pod cgroup, [(container name, id)]).
async fn cgroups(cfg: &Config, k: &Kubelet) -> Vec<(Arc<k8s_openapi::api::core::v1::Pod>, String, Vec<(String, String)>)> {
    let mut out = Vec::new();
    for p in k.pods_on_node() {
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let Ok(rs) = runtime_state::read(k.runtime(), &uid).await else { continue };
        if rs.ready_sandbox().is_none() {
            continue;
        }
        let pod_cg = spec::pod_cgroup(cfg, &p);
        let containers = rs
            .containers
            .iter()
            .filter_map(|(name, v)| {
                v.first().filter(|c| c.state == pb::ContainerState::ContainerRunning as i32).map(|c| (name.clone(), format!("{pod_cg}/{}", c.id)))
            })
            .collect();
        out.push((p, pod_cg, containers));
    }
    out
}

/// Samples every 5 s until the process ends.
pub fn spawn_sampler(cfg: Arc<Config>, k: Arc<Kubelet>, sampler: Arc<Sampler>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            let mut live = std::collections::HashSet::new();
            sampler.sample("/");
            live.insert("/".to_string());
            for (_, pod_cg, containers) in cgroups(&cfg, &k).await {
                sampler.sample(&pod_cg);
                live.insert(pod_cg);
                for (_, cg) in containers {
                    sampler.sample(&cg);
                    live.insert(cg);
                }
            }
            sampler.forget_missing(&live);
        }
    });
}

fn usage(sampler: &Sampler, cgroup: &str, now: &str) -> (Value, Value) {
    let total = cpu_usage(cgroup).unwrap_or(0);
    let ws = memory_working_set(cgroup).unwrap_or(0);
    (json!({"time": now, "usageNanoCores": sampler.rate(cgroup), "usageCoreNanoSeconds": total}), json!({"time": now, "workingSetBytes": ws, "usageBytes": ws}))
}

pub async fn summary(cfg: &Config, k: &Kubelet, sampler: &Sampler) -> Value {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (cpu, _) = usage(sampler, "/", &now);
    let total = crate::sysinfo::memory_bytes();
    let avail = crate::sysinfo::meminfo("MemAvailable:").unwrap_or(total);
    let node_mem = json!({"time": now, "workingSetBytes": total.saturating_sub(avail), "availableBytes": avail, "usageBytes": total.saturating_sub(avail)});
    let mut pods = Vec::new();
    for (p, pod_cg, containers) in cgroups(cfg, k).await {
        let (pcpu, pmem) = usage(sampler, &pod_cg, &now);
        let cs: Vec<Value> = containers
            .iter()
            .map(|(name, cg)| {
                let (c, m) = usage(sampler, cg, &now);
                json!({"name": name, "cpu": c, "memory": m})
            })
            .collect();
        pods.push(json!({
            "podRef": {"name": p.metadata.name, "namespace": p.metadata.namespace, "uid": p.metadata.uid},
            "cpu": pcpu, "memory": pmem, "containers": cs,
        }));
    }
    json!({"node": {"nodeName": cfg.node_name, "cpu": cpu, "memory": node_mem}, "pods": pods})
}
