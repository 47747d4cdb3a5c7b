//! The webhook's HTTPS server: `POST /inject` with an AdmissionReview, over HTTP/1.1 or HTTP/2
//! (ALPN, if the TLS config offers `h2`).
//!
//! Answers: 200 with an AdmissionReview (also for denials and unreadable reviews), 404 for any
//! other path, 405 for other methods, 415 for a body that is not `application/json`, 413 above
//! [`MAX_BODY_BYTES`], 408 when the body does not arrive within [`BODY_TIMEOUT`]. Handshakes
//! have a deadline too, so a slow client cannot hold a connection open forever.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::InjectionContext;

/// The [`InjectionContext`] for a namespace. The operator builds it from its configuration and
/// a namespace reflector store: `namespace_labels: None` when the store does not have the
/// namespace (pods that need the labels to decide are then denied and retried).
pub type ContextFn = Arc<dyn Fn(&str) -> InjectionContext + Send + Sync>;

/// Largest accepted request body (the API server sends the whole pod).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// How long a client may take to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's headers, then its body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a refused request's body is read and discarded before the stream is reset.
const DRAIN_MAX_BYTES: usize = 4 * MAX_BODY_BYTES;

/// Serves the webhook on `listener` with `tls` until the future is dropped.
///
/// Offer ALPN `h2` and `http/1.1` in `tls` to let the API server use HTTP/2.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, contexts: ContextFn) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "webhook: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, contexts) = (acceptor.clone(), contexts.clone());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::info!(%remote, error = %e, "webhook: TLS handshake failed"),
                Err(_) => return tracing::info!(%remote, "webhook: TLS handshake timed out"),
            };
            let svc = hyper::service::service_fn(move |req| {
                let contexts = contexts.clone();
                async move { Ok::<_, Infallible>(handle(req, &contexts).await) }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(BODY_TIMEOUT);
            builder.http2().timer(TokioTimer::new());
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).await {
                tracing::debug!(%remote, error = %e, "webhook: connection ended with an error");
            }
        });
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

async fn handle(req: Request<Incoming>, contexts: &ContextFn) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let early = if parts.uri.path() != "/inject" {
        Some(text(StatusCode::NOT_FOUND, "not found: the trustmesh webhook serves POST /inject\n"))
    } else if parts.method != Method::POST {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use POST with an AdmissionReview\n");
        r.headers_mut().insert(header::ALLOW, http::HeaderValue::from_static("POST"));
        Some(r)
    } else if !is_json(&parts.headers) {
        Some(text(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send the AdmissionReview as Content-Type: application/json\n"))
    } else if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        Some(too_large())
    } else {
        None
    };
    if let Some(r) = early {
        drain_later(body);
        return r;
    }
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let out = super::review(&body, |ns| contexts(ns));
    let mut r = Response::new(Full::new(Bytes::from(out)));
    r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

fn too_large() -> Response<Full<Bytes>> {
    text(StatusCode::PAYLOAD_TOO_LARGE, "the AdmissionReview is larger than 4 MiB\n")
}

/// The whole body, at most [`MAX_BODY_BYTES`], within [`BODY_TIMEOUT`].
async fn read_body(mut body: Incoming) -> Result<Vec<u8>, Response<Full<Bytes>>> {
    let deadline = tokio::time::Instant::now() + BODY_TIMEOUT;
    let mut buf = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(text(StatusCode::REQUEST_TIMEOUT, "the request body did not arrive in time\n")),
            Ok(None) => return Ok(buf),
            Ok(Some(Err(_))) => return Err(text(StatusCode::BAD_REQUEST, "reading the request body failed\n")),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if buf.len() + data.len() > MAX_BODY_BYTES {
                        drain_later(body);
                        return Err(too_large());
                    }
                    buf.extend_from_slice(&data);
                }
            }
        }
    }
}

/// Reads and discards what is left of a refused request's body (bounded in size and time), so
/// the client receives the answer instead of a reset connection or stream.
fn drain_later(mut body: Incoming) {
    tokio::spawn(async move {
        let mut left = DRAIN_MAX_BYTES;
        let _ = tokio::time::timeout(BODY_TIMEOUT, async {
            while let Some(Ok(frame)) = body.frame().await {
                let n = frame.data_ref().map_or(0, Bytes::len);
                match left.checked_sub(n) {
                    Some(l) => left = l,
                    None => break,
                }
            }
        })
        .await;
    });
}

fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}
