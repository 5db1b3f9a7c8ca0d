//! The controller-manager: one reconcile loop per resource over shared informers and
//! rate-limited work queues, talking to the API server only through the API. Every
//! controller follows the same shape: handlers map informer changes to keys, workers take
//! keys from the queue and reconcile the object to its desired state.

pub mod cron;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod expectations;
pub mod gc;
pub mod history;
pub mod hpa;
pub mod job;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod podgc;
pub mod replicaset;
pub mod resourcequota;
pub mod serviceaccount;
pub mod servicelb;
pub mod statefulset;
pub mod util;
pub mod volumebinding;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, ReplicationController, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use r8s_client::informer::Informers;

#[derive(Clone, Debug)]
pub struct Options {
    pub cluster_cidr: String,
    pub node_lifecycle: nodelifecycle::Options,
    /// How long a cron minute lasts (60 s; tests shorten it).
    pub cron_minute: std::time::Duration,
    /// Finished pods kept before the oldest are deleted.
    pub terminated_pod_gc_threshold: usize,
    /// How often autoscalers are evaluated.
    pub hpa_sync_period: std::time::Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cluster_cidr: "10.244.0.0/16".into(),
            node_lifecycle: Default::default(),
            cron_minute: std::time::Duration::from_secs(60),
            terminated_pod_gc_threshold: 12500,
            hpa_sync_period: std::time::Duration::from_secs(15),
        }
    }
}

/// Starts every controller; returns once they are all running.
pub async fn start(informers: Informers, opts: Options) -> anyhow::Result<()> {
    nodeipam::Controller::start(informers.clone(), &opts.cluster_cidr).await?;
    let i = informers.clone();
    tokio::spawn(async move { replicaset::Controller::<ReplicaSet>::start(i).await });
    let i = informers.clone();
    tokio::spawn(async move { replicaset::Controller::<ReplicationController>::start(i).await });
    let i = informers.clone();
    tokio::spawn(async move { deployment::Controller::start(i).await });
    let i = informers.clone();
    tokio::spawn(async move { daemonset::Controller::start(i).await });
    let i = informers.clone();
    tokio::spawn(async move { statefulset::Controller::start(i).await });
    let i = informers.clone();
    tokio::spawn(async move { job::Controller::start(i).await });
    let i = informers.clone();
    tokio::spawn(async move { disruption::Controller::start(i).await });
    let i = informers.clone();
    tokio::spawn(async move { resourcequota::Controller::start(i).await });
    let (i, threshold) = (informers.clone(), opts.terminated_pod_gc_threshold);
    tokio::spawn(async move { podgc::Controller::start(i, threshold).await });
    let i = informers.clone();
    tokio::spawn(async move { volumebinding::Controller::start(i).await });
    let (i, period) = (informers.clone(), opts.hpa_sync_period);
    tokio::spawn(async move { hpa::Controller::start(i, period).await });
    let i = informers.clone();
    tokio::spawn(async move { endpoints::Controller::start(i).await });
    let (i, minute) = (informers.clone(), opts.cron_minute);
    tokio::spawn(async move { cronjob::Controller::start(i, minute).await });
    let (i, nl) = (informers.clone(), opts.node_lifecycle.clone());
    tokio::spawn(async move { nodelifecycle::Controller::start(i, nl).await });
    let i = informers.clone();
    tokio::spawn(async move { namespace::Controller::start(i).await });
    let i = informers.clone();
    tokio::spawn(async move { serviceaccount::Controller::start(i).await });
    let i = informers.clone();
    tokio::spawn(async move { servicelb::Controller::start(i).await });
    let gc = gc::Collector::new(informers.clone());
    tokio::spawn(async move {
        // Workers start first: a kind whose informer has not synced yet only means its
        // objects count as present owners (never collected by mistake). Kinds the controllers
        // already hold informers for share them; the rest of the resource table is watched.
        gc.run();
        gc.track::<Pod>("pods").await;
        gc.track::<ReplicaSet>("replicasets").await;
        gc.track::<ReplicationController>("replicationcontrollers").await;
        gc.track::<Deployment>("deployments").await;
        gc.track::<DaemonSet>("daemonsets").await;
        gc.track::<StatefulSet>("statefulsets").await;
        gc.track::<Job>("jobs").await;
        gc.track::<CronJob>("cronjobs").await;
        gc.track::<ControllerRevision>("controllerrevisions").await;
        gc.track::<PersistentVolumeClaim>("persistentvolumeclaims").await;
        gc.track::<EndpointSlice>("endpointslices").await;
        gc.track::<Service>("services").await;
        gc.track::<ServiceAccount>("serviceaccounts").await;
        gc.track::<PodDisruptionBudget>("poddisruptionbudgets").await;
        gc.track::<HorizontalPodAutoscaler>("horizontalpodautoscalers").await;
        // Every other built-in resource of the table, through a watch each.
        gc.track_table();
        gc.resync();
        gc.track_custom_resources().await;
    });
    tracing::info!("controllers started");
    Ok(())
}
