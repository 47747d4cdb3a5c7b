//! Inbound: accept -> (m)TLS terminate -> identify the caller -> detect the protocol ->
//! authorize (once per opaque TCP connection, per request for HTTP after path normalization) ->
//! forward to the app.
//!
//! Strict mode requires a client certificate chained to the bundle; permissive mode also accepts
//! plaintext and TLS without a client certificate as the `unauthenticated` caller (which no rule
//! matches). Denied HTTP requests get 403 with `x-trustmesh-denied` and `x-trustmesh-request-id`
//! (the id is in the access-log line); denied TCP connections are closed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use trustmesh_core::policy::{self, Decided, HttpRequest, Verdict, normalize_path};
use trustmesh_core::spiffe::SpiffeId;
use trustmesh_core::tls;

use crate::accesslog::{Entry, Outcome, request_id};
use crate::io::{Prefixed, Protocol, detect};
use crate::proxy::{Body, ConnGuard, Shared, mesh_response, strip_hop_by_hop, untrusted};

/// Where inbound connections go.
#[derive(Clone, Copy, Debug)]
pub enum AppTarget {
    /// Explicit mode: one app address; the policy sees its port.
    Fixed(SocketAddr),
    /// Transparent mode: the original destination port, on the loopback address.
    OriginalDst,
}

/// Header carrying the authenticated caller's SPIFFE ID to the app (client-sent copies are removed).
pub const PEER_HEADER: &str = "x-trustmesh-peer";

/// Accepts inbound connections until draining starts.
pub async fn serve(listener: TcpListener, target: AppTarget, shared: Arc<Shared>) {
    let handle = move |tcp, remote, shared: Arc<Shared>, guard| async move { connection(tcp, remote, target, &shared, guard).await };
    crate::proxy::accept_until_drained(listener, "inbound", shared, handle).await;
}

async fn connection(tcp: TcpStream, remote: SocketAddr, target: AppTarget, shared: &Arc<Shared>, guard: ConnGuard) -> Result<(), &'static str> {
    let _ = tcp.set_nodelay(true);
    let app = match target {
        AppTarget::Fixed(a) => a,
        AppTarget::OriginalDst => {
            let dst = crate::orig_dst::original_dst(&tcp).map_err(|_| "no original destination")?;
            SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), dst.port())
        }
    };
    // Strict mode waits for a ClientHello as long as for a handshake (a slow caller is not
    // plaintext); permissive mode treats silence past the detection time as a plaintext caller
    // of a server-speaks-first protocol.
    let wait = if shared.permissive { shared.limits.detect_timeout } else { shared.limits.handshake_timeout };
    let mut first = [0u8; 1];
    let is_tls = match tokio::time::timeout(wait, tcp.peek(&mut first)).await {
        Ok(Ok(0)) => return Ok(()), // closed before a byte (a port check): nothing to decide
        Ok(Ok(_)) => first[0] == 0x16,
        Ok(Err(_)) => return Err("read failed before the handshake"),
        Err(_) => false,
    };
    if !is_tls {
        if !shared.permissive {
            shared.metrics.tls_failures.get_or_create(&crate::metrics::TlsLabels { direction: "inbound", reason: "plaintext" }).inc();
            return Err("plaintext refused in strict mode");
        }
        return serve_authenticated(tcp, None, None, app, shared, guard).await;
    }
    let config = shared.server_tls.borrow().clone();
    let accepted = tokio::time::timeout(shared.limits.handshake_timeout, TlsAcceptor::from(config).accept(tcp)).await;
    let stream = match accepted {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let reason = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()).map_or("handshake", tls::failure_reason);
            shared.metrics.tls_failures.get_or_create(&crate::metrics::TlsLabels { direction: "inbound", reason }).inc();
            tracing::info!(%remote, error = %e, "inbound TLS handshake failed");
            return Err("handshake failed");
        }
        Err(_) => {
            shared.metrics.tls_failures.get_or_create(&crate::metrics::TlsLabels { direction: "inbound", reason: "timeout" }).inc();
            return Err("handshake timed out");
        }
    };
    let peer = match tls::peer_identity(stream.get_ref().1.peer_certificates()) {
        Ok(p) => p,
        Err(e) => {
            shared.metrics.tls_failures.get_or_create(&crate::metrics::TlsLabels { direction: "inbound", reason: e.reason() }).inc();
            return Err("peer certificate is not an X.509-SVID");
        }
    };
    let expires = tls::peer_not_after(stream.get_ref().1.peer_certificates());
    serve_authenticated(stream, peer, expires, app, shared, guard).await
}

