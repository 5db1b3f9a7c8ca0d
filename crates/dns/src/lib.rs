//! Cluster DNS (what CoreDNS does in seed 003), served by the control plane on the `kube-dns`
//! Service: service and pod names from Services and EndpointSlices (`records`), served over UDP
//! and TCP with hickory's message codec, other names forwarded to the host's resolvers
//! (`server`); CoreDNS's metrics on the metrics port (`metrics`).

pub mod metrics;
pub mod records;
pub mod server;

pub use server::{Config, serve, upstreams_from_resolv_conf};
