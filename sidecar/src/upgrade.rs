//! WebSocket upgrades through the inbound proxy.
//!
//! An HTTP/1.1 `GET` with `Upgrade: websocket` is authorized like any request (caller, port,
//! method, path) and, when allowed, forwarded with its upgrade headers. When the app answers
//! `101 Switching Protocols`, the caller's and the app's upgraded connections are joined and
//! bytes are copied both ways until either side closes, nothing moves for the idle timeout, or
//! the caller can no longer be trusted (quarantined, or its certificate expired). A tunnel holds
//! an inbound connection slot of its own.
//!
//! Only `websocket` is passed on. Any other upgrade — `h2c` above all — would turn the rest of
//! the connection into requests no rule sees, so its headers are dropped (as for every
//! hop-by-hop header) and the app answers the plain request.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method, Version, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use trustmesh_core::spiffe::SpiffeId;

use crate::proxy::{ConnGuard, Shared, untrusted};

/// Whether `token` is one of the comma-separated values of header `name` (case-insensitive).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The `Upgrade` value to pass on when this is a WebSocket handshake request (HTTP/1.1 `GET`,
/// `Connection: upgrade`, `Upgrade: websocket`); `None` for everything else.
pub fn websocket_request(version: Version, method: &Method, headers: &HeaderMap) -> Option<HeaderValue> {
    let is = version == Version::HTTP_11 && method == Method::GET && has_token(headers, header::CONNECTION, "upgrade") && has_token(headers, header::UPGRADE, "websocket");
    is.then(|| HeaderValue::from_static("websocket"))
}

/// Puts the upgrade headers back after the hop-by-hop headers were stripped.
pub fn restore_headers(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, upgrade);
}

/// Who is on the caller's side of a tunnel, for the trust watch.
pub struct Peer {
    /// The caller's SPIFFE ID (`None`: unauthenticated, permissive mode).
    pub id: Option<SpiffeId>,
    /// When the caller's certificate expires.
    pub expires: Option<std::time::SystemTime>,
}

/// Joins the two upgraded connections once both are ready, in a task of its own.
pub fn splice(caller: OnUpgrade, app: OnUpgrade, peer: Peer, slot: ConnGuard, shared: Arc<Shared>) {
    tokio::spawn(async move {
        let _slot = slot;
        let (caller, app) = match tokio::try_join!(caller, app) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade did not complete");
                return;
            }
        };
        let (mut caller, mut app) = (TokioIo::new(caller), TokioIo::new(app));
        tokio::select! {
            done = crate::io::copy_bidirectional_idle(&mut caller, &mut app, shared.limits.idle_timeout) => {
                if let Err(why) = done {
                    tracing::debug!(why, "websocket tunnel ended");
                }
            }
            why = untrusted(shared.live.clone(), peer.id, peer.expires) => tracing::info!(why, "websocket tunnel closed"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (header::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap())).collect()
    }

    #[test]
    fn only_an_http11_get_asking_for_websocket_is_an_upgrade() {
        let ws = headers(&[("connection", "keep-alive, Upgrade"), ("upgrade", "WebSocket")]);
        assert!(websocket_request(Version::HTTP_11, &Method::GET, &ws).is_some(), "tokens are case-insensitive, in lists");
        assert!(websocket_request(Version::HTTP_11, &Method::POST, &ws).is_none(), "a WebSocket handshake is a GET");
        assert!(websocket_request(Version::HTTP_2, &Method::GET, &ws).is_none(), "HTTP/2 has no Upgrade");
        let h2c = headers(&[("connection", "Upgrade, HTTP2-Settings"), ("upgrade", "h2c")]);
        assert!(websocket_request(Version::HTTP_11, &Method::GET, &h2c).is_none(), "h2c would carry requests no rule sees");
        let no_connection = headers(&[("upgrade", "websocket")]);
        assert!(websocket_request(Version::HTTP_11, &Method::GET, &no_connection).is_none(), "Upgrade needs Connection: upgrade");
    }
}
