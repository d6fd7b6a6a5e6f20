//! Passive outlier detection (Envoy's `outlier_detection`, consecutive
//! failures; HAProxy's `observe layer7`): every exchange with an endpoint
//! ends in an [`Outcome`]; enough failed ones in a row eject the endpoint
//! for `base_ejection_ms` times its number of ejections so far, capped at
//! `max_ejection_ms`, but never more than `max_ejection_percent` of the
//! cluster and never its last eligible endpoint.
//!
//! What counts as a failure: a connect failure and a failed exchange
//! (reset, I/O error) always; a final gRPC status only when it is listed
//! in `statuses`. The send loop records connect failures, failed exchanges
//! and answers it retries; the caller records the rest through
//! [`Lease::record`](crate::Lease::record) when the response ends.

use std::{sync::Arc, time::Duration};

use tracing::{debug, warn};

use crate::{
    config::{ClusterName, OutlierConfig, grpc_code_by_name},
    endpoint::Endpoint,
};

/// How an exchange with an endpoint ended, for outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The exchange ended with this final gRPC status (from the trailers,
    /// or from a trailers-only response head).
    Status(i32),
    /// The exchange failed without a status: connect failure, stream
    /// reset, I/O error, a response body that broke off.
    Failed,
}

/// Outlier detection settings, compiled.
#[derive(Debug)]
pub(crate) struct OutlierDetector {
    consecutive: u32,
    statuses: Vec<i32>,
    base: Duration,
    max: Duration,
    max_percent: u32,
}

// === impl Outcome ===

impl From<Option<i32>> for Outcome {
    /// A final status, or none when the stream failed.
    fn from(status: Option<i32>) -> Self {
        status.map_or(Self::Failed, Self::Status)
    }
}

// === impl OutlierDetector ===

impl OutlierDetector {
    /// Compiles `cfg` (already validated).
    pub(crate) fn new(cfg: &OutlierConfig) -> Self {
        Self {
            consecutive: cfg.consecutive_failures,
            statuses: cfg
                .statuses
                .iter()
                .filter_map(|s| grpc_code_by_name(s))
                .collect(),
            base: Duration::from_millis(cfg.base_ejection_ms),
            max: Duration::from_millis(cfg.max_ejection_ms.max(cfg.base_ejection_ms)),
            max_percent: cfg.max_ejection_percent,
        }
    }

    /// Whether `outcome` counts as a failed exchange.
    pub(crate) fn is_failure(&self, outcome: Outcome) -> bool {
        match outcome {
            Outcome::Failed => true,
            Outcome::Status(code) => self.statuses.contains(&code),
        }
    }

    /// Counts one exchange with `ep` (one of `endpoints`, the cluster's
    /// current set), and ejects it after enough consecutive failures
    /// unless that would eject more than the allowed share of the cluster
    /// or its last eligible endpoint. Returns the ejection time when it
    /// ejected.
    pub(crate) fn record(
        &self,
        cluster: &ClusterName,
        endpoints: &[Arc<Endpoint>],
        ep: &Arc<Endpoint>,
        failed: bool,
    ) -> Option<Duration> {
        if ep.record_exchange(failed) < self.consecutive {
            return None;
        }
        let n = endpoints.len();
        let ejected = endpoints.iter().filter(|e| e.is_ejected()).count();
        let others_eligible = endpoints
            .iter()
            .any(|e| !Arc::ptr_eq(e, ep) && e.is_eligible());
        let max = n * self.max_percent as usize / 100;
        if ejected + 1 > max || !others_eligible {
            debug!(%cluster, endpoint = %ep.name, "Outlier not ejected: ejection limit reached");
            return None;
        }
        let time = ep.eject(self.base, self.max);
        warn!(%cluster, endpoint = %ep.name, ejection = ?time, consecutive_failures = self.consecutive, "Endpoint ejected (outlier detection)");
        Some(time)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn detector(consecutive: u32, statuses: &[&str], max_percent: u32) -> OutlierDetector {
        OutlierDetector::new(&OutlierConfig {
            consecutive_failures: consecutive,
            statuses: statuses.iter().map(|s| s.to_string()).collect(),
            base_ejection_ms: 1_000,
            max_ejection_ms: 2_500,
            max_ejection_percent: max_percent,
        })
    }

    fn endpoints(n: u16) -> Vec<Arc<Endpoint>> {
        (0..n)
            .map(|i| {
                let addr = SocketAddr::from(([127, 0, 0, 1], 1000 + i));
                Arc::new(Endpoint::new(format!("e{i}"), addr, "h".into(), 1))
            })
            .collect()
    }

    #[test]
    fn which_outcomes_count_as_failures() {
        let d = detector(5, &["UNAVAILABLE", "INTERNAL"], 50);
        let table = [
            (Outcome::Failed, true),
            (Outcome::Status(0), false),
            (Outcome::Status(14), true),
            (Outcome::Status(13), true),
            // Listed only: an application error is the caller's business.
            (Outcome::Status(5), false),
            (Outcome::Status(4), false),
        ];
        for (outcome, failed) in table {
            assert_eq!(d.is_failure(outcome), failed, "{outcome:?}");
        }
        assert_eq!(Outcome::from(None), Outcome::Failed);
        assert_eq!(Outcome::from(Some(14)), Outcome::Status(14));
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_resets_the_count() {
        let d = detector(3, &["UNAVAILABLE"], 50);
        let eps = endpoints(4);
        let c = ClusterName::new("c");
        assert_eq!(d.record(&c, &eps, &eps[0], true), None);
        assert_eq!(d.record(&c, &eps, &eps[0], true), None);
        assert_eq!(d.record(&c, &eps, &eps[0], false), None, "reset");
        assert_eq!(d.record(&c, &eps, &eps[0], true), None);
        assert_eq!(d.record(&c, &eps, &eps[0], true), None);
        assert!(!eps[0].is_ejected());
        assert_eq!(
            d.record(&c, &eps, &eps[0], true),
            Some(Duration::from_millis(1_000))
        );
        assert!(eps[0].is_ejected() && !eps[0].is_eligible());
        assert_eq!(eps[0].ejections(), 1);
    }

    #[test]
    fn ejection_backs_off_linearly_up_to_the_cap() {
        let ep = endpoints(1).remove(0);
        let (base, max) = (Duration::from_millis(1_000), Duration::from_millis(2_500));
        assert_eq!(ep.eject(base, max), Duration::from_millis(1_000));
        assert_eq!(ep.eject(base, max), Duration::from_millis(2_000));
        assert_eq!(ep.eject(base, max), Duration::from_millis(2_500));
        assert_eq!(ep.eject(base, max), Duration::from_millis(2_500));
        assert_eq!(ep.ejections(), 4);
    }

    #[test]
    fn never_more_than_the_share_nor_the_last_eligible_endpoint() {
        let c = ClusterName::new("c");
        // 50 % of 4: two may be ejected, not a third.
        let d = detector(1, &[], 50);
        let eps = endpoints(4);
        assert!(d.record(&c, &eps, &eps[0], true).is_some());
        assert!(d.record(&c, &eps, &eps[1], true).is_some());
        assert_eq!(d.record(&c, &eps, &eps[2], true), None);
        assert!(!eps[2].is_ejected());

        // 100 %: still never the last eligible one.
        let d = detector(1, &[], 100);
        let eps = endpoints(2);
        assert!(d.record(&c, &eps, &eps[0], true).is_some());
        assert_eq!(d.record(&c, &eps, &eps[1], true), None);
        assert!(eps[1].is_eligible());
    }
}
