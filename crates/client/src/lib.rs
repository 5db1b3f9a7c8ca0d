//! Client-side machinery shared by the scheduler, the controllers and the simulated nodes.
//! Everything here talks to the API server through a [`kube::Client`] only: in-process
//! components get a client whose transport calls the API server's handler directly, remote
//! ones a client from a kubeconfig; the code cannot tell the difference.
//!
//! - [`informer`]: one watch per resource type shared by every consumer in the process, with
//!   an in-memory store and change handlers (upstream's shared informers).
//! - [`queue`]: a deduplicating work queue with per-key exponential backoff and delayed adds.
//! - [`events`]: a recorder that writes core/v1 Events and aggregates repeats into `count`.

pub mod events;
pub mod informer;
pub mod leader;
pub mod queue;

use std::time::Duration;

/// Builds a client from a kubeconfig file (remote components).
pub async fn client_from_kubeconfig(path: &std::path::Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(path)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(cfg)?)
}

/// Runs `n` workers that take keys from `queue` and reconcile them. `Ok(Some(d))` asks for
/// another pass after `d`; an error retries the key with backoff.
pub fn run_workers<T, F, Fut>(name: &'static str, queue: queue::WorkQueue<T>, n: usize, reconcile: F)
where
    T: std::hash::Hash + Eq + Clone + Send + Sync + std::fmt::Debug + 'static,
    F: Fn(T) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = anyhow::Result<Option<Duration>>> + Send + 'static,
{
    for _ in 0..n {
        let queue = queue.clone();
        let reconcile = reconcile.clone();
        tokio::spawn(async move {
            loop {
                let key = queue.get().await;
                match reconcile(key.clone()).await {
                    Ok(None) => queue.forget(&key),
                    Ok(Some(after)) => {
                        queue.forget(&key);
                        queue.add_after(key.clone(), after);
                    }
                    Err(e) => {
                        tracing::debug!(controller = name, ?key, error = %e, "reconcile failed; retrying");
                        queue.add_rate_limited(key.clone());
                    }
                }
                queue.done(&key);
            }
        });
    }
}

/// The current time as the API's `Time` (serialized with second precision).
pub fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())
}

/// Is this error the API's 404?
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Is this error the API's 409 (conflict or already exists)?
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}
