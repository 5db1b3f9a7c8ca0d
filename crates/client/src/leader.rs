//! Leader election through a coordination.k8s.io Lease (upstream's leaderelection): one
//! holder at a time; others take over once the holder stops renewing for the lease duration.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

#[derive(Clone, Debug)]
pub struct Config {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Config {
    /// Upstream's defaults: 15 s lease, 10 s renew deadline, 2 s retry. The identity is
    /// `identity` (e.g. the host name: a restarted server takes its lease back at once).
    pub fn new(name: &str, identity: &str) -> Config {
        Config {
            namespace: "kube-system".into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// This host's name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "localhost".into())
}

/// A unique identity for a process that is one of several candidates on a host.
pub fn unique_identity() -> String {
    format!("{}_{}", hostname(), uuid::Uuid::new_v4())
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// Tries once to take or keep the lease; true when we hold it afterwards.
async fn try_acquire(api: &Api<Lease>, cfg: &Config) -> Result<bool, kube::Error> {
    let secs = cfg.lease_duration.as_secs() as i32;
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta { name: Some(cfg.name.clone()), namespace: Some(cfg.namespace.clone()), ..Default::default() },
            spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                lease_duration_seconds: Some(secs),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(e) if crate::is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let ours = spec.holder_identity.as_deref() == Some(cfg.identity.as_str());
    let expired = spec.renew_time.as_ref().is_none_or(|t| Timestamp::now().duration_since(t.0).as_secs() >= spec.lease_duration_seconds.unwrap_or(secs) as i64);
    if !ours && !expired && spec.holder_identity.as_deref().is_some_and(|h| !h.is_empty()) {
        return Ok(false);
    }
    if !ours {
        spec.holder_identity = Some(cfg.identity.clone());
        spec.acquire_time = Some(now());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(now());
    spec.lease_duration_seconds = Some(secs);
    // The resourceVersion we read makes this a compare-and-swap: two candidates cannot both win.
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(e) if crate::is_conflict(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Waits until this process holds the lease, then keeps renewing it in the background.
/// `on_lost` runs if renewals fail for longer than the renew deadline (upstream exits).
pub async fn run(client: Client, cfg: Config, on_lost: impl FnOnce() + Send + 'static) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    loop {
        match try_acquire(&api, &cfg).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(lease = %cfg.name, error = %e, "leader election attempt failed")
            }
        }
        tokio::time::sleep(cfg.retry_period).await;
    }
    tracing::info!(lease = %cfg.name, identity = %cfg.identity, "became leader");
    let recorder = crate::events::Recorder::new(client, &cfg.name);
    if let Ok(lease) = api.get(&cfg.name).await {
        recorder.normal(&lease, "LeaderElection", format!("{} became leader", cfg.identity));
    }
    tokio::spawn(async move {
        let mut last_ok = std::time::Instant::now();
        loop {
            tokio::time::sleep(cfg.retry_period).await;
            match try_acquire(&api, &cfg).await {
                Ok(true) => last_ok = std::time::Instant::now(),
                Ok(false) => {
                    tracing::error!(lease = %cfg.name, "leadership lost to another holder");
                    on_lost();
                    return;
                }
                Err(e) => {
                    if last_ok.elapsed() > cfg.renew_deadline {
                        tracing::error!(lease = %cfg.name, error = %e, "failed to renew leadership");
                        on_lost();
                        return;
                    }
                }
            }
        }
    });
}
