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
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
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
    if req.uri().path() != "/inject" {
        return text(StatusCode::NOT_FOUND, "not found: the trustmesh webhook serves POST /inject\n");
    }
    if req.method() != Method::POST {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use POST with an AdmissionReview\n");
        r.headers_mut().insert(header::ALLOW, http::HeaderValue::from_static("POST"));
        return r;
    }
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return text(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send the AdmissionReview as Content-Type: application/json\n");
    }
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "the AdmissionReview is larger than 4 MiB\n");
    }
    let body = match tokio::time::timeout(BODY_TIMEOUT, Limited::new(req.into_body(), MAX_BODY_BYTES).collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return text(StatusCode::PAYLOAD_TOO_LARGE, "the AdmissionReview is larger than 4 MiB\n");
        }
        Ok(Err(_)) => return text(StatusCode::BAD_REQUEST, "reading the request body failed\n"),
        Err(_) => return text(StatusCode::REQUEST_TIMEOUT, "the request body did not arrive in time\n"),
    };
    let out = super::review(&body, |ns| contexts(ns));
    let mut r = Response::new(Full::new(Bytes::from(out)));
    r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}