/// Per-connection facts every request of the connection shares.
struct Conn {
    peer: Option<SpiffeId>,
    /// When the caller's certificate expires: the connection ends then.
    expires: Option<std::time::SystemTime>,
    peer_str: String,
    /// `x-trustmesh-peer` for the app, built once per connection.
    peer_header: Option<http::HeaderValue>,
    app: SocketAddr,
    authority: http::uri::Authority,
}

async fn serve_authenticated<S>(
    mut stream: S,
    peer: Option<SpiffeId>,
    expires: Option<std::time::SystemTime>,
    app: SocketAddr,
    shared: &Arc<Shared>,
    _guard: ConnGuard,
) -> Result<(), &'static str>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(active) = shared.live.borrow().clone() else {
        log_refusal(shared, &request_id(), &peer, app.port(), None, "no_snapshot");
        return Err("no snapshot yet (fail closed)");
    };
    if peer.as_ref().is_some_and(|p| active.snapshot.is_revoked(p)) {
        log_refusal(shared, &request_id(), &peer, app.port(), None, "revoked");
        return Err("caller is revoked");
    }
    let opaque = active.snapshot.opaque_ports.contains(&app.port());
    drop(active);
    let (protocol, prefix) = if opaque {
        (Protocol::Opaque, Vec::new())
    } else {
        detect(&mut stream, shared.limits.detect_timeout).await.map_err(|_| "read failed during detection")?
    };
    // A port not declared opaque carries HTTP only: anything else (including HTTP disguised by
    // a late or odd start) would otherwise reach the app without per-request checks and with
    // whatever x-trustmesh-peer header the caller wrote.
    if protocol == Protocol::Opaque && !opaque {
        log_refusal(shared, &request_id(), &peer, app.port(), None, "not_http");
        return Err("not HTTP on a port that is not declared opaque");
    }
    let stream = Prefixed::new(prefix, stream);
    let conn = Arc::new(Conn {
        peer_str: peer.as_ref().map_or_else(|| "unauthenticated".to_owned(), ToString::to_string),
        authority: app.to_string().parse().map_err(|_| "bad app address")?,
        peer_header: peer.as_ref().and_then(|p| http::HeaderValue::from_str(p.as_str()).ok()),
        peer,
        expires,
        app,
    });
    match protocol {
        Protocol::Closed => Ok(()),
        Protocol::Opaque => tcp(stream, conn, shared).await,
        Protocol::Http1 | Protocol::Http2 => http(stream, conn, shared).await,
    }
}

async fn tcp<S>(mut stream: S, conn: Arc<Conn>, shared: &Arc<Shared>) -> Result<(), &'static str>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let active = shared.live.borrow().clone().ok_or("no snapshot")?;
    let id = request_id();
    let decision = active.policy.evaluate(&policy::Request { caller: conn.peer.as_ref(), port: conn.app.port(), http: None });
    shared.log(&Entry {
        id: &id,
        direction: "inbound",
        src: &conn.peer_str,
        dst: active.snapshot.inbound.workload.as_str(),
        port: conn.app.port(),
        http: None,
        outcome: Outcome::Decided(&decision),
    });
    let allowed = decision.verdict == Verdict::Allow;
    shared.metrics.decision(false, "inbound", allowed, reason_of(&decision));
    shared.metrics.audit("inbound", &decision);
    if !allowed {
        let _ = stream.shutdown().await;
        return Err("denied by policy");
    }
    drop(active);
    let mut upstream = TcpStream::connect(conn.app).await.map_err(|_| "app unreachable")?;
    let _ = upstream.set_nodelay(true);
    tokio::select! {
        copied = crate::io::copy_bidirectional_idle(&mut stream, &mut upstream, shared.limits.idle_timeout) => copied,
        why = untrusted(shared.live.clone(), conn.peer.clone(), conn.expires) => Err(why),
    }
}

