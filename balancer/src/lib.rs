//! The HTTP/2 load balancer: routes pick a cluster, a cluster picks a
//! healthy endpoint, and the endpoint's multiplexed h2 connections carry the
//! request upstream. It knows nothing of JSON or of the downstream protocol.
//!
//! Modules by concern: `cluster` (clusters, membership, the send loop and
//! one attempt), `pick` (the pick policies), `queue` (admission: the
//! per-endpoint limit, the FIFO queue), `lease` (in-flight accounting and
//! outcome reporting: `Lease`, `LeasedBody`), `retry` (policy, budget,
//! decision), `outlier` (outlier detection), `dns` (resolution and
//! re-resolution), `health` (active checks), `endpoint` (one server's live
//! state), `stats` (counters read by the metrics), `upstream` / `h2conn` (connections), `worker` (per-worker connection
//! pools), `error`.

pub mod body;
pub mod budget;
pub mod cluster;
pub mod coalesce;
pub mod config;
pub mod dns;
pub mod endpoint;
pub mod error;
pub mod grpc;
pub mod h2conn;
pub mod headers;
pub mod health;
pub mod lease;
pub mod observe;
pub mod outlier;
pub mod pick;
pub mod queue;
pub mod replay;
pub(crate) mod retry;
pub mod route;
pub mod stats;
pub mod upstream;
pub mod worker;

pub use cluster::{Cluster, Clusters, EndpointSet, Timings, UpstreamResponse};
pub use config::{ClusterConfig, ClusterName, EndpointConfig, LbPolicy};
pub use dns::{Resolve, SystemResolver};
pub use error::{BalancerError, ErrorChain, Fault};
pub use lease::{Lease, LeasedBody};
pub use observe::{AttemptObserver, AttemptOutcome, Observer};
pub use outlier::Outcome;
pub use route::{HeaderMatch, Route, RouteTable};
