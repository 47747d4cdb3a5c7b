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

/// Labels of a decision counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// `allow` or `deny`.
    pub decision: &'static str,
    /// Why, for denials (`policy`, `default`, `revoked`, `bad_path`, `no_snapshot`, `egress_locked`, ...).
    pub reason: &'static str,
}

/// Labels of a TLS failure counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsLabels {
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// Failure reason (certificate checks, handshake errors, timeouts).
    pub reason: &'static str,
}

/// Every metric the sidecar exports.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by decision.
    pub requests: Family<DecisionLabels, Counter>,
    /// Opaque TCP connections by decision.
    pub connections: Family<DecisionLabels, Counter>,
    /// TLS handshake failures.
    pub tls_failures: Family<TlsLabels, Counter>,
    /// Connections refused because the connection cap was reached.
    pub overloaded: Counter,
    /// Access-log lines dropped because the writer lagged.
    pub log_dropped: Counter,
    /// Connections currently open (both directions).
    pub open_connections: Gauge,
    /// Snapshot generation counter: increases on every snapshot applied.
    pub snapshots_applied: Counter,
    /// notAfter of the certificate in use, seconds since the epoch.
    pub svid_expiry_seconds: Gauge,
    /// Certificates obtained.
    pub svid_renewals: Counter,
    /// Failed attempts, by reason.
    pub svid_failures: Family<ReasonLabel, Counter>,
    /// Version of the snapshot in force (when numeric, as the operator's are).
    pub snapshot_version: Gauge,
    /// When the snapshot in force was applied, seconds since the epoch.
    pub snapshot_applied_seconds: Gauge,
    /// Audit findings ("would deny" / "would allow"): what the audit rules or an audit default
    /// would have decided, by direction.
    pub audit_findings: Family<AuditLabels, Counter>,
}

/// Labels of the audit findings counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuditLabels {
    /// `inbound` (audit is evaluated where the policy is).
    pub direction: &'static str,
    /// `deny` or `allow`: what would have happened.
    pub would: &'static str,
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
        let requests = Family::<DecisionLabels, Counter>::default();
        registry.register("requests", "HTTP requests authorized, by direction, decision and reason", requests.clone());
        let connections = Family::<DecisionLabels, Counter>::default();
        registry.register("connections", "Connections authorized, by direction, decision and reason", connections.clone());
        let tls_failures = Family::<TlsLabels, Counter>::default();
        registry.register("tls_failures", "TLS handshakes that failed, by direction and reason", tls_failures.clone());
        let overloaded = Counter::default();
        registry.register("connections_overloaded", "Connections refused at the connection cap", overloaded.clone());
        let log_dropped = Counter::default();
        registry.register("access_log_dropped", "Access-log lines dropped because the writer lagged", log_dropped.clone());
        let open_connections = Gauge::default();
        registry.register("open_connections", "Connections currently open", open_connections.clone());
        let snapshots_applied = Counter::default();
        registry.register("snapshots_applied", "Configuration snapshots applied", snapshots_applied.clone());
        let snapshot_version = Gauge::default();
        registry.register("snapshot_version", "Version of the configuration snapshot in force", snapshot_version.clone());
        let snapshot_applied_seconds = Gauge::default();
        registry.register("snapshot_applied_timestamp_seconds", "When the snapshot in force was applied", snapshot_applied_seconds.clone());
        let audit_findings = Family::<AuditLabels, Counter>::default();
        registry.register("audit_findings", "What audit rules or an audit default would have decided, by direction", audit_findings.clone());
        Arc::new(Self {
            registry,
            requests,
            connections,
            tls_failures,
            overloaded,
            log_dropped,
            open_connections,
            snapshots_applied,
            svid_expiry_seconds,
            svid_renewals,
            svid_failures,
            snapshot_version,
            snapshot_applied_seconds,
            audit_findings,
        })
    }

    /// Counts one decision.
    pub fn decision(&self, http: bool, direction: &'static str, allowed: bool, reason: &'static str) {
        let family = if http { &self.requests } else { &self.connections };
        family.get_or_create(&DecisionLabels { direction, decision: if allowed { "allow" } else { "deny" }, reason }).inc();
    }

    /// Counts the audit finding of a decision, if it has one.
    pub fn audit(&self, direction: &'static str, decision: &trustmesh_core::policy::Decision<'_>) {
        if let Some((would, _)) = &decision.audit {
            self.audit_findings.get_or_create(&AuditLabels { direction, would: would.as_str() }).inc();
        }
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