async fn http<S>(stream: S, conn: Arc<Conn>, shared: &Arc<Shared>) -> Result<(), &'static str>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(shared.limits.header_timeout)
        .max_headers(shared.limits.max_headers)
        .max_buf_size(shared.limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_header_list_size(shared.limits.max_header_bytes as u32)
        .max_concurrent_streams(256);
    // No server keep-alive pings: hyper sends them on idle connections too, and the caller's
    // automatic answers would count as traffic, so an idle HTTP/2 connection would never reach
    // the idle timeout below and would hold its slot for as long as the caller's stack answers.
    // An HTTP connection that carries no byte for the idle timeout is closed too.
    let stream = crate::io::Counted::new(stream);
    let moved = stream.moved();
    let svc_shared = shared.clone();
    let svc_conn = conn.clone();
    let service = hyper::service::service_fn(move |req| {
        let (shared, conn) = (svc_shared.clone(), svc_conn.clone());
        async move { Ok::<_, Infallible>(request(req, &conn, &shared).await) }
    });
    let served = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(served);
    let mut draining = shared.draining.clone();
    tokio::select! {
        res = served.as_mut() => res.map_err(|e| {
            // hyper has answered malformed HTTP/1 with 400 (431 for oversized headers) and a
            // closed a slow client's connection at the header timeout; log it like any other refusal.
            let reason = e.downcast_ref::<hyper::Error>().and_then(|h| {
                if h.is_parse_too_large() {
                    Some("headers_too_large")
                } else if h.is_parse() {
                    Some("bad_request")
                } else if h.is_timeout() {
                    Some("header_timeout")
                } else {
                    None
                }
            });
            if let Some(reason) = reason {
                log_refusal(shared, &request_id(), &conn.peer, conn.app.port(), None, reason);
            }
            "http connection error"
        }),
        why = untrusted(shared.live.clone(), conn.peer.clone(), conn.expires) => Err(why),
        () = crate::io::idle_for(moved, shared.limits.idle_timeout) => Err("idle timeout"),
        _ = crate::proxy::drained(&mut draining) => {
            served.as_mut().graceful_shutdown();
            // Draining does not suspend trust: a caller quarantined meanwhile is cut off.
            tokio::select! {
                _ = tokio::time::timeout(shared.limits.drain_timeout, served) => Ok(()),
                why = untrusted(shared.live.clone(), conn.peer.clone(), conn.expires) => Err(why),
            }
        }
    }
}

async fn request(req: Request<Incoming>, conn: &Conn, shared: &Arc<Shared>) -> Response<Body> {
    let id = request_id();
    let port = conn.app.port();
    let path = match normalize_path(req.uri().path()) {
        Ok(p) => p,
        Err(e) => {
            log_refusal(shared, &id, &conn.peer, port, Some((req.method().as_str(), req.uri().path())), e.reason());
            shared.metrics.decision(true, "inbound", false, "bad_path");
            return mesh_response(e.http_status(), &id, Some("bad-path"), format!("trustmesh refused the request: {e}\nrequest id: {id}\n"));
        }
    };
    let Some(active) = shared.live.borrow().clone() else {
        log_refusal(shared, &id, &conn.peer, port, Some((req.method().as_str(), path.as_str())), "no_snapshot");
        shared.metrics.decision(true, "inbound", false, "no_snapshot");
        return mesh_response(503, &id, Some("no-policy-yet"), format!("trustmesh has no policy for this workload yet\nrequest id: {id}\n"));
    };
    if conn.peer.as_ref().is_some_and(|p| active.snapshot.is_revoked(p)) {
        log_refusal(shared, &id, &conn.peer, port, Some((req.method().as_str(), path.as_str())), "revoked");
        shared.metrics.decision(true, "inbound", false, "revoked");
        return mesh_response(403, &id, Some("revoked"), format!("access denied by trustmesh: caller {} is quarantined\nrequest id: {id}\n", conn.peer_str));
    }
    let decision =
        active.policy.evaluate(&policy::Request { caller: conn.peer.as_ref(), port, http: Some(HttpRequest { method: req.method().as_str(), path: &path }) });
    shared.log(&Entry {
        id: &id,
        direction: "inbound",
        src: &conn.peer_str,
        dst: active.snapshot.inbound.workload.as_str(),
        port,
        http: Some((req.method().as_str(), path.as_str())),
        outcome: Outcome::Decided(&decision),
    });
    let allowed = decision.verdict == Verdict::Allow;
    shared.metrics.decision(true, "inbound", allowed, reason_of(&decision));
    shared.metrics.audit("inbound", &decision);
    if !allowed {
        let by = decision.by.to_string();
        let body = format!(
            "access denied by trustmesh: {} may not {} {} on port {port} ({by})\nrequest id: {id}\n",
            conn.peer_str,
            req.method(),
            path
        );
        return mesh_response(403, &id, Some(&by), body);
    }
    drop(active);
    forward(req, path.into_string(), conn, shared, &id).await
}

