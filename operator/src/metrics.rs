//! Operator metrics (Prometheus, `trustmesh_` prefix) and the small HTTP server on the metrics
//! port that serves `/metrics`, `/healthz` and the trust bundle.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// Label set with one `reason`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why (a stable, low-cardinality label).
    pub reason: &'static str,
}

/// Every metric the operator exports.
pub struct Metrics {
    registry: Registry,
    /// SVIDs signed.
    pub svids_issued: Counter,
    /// Signing requests refused, by reason.
    pub svid_refusals: Family<ReasonLabel, Counter>,
    /// Time to handle one signing request.
    pub sign_seconds: Histogram,
    /// Sidecars connected to `Config.Watch`.
    pub proxies_connected: prometheus_client::metrics::gauge::Gauge,
    /// Snapshots pushed to sidecars.
    pub config_pushes: Counter,
    /// Time from pushing a snapshot to its acknowledgement.
    pub config_ack_seconds: Histogram,
    /// Time of one status reconcile pass.
    pub reconcile_seconds: Histogram,
    /// Failed reconcile steps, by kind.
    pub reconcile_errors: Family<ReasonLabel, Counter>,
    /// Workloads by protection: `default_deny`, `audit`, `unprotected` (default allow, no policy), `policy`.
    pub coverage: Family<CoverageLabel, prometheus_client::metrics::gauge::Gauge>,
}

/// Label set of the coverage gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CoverageLabel {
    /// `default_deny`, `audit` or `unprotected`.
    pub protection: &'static str,
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("trustmesh");
        let svids_issued = Counter::default();
        registry.register("svids_issued", "X.509-SVIDs signed", svids_issued.clone());
        let svid_refusals = Family::<ReasonLabel, Counter>::default();
        registry.register("svid_refusals", "Signing requests refused, by reason", svid_refusals.clone());
        let sign_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register("svid_sign_duration_seconds", "Time to handle one signing request", sign_seconds.clone());
        let proxies_connected = prometheus_client::metrics::gauge::Gauge::default();
        registry.register("proxies_connected", "Sidecars connected to Config.Watch", proxies_connected.clone());
        let config_pushes = Counter::default();
        registry.register("config_pushes", "Snapshots pushed to sidecars", config_pushes.clone());
        let config_ack_seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 16));
        registry.register("config_push_ack_seconds", "Time from pushing a snapshot to its acknowledgement", config_ack_seconds.clone());
        let reconcile_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register("reconcile_duration_seconds", "Time of one status reconcile pass", reconcile_seconds.clone());
        let reconcile_errors = Family::<ReasonLabel, Counter>::default();
        registry.register("reconcile_errors", "Failed reconcile steps, by kind", reconcile_errors.clone());
        let coverage = Family::<CoverageLabel, prometheus_client::metrics::gauge::Gauge>::default();
        registry.register("policy_coverage_workloads", "Workloads by protection: default_deny, audit, unprotected", coverage.clone());
        Arc::new(Self {
            registry,
            svids_issued,
            svid_refusals,
            sign_seconds,
            proxies_connected,
            config_pushes,
            config_ack_seconds,
            reconcile_seconds,
            reconcile_errors,
            coverage,
        })
    }

    /// Recomputes the policy-coverage gauge: workloads whose unmatched calls are denied, only
    /// audited, or allowed (unprotected).
    pub fn set_coverage(&self, view: &crate::state::MeshView) {
        use trustmesh_core::policy::DefaultAction;
        let mut counts = [0i64; 3];
        for w in view.compiled.workloads.values() {
            counts[match w.policy.default_action {
                DefaultAction::Deny => 0,
                DefaultAction::Audit => 1,
                DefaultAction::Allow => 2,
            }] += 1;
        }
        for (protection, n) in ["default_deny", "audit", "unprotected"].into_iter().zip(counts) {
            self.coverage.get_or_create(&CoverageLabel { protection }).set(n);
        }
    }

    /// The registry rendered in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `/metrics`, `/healthz` and `/bundle.jwks` (the SPIFFE bundle) until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, bundle_jwks: Arc<dyn Fn() -> String + Send + Sync>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else { continue };
        let metrics = metrics.clone();
        let bundle = bundle_jwks.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                let bundle = bundle.clone();
                async move { Ok::<_, Infallible>(route(&req, &metrics, &*bundle)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await {
                tracing::debug!(%peer, error = %e, "metrics connection ended with an error");
            }
        });
    }
}

fn route(req: &Request<hyper::body::Incoming>, metrics: &Metrics, bundle: &(dyn Fn() -> String + Send + Sync)) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match req.uri().path() {
        "/metrics" => (StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", metrics.encode()),
        "/healthz" | "/readyz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/bundle.jwks" => (StatusCode::OK, "application/json", bundle()),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found: try /metrics, /healthz or /bundle.jwks\n".to_owned()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(ctype) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}
