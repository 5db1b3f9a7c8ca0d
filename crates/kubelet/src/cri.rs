//! CRI v1 client: the kubelet's only way to the container runtime. CRI is also the seam between
//! the pod workers and what runs the pods: containerd (or any CRI runtime) over its socket, or an
//! in-process implementation of the same services (the simulated nodes of `r8s sim-nodes`, which
//! run the same pod workers on an in-memory runtime, as upstream's kubemark does).

use std::time::Duration;

#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("runtime.v1");
}

pub use pb::image_service_client::ImageServiceClient;
pub use pb::runtime_service_client::RuntimeServiceClient;

/// Deadline of ordinary runtime calls; image pulls and stops pass their own.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How runtime calls travel: a gRPC channel to a socket, or an in-process CRI service.
pub type Transport = tower::util::BoxCloneSyncService<http::Request<tonic::body::Body>, http::Response<tonic::body::Body>, TransportError>;

/// A call that did not reach the runtime. (A concrete type: with a boxed `dyn Error` here,
/// tonic's `Into<StdError>` bound defeats the compiler's Send inference in spawned tasks.)
#[derive(Debug, thiserror::Error)]
#[error("runtime transport: {0}")]
pub struct TransportError(String);

#[derive(Clone)]
pub struct Runtime {
    pub runtime: RuntimeServiceClient<Transport>,
    pub images: ImageServiceClient<Transport>,
}

pub fn req<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(timeout);
    r
}

impl Runtime {
    /// Connects and waits (up to a minute) until the runtime answers Version.
    pub async fn connect(endpoint: &str) -> anyhow::Result<Runtime> {
        let ch = crate::grpc::unix_channel(endpoint)?;
        let transport =
            Transport::new(tower::ServiceExt::<http::Request<tonic::body::Body>>::map_err(ch, |e: tonic::transport::Error| TransportError(e.to_string())));
        let rt = Runtime { runtime: RuntimeServiceClient::new(transport.clone()), images: ImageServiceClient::new(transport) };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match rt.version().await {
                Ok(_) => return Ok(rt),
                Err(e) if std::time::Instant::now() > deadline => {
                    return Err(anyhow::anyhow!("container runtime at {endpoint} does not answer CRI Version: {e}"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// A runtime served in this process: calls go straight to the services (still encoded as
    /// CRI messages, so nothing in the pod workers knows the difference).
    pub fn in_process<R, I>(runtime: R, images: I) -> Runtime
    where
        R: pb::runtime_service_server::RuntimeService,
        I: pb::image_service_server::ImageService,
    {
        let never = |e: std::convert::Infallible| -> TransportError { match e {} };
        let rt = tower::ServiceExt::<http::Request<tonic::body::Body>>::map_err(pb::runtime_service_server::RuntimeServiceServer::new(runtime), never);
        let img = tower::ServiceExt::<http::Request<tonic::body::Body>>::map_err(pb::image_service_server::ImageServiceServer::new(images), never);
        Runtime { runtime: RuntimeServiceClient::new(Transport::new(rt)), images: ImageServiceClient::new(Transport::new(img)) }
    }

    pub async fn version(&self) -> Result<pb::VersionResponse, tonic::Status> {
        Ok(self.runtime.clone().version(req(pb::VersionRequest { version: "v1".into() }, Duration::from_secs(5))).await?.into_inner())
    }
}
