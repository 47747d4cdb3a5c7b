//! What inbound and outbound share: the per-process context, connection accounting, the HTTP
//! client to the local app, response helpers, and the revocation watch that closes connections.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::ServerConfig;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use trustmesh_core::spiffe::SpiffeId;

use crate::accesslog::AccessLog;
use crate::metrics::Metrics;
use crate::state::Live;

/// Response body type of the proxy: either the app's body or one we made.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// Limits that protect the sidecar and the app from bad or slow clients.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections open at once, per direction; more are closed at accept.
    pub max_connections: usize,
    /// Time to finish a TLS handshake.
    pub handshake_timeout: Duration,
    /// Time to send the first bytes (protocol detection) before a connection is treated as opaque.
    pub detect_timeout: Duration,
    /// Time for a client to send a complete request head (slow-client protection).
    pub header_timeout: Duration,
    /// Time for the app to answer one request.
    pub request_timeout: Duration,
    /// Headers per request.
    pub max_headers: usize,
    /// Bytes of request head (HTTP/1 buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
    /// Time to finish in-flight requests after SIGTERM.
    pub drain_timeout: Duration,
    /// Time a connection (HTTP, opaque TCP or outbound) may carry no byte either way before it
    /// is closed (checked at this interval, so closed within twice this).
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            handshake_timeout: Duration::from_secs(10),
            detect_timeout: Duration::from_millis(500),
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_headers: 100,
            max_header_bytes: 64 * 1024,
            drain_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(3600),
        }
    }
}

/// Everything a connection handler needs, shared by all connections.
pub struct Shared {
    /// The snapshot in force.
    pub live: Live,
    /// Inbound TLS settings (replaced when the bundle changes).
    pub server_tls: watch::Receiver<Arc<ServerConfig>>,
    /// Outbound TLS: our certificate and the bundle.
    pub client_tls: crate::outbound::ClientTls,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Access log.
    pub log: AccessLog,
    /// Limits.
    pub limits: Limits,
    /// Connection slots of inbound connections; outbound ones have their own, so callers
    /// holding inbound connections cannot starve the app's own outbound calls.
    pub inbound_slots: Arc<Semaphore>,
    /// Connection slots of outbound connections.
    pub outbound_slots: Arc<Semaphore>,
    /// Pooled HTTP/1.1 client to the local app (for HTTP/1 callers).
    pub app: Client<HttpConnector, Incoming>,
    /// HTTP/2 (prior knowledge, h2c) client to the local app, for HTTP/2 callers (gRPC): a
    /// caller that speaks HTTP/2 talks to an app that does.
    pub app_h2: Client<HttpConnector, Body>,
    /// Plaintext callers are the `unauthenticated` caller (true) or refused (false).
    pub permissive: bool,
    /// Flips to `true` on SIGTERM: stop accepting, finish in-flight requests.
    pub draining: watch::Receiver<bool>,
}

impl Shared {
    /// A pooled client for the app: HTTP/1.1 with keep-alive, or HTTP/2 over cleartext (`h2`).
    pub fn app_client<B>(h2: bool) -> Client<HttpConnector, B>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
    {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let mut builder = Client::builder(TokioExecutor::new());
        builder.pool_idle_timeout(Duration::from_secs(90)).pool_max_idle_per_host(256);
        if h2 {
            builder.http2_only(true);
        }
        builder.build(connector)
    }

    /// Takes a connection slot of one direction, or counts the overload and returns `None`.
    pub fn slot(&self, inbound: bool) -> Option<ConnGuard> {
        let slots = if inbound { &self.inbound_slots } else { &self.outbound_slots };
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                self.metrics.open_connections.inc();
                Some(ConnGuard { _permit: permit, metrics: self.metrics.clone() })
            }
            Err(_) => {
                self.metrics.overloaded.inc();
                None
            }
        }
    }

    /// Logs an access-log line, counting it when the writer lags.
    pub fn log(&self, e: &crate::accesslog::Entry<'_>) {
        if !self.log.log(e) {
            self.metrics.log_dropped.inc();
        }
    }
}

