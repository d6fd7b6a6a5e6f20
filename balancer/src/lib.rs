//! The HTTP/2 load balancer: routes pick a cluster, a cluster picks a
//! healthy endpoint, and the endpoint's multiplexed h2 connections carry the
//! request upstream. It knows nothing of JSON or of the downstream protocol.

pub mod body;
pub mod budget;
pub mod cluster;
pub mod coalesce;
pub mod config;
pub mod endpoint;
pub mod error;
pub mod h2conn;
pub mod headers;
pub mod health;
pub mod pick;
pub mod replay;
pub mod route;
pub mod upstream;

pub use cluster::{
    Cluster, Clusters, EndpointSet, Lease, Resolve, SystemResolver, Timings, UpstreamResponse,
};
pub use config::{ClusterConfig, ClusterName, EndpointConfig, LbPolicy};
pub use error::{BalancerError, Fault};
pub use route::{HeaderMatch, Route, RouteTable};
