//! Outbound: accept the app's connection -> find where it was going -> a meshed destination gets
//! mTLS with our SVID and the server's SPIFFE ID checked against the identities expected there
//! (secure naming: a valid certificate for another identity is refused); other destinations pass
//! through unchanged, or are refused when egress is locked.
//!
//! Outbound is layer 4: bytes are copied, HTTP is not parsed (the server side authorizes requests).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsConnector;
use trustmesh_core::snapshot::Egress;
use trustmesh_core::spiffe::SpiffeId;
use trustmesh_core::tls::{self, ExpectedServer, SpiffeServerVerifier, SwappableCert};

use crate::accesslog::{Entry, Outcome, request_id};
use crate::metrics::TlsLabels;
use crate::proxy::{ConnGuard, Shared, untrusted};

/// Where outbound connections go.
#[derive(Clone, Copy, Debug)]
pub enum Upstream {
    /// Explicit mode: one remote address (looked up in the snapshot's destinations).
    Fixed(SocketAddr),
    /// Transparent mode: the original destination.
    OriginalDst,
}

/// The bundle the cached configs were built with, and one config per expected-identity set.
type ConfigCache = (Vec<CertificateDer<'static>>, HashMap<BTreeSet<SpiffeId>, Arc<ClientConfig>>);

/// Client-side TLS: our certificate, the bundle, and client configs cached per expected identity set.
#[derive(Clone)]
pub struct ClientTls {
    cert: Arc<SwappableCert>,
    bundle: watch::Receiver<Vec<CertificateDer<'static>>>,
    /// The bundle the cached configs trust, and the configs by expected identity set.
    cache: Arc<Mutex<ConfigCache>>,
}

impl ClientTls {
    /// Client TLS presenting `cert`, trusting `bundle`.
    pub fn new(cert: Arc<SwappableCert>, bundle: watch::Receiver<Vec<CertificateDer<'static>>>) -> Self {
        Self { cert, bundle, cache: Arc::new(Mutex::new((Vec::new(), HashMap::new()))) }
    }

    /// A client config that accepts only servers proving one of `ids`.
    pub fn config_for(&self, ids: &BTreeSet<SpiffeId>) -> Result<Arc<ClientConfig>, tls::TlsError> {
        let bundle = self.bundle.borrow();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        // Compared by content (a few roots): a config trusting a removed root is never reused.
        if cache.0 != *bundle {
            *cache = (bundle.clone(), HashMap::new());
        }
        if let Some(c) = cache.1.get(ids) {
            return Ok(c.clone());
        }
        let verifier = SpiffeServerVerifier::new(&bundle, ExpectedServer::Ids(ids.iter().cloned().collect()))?;
        let config = Arc::new(tls::client_config(verifier, Some(self.cert.clone()), vec![])?);
        cache.1.insert(ids.clone(), config.clone());
        Ok(config)
    }
}

/// Accepts the app's outbound connections until draining starts.
pub async fn serve(listener: TcpListener, upstream: Upstream, shared: Arc<Shared>) {
    let handle = move |tcp, _remote, shared: Arc<Shared>, guard| async move { connection(tcp, upstream, &shared, guard).await };
    crate::proxy::accept_until_drained(listener, "outbound", shared, handle).await;
}

async fn connection(mut app: TcpStream, upstream: Upstream, shared: &Shared, _guard: ConnGuard) -> Result<(), &'static str> {
    let _ = app.set_nodelay(true);
    let dst = match upstream {
        Upstream::Fixed(a) => a,
        Upstream::OriginalDst => crate::orig_dst::original_dst(&app).map_err(|_| "no original destination")?,
    };
    let Some(active) = shared.live.borrow().clone() else {
        refuse(shared, dst, "", "no_snapshot");
        return Err("no snapshot yet (fail closed)");
    };
    let me = active.snapshot.inbound.workload.to_string();
    let Some(dest) = active.snapshot.destinations.get(&dst) else {
        return match active.snapshot.egress {
            Egress::Deny => {
                refuse(shared, dst, &me, "egress_locked");
                Err("egress locked")
            }
            Egress::Allow => {
                pass(shared, dst, &me, None, "passthrough");
                let mut remote = TcpStream::connect(dst).await.map_err(|_| "destination unreachable")?;
                let _ = remote.set_nodelay(true);
                crate::io::copy_bidirectional_idle(&mut app, &mut remote, shared.limits.idle_timeout).await
            }
        };
    };
    let expected: BTreeSet<SpiffeId> = dest.identities.iter().filter(|id| !active.snapshot.is_revoked(id)).cloned().collect();
    if expected.is_empty() {
        refuse(shared, dst, &me, "revoked");
        return Err("every identity at the destination is revoked");
    }
    drop(active);
    let config = shared.client_tls.config_for(&expected).map_err(|_| "no TLS config (bundle?)")?;
    if shared.client_tls.cert.current().is_none() {
        refuse(shared, dst, &me, "no_certificate");
        return Err("no valid certificate yet (fail closed)");
    }
    let tcp = TcpStream::connect(dst).await.map_err(|_| "destination unreachable")?;
    let _ = tcp.set_nodelay(true);
    let handshake = tokio::time::timeout(shared.limits.handshake_timeout, TlsConnector::from(config).connect(tls::placeholder_server_name(), tcp)).await;
    let mut remote = match handshake {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let reason = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()).map_or("handshake", tls::failure_reason);
            shared.metrics.tls_failures.get_or_create(&TlsLabels { direction: "outbound", reason }).inc();
            tracing::warn!(%dst, error = %e, "outbound mTLS handshake failed");
            refuse(shared, dst, &me, reason);
            return Err("handshake failed");
        }
        Err(_) => {
            shared.metrics.tls_failures.get_or_create(&TlsLabels { direction: "outbound", reason: "timeout" }).inc();
            return Err("handshake timed out");
        }
    };
    let server = tls::peer_identity(remote.get_ref().1.peer_certificates()).ok().flatten();
    let expires = tls::peer_not_after(remote.get_ref().1.peer_certificates());
    pass(shared, dst, &me, server.as_ref(), "meshed");
    tokio::select! {
        copied = crate::io::copy_bidirectional_idle(&mut app, &mut remote, shared.limits.idle_timeout) => copied,
        why = untrusted(shared.live.clone(), server, expires) => Err(why),
    }
}

fn refuse(shared: &Shared, dst: SocketAddr, me: &str, reason: &'static str) {
    let id = request_id();
    let (port, dst) = (dst.port(), dst.to_string());
    shared.log(&Entry { id: &id, direction: "outbound", src: me, dst: &dst, port, http: None, outcome: Outcome::Refused(reason) });
    shared.metrics.decision(false, "outbound", false, reason);
}

/// Logs and counts a connection let through: `meshed` (to `server`, the identity it proved) or
/// `passthrough` (to an address the snapshot does not know).
fn pass(shared: &Shared, dst: SocketAddr, me: &str, server: Option<&SpiffeId>, reason: &'static str) {
    let id = request_id();
    let (port, addr) = (dst.port(), dst.to_string());
    let dst = server.map_or(addr.as_str(), SpiffeId::as_str);
    shared.log(&Entry { id: &id, direction: "outbound", src: me, dst, port, http: None, outcome: Outcome::Passed(reason) });
    shared.metrics.decision(false, "outbound", true, reason);
}
