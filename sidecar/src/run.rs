//! Wiring of `trustmesh-sidecar run`: identity, snapshot, TLS settings, listeners, admin, and a
//! graceful drain on SIGTERM.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use trustmesh_core::proto::v1::identity_client::IdentityClient;
use trustmesh_core::spiffe::SpiffeId;
use trustmesh_core::tls::{self, ClientAuth, SwappableCert};

use crate::accesslog::AccessLog;
use crate::admin::{self, Admin};
use crate::identity::{CredentialSource, GrpcSigner, keep_fresh};
use crate::inbound::{self, AppTarget};
use crate::metrics::Metrics;
use crate::outbound::{self, ClientTls, Upstream};
use crate::proxy::{Limits, Shared};
use crate::state::{self, Active};
use crate::svid_files;

/// Where the sidecar's certificate comes from.
#[derive(Clone, Debug)]
pub enum IdentitySource {
    /// Files (`svid.pem`, `svid.key`, `bundle.pem`, as `svid fetch` writes them), re-read when
    /// they change.
    Files(PathBuf),
    /// The operator's `Identity.Sign`, renewed at half-life.
    Operator {
        /// gRPC address (`host:port`).
        addr: String,
        /// Bundle to verify the operator with.
        bundle: PathBuf,
        /// The operator's SPIFFE ID.
        operator_id: SpiffeId,
        /// Join token or service-account token.
        credential: CredentialSource,
    },
}