/// Holds a connection slot; releases it and updates the gauge when dropped.
pub struct ConnGuard {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.metrics.open_connections.dec();
    }
}

/// Accepts connections of one `direction` (`inbound` or `outbound`) until draining starts, each
/// with a slot of that direction's pool, and runs `handle` on each in its own task.
pub async fn accept_until_drained<F, Fut>(listener: tokio::net::TcpListener, direction: &'static str, shared: Arc<Shared>, handle: F)
where
    F: Fn(tokio::net::TcpStream, std::net::SocketAddr, Arc<Shared>, ConnGuard) -> Fut,
    Fut: std::future::Future<Output = Result<(), &'static str>> + Send + 'static,
{
    let mut draining = shared.draining.clone();
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, typically: back off instead of spinning.
                    tracing::warn!(direction, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = drained(&mut draining) => return,
        };
        let Some(guard) = shared.slot(direction == "inbound") else { continue };
        let connection = handle(tcp, remote, shared.clone(), guard);
        tokio::spawn(async move {
            if let Err(reason) = connection.await {
                tracing::debug!(direction, %remote, reason, "connection closed");
            }
        });
    }
}

/// Resolves when the peer of an open connection can no longer be trusted, with why: it appears
/// in the revocation list (a quarantine reached this sidecar), or the certificate it
/// authenticated with expires. Never, for no peer and no expiry. Connections select on it.
pub async fn untrusted(mut live: Live, peer: Option<SpiffeId>, expires: Option<std::time::SystemTime>) -> &'static str {
    let expiry = async move {
        match expires {
            Some(at) => tokio::time::sleep(at.duration_since(std::time::SystemTime::now()).unwrap_or_default()).await,
            None => std::future::pending().await,
        }
    };
    let revoked = async move {
        let Some(peer) = peer else { return std::future::pending().await };
        loop {
            if live.borrow_and_update().as_ref().is_some_and(|a| a.snapshot.is_revoked(&peer)) {
                return;
            }
            if live.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    };
    tokio::select! {
        () = expiry => "peer certificate expired; connection closed",
        () = revoked => "peer revoked; connection closed",
    }
}

/// A short text response made by the mesh.
pub fn mesh_response(status: u16, id: &str, denied_by: Option<&str>, body: String) -> hyper::Response<Body> {
    let mut resp = hyper::Response::new(Full::new(Bytes::from(body)).map_err(|never: Infallible| match never {}).boxed());
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::FORBIDDEN);
    let h = resp.headers_mut();
    h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    if let Ok(v) = http::HeaderValue::from_str(id) {
        h.insert("x-trustmesh-request-id", v);
    }
    if let Some(by) = denied_by.and_then(|b| http::HeaderValue::from_str(b).ok()) {
        h.insert("x-trustmesh-denied", by);
    }
    resp
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) a proxy must not forward.
pub fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    let named: Vec<http::HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| http::HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in ["connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade"] {
        headers.remove(n);
    }
}

/// Resolves once draining has started (SIGTERM).
pub async fn drained(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|d| *d).await;
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_open_connection_ends_when_the_peer_certificate_expires() {
        let (_tx, live) = watch::channel(None);
        let peer = SpiffeId::parse("spiffe://td.example/ns/web/sa/frontend").ok();
        let started = tokio::time::Instant::now();
        let why = untrusted(live.clone(), peer.clone(), Some(SystemTime::now() + Duration::from_secs(600))).await;
        assert_eq!(why, "peer certificate expired; connection closed");
        assert!(started.elapsed() >= Duration::from_secs(599), "{:?}", started.elapsed());
        // Without an expiry and without a revocation, nothing ends it.
        let never = tokio::time::timeout(Duration::from_secs(86_400), untrusted(live, peer, None)).await;
        assert!(never.is_err());
    }
}
