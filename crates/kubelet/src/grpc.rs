//! gRPC channels over the runtime's Unix socket.

use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// The socket path of a `unix:///path` endpoint (a bare path is accepted too).
pub fn socket_path(endpoint: &str) -> PathBuf {
    PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(endpoint))
}

/// A lazily reconnecting channel to a Unix socket; every call gets a deadline from its caller.
pub fn unix_channel(endpoint: &str) -> anyhow::Result<Channel> {
    let path = socket_path(endpoint);
    // The URI is required by tonic but unused: the connector dials the socket.
    let ep = Endpoint::try_from("http://[::1]:50051")?.connect_timeout(Duration::from_secs(5));
    Ok(ep.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
    })))
}
