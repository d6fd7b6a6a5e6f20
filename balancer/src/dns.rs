//! Servers given by host name: the configured [`Target`]s, resolution
//! through a pluggable [`Resolve`] ([`SystemResolver`] by default), and
//! the re-resolution task that hands each new list of endpoints to the
//! cluster every `dns_refresh_ms` (the cluster swaps its endpoint set;
//! see `Cluster::refresh`).

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc};

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{
    cluster::Cluster,
    config::{ClusterName, ConfigError, EndpointConfig},
    endpoint::Endpoint,
};

/// Resolves host names to addresses (DNS by default); pluggable so tests
/// decide what a name resolves to.
pub trait Resolve: Send + Sync + 'static {
    /// The addresses of `host`, with `port`.
    fn resolve(
        &self,
        host: String,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>>;
}

/// The system resolver (getaddrinfo, off the runtime threads).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

/// A configured server: an address, or a host name re-resolved by DNS.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    name: Option<String>,
    /// As configured (`host:port`).
    address: String,
    /// The host part, without IPv6 brackets.
    host: String,
    port: u16,
    weight: u32,
    /// The host is an IP literal (never re-resolved).
    literal: bool,
}

// === impl SystemResolver ===

impl Resolve for SystemResolver {
    fn resolve(
        &self,
        host: String,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>> {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect())
        })
    }
}

// === impl Target ===

impl Target {
    /// The servers of a cluster (`at`) as `host:port` targets, unresolved;
    /// errors name the address field.
    pub(crate) fn parse_all(
        endpoints: &[EndpointConfig],
        at: &str,
    ) -> Result<Vec<Self>, ConfigError> {
        let mut targets = Vec::with_capacity(endpoints.len());
        for (i, ep) in endpoints.iter().enumerate() {
            let field = format!("{at}.endpoints[{i}].address");
            let (host, port) = ep
                .address
                .rsplit_once(':')
                .map(|(h, p)| {
                    (
                        h.trim_start_matches('[').trim_end_matches(']').to_string(),
                        p,
                    )
                })
                .ok_or_else(|| {
                    ConfigError::new(&field, format!("`{}` is not host:port", ep.address))
                })?;
            let port: u16 = port.parse().map_err(|_| {
                ConfigError::new(&field, format!("`{}` has no valid port", ep.address))
            })?;
            if host.is_empty() {
                return Err(ConfigError::new(
                    &field,
                    format!("`{}` has no host", ep.address),
                ));
            }
            let literal = host.parse::<std::net::IpAddr>().is_ok();
            targets.push(Self {
                name: ep.name.clone(),
                address: ep.address.clone(),
                host,
                port,
                weight: ep.weight,
                literal,
            });
        }
        Ok(targets)
    }

    /// The address as configured.
    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// Whether the host is a name (re-resolved), not an IP literal.
    pub(crate) fn is_named(&self) -> bool {
        !self.literal
    }

    /// The addresses of this target now, sorted, without duplicates.
    pub(crate) async fn resolve(
        &self,
        resolver: &Arc<dyn Resolve>,
    ) -> std::io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = self.host.parse::<std::net::IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        let mut addrs = resolver.resolve(self.host.clone(), self.port).await?;
        addrs.sort();
        addrs.dedup();
        Ok(addrs)
    }

    /// A new endpoint for this target at `addr`; a name's endpoints are
    /// named `name@ip`.
    pub(crate) fn endpoint(&self, addr: SocketAddr) -> Endpoint {
        let name = match (&self.name, self.literal) {
            (Some(n), true) => n.clone(),
            (None, true) => self.address.clone(),
            (Some(n), false) => format!("{n}@{}", addr.ip()),
            (None, false) => format!("{}@{}", self.address, addr.ip()),
        };
        Endpoint::new(name, addr, self.host.clone(), self.weight)
    }
}