async fn forward(mut req: Request<Incoming>, path: String, conn: &Conn, shared: &Arc<Shared>, id: &str) -> Response<Body> {
    // A WebSocket handshake keeps its upgrade headers and holds a connection slot for the tunnel.
    let websocket = crate::upgrade::websocket_request(req.version(), req.method(), req.headers());
    let caller_upgrade = websocket.is_some().then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    if !parts.headers.contains_key(http::header::HOST)
        && let Some(host) = parts.uri.authority().and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
    {
        parts.headers.insert(http::header::HOST, host);
    }
    let uri = http::Uri::builder().scheme("http").authority(conn.authority.clone()).path_and_query(path_and_query).build();
    let Ok(uri) = uri else {
        return mesh_response(400, id, Some("bad-request"), format!("trustmesh could not forward this request target\nrequest id: {id}\n"));
    };
    parts.uri = uri;
    // HTTP/2 callers (gRPC) reach the app over HTTP/2, everything else over HTTP/1.1. `te:
    // trailers` is the one TE value HTTP/2 allows, and gRPC requires it.
    let h2 = parts.version == http::Version::HTTP_2;
    let te_trailers = h2 && parts.headers.get(http::header::TE).is_some_and(|v| v == "trailers");
    parts.version = if h2 { http::Version::HTTP_2 } else { http::Version::HTTP_11 };
    strip_hop_by_hop(&mut parts.headers);
    if te_trailers {
        parts.headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    }
    if let Some(upgrade) = websocket.clone() {
        crate::upgrade::restore_headers(&mut parts.headers, upgrade);
    }
    parts.headers.remove(PEER_HEADER);
    // Without a declaration, HTTP/1 trailers are not forwarded: a caller cannot smuggle an
    // x-trustmesh-peer trailer past the header clean-up above.
    parts.headers.remove(http::header::TRAILER);
    if let Some(v) = &conn.peer_header {
        parts.headers.insert(PEER_HEADER, v.clone());
    }
    let sent = if h2 {
        // HTTP/2 forwards trailer frames as they come: drop a caller-written x-trustmesh-peer
        // there too, or a gRPC app reading request metadata would see a forged identity.
        let body = body.map_frame(|mut frame| {
            if let Some(trailers) = frame.trailers_mut() {
                trailers.remove(PEER_HEADER);
            }
            frame
        });
        shared.app_h2.request(Request::from_parts(parts, body.boxed()))
    } else {
        shared.app.request(Request::from_parts(parts, body))
    };
    match tokio::time::timeout(shared.limits.request_timeout, sent).await {
        Ok(Ok(mut resp)) => {
            let switched = resp.status() == http::StatusCode::SWITCHING_PROTOCOLS;
            let tunnel = match caller_upgrade {
                Some(caller) if switched => match shared.slot(true) {
                    Some(slot) => Some((caller, hyper::upgrade::on(&mut resp), slot)),
                    None => return mesh_response(503, id, None, format!("trustmesh is at its connection limit\nrequest id: {id}\n")),
                },
                _ => None,
            };
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            if let Some((caller, app, slot)) = tunnel {
                crate::upgrade::restore_headers(&mut parts.headers, websocket.unwrap_or_else(|| http::HeaderValue::from_static("websocket")));
                let peer = crate::upgrade::Peer { id: conn.peer.clone(), expires: conn.expires };
                crate::upgrade::splice(caller, app, peer, slot, shared.clone());
            }
            if let Ok(v) = http::HeaderValue::from_str(id) {
                parts.headers.insert("x-trustmesh-request-id", v);
            }
            Response::from_parts(parts, body.boxed())
        }
        Ok(Err(e)) => {
            tracing::warn!(app = %conn.app, error = %e, "app request failed");
            mesh_response(502, id, None, format!("trustmesh could not reach the app\nrequest id: {id}\n"))
        }
        Err(_) => mesh_response(504, id, None, format!("the app did not answer in time\nrequest id: {id}\n")),
    }
}

fn reason_of(d: &policy::Decision<'_>) -> &'static str {
    match d.by {
        Decided::Rule { .. } => "policy",
        Decided::Default(_) => "default",
    }
}

/// Logs a refusal under `id` (the request's id when there is a response that carries it).
fn log_refusal(shared: &Shared, id: &str, peer: &Option<SpiffeId>, port: u16, http: Option<(&str, &str)>, reason: &str) {
    let src = peer.as_ref().map_or("unauthenticated", |p| p.as_str());
    let dst = shared.live.borrow().as_ref().map(|a| a.snapshot.inbound.workload.to_string()).unwrap_or_default();
    shared.log(&Entry { id, direction: "inbound", src, dst: &dst, port, http, outcome: Outcome::Refused(reason) });
    if http.is_none() {
        shared.metrics.decision(false, "inbound", false, "refused");
    }
}
