//! Where a kubelet learns of its pods. A real node watches only its own
//! (`fieldSelector=spec.nodeName=NAME`); thousands of simulated nodes in one process share a
//! single watch of all pods, split by node here, instead of opening a watch each.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;
use r8s_client::informer::{Handler, Informer, Informers, ObjKey, key_of};

#[derive(Clone)]
pub enum PodSource {
    /// This node's own field-selected watch.
    Own(Arc<Informer<Pod>>),
    /// One node's share of a watch of all pods.
    Shared(Arc<SharedPods>, String),
}

impl PodSource {
    pub fn own(informers: &Informers, node: &str) -> PodSource {
        PodSource::Own(informers.get_selected::<Pod>(&format!("spec.nodeName={node}")))
    }

    pub fn list(&self) -> Vec<Arc<Pod>> {
        match self {
            PodSource::Own(i) => i.list(),
            PodSource::Shared(s, node) => {
                let keys: Vec<ObjKey> = s.by_node.lock().unwrap().get(node).map(|k| k.iter().cloned().collect()).unwrap_or_default();
                keys.iter().filter_map(|(ns, n)| s.informer.get(ns, n)).collect()
            }
        }
    }

    pub fn get(&self, ns: &str, name: &str) -> Option<Arc<Pod>> {
        match self {
            PodSource::Own(i) => i.get(ns, name),
            PodSource::Shared(s, node) => s.informer.get(ns, name).filter(|p| node_of(p) == Some(node.as_str())),
        }
    }

    /// Called for every change of one of this node's pods (old, new).
    pub fn on_change(&self, f: impl Fn(Option<&Arc<Pod>>, Option<&Arc<Pod>>) + Send + Sync + 'static) {
        match self {
            PodSource::Own(i) => i.on_change(f),
            PodSource::Shared(s, node) => {
                s.handlers.lock().unwrap().insert(node.clone(), Arc::new(f));
            }
        }
    }

    pub async fn synced(&self) {
        match self {
            PodSource::Own(i) => i.synced().await,
            PodSource::Shared(s, _) => s.informer.synced().await,
        }
    }
}

fn node_of(p: &Pod) -> Option<&str> {
    p.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty())
}

/// A watch of all pods, indexed by node, dispatching each change to that node's handler.
pub struct SharedPods {
    informer: Arc<Informer<Pod>>,
    by_node: Mutex<HashMap<String, HashSet<ObjKey>>>,
    handlers: Mutex<HashMap<String, Handler<Pod>>>,
}

impl SharedPods {
    pub fn new(informers: &Informers) -> Arc<SharedPods> {
        let informer = informers.get::<Pod>();
        let shared = Arc::new(SharedPods { informer: informer.clone(), by_node: Default::default(), handlers: Default::default() });
        let weak = Arc::downgrade(&shared);
        informer.on_change(move |old, new| {
            let Some(s) = weak.upgrade() else { return };
            let (was, is) = (old.and_then(|p| node_of(p)), new.and_then(|p| node_of(p)));
            let key = key_of(new.or(old).unwrap().as_ref());
            {
                let mut idx = s.by_node.lock().unwrap();
                if let Some(n) = was.filter(|w| Some(*w) != is) {
                    idx.entry(n.to_string()).or_default().remove(&key);
                }
                if let Some(n) = is {
                    idx.entry(n.to_string()).or_default().insert(key.clone());
                }
                if new.is_none()
                    && let Some(n) = was
                {
                    idx.entry(n.to_string()).or_default().remove(&key);
                }
            }
            let handlers: Vec<Handler<Pod>> = {
                let h = s.handlers.lock().unwrap();
                [was, is].into_iter().flatten().collect::<HashSet<_>>().into_iter().filter_map(|n| h.get(n).cloned()).collect()
            };
            for h in handlers {
                h(old, new);
            }
        });
        // Whatever the watch loaded before the handler was in place.
        for p in informer.list() {
            if let Some(n) = node_of(&p) {
                shared.by_node.lock().unwrap().entry(n.to_string()).or_default().insert(key_of(p.as_ref()));
            }
        }
        shared
    }

    pub fn for_node(self: &Arc<Self>, node: &str) -> PodSource {
        PodSource::Shared(self.clone(), node.to_string())
    }
}