/// The endpoints `targets` resolve to now, reusing those of `current`
/// that are still there (same address and host); a name whose lookup
/// fails keeps its current endpoints.
pub(crate) async fn resolve_all(
    cluster: &ClusterName,
    targets: &[Target],
    current: &[Arc<Endpoint>],
    resolver: &Arc<dyn Resolve>,
) -> Vec<Arc<Endpoint>> {
    let mut next: Vec<Arc<Endpoint>> = Vec::new();
    for t in targets {
        let addrs = match t.resolve(resolver).await {
            Ok(a) => a,
            Err(_) if t.literal => Vec::new(),
            Err(error) => {
                warn!(%cluster, address = %t.address, %error, "DNS re-resolution failed; keeping the current servers");
                current
                    .iter()
                    .filter(|e| e.host == t.host)
                    .map(|e| e.addr)
                    .collect()
            }
        };
        for addr in addrs {
            let existing = current.iter().find(|e| e.addr == addr && e.host == t.host);
            next.push(match existing {
                Some(e) => e.clone(),
                None => Arc::new(t.endpoint(addr)),
            });
        }
    }
    next
}

/// Re-resolves the cluster's servers every `dns_refresh_ms` until
/// `shutdown`.
pub(crate) async fn refresh_loop(
    cluster: Arc<Cluster>,
    resolver: Arc<dyn Resolve>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            // Both branches are cancel-safe.
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(cluster.dns_refresh()) => {}
        }
        cluster.refresh(&resolver).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Vec<SocketAddr>);

    impl Resolve for Fixed {
        fn resolve(
            &self,
            _host: String,
            port: u16,
        ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>> {
            let addrs = self
                .0
                .iter()
                .map(|a| SocketAddr::new(a.ip(), port))
                .collect();
            Box::pin(async move { Ok(addrs) })
        }
    }

    struct Failing;

    impl Resolve for Failing {
        fn resolve(
            &self,
            _host: String,
            _port: u16,
        ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>> {
            Box::pin(async { Err(std::io::Error::other("no DNS")) })
        }
    }

    fn endpoints(addresses: &[&str]) -> Vec<EndpointConfig> {
        addresses
            .iter()
            .map(|a| EndpointConfig {
                address: a.to_string(),
                name: None,
                weight: 1,
            })
            .collect()
    }

    fn targets(addresses: &[&str]) -> Vec<Target> {
        Target::parse_all(&endpoints(addresses), "clusters[0]").expect("targets")
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    #[tokio::test]
    async fn names_resolve_to_one_endpoint_per_address_and_keep_the_existing_ones() {
        let t = targets(&["svc:50051", "10.0.0.9:7"]);
        assert!(t[0].is_named() && !t[1].is_named());
        let c = ClusterName::new("c");
        let two: Arc<dyn Resolve> = Arc::new(Fixed(vec![addr("10.0.0.2:0"), addr("10.0.0.1:0")]));
        let first = resolve_all(&c, &t, &[], &two).await;
        let names: Vec<_> = first.iter().map(|e| &*e.name).collect();
        assert_eq!(
            names,
            ["svc:50051@10.0.0.1", "svc:50051@10.0.0.2", "10.0.0.9:7"]
        );
        let one: Arc<dyn Resolve> = Arc::new(Fixed(vec![addr("10.0.0.2:0")]));
        let second = resolve_all(&c, &t, &first, &one).await;
        assert_eq!(second.len(), 2);
        assert!(Arc::ptr_eq(&second[0], &first[1]), "kept, not rebuilt");
        assert!(Arc::ptr_eq(&second[1], &first[2]));
        // A failed lookup keeps what there was.
        let failing: Arc<dyn Resolve> = Arc::new(Failing);
        let third = resolve_all(&c, &t, &second, &failing).await;
        assert_eq!(third.len(), 2);
        assert!(Arc::ptr_eq(&third[0], &second[0]));
    }

    #[test]
    fn bad_addresses_name_their_field() {
        let err = Target::parse_all(&endpoints(&["ok:1", "nope"]), "clusters[3]").unwrap_err();
        assert!(
            err.to_string().contains("clusters[3].endpoints[1].address"),
            "{err}"
        );
    }
}
