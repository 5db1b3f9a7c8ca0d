//! Pod spec -> CRI configs: the sandbox (metadata, hostname, DNS, port mappings, cgroup parent,
//! namespaces) and each container (command, env with the downward API and references, mounts,
//! resources as cgroup limits, security context).

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, Pod, Secret};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::config::Config;
use crate::cri::pb;

pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";
pub const ANN_RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
pub const ANN_TERMINATION_PATH: &str = "io.kubernetes.container.terminationMessagePath";

pub fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

/// Guaranteed, Burstable or BestEffort (upstream's rules; the API's own implementation).
pub fn qos_class(pod: &Pod) -> &'static str {
    let spec = pod.spec.as_ref().and_then(|s| serde_json::to_value(s).ok());
    r8s_api::kinds::podspec::qos_class(spec.as_ref())
}

/// A quantity as a float of base units ("100m" -> 0.1, "64Mi" -> 67108864).
pub fn parse_quantity(q: &Quantity) -> f64 {
    r8s_api::quantity::parse(&q.0).unwrap_or(0.0)
}

/// cgroupfs path of the pod's cgroup, upstream's QoS layout.
pub fn pod_cgroup(cfg: &Config, pod: &Pod) -> String {
    let base = cfg.kubepods_cgroup();
    match qos_class(pod) {
        "Guaranteed" => format!("{base}/pod{}", uid(pod)),
        "Burstable" => format!("{base}/burstable/pod{}", uid(pod)),
        _ => format!("{base}/besteffort/pod{}", uid(pod)),
    }
}

pub fn log_directory(cfg: &Config, pod: &Pod) -> std::path::PathBuf {
    cfg.pod_logs_dir().join(format!(
        "{}_{}_{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default(),
        uid(pod)
    ))
}

fn host_network(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false)
}

/// The pod's namespaces, the same for its sandbox and each container.
fn namespace_options(pod: &Pod) -> pb::NamespaceOption {
    let spec = pod.spec.clone().unwrap_or_default();
    let node_or_pod = |b: bool| if b { pb::NamespaceMode::Node as i32 } else { pb::NamespaceMode::Pod as i32 };
    pb::NamespaceOption {
        network: node_or_pod(spec.host_network == Some(true)),
        pid: if spec.host_pid == Some(true) {
            pb::NamespaceMode::Node as i32
        } else if spec.share_process_namespace == Some(true) {
            pb::NamespaceMode::Pod as i32
        } else {
            pb::NamespaceMode::Container as i32
        },
        ipc: node_or_pod(spec.host_ipc == Some(true)),
        target_id: String::new(),
    }
}

pub fn sandbox_config(cfg: &Config, pod: &Pod, attempt: u32) -> pb::PodSandboxConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut labels: HashMap<String, String> = pod.metadata.labels.clone().unwrap_or_default().into_iter().collect();
    labels.insert(LABEL_POD_NAME.into(), name.clone());
    labels.insert(LABEL_POD_NAMESPACE.into(), ns.clone());
    labels.insert(LABEL_POD_UID.into(), uid(pod));
    let annotations: HashMap<String, String> = pod.metadata.annotations.clone().unwrap_or_default().into_iter().collect();
    let hostname = if host_network(pod) { crate::sysinfo::hostname() } else { spec.hostname.clone().unwrap_or_else(|| name.chars().take(63).collect()) };
    let ports = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.is_some_and(|h| h > 0))
        .map(|p| pb::PortMapping {
            protocol: match p.protocol.as_deref() {
                Some("UDP") => pb::Protocol::Udp as i32,
                Some("SCTP") => pb::Protocol::Sctp as i32,
                _ => pb::Protocol::Tcp as i32,
            },
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or(0),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect();
    let psc = spec.security_context.clone().unwrap_or_default();
    pb::PodSandboxConfig {
        metadata: Some(pb::PodSandboxMetadata { name, uid: uid(pod), namespace: ns, attempt }),
        hostname,
        log_directory: log_directory(cfg, pod).display().to_string(),
        dns_config: dns_config(cfg, pod),
        port_mappings: ports,
        labels,
        annotations,
        linux: Some(pb::LinuxPodSandboxConfig {
            cgroup_parent: pod_cgroup(cfg, pod),
            security_context: Some(pb::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(pod)),
                run_as_user: psc.run_as_user.map(|value| pb::Int64Value { value }),
                run_as_group: psc.run_as_group.map(|value| pb::Int64Value { value }),
                supplemental_groups: psc.supplemental_groups.clone().unwrap_or_default(),
                privileged: spec.containers.iter().any(|c| c.security_context.as_ref().and_then(|s| s.privileged) == Some(true)),
                readonly_rootfs: false,
            }),
            sysctls: psc.sysctls.iter().flatten().map(|s| (s.name.clone(), s.value.clone())).collect(),
        }),
    }
}

