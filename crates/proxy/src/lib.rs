//! The service proxy (kube-proxy's job): Services and EndpointSlices become packet-filter rules
//! on the node, so that cluster IPs, node ports and load-balancer addresses reach the ready
//! endpoints. `model` computes the desired state; a backend (`nftables`, the default, or
//! `iptables`) renders it whole or as the difference from what was applied last; `run` keeps
//! the node's rules in step through the `Backend` seam.

pub mod conntrack;
pub mod iptables;
pub mod model;
pub mod nftables;
pub mod run;
