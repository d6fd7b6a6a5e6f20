//! Errors of the balancer, each saying who is at fault ([`BalancerError::fault`])
//! and whether a retry on another endpoint is safe
//! ([`BalancerError::is_retryable`], which the send loop's retry decision
//! uses); and [`ErrorChain`], to display an error with its sources.

use std::{io, net::SocketAddr, time::Duration};

use crate::config::ClusterName;

/// Who caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client (downstream) did something wrong or went away.
    Downstream,
    /// The upstream server failed or is unreachable.
    Upstream,
    /// A time limit ran out.
    Timeout,
    /// Capacity: every slot is taken.
    Overload,
    /// A bug or misconfiguration on our side.
    Internal,
}

/// Displays an error with all its sources: `a: b: c`.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

/// A failure to get a request answered by an upstream endpoint.
#[derive(Debug, thiserror::Error)]
pub enum BalancerError {
    /// No endpoint of the cluster is eligible (all down or ejected).
    #[error("cluster {cluster}: no healthy endpoint")]
    NoHealthyEndpoint {
        /// The cluster.
        cluster: ClusterName,
    },
    /// Every endpoint is at its limit and the wait queue is full.
    #[error("cluster {cluster}: queue full")]
    QueueFull {
        /// The cluster.
        cluster: ClusterName,
    },
    /// Waited for a free endpoint longer than the queue timeout.
    #[error("cluster {cluster}: queue timeout after {waited:?}")]
    QueueTimeout {
        /// The cluster.
        cluster: ClusterName,
        /// How long the request waited.
        waited: Duration,
    },
    /// TCP connect failed.
    #[error("connect to {addr}")]
    Connect {
        /// The endpoint.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Connect (TCP + TLS + h2 handshake) took too long.
    #[error("connect to {addr}: timed out after {after:?}")]
    ConnectTimeout {
        /// The endpoint.
        addr: SocketAddr,
        /// The limit.
        after: Duration,
    },
    /// TLS handshake with the endpoint failed (bad certificate, ...).
    #[error("TLS handshake with {addr}")]
    Tls {
        /// The endpoint.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// HTTP/2 handshake with the endpoint failed.
    #[error("HTTP/2 handshake with {addr}")]
    Handshake {
        /// The endpoint.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: crate::body::BoxError,
    },
    /// A connect to the endpoint, made by another request while this one
    /// waited for it, failed; this request shares the failure rather than
    /// trying again in turn.
    #[error("connect to {addr} failed (another request's attempt)")]
    ConnectFailedMeanwhile {
        /// The endpoint.
        addr: SocketAddr,
    },
    /// The connection closed before the request was sent; safe to retry.
    #[error("connection to {addr} closed before the request was sent")]
    NotSent {
        /// The endpoint.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: crate::body::BoxError,
    },
    /// The request was sent and the exchange failed (reset, GOAWAY, I/O).
    #[error("upstream {addr} failed the request")]
    Upstream {
        /// The endpoint.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: crate::body::BoxError,
    },
    /// The downstream request could not be turned into an upstream one.
    #[error("bad upstream request: {0}")]
    BadRequest(String),
}

// === impl BalancerError ===

impl BalancerError {
    /// Who is at fault.
    pub fn fault(&self) -> Fault {
        match self {
            Self::NoHealthyEndpoint { .. }
            | Self::Connect { .. }
            | Self::ConnectFailedMeanwhile { .. }
            | Self::Tls { .. }
            | Self::Handshake { .. }
            | Self::NotSent { .. }
            | Self::Upstream { .. } => Fault::Upstream,
            Self::QueueFull { .. } => Fault::Overload,
            Self::QueueTimeout { .. } | Self::ConnectTimeout { .. } => Fault::Timeout,
            Self::BadRequest(_) => Fault::Internal,
        }
    }

    /// True only when no request byte reached the endpoint, or the endpoint
    /// did not process the stream (REFUSED_STREAM, below a graceful
    /// GOAWAY's last stream), so the request may be tried again. The send
    /// loop retries exactly these errors (each within its own limit, see
    /// `retry::RetryReason`); every other error ends the request.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect { .. }
            | Self::ConnectTimeout { .. }
            | Self::ConnectFailedMeanwhile { .. }
            | Self::Tls { .. }
            | Self::Handshake { .. }
            | Self::NotSent { .. } => true,
            Self::Upstream { source, .. } => is_unprocessed(source.as_ref()),
            _ => false,
        }
    }
}

// === impl ErrorChain ===

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// Whether the server did not process the stream, so a retry is safe
/// (RFC 9113 section 8.7): it refused it (REFUSED_STREAM), or its graceful
/// GOAWAY named a last stream below it (h2 reports exactly those streams
/// with a remote GOAWAY error carrying NO_ERROR; a GOAWAY with an error
/// code, or the connection closing later, gives other errors).
pub fn is_unprocessed(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away()
                    && h2.is_remote()
                    && h2.reason() == Some(h2::Reason::NO_ERROR));
        }
        source = e.source();
    }
    false
}