/// resolv.conf of the pod: the node's for Default and host-network ClusterFirst pods, the
/// cluster DNS (when one is configured) for ClusterFirst, plus dnsConfig.
fn dns_config(cfg: &Config, pod: &Pod) -> Option<pb::DnsConfig> {
    let spec = pod.spec.as_ref()?;
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut servers: Vec<String> = Vec::new();
    let mut searches: Vec<String> = Vec::new();
    let mut options: Vec<String> = Vec::new();
    let use_cluster = !cfg.cluster_dns.is_empty() && (policy == "ClusterFirst" && !host_network(pod) || policy == "ClusterFirstWithHostNet");
    if policy != "None" {
        if use_cluster {
            servers = cfg.cluster_dns.clone();
            let d = &cfg.cluster_domain;
            searches = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
            options = vec!["ndots:5".into()];
        } else {
            for l in host.lines() {
                let mut parts = l.split_whitespace();
                match parts.next() {
                    Some("nameserver") => servers.extend(parts.next().map(str::to_string)),
                    Some("search") => searches.extend(parts.map(str::to_string)),
                    Some("options") => options.extend(parts.map(str::to_string)),
                    _ => {}
                }
            }
        }
    }
    if let Some(dc) = &spec.dns_config {
        servers.extend(dc.nameservers.iter().flatten().cloned());
        searches.extend(dc.searches.iter().flatten().cloned());
        for o in dc.options.iter().flatten() {
            let name = o.name.clone().unwrap_or_default();
            options.retain(|x| x.split(':').next() != Some(name.as_str()));
            options.push(match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name,
            });
        }
    }
    Some(pb::DnsConfig { servers, searches, options })
}

/// Everything a container's env may refer to, read once per container start.
pub struct EnvSources<'a> {
    pub pod: &'a Pod,
    pub pod_ip: String,
    pub host_ip: String,
    pub config_maps: &'a (dyn Fn(&str) -> Option<ConfigMap> + Sync),
    pub secrets: &'a (dyn Fn(&str) -> Option<Secret> + Sync),
}

/// The container's environment in upstream's order (envFrom, then env, `$(VAR)` expanded
/// against what came before). A missing required reference is an error naming it.
pub fn container_env(c: &Container, src: &EnvSources) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let set = |out: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(e) = out.iter_mut().find(|(n, _)| *n == k) {
            e.1 = v;
        } else {
            out.push((k, v));
        }
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match (src.config_maps)(&r.name) {
                Some(cm) => {
                    for (k, v) in cm.data.unwrap_or_default() {
                        set(&mut out, format!("{prefix}{k}"), v);
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("configmap \"{}\" not found", r.name)),
            }
        }
        if let Some(r) = &from.secret_ref {
            match (src.secrets)(&r.name) {
                Some(s) => {
                    for (k, v) in s.data.unwrap_or_default() {
                        set(&mut out, format!("{prefix}{k}"), String::from_utf8_lossy(&v.0).into_owned());
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("secret \"{}\" not found", r.name)),
            }
        }
    }
    for e in c.env.iter().flatten() {
        if let Some(v) = env_value(e, c, src, &out)? {
            set(&mut out, e.name.clone(), v);
        }
    }
    Ok(out)
}