/// Everything `run` needs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Certificate source.
    pub identity: IdentitySource,
    /// Snapshot file (JSON), watched; `None`: follow the operator's `Config.Watch`.
    pub snapshot: Option<PathBuf>,
    /// Inbound listeners.
    pub inbound: Vec<(SocketAddr, AppTarget)>,
    /// Outbound listeners.
    pub outbound: Vec<(SocketAddr, Upstream)>,
    /// Admin listener.
    pub admin: SocketAddr,
    /// Accept plaintext and certificate-less TLS as `unauthenticated`.
    pub permissive: bool,
    /// The app probes (port, exact path) the kubelet may reach through the admin port.
    pub probe_paths: BTreeSet<(u16, String)>,
    /// Limits.
    pub limits: Limits,
    /// Write the access log to stdout.
    pub access_log: bool,
}

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Certificate files are unusable.
    #[error("certificate files in {dir}: {reason}; write them with `trustmesh-sidecar svid fetch --out {dir}`")]
    Files {
        /// The directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// TLS settings could not be built.
    #[error("TLS settings: {0}")]
    Tls(#[from] tls::TlsError),
    /// The operator channel could not be set up.
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
}

/// Runs the sidecar until SIGTERM or Ctrl-C, then drains.
pub async fn run(opts: RunOptions) -> Result<(), RunError> {
    let metrics = Metrics::new();
    let cert = SwappableCert::new();
    let (bundle_tx, bundle_rx) = watch::channel(Vec::<CertificateDer<'static>>::new());
    let mut tasks = Vec::new();
    match &opts.identity {
        IdentitySource::Files(dir) => {
            let stamps = svid_files::Stamps::of(dir);
            let not_after = svid_files::load(dir, &cert, &bundle_tx).map_err(|reason| RunError::Files { dir: dir.clone(), reason })?;
            if let Ok(t) = not_after.duration_since(std::time::UNIX_EPOCH) {
                metrics.svid_expiry_seconds.set(i64::try_from(t.as_secs()).unwrap_or(i64::MAX));
            }
            let watch = svid_files::watch(dir.clone(), stamps, Duration::from_secs(1), cert.clone(), bundle_tx.clone(), metrics.clone());
            tasks.push(tokio::spawn(watch));
        }
        IdentitySource::Operator { addr, bundle, operator_id, credential } => {
            let roots = svid_files::read_certs(bundle).map_err(|reason| RunError::Files { dir: bundle.clone(), reason })?;
            bundle_tx.send_replace(roots.clone());
            let channel = crate::control::channel(addr.clone(), bundle_rx.clone(), operator_id.clone(), None)?;
            let signer = GrpcSigner(IdentityClient::new(channel));
            tasks.push(tokio::spawn(keep_fresh(signer, credential.clone(), cert.clone(), bundle_tx.clone(), metrics.clone())));
        }
    }

    let (live_tx, live_rx) = watch::channel::<Option<Arc<Active>>>(None);
    let applied = metrics.clone();
    let mut counting = live_rx.clone();
    tasks.push(tokio::spawn(async move {
        while counting.changed().await.is_ok() {
            applied.snapshots_applied.inc();
            let version = counting.borrow_and_update().as_ref().and_then(|a| a.snapshot.version.parse::<i64>().ok());
            if let Some(v) = version {
                applied.snapshot_version.set(v);
            }
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            applied.snapshot_applied_seconds.set(i64::try_from(now).unwrap_or(i64::MAX));
        }
    }));
    match (&opts.snapshot, &opts.identity) {
        (Some(path), _) => {
            match state::read_snapshot(path) {
                Ok(s) => {
                    live_tx.send_replace(Some(Active::new(s)));
                }
                Err(e) => tracing::warn!(error = %e, "no snapshot yet: refusing all traffic until it is valid"),
            }
            tasks.push(tokio::spawn(state::watch_file(path.clone(), Duration::from_millis(100), live_tx)));
        }
        (None, IdentitySource::Operator { addr, operator_id, .. }) => {
            let (addr, operator_id, cert, bundle_tx) = (addr.clone(), operator_id.clone(), cert.clone(), bundle_tx.clone());
            let proxy = format!("{}:{}", hostname(), std::process::id());
            tasks.push(tokio::spawn(async move {
                // Config.Watch authenticates with our SVID: wait for the first one.
                while cert.current().is_none() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                match crate::control::channel(addr, bundle_tx.subscribe(), operator_id, Some(cert)) {
                    Ok(channel) => crate::config_stream::follow(channel, proxy, live_tx, bundle_tx).await,
                    Err(e) => tracing::error!(error = %e, "cannot follow the control plane"),
                }
            }));
        }
        (None, IdentitySource::Files(_)) => {
            tracing::error!("no snapshot source: pass --snapshot FILE, or --operator to follow the control plane; refusing all traffic");
        }
    }

    let client_auth = if opts.permissive { ClientAuth::Optional } else { ClientAuth::Required };
    let server_config = |roots: &[CertificateDer<'static>]| tls::server_config(roots, client_auth, cert.clone(), vec![]).map(Arc::new);
    let initial = server_config(&bundle_rx.borrow())?;
    let (server_tls_tx, server_tls_rx) = watch::channel(initial);
    let mut bundle_changes = bundle_rx.clone();
    let rebuild_cert = cert.clone();
    tasks.push(tokio::spawn(async move {
        while bundle_changes.changed().await.is_ok() {
            let roots = bundle_changes.borrow_and_update().clone();
            match tls::server_config(&roots, client_auth, rebuild_cert.clone(), vec![]) {
                Ok(c) => {
                    server_tls_tx.send_replace(Arc::new(c));
                }
                Err(e) => tracing::error!(error = %e, "trust bundle update refused; keeping the previous one"),
            }
        }
    }));

    let (drain_tx, drain_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        live: live_rx.clone(),
        server_tls: server_tls_rx,
        client_tls: ClientTls::new(cert.clone(), bundle_rx.clone()),
        metrics: metrics.clone(),
        log: if opts.access_log { AccessLog::stdout() } else { AccessLog::off() },
        limits: opts.limits.clone(),
        inbound_slots: Arc::new(Semaphore::new(opts.limits.max_connections)),
        outbound_slots: Arc::new(Semaphore::new(opts.limits.max_connections)),
        app: Shared::app_client(false),
        app_h2: Shared::app_client(true),
        permissive: opts.permissive,
        draining: drain_rx,
    });
    for (addr, target) in &opts.inbound {
        let l = bind(*addr)?;
        tracing::info!(listen = %addr, ?target, "inbound listener");
        tasks.push(tokio::spawn(inbound::serve(l, *target, shared.clone())));
    }
    for (addr, upstream) in &opts.outbound {
        let l = bind(*addr)?;
        tracing::info!(listen = %addr, ?upstream, "outbound listener");
        tasks.push(tokio::spawn(outbound::serve(l, *upstream, shared.clone())));
    }
    let admin_listener = TcpListener::bind(opts.admin).await.map_err(|source| RunError::Bind { addr: opts.admin, source })?;
    let admin = Arc::new(Admin {
        live: live_rx,
        cert,
        metrics: metrics.clone(),
        probe_paths: opts.probe_paths.clone(),
        draining: shared.draining.clone(),
    });
    tasks.push(tokio::spawn(admin::serve(admin_listener, admin)));

    shutdown_signal().await;
    tracing::info!(deadline = ?opts.limits.drain_timeout, "draining: no new connections, finishing in-flight requests");
    drain_tx.send_replace(true);
    let deadline = tokio::time::Instant::now() + opts.limits.drain_timeout;
    while metrics.open_connections.get() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for t in tasks {
        t.abort();
    }
    Ok(())
}

/// Binds a listener. An IPv6 address gets an IPv6-only socket, so `[::]:15006` can sit beside
/// `0.0.0.0:15006` whatever `net.ipv6.bindv6only` says.
fn bind(addr: SocketAddr) -> Result<TcpListener, RunError> {
    let err = |source| RunError::Bind { addr, source };
    if addr.is_ipv4() {
        let l = std::net::TcpListener::bind(addr).map_err(err)?;
        l.set_nonblocking(true).map_err(err)?;
        return TcpListener::from_std(l).map_err(err);
    }
    let socket = tokio::net::TcpSocket::new_v6().map_err(err)?;
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Ipv6V6Only, &true).map_err(|e| err(e.into()))?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    socket.listen(1024).map_err(err)
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "sidecar".to_owned())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}
