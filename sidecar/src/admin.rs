//! The admin port (15020): `/live`, `/ready`, `/metrics`, `/config` (the snapshot in force and
//! the certificate's identity and expiry, never keys) and `/app-health/<port>/<path>`, which
//! forwards a kubelet probe to the app on loopback (only for the configured probe ports), so
//! probes keep working while every other inbound port requires mTLS.
//!
//! The port is reachable from the network (the kubelet probes it, Prometheus scrapes it), so
//! `/config`, which shows the workload's whole policy, answers loopback callers only (`kubectl
//! exec` or `kubectl port-forward`). Connections are capped and must send their request head
//! within a few seconds.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use trustmesh_core::tls::SwappableCert;

use crate::metrics::Metrics;
use crate::state::Live;

/// What the admin server reads.
pub struct Admin {
    /// The snapshot in force.
    pub live: Live,
    /// Our certificate.
    pub cert: Arc<SwappableCert>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Exactly the app probes (port, path) the kubelet may reach through `/app-health/<port>/<path>`.
    pub probe_paths: BTreeSet<(u16, String)>,
    /// `true` once draining has started (SIGTERM): not ready, so no new traffic is sent here.
    pub draining: tokio::sync::watch::Receiver<bool>,
}

/// Admin connections open at once (probes and scrapes are short).
const MAX_CONNECTIONS: usize = 64;

/// Serves the admin endpoints until the task is dropped.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else { continue };
        let admin = admin.clone();
        let local = peer.ip().is_loopback();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(route(req, &admin, local).await) }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(Duration::from_secs(5));
            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

type Resp = Response<http_body_util::combinators::BoxBody<Bytes, hyper::Error>>;

fn text(status: StatusCode, ctype: &'static str, body: String) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|never: Infallible| match never {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(ctype));
    r
}

async fn route(req: Request<Incoming>, admin: &Admin, local: bool) -> Resp {
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/live" => text(StatusCode::OK, "text/plain", "live\n".into()),
        "/ready" => match readiness(admin) {
            Ok(()) => text(StatusCode::OK, "text/plain", "ready\n".into()),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("not ready: {why}\n")),
        },
        "/metrics" => text(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", admin.metrics.encode()),
        "/config" if local => text(StatusCode::OK, "application/json", config_json(admin)),
        "/config" => text(
            StatusCode::FORBIDDEN,
            "text/plain",
            "/config shows this workload's policy and answers from inside the pod only: kubectl exec, or kubectl port-forward to 15020\n".into(),
        ),
        p if p.starts_with("/app-health/") => {
            if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
                return text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "probes are GET requests\n".into());
            }
            // The raw path and query: probes are matched and forwarded exactly as configured.
            let target = req.uri().path_and_query().map_or(p, |pq| pq.as_str());
            probe(&target["/app-health/".len()..], admin).await
        }
        _ => text(StatusCode::NOT_FOUND, "text/plain", "try /live, /ready, /metrics or /config\n".into()),
    }
}

/// Ready when a valid certificate and a snapshot are both in place, until draining starts.
fn readiness(admin: &Admin) -> Result<(), &'static str> {
    if *admin.draining.borrow() {
        return Err("draining (shutting down)");
    }
    if admin.cert.current().is_none() {
        return Err("no valid certificate yet");
    }
    if admin.live.borrow().is_none() {
        return Err("no policy snapshot yet");
    }
    Ok(())
}

fn config_json(admin: &Admin) -> String {
    let snapshot = admin.live.borrow().as_ref().map(|a| serde_json::to_value(&a.snapshot).unwrap_or_default());
    let cert = admin.cert.current().and_then(|k| k.cert.first().cloned());
    let identity = cert.as_ref().and_then(|c| trustmesh_core::tls::spiffe_id_of(c).ok()).map(|id| id.to_string());
    let expiry = admin.cert.not_after().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs());
    let left = admin.cert.not_after().and_then(|t| t.duration_since(SystemTime::now()).ok()).map(|d| d.as_secs());
    let v = serde_json::json!({
        "identity": identity,
        "certificateNotAfterUnix": expiry,
        "certificateSecondsLeft": left,
        "snapshot": snapshot,
    });
    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
}

async fn probe(rest: &str, admin: &Admin) -> Resp {
    let (port, path) = rest.split_once('/').unwrap_or((rest, ""));
    let Ok(port) = port.parse::<u16>() else {
        return text(StatusCode::BAD_REQUEST, "text/plain", "use /app-health/<port>/<path>\n".into());
    };
    // Only the configured probes, matched exactly on the raw path and query: nothing else on the
    // app is reachable without mTLS and policy.
    let path = format!("/{path}");
    if !admin.probe_paths.contains(&(port, path.clone())) {
        return text(StatusCode::FORBIDDEN, "text/plain", format!("{port}:{path} is not a configured probe (--probe-path)\n"));
    }
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let Ok(uri) = format!("http://127.0.0.1:{port}{path}").parse::<http::Uri>() else {
        return text(StatusCode::BAD_REQUEST, "text/plain", "bad probe path\n".into());
    };
    match tokio::time::timeout(Duration::from_secs(10), client.get(uri)).await {
        Ok(Ok(resp)) => {
            let status = resp.status();
            text(status, "text/plain", format!("app answered {status}\n"))
        }
        _ => text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "app did not answer the probe\n".into()),
    }
}