fn env_value(e: &EnvVar, c: &Container, src: &EnvSources, so_far: &[(String, String)]) -> Result<Option<String>, String> {
    if let Some(v) = &e.value {
        return Ok(Some(expand(v, so_far)));
    }
    let Some(from) = &e.value_from else { return Ok(Some(String::new())) };
    if let Some(f) = &from.field_ref {
        return Ok(Some(field_value(src, &f.field_path)?));
    }
    if let Some(r) = &from.resource_field_ref {
        let target = match &r.container_name {
            Some(n) if !n.is_empty() => src.pod.spec.as_ref().and_then(|s| s.containers.iter().find(|x| &x.name == n)).unwrap_or(c),
            _ => c,
        };
        return Ok(Some(resource_value(target, &r.resource, r.divisor.as_ref())));
    }
    if let Some(r) = &from.config_map_key_ref {
        return match (src.config_maps)(&r.name).and_then(|cm| cm.data.unwrap_or_default().get(&r.key).cloned()) {
            Some(v) => Ok(Some(v)),
            None if r.optional == Some(true) => Ok(None),
            None => Err(format!("couldn't find key {} in ConfigMap {}/{}", r.key, src.pod.metadata.namespace.as_deref().unwrap_or_default(), r.name)),
        };
    }
    if let Some(r) = &from.secret_key_ref {
        return match (src.secrets)(&r.name).and_then(|s| s.data.unwrap_or_default().get(&r.key).cloned()) {
            Some(v) => Ok(Some(String::from_utf8_lossy(&v.0).into_owned())),
            None if r.optional == Some(true) => Ok(None),
            None => Err(format!("couldn't find key {} in Secret {}/{}", r.key, src.pod.metadata.namespace.as_deref().unwrap_or_default(), r.name)),
        };
    }
    Ok(Some(String::new()))
}

/// The downward API's field paths.
pub fn field_value(src: &EnvSources, path: &str) -> Result<String, String> {
    let m = &src.pod.metadata;
    let spec = src.pod.spec.clone().unwrap_or_default();
    let map_get = |m: &Option<BTreeMap<String, String>>, k: &str| m.as_ref().and_then(|m| m.get(k).cloned()).unwrap_or_default();
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(m.labels.as_ref()),
        "metadata.annotations" => format_map(m.annotations.as_ref()),
        "spec.nodeName" => spec.node_name.unwrap_or_default(),
        "spec.serviceAccountName" => spec.service_account_name.unwrap_or_default(),
        "status.podIP" | "status.podIPs" => src.pod_ip.clone(),
        "status.hostIP" | "status.hostIPs" => src.host_ip.clone(),
        p if p.starts_with("metadata.labels['") => map_get(&m.labels, p.trim_start_matches("metadata.labels['").trim_end_matches("']")),
        p if p.starts_with("metadata.annotations['") => map_get(&m.annotations, p.trim_start_matches("metadata.annotations['").trim_end_matches("']")),
        other => return Err(format!("unsupported fieldPath {other}")),
    })
}

/// `k="v"` lines, sorted, as the downward API volume writes labels and annotations.
pub fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.map(|m| m.iter().map(|(k, v)| format!("{k}={v:?}")).collect::<Vec<_>>().join("\n")).unwrap_or_default()
}

/// limits.cpu etc. in units of the divisor (cpu rounds up to whole divisors, as upstream does);
/// an unset limit is the node's allocatable.
pub fn resource_value(c: &Container, resource: &str, divisor: Option<&Quantity>) -> String {
    let r = c.resources.clone().unwrap_or_default();
    let (kind, name) = resource.split_once('.').unwrap_or(("limits", resource));
    let map = if kind == "requests" { r.requests } else { r.limits };
    let node_default = || match name {
        "cpu" => crate::sysinfo::cpu_count() as f64,
        "memory" => crate::sysinfo::memory_bytes() as f64,
        _ => 0.0,
    };
    let v = map.as_ref().and_then(|m| m.get(name)).map(parse_quantity).unwrap_or_else(|| if kind == "limits" { node_default() } else { 0.0 });
    let d = divisor.map(parse_quantity).filter(|d| *d > 0.0).unwrap_or(1.0);
    format!("{}", (v / d).ceil() as i64)
}

