//! CRI v1 client: the kubelet's only way to the container runtime.

use std::time::Duration;

use tonic::transport::Channel;

#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("runtime.v1");
}

pub use pb::image_service_client::ImageServiceClient;
pub use pb::runtime_service_client::RuntimeServiceClient;

/// Deadline of ordinary runtime calls; image pulls and stops pass their own.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Runtime {
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
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
        let rt = Runtime { runtime: RuntimeServiceClient::new(ch.clone()), images: ImageServiceClient::new(ch) };
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

    pub async fn version(&self) -> Result<pb::VersionResponse, tonic::Status> {
        Ok(self.runtime.clone().version(req(pb::VersionRequest { version: "v1".into() }, Duration::from_secs(5))).await?.into_inner())
    }
}
