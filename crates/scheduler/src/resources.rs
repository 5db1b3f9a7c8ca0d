//! Resource arithmetic: quantities, a pod's effective requests, a node's allocatable.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Parses a Kubernetes quantity ("100m", "64Mi", "1.5Gi", "2", "1e3") into a number.
pub use r8s_api::quantity::parse as parse_quantity;

fn q(v: Option<&Quantity>) -> Option<f64> {
    v.and_then(|q| parse_quantity(&q.0))
}

/// Amounts the scheduler accounts for: cpu in millicores, memory and storage in bytes,
/// extended resources in their unit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    fn from_map(m: Option<&BTreeMap<String, Quantity>>) -> Resources {
        let mut r = Resources::default();
        for (k, v) in m.into_iter().flatten() {
            let Some(x) = parse_quantity(&v.0) else {
                continue;
            };
            match k.as_str() {
                "cpu" => r.milli_cpu = (x * 1000.0).ceil() as i64,
                "memory" => r.memory = x.ceil() as i64,
                "ephemeral-storage" => r.ephemeral_storage = x.ceil() as i64,
                "pods" => {}
                _ if k.contains('/') || k.starts_with("hugepages-") => {
                    r.scalar.insert(k.clone(), x.ceil() as i64);
                }
                _ => {}
            }
        }
        r
    }

    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_insert(0) += v;
        }
    }

    pub fn sub(&mut self, o: &Resources) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_insert(0) -= v;
        }
    }

    fn max(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
    }
}

/// Upstream's defaults for scoring containers without requests (so they still spread).
pub const DEFAULT_MILLI_CPU: i64 = 100;
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// What a pod asks for: max(sum of containers, each init container) + overhead
/// (upstream's computePodResourceRequest), and the same with non-zero defaults for scoring.
pub fn pod_requests(pod: &Pod) -> (Resources, Resources) {
    let Some(spec) = pod.spec.as_ref() else {
        return Default::default();
    };
    let mut sum = Resources::default();
    let mut nonzero = Resources::default();
    for c in &spec.containers {
        let r = Resources::from_map(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
        let mut nz = r.clone();
        let req = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        if req.and_then(|m| m.get("cpu")).is_none() {
            nz.milli_cpu = DEFAULT_MILLI_CPU;
        }
        if req.and_then(|m| m.get("memory")).is_none() {
            nz.memory = DEFAULT_MEMORY;
        }
        sum.add(&r);
        nonzero.add(&nz);
    }
    let mut sidecars = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = Resources::from_map(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
        if c.restart_policy.as_deref() == Some("Always") {
            // Sidecars run alongside the app containers.
            sidecars.add(&r);
            sum.add(&r);
            nonzero.add(&r);
        } else {
            let mut with_sidecars = r.clone();
            with_sidecars.add(&sidecars);
            sum.max(&with_sidecars);
            nonzero.max(&with_sidecars);
        }
    }
    if let Some(o) = spec.overhead.as_ref() {
        let o = Resources::from_map(Some(o));
        sum.add(&o);
        nonzero.add(&o);
    }
    (sum, nonzero)
}

/// A node's allocatable resources and pod count limit.
pub fn node_allocatable(node: &Node) -> (Resources, i64) {
    let a = node.status.as_ref().and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()));
    let pods = q(a.and_then(|m| m.get("pods"))).unwrap_or(110.0) as i64;
    (Resources::from_map(a), pods)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("100m"), Some(0.1));
        assert_eq!(parse_quantity("64Mi"), Some(64.0 * 1048576.0));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("1.5Gi"), Some(1.5 * 1073741824.0));
        assert_eq!(parse_quantity("abc"), None);
    }

    #[test]
    fn init_containers_take_the_max() {
        let pod: Pod = serde_json::from_value(serde_json::json!({"spec": {
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2"}}}],
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
                           {"name": "b", "resources": {"requests": {"cpu": "500m"}}}]}}))
        .unwrap();
        let (r, nz) = pod_requests(&pod);
        assert_eq!(r.milli_cpu, 2000);
        assert_eq!(r.memory, 1 << 30);
        assert_eq!(nz.memory, (1 << 30) + DEFAULT_MEMORY);
    }
}