/// `$(VAR)` expansion as upstream's expansion package: `$$` escapes, unknown names stay.
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'('
                && let Some(end) = s[i + 2..].find(')')
            {
                let name = &s[i + 2..i + 2 + end];
                match env.iter().rev().find(|(k, _)| k == name) {
                    Some((_, v)) => out.push_str(v),
                    None => out.push_str(&s[i..i + 3 + end]),
                }
                i += 3 + end;
                continue;
            }
        }
        let ch = s[i..].chars().next().unwrap();
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// CPU and memory as cgroup limits (upstream's conversions).
pub fn linux_resources(c: &Container, qos: &str) -> pb::LinuxContainerResources {
    let r = c.resources.clone().unwrap_or_default();
    let get = |m: &Option<BTreeMap<String, Quantity>>, k: &str| m.as_ref().and_then(|m| m.get(k)).map(parse_quantity);
    let cpu_req = get(&r.requests, "cpu").or(get(&r.limits, "cpu"));
    let shares = cpu_req.map(|c| ((c * 1000.0) as i64 * 1024 / 1000).max(2)).unwrap_or(2);
    let (period, quota) = match get(&r.limits, "cpu") {
        Some(l) => (100_000, ((l * 1000.0) as i64 * 100_000 / 1000).max(1000)),
        None => (0, 0),
    };
    let mem = get(&r.limits, "memory").map(|m| m as i64).unwrap_or(0);
    let oom = match qos {
        "Guaranteed" => -997,
        "BestEffort" => 1000,
        _ => {
            let req = get(&r.requests, "memory").unwrap_or(0.0);
            let total = crate::sysinfo::memory_bytes().max(1) as f64;
            (1000 - (1000.0 * req / total) as i64).clamp(3, 999)
        }
    };
    pb::LinuxContainerResources {
        cpu_period: period,
        cpu_quota: quota,
        cpu_shares: shares,
        memory_limit_in_bytes: mem,
        oom_score_adj: oom,
        ..Default::default()
    }
}

pub fn security_context(pod: &Pod, c: &Container) -> pb::LinuxContainerSecurityContext {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.clone()).unwrap_or_default();
    let sc = c.security_context.clone().unwrap_or_default();
    let caps = sc.capabilities.clone().unwrap_or_default();
    pb::LinuxContainerSecurityContext {
        capabilities: Some(pb::Capability {
            add_capabilities: caps.add.unwrap_or_default().into_iter().map(|c| format!("CAP_{}", c.trim_start_matches("CAP_"))).collect(),
            drop_capabilities: caps.drop.unwrap_or_default().into_iter().map(|c| format!("CAP_{}", c.trim_start_matches("CAP_"))).collect(),
        }),
        privileged: sc.privileged == Some(true),
        namespace_options: Some(namespace_options(pod)),
        run_as_user: sc.run_as_user.or(psc.run_as_user).map(|value| pb::Int64Value { value }),
        run_as_group: sc.run_as_group.or(psc.run_as_group).map(|value| pb::Int64Value { value }),
        run_as_username: String::new(),
        readonly_rootfs: sc.read_only_root_filesystem == Some(true),
        supplemental_groups: psc.supplemental_groups.clone().unwrap_or_default().into_iter().chain(psc.fs_group).collect(),
        no_new_privs: sc.allow_privilege_escalation == Some(false),
        masked_paths: Vec::new(),
        readonly_paths: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_upstream() {
        let env = vec![("A".to_string(), "x".to_string())];
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &env), "x-$(B)-$(A)-$");
    }

    #[test]
    fn cpu_limits_become_shares_and_quota() {
        let c: Container = serde_json::from_value(serde_json::json!({"name": "c", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}})).unwrap();
        let r = linux_resources(&c, "Guaranteed");
        assert_eq!((r.cpu_shares, r.cpu_quota, r.cpu_period, r.memory_limit_in_bytes, r.oom_score_adj), (512, 50_000, 100_000, 64 << 20, -997));
    }

    #[test]
    fn qos_classes() {
        let pod =
            |res: serde_json::Value| -> Pod { serde_json::from_value(serde_json::json!({"spec": {"containers": [{"name": "c", "resources": res}]}})).unwrap() };
        assert_eq!(qos_class(&pod(serde_json::json!({}))), "BestEffort");
        assert_eq!(qos_class(&pod(serde_json::json!({"limits": {"cpu": "1", "memory": "1Gi"}}))), "Guaranteed");
        assert_eq!(qos_class(&pod(serde_json::json!({"requests": {"cpu": "1"}}))), "Burstable");
    }
}
