//! Sidecar metrics (Prometheus, `trustmesh_` prefix).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label set with one `reason`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why (a stable, low-cardinality label).
    pub reason: &'static str,
}

/// Every metric the sidecar exports.
pub struct Metrics {
    registry: Registry,
    /// notAfter of the certificate in use, seconds since the epoch.
    pub svid_expiry_seconds: Gauge,
    /// Certificates obtained.
    pub svid_renewals: Counter,
    /// Failed attempts, by reason.
    pub svid_failures: Family<ReasonLabel, Counter>,
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("trustmesh");
        let svid_expiry_seconds = Gauge::default();
        registry.register("svid_expiry_timestamp_seconds", "notAfter of the X.509-SVID in use", svid_expiry_seconds.clone());
        let svid_renewals = Counter::default();
        registry.register("svid_renewals", "X.509-SVIDs obtained from the operator", svid_renewals.clone());
        let svid_failures = Family::<ReasonLabel, Counter>::default();
        registry.register("svid_renewal_failures", "Failed attempts to obtain an X.509-SVID, by reason", svid_failures.clone());
        Arc::new(Self { registry, svid_expiry_seconds, svid_renewals, svid_failures })
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
